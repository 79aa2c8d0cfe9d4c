//! The wire format of a recording (described for people in `recordings/README.md`): line 1 is a
//! [`Header`], every further line one [`Event`] — a JSON object with a monotonic `t_ms` and a
//! `kind`. Pure types and small helpers; reading and writing live in [`super::reader`] and
//! [`super::writer`].

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::device::DeviceChange;
use crate::transport::{Framing, TransportError};

/// The `format` value of every recording's header.
pub const FORMAT: &str = "qrescue-recording";
/// The newest format version this build writes and reads.
pub const VERSION: u32 = 1;

/// Line 1 of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version ([`VERSION`] when written by this build).
    pub version: u32,
    /// The qrescue version that wrote it.
    pub tool_version: String,
    /// When recording started, RFC 3339 UTC (`2025-01-31T12:00:00Z`).
    pub created: String,
    /// What was replaced by pseudonyms.
    pub redaction: RedactionPolicy,
    /// Which payloads are stored readable and which only as length + sha256.
    pub payloads: PayloadPolicy,
    /// Free text: the command line, what the session was.
    #[serde(default)]
    pub note: String,
}

/// What the recorder redacted (see [`super::redact`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionPolicy {
    /// False when the recording was made with redaction off (tests only).
    pub enabled: bool,
    /// The rules applied, by name (`usb-serial`, `sn-in-product`, `sahara-serial`,
    /// `serial-in-text`, `imei`).
    #[serde(default)]
    pub rules: Vec<String>,
    /// How pseudonyms look.
    #[serde(default)]
    pub pseudonyms: String,
}

/// Payload storage thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadPolicy {
    /// Payloads up to this many bytes are stored readable (`text` or `hex`).
    pub inline_max: u64,
    /// Host→device *binary* payloads above this many bytes (programmer and partition images)
    /// are stored as length + sha256 even when under `inline_max`, so no firmware is recorded.
    pub out_binary_max: u64,
}

/// One line after the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since recording started (monotonic, never decreasing).
    pub t_ms: u64,
    #[serde(flatten)]
    pub body: Body,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    /// A device appeared or vanished (`event`: `appear` with `device`, or `vanish` with
    /// `location` and maybe `last`).
    Hotplug {
        #[serde(flatten)]
        change: DeviceChange,
    },
    /// A transport stream was opened.
    Open {
        stream: u32,
        describe: String,
        framing: FramingRecord,
    },
    /// The host wrote this.
    Out {
        stream: u32,
        #[serde(flatten)]
        data: Payload,
    },
    /// A host read returned this.
    In {
        stream: u32,
        #[serde(flatten)]
        data: Payload,
    },
    /// A read or write failed.
    Err {
        stream: u32,
        op: Op,
        error: ErrorClass,
        /// The timeout the call was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A phase label (`sahara`, `step 3 program system`).
    Mark {
        label: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<u32>,
    },
    /// The transport was closed (dropped).
    Close { stream: u32 },
}

impl Body {
    /// The stream a transport event belongs to.
    pub fn stream(&self) -> Option<u32> {
        match self {
            Body::Open { stream, .. }
            | Body::Out { stream, .. }
            | Body::In { stream, .. }
            | Body::Err { stream, .. }
            | Body::Close { stream } => Some(*stream),
            Body::Mark { stream, .. } => *stream,
            Body::Hotplug { .. } => None,
        }
    }

    /// The `kind` word.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Hotplug { .. } => "hotplug",
            Body::Open { .. } => "open",
            Body::Out { .. } => "out",
            Body::In { .. } => "in",
            Body::Err { .. } => "err",
            Body::Mark { .. } => "mark",
            Body::Close { .. } => "close",
        }
    }
}

/// [`Framing`] as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FramingRecord {
    Stream,
    Packet { max_packet_size: usize },
}

impl From<Framing> for FramingRecord {
    fn from(f: Framing) -> Self {
        match f {
            Framing::Stream => FramingRecord::Stream,
            Framing::Packet { max_packet_size } => FramingRecord::Packet { max_packet_size },
        }
    }
}

impl From<FramingRecord> for Framing {
    fn from(f: FramingRecord) -> Self {
        match f {
            FramingRecord::Stream => Framing::Stream,
            FramingRecord::Packet { max_packet_size } => Framing::Packet { max_packet_size },
        }
    }
}

/// Which call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Read,
    Write,
}

/// A [`TransportError`] without its OS details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    Timeout,
    Disconnected,
    Permission,
    Busy,
    Io,
}

impl ErrorClass {
    pub fn of(e: &TransportError) -> Self {
        match e {
            TransportError::Timeout { .. } => ErrorClass::Timeout,
            TransportError::Disconnected(_) => ErrorClass::Disconnected,
            TransportError::Permission(_) => ErrorClass::Permission,
            TransportError::Busy(_) => ErrorClass::Busy,
            TransportError::Io(_) => ErrorClass::Io,
        }
    }
}

/// Bytes of an `out` or `in` event: readable, or only their length and digest.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PayloadWire", into = "PayloadWire")]
pub enum Payload {
    /// UTF-8 text (XML, AT commands), stored as is.
    Text(String),
    /// Binary bytes (Sahara packets), stored as lowercase hex.
    Hex(Vec<u8>),
    /// A large payload: only its length and sha256 were kept.
    Digest { len: u64, sha256: [u8; 32] },
}

impl Payload {
    /// Readable form of `bytes`: text when it is printable UTF-8, else hex.
    pub fn inline(bytes: &[u8]) -> Payload {
        if is_text(bytes) {
            Payload::Text(String::from_utf8_lossy(bytes).into_owned())
        } else {
            Payload::Hex(bytes.to_vec())
        }
    }

    /// Length + sha256 of `bytes`.
    pub fn digest(bytes: &[u8]) -> Payload {
        Payload::Digest {
            len: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Payload::Text(t) => t.len() as u64,
            Payload::Hex(b) => b.len() as u64,
            Payload::Digest { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when they were stored.
    pub fn bytes(&self) -> Option<Cow<'_, [u8]>> {
        match self {
            Payload::Text(t) => Some(Cow::Borrowed(t.as_bytes())),
            Payload::Hex(b) => Some(Cow::Borrowed(b)),
            Payload::Digest { .. } => None,
        }
    }

    /// Whether `actual` is what this payload records (bytes equal, or length and sha256 equal).
    pub fn matches(&self, actual: &[u8]) -> bool {
        match self {
            Payload::Text(t) => t.as_bytes() == actual,
            Payload::Hex(b) => b == actual,
            Payload::Digest { len, sha256 } => {
                *len == actual.len() as u64 && *sha256 == <[u8; 32]>::from(Sha256::digest(actual))
            }
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Text(t) => write!(f, "text {t:?}"),
            Payload::Hex(b) => write!(f, "hex {}", hex::encode(b)),
            Payload::Digest { len, sha256 } => {
                write!(f, "{len} bytes, sha256 {}", hex::encode(sha256))
            }
        }
    }
}

/// True when `bytes` is UTF-8 made of printable characters, tabs and line ends: stored as text.
pub fn is_text(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(s) => s
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')),
        Err(_) => false,
    }
}

/// The JSON shape of a payload: exactly one of `text`, `hex`, `sha256`, plus `len`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PayloadWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    len: Option<u64>,
}

impl From<Payload> for PayloadWire {
    fn from(p: Payload) -> Self {
        let len = Some(p.len());
        match p {
            Payload::Text(t) => PayloadWire {
                text: Some(t),
                hex: None,
                sha256: None,
                len,
            },
            Payload::Hex(b) => PayloadWire {
                text: None,
                hex: Some(hex::encode(b)),
                sha256: None,
                len,
            },
            Payload::Digest { sha256, .. } => PayloadWire {
                text: None,
                hex: None,
                sha256: Some(hex::encode(sha256)),
                len,
            },
        }
    }
}

impl TryFrom<PayloadWire> for Payload {
    type Error = String;

    fn try_from(w: PayloadWire) -> Result<Self, Self::Error> {
        let p = match (w.text, w.hex, w.sha256) {
            (Some(t), None, None) => Payload::Text(t),
            (None, Some(h), None) => Payload::Hex(
                hex::decode(&h).map_err(|e| format!("`hex` is not valid hexadecimal: {e}"))?,
            ),
            (None, None, Some(s)) => {
                let len = w
                    .len
                    .ok_or("a `sha256` payload needs its `len`".to_string())?;
                let mut sha256 = [0u8; 32];
                hex::decode_to_slice(&s, &mut sha256)
                    .map_err(|_| "`sha256` must be 64 hexadecimal digits".to_string())?;
                return Ok(Payload::Digest { len, sha256 });
            }
            (None, None, None) => {
                return Err("the payload has none of `text`, `hex`, `sha256`".into());
            }
            _ => return Err("the payload has more than one of `text`, `hex`, `sha256`".into()),
        };
        if let Some(len) = w.len {
            if len != p.len() {
                return Err(format!(
                    "`len` is {len} but the payload holds {} bytes",
                    p.len()
                ));
            }
        }
        Ok(p)
    }
}

/// Format `t` (since the Unix epoch) as RFC 3339 UTC with second precision.
pub fn rfc3339_utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (the
/// well-known era-based conversion).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.
        let t = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(rfc3339_utc(t), "2000-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(rfc3339_utc(t), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn events_serialise_to_the_documented_shape() {
        let e = Event {
            t_ms: 12,
            body: Body::Out {
                stream: 1,
                data: Payload::Text("<nop/>".into()),
            },
        };
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(
            j,
            r#"{"t_ms":12,"kind":"out","stream":1,"text":"<nop/>","len":6}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), e);

        let e = Event {
            t_ms: 3,
            body: Body::In {
                stream: 2,
                data: Payload::digest(b"abc"),
            },
        };
        let j = serde_json::to_string(&e).unwrap();
        assert!(j.contains(r#""sha256":"ba7816bf"#), "{j}");
        assert!(j.contains(r#""len":3"#), "{j}");
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), e);
    }

    #[test]
    fn payload_shapes_are_checked() {
        let bad = [
            r#"{"t_ms":0,"kind":"in","stream":1}"#,
            r#"{"t_ms":0,"kind":"in","stream":1,"text":"a","hex":"00"}"#,
            r#"{"t_ms":0,"kind":"in","stream":1,"hex":"0g"}"#,
            r#"{"t_ms":0,"kind":"in","stream":1,"text":"ab","len":3}"#,
            r#"{"t_ms":0,"kind":"in","stream":1,"sha256":"00"}"#,
            r#"{"t_ms":0,"kind":"in","stream":1,"sha256":"00","len":1}"#,
        ];
        for b in bad {
            assert!(serde_json::from_str::<Event>(b).is_err(), "{b}");
        }
    }

    #[test]
    fn text_is_printable_utf8() {
        assert!(is_text(b"<?xml version=\"1.0\"?>\n<data/>\r\n\t"));
        assert!(is_text("über".as_bytes()));
        assert!(!is_text(&[1, 0, 0, 0, 0x30, 0, 0, 0]));
        assert!(!is_text(&[0xff, 0xfe]));
    }
}
