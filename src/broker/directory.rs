//! The directory of protocol.md section 6: where each user accepts direct
//! peer connections, checked by probes.
//!
//! Sans-IO like the rest of the broker: a `BIND` or a due re-probe becomes a
//! [`ProbeRequest`] (an id and an address) for the IO layer, which connects,
//! sends `PING 0` and waits for `PONG 0`; its verdict comes back through
//! [`Broker::handle_probe_result`]. While a session's `BIND` is probed its
//! input is paused, so its replies stay in order; the loop never waits.
//!
//! - A `BIND` names the address the session connects from (compared with
//!   IPv4-mapped IPv6 addresses made plain), or it is `ERR forbidden`: the
//!   server never connects to a third party on a client's word.
//! - At most [`MAX_PROBES`] probes are in flight; a `BIND` past that is
//!   `ERR busy`, and a due re-probe waits a second. One session has one at
//!   most (its input is paused meanwhile).
//! - An entry is re-probed every `probe_interval` after its last probe,
//!   give or take a tenth picked from the user's name, so that entries bound
//!   at once do not stay in step; one that fails is removed. An entry
//!   outlives the session that bound it; `LEAVE` removes it, a re-`BIND`
//!   replaces it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};

use super::{Authorizer, Broker, Event, Sessions};
use crate::conn::ConnId;
use crate::conn::tick::Tick;
use crate::error::ErrorCode;
use crate::proto::frame;

/// Probes in flight at most (`BIND`s and re-probes together).
pub const MAX_PROBES: usize = 64;

/// How long a probe may take: connect, `PING 0`, `PONG 0` (protocol.md
/// section 6). The IO layer enforces it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A re-probe that found no room waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// One bound user.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The user name as the session that bound it spelled it.
    user: Box<str>,
    addr: SocketAddr,
    /// Tells this binding apart from a later one of the same user, so a
    /// stale re-probe or schedule entry does nothing.
    epoch: u64,
    probing: bool,
}

/// What a probe in flight is for.
#[derive(Debug)]
enum Purpose {
    /// A session's `BIND`: its slot, generation and user name.
    Bind {
        conn: ConnId,
        generation: u32,
        user: Box<str>,
        addr: SocketAddr,
    },
    /// A periodic check of an entry (the folded user name and its epoch).
    Reprobe { key: Box<str>, epoch: u64 },
}

/// A probe for the IO layer to run: connect to `addr`, send `PING 0`, expect
/// `PONG 0` within [`PROBE_TIMEOUT`]; then [`Broker::handle_probe_result`]
/// with `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest {
    /// Names the probe in its result.
    pub id: u64,
    /// The peer endpoint.
    pub addr: SocketAddr,
}

/// The directory and its probes.
#[derive(Debug, Default)]
pub(super) struct Directory {
    /// By case-folded user name.
    entries: HashMap<Box<str>, Entry>,
    in_flight: HashMap<u64, Purpose>,
    /// Probes in flight in every loop of the server, when there are
    /// several (`MAX_PROBES` is the server's bound).
    shared: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    /// Probes for the IO layer, not yet taken.
    outbox: Vec<ProbeRequest>,
    /// Re-probe times: (when, epoch, folded user).
    due: BinaryHeap<Reverse<(Tick, u64, Box<str>)>>,
    next_id: u64,
}

impl Directory {
    /// Takes a place for a probe if one of the [`MAX_PROBES`] is free, in
    /// this loop or (shared) in the whole server. Loops reserve with one
    /// atomic step, so two of them cannot both take the last place.
    fn reserve(&self) -> bool {
        match &self.shared {
            None => self.in_flight.len() < MAX_PROBES,
            Some(s) => s
                .fetch_update(
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                    |n| (n < MAX_PROBES).then_some(n + 1),
                )
                .is_ok(),
        }
    }

    /// Starts a probe whose place [`Directory::reserve`] took.
    fn start(&mut self, id: u64, purpose: Purpose) {
        self.in_flight.insert(id, purpose);
    }

    fn finish(&mut self, id: u64) -> Option<Purpose> {
        let p = self.in_flight.remove(&id)?;
        if let Some(s) = &self.shared {
            s.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        Some(p)
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The entries, sorted by user name, as `QUERY` lists them.
    fn listing(&self, only: Option<&str>) -> Vec<u8> {
        let mut lines: Vec<String> = match only {
            Some(user) => (self.entries.get(user.to_ascii_lowercase().as_str()))
                .map(line)
                .into_iter()
                .collect(),
            None => self.entries.values().map(line).collect(),
        };
        lines.sort_unstable();
        lines.concat().into_bytes()
    }

    /// Entries bound now.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// `<user>,<address>,<port>\n`.
fn line(e: &Entry) -> String {
    format!("{},{},{}\n", e.user, e.addr.ip(), e.addr.port())
}

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) made plain.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// A tenth of `interval` either way, picked by `key` (FNV-1a), so that
/// entries bound in the same second drift apart.
fn spread(interval: Duration, key: &str) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let tenth = interval / 10;
    // 0..=2 tenths, then minus one: -tenth..=+tenth.
    let frac = (h % 1001) as u32;
    (interval - tenth) + tenth * 2 * frac / 1000
}

impl Broker {
    /// `BIND 0 <address> <port>`.
    pub(super) fn cmd_bind<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        address: IpAddr,
        port: u16,
    ) {
        let Some(l) = links.get(conn) else {
            return;
        };
        let from = canonical(l.peer().ip());
        let generation = l.generation();
        let Some(user) = l.proto.name.clone() else {
            return;
        };
        if canonical(address) != from {
            let text =
                format!("you connect from {from}: only that address can be bound (not {address})");
            info!(
                "{}: BIND {address} {port} refused: {text}",
                links.log_peer(conn)
            );
            return self.reply_err(links, conn, ErrorCode::Forbidden, &text);
        }
        // (A probe not yet taken by the IO layer is in flight already.)
        if !self.directory.reserve() {
            let text = format!("{MAX_PROBES} probes are running; try again");
            return self.reply_err(links, conn, ErrorCode::Busy, &text);
        }
        let addr = SocketAddr::new(address, port);
        let id = self.directory.new_id();
        self.directory.start(
            id,
            Purpose::Bind {
                conn,
                generation,
                user: user.as_ref().into(),
                addr,
            },
        );
        self.directory.outbox.push(ProbeRequest { id, addr });
        self.counters.probes += 1;
        debug!("{}: BIND {addr}: probing", links.log_peer(conn));
        // Nothing more of this connection's input is processed until the
        // verdict, so its replies stay in order.
        links.set_paused(conn, true);
    }

    /// `QUERY 0 [<user>]`: one `user,address,port` line per entry.
    pub(super) fn cmd_query<T>(
        &mut self,
        links: &mut Sessions<T>,
        conn: ConnId,
        user: Option<&str>,
    ) {
        let mut listing = self.directory.listing(user);
        if self.in_cluster() {
            listing = self.merged_listing(user, listing);
        }
        self.push_reply(links, conn, frame::result(&listing));
    }

    /// `QUERY`'s listing with the other members' entries (a local entry
    /// wins over a remote one for the same user).
    fn merged_listing(&self, only: Option<&str>, local: Vec<u8>) -> Vec<u8> {
        let only = only.map(str::to_ascii_lowercase);
        let mut lines: Vec<String> = String::from_utf8_lossy(&local)
            .lines()
            .map(|l| format!("{l}\n"))
            .collect();
        for (folded, user, addr) in self.remote_directory() {
            if only.as_deref().is_some_and(|o| o != &*folded)
                || self.directory.entries.contains_key(&*folded)
            {
                continue;
            }
            let line = format!("{user},{},{}\n", addr.ip(), addr.port());
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        lines.sort_unstable();
        lines.concat().into_bytes()
    }

    /// `LEAVE 0`: this user's entry goes.
    pub(super) fn cmd_leave<T>(&mut self, links: &mut Sessions<T>, conn: ConnId) {
        let Some(user) = links.proto(conn).and_then(|s| s.name.clone()) else {
            return;
        };
        let mut left = self.unbind(&user, "left");
        if self.in_cluster() {
            // The entry may be another loop's or node's: it goes there too,
            // and from this one's view at once.
            left |= self.forget_remote_entry(&user);
            self.note(super::cluster::Note::Leave(Arc::clone(&user)));
        }
        let text = if left {
            "left the directory"
        } else {
            "not in the directory"
        };
        self.push_reply(links, conn, frame::ack(text));
    }

    /// Removes `user`'s entry; returns whether there was one.
    fn unbind(&mut self, user: &str, why: &'static str) -> bool {
        let key = user.to_ascii_lowercase();
        let Some(e) = self.directory.entries.remove(key.as_str()) else {
            return false;
        };
        info!("directory: {} at {} removed ({why})", e.user, e.addr);
        if self.in_cluster() {
            self.note(super::cluster::Note::Unbound(e.user.clone().into()));
        }
        self.emit(Event::Unbound {
            user: e.user.into(),
            addr: e.addr,
            reason: why,
        });
        true
    }

    /// Adds or replaces `user`'s entry, re-probed from `now` on.
    fn bind_entry(&mut self, user: &str, addr: SocketAddr, now: Tick) {
        let key: Box<str> = user.to_ascii_lowercase().into();
        let epoch = self.directory.new_id();
        let next = now + spread(self.config.probe_interval, &key);
        self.directory.due.push(Reverse((next, epoch, key.clone())));
        let old = self.directory.entries.insert(
            key,
            Entry {
                user: user.into(),
                addr,
                epoch,
                probing: false,
            },
        );
        if old.is_none_or(|o| o.addr != addr) {
            info!("directory: {user} at {addr}");
        }
        if self.in_cluster() {
            self.note(super::cluster::Note::Bound(user.into(), addr));
        }
        self.emit(Event::Bound {
            user: user.to_owned(),
            addr,
        });
    }

    /// Probes in flight count for every loop holding `counter` together.
    pub fn share_probe_count(&mut self, counter: std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        self.directory.shared = Some(counter);
    }

    /// Another member's user left the directory (`LEAVE` there): this
    /// one's entry for the user goes.
    pub(super) fn remote_leave(&mut self, user: &str) {
        self.unbind(user, "left");
    }

    /// Adds or replaces an entry without a probe (the embedding program's
    /// word is taken); it is re-probed like any other.
    pub fn add_directory_entry<T>(
        &mut self,
        links: &Sessions<T>,
        user: &str,
        addr: SocketAddr,
        now: Instant,
    ) {
        self.bind_entry(user, addr, links.tick(now));
    }

    /// Removes an entry; returns whether there was one.
    pub fn remove_directory_entry(&mut self, user: &str) -> bool {
        self.unbind(user, "removed by the server")
    }

    /// The directory's entries: `(user, address)`, sorted by user.
    pub fn directory(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = (self.directory.entries.values())
            .map(|e| (e.user.to_string(), e.addr))
            .collect();
        v.sort();
        v
    }

    /// Probes for the IO layer to run, oldest first (see [`ProbeRequest`]).
    pub fn take_probe_requests(&mut self, into: &mut Vec<ProbeRequest>) {
        into.append(&mut self.directory.outbox);
    }

    /// Whether probes wait to be taken.
    pub fn has_probe_requests(&self) -> bool {
        !self.directory.outbox.is_empty()
    }

    /// A probe's verdict: `ok` when `PONG 0` came in time.
    pub fn handle_probe_result<T>(
        &mut self,
        links: &mut Sessions<T>,
        id: u64,
        ok: bool,
        now: Instant,
        authz: &mut dyn Authorizer,
    ) {
        self.now = now;
        let Some(purpose) = self.directory.finish(id) else {
            return;
        };
        if !ok {
            self.counters.probe_failures += 1;
        }
        let tick = links.tick(now);
        match purpose {
            Purpose::Bind {
                conn,
                generation,
                user,
                addr,
            } => {
                let live = links
                    .get(conn)
                    .is_some_and(|l| l.generation() == generation && !l.is_closing());
                if ok {
                    self.bind_entry(&user, addr, tick);
                }
                if !live {
                    return;
                }
                links.set_paused(conn, false);
                let reply = if ok {
                    frame::ack("bound")
                } else {
                    let text = format!("no PONG from {addr} within {} s", PROBE_TIMEOUT.as_secs());
                    frame::err(ErrorCode::Unreachable, &text)
                };
                if !ok {
                    info!(
                        "{}: BIND refused: endpoint unreachable",
                        links.log_peer(conn)
                    );
                }
                self.push_reply(links, conn, reply);
                self.resume_with(links, conn, now, authz);
            }
            Purpose::Reprobe { key, epoch } => {
                let Some(e) = self.directory.entries.get_mut(&key) else {
                    return;
                };
                if e.epoch != epoch {
                    return;
                }
                e.probing = false;
                if ok {
                    let next = tick + spread(self.config.probe_interval, &key);
                    self.directory.due.push(Reverse((next, epoch, key)));
                } else {
                    let user = e.user.clone();
                    self.unbind(&user, "its probe failed");
                }
            }
        }
    }

    /// Starts the re-probes that are due, as many as there is room for.
    pub(super) fn reprobe_due<T>(&mut self, links: &Sessions<T>) {
        let now = links.tick(self.now);
        let mut full = false;
        let mut later = Vec::new();
        while let Some(Reverse((at, _, _))) = self.directory.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, epoch, key))) = self.directory.due.pop() else {
                break;
            };
            let due =
                (self.directory.entries.get(&key)).is_some_and(|e| e.epoch == epoch && !e.probing);
            if !due {
                continue;
            }
            if full || !self.directory.reserve() {
                full = true;
                later.push(Reverse((now + RETRY, epoch, key)));
                continue;
            }
            let Some(e) = self.directory.entries.get_mut(&key) else {
                continue;
            };
            e.probing = true;
            let addr = e.addr;
            let id = self.directory.new_id();
            self.directory.start(id, Purpose::Reprobe { key, epoch });
            self.directory.outbox.push(ProbeRequest { id, addr });
            self.counters.probes += 1;
        }
        self.directory.due.extend(later);
    }

    /// When the next re-probe is due.
    pub(super) fn next_reprobe(&self) -> Option<Tick> {
        self.directory.due.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Entries in the directory now.
    pub fn directory_len(&self) -> usize {
        self.directory.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_within_a_tenth() {
        let i = Duration::from_secs(30);
        for k in ["a", "bob", "carol", "x".repeat(64).as_str()] {
            let s = spread(i, k);
            assert!(
                s >= Duration::from_secs(27) && s <= Duration::from_secs(33),
                "{s:?}"
            );
        }
        assert_ne!(spread(i, "alice"), spread(i, "bob"));
    }

    #[test]
    fn mapped_addresses_are_plain() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(
            canonical(mapped),
            "127.0.0.1".parse::<IpAddr>().expect("ip")
        );
        let v6: IpAddr = "::1".parse().expect("ip");
        assert_eq!(canonical(v6), v6);
    }

    /// Loops racing for the last places never take more than the bound
    /// together (a load followed by an add let two take the last one).
    #[test]
    fn loops_share_the_probe_bound_exactly() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Barrier};
        let loops = 4;
        for _ in 0..50 {
            let counter = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(Barrier::new(loops));
            let taken: usize = (0..loops)
                .map(|_| {
                    let (counter, barrier) = (counter.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let d = Directory {
                            shared: Some(counter),
                            ..Directory::default()
                        };
                        barrier.wait();
                        (0..MAX_PROBES).filter(|_| d.reserve()).count()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().expect("a loop"))
                .sum();
            assert_eq!(taken, MAX_PROBES);
            assert_eq!(counter.load(Ordering::Relaxed), MAX_PROBES);
        }
    }
}
