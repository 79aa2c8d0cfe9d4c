//! An in-process pipe pair: two connected [`PipeEnd`]s, each a [`Transport`]. Bytes written by one
//! end are read by the other. The emulator uses it to put a host (the engine) and an emulated
//! modem in one process without a tty or USB stack in between.
//!
//! - **Framing.** With [`Framing::Packet`] every write is delivered as one packet: a read returns
//!   at most one written chunk (the rest of a chunk larger than the caller's buffer stays for the
//!   next read), and an empty write is delivered as a zero-length packet (`Ok(0)`). With
//!   [`Framing::Stream`] a read may merge several chunks and empty writes are no-ops.
//! - **Speed.** Chunks travel as `Vec<u8>`s under one mutex: a write copies the caller's slice
//!   once (or not at all with [`PipeEnd::write_owned`]), a read copies into the caller's buffer
//!   once (or not at all with [`PipeEnd::read_chunk`]). Nothing is handled byte by byte.
//! - **Bounds.** Reads wait at most their timeout. Writes never block unless the pipe was built
//!   with a capacity ([`PipeConfig::capacity`]); then a write waits, at most its timeout, until
//!   the peer has drained the queue below the capacity.
//! - **Disconnects.** When one end is dropped or [closed](PipeEnd::close), the other end still
//!   reads what was already queued, then gets [`TransportError::Disconnected`]; its writes fail at
//!   once. A [`Cutter`] drops the link from outside (fault injection: a yanked cable): queued
//!   bytes in both directions are lost and both ends see `Disconnected`.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Framing, Transport, TransportError};

/// How to build a pipe pair; [`pair`] and [`pair_named`] cover the common cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeConfig {
    /// Packet or stream semantics, for both ends.
    pub framing: Framing,
    /// Most bytes that may wait unread in one direction before a write has to wait for the
    /// reader. `None` means unbounded. A single write larger than the capacity is still accepted
    /// once the queue is below the capacity, so no write size can deadlock.
    pub capacity: Option<usize>,
    /// What end A's [`Transport::describe`] returns.
    pub a_desc: String,
    /// What end B's [`Transport::describe`] returns.
    pub b_desc: String,
}

impl PipeConfig {
    /// Unbounded pipe with default descriptions (`pipe end A` / `pipe end B`).
    pub fn new(framing: Framing) -> Self {
        PipeConfig {
            framing,
            capacity: None,
            a_desc: "pipe end A".to_string(),
            b_desc: "pipe end B".to_string(),
        }
    }

    /// Bound each direction to `bytes` unread bytes (see [`PipeConfig::capacity`]).
    pub fn with_capacity(mut self, bytes: usize) -> Self {
        self.capacity = Some(bytes);
        self
    }

    /// Set the descriptions the two ends report.
    pub fn with_names(mut self, a_desc: impl Into<String>, b_desc: impl Into<String>) -> Self {
        self.a_desc = a_desc.into();
        self.b_desc = b_desc.into();
        self
    }

    /// Build the connected pair.
    pub fn build(self) -> (PipeEnd, PipeEnd) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queues: [Queue::default(), Queue::default()],
                closed: [false, false],
                cut: false,
            }),
            changed: Condvar::new(),
            framing: self.framing,
            capacity: self.capacity,
        });
        let a = PipeEnd {
            shared: Arc::clone(&shared),
            side: 0,
            desc: self.a_desc,
        };
        let b = PipeEnd {
            shared,
            side: 1,
            desc: self.b_desc,
        };
        (a, b)
    }
}

/// A connected, unbounded pipe pair with default descriptions.
pub fn pair(framing: Framing) -> (PipeEnd, PipeEnd) {
    PipeConfig::new(framing).build()
}

/// A connected, unbounded pipe pair whose ends describe themselves as `a_desc` and `b_desc`
/// (e.g. `"emulated modem (host side)"`).
pub fn pair_named(
    framing: Framing,
    a_desc: impl Into<String>,
    b_desc: impl Into<String>,
) -> (PipeEnd, PipeEnd) {
    PipeConfig::new(framing).with_names(a_desc, b_desc).build()
}

/// Chunks waiting to be read by one end.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    /// How much of the front chunk was already read.
    offset: usize,
    /// Unread bytes in all chunks.
    bytes: usize,
}

impl Queue {
    fn push(&mut self, chunk: Vec<u8>) {
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.offset = 0;
        self.bytes = 0;
    }

    /// Copy from the front chunk only (packet semantics). Precondition: a chunk is queued.
    fn take_packet(&mut self, buf: &mut [u8]) -> usize {
        let front = &self.chunks[0];
        let rest = &front[self.offset..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.offset += n;
        self.bytes -= n;
        if self.offset == front.len() {
            self.chunks.pop_front();
            self.offset = 0;
        }
        n
    }

    /// Copy across chunks until `buf` is full or the queue is empty (stream semantics).
    fn take_stream(&mut self, buf: &mut [u8]) -> usize {
        let mut got = 0;
        while got < buf.len() {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let rest = &front[self.offset..];
            let n = rest.len().min(buf.len() - got);
            buf[got..got + n].copy_from_slice(&rest[..n]);
            got += n;
            self.offset += n;
            self.bytes -= n;
            if self.offset == front.len() {
                self.chunks.pop_front();
                self.offset = 0;
            }
        }
        got
    }

    /// Move out the rest of the front chunk. Precondition: a chunk is queued.
    fn take_chunk(&mut self) -> Vec<u8> {
        let mut front = self.chunks.pop_front().unwrap_or_default();
        if self.offset > 0 {
            front.drain(..self.offset);
            self.offset = 0;
        }
        self.bytes -= front.len();
        front
    }
}

struct State {
    /// `queues[i]` holds the bytes end `i` will read.
    queues: [Queue; 2],
    /// `closed[i]`: end `i` was dropped or closed.
    closed: [bool; 2],
    /// The link was cut from outside.
    cut: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Notified on every change: data queued or drained, an end closed, the link cut.
    changed: Condvar,
    framing: Framing,
    capacity: Option<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queues half-updated in a way that
        // matters more than the panic itself; keep serving the other end.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait on the condvar until `deadline`; returns the guard and whether time is up.
    fn wait_until<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, State>, bool) {
        // `None` means the caller's timeout overflowed `Instant`: wait in long slices.
        let left = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        if deadline.is_some() && left.is_zero() {
            return (guard, true);
        }
        let (guard, _) = self
            .changed
            .wait_timeout(guard, left)
            .unwrap_or_else(|e| e.into_inner());
        let expired = deadline.is_some_and(|d| Instant::now() >= d);
        (guard, expired)
    }
}

/// A handle that cuts the link of one pipe pair from outside, as if the cable were pulled.
/// Cheap to clone and `Send + Sync`, so a fault injector on another thread can hold it.
#[derive(Clone)]
pub struct Cutter {
    shared: Arc<Shared>,
}

impl Cutter {
    /// Drop the link now: bytes still queued in either direction are lost, every read and write
    /// on both ends fails with [`TransportError::Disconnected`], and blocked calls wake at once.
    /// Cutting twice is harmless.
    pub fn cut(&self) {
        let mut st = self.shared.lock();
        st.cut = true;
        st.queues[0].clear();
        st.queues[1].clear();
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Whether [`Cutter::cut`] was called on this link.
    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }
}

impl std::fmt::Debug for Cutter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cutter")
            .field("cut", &self.is_cut())
            .finish()
    }
}

/// One end of a pipe pair. Dropping it disconnects the peer (after the peer drained what was
/// already queued).
pub struct PipeEnd {
    shared: Arc<Shared>,
    side: usize,
    desc: String,
}

impl std::fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeEnd")
            .field("desc", &self.desc)
            .field("framing", &self.shared.framing)
            .finish()
    }
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl PipeEnd {
    /// A handle that can cut this pair's link from anywhere (see [`Cutter::cut`]).
    pub fn cutter(&self) -> Cutter {
        Cutter {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Close this end now, as dropping it would: the peer drains what is queued and then sees
    /// `Disconnected`. Afterwards this end's own reads and writes fail with `Disconnected`.
    pub fn close(&mut self) {
        let mut st = self.shared.lock();
        st.closed[self.side] = true;
        // Nobody will ever read what was queued for this end.
        st.queues[self.side].clear();
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Whether both ends are open and the link is not cut.
    pub fn is_connected(&self) -> bool {
        let st = self.shared.lock();
        !st.cut && !st.closed[0] && !st.closed[1]
    }

    /// Bytes queued for this end that a read would return without waiting.
    pub fn available(&self) -> usize {
        self.shared.lock().queues[self.side].bytes
    }

    fn peer(&self) -> usize {
        1 - self.side
    }

    /// Why this end can no longer send, or `None` while it can.
    fn write_blocker(&self, st: &State) -> Option<TransportError> {
        if st.cut {
            Some(TransportError::Disconnected(format!(
                "{}: the link was cut; reconnect before sending again",
                self.desc
            )))
        } else if st.closed[self.side] {
            Some(TransportError::Disconnected(format!(
                "{}: this end was closed and cannot send any more",
                self.desc
            )))
        } else if st.closed[self.peer()] {
            Some(TransportError::Disconnected(format!(
                "{}: the other end closed; nothing will read these bytes",
                self.desc
            )))
        } else {
            None
        }
    }

    /// Why a read finds nothing and never will, or `None` if waiting makes sense.
    fn read_blocker(&self, st: &State) -> Option<TransportError> {
        if st.cut {
            Some(TransportError::Disconnected(format!(
                "{}: the link was cut; reconnect before reading again",
                self.desc
            )))
        } else if st.closed[self.side] {
            Some(TransportError::Disconnected(format!(
                "{}: this end was closed and cannot read any more",
                self.desc
            )))
        } else if st.closed[self.peer()] {
            Some(TransportError::Disconnected(format!(
                "{}: the other end closed and everything it sent has been read",
                self.desc
            )))
        } else {
            None
        }
    }

    /// Send `chunk` without copying it; same rules as [`Transport::write`].
    pub fn write_owned(&mut self, chunk: Vec<u8>, timeout: Duration) -> Result<(), TransportError> {
        if chunk.is_empty() && self.shared.framing == Framing::Stream {
            // A stream has no zero-length packets, but report a dead link all the same.
            let st = self.shared.lock();
            return match self.write_blocker(&st) {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        let deadline = deadline_after(timeout);
        let peer = self.peer();
        let mut st = self.shared.lock();
        loop {
            if let Some(e) = self.write_blocker(&st) {
                return Err(e);
            }
            let room = match self.shared.capacity {
                Some(cap) => st.queues[peer].bytes < cap,
                None => true,
            };
            if room {
                st.queues[peer].push(chunk);
                drop(st);
                self.shared.changed.notify_all();
                return Ok(());
            }
            let (guard, expired) = self.shared.wait_until(st, deadline);
            st = guard;
            if expired {
                if let Some(e) = self.write_blocker(&st) {
                    return Err(e);
                }
                if st.queues[peer].bytes < self.shared.capacity.unwrap_or(usize::MAX) {
                    continue;
                }
                return Err(TransportError::Timeout {
                    op: "send into the pipe (the reader is not draining it)",
                    after: timeout,
                });
            }
        }
    }

    /// Wait (at most `timeout`) until data is queued for this end, then run `take` on the queue.
    fn read_with<R>(
        &mut self,
        timeout: Duration,
        take: impl FnOnce(&mut Queue) -> R,
    ) -> Result<R, TransportError> {
        let deadline = deadline_after(timeout);
        let side = self.side;
        let mut st = self.shared.lock();
        loop {
            if st.closed[side] || st.cut {
                // Own end closed or link cut: never serve stale data.
                return Err(self.read_blocker(&st).unwrap_or_else(|| {
                    TransportError::Disconnected(format!("{}: link closed", self.desc))
                }));
            }
            if !st.queues[side].chunks.is_empty() {
                let r = take(&mut st.queues[side]);
                drop(st);
                // A writer may be waiting for room.
                if self.shared.capacity.is_some() {
                    self.shared.changed.notify_all();
                }
                return Ok(r);
            }
            if let Some(e) = self.read_blocker(&st) {
                return Err(e);
            }
            let (guard, expired) = self.shared.wait_until(st, deadline);
            st = guard;
            if expired && st.queues[side].chunks.is_empty() {
                if let Some(e) = self.read_blocker(&st) {
                    return Err(e);
                }
                return Err(TransportError::Timeout {
                    op: "receive from the pipe",
                    after: timeout,
                });
            }
        }
    }

    /// Take the next written chunk (or what is left of it) without copying it, waiting at most
    /// `timeout`. Works for both framings; on a stream it returns whatever chunk is next. An
    /// empty `Vec` is a zero-length packet (packet framing only).
    pub fn read_chunk(&mut self, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        self.read_with(timeout, Queue::take_chunk)
    }
}

impl Transport for PipeEnd {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        match self.shared.framing {
            Framing::Packet { .. } => self.read_with(timeout, |q| {
                if q.chunks[0].len() == q.offset {
                    // A zero-length packet.
                    q.chunks.pop_front();
                    q.offset = 0;
                    0
                } else {
                    q.take_packet(buf)
                }
            }),
            Framing::Stream => {
                if buf.is_empty() {
                    return Ok(0);
                }
                self.read_with(timeout, |q| q.take_stream(buf))
            }
        }
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.write_owned(data.to_vec(), timeout)
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn framing(&self) -> Framing {
        self.shared.framing
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::read_exact;
    use proptest::prelude::*;
    use std::thread;

    const PKT: Framing = Framing::Packet {
        max_packet_size: 512,
    };
    const SHORT: Duration = Duration::from_millis(20);
    const LONG: Duration = Duration::from_secs(20);

    fn is_disconnected(r: &Result<usize, TransportError>) -> bool {
        matches!(r, Err(TransportError::Disconnected(_)))
    }

    #[test]
    fn packet_framing_returns_one_chunk_per_read_and_keeps_the_rest() {
        let (mut a, mut b) = pair(PKT);
        a.write(b"hello", LONG).unwrap();
        a.write(b"world!", LONG).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        // A small buffer takes part of the chunk; the rest stays for the next read.
        let mut small = [0u8; 4];
        assert_eq!(b.read(&mut small, LONG).unwrap(), 4);
        assert_eq!(&small, b"worl");
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 2);
        assert_eq!(&buf[..2], b"d!");
        assert!(b.read(&mut buf, SHORT).unwrap_err().is_timeout());
    }

    #[test]
    fn packet_framing_delivers_zero_length_packets() {
        let (mut a, mut b) = pair(PKT);
        a.write(b"abc", LONG).unwrap();
        a.write(b"", LONG).unwrap();
        a.write(b"d", LONG).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 3);
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 0);
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 1);
        assert_eq!(buf[0], b'd');
        assert_eq!(b.framing(), PKT);
    }

    #[test]
    fn stream_framing_merges_chunks() {
        let (mut a, mut b) = pair(Framing::Stream);
        a.write(b"hel", LONG).unwrap();
        a.write(b"", LONG).unwrap();
        a.write(b"lo ", LONG).unwrap();
        a.write(b"world", LONG).unwrap();
        assert_eq!(b.available(), 11);
        let mut buf = [0u8; 64];
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 11);
        assert_eq!(&buf[..11], b"hello world");
        // Split reads across chunk borders.
        a.write(b"abc", LONG).unwrap();
        a.write(b"def", LONG).unwrap();
        let mut four = [0u8; 4];
        assert_eq!(b.read(&mut four, LONG).unwrap(), 4);
        assert_eq!(&four, b"abcd");
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 2);
        assert_eq!(&buf[..2], b"ef");
        assert_eq!(b.framing(), Framing::Stream);
    }

    #[test]
    fn both_directions_are_independent() {
        let (mut a, mut b) = pair_named(Framing::Stream, "host side", "device side");
        assert_eq!(a.describe(), "host side");
        assert_eq!(b.describe(), "device side");
        a.write(b"to b", LONG).unwrap();
        b.write(b"to a", LONG).unwrap();
        let mut buf = [0u8; 4];
        read_exact(&mut a, &mut buf, LONG).unwrap();
        assert_eq!(&buf, b"to a");
        read_exact(&mut b, &mut buf, LONG).unwrap();
        assert_eq!(&buf, b"to b");
    }

    #[test]
    fn drop_lets_the_peer_drain_then_disconnects() {
        let (mut a, mut b) = pair(Framing::Stream);
        a.write(b"last words", LONG).unwrap();
        drop(a);
        assert!(!b.is_connected());
        let mut buf = [0u8; 4];
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 4);
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 4);
        assert_eq!(b.read(&mut buf, LONG).unwrap(), 2);
        assert!(is_disconnected(&b.read(&mut buf, LONG)));
        assert!(matches!(
            b.write(b"x", LONG),
            Err(TransportError::Disconnected(_))
        ));
    }

    #[test]
    fn drop_wakes_a_blocked_reader() {
        let (a, mut b) = pair(PKT);
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 8];
            let started = Instant::now();
            let r = b.read(&mut buf, LONG);
            (is_disconnected(&r), started.elapsed())
        });
        thread::sleep(Duration::from_millis(50));
        drop(a);
        let (disconnected, waited) = reader.join().unwrap();
        assert!(disconnected);
        assert!(waited < LONG, "the reader waited for its whole timeout");
    }

    #[test]
    fn close_disconnects_both_ends() {
        let (mut a, mut b) = pair(Framing::Stream);
        b.write(b"unread by a", LONG).unwrap();
        a.close();
        let mut buf = [0u8; 8];
        assert!(is_disconnected(&a.read(&mut buf, LONG)));
        assert!(matches!(
            a.write(b"x", LONG),
            Err(TransportError::Disconnected(_))
        ));
        assert!(is_disconnected(&b.read(&mut buf, LONG)));
        assert!(matches!(
            b.write(b"x", LONG),
            Err(TransportError::Disconnected(_))
        ));
    }

    #[test]
    fn cutter_drops_the_link_for_both_ends_and_loses_queued_bytes() {
        let (mut a, mut b) = pair(PKT);
        let cutter = a.cutter();
        assert!(!cutter.is_cut());
        a.write(b"in flight", LONG).unwrap();
        b.write(b"also in flight", LONG).unwrap();
        let blocked = thread::spawn(move || {
            // Keep reading in short slices (the first read gets "in flight") until the cut.
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + LONG;
            loop {
                let r = b.read(&mut buf, Duration::from_millis(10));
                if is_disconnected(&r) {
                    return (true, b);
                }
                if Instant::now() > deadline {
                    return (false, b);
                }
            }
        });
        thread::sleep(Duration::from_millis(30));
        cutter.cut();
        let (saw_disconnect, mut b) = blocked.join().unwrap();
        assert!(saw_disconnect);
        assert!(cutter.is_cut());
        let mut buf = [0u8; 64];
        assert!(is_disconnected(&a.read(&mut buf, LONG)));
        assert!(is_disconnected(&b.read(&mut buf, LONG)));
        assert!(matches!(
            a.write(b"x", LONG),
            Err(TransportError::Disconnected(_))
        ));
        assert!(matches!(
            b.write(b"x", LONG),
            Err(TransportError::Disconnected(_))
        ));
        cutter.cut();
    }

    #[test]
    fn cut_wakes_a_blocked_reader() {
        let (a, mut b) = pair(Framing::Stream);
        let cutter = a.cutter();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 8];
            is_disconnected(&b.read(&mut buf, LONG))
        });
        thread::sleep(Duration::from_millis(50));
        cutter.cut();
        assert!(reader.join().unwrap());
        drop(a);
    }

    #[test]
    fn read_timeout_is_honoured() {
        let (_a, mut b) = pair(Framing::Stream);
        let mut buf = [0u8; 8];
        let started = Instant::now();
        let err = b.read(&mut buf, Duration::from_millis(100)).unwrap_err();
        let waited = started.elapsed();
        assert!(err.is_timeout(), "{err}");
        assert!(
            waited >= Duration::from_millis(100),
            "returned early: {waited:?}"
        );
        assert!(waited < Duration::from_secs(10), "overslept: {waited:?}");
        // A zero timeout polls.
        assert!(b.read(&mut buf, Duration::ZERO).unwrap_err().is_timeout());
    }

    #[test]
    fn a_read_waiting_for_data_returns_when_it_arrives() {
        let (mut a, mut b) = pair(Framing::Stream);
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 8];
            let n = b.read(&mut buf, LONG).unwrap();
            buf[..n].to_vec()
        });
        thread::sleep(Duration::from_millis(30));
        a.write(b"late", LONG).unwrap();
        assert_eq!(reader.join().unwrap(), b"late");
    }

    #[test]
    fn huge_timeouts_do_not_overflow() {
        let (mut a, mut b) = pair(Framing::Stream);
        a.write(b"x", Duration::MAX).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(b.read(&mut buf, Duration::MAX).unwrap(), 1);
    }

    #[test]
    fn bounded_pipe_makes_writers_wait_with_a_timeout() {
        let (mut a, mut b) = PipeConfig::new(Framing::Stream)
            .with_capacity(8)
            .with_names("writer", "reader")
            .build();
        // Larger than the capacity, but the queue is empty: accepted.
        a.write(&[1u8; 16], LONG).unwrap();
        let started = Instant::now();
        let err = a.write(b"more", Duration::from_millis(80)).unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(80));
        // Drain from another thread; the blocked writer gets through.
        let reader = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            let mut buf = [0u8; 32];
            read_exact(&mut b, &mut buf[..16], LONG).unwrap();
            read_exact(&mut b, &mut buf[..4], LONG).unwrap();
            buf[..4].to_vec()
        });
        a.write(b"more", LONG).unwrap();
        assert_eq!(reader.join().unwrap(), b"more");
    }

    #[test]
    fn owned_chunks_move_through_unchanged() {
        let (mut a, mut b) = pair(PKT);
        let chunk: Vec<u8> = (0..=255u8).collect();
        a.write_owned(chunk.clone(), LONG).unwrap();
        let mut first = [0u8; 10];
        assert_eq!(b.read(&mut first, LONG).unwrap(), 10);
        assert_eq!(b.read_chunk(LONG).unwrap(), chunk[10..]);
        a.write_owned(Vec::new(), LONG).unwrap();
        assert!(b.read_chunk(LONG).unwrap().is_empty());
        assert!(b.read_chunk(SHORT).unwrap_err().is_timeout());
    }

    #[test]
    fn sixty_four_mib_in_one_mib_chunks_arrives_intact() {
        const CHUNK: usize = 1 << 20;
        const CHUNKS: usize = 64;
        let (mut a, mut b) = PipeConfig::new(Framing::Stream)
            .with_capacity(8 * CHUNK)
            .build();
        let writer = thread::spawn(move || {
            for i in 0..CHUNKS {
                let chunk = vec![i as u8; CHUNK];
                a.write(&chunk, LONG).unwrap();
            }
        });
        let mut buf = vec![0u8; CHUNK];
        for i in 0..CHUNKS {
            read_exact(&mut b, &mut buf, LONG).unwrap();
            assert!(buf.iter().all(|&x| x == i as u8), "chunk {i} corrupted");
        }
        writer.join().unwrap();
        assert!(is_disconnected(&b.read(&mut buf, LONG)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(Vec<u8>),
        Read(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Write),
            (1usize..50).prop_map(Op::Read),
        ]
    }

    proptest! {
        #[test]
        fn packet_pipe_preserves_order_and_boundaries(ops in proptest::collection::vec(op(), 0..60)) {
            let (mut a, mut b) = pair(PKT);
            // Model: the packets not yet fully read, front first.
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Write(bytes) => {
                        a.write(&bytes, LONG).unwrap();
                        model.push_back(bytes);
                    }
                    Op::Read(n) => {
                        let mut buf = vec![0u8; n];
                        match model.front_mut() {
                            None => prop_assert!(b.read(&mut buf, Duration::ZERO).unwrap_err().is_timeout()),
                            Some(front) => {
                                let got = b.read(&mut buf, Duration::ZERO).unwrap();
                                let want = front.len().min(n);
                                prop_assert_eq!(got, want);
                                prop_assert_eq!(&buf[..got], &front[..got]);
                                front.drain(..got);
                                if front.is_empty() {
                                    model.pop_front();
                                }
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn stream_pipe_preserves_byte_order(ops in proptest::collection::vec(op(), 0..60)) {
            let (mut a, mut b) = pair(Framing::Stream);
            let mut model: VecDeque<u8> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Write(bytes) => {
                        a.write(&bytes, LONG).unwrap();
                        model.extend(bytes);
                    }
                    Op::Read(n) => {
                        let mut buf = vec![0u8; n];
                        if model.is_empty() {
                            prop_assert!(b.read(&mut buf, Duration::ZERO).unwrap_err().is_timeout());
                        } else {
                            let got = b.read(&mut buf, Duration::ZERO).unwrap();
                            prop_assert_eq!(got, model.len().min(n));
                            let want: Vec<u8> = model.drain(..got).collect();
                            prop_assert_eq!(&buf[..got], &want[..]);
                        }
                    }
                }
            }
            prop_assert_eq!(b.available(), model.len());
        }
    }
}
