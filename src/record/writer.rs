//! The recorder: writes the header, then one line per event, redacting identifiers and storing
//! large payloads as length + sha256. One [`Recorder`] is shared ([`SharedRecorder`]) by every
//! transport and device source of a session, so their events land in one file in the order
//! they happened.
//!
//! The last data event is held back until the next event arrives (or [`Recorder::finish`]), so
//! an identifier split across two reads can still be redacted in both halves. Each line is
//! written with one `write_all`, so a recording cut short by a crash is readable up to its last
//! complete line.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::format::{
    rfc3339_utc, Body, ErrorClass, Event, FramingRecord, Header, Op, Payload, PayloadPolicy,
    RedactionPolicy, FORMAT, VERSION,
};
use super::redact::{self, Direction, Redactor};
use crate::device::DeviceEvent;
use crate::transport::{Framing, TransportError};
use crate::{Error, ErrorKind};

/// How a recording is made.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Payloads up to this many bytes are stored readable.
    pub inline_max: u64,
    /// Host→device binary payloads above this are stored as length + sha256 (images).
    pub out_binary_max: u64,
    /// Replace serial numbers and IMEIs by pseudonyms.
    pub redact: bool,
    /// The header's note (e.g. the command line).
    pub note: String,
}

impl Default for RecordOptions {
    /// 4 KiB readable; host binary over 64 bytes (more than any Sahara packet) hashed;
    /// redaction on.
    fn default() -> Self {
        RecordOptions {
            inline_max: 4096,
            out_binary_max: 64,
            redact: true,
            note: String::new(),
        }
    }
}

impl RecordOptions {
    /// Store every payload readable, whatever its size (tests that replay large device data;
    /// such a recording may hold firmware and must not be published).
    pub fn store_all(mut self) -> Self {
        self.inline_max = u64::MAX;
        self.out_binary_max = u64::MAX;
        self
    }
}

/// A recorder shared by transports and device sources.
pub type SharedRecorder = Arc<Mutex<Recorder>>;

/// Lock a shared recorder; a panic elsewhere while it was held does not stop recording.
pub fn lock(r: &SharedRecorder) -> MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// A data event not written yet.
struct Held {
    t_ms: u64,
    stream: u32,
    dir: Direction,
    bytes: Vec<u8>,
}

/// Writes one recording.
pub struct Recorder {
    sink: Box<dyn Write + Send>,
    start: Instant,
    opts: RecordOptions,
    redactor: Redactor,
    next_stream: u32,
    held: Option<Held>,
    last_t: u64,
    lines: u64,
    failed: Option<std::io::Error>,
}

impl Recorder {
    /// Start a recording on `sink`: writes the header at once.
    pub fn new(sink: Box<dyn Write + Send>, opts: RecordOptions) -> std::io::Result<Recorder> {
        let header = Header {
            format: FORMAT.to_string(),
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created: rfc3339_utc(SystemTime::now()),
            redaction: RedactionPolicy {
                enabled: opts.redact,
                rules: if opts.redact {
                    redact::RULES.iter().map(|s| s.to_string()).collect()
                } else {
                    Vec::new()
                },
                pseudonyms: if opts.redact {
                    redact::PSEUDONYMS.to_string()
                } else {
                    String::new()
                },
            },
            payloads: PayloadPolicy {
                inline_max: opts.inline_max,
                out_binary_max: opts.out_binary_max,
            },
            note: opts.note.clone(),
        };
        let mut r = Recorder {
            sink,
            start: Instant::now(),
            redactor: Redactor::new(opts.redact),
            opts,
            next_stream: 1,
            held: None,
            last_t: 0,
            lines: 0,
            failed: None,
        };
        let mut line = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        line.push(b'\n');
        r.sink.write_all(&line)?;
        r.lines = 1;
        Ok(r)
    }

    /// Create `path` (it must not exist) and start a recording there.
    pub fn create(path: &Path, opts: RecordOptions) -> crate::Result<Recorder> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| {
                let exists = e.kind() == std::io::ErrorKind::AlreadyExists;
                Error::new(
                    if exists {
                        ErrorKind::Usage
                    } else {
                        ErrorKind::Failure
                    },
                    format!("Cannot create the recording {}", path.display()),
                    if exists {
                        "the file exists already, and a recording never overwrites one"
                    } else {
                        "the session would not be recorded"
                    },
                    "Choose a new file name for --record (its folder must exist and be writable)",
                )
                .with_source(e)
            })?;
        Recorder::new(Box::new(file), opts).map_err(|e| {
            Error::failure(
                format!("Cannot write the recording {}", path.display()),
                "the session would not be recorded",
                "Check the disk space and permissions of that folder",
            )
            .with_source(e)
        })
    }

    /// Wrap for sharing.
    pub fn shared(self) -> SharedRecorder {
        Arc::new(Mutex::new(self))
    }

    fn now(&mut self) -> u64 {
        let t = (self.start.elapsed().as_millis() as u64).max(self.last_t);
        self.last_t = t;
        t
    }

    fn emit(&mut self, event: &Event) {
        if self.failed.is_some() {
            return;
        }
        let mut line = match serde_json::to_vec(event) {
            Ok(l) => l,
            Err(e) => {
                self.failed = Some(std::io::Error::other(e));
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = self.sink.write_all(&line) {
            tracing::warn!("recording stopped: {e}");
            self.failed = Some(e);
        } else {
            self.lines += 1;
        }
    }

    fn release(&mut self) {
        if let Some(h) = self.held.take() {
            let data = Payload::inline(&h.bytes);
            let body = match h.dir {
                Direction::Out => Body::Out {
                    stream: h.stream,
                    data,
                },
                Direction::In => Body::In {
                    stream: h.stream,
                    data,
                },
            };
            self.emit(&Event { t_ms: h.t_ms, body });
        }
    }

    fn write_body(&mut self, body: Body) {
        self.release();
        let t_ms = self.now();
        self.emit(&Event { t_ms, body });
    }

    /// A new transport stream; returns its id (1, 2, …).
    pub fn open_stream(&mut self, describe: &str, framing: Framing) -> u32 {
        let stream = self.next_stream;
        self.next_stream += 1;
        self.write_body(Body::Open {
            stream,
            describe: describe.to_string(),
            framing: FramingRecord::from(framing),
        });
        stream
    }

    /// Bytes that went `dir` on `stream`.
    pub fn data(&mut self, stream: u32, dir: Direction, bytes: &[u8]) {
        let len = bytes.len() as u64;
        let inline = len <= self.opts.inline_max
            && (dir == Direction::In
                || len <= self.opts.out_binary_max
                || super::format::is_text(bytes));
        let t_ms = self.now();
        if !inline {
            // Hashed as sent: a digest reveals nothing, and a replay can compare it.
            self.release();
            let data = Payload::digest(bytes);
            let body = match dir {
                Direction::Out => Body::Out { stream, data },
                Direction::In => Body::In { stream, data },
            };
            self.emit(&Event { t_ms, body });
            return;
        }
        let same_flow = matches!(&self.held, Some(h) if h.stream == stream && h.dir == dir);
        let redacted = if same_flow {
            let held = self.held.as_mut().map(|h| &mut h.bytes);
            self.redactor.chunk(stream, dir, bytes, held)
        } else {
            self.redactor.chunk(stream, dir, bytes, None)
        };
        self.release();
        self.held = Some(Held {
            t_ms,
            stream,
            dir,
            bytes: redacted,
        });
    }

    /// A failed read or write on `stream`.
    pub fn error(&mut self, stream: u32, op: Op, e: &TransportError, timeout: Duration) {
        let error = ErrorClass::of(e);
        let detail = match e {
            TransportError::Timeout { .. } => None,
            other => {
                let mut text = other.to_string().into_bytes();
                self.redactor.text(&mut text);
                Some(String::from_utf8_lossy(&text).into_owned())
            }
        };
        self.write_body(Body::Err {
            stream,
            op,
            error,
            timeout_ms: Some(timeout.as_millis() as u64),
            detail,
        });
    }

    /// A phase label, optionally tied to a stream.
    pub fn mark(&mut self, label: &str, stream: Option<u32>) {
        self.write_body(Body::Mark {
            label: label.to_string(),
            stream,
        });
    }

    /// `stream` was closed.
    pub fn close_stream(&mut self, stream: u32) {
        self.write_body(Body::Close { stream });
    }

    /// A device appeared or vanished (its snapshot is redacted).
    pub fn hotplug(&mut self, event: &DeviceEvent) {
        let mut change = event.change.clone();
        match &mut change {
            crate::device::DeviceChange::Appear { device } => self.redactor.snapshot(device),
            crate::device::DeviceChange::Vanish { last, .. } => {
                if let Some(d) = last {
                    self.redactor.snapshot(d)
                }
            }
        }
        self.write_body(Body::Hotplug { change });
    }

    /// Lines written so far (the header included).
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Write what is held back and flush; reports the first write error of the recording.
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.release();
        if let Some(e) = self.failed.take() {
            let kind = e.kind();
            self.failed = Some(std::io::Error::new(kind, e.to_string()));
            return Err(e);
        }
        self.sink.flush()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::reader::Recording;
    use proptest::prelude::*;

    /// A sink tests can read back.
    #[derive(Clone, Default)]
    struct Mem(Arc<Mutex<Vec<u8>>>);
    impl Write for Mem {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn payloads_are_text_hex_or_digest_by_size_and_direction() {
        let mem = Mem::default();
        let mut r = Recorder::new(Box::new(mem.clone()), RecordOptions::default()).unwrap();
        let s = r.open_stream("pipe", Framing::Stream);
        r.data(
            s,
            Direction::Out,
            b"<?xml version=\"1.0\" ?><data><nop /></data>",
        );
        r.data(s, Direction::In, &[1, 0, 0, 0, 0x30, 0, 0, 0]);
        r.data(s, Direction::Out, &[0xAB; 65]);
        r.data(s, Direction::In, &[0xAB; 4096]);
        r.data(s, Direction::In, &[0xAB; 4097]);
        r.mark("firehose", Some(s));
        r.error(
            s,
            Op::Read,
            &TransportError::Timeout {
                op: "read",
                after: Duration::from_millis(5),
            },
            Duration::from_millis(5),
        );
        r.close_stream(s);
        r.finish().unwrap();
        drop(r);
        let bytes = mem.0.lock().unwrap().clone();
        let rec = Recording::parse(&bytes[..], "mem").unwrap();
        let kinds: Vec<String> = rec
            .events
            .iter()
            .map(|l| match &l.event.body {
                Body::Out { data, .. } | Body::In { data, .. } => match data {
                    Payload::Text(_) => "text".to_string(),
                    Payload::Hex(_) => "hex".to_string(),
                    Payload::Digest { .. } => "digest".to_string(),
                },
                b => b.kind().to_string(),
            })
            .collect();
        assert_eq!(
            kinds,
            ["open", "text", "hex", "digest", "hex", "digest", "mark", "err", "close"]
        );
        assert_eq!(rec.header.version, VERSION);
        assert!(rec.header.redaction.enabled);
    }

    proptest! {
        /// Without redaction and with every payload stored, what was recorded reads back
        /// byte for byte, in order.
        #[test]
        fn recorded_chunks_read_back_exactly(
            chunks in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..20),
        ) {
            let mem = Mem::default();
            let opts = RecordOptions { redact: false, ..RecordOptions::default() }.store_all();
            let mut r = Recorder::new(Box::new(mem.clone()), opts).unwrap();
            let s = r.open_stream("p", Framing::Stream);
            for (out, c) in &chunks {
                r.data(s, if *out { Direction::Out } else { Direction::In }, c);
            }
            r.finish().unwrap();
            drop(r);
            let bytes = mem.0.lock().unwrap().clone();
            let rec = Recording::parse(&bytes[..], "mem").unwrap();
            let back: Vec<(bool, Vec<u8>)> = rec.events.iter().filter_map(|l| match &l.event.body {
                Body::Out { data, .. } => Some((true, data.bytes().unwrap().into_owned())),
                Body::In { data, .. } => Some((false, data.bytes().unwrap().into_owned())),
                _ => None,
            }).collect();
            prop_assert_eq!(back, chunks);
        }
    }
}
