//! The one I/O seam: a small blocking [`Transport`] with read-with-timeout, write-with-timeout and
//! describe. Implementations: serial ttys ([`serial`]), an in-process pipe pair ([`pipe`]), a
//! pushback wrapper for stream transports ([`pushback`]); USB bulk (nusb), recording and replay
//! come later behind the same trait.
//!
//! Framing: on a *packet* transport (USB bulk) one `read` returns at most one transfer and a
//! zero-length packet can appear as `Ok(0)`; on a *stream* transport (tty, pipe) bytes may be split
//! or merged arbitrarily, so protocol readers must reassemble by length fields or delimiters.

use std::time::{Duration, Instant};

pub mod lock;
pub mod open;
pub mod pipe;
pub mod pty;
pub mod pushback;
pub mod record;
pub mod replay;
pub mod serial;
pub mod usb;

/// How bytes are delimited on this transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A byte stream: reads may split or merge what the peer wrote (tty, pipe).
    Stream,
    /// Bulk transfers: one read returns one transfer, zero-length packets are meaningful.
    Packet {
        /// wMaxPacketSize of the endpoint (64, 512 or 1024).
        max_packet_size: usize,
    },
}

/// What went wrong at the transport level. Converted to a people-facing [`crate::Error`] by
/// callers that know the context.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing (or not everything) arrived / could be sent within the bound.
    #[error("timed out after {after:?} waiting to {op}")]
    Timeout { op: &'static str, after: Duration },
    /// The other side went away (device unplugged, reset, pty closed).
    #[error("the device went away: {0}")]
    Disconnected(String),
    /// The OS refused access.
    #[error("permission denied: {0}")]
    Permission(String),
    /// Another process holds the device.
    #[error("the device is busy (held by another process): {0}")]
    Busy(String),
    /// Any other OS error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl TransportError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, TransportError::Timeout { .. })
    }
}

/// A blocking byte transport to a device. Every call is bounded by its timeout.
pub trait Transport: Send {
    /// Wait at most `timeout` for data and read what is available into `buf`.
    ///
    /// Returns `Ok(n)` with `n > 0` bytes read; `Ok(0)` only for a zero-length packet on packet
    /// transports; `Err(TransportError::Timeout)` when nothing arrived in time.
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError>;

    /// Write all of `data` as one logical transfer within `timeout`. Packet transports may split
    /// it into chunks and terminate it with a zero-length packet.
    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError>;

    /// A one-line description for logs and messages (e.g. `serial /dev/ttyUSB0`).
    fn describe(&self) -> String;

    /// How this transport delimits data.
    fn framing(&self) -> Framing {
        Framing::Stream
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        (**self).read(buf, timeout)
    }
    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        (**self).write(data, timeout)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn framing(&self) -> Framing {
        (**self).framing()
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        (**self).read(buf, timeout)
    }
    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        (**self).write(data, timeout)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn framing(&self) -> Framing {
        (**self).framing()
    }
}

/// Fill `buf` completely, waiting at most `timeout` in total. Zero-length packets are skipped.
pub fn read_exact(
    t: &mut (impl Transport + ?Sized),
    buf: &mut [u8],
    timeout: Duration,
) -> Result<(), TransportError> {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::Timeout {
                op: "receive the expected bytes",
                after: timeout,
            });
        }
        got += t.read(&mut buf[got..], left)?;
    }
    Ok(())
}

pub use pushback::Pushback;
