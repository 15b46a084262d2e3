//! What the IO layer and the connection table count for a service
//! (protocol.md section 10): plain counters, bumped where the work is done,
//! so that reading them costs nothing per connection.

use std::time::{Duration, Instant};

/// Counters and gauges of one connection table, kept by the table itself
/// (frames queued, connections refused at the limit) and by the IO layer
/// (bytes, TLS handshakes, TLS connections open, loop turn times).
#[derive(Debug, Default, Clone, Copy)]
pub struct IoStats {
    /// Application bytes received (after TLS).
    pub bytes_in: u64,
    /// Application bytes written to connections (before TLS).
    pub bytes_out: u64,
    /// Frames queued for connections (replies and pushes alike).
    pub frames_out: u64,
    /// Completed TLS handshakes.
    pub tls_handshakes: u64,
    /// Connections refused at the connection limit.
    pub refused_full: u64,
    /// Connections open on a TLS transport, WebSocket over TLS not
    /// included (a gauge).
    pub open_tls: u64,
    /// Connections open on a WebSocket transport, over plain TCP or TLS
    /// (a gauge).
    pub open_ws: u64,
    /// The longest loop turn, per 10-second window.
    pub turns: TurnWindow,
}

/// The longest loop turn in the last 10 seconds, kept as the maxima of the
/// current and the previous 10-second window.
#[derive(Debug, Default, Clone, Copy)]
pub struct TurnWindow {
    start: Option<Instant>,
    current_us: u64,
    previous_us: u64,
}

/// The length of one window of [`TurnWindow`].
const WINDOW: Duration = Duration::from_secs(10);

impl TurnWindow {
    /// Records a turn of `took` that ended at `now`.
    pub fn record(&mut self, now: Instant, took: Duration) {
        self.roll(now);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.current_us = self.current_us.max(us);
    }

    /// The longest turn recorded in the last 10 to 20 seconds before `now`
    /// (the current window and the one before it).
    pub fn max_us(&self, now: Instant) -> u64 {
        match self.start.map(|s| now.saturating_duration_since(s)) {
            None => 0,
            Some(age) if age >= 2 * WINDOW => 0,
            Some(age) if age >= WINDOW => self.current_us,
            Some(_) => self.current_us.max(self.previous_us),
        }
    }

    fn roll(&mut self, now: Instant) {
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        let age = now.saturating_duration_since(start);
        if age >= WINDOW {
            self.previous_us = if age >= 2 * WINDOW {
                0
            } else {
                self.current_us
            };
            self.current_us = 0;
            self.start = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_turn_is_kept_for_ten_to_twenty_seconds() {
        let t0 = Instant::now();
        let mut w = TurnWindow::default();
        assert_eq!(w.max_us(t0), 0);
        w.record(t0, Duration::from_millis(5));
        w.record(t0 + Duration::from_secs(1), Duration::from_micros(300));
        assert_eq!(w.max_us(t0 + Duration::from_secs(2)), 5000);
        // A new window: the old maximum is still within the last 10 s.
        w.record(t0 + Duration::from_secs(11), Duration::from_micros(40));
        assert_eq!(w.max_us(t0 + Duration::from_secs(12)), 5000);
        // Two windows later it is gone.
        w.record(t0 + Duration::from_secs(22), Duration::from_micros(7));
        assert_eq!(w.max_us(t0 + Duration::from_secs(23)), 40);
        // Nothing recorded for a long while (an idle loop): nothing to show.
        assert_eq!(w.max_us(t0 + Duration::from_secs(60)), 0);
    }
}
