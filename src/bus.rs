//! How a broker reaches the other members (protocol.md section 11): the
//! other loops of its process ([`LoopPeers`], `--threads`), or the other
//! nodes of a cluster through the engine ([`EngineLink`], `--cluster`).
//!
//! The broker says what to tell them ([`crate::broker::Note`]s, drained
//! once per turn) and takes theirs in; this module only carries them.
//!
//! - **Between loops** a batch of notes a turn goes to each other loop as
//!   a message on its control channel with one wake: the frames inside are
//!   the very `Bytes` the publishing loop encoded. A loop's backlog of
//!   notes from the others is bounded ([`MAX_LOOP_BACKLOG`]), counted in
//!   the bytes they hold; past it the senders drop and count.
//! - **Between nodes** each batch is one message in its wire form
//!   ([`crate::broker::encode_batch`]). On a single Redis every node
//!   publishes to and subscribes to one channel, [`CHANNEL`]: Redis
//!   delivers a publisher's messages in order, once to each subscriber. On
//!   a Redis Cluster (sharded pub/sub), each node subscribes to its own
//!   inbox channel ([`inbox`], a slot of its own) and to [`CONTROL`], where
//!   nodes say hello, beat and leave; a batch goes to the inbox of each
//!   node known, so no single Redis carries every message, and each pair of
//!   nodes still has one ordered path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::warn;
use mio::Waker;

use crate::broker::{Broker, Note, Sessions, decode_batch, encode_batch};
use crate::engine::SharedEngineBoard;
use crate::reactor::Control;

/// Most note bytes one loop may have waiting from the others before they
/// drop what they would add (a loop that far behind is overloaded; the
/// drops are counted and logged).
const MAX_LOOP_BACKLOG: usize = 64 << 20;

/// How a loop's broker reaches the others of the process.
pub(crate) struct LoopPeers {
    /// This loop's index.
    pub(crate) me: usize,
    /// Every loop's member name, by index.
    pub(crate) names: Vec<Arc<str>>,
    /// Note bytes waiting here, sent by the others.
    pub(crate) backlog: Arc<AtomicUsize>,
    /// Notes dropped because a loop's backlog was full.
    pub(crate) dropped: u64,
    /// The others by index (`None` at `me`).
    pub(crate) peers: Vec<Option<PeerLoop>>,
}

/// Another loop: its control channel, waker and backlog.
pub(crate) struct PeerLoop {
    pub(crate) tx: Sender<Control>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) backlog: Arc<AtomicUsize>,
}

/// What one loop hands another: the broker service wraps it in its own
/// control message.
pub(crate) enum Hand {
    /// Notes of loop `.0`.
    Notes(usize, Vec<Note>),
    /// Notes of another node (relayed by the loop that holds the engine).
    Remote(Arc<str>, Vec<Note>),
    /// Notes of loop `.0` for the engine (to the loop that holds it).
    Upstream(usize, Vec<Note>),
    /// The engine came up or went down.
    EngineUp(bool),
}

/// Note bytes waiting at another loop past which this loop stops reading
/// its clients until they fall back (a publisher cannot run further ahead
/// of the other loops than this; below [`MAX_LOOP_BACKLOG`], so a loop
/// that keeps up never drops).
pub(crate) const LOOP_HIGH_WATER: usize = 1 << 20;

impl LoopPeers {
    /// Whether another loop is so far behind that this one should stop
    /// taking client input for now.
    pub(crate) fn congested(&self) -> bool {
        (self.peers.iter().flatten()).any(|p| p.backlog.load(Ordering::Relaxed) > LOOP_HIGH_WATER)
    }

    /// Posts `hand` to loop `j` with one wake; `cost` counts against that
    /// loop's backlog (it gives it back as it works through them).
    fn post(
        &mut self,
        j: usize,
        hand: Hand,
        cost: usize,
        wrap: &impl Fn(Hand, usize) -> Box<dyn std::any::Any + Send>,
    ) {
        let Some(Some(peer)) = self.peers.get(j) else {
            return;
        };
        let waiting = peer.backlog.fetch_add(cost, Ordering::Relaxed);
        if cost > 0 && waiting.saturating_add(cost) > MAX_LOOP_BACKLOG {
            peer.backlog.fetch_sub(cost, Ordering::Relaxed);
            if self.dropped == 0 {
                log::warn!("loop {j} is {waiting} bytes behind: notes to it dropped");
            }
            self.dropped += 1;
            return;
        }
        if peer.tx.send(Control::Service(0, wrap(hand, cost))).is_ok() {
            let _ = peer.waker.wake();
        } else {
            peer.backlog.fetch_sub(cost, Ordering::Relaxed);
        }
    }

    /// Whether `name` is a loop of this process.
    pub(crate) fn is_local(&self, name: &str) -> bool {
        self.names.iter().any(|m| **m == *name)
    }

    /// Hands `notes` (of `from`: this loop, or another node relayed) to
    /// the other loops: one batch a loop a turn, one wake each; a note for
    /// one member goes to that loop only.
    pub(crate) fn ship(
        &mut self,
        from: Option<Arc<str>>,
        notes: &[Note],
        wrap: &impl Fn(Hand, usize) -> Box<dyn std::any::Any + Send>,
    ) {
        let n = self.peers.len();
        let mut batches: Vec<(Vec<Note>, usize)> = (0..n).map(|_| (Vec::new(), 0)).collect();
        for note in notes {
            let cost = note.cost();
            match note.target() {
                Some(t) => {
                    if let Some(j) = self.names.iter().position(|m| **m == *t) {
                        if let Some(b) = batches.get_mut(j) {
                            b.0.push(note.clone());
                            b.1 += cost;
                        }
                    }
                }
                None => {
                    for (j, b) in batches.iter_mut().enumerate() {
                        if j != self.me {
                            b.0.push(note.clone());
                            b.1 += cost;
                        }
                    }
                }
            }
        }
        for (j, (batch, cost)) in batches.into_iter().enumerate() {
            if batch.is_empty() || j == self.me {
                continue;
            }
            let hand = match &from {
                None => Hand::Notes(self.me, batch),
                Some(f) => Hand::Remote(Arc::clone(f), batch),
            };
            self.post(j, hand, cost, wrap);
        }
    }

    /// Hands this loop's notes for other nodes to loop 0, which holds the
    /// engine.
    pub(crate) fn upstream(
        &mut self,
        notes: Vec<Note>,
        wrap: &impl Fn(Hand, usize) -> Box<dyn std::any::Any + Send>,
    ) {
        if !notes.is_empty() {
            self.post(0, Hand::Upstream(self.me, notes), 0, wrap);
        }
    }

    /// Tells every other loop that the engine came up or went down.
    pub(crate) fn engine_up(
        &mut self,
        up: bool,
        wrap: &impl Fn(Hand, usize) -> Box<dyn std::any::Any + Send>,
    ) {
        for j in 0..self.peers.len() {
            if j != self.me {
                self.post(j, Hand::EngineUp(up), 0, wrap);
            }
        }
    }

    /// Of `notes`, those the other nodes must hear: not those for a loop
    /// of this process, nor the `STATS` queries between loops.
    pub(crate) fn for_nodes(&self, notes: &[Note]) -> Vec<Note> {
        notes
            .iter()
            .filter(|n| !matches!(n, Note::StatsQuery(_) | Note::Stats { .. }))
            .filter(|n| n.target().is_none_or(|t| !self.is_local(t)))
            .cloned()
            .collect()
    }
}

/// A member's name: the node's, and the loop's index when there are
/// several (`web-1:7420#1`).
pub(crate) fn member_name(node: &str, threads: usize, i: usize) -> String {
    if threads > 1 {
        format!("{node}#{i}")
    } else {
        node.to_owned()
    }
}

/// The channel every node uses on a single Redis.
pub(crate) const CHANNEL: &str = "switchboard";
/// Where nodes say hello, beat and leave on a Redis Cluster.
pub(crate) const CONTROL: &str = "switchboard:{control}";

/// A node's inbox on a Redis Cluster (the hash tag puts each node's on a
/// slot of its own): one a process, whatever its loops (the loop that holds
/// the engine hands the others their notes).
pub(crate) fn inbox(member: &str) -> String {
    format!("switchboard:{{{}}}", node_of(member))
}

/// The node a member is a loop of (`web-1#2` is a loop of `web-1`).
pub(crate) fn node_of(member: &str) -> &str {
    member.split('#').next().unwrap_or(member)
}

/// The key holding a node's state, refreshed with each beat and expiring
/// with it (for operators: `redis-cli GET 'switchboard:node:{NAME}'`).
pub(crate) fn state_key(member: &str) -> String {
    format!("switchboard:node:{{{member}}}")
}

/// How a node's broker reaches the others through the engine.
pub(crate) struct EngineLink {
    board: SharedEngineBoard,
    me: Arc<str>,
    /// The engine's state last seen: up, and how many times it came up.
    up: bool,
    generation: u64,
    sharded: bool,
    expiry: Duration,
    /// Batches that could not be read (logged once a minute at most).
    bad: u64,
    bad_logged: Option<Instant>,
    /// The loops of this process (their notes travel between them, not
    /// through the engine), when there are several.
    local: Vec<Arc<str>>,
}

/// What [`EngineLink::poll`] leaves for the other loops of the process.
#[derive(Default)]
pub(crate) struct Relay {
    /// The engine came up (`Some(true)`) or went down.
    pub(crate) up: Option<bool>,
    /// Other nodes' notes, by sender.
    pub(crate) batches: Vec<(Arc<str>, Vec<Note>)>,
}

impl EngineLink {
    /// A link for member `me`; subscribes the channels both modes use.
    pub(crate) fn new(board: SharedEngineBoard, me: &str, expiry: Duration) -> Self {
        if let Ok(mut b) = board.lock() {
            b.channels.insert(CHANNEL.to_owned());
            b.channels.insert(CONTROL.to_owned());
            b.channels.insert(inbox(me));
        }
        Self {
            board,
            me: Arc::from(me),
            up: false,
            generation: 0,
            sharded: false,
            expiry,
            bad: 0,
            bad_logged: None,
            local: Vec::new(),
        }
    }

    /// The loops of this process (with `--threads`): their own notes coming
    /// back from the engine are skipped.
    pub(crate) fn set_local(&mut self, names: Vec<Arc<str>>) {
        self.local = names;
    }

    /// Whether the engine has news for the broker (messages, or a change
    /// of state).
    pub(crate) fn has_news(&self) -> bool {
        self.board.lock().is_ok_and(|b| {
            !b.incoming.is_empty() || b.up != self.up || b.generation != self.generation
        })
    }

    /// Hands the broker what came from the engine: its state (`cluster=`,
    /// and the broker's state sent again when it comes back) and the other
    /// nodes' notes; returns them for the other loops of the process, if
    /// any (`relay`).
    pub(crate) fn poll<T>(
        &mut self,
        broker: &mut Broker,
        links: &mut Sessions<T>,
        now: Instant,
        relay: bool,
    ) -> Relay {
        let mut out = Relay::default();
        let (incoming, up, generation, sharded) = match self.board.lock() {
            Ok(mut b) => (
                std::mem::take(&mut b.incoming),
                b.up,
                b.generation,
                b.sharded,
            ),
            Err(_) => return out,
        };
        self.sharded = sharded;
        if up != self.up || generation != self.generation {
            self.up = up;
            self.generation = generation;
            broker.set_cluster_up(links, up, now);
            out.up = Some(up);
        }
        for (_, batch) in incoming {
            match decode_batch(&batch) {
                // This process's own loops, back from the engine.
                Ok((from, _)) if self.local.contains(&from) => {}
                Ok((from, notes)) => {
                    if relay {
                        out.batches.push((Arc::clone(&from), notes.clone()));
                    }
                    broker.handle_notes(links, &from, notes, now);
                }
                Err(e) => {
                    self.bad += 1;
                    if self
                        .bad_logged
                        .is_none_or(|t| now >= t + Duration::from_secs(60))
                    {
                        self.bad_logged = Some(now);
                        warn!(
                            "cluster: a message on the engine could not be read ({}); {} so far",
                            e.0, self.bad
                        );
                    }
                }
            }
        }
        out
    }

    /// Publishes member `from`'s notes (this loop's, or another loop's of
    /// the process): one batch on [`CHANNEL`] (single Redis), or per node
    /// inbox and [`CONTROL`] (Redis Cluster). `state`: the member's state,
    /// refreshed under its key with a beat.
    pub(crate) fn ship(
        &mut self,
        from: &str,
        notes: Vec<Note>,
        members: &[String],
        state: Option<Bytes>,
    ) {
        if notes.is_empty() {
            return;
        }
        let mut out: Vec<(String, Bytes)> = Vec::new();
        if self.sharded {
            // One inbox a node (the other nodes only: this process's loops
            // hear each other directly), with the notes for any of its loops.
            let mut nodes: Vec<&str> = (members.iter())
                .filter(|m| !self.local.iter().any(|l| **l == ***m))
                .map(|m| node_of(m))
                .filter(|n| *n != node_of(&self.me))
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            let mut control = Vec::new();
            let mut per: Vec<Vec<Note>> = nodes.iter().map(|_| Vec::new()).collect();
            for note in notes {
                match (&note, note.target()) {
                    (Note::Hello | Note::Beat | Note::Bye, _) => control.push(note),
                    (_, Some(t)) => {
                        if let Some(i) = nodes.iter().position(|n| *n == node_of(t)) {
                            per[i].push(note);
                        }
                    }
                    (_, None) => {
                        for p in &mut per {
                            p.push(note.clone());
                        }
                    }
                }
            }
            if !control.is_empty() {
                out.push((CONTROL.to_owned(), encode_batch(from, &control)));
            }
            for (n, batch) in nodes.iter().zip(per) {
                if !batch.is_empty() {
                    out.push((inbox(n), encode_batch(from, &batch)));
                }
            }
        } else {
            out.push((CHANNEL.to_owned(), encode_batch(from, &notes)));
        }
        if let Ok(mut b) = self.board.lock() {
            b.outgoing.extend(out);
            if let Some(state) = state {
                b.sets.push((state_key(from), state, self.expiry));
            }
        }
    }

    /// This member's name.
    pub(crate) fn me(&self) -> &Arc<str> {
        &self.me
    }

    /// Publishes dropped by the engine (down, or over its bound).
    pub(crate) fn dropped(&self) -> u64 {
        self.board.lock().map_or(0, |b| b.dropped)
    }
}
