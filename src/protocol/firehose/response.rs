//! What a Firehose programmer sends back: documents holding `<log value="…"/>` lines and/or one
//! `<response value="ACK|NAK" …/>` (PROTOCOLS.md §2.1, §2.3). Parsing tolerates both XML
//! declaration styles, whitespace and unknown elements, and returns errors for garbage; it never
//! panics.

use std::fmt;

use super::xml::{parse_elements, Limits, XmlError};

/// A `<response>`: ACK or NAK, the optional `rawmode`, and every attribute as sent (including
/// `value` and `rawmode`), e.g. MaxPayloadSizeToTargetInBytes on configure, AttemptRetry,
/// AttemptRestart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub ack: bool,
    pub rawmode: Option<bool>,
    pub attrs: Vec<(String, String)>,
}

impl Response {
    /// An attribute, ignoring ASCII case.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// A numeric attribute (decimal or 0x-hex); None when absent or not a number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_number)
    }

    /// The device asks the host to read again for the real answer (qdl-rs).
    pub fn attempt_retry(&self) -> bool {
        self.get("AttemptRetry").is_some()
    }

    /// The device asks for a restart (qdl-rs then sends power reset_to_edl).
    pub fn attempt_restart(&self) -> bool {
        self.get("AttemptRestart").is_some()
    }

    /// True for `ACK rawmode="true"`: raw data follows.
    pub fn starts_raw(&self) -> bool {
        self.ack && self.rawmode == Some(true)
    }
}

/// One message inside a device document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMessage {
    /// A `<log value="…"/>` line, as sent (e.g. `INFO: Calling handler for program`).
    Log(String),
    Response(Response),
}

/// Why a device document could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    Xml(XmlError),
    /// A `<response>` without a value attribute.
    MissingValue,
    /// A `<response value=…>` that is neither ACK nor NAK.
    UnknownValue(String),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Xml(e) => write!(f, "{e}"),
            ResponseError::MissingValue => write!(f, "a response without a value attribute"),
            ResponseError::UnknownValue(v) => {
                write!(f, "a response with value {v:?} (not ACK or NAK)")
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// Parse a number as programmers write them: decimal, or hex with `0x`.
pub fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// Parse one device document into its log lines and responses, in order. Unknown elements are
/// skipped (they are not errors: programmers add their own).
pub fn parse_device_document(doc: &[u8]) -> Result<Vec<DeviceMessage>, ResponseError> {
    let elements = parse_elements(doc, Limits::WIRE).map_err(ResponseError::Xml)?;
    let mut out = Vec::new();
    for e in elements {
        if e.name.eq_ignore_ascii_case("log") {
            if let Some(v) = e.get_ci("value") {
                out.push(DeviceMessage::Log(v.to_string()));
            }
        } else if e.name.eq_ignore_ascii_case("response") {
            let value = e.get_ci("value").ok_or(ResponseError::MissingValue)?;
            let ack = match value.trim().to_ascii_uppercase().as_str() {
                "ACK" => true,
                "NAK" => false,
                _ => {
                    return Err(ResponseError::UnknownValue(
                        value.chars().take(64).collect(),
                    ))
                }
            };
            let rawmode = e.get_ci("rawmode").and_then(parse_bool);
            out.push(DeviceMessage::Response(Response {
                ack,
                rawmode,
                attrs: e.attrs,
            }));
        }
    }
    Ok(out)
}

/// The device's answer to one command: logs before the response, the response, logs after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exchange {
    pub logs_before: Vec<String>,
    pub response: Option<Response>,
    pub logs_after: Vec<String>,
}

impl Exchange {
    /// Add a message. Returns the message back if it is a second response, which belongs to
    /// whatever comes next and must not be swallowed here.
    pub fn push(&mut self, msg: DeviceMessage) -> Option<DeviceMessage> {
        match msg {
            DeviceMessage::Log(l) if self.response.is_none() => self.logs_before.push(l),
            DeviceMessage::Log(l) => self.logs_after.push(l),
            DeviceMessage::Response(r) if self.response.is_none() => self.response = Some(r),
            other => return Some(other),
        }
        None
    }

    pub fn is_complete(&self) -> bool {
        self.response.is_some()
    }

    /// Every log line of this exchange, before and after the response.
    pub fn logs(&self) -> impl Iterator<Item = &String> {
        self.logs_before.iter().chain(self.logs_after.iter())
    }

    /// Owned copy of all logs, in order.
    pub fn all_logs(&self) -> Vec<String> {
        self.logs().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_real_configure_ack() {
        let doc = b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<data>\n<response value=\"ACK\" MemoryName=\"UFS\" MinVersionSupported=\"1\" Version=\"1\" MaxPayloadSizeToTargetInBytes=\"1048576\" MaxPayloadSizeToTargetInBytesSupported=\"1048576\" MaxXMLSizeInBytes=\"4096\" DateTime=\"Jul 19 2024 - 00:02:03\" />\n</data>";
        let m = parse_device_document(doc).unwrap();
        assert_eq!(m.len(), 1);
        let DeviceMessage::Response(r) = &m[0] else {
            panic!()
        };
        assert!(r.ack);
        assert_eq!(r.rawmode, None);
        assert_eq!(r.get_u64("MaxPayloadSizeToTargetInBytes"), Some(1048576));
        assert_eq!(r.get("memoryname"), Some("UFS"));
        assert_eq!(r.get("DateTime"), Some("Jul 19 2024 - 00:02:03"));
    }

    #[test]
    fn logs_and_nak_in_one_document_and_declaration_styles() {
        let doc = b"  <?xml version=\"1.0\" ?>\r\n<data>\r\n <log value=\"start_sector unaligned\"/>\r\n <response value=\"nak\" rawmode=\"FALSE\"/>\r\n</data>";
        let m = parse_device_document(doc).unwrap();
        assert_eq!(m[0], DeviceMessage::Log("start_sector unaligned".into()));
        let DeviceMessage::Response(r) = &m[1] else {
            panic!()
        };
        assert!(!r.ack);
        assert_eq!(r.rawmode, Some(false));
        let bare =
            parse_device_document(b"<data><response value=\"ACK\" rawmode=\"true\" /></data>")
                .unwrap();
        let DeviceMessage::Response(r) = &bare[0] else {
            panic!()
        };
        assert!(r.starts_raw());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_device_document(b"\xff\xfe<data><response/></data>").is_err());
        assert_eq!(
            parse_device_document(b"<data><response rawmode=\"true\"/></data>"),
            Err(ResponseError::MissingValue)
        );
        assert!(matches!(
            parse_device_document(b"<data><response value=\"MAYBE\"/></data>"),
            Err(ResponseError::UnknownValue(_))
        ));
        assert!(parse_device_document(b"<data><log value=\"x\"></data>").is_err());
        assert_eq!(
            parse_device_document(b"<data><foo a=\"1\"/></data>").unwrap(),
            vec![]
        );
    }

    #[test]
    fn retry_and_restart_flags() {
        let m =
            parse_device_document(b"<data><response value=\"NAK\" AttemptRestart=\"1\"/></data>")
                .unwrap();
        let DeviceMessage::Response(r) = &m[0] else {
            panic!()
        };
        assert!(r.attempt_restart());
        assert!(!r.attempt_retry());
    }

    #[test]
    fn exchange_collects_logs_before_and_after() {
        let mut x = Exchange::default();
        assert!(x.push(DeviceMessage::Log("a".into())).is_none());
        let r = Response {
            ack: true,
            rawmode: None,
            attrs: vec![],
        };
        assert!(x.push(DeviceMessage::Response(r.clone())).is_none());
        assert!(x.push(DeviceMessage::Log("b".into())).is_none());
        assert!(x.is_complete());
        assert_eq!(
            x.push(DeviceMessage::Response(r.clone())),
            Some(DeviceMessage::Response(r))
        );
        assert_eq!(x.all_logs(), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0x10"), Some(16));
        assert_eq!(parse_number(" 42 "), Some(42));
        assert_eq!(parse_number("-1"), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_device_document(&bytes);
        }

        #[test]
        fn never_panics_on_xmlish(s in "(<data>|</data>|<log value=\"[a-zA-Z :0-9]{0,12}\"/>|<response |value=\"(ACK|NAK|x)\" |rawmode=\"(true|false|q)\" |/>|<\\?xml version=\"1.0\" \\?>|[ \n<>=\"a-z]){0,40}") {
            let _ = parse_device_document(s.as_bytes());
        }
    }
}
