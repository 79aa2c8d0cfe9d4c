//! The line protocol a running `qrescue sim` speaks on its announcement socket (sans-IO: encode,
//! decode and split lines; the socket itself lives in `sim::announce` and [`super::sim_source`]).
//!
//! Every line is one JSON object followed by `\n`, at most [`MAX_LINE`] bytes:
//!
//! 1. a header: `{"format":"qrescue-sim-usb","version":1,"pid":4242,"profile":"rm502q",
//!    "boot_loop":{"period_ms":1200,"window_ms":800}}` (`boot_loop` is `null` without one);
//! 2. the current state: one `appear` event per device present when the client connected (with
//!    the time it appeared);
//! 3. every change as it happens, in order: a [`DeviceEvent`] as serde writes it, e.g.
//!    `{"t_ms":1200,"event":"appear","device":{…DeviceSnapshot…}}` and
//!    `{"t_ms":2000,"event":"vanish","location":"99-3","last":{…}}`; `t_ms` counts from the
//!    emulator's start;
//! 4. a last `{"event":"bye","reason":"stopped"}` when the emulator exits, or
//!    `{"event":"bye","reason":"too_slow"}` when it dropped this client for not reading.

use serde::{Deserialize, Serialize};

use super::DeviceEvent;

/// `format` of the header line.
pub const FORMAT: &str = "qrescue-sim-usb";
/// Protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Longest accepted line, newline excluded. A composite snapshot is about 2 KiB.
pub const MAX_LINE: usize = 64 * 1024;

/// The boot loop an emulator runs, as announced in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootLoopInfo {
    pub period_ms: u64,
    pub window_ms: u64,
}

/// The first line a client reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimHeader {
    pub format: String,
    pub version: u32,
    /// Process id of the emulator.
    pub pid: u32,
    /// Emulated unit profile (`rm502q`, `ec25-crash`, …).
    pub profile: String,
    #[serde(default)]
    pub boot_loop: Option<BootLoopInfo>,
}

impl SimHeader {
    pub fn new(pid: u32, profile: impl Into<String>, boot_loop: Option<BootLoopInfo>) -> Self {
        SimHeader {
            format: FORMAT.into(),
            version: VERSION,
            pid,
            profile: profile.into(),
            boot_loop,
        }
    }
}

/// Why the emulator ends a client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByeReason {
    /// The emulator is exiting.
    Stopped,
    /// The client did not read fast enough and was dropped (the emulator never waits for one).
    TooSlow,
}

/// One line after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireLine {
    Event(DeviceEvent),
    Bye(ByeReason),
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a line is longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("a line is not valid JSON: {0}")]
    NotJson(String),
    #[error("the first line is not a qrescue sim header: {0}")]
    NotHeader(String),
    #[error("the emulator speaks protocol version {0}; this qrescue speaks {VERSION}")]
    Version(u32),
    #[error("a line is not a device event: {0}")]
    NotEvent(String),
}

fn line(value: &impl Serialize) -> String {
    // Serialising our own plain structs cannot fail (string keys, no maps with other keys).
    let mut s = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// The header line (with its newline).
pub fn encode_header(h: &SimHeader) -> String {
    line(h)
}

/// An event line (with its newline).
pub fn encode_event(e: &DeviceEvent) -> String {
    line(e)
}

/// The closing line (with its newline).
pub fn encode_bye(reason: ByeReason) -> String {
    line(&serde_json::json!({"event": "bye", "reason": reason}))
}

fn json(line: &[u8]) -> Result<serde_json::Value, WireError> {
    if line.len() > MAX_LINE {
        return Err(WireError::TooLong { limit: MAX_LINE });
    }
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| WireError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(WireError::NotJson("not an object".into()));
    }
    Ok(v)
}

/// Parse the first line (without its newline).
pub fn decode_header(line: &[u8]) -> Result<SimHeader, WireError> {
    let v = json(line)?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(WireError::NotHeader(format!(
            "expected \"format\":\"{FORMAT}\""
        )));
    }
    let h: SimHeader =
        serde_json::from_value(v).map_err(|e| WireError::NotHeader(e.to_string()))?;
    if h.version != VERSION {
        return Err(WireError::Version(h.version));
    }
    Ok(h)
}

/// Parse a line after the header (without its newline).
pub fn decode_line(line: &[u8]) -> Result<WireLine, WireError> {
    let v = json(line)?;
    if v.get("event").and_then(|e| e.as_str()) == Some("bye") {
        let reason = v
            .get("reason")
            .cloned()
            .and_then(|r| serde_json::from_value(r).ok())
            .ok_or_else(|| WireError::NotEvent("bye without a known reason".into()))?;
        return Ok(WireLine::Bye(reason));
    }
    serde_json::from_value(v)
        .map(WireLine::Event)
        .map_err(|e| WireError::NotEvent(e.to_string()))
}

/// Splits a byte stream into lines of at most `max` bytes (a `\r` before the `\n` is dropped).
/// Memory stays bounded: a line that grows past `max` without a newline is an error as soon as
/// it is seen, so a caller that calls [`LineBuffer::next_line`] after every
/// [`LineBuffer::push`] holds at most `max` plus one read.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    max: usize,
}

impl LineBuffer {
    pub fn new(max: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a whole line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole line, if one is buffered.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let found = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
        match found {
            Some(i) => {
                let end = self.scanned + i;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                self.scanned = 0;
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max {
                    return Err(WireError::TooLong { limit: self.max });
                }
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max {
                    return Err(WireError::TooLong { limit: self.max });
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceChange, DeviceSnapshot};
    use proptest::prelude::*;

    fn snap() -> DeviceSnapshot {
        crate::sim::usb_ids::boot_rom_snapshot(
            &crate::sim::profile::Profile::by_name("ec25").unwrap(),
            Some(std::path::Path::new("/dev/pts/3")),
            4,
        )
    }

    #[test]
    fn header_events_and_bye_round_trip() {
        let h = SimHeader::new(
            42,
            "rm502q",
            Some(BootLoopInfo {
                period_ms: 1200,
                window_ms: 800,
            }),
        );
        let text = encode_header(&h);
        assert!(text.ends_with('\n') && !text[..text.len() - 1].contains('\n'));
        assert_eq!(decode_header(text.trim_end().as_bytes()).unwrap(), h);

        let appear = DeviceEvent {
            t_ms: 12,
            change: DeviceChange::Appear { device: snap() },
        };
        let vanish = DeviceEvent {
            t_ms: 812,
            change: DeviceChange::Vanish {
                location: snap().location(),
                last: Some(snap()),
            },
        };
        for e in [appear, vanish] {
            let text = encode_event(&e);
            assert!(text.contains("\"t_ms\""));
            assert_eq!(
                decode_line(text.trim_end().as_bytes()).unwrap(),
                WireLine::Event(e)
            );
        }
        for r in [ByeReason::Stopped, ByeReason::TooSlow] {
            let text = encode_bye(r);
            assert_eq!(
                decode_line(text.trim_end().as_bytes()).unwrap(),
                WireLine::Bye(r)
            );
        }
        assert_eq!(
            encode_bye(ByeReason::TooSlow),
            "{\"event\":\"bye\",\"reason\":\"too_slow\"}\n"
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(matches!(
            decode_line(b"not json"),
            Err(WireError::NotJson(_))
        ));
        assert!(matches!(decode_line(b"[1,2]"), Err(WireError::NotJson(_))));
        assert!(matches!(
            decode_line(b"{\"event\":\"appear\",\"t_ms\":1}"),
            Err(WireError::NotEvent(_))
        ));
        assert!(matches!(
            decode_line(b"{\"event\":\"bye\",\"reason\":\"tired\"}"),
            Err(WireError::NotEvent(_))
        ));
        assert!(matches!(
            decode_line(b"{\"event\":\"explode\",\"t_ms\":1}"),
            Err(WireError::NotEvent(_))
        ));
        assert!(matches!(
            decode_header(b"{\"t_ms\":1,\"event\":\"vanish\",\"location\":\"1-1\"}"),
            Err(WireError::NotHeader(_))
        ));
        assert!(matches!(
            decode_header(
                b"{\"format\":\"qrescue-sim-usb\",\"version\":2,\"pid\":1,\"profile\":\"x\"}"
            ),
            Err(WireError::Version(2))
        ));
        let long = vec![b' '; MAX_LINE + 1];
        assert!(matches!(decode_line(&long), Err(WireError::TooLong { .. })));
    }

    #[test]
    fn line_buffer_splits_and_bounds() {
        let mut b = LineBuffer::new(8);
        b.push(b"ab\r\ncd");
        assert_eq!(b.next_line().unwrap(), Some(b"ab".to_vec()));
        assert_eq!(b.next_line().unwrap(), None);
        b.push(b"e\n\n");
        assert_eq!(b.next_line().unwrap(), Some(b"cde".to_vec()));
        assert_eq!(b.next_line().unwrap(), Some(Vec::new()));
        assert_eq!(b.next_line().unwrap(), None);
        assert_eq!(b.pending(), 0);
        // Too long with no newline yet: refused before it grows further.
        b.push(b"123456789");
        assert!(matches!(
            b.next_line(),
            Err(WireError::TooLong { limit: 8 })
        ));
        // Too long with its newline in the same chunk.
        let mut b = LineBuffer::new(4);
        b.push(b"12345\nok\n");
        assert!(b.next_line().is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_line(&bytes);
            let _ = decode_header(&bytes);
        }

        #[test]
        fn decoding_json_shaped_text_never_panics(
            t in any::<u64>(),
            ev in "(appear|vanish|bye|x)",
            body in "[ -~]{0,80}",
        ) {
            let text = format!("{{\"t_ms\":{t},\"event\":\"{ev}\",\"location\":{body:?},\"device\":{body}}}");
            let _ = decode_line(text.as_bytes());
        }

        #[test]
        fn line_buffer_never_holds_more_than_a_line_and_a_chunk(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..64),
        ) {
            let mut b = LineBuffer::new(100);
            for c in chunks {
                b.push(&c);
                loop {
                    match b.next_line() {
                        Ok(Some(l)) => prop_assert!(l.len() <= 100),
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
                prop_assert!(b.pending() <= 100 + 64);
            }
        }
    }
}
