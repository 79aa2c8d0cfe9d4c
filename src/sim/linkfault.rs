//! Link faults on the device side: a [`Transport`] wrapper that drops the link after a number of
//! bytes and delays responses.
//!
//! - **drop-after N**: bytes in both directions are counted. A write that would cross N is cut
//!   short (the first bytes up to N go out, like a cable pulled mid-transfer); a read returns at
//!   most the bytes left. Once N is reached the link is dropped: the inner transport is closed
//!   (dropped), the `on_drop` hook runs once (e.g. a pipe [`Cutter`](crate::transport::pipe::Cutter)
//!   so the host sees the disconnect too; for a pty the device runner closes it), and every later
//!   read or write returns [`TransportError::Disconnected`].
//! - **delay**: every write waits this long first (sliced, so a stop flag is honoured).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::transport::{Framing, Transport, TransportError};

/// A hook run once when the link is dropped.
pub type DropHook = Box<dyn FnMut() + Send>;

/// Device-side fault wrapper around a transport.
pub struct LinkFault<'s, T: Transport> {
    inner: Option<T>,
    desc: String,
    framing: Framing,
    drop_after: Option<u64>,
    crossed: u64,
    delay: Duration,
    on_drop: Option<DropHook>,
    stop: Option<&'s AtomicBool>,
}

impl<'s, T: Transport> LinkFault<'s, T> {
    /// Wrap `inner` with no faults.
    pub fn new(inner: T) -> Self {
        LinkFault {
            desc: inner.describe(),
            framing: inner.framing(),
            inner: Some(inner),
            drop_after: None,
            crossed: 0,
            delay: Duration::ZERO,
            on_drop: None,
            stop: None,
        }
    }

    /// Drop the link once `bytes` bytes have crossed it (both directions).
    pub fn drop_after(mut self, bytes: Option<u64>) -> Self {
        self.drop_after = bytes;
        self
    }

    /// Delay every write by `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Run `hook` once when the link is dropped (to cut the peer's side too).
    pub fn on_drop(mut self, hook: Option<DropHook>) -> Self {
        self.on_drop = hook;
        self
    }

    /// Abandon delays early when `stop` becomes true.
    pub fn stop_flag(mut self, stop: &'s AtomicBool) -> Self {
        self.stop = Some(stop);
        self
    }

    /// True once the drop-after fault has fired.
    pub fn is_dropped(&self) -> bool {
        self.inner.is_none()
    }

    /// Bytes that crossed the link so far (both directions).
    pub fn bytes_crossed(&self) -> u64 {
        self.crossed
    }

    /// Bytes left before the link drops, if a drop is armed.
    pub fn remaining(&self) -> Option<u64> {
        self.drop_after.map(|n| n.saturating_sub(self.crossed))
    }

    /// Drop the link now (closes the inner transport and runs the hook once).
    pub fn cut(&mut self) {
        if self.inner.take().is_some() {
            tracing::info!(crossed = self.crossed, "emulated link dropped");
            if let Some(mut hook) = self.on_drop.take() {
                hook();
            }
        }
    }

    fn gone() -> TransportError {
        TransportError::Disconnected("the emulated link was dropped (drop-after fault)".into())
    }

    fn wait(&self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }
}

impl<T: Transport> Transport for LinkFault<'_, T> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        if self.remaining() == Some(0) {
            self.cut();
        }
        let limit = match self.remaining() {
            Some(r) => buf.len().min(usize::try_from(r).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let inner = self.inner.as_mut().ok_or_else(Self::gone)?;
        let n = inner.read(&mut buf[..limit], timeout)?;
        self.crossed += n as u64;
        if self.remaining() == Some(0) {
            self.cut();
        }
        Ok(n)
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        if self.remaining() == Some(0) {
            self.cut();
        }
        if self.inner.is_none() {
            return Err(Self::gone());
        }
        if !self.delay.is_zero() {
            self.wait(self.delay);
        }
        let allowed = match self.remaining() {
            Some(r) => data.len().min(usize::try_from(r).unwrap_or(usize::MAX)),
            None => data.len(),
        };
        let inner = self.inner.as_mut().ok_or_else(Self::gone)?;
        if allowed > 0 || data.is_empty() {
            inner.write(&data[..allowed], timeout)?;
        }
        self.crossed += allowed as u64;
        if allowed < data.len() || self.remaining() == Some(0) {
            self.cut();
            if allowed < data.len() {
                return Err(Self::gone());
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} (fault-injected)", self.desc)
    }

    fn framing(&self) -> Framing {
        self.framing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::pipe;
    use std::sync::Arc;

    const T: Duration = Duration::from_millis(200);

    #[test]
    fn drops_after_n_bytes_both_directions_and_cuts_the_peer() {
        let (dev, mut host) = pipe::pair(Framing::Stream);
        let cutter = dev.cutter();
        let fired = Arc::new(AtomicBool::new(false));
        let f2 = Arc::clone(&fired);
        let mut link = LinkFault::new(dev)
            .drop_after(Some(10))
            .on_drop(Some(Box::new(move || {
                f2.store(true, Ordering::SeqCst);
                cutter.cut();
            })));
        link.write(b"abcd", T).unwrap();
        host.write(b"0123", T).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(link.read(&mut buf, T).unwrap(), 4);
        assert_eq!(link.bytes_crossed(), 8);
        // This write crosses the limit: 2 bytes go out, then the link is gone.
        assert!(matches!(
            link.write(b"wxyz", T),
            Err(TransportError::Disconnected(_))
        ));
        assert!(link.is_dropped());
        assert!(fired.load(Ordering::SeqCst));
        assert!(matches!(
            link.read(&mut buf, T),
            Err(TransportError::Disconnected(_))
        ));
        assert!(matches!(
            link.write(b"x", T),
            Err(TransportError::Disconnected(_))
        ));
        // The host side sees a disconnect too (queued bytes may be lost with the cut).
        let mut saw_disconnect = false;
        for _ in 0..5 {
            match host.read(&mut buf, T) {
                Err(TransportError::Disconnected(_)) => {
                    saw_disconnect = true;
                    break;
                }
                Ok(_) | Err(TransportError::Timeout { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(saw_disconnect);
    }

    #[test]
    fn read_is_limited_to_the_remaining_budget() {
        let (dev, mut host) = pipe::pair(Framing::Stream);
        let mut link = LinkFault::new(dev).drop_after(Some(3));
        host.write(b"hello", T).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(link.read(&mut buf, T).unwrap(), 3);
        assert_eq!(&buf[..3], b"hel");
        assert!(link.is_dropped());
        assert!(link.read(&mut buf, T).is_err());
    }

    #[test]
    fn no_fault_passes_through() {
        let (dev, mut host) = pipe::pair(Framing::Stream);
        let mut link = LinkFault::new(dev);
        link.write(b"ping", T).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(host.read(&mut buf, T).unwrap(), 4);
        assert!(!link.is_dropped());
        assert_eq!(link.remaining(), None);
        assert!(link.describe().contains("fault-injected"));
    }

    #[test]
    fn delay_delays_writes_and_honours_stop() {
        let (dev, _host) = pipe::pair(Framing::Stream);
        let mut link = LinkFault::new(dev).delay(Duration::from_millis(80));
        let t = Instant::now();
        link.write(b"x", T).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(80));
        let stop = AtomicBool::new(true);
        let (dev, _host) = pipe::pair(Framing::Stream);
        let mut link = LinkFault::new(dev)
            .delay(Duration::from_secs(30))
            .stop_flag(&stop);
        let t = Instant::now();
        link.write(b"x", T).unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
