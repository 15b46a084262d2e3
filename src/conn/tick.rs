//! Times as the broker stores them: eight bytes, not sixteen.
//!
//! Every session keeps when it opened, when it last sent something, when it
//! was pinged and when its timer fires, and the timer heap keeps one entry per
//! session. As `Instant`s (16 bytes each on Linux) those took 80 bytes of
//! every idle connection; as [`Tick`]s, microseconds since the broker's
//! [`Clock`] epoch, they take 40. The broker's API still speaks `Instant`:
//! it converts at the boundary.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// A point in time: microseconds since the clock's epoch, stored plus one so
/// that an `Option<Tick>` is eight bytes too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Tick(NonZeroU64);

impl Tick {
    /// The epoch itself.
    #[cfg(test)]
    pub(crate) const EPOCH: Self = Self(NonZeroU64::MIN);

    fn from_micros(us: u64) -> Self {
        Self(NonZeroU64::MIN.saturating_add(us))
    }

    fn micros(self) -> u64 {
        self.0.get() - 1
    }
}

impl std::ops::Add<Duration> for Tick {
    type Output = Self;

    /// Saturates far in the future instead of overflowing.
    fn add(self, d: Duration) -> Self {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(us))
    }
}

/// Converts between `Instant`s and [`Tick`]s.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose ticks count from `epoch`.
    pub(crate) fn new(epoch: Instant) -> Self {
        Self { epoch }
    }

    /// `now` as a tick, rounded down to the microsecond. An instant before the
    /// epoch counts as the epoch.
    pub(crate) fn tick(&self, now: Instant) -> Tick {
        let us = now.saturating_duration_since(self.epoch).as_micros();
        Tick::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// The instant of `t` (for poll timeouts). A tick too far away to be an
    /// `Instant` comes back as a century after the epoch.
    pub(crate) fn instant(&self, t: Tick) -> Instant {
        let century = Duration::from_secs(100 * 365 * 24 * 3600);
        self.epoch
            .checked_add(Duration::from_micros(t.micros()))
            .or_else(|| self.epoch.checked_add(century))
            .unwrap_or(self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_eight_bytes_even_optional() {
        assert_eq!(std::mem::size_of::<Tick>(), 8);
        assert_eq!(std::mem::size_of::<Option<Tick>>(), 8);
    }

    #[test]
    fn round_trips_order_and_saturation() {
        let t0 = Instant::now();
        let clock = Clock::new(t0);
        assert_eq!(clock.tick(t0), Tick::EPOCH);
        let later = t0 + Duration::from_millis(1500);
        let t = clock.tick(later);
        assert_eq!(clock.instant(t), later);
        assert!(t > Tick::EPOCH);
        assert_eq!(Tick::EPOCH + Duration::from_millis(1500), t);
        // Sub-microsecond parts are dropped, never rounded up.
        assert_eq!(clock.tick(t0 + Duration::from_nanos(999)), Tick::EPOCH);
        // Before the epoch counts as the epoch; huge durations saturate.
        if let Some(before) = t0.checked_sub(Duration::from_secs(1)) {
            assert_eq!(clock.tick(before), Tick::EPOCH);
        }
        let far = t + Duration::MAX;
        assert!(far > t);
        assert!(clock.instant(far) > later);
    }
}
