//! The datagram service without sockets: datagrams in, the queue out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Echoes, and counts what it hears.
#[derive(Default)]
struct Echo {
    oversized: Vec<usize>,
    timers: usize,
    errors: usize,
}

impl DatagramHandler for Echo {
    fn on_datagram(&mut self, ctx: &mut DatagramContext<'_>, from: SocketAddr, payload: &[u8]) {
        ctx.send_to(from, payload);
    }
    fn on_oversized(&mut self, _ctx: &mut DatagramContext<'_>, _from: SocketAddr, len: usize) {
        self.oversized.push(len);
    }
    fn on_timer(&mut self, ctx: &mut DatagramContext<'_>) {
        self.timers += 1;
        ctx.set_timer_after(Duration::from_secs(1));
    }
    fn on_error(&mut self, _: &mut DatagramContext<'_>, _: Option<SocketAddr>, _: &std::io::Error) {
        self.errors += 1;
    }
}

fn drain(s: &mut Datagrams<Echo>) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((to, p)) = s.front() {
        out.push((to, p.to_vec()));
        s.pop_front(true);
    }
    out
}

#[test]
fn echoes_in_order_and_counts() {
    let now = Instant::now();
    let mut s = Datagrams::new(&UdpOptions::default(), Echo::default());
    s.start(addr(1), None, now);
    for i in 0..10u8 {
        s.handle_datagram(addr(2), &[i; 3], now);
    }
    let out = drain(&mut s);
    assert_eq!(out.len(), 10);
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, (to, p))| *to == addr(2) && p == &[i as u8; 3])
    );
    assert_eq!(s.core.stats.received, 10);
    assert_eq!(s.core.stats.sent, 10);
    assert_eq!(s.core.queued_bytes, 0);
}

#[test]
fn oversized_datagrams_go_to_their_callback_not_on_datagram() {
    let now = Instant::now();
    let mut s = Datagrams::new(&UdpOptions::default().max_datagram(8), Echo::default());
    assert_eq!(s.recv_window(), 9);
    s.handle_datagram(addr(2), &[0; 9], now);
    s.handle_datagram(addr(2), &[0; 8], now);
    assert_eq!(s.handler.oversized, vec![9]);
    assert_eq!(drain(&mut s).len(), 1);
    assert_eq!(s.core.stats.oversized, 1);
}

#[test]
fn the_send_queue_is_bounded_in_datagrams_and_bytes_and_size() {
    let opts = UdpOptions::default()
        .send_queue(3)
        .send_queue_bytes(10)
        .max_datagram(6);
    let mut core = DatagramCore::new(&opts);
    let now = Instant::now();
    let mut ctx = DatagramContext {
        core: &mut core,
        now,
    };
    assert!(!ctx.send_to(addr(1), &[0; 7]), "over max_datagram");
    assert!(ctx.send_to(addr(1), &[0; 6]));
    assert!(!ctx.send_to(addr(1), &[0; 5]), "over the byte bound");
    assert!(ctx.send_to(addr(1), &[0; 2]));
    assert!(ctx.send_to(addr(1), &[0; 2]));
    assert!(!ctx.send_to(addr(1), &[]), "over the datagram bound");
    assert_eq!(ctx.queued(), 3);
    assert!(!ctx.send(&[1]), "no connected peer");
    assert_eq!(core.stats.refused, 3);
}

#[test]
fn timers_fire_when_due_and_not_after_shutdown() {
    let t0 = Instant::now();
    let mut s = Datagrams::new(&UdpOptions::default(), Echo::default());
    s.start(addr(1), None, t0);
    assert_eq!(s.poll_timeout(), None);
    s.core.timer = Some(t0 + Duration::from_millis(10));
    s.handle_timeout(t0);
    assert_eq!(s.handler.timers, 0);
    s.handle_timeout(t0 + Duration::from_millis(10));
    assert_eq!(s.handler.timers, 1);
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + Duration::from_millis(10) + Duration::from_secs(1))
    );
    s.shutdown();
    assert_eq!(s.poll_timeout(), None);
    s.handle_datagram(addr(2), b"late", t0);
    assert!(drain(&mut s).is_empty(), "nothing handled once stopping");
}

#[test]
fn socket_options_are_queued_for_the_reactor() {
    let group = Ipv4Addr::new(239, 255, 0, 1);
    let opts = UdpOptions::default()
        .join_multicast_v4(group, Ipv4Addr::LOCALHOST)
        .multicast_ttl_v4(0);
    assert_eq!(
        opts.ops(),
        &[
            SocketOp::JoinV4 {
                group,
                interface: Ipv4Addr::LOCALHOST
            },
            SocketOp::MulticastTtlV4(0)
        ]
    );
    let mut s = Datagrams::new(&opts, Echo::default());
    let mut ctx = Datagrams::<Echo>::ctx(&mut s.core, Instant::now());
    ctx.leave_multicast_v4(group, Ipv4Addr::LOCALHOST);
    ctx.set_multicast_loop_v4(true);
    ctx.stop();
    let mut ops = Vec::new();
    s.take_ops(&mut ops);
    assert_eq!(
        ops,
        vec![
            SocketOp::LeaveV4 {
                group,
                interface: Ipv4Addr::LOCALHOST
            },
            SocketOp::MulticastLoopV4(true)
        ]
    );
    assert!(s.take_stop());
    assert!(!s.take_stop());
}

#[test]
fn failed_sends_are_not_counted_as_sent() {
    let now = Instant::now();
    let mut s = Datagrams::new(&UdpOptions::default(), Echo::default());
    s.handle_datagram(addr(2), b"x", now);
    s.pop_front(false);
    s.handle_error(Some(addr(2)), &std::io::Error::other("no"), now);
    assert_eq!(s.core.stats.sent, 0);
    assert_eq!(s.core.stats.errors, 1);
    assert_eq!(s.handler.errors, 1);
}
