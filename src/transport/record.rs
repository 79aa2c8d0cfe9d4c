//! [`RecordingTransport`]: wraps any [`Transport`] and writes everything that passes — writes as
//! `out`, reads as `in`, failures as `err`, an `open` line first and a `close` line when dropped —
//! to a [`SharedRecorder`] that other transports and device sources of the session share.

use std::time::Duration;

use super::{Framing, Transport, TransportError};
use crate::record::format::Op;
use crate::record::writer::{lock, SharedRecorder};
use crate::record::Direction;

/// A transport that records its traffic. Built without a recorder
/// ([`RecordingTransport::passthrough`]) it records nothing, so a caller can wrap
/// unconditionally.
pub struct RecordingTransport<T> {
    inner: T,
    tap: Option<(SharedRecorder, u32)>,
}

impl<T: Transport> RecordingTransport<T> {
    /// Start recording `inner` as a new stream of `recorder`.
    pub fn new(inner: T, recorder: &SharedRecorder) -> Self {
        let id = lock(recorder).open_stream(&inner.describe(), inner.framing());
        RecordingTransport {
            inner,
            tap: Some((recorder.clone(), id)),
        }
    }

    /// Wrap without recording.
    pub fn passthrough(inner: T) -> Self {
        RecordingTransport { inner, tap: None }
    }

    /// The stream id in the recording (None when not recording).
    pub fn stream(&self) -> Option<u32> {
        self.tap.as_ref().map(|(_, id)| *id)
    }

    /// Write a phase label tied to this stream.
    pub fn mark(&self, label: &str) {
        if let Some((r, id)) = &self.tap {
            lock(r).mark(label, Some(*id));
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: Transport> Transport for RecordingTransport<T> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        let r = self.inner.read(buf, timeout);
        if let Some((rec, id)) = &self.tap {
            let mut rec = lock(rec);
            match &r {
                Ok(n) => rec.data(*id, Direction::In, &buf[..(*n).min(buf.len())]),
                Err(e) => rec.error(*id, Op::Read, e, timeout),
            }
        }
        r
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        let r = self.inner.write(data, timeout);
        if let Some((rec, id)) = &self.tap {
            let mut rec = lock(rec);
            match &r {
                Ok(()) => rec.data(*id, Direction::Out, data),
                Err(e) => rec.error(*id, Op::Write, e, timeout),
            }
        }
        r
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn framing(&self) -> Framing {
        self.inner.framing()
    }
}

impl<T> Drop for RecordingTransport<T> {
    fn drop(&mut self) {
        if let Some((rec, id)) = &self.tap {
            lock(rec).close_stream(*id);
        }
    }
}
