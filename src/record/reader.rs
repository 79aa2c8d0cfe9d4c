//! Reading a recording: bounded line length and event count, a version check that says what to
//! do with a newer recording, and validation (monotonic time, streams opened before use) — with
//! every problem reported for people, naming the line. Never panics on any input.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::format::{Body, ErrorClass, Event, FramingRecord, Header, Payload, FORMAT, VERSION};
use crate::device::DeviceEvent;
use crate::Error;

/// Bounds for reading untrusted recordings.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Longest line, in bytes.
    pub max_line: usize,
    /// Most events after the header.
    pub max_events: usize,
    /// Most transport streams.
    pub max_streams: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_line: 16 << 20,
            max_events: 2_000_000,
            max_streams: 4096,
        }
    }
}

/// One event with the line it came from (1-based; the header is line 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub line: usize,
    pub event: Event,
}

/// A parsed, validated recording.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Where it came from (a path, for messages).
    pub source: String,
    pub header: Header,
    pub events: Vec<Line>,
}

/// What one transport stream carried.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamSummary {
    pub stream: u32,
    pub describe: String,
    pub framing: FramingRecord,
    pub opened_ms: u64,
    pub last_ms: u64,
    pub writes: u64,
    pub bytes_out: u64,
    pub reads: u64,
    pub bytes_in: u64,
    /// Payloads stored only as length + sha256.
    pub hashed: u64,
    pub timeouts: u64,
    pub other_errors: u64,
    pub closed: bool,
}

fn bad(source: &str, line: usize, why: impl Into<String>) -> Error {
    Error::failure(
        format!("{source}, line {line}: this is not a valid qrescue recording"),
        why,
        "Check that the file is a complete qrescue recording (a cut-off last line is fine to delete); record the session again if it is damaged",
    )
}

impl Recording {
    /// Read and validate the recording at `path`.
    pub fn open(path: &Path) -> crate::Result<Recording> {
        let f = File::open(path).map_err(|e| {
            Error::new(
                if e.kind() == std::io::ErrorKind::NotFound {
                    crate::ErrorKind::Usage
                } else {
                    crate::ErrorKind::Failure
                },
                format!("Cannot open the recording {}", path.display()),
                "it could not be read",
                "Check the file name",
            )
            .with_source(e)
        })?;
        Recording::parse_with(
            BufReader::new(f),
            &path.display().to_string(),
            ReadLimits::default(),
        )
    }

    /// Parse a recording with the default limits.
    pub fn parse(reader: impl Read, source: &str) -> crate::Result<Recording> {
        Recording::parse_with(BufReader::new(reader), source, ReadLimits::default())
    }

    /// Parse a recording within `limits`.
    pub fn parse_with(
        mut reader: impl BufRead,
        source: &str,
        limits: ReadLimits,
    ) -> crate::Result<Recording> {
        let mut header: Option<Header> = None;
        let mut events = Vec::new();
        let mut line_no = 0usize;
        let mut buf = Vec::new();
        let mut last_t = 0u64;
        // Stream id → closed?
        let mut streams: BTreeMap<u32, bool> = BTreeMap::new();
        loop {
            buf.clear();
            let n = (&mut reader)
                .take(limits.max_line as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| {
                    Error::failure(
                        format!("Cannot read the recording {source}"),
                        "reading the file failed",
                        "Check the file",
                    )
                    .with_source(e)
                })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if buf.len() > limits.max_line {
                return Err(bad(
                    source,
                    line_no,
                    format!("the line is longer than {} bytes", limits.max_line),
                ));
            }
            let text = std::str::from_utf8(&buf)
                .map_err(|_| bad(source, line_no, "the line is not UTF-8 text"))?
                .trim();
            if text.is_empty() {
                continue;
            }
            let Some(h) = &header else {
                header = Some(parse_header(text, source, line_no)?);
                continue;
            };
            let _ = h;
            if events.len() >= limits.max_events {
                return Err(bad(
                    source,
                    line_no,
                    format!("more than {} events", limits.max_events),
                ));
            }
            let event: Event = serde_json::from_str(text)
                .map_err(|e| bad(source, line_no, format!("the event cannot be read: {e}")))?;
            if event.t_ms < last_t {
                return Err(bad(
                    source,
                    line_no,
                    format!(
                        "time goes backwards ({} ms after {} ms)",
                        event.t_ms, last_t
                    ),
                ));
            }
            last_t = event.t_ms;
            match &event.body {
                Body::Open { stream, .. } => {
                    if streams.contains_key(stream) {
                        return Err(bad(
                            source,
                            line_no,
                            format!("stream {stream} is opened twice"),
                        ));
                    }
                    if streams.len() >= limits.max_streams {
                        return Err(bad(
                            source,
                            line_no,
                            format!("more than {} streams", limits.max_streams),
                        ));
                    }
                    streams.insert(*stream, false);
                }
                Body::Hotplug { .. } | Body::Mark { stream: None, .. } => {}
                body => {
                    let stream = body.stream().unwrap_or_default();
                    match streams.get(&stream) {
                        None => {
                            return Err(bad(
                                source,
                                line_no,
                                format!("stream {stream} is used before it is opened"),
                            ))
                        }
                        Some(true) => {
                            return Err(bad(
                                source,
                                line_no,
                                format!("stream {stream} is used after it was closed"),
                            ))
                        }
                        Some(false) => {
                            if matches!(body, Body::Close { .. }) {
                                streams.insert(stream, true);
                            }
                        }
                    }
                }
            }
            events.push(Line {
                line: line_no,
                event,
            });
        }
        let header = header.ok_or_else(|| bad(source, 1, "the file is empty"))?;
        Ok(Recording {
            source: source.to_string(),
            header,
            events,
        })
    }

    /// The device timeline: every hotplug event with its recording time.
    pub fn device_events(&self) -> Vec<DeviceEvent> {
        self.events
            .iter()
            .filter_map(|l| match &l.event.body {
                Body::Hotplug { change } => Some(DeviceEvent {
                    t_ms: l.event.t_ms,
                    change: change.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Phase labels with their times.
    pub fn marks(&self) -> Vec<(u64, &str)> {
        self.events
            .iter()
            .filter_map(|l| match &l.event.body {
                Body::Mark { label, .. } => Some((l.event.t_ms, label.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Ids of the transport streams, in the order they were opened.
    pub fn stream_ids(&self) -> Vec<u32> {
        self.events
            .iter()
            .filter_map(|l| match &l.event.body {
                Body::Open { stream, .. } => Some(*stream),
                _ => None,
            })
            .collect()
    }

    /// What each transport stream carried.
    pub fn streams(&self) -> Vec<StreamSummary> {
        let mut map: BTreeMap<u32, StreamSummary> = BTreeMap::new();
        for l in &self.events {
            let t = l.event.t_ms;
            match &l.event.body {
                Body::Open {
                    stream,
                    describe,
                    framing,
                } => {
                    map.insert(
                        *stream,
                        StreamSummary {
                            stream: *stream,
                            describe: describe.clone(),
                            framing: *framing,
                            opened_ms: t,
                            last_ms: t,
                            writes: 0,
                            bytes_out: 0,
                            reads: 0,
                            bytes_in: 0,
                            hashed: 0,
                            timeouts: 0,
                            other_errors: 0,
                            closed: false,
                        },
                    );
                }
                body => {
                    let Some(s) = body.stream().and_then(|id| map.get_mut(&id)) else {
                        continue;
                    };
                    s.last_ms = t;
                    match body {
                        Body::Out { data, .. } => {
                            s.writes += 1;
                            s.bytes_out += data.len();
                            s.hashed += u64::from(matches!(data, Payload::Digest { .. }));
                        }
                        Body::In { data, .. } => {
                            s.reads += 1;
                            s.bytes_in += data.len();
                            s.hashed += u64::from(matches!(data, Payload::Digest { .. }));
                        }
                        Body::Err { error, .. } => {
                            if *error == ErrorClass::Timeout {
                                s.timeouts += 1;
                            } else {
                                s.other_errors += 1;
                            }
                        }
                        Body::Close { .. } => s.closed = true,
                        _ => {}
                    }
                }
            }
        }
        map.into_values().collect()
    }
}

fn parse_header(text: &str, source: &str, line: usize) -> crate::Result<Header> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        Error::failure(
            format!("{source} is not a qrescue recording"),
            "its first line is not a JSON header",
            "Give `qrescue replay` a file written by `qrescue --record FILE …`",
        )
    })?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(Error::failure(
            format!("{source} is not a qrescue recording"),
            format!("its header does not say \"format\": \"{FORMAT}\""),
            "Give `qrescue replay` a file written by `qrescue --record FILE …`",
        ));
    }
    let version = v.get("version").and_then(|f| f.as_u64());
    match version {
        Some(n) if n > u64::from(VERSION) => {
            let tool = v
                .get("tool_version")
                .and_then(|t| t.as_str())
                .unwrap_or("a newer version");
            return Err(Error::failure(
                format!("{source} is a recording of format version {n}, made by qrescue {tool}"),
                format!(
                    "this qrescue ({}) reads format version {VERSION} only",
                    env!("CARGO_PKG_VERSION")
                ),
                format!("Update qrescue to {tool} or newer to read it"),
            ));
        }
        Some(n) if n >= 1 => {}
        _ => return Err(bad(source, line, "the header has no valid `version`")),
    }
    serde_json::from_value(v)
        .map_err(|e| bad(source, line, format!("the header cannot be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER: &str = r#"{"format":"qrescue-recording","version":1,"tool_version":"0.1.0","created":"2025-01-01T00:00:00Z","redaction":{"enabled":true},"payloads":{"inline_max":4096,"out_binary_max":64},"note":""}"#;

    fn parse(lines: &[&str]) -> crate::Result<Recording> {
        Recording::parse(lines.join("\n").as_bytes(), "t.jsonl")
    }

    #[test]
    fn a_valid_recording_reads_back() {
        let r = parse(&[
            HEADER,
            r#"{"t_ms":0,"kind":"hotplug","event":"appear","device":{"bus":1,"ports":[2],"vid":1480,"pid":36872}}"#,
            r#"{"t_ms":1,"kind":"open","stream":1,"describe":"pipe","framing":"stream"}"#,
            r#"{"t_ms":2,"kind":"out","stream":1,"text":"AT\r"}"#,
            r#"{"t_ms":3,"kind":"in","stream":1,"hex":"0100"}"#,
            r#"{"t_ms":4,"kind":"err","stream":1,"op":"read","error":"timeout","timeout_ms":100}"#,
            r#"{"t_ms":5,"kind":"mark","label":"done"}"#,
            r#"{"t_ms":6,"kind":"close","stream":1}"#,
            r#"{"t_ms":7,"kind":"hotplug","event":"vanish","location":"1-2"}"#,
            "",
        ])
        .unwrap();
        assert_eq!(r.events.len(), 8);
        assert_eq!(r.events[0].line, 2);
        assert_eq!(r.device_events().len(), 2);
        let s = &r.streams()[0];
        assert_eq!((s.bytes_out, s.bytes_in, s.timeouts), (3, 2, 1));
        assert!(s.closed);
        assert_eq!(r.marks(), vec![(5, "done")]);
    }

    #[test]
    fn problems_name_the_line() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "empty"),
            (&["hello"], "not a qrescue recording"),
            (
                &[r#"{"format":"other","version":1}"#],
                "not a qrescue recording",
            ),
            (&[HEADER, "{"], "line 2"),
            (
                &[HEADER, r#"{"t_ms":1,"kind":"out","stream":1,"text":"x"}"#],
                "used before it is opened",
            ),
            (
                &[
                    HEADER,
                    r#"{"t_ms":5,"kind":"mark","label":"a"}"#,
                    r#"{"t_ms":4,"kind":"mark","label":"b"}"#,
                ],
                "line 3",
            ),
        ];
        for (lines, want) in cases {
            let e = parse(lines).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(want), "{lines:?}: {text}");
        }
    }

    #[test]
    fn a_newer_version_says_to_update() {
        let h = HEADER
            .replace(r#""version":1"#, r#""version":7"#)
            .replace("0.1.0", "9.9.9");
        let e = parse(&[&h]).unwrap_err();
        assert!(e.what.contains("format version 7"), "{e}");
        assert!(e.next.contains("9.9.9"), "{e}");
    }

    #[test]
    fn long_lines_are_refused() {
        let long = format!(
            r#"{{"t_ms":0,"kind":"mark","label":"{}"}}"#,
            "x".repeat(500)
        );
        let input = format!("{HEADER}\n{long}\n");
        let limits = ReadLimits {
            max_line: 300,
            ..ReadLimits::default()
        };
        let e = Recording::parse_with(input.as_bytes(), "t", limits).unwrap_err();
        assert!(e.to_string().contains("longer than 300"), "{e}");
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Recording::parse(&data[..], "p");
            let mut with_header = HEADER.as_bytes().to_vec();
            with_header.push(b'\n');
            with_header.extend_from_slice(&data);
            let _ = Recording::parse(&with_header[..], "p");
        }

        #[test]
        fn any_event_like_lines_never_panic(
            kind in prop::sample::select(vec!["open", "out", "in", "err", "mark", "close", "hotplug", "x"]),
            t in any::<u64>(),
            stream in any::<u32>(),
            field in "[a-z_]{0,8}",
            value in ".{0,20}",
        ) {
            let line = serde_json::json!({
                "t_ms": t, "kind": kind, "stream": stream, field.clone(): value.clone(),
                "text": value, "framing": "stream", "describe": "d", "op": "read", "error": "io",
            }).to_string();
            let input = format!("{HEADER}\n{line}\n");
            let _ = Recording::parse(input.as_bytes(), "p");
        }
    }
}
