//! AT replies: splitting received bytes into lines, final result codes, and collecting one
//! command's reply with unsolicited result codes (URCs) set apart. Sans-IO.
//!
//! - Lines end at `\r`, `\n` or `\r\n`; empty lines are dropped. Lines longer than
//!   [`MAX_LINE`] bytes are cut; control characters are removed, so device text is safe to
//!   show in a terminal.
//! - A reply is: an optional echo of the command (when the modem has echo on), information
//!   lines, and one final result: `OK`, `ERROR`, `+CME ERROR: <n|text>`, `+CMS ERROR: <n|text>`,
//!   `NO CARRIER`, `NO ANSWER`, `NO DIALTONE`, `BUSY` or `CONNECT[ <text>]`. Numeric (ATV0)
//!   result codes are not recognised.
//! - URCs can arrive at any time, also in the middle of a reply (`RDY`, `+QIND: …`,
//!   `+CPIN: READY`, `+CFUN: 1` after boot …). A line is a URC when it starts with a known URC
//!   prefix ([`URC_PREFIXES`]) unless the command expects information lines with that prefix
//!   (`AT+CFUN?` expects `+CFUN:`).

use serde::Serialize;

use super::cme::{CmeError, CmsError};
use super::command::Command;

/// Longest line kept, in bytes; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 1024;
/// Most information lines kept per reply.
pub const MAX_LINES: usize = 256;
/// Most URCs kept per reply.
pub const MAX_URCS: usize = 64;

/// Prefixes of unsolicited result codes (Quectel start-up and status indications and the
/// common 3GPP TS 27.007/27.005 ones).
pub const URC_PREFIXES: &[&str] = &[
    "RDY",
    "+QIND:",
    "+CPIN:",
    "+QUSIM:",
    "+CFUN:",
    "+CREG:",
    "+CGREG:",
    "+CEREG:",
    "+C5GREG:",
    "+CGEV:",
    "+CTZV:",
    "+CTZE:",
    "+QNITZ:",
    "+CMTI:",
    "+CMT:",
    "+CDS:",
    "+CUSD:",
    "+CRING:",
    "RING",
    "+QIURC:",
    "+QSIMSTAT:",
    "POWERED DOWN",
    "NORMAL POWER DOWN",
];

/// Splits a byte stream into lines.
#[derive(Debug, Clone, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    cut: bool,
}

/// A received line as text: lossy UTF-8, control characters removed, trimmed, at most
/// [`MAX_LINE`] bytes.
fn to_text(bytes: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_LINE {
            break;
        }
        out.push(c);
    }
    out.trim().to_string()
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; return the complete, non-empty lines they finish.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                let line = to_text(&self.buf);
                self.buf.clear();
                self.cut = false;
                if !line.is_empty() {
                    out.push(line);
                }
            } else if self.buf.len() < MAX_LINE {
                self.buf.push(b);
            } else {
                self.cut = true;
            }
        }
        out
    }

    /// The unfinished line so far (a prompt such as `> ` never gets a line end).
    pub fn partial(&self) -> String {
        to_text(&self.buf)
    }

    /// Whether the unfinished line was cut at [`MAX_LINE`].
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Drop the unfinished line.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.cut = false;
    }
}

/// The final result code that ends a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum FinalResult {
    Ok,
    Error,
    CmeError(CmeError),
    CmsError(CmsError),
    NoCarrier,
    NoAnswer,
    NoDialtone,
    Busy,
    Connect { text: String },
}

impl FinalResult {
    /// Recognise a final result line.
    pub fn parse(line: &str) -> Option<FinalResult> {
        let l = line.trim();
        let upper = l.to_ascii_uppercase();
        Some(match upper.as_str() {
            "OK" => FinalResult::Ok,
            "ERROR" => FinalResult::Error,
            "NO CARRIER" => FinalResult::NoCarrier,
            "NO ANSWER" => FinalResult::NoAnswer,
            "NO DIALTONE" | "NO DIAL TONE" => FinalResult::NoDialtone,
            "BUSY" => FinalResult::Busy,
            _ => {
                if let Some(rest) = strip_prefix_ci(l, "+CME ERROR:") {
                    FinalResult::CmeError(CmeError::parse(rest))
                } else if let Some(rest) = strip_prefix_ci(l, "+CMS ERROR:") {
                    FinalResult::CmsError(CmsError::parse(rest))
                } else if upper == "CONNECT" || upper.starts_with("CONNECT ") {
                    FinalResult::Connect {
                        text: l[7..].trim().to_string(),
                    }
                } else {
                    return None;
                }
            }
        })
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, FinalResult::Ok)
    }
}

impl std::fmt::Display for FinalResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FinalResult::Ok => write!(f, "OK"),
            FinalResult::Error => write!(f, "ERROR"),
            FinalResult::CmeError(e) => write!(f, "{e}"),
            FinalResult::CmsError(e) => write!(f, "{e}"),
            FinalResult::NoCarrier => write!(f, "NO CARRIER"),
            FinalResult::NoAnswer => write!(f, "NO ANSWER"),
            FinalResult::NoDialtone => write!(f, "NO DIALTONE"),
            FinalResult::Busy => write!(f, "BUSY"),
            FinalResult::Connect { text } if text.is_empty() => write!(f, "CONNECT"),
            FinalResult::Connect { text } => write!(f, "CONNECT {text}"),
        }
    }
}

/// `line` without `prefix` (ASCII case-insensitive), or `None`.
pub(crate) fn strip_prefix_ci<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let n = prefix.len();
    if line.len() >= n && line.is_char_boundary(n) && line[..n].eq_ignore_ascii_case(prefix) {
        Some(&line[n..])
    } else {
        None
    }
}

/// Whether `line` is an unsolicited result code for a command that expects information lines
/// starting with `expected` (e.g. `+CFUN:`).
pub fn is_urc(line: &str, expected: Option<&str>) -> bool {
    if let Some(p) = expected {
        if strip_prefix_ci(line, p).is_some() {
            return false;
        }
    }
    URC_PREFIXES.iter().any(|p| {
        strip_prefix_ci(line, p).is_some_and(|rest| {
            // Word prefixes (RDY, RING) must be the whole line or followed by a space.
            p.ends_with(':') || rest.is_empty() || rest.starts_with(' ')
        })
    })
}

/// One command's complete reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// The command as sent.
    pub command: String,
    /// Whether the modem echoed the command.
    pub echoed: bool,
    /// Information lines, in order (no echo, no URCs, no final result).
    pub lines: Vec<String>,
    pub result: FinalResult,
    /// URCs that arrived while the reply was being collected.
    pub urcs: Vec<String>,
    /// Whether lines or URCs were dropped at the caps.
    pub truncated: bool,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The text after `prefix` (e.g. `+CSQ:`) on the first information line that has it.
    pub fn find(&self, prefix: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| strip_prefix_ci(l, prefix))
            .map(str::trim)
    }
}

/// Collects the lines of one command's reply.
#[derive(Debug, Clone)]
pub struct ReplyCollector {
    command: String,
    expected: Option<String>,
    echoed: bool,
    lines: Vec<String>,
    urcs: Vec<String>,
    truncated: bool,
}

impl ReplyCollector {
    pub fn new(command: &Command) -> Self {
        ReplyCollector {
            command: command.text().to_string(),
            expected: command.info_prefix(),
            echoed: false,
            lines: Vec::new(),
            urcs: Vec::new(),
            truncated: false,
        }
    }

    /// Take one line; returns the reply when the line is its final result.
    pub fn push_line(&mut self, line: &str) -> Option<Reply> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        if !self.echoed && self.lines.is_empty() && line.eq_ignore_ascii_case(&self.command) {
            self.echoed = true;
            return None;
        }
        if let Some(result) = FinalResult::parse(line) {
            return Some(Reply {
                command: self.command.clone(),
                echoed: self.echoed,
                lines: std::mem::take(&mut self.lines),
                result,
                urcs: std::mem::take(&mut self.urcs),
                truncated: self.truncated,
            });
        }
        let (list, cap) = if is_urc(line, self.expected.as_deref()) {
            (&mut self.urcs, MAX_URCS)
        } else {
            (&mut self.lines, MAX_LINES)
        };
        if list.len() < cap {
            list.push(line.to_string());
        } else {
            self.truncated = true;
        }
        None
    }

    /// URCs seen so far (for a reply that never completed).
    pub fn urcs(&self) -> &[String] {
        &self.urcs
    }

    /// Information lines seen so far (for a reply that never completed).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(cmd: &str, wire: &[u8]) -> (Option<Reply>, Vec<String>) {
        let c = Command::new(cmd).unwrap();
        let mut col = ReplyCollector::new(&c);
        let mut sp = LineSplitter::new();
        let mut reply = None;
        let mut after = Vec::new();
        for line in sp.push(wire) {
            if reply.is_none() {
                reply = col.push_line(&line);
            } else {
                after.push(line);
            }
        }
        (reply, after)
    }

    #[test]
    fn ati_with_echo_and_urcs() {
        let wire = b"ATI\r\r\nQuectel\r\nRDY\r\nEC25\r\n+QIND: SMS DONE\r\nRevision: EC25EFAR06A17M4G\r\n\r\nOK\r\n+CPIN: READY\r\n";
        let (r, after) = collect("ATI", wire);
        let r = r.unwrap();
        assert!(r.echoed);
        assert_eq!(r.lines, ["Quectel", "EC25", "Revision: EC25EFAR06A17M4G"]);
        assert_eq!(r.urcs, ["RDY", "+QIND: SMS DONE"]);
        assert_eq!(r.result, FinalResult::Ok);
        assert_eq!(after, ["+CPIN: READY"]);
    }

    #[test]
    fn expected_prefix_is_not_a_urc() {
        let (r, _) = collect("AT+CFUN?", b"\r\n+CFUN: 1\r\n+CPIN: READY\r\n\r\nOK\r\n");
        let r = r.unwrap();
        assert!(!r.echoed);
        assert_eq!(r.lines, ["+CFUN: 1"]);
        assert_eq!(r.urcs, ["+CPIN: READY"]);
        assert_eq!(r.find("+cfun:"), Some("1"));
        let (r, _) = collect("AT+CPIN?", b"+CPIN: READY\rOK\r");
        assert_eq!(r.unwrap().lines, ["+CPIN: READY"]);
    }

    #[test]
    fn final_results() {
        let cases = [
            ("OK", FinalResult::Ok),
            ("error", FinalResult::Error),
            ("NO CARRIER", FinalResult::NoCarrier),
            ("BUSY", FinalResult::Busy),
            (
                "CONNECT 150000000",
                FinalResult::Connect {
                    text: "150000000".into(),
                },
            ),
        ];
        for (l, want) in cases {
            assert_eq!(FinalResult::parse(l), Some(want.clone()), "{l}");
        }
        match FinalResult::parse("+CME ERROR: 10").unwrap() {
            FinalResult::CmeError(e) => assert_eq!(e.code, Some(10)),
            other => panic!("{other:?}"),
        }
        match FinalResult::parse("+CMS ERROR: 310").unwrap() {
            FinalResult::CmsError(e) => assert_eq!(e.code, Some(310)),
            other => panic!("{other:?}"),
        }
        assert_eq!(FinalResult::parse("OKAY"), None);
        assert_eq!(FinalResult::parse("CONNECTED"), None);
        assert_eq!(FinalResult::parse("+CSQ: 99,99"), None);
    }

    #[test]
    fn word_urcs_need_a_boundary() {
        assert!(is_urc("RDY", None));
        assert!(is_urc("RING", None));
        assert!(!is_urc("RINGBACK", None));
        assert!(!is_urc("RDYX", None));
        assert!(is_urc("+CREG: 1", None));
        assert!(!is_urc("+CREG: 0,1", Some("+CREG:")));
    }

    #[test]
    fn splitter_caps_and_cleans() {
        let mut sp = LineSplitter::new();
        let mut long = vec![b'A'; MAX_LINE + 500];
        long.extend_from_slice(b"\r\nOK\r\n");
        let lines = sp.push(&long);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "OK");
        assert_eq!(sp.push(b"x\x1b[2Jy\n"), ["x[2Jy"]);
        assert!(sp.push(b"> ").is_empty());
        assert_eq!(sp.partial(), ">");
    }

    #[test]
    fn error_reply_keeps_lines() {
        let (r, _) = collect("AT+CGSN", b"AT+CGSN\r\n+CME ERROR: memory failure\r\n");
        let r = r.unwrap();
        assert!(!r.is_ok());
        assert_eq!(r.result.to_string(), "+CME ERROR: memory failure");
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..3000), cuts in proptest::collection::vec(1usize..64, 0..30)) {
            let c = Command::new("AT+CSQ").unwrap();
            let mut col = ReplyCollector::new(&c);
            let mut sp = LineSplitter::new();
            let mut rest = &bytes[..];
            for n in cuts.into_iter().chain(std::iter::once(usize::MAX)) {
                let n = n.min(rest.len());
                for line in sp.push(&rest[..n]) {
                    prop_assert!(line.len() <= MAX_LINE);
                    prop_assert!(!line.chars().any(char::is_control));
                    if let Some(r) = col.push_line(&line) {
                        prop_assert!(r.lines.len() <= MAX_LINES);
                        prop_assert!(r.urcs.len() <= MAX_URCS);
                    }
                }
                rest = &rest[n..];
            }
            let _ = FinalResult::parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn reply_survives_any_chunking(info in proptest::collection::vec("[A-Za-z0-9 ,.:\"]{1,30}", 0..8), cut in 1usize..20, crlf in any::<bool>()) {
            let info: Vec<String> = info.into_iter().map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && FinalResult::parse(s).is_none() && !is_urc(s, None) && !s.eq_ignore_ascii_case("AT+QGMR"))
                .collect();
            let eol = if crlf { "\r\n" } else { "\r" };
            let mut wire = String::from("AT+QGMR\r");
            for l in &info { wire.push_str(eol); wire.push_str(l); wire.push_str(eol); }
            wire.push_str("\r\nOK\r\n");
            let c = Command::new("AT+QGMR").unwrap();
            let mut col = ReplyCollector::new(&c);
            let mut sp = LineSplitter::new();
            let mut got = None;
            for chunk in wire.as_bytes().chunks(cut) {
                for line in sp.push(chunk) {
                    if got.is_none() { got = col.push_line(&line); }
                }
            }
            let r = got.unwrap();
            prop_assert!(r.echoed);
            prop_assert_eq!(&r.lines, &info);
            prop_assert!(r.is_ok());
        }
    }
}
