//! Broker fan-out to 10,000 in-process subscribers (issue 5, "The instruments"
//! item 2): time per publish, ns per delivery, allocations per publish.
//!
//! A `Broker<()>` (no sockets) holds 10,000 logged-in sessions subscribed to
//! group 1, with events off as in the standalone server. Each iteration is one
//! server-side publish of a 64-byte payload, after which every subscriber's
//! output queue is drained the way the reactor drains it (`write_to`, here
//! into a sink), so the next iteration starts clean.
//!
//! - `fanout/publish`: the publish alone (the drain runs outside the timer);
//! - `fanout/publish_and_drain`: the publish plus the reactor-side drain.
//!
//! Throughput is `Elements(10_000)`, one element per delivery, so criterion's
//! time per iteration divided by 10,000 is the cost of one delivery.
//!
//! The bench binary counts heap allocations with a `#[global_allocator]` that
//! wraps `System`, and prints the count for one publish once.
//!
//!     cargo bench --bench fanout
//!     cargo test --benches        # smoke mode: each benchmark runs once

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard::broker::{Broker, SERVER_USER, Sessions};
use switchboard::conn::Admission;
use switchboard::{BrokerConfig, ConnId};

/// Counts allocation calls (`alloc`, `alloc_zeroed`, `realloc`) and frees.
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static REALLOCS: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters are
// plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (allocs, reallocs, frees) so far.
fn counts() -> [usize; 3] {
    [&ALLOCS, &REALLOCS, &FREES].map(|c| c.load(Ordering::Relaxed))
}

const SUBSCRIBERS: usize = 10_000;
const GROUP: u32 = 1;
const PAYLOAD: [u8; 64] = [b'x'; 64];

/// The broker, its subscribers, and the reactor's reusable dirty list.
struct Bed {
    broker: Broker,
    /// The connection table (the broker's sessions).
    links: Sessions<()>,
    dirty: Vec<ConnId>,
    /// The reactor's scratch buffer, for gathered writes.
    scratch: Vec<u8>,
}

impl Bed {
    fn new() -> Self {
        let config = BrokerConfig {
            max_connections: SUBSCRIBERS + 16,
            ..BrokerConfig::default()
        };
        let mut broker = Broker::new(config);
        broker.set_events_enabled(false);
        broker.register_group(GROUP, "bench");
        let now = Instant::now();
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        let links = broker.new_table();
        let mut bed = Self {
            broker,
            links,
            dirty: Vec::new(),
            scratch: vec![0; 64 << 10],
        };
        let mut line = Vec::with_capacity(64);
        for i in 0..SUBSCRIBERS {
            let Admission::Open(conn) = bed.broker.accept(&mut bed.links, (), peer, now) else {
                panic!("not admitted");
            };
            line.clear();
            line.extend_from_slice(format!("USER 0 u{i}\nSUBSCRIBE 0 {GROUP}\n").as_bytes());
            bed.broker.handle_input(&mut bed.links, conn, &line, now);
        }
        // Throw away the ACKs.
        assert_eq!(bed.drain(), SUBSCRIBERS);
        bed
    }

    fn publish(&mut self) {
        let n = self
            .broker
            .publish(&mut self.links, SERVER_USER, &[GROUP], black_box(&PAYLOAD))
            .expect("published");
        debug_assert_eq!(n, SUBSCRIBERS);
    }

    /// Drains every connection with new output as the reactor does
    /// (`OutQueue::write_to`), into a sink that takes everything.
    /// Returns how many connections had output.
    fn drain(&mut self) -> usize {
        self.links.take_dirty(&mut self.dirty);
        for &conn in &self.dirty {
            let Some(out) = self.links.output(conn) else {
                continue;
            };
            let pending = out
                .write_to(&mut std::io::sink(), &mut self.scratch)
                .expect("a sink takes everything");
            black_box(pending);
        }
        self.dirty.len()
    }
}

/// Counts the allocations of one publish (and of the drain after it) and
/// prints them once.
fn report_allocations(bed: &mut Bed) {
    // Warm the reusable buffers (dirty lists) first.
    bed.publish();
    bed.drain();
    let before = counts();
    bed.publish();
    let mid = counts();
    let drained = bed.drain();
    let after = counts();
    let d = |a: [usize; 3], b: [usize; 3], i: usize| b[i] - a[i];
    eprintln!(
        "fanout: one publish of {} B to {SUBSCRIBERS} subscribers: \
         {} allocations + {} reallocations, {} frees; \
         the drain of {drained} queues after it: {} allocations, {} frees",
        PAYLOAD.len(),
        d(before, mid, 0),
        d(before, mid, 1),
        d(before, mid, 2),
        d(mid, after, 0) + d(mid, after, 1),
        d(mid, after, 2),
    );
}

fn bench_fanout(c: &mut Criterion) {
    let mut bed = Bed::new();
    report_allocations(&mut bed);
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.bench_function("publish", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                bed.publish();
                total += start.elapsed();
                bed.drain();
            }
            total
        });
    });
    group.bench_function("publish_and_drain", |b| {
        b.iter(|| {
            bed.publish();
            bed.drain()
        });
    });
    group.finish();
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
