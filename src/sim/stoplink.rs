//! A device-side transport wrapper that turns a stop request into a link loss, so everything that
//! serves the link (boot ROM runner, emulated programmer) ends promptly — within one read slice —
//! when `qrescue sim` gets SIGTERM or a test stops a unit, whatever state it is in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::transport::{Framing, Transport, TransportError};

/// Longest a read waits before looking at the stop flag again.
const SLICE: Duration = Duration::from_millis(50);

pub struct StopLink<'a> {
    inner: &'a mut dyn Transport,
    stop: &'a AtomicBool,
}

impl<'a> StopLink<'a> {
    pub fn new(inner: &'a mut dyn Transport, stop: &'a AtomicBool) -> Self {
        StopLink { inner, stop }
    }

    fn stopped(&self) -> Result<(), TransportError> {
        if self.stop.load(Ordering::SeqCst) {
            Err(TransportError::Disconnected(
                "the emulated modem was stopped".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl Transport for StopLink<'_> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.stopped()?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.inner.read(buf, left.min(SLICE)) {
                Err(TransportError::Timeout { .. }) if left > SLICE => continue,
                Err(TransportError::Timeout { .. }) => {
                    return Err(TransportError::Timeout {
                        op: "receive data from the host",
                        after: timeout,
                    })
                }
                other => return other,
            }
        }
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.stopped()?;
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
    use crate::transport::pipe;

    #[test]
    fn a_stop_ends_a_long_read_promptly_and_reads_work_otherwise() {
        let (mut a, mut b) = pipe::pair(Framing::Stream);
        let stop = AtomicBool::new(false);
        b.write(b"hi", Duration::from_secs(1)).unwrap();
        let mut link = StopLink::new(&mut a, &stop);
        let mut buf = [0u8; 8];
        assert_eq!(link.read(&mut buf, Duration::from_secs(1)).unwrap(), 2);
        let e = link.read(&mut buf, Duration::from_millis(120)).unwrap_err();
        assert!(e.is_timeout());
        stop.store(true, Ordering::SeqCst);
        let t = Instant::now();
        let e = link.read(&mut buf, Duration::from_secs(30)).unwrap_err();
        assert!(matches!(e, TransportError::Disconnected(_)));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(link.write(b"x", Duration::from_secs(1)).is_err());
    }
}
