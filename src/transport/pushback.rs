//! A pushback buffer in front of any [`Transport`].
//!
//! On a stream transport one read can return the end of an XML reply *and* the start of what
//! follows it (raw sector data, the next document). A reader that parsed only the reply gives the
//! rest back with [`Pushback::unread`]; the next [`Transport::read`] serves those bytes first, in
//! order, without waiting and without touching the inner transport.

use std::time::Duration;

use super::{Framing, Transport, TransportError};

/// A transport wrapper with a pushback buffer at its front.
#[derive(Debug)]
pub struct Pushback<T: Transport> {
    inner: T,
    /// Pushed-back bytes are `buf[pos..]`, front first. Keeping the consumed prefix lets a small
    /// `unread` of just-read bytes go back in place without shifting the rest.
    buf: Vec<u8>,
    pos: usize,
}

impl<T: Transport> Pushback<T> {
    /// Wrap `inner` with an empty pushback buffer.
    pub fn new(inner: T) -> Self {
        Pushback {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Put `bytes` back at the front: the next reads return them, in order, before anything
    /// already pushed back and before anything from the inner transport.
    pub fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.pos >= bytes.len() {
            // Room in the already-consumed prefix (the usual case: giving back what was just
            // read).
            self.pos -= bytes.len();
            self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        } else {
            let mut joined = Vec::with_capacity(bytes.len() + self.buffered());
            joined.extend_from_slice(bytes);
            joined.extend_from_slice(&self.buf[self.pos..]);
            self.buf = joined;
            self.pos = 0;
        }
    }

    /// How many pushed-back bytes wait to be read.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The wrapped transport. Reading from it directly skips the pushed-back bytes.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped transport, mutably. Reading from it directly skips the pushed-back bytes.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwrap the inner transport. **Pushed-back bytes are lost**; use
    /// [`Pushback::into_parts`] to keep them.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Unwrap into the inner transport and the pushed-back bytes (front first).
    pub fn into_parts(mut self) -> (T, Vec<u8>) {
        self.buf.drain(..self.pos);
        (self.inner, self.buf)
    }
}

impl<T: Transport> Transport for Pushback<T> {
    /// Serves pushed-back bytes first and at once (never waiting, never mixing them with inner
    /// data in one read); only when none are left does it read from the inner transport.
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        let have = self.buffered();
        if have == 0 {
            return self.inner.read(buf, timeout);
        }
        let n = have.min(buf.len());
        buf[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(n)
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.inner.write(data, timeout)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn framing(&self) -> Framing {
        self.inner.framing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::pipe::{pair, PipeEnd};
    use crate::transport::read_exact;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const LONG: Duration = Duration::from_secs(20);

    fn wrapped() -> (PipeEnd, Pushback<PipeEnd>) {
        let (peer, end) = pair(Framing::Stream);
        (peer, Pushback::new(end))
    }

    #[test]
    fn unread_bytes_come_back_first_and_in_order() {
        let (mut peer, mut pb) = wrapped();
        peer.write(b"INNER", LONG).unwrap();
        pb.unread(b"cd");
        pb.unread(b"ab");
        assert_eq!(pb.buffered(), 4);
        let mut buf = [0u8; 16];
        // Pushed-back bytes are served alone, then the inner transport.
        assert_eq!(pb.read(&mut buf, LONG).unwrap(), 4);
        assert_eq!(&buf[..4], b"abcd");
        assert_eq!(pb.buffered(), 0);
        assert_eq!(pb.read(&mut buf, LONG).unwrap(), 5);
        assert_eq!(&buf[..5], b"INNER");
    }

    #[test]
    fn giving_back_the_tail_of_a_read_mixes_with_inner_data() {
        let (mut peer, mut pb) = wrapped();
        // One read returns the end of an XML reply and the start of raw data.
        peer.write(b"<ACK/>RAW0", LONG).unwrap();
        peer.write(b"RAW1", LONG).unwrap();
        let mut buf = [0u8; 10];
        read_exact(&mut pb, &mut buf, LONG).unwrap();
        assert_eq!(&buf, b"<ACK/>RAW0");
        pb.unread(&buf[6..]);
        let mut raw = [0u8; 8];
        read_exact(&mut pb, &mut raw, LONG).unwrap();
        assert_eq!(&raw, b"RAW0RAW1");
    }

    #[test]
    fn small_reads_drain_pushed_back_bytes_piecewise() {
        let (_peer, mut pb) = wrapped();
        pb.unread(b"12345");
        let mut two = [0u8; 2];
        assert_eq!(pb.read(&mut two, Duration::ZERO).unwrap(), 2);
        assert_eq!(&two, b"12");
        // Give one back in place, then push something longer than the consumed prefix.
        pb.unread(b"2");
        pb.unread(b"xyz0");
        let mut rest = [0u8; 16];
        let n = pb.read(&mut rest, Duration::ZERO).unwrap();
        assert_eq!(&rest[..n], b"xyz02345");
        assert!(pb.read(&mut rest, Duration::ZERO).unwrap_err().is_timeout());
    }

    #[test]
    fn parts_and_passthrough() {
        let (mut peer, mut pb) = wrapped();
        assert_eq!(pb.describe(), "pipe end B");
        assert_eq!(pb.framing(), Framing::Stream);
        pb.write(b"out", LONG).unwrap();
        let mut buf = [0u8; 3];
        read_exact(&mut peer, &mut buf, LONG).unwrap();
        assert_eq!(&buf, b"out");
        assert_eq!(pb.inner().describe(), "pipe end B");
        assert_eq!(pb.inner_mut().available(), 0);
        pb.unread(b"kept");
        let mut one = [0u8; 1];
        pb.read(&mut one, LONG).unwrap();
        let (inner, rest) = pb.into_parts();
        assert_eq!(rest, b"ept");
        let pb = Pushback::new(inner);
        assert_eq!(pb.into_inner().describe(), "pipe end B");
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// The peer sends these bytes to the inner transport.
        Send(Vec<u8>),
        /// Read up to n bytes through the pushback.
        Read(usize),
        /// Give back the last k bytes of the previous read (what a parser does).
        GiveBack(usize),
        /// Push back arbitrary bytes.
        Unread(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..30).prop_map(Op::Send),
            (1usize..40).prop_map(Op::Read),
            (0usize..40).prop_map(Op::GiveBack),
            proptest::collection::vec(any::<u8>(), 0..10).prop_map(Op::Unread),
        ]
    }

    proptest! {
        #[test]
        fn unreads_and_inner_data_keep_their_order(ops in proptest::collection::vec(op(), 0..80)) {
            let (mut peer, mut pb) = wrapped();
            // Model of what reads must return: pushed-back bytes, then inner bytes.
            let mut pushed: VecDeque<u8> = VecDeque::new();
            let mut inner: VecDeque<u8> = VecDeque::new();
            let mut last_read: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Send(bytes) => {
                        peer.write(&bytes, LONG).unwrap();
                        inner.extend(bytes);
                    }
                    Op::Read(n) => {
                        let mut buf = vec![0u8; n];
                        let r = pb.read(&mut buf, Duration::ZERO);
                        let source = if pushed.is_empty() { &mut inner } else { &mut pushed };
                        if source.is_empty() {
                            prop_assert!(r.unwrap_err().is_timeout());
                            last_read.clear();
                        } else {
                            let got = r.unwrap();
                            prop_assert_eq!(got, source.len().min(n));
                            let want: Vec<u8> = source.drain(..got).collect();
                            prop_assert_eq!(&buf[..got], &want[..]);
                            last_read = want;
                        }
                    }
                    Op::GiveBack(k) => {
                        let k = k.min(last_read.len());
                        let tail = last_read.split_off(last_read.len() - k);
                        pb.unread(&tail);
                        for &b in tail.iter().rev() {
                            pushed.push_front(b);
                        }
                    }
                    Op::Unread(bytes) => {
                        pb.unread(&bytes);
                        for &b in bytes.iter().rev() {
                            pushed.push_front(b);
                        }
                        last_read.clear();
                    }
                }
                prop_assert_eq!(pb.buffered(), pushed.len());
            }
            // Everything left comes out in model order.
            let mut rest = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok(n) = pb.read(&mut buf, Duration::ZERO) {
                rest.extend_from_slice(&buf[..n]);
            }
            let want: Vec<u8> = pushed.into_iter().chain(inner).collect();
            prop_assert_eq!(rest, want);
        }
    }
}
