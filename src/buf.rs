//! Per-connection buffers that cost nothing while a connection is idle.
//!
//! Memory per connection is a product feature (README, "Footprint"), so neither
//! buffer here holds an allocation once it is empty:
//!
//! - Input is read into one scratch buffer owned by the reactor. Only the tail
//!   of a frame that has not fully arrived is copied into the connection's own
//!   `Vec` (the connection layer, `conn::Links`, keeps it), and that `Vec` is freed as soon as it
//!   empties.
//! - Output is a queue of [`Bytes`]: a published frame is encoded once and the
//!   same allocation is queued to every subscriber (a reference count, not a
//!   copy). The queue's ring buffer is freed when it drains.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes};

/// Most slices handed to one vectored write (used for frames too large to
/// gather, so 64 of them are at least 256 KiB).
pub const MAX_IOV: usize = 64;

/// Front frames at most this long are copied into one buffer with the frames
/// behind them before a write, rather than handed over as one slice each.
pub const GATHER_MAX_FRAME: usize = 4 << 10;

/// Frames waiting to be written to one connection.
///
/// The front frame is kept inline, so the common case of a fan-out (one frame
/// queued for a subscriber, written in the same loop turn) allocates nothing;
/// only a second frame queued behind it needs the ring, which is freed again
/// when the queue drains.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// The front frame; `None` only when the queue is empty.
    head: Option<Bytes>,
    /// Frames behind `head`, boxed so an idle connection pays one pointer
    /// for it (8 bytes, not 32); allocated when a second frame is queued.
    /// The extra allocation is the point: it exists only while frames pile up.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Bytes>>>,
    /// Unsent bytes in `head` and `rest`.
    len: usize,
    /// Whether part of `head` has been written already.
    front_started: bool,
}

impl OutQueue {
    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues one encoded frame (shared, not copied).
    pub fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.len += frame.len();
        if self.head.is_none() {
            self.head = Some(frame);
        } else {
            self.rest.get_or_insert_with(Box::default).push_back(frame);
        }
    }

    /// Puts `frame` in front of everything queued, unless the front frame
    /// has been partly written already (a frame's bytes are never split by
    /// another's): then it is handed back. For a transport's own bytes
    /// that must precede the protocol's (an HTTP response, a pong).
    ///
    /// # Errors
    ///
    /// `frame`, when the front is partly written.
    pub fn push_front(&mut self, frame: Bytes) -> Result<(), Bytes> {
        if self.front_started {
            return Err(frame);
        }
        if frame.is_empty() {
            return Ok(());
        }
        self.len += frame.len();
        if let Some(old) = self.head.replace(frame) {
            self.rest.get_or_insert_with(Box::default).push_front(old);
        }
        Ok(())
    }

    /// Fills `slices` with the front of the queue, for `write_vectored`.
    /// Returns how many slices were filled.
    pub fn fill_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in slices.iter_mut().zip(self.head.iter().chain(self.rest())) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// The frames behind the front one.
    fn rest(&self) -> impl Iterator<Item = &Bytes> {
        self.rest.iter().flat_map(|r| r.iter())
    }

    /// Frames queued (the front one counted even when partly written).
    pub fn frames(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    /// The unsent part of the front frame.
    pub fn front(&self) -> &[u8] {
        self.head.as_deref().unwrap_or_default()
    }

    /// Copies up to `buf.len()` bytes from the front of the queue into `buf`,
    /// without consuming them; returns how many.
    pub fn copy_front(&self, buf: &mut [u8]) -> usize {
        let mut len = 0;
        for chunk in self.head.iter().chain(self.rest()) {
            let Some(room) = buf.get_mut(len..) else {
                break;
            };
            let take = chunk.len().min(room.len());
            if let (Some(dst), Some(src)) = (room.get_mut(..take), chunk.get(..take)) {
                dst.copy_from_slice(src);
            }
            len += take;
            if len == buf.len() {
                break;
            }
        }
        len
    }

    /// Writes queued frames to `w` until the queue is empty or `w` would
    /// block; returns whether output is still pending.
    ///
    /// One frame goes out as it is. Several small ones (a subscriber's share
    /// of a busy group) are first copied into `scratch` and written as one
    /// slice: the kernel's copy costs per slice, and walking a few hundred
    /// 100-byte slices cost more than the copy here. Large frames go out by
    /// vectored writes, uncopied.
    ///
    /// # Errors
    ///
    /// What `w` returns other than `WouldBlock` and `Interrupted`, and
    /// `WriteZero` if it accepts nothing.
    pub fn write_to<W: Write>(&mut self, w: &mut W, scratch: &mut [u8]) -> io::Result<bool> {
        while !self.is_empty() {
            let result = if self.frames() == 1 {
                w.write(self.front())
            } else if self.front().len() <= GATHER_MAX_FRAME && !scratch.is_empty() {
                let n = self.copy_front(scratch);
                w.write(scratch.get(..n).unwrap_or_default())
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let n = self.fill_slices(&mut slices);
                w.write_vectored(slices.get(..n).unwrap_or_default())
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Drops `n` written bytes from the front.
    pub fn consume(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.head.as_mut() else {
                break;
            };
            if n < front.len() {
                front.advance(n);
                self.front_started = true;
                return;
            }
            n -= front.len();
            self.head = self.rest.as_mut().and_then(|r| r.pop_front());
            self.front_started = false;
        }
        if self.len == 0 {
            self.release();
        }
    }

    /// Drops every queued frame except a partly written front one (so the stream
    /// stays well-formed), e.g. before the last `ERR` to a slow consumer.
    pub fn discard_unstarted(&mut self) {
        drop(self.take_unstarted());
    }

    /// Like [`OutQueue::discard_unstarted`], but hands the frames behind the
    /// front one back instead of dropping them, so that a caller can free a
    /// long queue a slice at a time rather than all in one go.
    #[allow(clippy::box_collection)] // The ring as the queue keeps it: no copy.
    pub fn take_unstarted(&mut self) -> Option<Box<VecDeque<Bytes>>> {
        let rest = self.rest.take();
        if !self.front_started {
            self.head = None;
        }
        self.len = self.head.as_ref().map_or(0, Bytes::len);
        rest
    }

    /// Frees the ring buffer if nothing is queued.
    pub fn release(&mut self) {
        if self.len == 0 {
            self.head = None;
            self.rest = None;
            self.front_started = false;
        }
    }

    /// What the queue really holds for its connection, in bytes: the unsent
    /// frame bytes plus the ring's bookkeeping (a slot per frame it has room
    /// for, and the ring itself). This is what the output bound counts
    /// (protocol.md 7a), so that a queue of 7-byte frames costs what it
    /// weighs (39 bytes each), not 7.
    pub fn held(&self) -> usize {
        self.len + self.heap_bytes()
    }

    /// What [`OutQueue::held`] would be after [`OutQueue::push`] of a frame
    /// of `len` bytes, counting the ring's growth (it doubles when full,
    /// starting at 4 slots), so a bound checked with this is never passed.
    pub fn held_after_push(&self, len: usize) -> usize {
        const SLOT: usize = std::mem::size_of::<Bytes>();
        const RING: usize = std::mem::size_of::<VecDeque<Bytes>>();
        let ring = match (&self.head, &self.rest) {
            (None, None) => 0,
            (Some(_), None) => RING + 4 * SLOT,
            (_, Some(r)) if r.len() == r.capacity() => RING + (2 * r.capacity()).max(4) * SLOT,
            (_, Some(r)) => RING + r.capacity() * SLOT,
        };
        self.len + len + ring
    }

    /// Heap bytes held by the queue's ring (not counting shared frames).
    pub fn heap_bytes(&self) -> usize {
        self.rest.as_ref().map_or(0, |r| {
            std::mem::size_of::<VecDeque<Bytes>>() + r.capacity() * std::mem::size_of::<Bytes>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_and_release() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"hello "));
        q.push(Bytes::from_static(b"world"));
        q.push(Bytes::new());
        assert_eq!(q.len(), 11);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(q.fill_slices(&mut slices), 2);
        q.consume(3);
        assert_eq!(q.len(), 8);
        let mut slices = [IoSlice::new(&[]); 4];
        q.fill_slices(&mut slices);
        assert_eq!(&*slices[0], b"lo ");
        q.consume(100);
        assert!(q.is_empty());
        assert_eq!(q.heap_bytes(), 0);
    }

    #[test]
    fn copy_front_spans_frames_and_stops_when_full() {
        let mut q = OutQueue::default();
        for f in [&b"ab"[..], b"cde", b"f"] {
            q.push(Bytes::copy_from_slice(f));
        }
        assert_eq!(q.frames(), 3);
        let mut buf = [0u8; 4];
        assert_eq!(q.copy_front(&mut buf), 4);
        assert_eq!(&buf, b"abcd");
        q.consume(3);
        assert_eq!(q.front(), b"de");
        let mut buf = [0u8; 8];
        assert_eq!(q.copy_front(&mut buf), 3);
        assert_eq!(&buf[..3], b"def");
        assert_eq!(q.len(), 3, "copying consumes nothing");
    }

    /// A writer that takes at most `per_call` bytes a call and then, every
    /// other call, would block; records what it took and how it was asked.
    struct Stingy {
        per_call: usize,
        took: Vec<u8>,
        calls: usize,
        vectored: usize,
        blocked: bool,
    }

    impl Write for Stingy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.blocked = !self.blocked;
            if self.blocked && self.calls > 1 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.per_call);
            self.took.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.vectored += 1;
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            self.write(first)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_to_sends_every_byte_in_order_through_partial_writes() {
        let frames: Vec<Vec<u8>> = (0..40u8)
            .map(|i| {
                let len = if i % 9 == 0 {
                    10_000
                } else {
                    50 + usize::from(i)
                };
                vec![i; len]
            })
            .collect();
        for per_call in [1, 7, 100, 5_000, 1 << 20] {
            let mut q = OutQueue::default();
            for f in &frames {
                q.push(Bytes::copy_from_slice(f));
            }
            let mut w = Stingy {
                per_call,
                took: Vec::new(),
                calls: 0,
                vectored: 0,
                blocked: false,
            };
            let mut scratch = vec![0u8; 4096];
            let mut rounds = 0;
            while q.write_to(&mut w, &mut scratch).expect("no error") {
                rounds += 1;
                assert!(rounds < 1_000_000, "no progress");
            }
            assert!(q.is_empty());
            assert_eq!(w.took, frames.concat(), "per_call {per_call}");
            assert!(w.vectored > 0, "large front frames go out vectored");
        }
    }

    /// Random frame sizes (around and across the gather limit), random
    /// scratch sizes (none at all included), writers that take random amounts
    /// and block at random: every byte arrives once, in order.
    #[test]
    fn write_to_random_queues_and_writers() {
        struct Random {
            state: u64,
            took: Vec<u8>,
        }
        impl Random {
            fn next(&mut self) -> u64 {
                // xorshift64: deterministic, no dependency.
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.state
            }
            fn below(&mut self, n: u64) -> usize {
                usize::try_from(self.next() % n).unwrap_or(0)
            }
        }
        impl Write for Random {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.below(4) == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                if self.below(16) == 0 {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                let n = buf.len().min(1 + self.below(20_000));
                self.took.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                // At most the first 64 KiB, as a socket might take.
                let flat: Vec<u8> = bufs
                    .iter()
                    .flat_map(|b| b.iter().copied())
                    .take(1 << 16)
                    .collect();
                self.write(&flat)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = Random {
            state: 0x9e37_79b9_7f4a_7c15,
            took: Vec::new(),
        };
        for round in 0..60 {
            let mut q = OutQueue::default();
            let mut want = Vec::new();
            let frames = 1 + w.below(100);
            for i in 0..frames {
                let len = match w.below(3) {
                    0 => 1 + w.below(200),
                    1 => GATHER_MAX_FRAME - 2 + w.below(5),
                    _ => 1 + w.below(20_000),
                };
                let frame = vec![(round + i) as u8; len];
                want.extend_from_slice(&frame);
                q.push(Bytes::from(frame));
            }
            let mut scratch = vec![0u8; w.below(3) * 32 * 1024];
            w.took.clear();
            let mut calls = 0;
            while q.write_to(&mut w, &mut scratch).expect("no error") {
                calls += 1;
                assert!(calls < 1_000_000, "no progress");
            }
            assert!(q.is_empty() && q.heap_bytes() == 0);
            assert!(
                w.took == want,
                "round {round}: bytes lost, duplicated or reordered"
            );
        }
    }

    #[test]
    fn write_to_one_frame_and_errors() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"only"));
        let mut out = Vec::new();
        assert!(!q.write_to(&mut out, &mut []).unwrap());
        assert_eq!(out, b"only");

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        q.push(Bytes::from_static(b"x"));
        let e = q.write_to(&mut Full, &mut []).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        assert_eq!(q.len(), 1, "nothing consumed");
    }

    #[test]
    fn discard_keeps_a_started_frame() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"def"));
        q.discard_unstarted();
        assert!(q.is_empty());
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"def"));
        q.consume(1);
        q.discard_unstarted();
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn one_queued_frame_needs_no_ring() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"one"));
        assert_eq!(q.heap_bytes(), 0, "the front frame is inline");
        q.push(Bytes::from_static(b"two"));
        assert!(q.heap_bytes() > 0);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(q.fill_slices(&mut slices), 2);
        assert_eq!((&*slices[0], &*slices[1]), (&b"one"[..], &b"two"[..]));
        q.consume(4);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(q.fill_slices(&mut slices), 1);
        assert_eq!(&*slices[0], b"wo");
        q.consume(2);
        assert!(q.is_empty());
        assert_eq!(q.heap_bytes(), 0);
    }
}
