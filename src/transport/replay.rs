//! [`ReplayTransport`]: plays the *device* side of one recorded stream back to a host. What the
//! host writes is compared with the recorded `out` events (bytes equal, or length and sha256
//! equal for payloads recorded as a digest); its reads get the recorded `in` chunks, exactly as
//! they were split then, and the recorded `err` results (a timeout returns at once).
//!
//! Strict (the default): the host must make the same calls in the same order. A host that
//! *reads* where the recording has it write next is given silence (a timeout after waiting its
//! timeout, at most the idle limit) — what a device does when it has nothing to say, and what a
//! host polling until a deadline needs. A host that *writes* where the recording has it read is
//! a mismatch. Lenient ([`ReplayTransport::lenient`]) lets that write through: the skipped
//! device data is kept for later reads.
//!
//! The first mismatch stops the replay: every later call fails, and
//! [`ReplayTransport::finish`] returns an error for people naming the line, with expected and
//! actual bytes.

use std::collections::VecDeque;
use std::time::Duration;

use sha2::Digest as _;

use super::{Framing, Transport, TransportError};
use crate::record::format::{is_text, Body, ErrorClass, Op, Payload};
use crate::record::reader::{Line, Recording};
use crate::{Error, ErrorKind};

/// Where and how a replay went off the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayMismatch {
    /// Line of the recording (1-based) whose event did not match.
    pub line: usize,
    /// One sentence: what happened.
    pub what: String,
    /// What the recording has there.
    pub expected: String,
    /// What the host did.
    pub actual: String,
}

/// One recorded stream played back as a device.
pub struct ReplayTransport {
    source: String,
    stream: u32,
    describe: String,
    framing: Framing,
    events: Vec<Line>,
    pos: usize,
    /// The rest of an `in` chunk larger than the host's buffer.
    partial: Option<(Vec<u8>, usize)>,
    /// Device data skipped over by a lenient write.
    queued: VecDeque<Vec<u8>>,
    strict: bool,
    idle_limit: Duration,
    failure: Option<ReplayMismatch>,
}

impl ReplayTransport {
    /// Play back `stream` of `recording`.
    pub fn new(recording: &Recording, stream: u32) -> crate::Result<ReplayTransport> {
        let mut open = None;
        let mut events = Vec::new();
        for l in &recording.events {
            if l.event.body.stream() != Some(stream) {
                continue;
            }
            match &l.event.body {
                Body::Open {
                    describe, framing, ..
                } => open = Some((describe.clone(), Framing::from(*framing))),
                Body::Out { .. } | Body::In { .. } | Body::Err { .. } | Body::Close { .. } => {
                    events.push(l.clone())
                }
                _ => {}
            }
        }
        let (describe, framing) = open.ok_or_else(|| {
            Error::usage(
                format!("{} has no stream {stream}", recording.source),
                "Pick a stream that `qrescue replay` lists",
            )
        })?;
        Ok(ReplayTransport {
            source: recording.source.clone(),
            stream,
            describe,
            framing,
            events,
            pos: 0,
            partial: None,
            queued: VecDeque::new(),
            strict: true,
            idle_limit: Duration::from_secs(5),
            failure: None,
        })
    }

    /// Play back the first stream the recording opened.
    pub fn first(recording: &Recording) -> crate::Result<ReplayTransport> {
        let id = recording.stream_ids().first().copied().ok_or_else(|| {
            Error::usage(
                format!("{} has no transport stream to replay", recording.source),
                "Record a session that talks to a device (`qrescue --record FILE flash …`)",
            )
        })?;
        ReplayTransport::new(recording, id)
    }

    /// Let host writes skip over recorded device data it did not read (kept for later reads).
    pub fn lenient(mut self) -> Self {
        self.strict = false;
        self
    }

    /// Longest silence given to a host that reads where the recording has it write.
    pub fn with_idle_limit(mut self, limit: Duration) -> Self {
        self.idle_limit = limit;
        self
    }

    /// The recorded stream id.
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// The first mismatch, if any.
    pub fn mismatch(&self) -> Option<&ReplayMismatch> {
        self.failure.as_ref()
    }

    /// Recorded data events not yet replayed (the line of the first, and how many).
    pub fn remaining(&self) -> Option<(usize, usize)> {
        let rest: Vec<&Line> = self.events[self.pos.min(self.events.len())..]
            .iter()
            .filter(|l| matches!(l.event.body, Body::Out { .. } | Body::In { .. }))
            .collect();
        rest.first().map(|l| (l.line, rest.len()))
    }

    /// Ok when the host did exactly what was recorded, all of it.
    pub fn finish(&self) -> crate::Result<()> {
        if let Some(m) = &self.failure {
            return Err(self.error_for(m));
        }
        if let Some((line, n)) = self.remaining() {
            return Err(Error::new(
                ErrorKind::VerifyMismatch,
                format!(
                    "Replay of {} stopped early: {n} recorded transfers from line {line} on were not replayed",
                    self.source
                ),
                "the host ended the session sooner than when it was recorded",
                "Look at the host's error above; if the change is intended, record the session again",
            ));
        }
        Ok(())
    }

    fn error_for(&self, m: &ReplayMismatch) -> Error {
        Error::new(
            ErrorKind::VerifyMismatch,
            format!("Replay mismatch at {} line {}: {}", self.source, m.line, m.what),
            format!("expected {}\n        actual   {}", m.expected, m.actual),
            "If the host's behaviour changed on purpose, record the session again (`qrescue --record FILE …`); otherwise compare the two runs from that line on",
        )
    }

    fn fail(&mut self, m: ReplayMismatch) -> TransportError {
        let e = TransportError::Io(std::io::Error::other(format!(
            "replay mismatch at line {}: {}",
            m.line, m.what
        )));
        tracing::debug!("replay mismatch at line {}: {}", m.line, m.what);
        self.failure = Some(m);
        e
    }

    fn stopped(&self) -> Option<TransportError> {
        self.failure.as_ref().map(|m| {
            TransportError::Io(std::io::Error::other(format!(
                "the replay stopped at line {}: {}",
                m.line, m.what
            )))
        })
    }

    fn serve(&mut self, chunk: Vec<u8>, buf: &mut [u8]) -> usize {
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if n < chunk.len() {
            self.partial = Some((chunk, n));
        }
        n
    }

    fn end_line(&self) -> usize {
        self.events
            .get(self.pos)
            .or(self.events.last())
            .map(|l| l.line)
            .unwrap_or(1)
    }
}

fn recorded_error(error: ErrorClass, detail: Option<&str>, timeout: Duration) -> TransportError {
    let detail = detail.unwrap_or("recorded").to_string();
    match error {
        ErrorClass::Timeout => TransportError::Timeout {
            op: "get an answer (replayed)",
            after: timeout,
        },
        ErrorClass::Disconnected => TransportError::Disconnected(detail),
        ErrorClass::Permission => TransportError::Permission(detail),
        ErrorClass::Busy => TransportError::Busy(detail),
        ErrorClass::Io => TransportError::Io(std::io::Error::other(detail)),
    }
}

impl Transport for ReplayTransport {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        if let Some((chunk, off)) = self.partial.take() {
            let n = (chunk.len() - off).min(buf.len());
            buf[..n].copy_from_slice(&chunk[off..off + n]);
            if off + n < chunk.len() {
                self.partial = Some((chunk, off + n));
            }
            return Ok(n);
        }
        if let Some(chunk) = self.queued.pop_front() {
            return Ok(self.serve(chunk, buf));
        }
        let Some(l) = self.events.get(self.pos).cloned() else {
            return Err(TransportError::Disconnected(format!(
                "the recording {} ends here (line {})",
                self.source,
                self.end_line()
            )));
        };
        match &l.event.body {
            Body::In { data, .. } => match data.bytes() {
                Some(b) => {
                    self.pos += 1;
                    let chunk = b.into_owned();
                    Ok(self.serve(chunk, buf))
                }
                None => Err(self.fail(ReplayMismatch {
                    line: l.line,
                    what: "the device data there was recorded only as length + sha256, so it cannot be replayed".into(),
                    expected: format!("to return {data:?}"),
                    actual: "the host asked for it".into(),
                })),
            },
            Body::Err {
                op: Op::Read,
                error,
                detail,
                ..
            } => {
                self.pos += 1;
                Err(recorded_error(*error, detail.as_deref(), timeout))
            }
            Body::Close { .. } => Err(TransportError::Disconnected(format!(
                "the recorded stream was closed here ({} line {})",
                self.source, l.line
            ))),
            _ => {
                // The recording has the host write next: the device is silent meanwhile.
                std::thread::sleep(timeout.min(self.idle_limit));
                Err(TransportError::Timeout {
                    op: "get an answer (replayed: the device says nothing here)",
                    after: timeout,
                })
            }
        }
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        loop {
            let Some(l) = self.events.get(self.pos).cloned() else {
                let line = self.end_line();
                return Err(self.fail(ReplayMismatch {
                    line,
                    what: "the host wrote after the recorded session ended".into(),
                    expected: "nothing more".into(),
                    actual: excerpt_of(data, 0),
                }));
            };
            match &l.event.body {
                Body::Out { data: want, .. } => {
                    if want.matches(data) {
                        self.pos += 1;
                        return Ok(());
                    }
                    let (expected, actual) = diff(want, data);
                    return Err(self.fail(ReplayMismatch {
                        line: l.line,
                        what: "the host wrote different bytes".into(),
                        expected,
                        actual,
                    }));
                }
                Body::Err {
                    op: Op::Write,
                    error,
                    detail,
                    ..
                } => {
                    self.pos += 1;
                    return Err(recorded_error(*error, detail.as_deref(), timeout));
                }
                Body::Close { .. } => {
                    return Err(self.fail(ReplayMismatch {
                        line: l.line,
                        what: "the host wrote after the recorded stream was closed".into(),
                        expected: "nothing more".into(),
                        actual: excerpt_of(data, 0),
                    }));
                }
                other => {
                    if self.strict {
                        let expected = match other {
                            Body::In { data: d, .. } => {
                                format!("the host to read first, and get {}", payload_excerpt(d))
                            }
                            _ => "the host to read first (and time out)".to_string(),
                        };
                        return Err(self.fail(ReplayMismatch {
                            line: l.line,
                            what: "the host wrote where the recording has it read".into(),
                            expected,
                            actual: format!("a write of {}", excerpt_of(data, 0)),
                        }));
                    }
                    if let Body::In { data: d, .. } = other {
                        if let Some(b) = d.bytes() {
                            self.queued.push_back(b.into_owned());
                        }
                    }
                    self.pos += 1;
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("replay of {} ({})", self.describe, self.source)
    }

    fn framing(&self) -> Framing {
        self.framing
    }
}

/// Expected and actual, around the first difference.
fn diff(want: &Payload, actual: &[u8]) -> (String, String) {
    match want.bytes() {
        None => (
            format!("{want:?}"),
            format!(
                "{} bytes, sha256 {}",
                actual.len(),
                hex::encode(<[u8; 32]>::from(sha2::Sha256::digest(actual)))
            ),
        ),
        Some(w) => {
            let at = w
                .iter()
                .zip(actual)
                .position(|(a, b)| a != b)
                .unwrap_or(w.len().min(actual.len()));
            (
                format!(
                    "{} (first difference at byte {at} of {})",
                    excerpt_of(&w, at),
                    w.len()
                ),
                format!("{} ({} bytes)", excerpt_of(actual, at), actual.len()),
            )
        }
    }
}

fn payload_excerpt(p: &Payload) -> String {
    match p.bytes() {
        Some(b) => excerpt_of(&b, 0),
        None => format!("{p:?}"),
    }
}

/// A short readable piece of `bytes` around `at`: text in quotes, or hex.
fn excerpt_of(bytes: &[u8], at: usize) -> String {
    if is_text(bytes) {
        let text = String::from_utf8_lossy(bytes);
        let mut s = at.saturating_sub(40);
        while !text.is_char_boundary(s) {
            s -= 1;
        }
        let mut e = (at + 40).min(text.len());
        while !text.is_char_boundary(e) {
            e += 1;
        }
        format!(
            "{}{:?}{}",
            if s > 0 { "…" } else { "" },
            &text[s..e],
            if e < text.len() { "…" } else { "" }
        )
    } else {
        let s = at.saturating_sub(16);
        let e = (at + 16).min(bytes.len());
        format!(
            "{}hex {}{}",
            if s > 0 { "…" } else { "" },
            hex::encode(&bytes[s..e]),
            if e < bytes.len() { "…" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::writer::{lock, RecordOptions, Recorder};
    use crate::transport::pipe;
    use crate::transport::record::RecordingTransport;

    fn tmp_recording(f: impl FnOnce(&crate::record::SharedRecorder)) -> Recording {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let rec = Recorder::create(&path, RecordOptions::default())
            .unwrap()
            .shared();
        f(&rec);
        lock(&rec).finish().unwrap();
        drop(rec);
        Recording::open(&path).unwrap()
    }

    const T: Duration = Duration::from_millis(500);

    /// Record a tiny exchange over a pipe: host writes "PING", device answers "PONG", then the
    /// host times out once.
    fn ping_pong() -> Recording {
        tmp_recording(|rec| {
            let (host, mut dev) = pipe::pair(Framing::Stream);
            let mut host = RecordingTransport::new(host, rec);
            host.write(b"PING\r\n", T).unwrap();
            let mut b = [0u8; 16];
            let n = dev.read(&mut b, T).unwrap();
            assert_eq!(&b[..n], b"PING\r\n");
            dev.write(&[0x01, 0x00, 0xff], T).unwrap();
            let n = host.read(&mut b, T).unwrap();
            assert_eq!(&b[..n], &[0x01, 0x00, 0xff]);
            assert!(host
                .read(&mut b, Duration::from_millis(1))
                .unwrap_err()
                .is_timeout());
            host.mark("done");
        })
    }

    #[test]
    fn a_host_doing_the_same_gets_the_same() {
        let rec = ping_pong();
        let mut r = ReplayTransport::first(&rec).unwrap();
        r.write(b"PING\r\n", T).unwrap();
        let mut b = [0u8; 16];
        let n = r.read(&mut b, T).unwrap();
        assert_eq!(&b[..n], &[0x01, 0x00, 0xff]);
        assert!(r.read(&mut b, T).unwrap_err().is_timeout());
        r.finish().unwrap();
        // After the end of the stream the device is gone.
        assert!(matches!(
            r.read(&mut b, T),
            Err(TransportError::Disconnected(_))
        ));
    }

    #[test]
    fn a_different_write_is_reported_with_line_expected_and_actual() {
        let rec = ping_pong();
        let mut r = ReplayTransport::first(&rec).unwrap();
        assert!(r.write(b"PONG\r\n", T).is_err());
        let e = r.finish().unwrap_err();
        let text = e.to_string();
        assert_eq!(e.kind, ErrorKind::VerifyMismatch);
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("\"PING\\r\\n\""), "{text}");
        assert!(text.contains("\"PONG\\r\\n\""), "{text}");
        assert!(text.contains("first difference at byte 1"), "{text}");
        // Everything afterwards fails too.
        let mut b = [0u8; 4];
        assert!(r.read(&mut b, T).is_err());
    }

    #[test]
    fn stopping_early_is_reported() {
        let rec = ping_pong();
        let mut r = ReplayTransport::first(&rec).unwrap();
        r.write(b"PING\r\n", T).unwrap();
        let e = r.finish().unwrap_err();
        assert!(e.what.contains("stopped early"), "{e}");
    }

    #[test]
    fn strict_and_lenient_writes_before_a_recorded_read() {
        let rec = ping_pong();
        let mut r = ReplayTransport::first(&rec).unwrap();
        r.write(b"PING\r\n", T).unwrap();
        // The recording has the host read next.
        assert!(r.write(b"more", T).is_err());
        assert!(r.mismatch().unwrap().what.contains("wrote where"));

        let mut r = ReplayTransport::first(&rec).unwrap().lenient();
        r.write(b"PING\r\n", T).unwrap();
        // Skips the read and the timeout; nothing more was recorded to write.
        assert!(r.write(b"more", T).is_err());
        let mut b = [0u8; 16];
        assert!(r.mismatch().is_some());
        assert!(r.read(&mut b, T).is_err());
    }

    #[test]
    fn small_host_buffers_get_the_chunk_in_pieces() {
        let rec = ping_pong();
        let mut r = ReplayTransport::first(&rec).unwrap();
        r.write(b"PING\r\n", T).unwrap();
        let mut b = [0u8; 2];
        assert_eq!(r.read(&mut b, T).unwrap(), 2);
        assert_eq!(b, [0x01, 0x00]);
        assert_eq!(r.read(&mut b, T).unwrap(), 1);
        assert_eq!(b[0], 0xff);
    }

    #[test]
    fn hashed_device_data_cannot_be_replayed_and_says_where() {
        let rec = tmp_recording(|rec| {
            let (host, mut dev) = pipe::pair(Framing::Stream);
            let mut host = RecordingTransport::new(host, rec);
            dev.write(&vec![0x5a; 5000], T).unwrap();
            let mut b = vec![0u8; 8192];
            let mut got = 0;
            while got < 5000 {
                got += host.read(&mut b, T).unwrap();
            }
        });
        let mut r = ReplayTransport::first(&rec).unwrap();
        let mut b = vec![0u8; 8192];
        assert!(r.read(&mut b, T).is_err());
        let e = r.finish().unwrap_err();
        assert!(e.what.contains("line 3"), "{e}");
        assert!(e.what.contains("length + sha256"), "{e}");
    }
}
