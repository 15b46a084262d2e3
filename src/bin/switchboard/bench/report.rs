//! Results: a human table or one JSON object (hand-written serialization),
//! and a fixed-memory latency histogram.

use std::fmt::Write as _;
use std::time::Duration;

/// A reported value.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Int(u64),
    Num(f64),
    Str(String),
    Bool(bool),
}

impl From<u64> for Val {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}
impl From<usize> for Val {
    fn from(v: usize) -> Self {
        Self::Int(v as u64)
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Self::Num(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Self::Str(v.to_string())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}

impl Val {
    fn json(&self, out: &mut String) {
        match self {
            Self::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Self::Num(v) if v.is_finite() => {
                let _ = write!(out, "{}", (v * 1000.0).round() / 1000.0);
            }
            Self::Num(_) => out.push_str("null"),
            Self::Bool(v) => {
                let _ = write!(out, "{v}");
            }
            Self::Str(s) => json_str(s, out),
        }
    }

    fn human(&self) -> String {
        match self {
            Self::Int(v) => group_digits(*v),
            Self::Num(v) if v.abs() >= 100.0 => format!("{v:.0}"),
            Self::Num(v) => format!("{v:.2}"),
            Self::Bool(v) => v.to_string(),
            Self::Str(s) => s.clone(),
        }
    }
}

fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn group_digits(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A scenario's parameters and figures, in insertion order.
#[derive(Debug)]
pub(crate) struct Report {
    scenario: &'static str,
    params: Vec<(&'static str, Val)>,
    figures: Vec<(&'static str, Val)>,
}

impl Report {
    pub(crate) fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            params: Vec::new(),
            figures: Vec::new(),
        }
    }

    pub(crate) fn param(&mut self, key: &'static str, v: impl Into<Val>) {
        self.params.push((key, v.into()));
    }

    pub(crate) fn figure(&mut self, key: &'static str, v: impl Into<Val>) {
        self.figures.push((key, v.into()));
    }

    /// The server's CPU time over the measured window (from `/proc`, when
    /// both readings exist), in total and per `count` units of work.
    pub(crate) fn server_cpu(
        &mut self,
        before: Option<u64>,
        after: Option<u64>,
        per_key: &'static str,
        count: u64,
    ) {
        let (Some(before), Some(after)) = (before, after) else {
            return;
        };
        let cpu = after.saturating_sub(before);
        self.figure("server_cpu_us", cpu);
        let per = if count > 0 {
            cpu as f64 / count as f64
        } else {
            0.0
        };
        self.figure(per_key, per);
        self.figure("clock_ticks_per_s", super::proc::clock_ticks_per_second());
    }

    /// `{"scenario":..,"parameters":{..},"results":{..}}` on one line.
    pub(crate) fn json(&self) -> String {
        let mut out = String::from("{\"scenario\":");
        json_str(self.scenario, &mut out);
        for (name, list) in [("parameters", &self.params), ("results", &self.figures)] {
            let _ = write!(out, ",\"{name}\":{{");
            for (i, (k, v)) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(k, &mut out);
                out.push(':');
                v.json(&mut out);
            }
            out.push('}');
        }
        out.push('}');
        out
    }

    /// Two aligned columns: parameters, then results.
    pub(crate) fn table(&self) -> String {
        let width = self
            .params
            .iter()
            .chain(&self.figures)
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0);
        let mut out = format!("bench {}\n", self.scenario);
        for (title, list) in [("parameters", &self.params), ("results", &self.figures)] {
            let _ = writeln!(out, "  {title}:");
            for (k, v) in list {
                let _ = writeln!(out, "    {k:<width$}  {}", v.human());
            }
        }
        out
    }
}

/// Latencies in fixed memory: 100 ns steps up to 10 ms, 10 µs steps up to
/// 1 s, and the maximum exactly.
#[derive(Debug)]
pub(crate) struct Histogram {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    over: u64,
    count: u64,
    max_ns: u64,
}

const FINE_NS: u64 = 100;
const FINE_END_NS: u64 = 10_000_000;
const COARSE_NS: u64 = 10_000;
const COARSE_END_NS: u64 = 1_000_000_000;

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            fine: vec![0; (FINE_END_NS / FINE_NS) as usize],
            coarse: vec![0; ((COARSE_END_NS - FINE_END_NS) / COARSE_NS) as usize],
            over: 0,
            count: 0,
            max_ns: 0,
        }
    }

    pub(crate) fn record(&mut self, ns: u64) {
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
        if ns < FINE_END_NS {
            self.fine[(ns / FINE_NS) as usize] += 1;
        } else if ns < COARSE_END_NS {
            self.coarse[((ns - FINE_END_NS) / COARSE_NS) as usize] += 1;
        } else {
            self.over += 1;
        }
    }

    pub(crate) fn record_duration(&mut self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The `q` quantile (0..=1) in microseconds (lower edge of its bucket:
    /// at most 100 ns low below 10 ms, 10 µs low above).
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.fine.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (i as u64 * FINE_NS) as f64 / 1000.0;
            }
        }
        for (i, n) in self.coarse.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (FINE_END_NS + (i as u64 + 1) * COARSE_NS).min(self.max_ns) as f64 / 1000.0;
            }
        }
        self.max_ns as f64 / 1000.0
    }

    pub(crate) fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1000.0
    }

    /// `latency_p50_us`, `latency_p99_us`, `latency_max_us`.
    pub(crate) fn report(&self, report: &mut Report) {
        report.figure("latency_p50_us", self.quantile_us(0.50));
        report.figure("latency_p99_us", self.quantile_us(0.99));
        report.figure("latency_max_us", self.max_us());
    }
}

/// Per-second rate of `n` over `d`.
pub(crate) fn rate(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_quantiles() {
        let mut r = Report::new("x");
        r.param("a", "q\"");
        r.figure("n", 3u64);
        r.figure("f", 1.5);
        assert_eq!(
            r.json(),
            r#"{"scenario":"x","parameters":{"a":"q\""},"results":{"n":3,"f":1.5}}"#
        );
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record(us * 1000);
        }
        assert_eq!(h.quantile_us(0.5), 50.0);
        assert_eq!(h.quantile_us(0.99), 99.0);
        assert_eq!(h.max_us(), 100.0);
        assert_eq!(group_digits(1234567), "1,234,567");
    }
}
