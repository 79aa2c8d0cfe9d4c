//! The error explainer: what a line from a flasher, a programmer, the kernel or an AT port means
//! in plain words, how bad it is, and what to do next (USERS.md §2, issue 7 item 6).
//!
//! [`explain`] reads one line; [`explain_all`] reads a whole pasted log and follows its phase
//! (Sahara handshake, Firehose, a reboot after `<power value="reset"/>`, the drain after the
//! programmer's welcome logs …), because the same text means different things at different
//! moments: `errno = 110 (Connection timed out)` is harmless right after "End of supported
//! functions", a reboot in progress after a reset, and a dead link during the handshake.
//!
//! Lines that look like failures but are harmless (QFirehose's `/data/update.conf` pipe, the
//! version probe that "fails" before the modem is ready, bad-block notes, payload renegotiation)
//! are [`Severity::Benign`], so a console never shows them as failures. Every entry names the
//! USERS.md section (or public document) its meaning comes from.
//!
//! Untrusted text: no I/O, nothing panics, lines are cut at [`MAX_LINE`] bytes so the work per
//! line is bounded, and the table is matched with plain substring searches (no regex engine).

use serde::Serialize;

mod table;

pub use table::rule_ids;

/// Lines longer than this (bytes) are cut before matching.
pub const MAX_LINE: usize = 4096;

/// How bad a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A normal state or progress line worth naming (e.g. "Upgrade module successfully.").
    Info,
    /// Looks like a failure but is harmless; never shown as one.
    Benign,
    /// Worth watching; on its own not a failure.
    Warning,
    /// This step failed; fixing the named cause and retrying can work.
    Error,
    /// Stop: retrying will not help (wrong package, refused programmer, broken flash).
    Fatal,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Benign => "harmless",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }

    /// Warning and worse: something a person should read.
    pub fn is_problem(self) -> bool {
        self >= Severity::Warning
    }
}

/// Where a line comes from, or which phase a session is in; decides what ambiguous text means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Context {
    /// Unknown origin.
    Any,
    /// A host talking Sahara to the boot ROM (handshake, programmer upload).
    Sahara,
    /// A Firehose programmer is running (its `<log>` lines, NAKs, the host's commands).
    Firehose,
    /// After the programmer's welcome logs ("End of supported functions"), before the next
    /// command: a read timeout here only means the logs are drained.
    AfterWelcome,
    /// After `<power value="reset"/>` or a DIAG→EDL switch: the modem is rebooting, so the link
    /// dropping is expected.
    Rebooting,
    /// A kernel log (dmesg, journalctl -k).
    Kernel,
    /// Replies on an AT port.
    At,
}

/// The plain-words reading of one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Stable identifier of the table entry (tests, `--json`, recordings).
    pub id: &'static str,
    pub severity: Severity,
    /// What the line means, in a few words.
    pub title: String,
    /// Why it happens, in plain words.
    pub cause: String,
    /// What to do next.
    pub next: String,
    /// Where the meaning comes from: the USERS.md / PROTOCOLS.md section and public thread.
    pub source: &'static str,
    /// A number taken from the line (errno, kernel error, status or CME code) when useful.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The line carries no cause of its own (a final status or a generic "fail" wrapper): the
    /// real cause is an earlier line.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub generic: bool,
}

impl Explanation {
    pub fn is_benign(&self) -> bool {
        self.severity == Severity::Benign
    }

    /// One line for people: `meaning: <title>. <cause>. next: <next>`.
    pub fn one_line(&self) -> String {
        let mut s = format!("meaning: {}", self.title.trim_end_matches('.'));
        if !self.cause.is_empty() {
            s.push_str(&format!(". {}", self.cause.trim_end_matches('.')));
        }
        if !self.next.is_empty() {
            s.push_str(&format!(". next: {}", self.next));
        }
        s
    }
}

/// One explained line of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// 0-based index of the line in the input.
    pub line_no: usize,
    /// The line (cut at [`MAX_LINE`]).
    pub line: String,
    /// The context it was read in.
    pub context: Context,
    pub explanation: Explanation,
}

/// Cut `text` to at most [`MAX_LINE`] bytes on a character boundary.
fn cap(text: &str) -> &str {
    if text.len() <= MAX_LINE {
        return text;
    }
    let mut end = MAX_LINE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A line prepared for matching: the text as given and its ASCII-lowercase copy.
pub(crate) struct Line<'a> {
    pub raw: &'a str,
    pub lower: String,
}

/// `[ 3756.220927] usb 2-1: …` or `… kernel: usb 2-1: …` (journalctl).
fn looks_like_kernel(line: &str) -> bool {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let stamp = rest[..end].trim();
            let body = rest[end + 1..].trim_start();
            let is_stamp = !stamp.is_empty()
                && stamp.len() <= 20
                && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
                && stamp.contains('.');
            // QFirehose prints `[004.281]: …` (with a colon): not a kernel line.
            return is_stamp && !body.starts_with(':');
        }
    }
    t.contains(" kernel: ")
}

/// Explain one line read in `context`; `None` when the line is not known (most lines).
pub fn explain(text: &str, context: Context) -> Option<Explanation> {
    let raw = cap(text);
    let line = Line {
        raw,
        lower: raw.to_ascii_lowercase(),
    };
    let context = if looks_like_kernel(raw) {
        Context::Kernel
    } else {
        context
    };
    table::lookup(&line, context)
}

/// Follows the phase of a log line by line (see [`Context`]).
#[derive(Debug, Clone)]
pub struct Tracker {
    current: Context,
}

/// Host commands to a programmer: once one is sent, the session is in Firehose proper.
const FIREHOSE_COMMANDS: &[&str] = &[
    "<program",
    "<configure",
    "<erase",
    "<read ",
    "<patch",
    "<getstorageinfo",
    "<nop",
    "<getsha256digest",
    "<setbootablestoragedrive",
];

impl Tracker {
    pub fn new(start: Context) -> Self {
        Tracker { current: start }
    }

    pub fn current(&self) -> Context {
        self.current
    }

    /// The context to read `line` in; updates the phase for the lines that follow.
    pub fn step(&mut self, line: &str) -> Context {
        let raw = cap(line);
        if looks_like_kernel(raw) {
            return Context::Kernel;
        }
        let lower = raw.to_ascii_lowercase();
        let has = |n: &str| lower.contains(n);
        // Markers that put this very line in a phase.
        if has("sahara") || has("hello packet") {
            self.current = Context::Sahara;
        } else if FIREHOSE_COMMANDS.iter().any(|c| has(c))
            || matches!(self.current, Context::Any | Context::Sahara)
                && (has("<log value") || has("<response value"))
        {
            self.current = Context::Firehose;
        } else if is_at_command(raw) {
            self.current = Context::At;
        }
        let this = self.current;
        // Markers that change the phase of the following lines.
        if has("power value=\"reset")
            || has("switch to 'emergency download mode'")
            || has("wait module reboot")
        {
            self.current = Context::Rebooting;
        } else if has("end of supported functions") {
            self.current = Context::AfterWelcome;
        }
        this
    }
}

/// `AT`, `AT+CFUN?`, `AT&F`: a command typed on an AT port.
fn is_at_command(line: &str) -> bool {
    let t = line.trim();
    match t.strip_prefix("AT").or_else(|| t.strip_prefix("at")) {
        Some(rest) => rest.is_empty() || rest.starts_with(['+', '&', 'I', 'i']),
        None => false,
    }
}

/// Explain every line of a log, starting with no assumption about its origin.
pub fn explain_all<I, S>(lines: I) -> Vec<Finding>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    explain_all_from(lines, Context::Any)
}

/// Explain every line of a log whose first line is read in `start`; the phase is followed line
/// by line ([`Tracker`]). Only known lines are returned.
pub fn explain_all_from<I, S>(lines: I, start: Context) -> Vec<Finding>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut tracker = Tracker::new(start);
    let mut out = Vec::new();
    for (line_no, l) in lines.into_iter().enumerate() {
        let l = cap(l.as_ref());
        let context = tracker.step(l);
        if let Some(explanation) = explain(l, context) {
            out.push(Finding {
                line_no,
                line: l.to_string(),
                context,
                explanation,
            });
        }
    }
    out
}

/// The first finding that names a real cause: an error or worse that is not a generic wrapper
/// ("Upgrade module failed.", "main 366 fail"); USERS.md §2.1 asks to show that one.
pub fn first_cause(findings: &[Finding]) -> Option<&Finding> {
    findings
        .iter()
        .find(|f| f.explanation.severity >= Severity::Error && !f.explanation.generic)
        .or_else(|| {
            findings
                .iter()
                .find(|f| f.explanation.severity == Severity::Warning)
        })
        .or_else(|| {
            findings
                .iter()
                .find(|f| f.explanation.severity >= Severity::Error)
        })
}

/// Whether `e` carries text a device or the OS wrote (not qrescue's own words): OS and transport
/// errors (kernel messages, errno texts, USB open failures), Sahara session errors (the boot
/// ROM's status codes), Firehose responses (the programmer's own documents), AT replies
/// (`+CME ERROR`, final results) and DIAG replies.
fn is_device_or_os_text(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        // An OS error, or one made around a device error; not a message qrescue wrapped.
        return match io.get_ref() {
            None => true,
            Some(inner) => is_device_or_os_text(inner),
        };
    }
    e.is::<nix::errno::Errno>()
        || e.is::<crate::transport::TransportError>()
        || e.is::<crate::transport::usb::UsbOpenError>()
        || e.is::<crate::protocol::sahara::HostError>()
        || e.is::<crate::protocol::firehose::ResponseError>()
        || e.is::<crate::protocol::at::AtError>()
        || e.is::<crate::protocol::diag::packet::DiagError>()
}

/// Most links of a source chain looked at.
const MAX_CHAIN: usize = 8;

/// A reading of the device's or the OS's own words behind a qrescue error — the text of its
/// lower-level causes ([`crate::Error::source`] and their sources) that a device, a programmer,
/// the kernel or an AT port wrote — when it adds something: a problem, not a generic wrapper,
/// and not what the error already says (errors built from the Firehose table carry that table's
/// words already).
///
/// qrescue's own sentences (`what`, `why`, and causes that are qrescue errors or qrescue's own
/// parse errors) are never read: a warning such as "the modem would sit in +CFUN: 5" must not
/// be "explained" as if the modem had answered it.
pub fn explain_error(e: &crate::Error) -> Option<Explanation> {
    let mut texts = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    for _ in 0..MAX_CHAIN {
        let Some(cause) = next else { break };
        if is_device_or_os_text(cause) {
            texts.push(cause.to_string());
        }
        next = cause.source();
    }
    texts
        .iter()
        .filter_map(|t| explain(t, Context::Any))
        .find(|x| x.severity.is_problem() && !x.generic && x.title != e.what && x.next != e.next)
}

/// The explanation shown with an engine event: a `log` event whose message is known and not
/// harmless (engine messages and device lines it passes on are read as Firehose-phase text).
pub fn explain_event(e: &crate::engine::events::EngineEvent) -> Option<Explanation> {
    match e {
        crate::engine::events::EngineEvent::Log { message } => {
            explain(message, Context::Firehose).filter(|x| !x.is_benign())
        }
        _ => None,
    }
}

/// An engine event as `--json` prints it: the event object, plus an `explanation` object when
/// [`explain_event`] has one.
pub fn event_json(e: &crate::engine::events::EngineEvent) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or(serde_json::Value::Null);
    if let (Some(x), Some(obj)) = (explain_event(e), v.as_object_mut()) {
        obj.insert("explanation".into(), serde_json::json!(x));
    }
    v
}

/// The worst severity among `findings` (None when there are none).
pub fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.explanation.severity).max()
}

#[cfg(test)]
mod tests;
