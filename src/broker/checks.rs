//! Password checks in flight, and back-off for addresses that keep failing
//! (protocol.md 7a: "Password checks run off the loop on a bounded queue; a
//! check whose connection has gone is dropped, not run; repeated failures
//! from one address are slowed down").
//!
//! Sans-IO: the broker asks [`Checks::admit`] before it hands a check out,
//! tells [`Checks::finished`] the verdict, and [`Checks::cancel`] when the
//! connection goes first; the worker skips a request whose flag is set.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Failures from one address before it is slowed down.
const FREE_FAILURES: u32 = 3;
/// The first wait after [`FREE_FAILURES`]; it doubles with each failure.
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest wait.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// A failure older than this no longer counts.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// Addresses remembered at most (each a few dozen bytes).
const MAX_ADDRESSES: usize = 16_384;
/// Checks in flight from one address at most, so that one client cannot
/// fill the queue the others need.
pub(crate) const MAX_PER_ADDRESS: u32 = 4;

/// Why a check is not taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The queue of checks is full, or this address has its share in it.
    QueueFull,
    /// This address failed too often; it may try again after the wait.
    BackOff(Duration),
}

/// One address's recent failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No check from the address before this.
    until: Instant,
}

/// What the loops of one server share of their password checks: how many
/// are in flight (against `max_password_checks`), from which addresses,
/// and the addresses backed off, so that several loops do not give an
/// attacker several times the attempts. Password checks are rare next to
/// messages: one lock a check.
#[derive(Debug, Default)]
pub(crate) struct Common {
    total: usize,
    /// Checks in flight per address.
    per_address: HashMap<IpAddr, u32>,
    failures: HashMap<IpAddr, Failures>,
}

/// What the loops of one server share of their password checks (opaque;
/// see `Broker::password_checks`).
#[derive(Debug, Clone, Default)]
pub struct SharedChecks(Arc<Mutex<Common>>);

/// The bookkeeping of password checks.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    /// Checks handed out and not answered yet, by connection slot: the
    /// ticket and the flag that cancels it.
    in_flight: HashMap<usize, (u32, IpAddr, Arc<AtomicBool>)>,
    common: SharedChecks,
}

impl Checks {
    /// Shares the counts and back-offs with other loops' checks.
    pub(crate) fn share(&mut self, common: SharedChecks) {
        self.common = common;
    }

    /// What is shared, to hand to another loop.
    pub(crate) fn common(&self) -> SharedChecks {
        self.common.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Common> {
        self.common.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a check from `ip` may be queued now, with `max` in flight at
    /// most.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant, max: usize) -> Result<(), Refusal> {
        let c = self.lock();
        if let Some(f) = c.failures.get(&ip) {
            if now < f.until {
                return Err(Refusal::BackOff(f.until - now));
            }
        }
        let mine = c.per_address.get(&ip).copied().unwrap_or(0);
        if c.total >= max || mine >= MAX_PER_ADDRESS {
            return Err(Refusal::QueueFull);
        }
        Ok(())
    }

    /// A check from `ip` was handed out for slot `key`; returns its cancel
    /// flag.
    pub(crate) fn start(&mut self, key: usize, ticket: u32, ip: IpAddr) -> Arc<AtomicBool> {
        self.cancel(key);
        let flag = Arc::new(AtomicBool::new(false));
        self.in_flight.insert(key, (ticket, ip, Arc::clone(&flag)));
        let mut c = self.lock();
        c.total += 1;
        *c.per_address.entry(ip).or_insert(0) += 1;
        flag
    }

    fn forget(&mut self, key: usize) -> Option<Arc<AtomicBool>> {
        let (_, ip, flag) = self.in_flight.remove(&key)?;
        let mut c = self.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_address.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_address.remove(&ip);
            }
        }
        Some(flag)
    }

    /// The verdict for slot `key` came back; whether it is the one awaited.
    pub(crate) fn finished(&mut self, key: usize, ticket: u32) -> bool {
        match self.in_flight.get(&key) {
            Some((t, _, _)) if *t == ticket => {
                self.forget(key);
                true
            }
            _ => false,
        }
    }

    /// The connection in slot `key` is going: its check, if any, is not run.
    pub(crate) fn cancel(&mut self, key: usize) {
        if let Some(flag) = self.forget(key) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Checks in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A login from `ip` failed: after a few, each failure doubles the
    /// wait before the next check from it.
    pub(crate) fn failed(&mut self, ip: IpAddr, now: Instant) {
        let mut c = self.lock();
        if c.failures.len() >= MAX_ADDRESSES && !c.failures.contains_key(&ip) {
            c.failures
                .retain(|_, f| now < f.until || now < f.last + FORGET_AFTER);
            if c.failures.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let f = c.failures.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            until: now,
        });
        if now >= f.last + FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count > FREE_FAILURES {
            let doublings = (f.count - FREE_FAILURES - 1).min(16);
            let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT);
            f.until = now + wait;
        }
    }

    /// A login from `ip` succeeded: its failures are forgotten.
    pub(crate) fn succeeded(&mut self, ip: IpAddr) {
        self.lock().failures.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn failures_back_off_doubling_and_success_forgets() {
        let mut c = Checks::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            c.failed(ip(2), t0);
            assert_eq!(c.admit(ip(2), t0, 8), Ok(()));
        }
        c.failed(ip(2), t0);
        assert_eq!(c.admit(ip(2), t0, 8), Err(Refusal::BackOff(FIRST_WAIT)));
        assert_eq!(c.admit(ip(3), t0, 8), Ok(()), "others are not slowed");
        let later = t0 + FIRST_WAIT;
        assert_eq!(c.admit(ip(2), later, 8), Ok(()));
        c.failed(ip(2), later);
        assert_eq!(
            c.admit(ip(2), later, 8),
            Err(Refusal::BackOff(FIRST_WAIT * 2))
        );
        c.succeeded(ip(2));
        assert_eq!(c.admit(ip(2), later, 8), Ok(()));
        // The wait is capped.
        for _ in 0..100 {
            c.failed(ip(4), t0);
        }
        assert_eq!(c.admit(ip(4), t0, 8), Err(Refusal::BackOff(MAX_WAIT)));
    }

    #[test]
    fn the_queue_is_bounded_and_cancelled_checks_are_flagged() {
        let mut c = Checks::default();
        let t0 = Instant::now();
        let a = c.start(1, 10, ip(1));
        let _b = c.start(2, 20, ip(2));
        assert_eq!(c.admit(ip(1), t0, 2), Err(Refusal::QueueFull));
        for k in 3..3 + MAX_PER_ADDRESS as usize - 1 {
            c.start(k, 30, ip(1));
        }
        assert_eq!(
            c.admit(ip(1), t0, 100),
            Err(Refusal::QueueFull),
            "its share"
        );
        assert_eq!(c.admit(ip(3), t0, 100), Ok(()));
        for k in 3..3 + MAX_PER_ADDRESS as usize - 1 {
            c.cancel(k);
        }
        c.cancel(1);
        assert!(a.load(Ordering::Relaxed));
        assert_eq!(c.in_flight(), 1);
        assert_eq!(c.admit(ip(1), t0, 2), Ok(()));
        assert!(!c.finished(2, 21), "a stale ticket");
        assert!(c.finished(2, 20));
        assert_eq!(c.in_flight(), 0);
    }
}
