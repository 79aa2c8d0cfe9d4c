//! An AT client over a [`Transport`] (the modem's AT port in normal mode): one command at a
//! time, a bounded wait per command, URCs kept apart, and a refusal to send commands that
//! change the USB composition or restart the modem unless explicitly allowed. The protocol
//! itself lives in [`crate::protocol::at`].
//!
//! [`AtSession::identify`] takes the normal-mode identity record USERS.md §2 asks for (ATI,
//! AT+QGMR with AT+CGMR as fallback, AT+CGSN, AT+QCCID, AT+CFUN?, AT+QCFG="usbnet"). It only
//! reads: it never changes the echo setting, the functionality level or anything else.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::protocol::at::reply::is_urc;
use crate::protocol::at::{
    self, AtError, Cfun, Command, FinalResult, FirmwareRevision, Iccid, Imei, LineSplitter, Reply,
    ReplyCollector, UsbNet,
};
use crate::transport::{Transport, TransportError};

/// Waits used by [`AtSession`] besides the per-command reply wait
/// ([`Command::default_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtTimeouts {
    /// Most time for one write.
    pub write: Duration,
    /// Resynchronising (at the start and after a command went unanswered) reads until the port
    /// has been quiet this long …
    pub resync_quiet: Duration,
    /// … or this long in total.
    pub resync_max: Duration,
}

impl Default for AtTimeouts {
    fn default() -> Self {
        AtTimeouts {
            write: Duration::from_secs(2),
            resync_quiet: Duration::from_millis(150),
            resync_max: Duration::from_secs(2),
        }
    }
}

/// Most URCs the session keeps (oldest dropped first).
pub const MAX_SESSION_URCS: usize = 256;

/// An AT client on one AT port.
pub struct AtSession<T: Transport> {
    t: T,
    splitter: LineSplitter,
    timeouts: AtTimeouts,
    allow_usb_change: bool,
    resync: bool,
    urcs: VecDeque<String>,
}

impl<T: Transport> AtSession<T> {
    pub fn new(t: T) -> Self {
        Self::with_timeouts(t, AtTimeouts::default())
    }

    pub fn with_timeouts(t: T, timeouts: AtTimeouts) -> Self {
        AtSession {
            t,
            splitter: LineSplitter::new(),
            timeouts,
            allow_usb_change: false,
            resync: true,
            urcs: VecDeque::new(),
        }
    }

    /// Allow commands that change the USB composition or restart the modem
    /// ([`Command::usb_impact`]); refused by default.
    pub fn allow_usb_change(mut self, allow: bool) -> Self {
        self.allow_usb_change = allow;
        self
    }

    /// URCs seen so far (oldest first).
    pub fn urcs(&self) -> Vec<String> {
        self.urcs.iter().cloned().collect()
    }

    /// Take the URCs seen so far.
    pub fn take_urcs(&mut self) -> Vec<String> {
        self.urcs.drain(..).collect()
    }

    pub fn into_inner(self) -> T {
        self.t
    }

    fn note_urc(&mut self, line: String) {
        if self.urcs.len() >= MAX_SESSION_URCS {
            self.urcs.pop_front();
        }
        self.urcs.push_back(line);
    }

    /// A line that arrived outside any reply: keep it if it is a URC, log it otherwise.
    fn stray(&mut self, line: String) {
        if is_urc(&line, None) {
            self.note_urc(line);
        } else {
            tracing::debug!(target: "qrescue::at", "ignored stray line {line:?}");
        }
    }

    /// Read until the port is quiet (bounded), keeping URCs; drops what belonged to earlier,
    /// unanswered commands.
    fn resynchronise(&mut self) -> Result<(), Error> {
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            let left = self.timeouts.resync_max.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            match self.t.read(&mut buf, self.timeouts.resync_quiet.min(left)) {
                Ok(n) => {
                    for line in self.splitter.push(&buf[..n]) {
                        self.stray(line);
                    }
                }
                Err(TransportError::Timeout { .. }) => break,
                Err(e) => return Err(self.transport_error(e, "reading the AT port")),
            }
        }
        self.splitter.reset();
        self.resync = false;
        Ok(())
    }

    /// Parse and send `text` with its default wait.
    pub fn run(&mut self, text: &str) -> Result<Reply, Error> {
        let cmd = Command::new(text).map_err(at_error)?;
        self.send(&cmd)
    }

    /// Send `cmd` and wait [`Command::default_timeout`] for its reply.
    pub fn send(&mut self, cmd: &Command) -> Result<Reply, Error> {
        self.send_with_timeout(cmd, cmd.default_timeout())
    }

    /// Send `cmd` and wait at most `timeout` for its complete reply. A reply with `ERROR` or
    /// `+CME ERROR` is returned as `Ok` (it is an answer); transport trouble, a missing answer
    /// and a refused composition change are errors.
    pub fn send_with_timeout(&mut self, cmd: &Command, timeout: Duration) -> Result<Reply, Error> {
        if let Some(impact) = cmd.usb_impact() {
            if !self.allow_usb_change {
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!("Refused to send {}", cmd.text()),
                    format!(
                        "{}. A wrong value can leave the modem without a reachable AT port (USERS.md §17)",
                        impact.reason()
                    ),
                    "Record the current composition first (the identity record has usbnet); if you mean it, allow USB changes explicitly and be ready to find the ports on other interfaces",
                ));
            }
            tracing::warn!(target: "qrescue::at", "sending {} ({})", cmd.text(), impact.reason());
        }
        if self.resync {
            self.resynchronise()?;
        }
        let what = format!("sending {}", cmd.text());
        self.t
            .write(&cmd.to_bytes(), self.timeouts.write)
            .map_err(|e| {
                self.resync = true;
                self.transport_error(e, &what)
            })?;
        let mut collector = ReplyCollector::new(cmd);
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let read = if left.is_zero() {
                Err(TransportError::Timeout {
                    op: "receive the reply",
                    after: timeout,
                })
            } else {
                self.t.read(&mut buf, left)
            };
            match read {
                Ok(n) => {
                    let mut reply = None;
                    for line in self.splitter.push(&buf[..n]) {
                        if reply.is_none() {
                            reply = collector.push_line(&line);
                        } else {
                            self.stray(line);
                        }
                    }
                    if let Some(r) = reply {
                        for u in &r.urcs {
                            self.note_urc(u.clone());
                        }
                        tracing::debug!(target: "qrescue::at", "{} -> {} ({} lines)", cmd.text(), r.result, r.lines.len());
                        return Ok(r);
                    }
                }
                Err(TransportError::Timeout { .. }) => {
                    self.resync = true;
                    for u in collector.urcs().to_vec() {
                        self.note_urc(u);
                    }
                    let seen = collector.lines();
                    let why = if seen.is_empty() {
                        format!(
                            "{} sent no final result within {} ms",
                            self.t.describe(),
                            timeout.as_millis()
                        )
                    } else {
                        format!(
                            "{} sent {} line(s) ({:?}…) but no final result within {} ms",
                            self.t.describe(),
                            seen.len(),
                            seen[0],
                            timeout.as_millis()
                        )
                    };
                    return Err(Error::failure(
                        format!("No complete answer to {}", cmd.text()),
                        why,
                        "Check that this is the modem's AT port (interface 2 on most Quectel modules; other interfaces in RNDIS mode) and that no other program uses it, then retry",
                    ));
                }
                Err(e) => {
                    self.resync = true;
                    return Err(self.transport_error(e, &what));
                }
            }
        }
    }

    /// Send `text` and parse the reply with `parse`; an error reply or an unparsable one is an
    /// error for people.
    pub fn query<V>(
        &mut self,
        text: &str,
        parse: fn(&Reply) -> Result<V, AtError>,
    ) -> Result<V, Error> {
        let reply = self.run(text)?;
        parse(&reply).map_err(at_error)
    }

    fn transport_error(&self, e: TransportError, during: &str) -> Error {
        let port = self.t.describe();
        match e {
            TransportError::Disconnected(d) => Error::new(
                ErrorKind::DeviceLost,
                format!("The AT port went away while {during}"),
                format!("{port}: {d}. The modem reset or was unplugged"),
                "Check what the modem shows up as now (qrescue watch) and start again from there",
            ),
            TransportError::Permission(d) => Error::new(
                ErrorKind::Permission,
                format!("Permission denied on the AT port while {during}"),
                format!("{port}: {d}"),
                "Give your user access to the modem's ports (udev rule or the dialout group) or run with the needed rights",
            ),
            TransportError::Busy(d) => Error::failure(
                format!("The AT port is busy while {during}"),
                format!("{port}: {d}. Another program (ModemManager, a router daemon) holds it"),
                "Stop the program that holds the port and retry",
            ),
            TransportError::Timeout { after, .. } => Error::failure(
                format!("The AT port did not take our data while {during}"),
                format!("{port}: a write did not finish within {} ms", after.as_millis()),
                "Check the cable and that this is the modem's AT port, then retry",
            ),
            TransportError::Io(io) => Error::failure(
                format!("An I/O error on the AT port while {during}"),
                format!("{port}: {io}"),
                "Check the cable and port, then retry",
            ),
        }
    }

    // ----- identity -----------------------------------------------------------------------

    fn probe<V>(
        &mut self,
        id: &mut NormalIdentity,
        field: &str,
        text: &str,
        parse: fn(&Reply) -> Result<V, AtError>,
        lost: &mut bool,
    ) -> Option<V> {
        if *lost {
            id.problems.push(IdentityProblem {
                field: field.to_string(),
                command: text.to_string(),
                error: "not asked: the AT port went away".to_string(),
                advice: None,
            });
            return None;
        }
        let result = match self.run(text) {
            Ok(reply) => parse(&reply).map_err(|e| {
                let advice = advice_for(&e);
                (e.to_string(), advice)
            }),
            Err(e) => {
                *lost |= e.kind == ErrorKind::DeviceLost;
                Err((format!("{} ({})", e.what, e.why), None))
            }
        };
        match result {
            Ok(v) => Some(v),
            Err((error, advice)) => {
                id.problems.push(IdentityProblem {
                    field: field.to_string(),
                    command: text.to_string(),
                    error,
                    advice: advice.map(str::to_string),
                });
                None
            }
        }
    }

    /// Take the normal-mode identity record. Never fails as a whole: each field is `None` when
    /// its command failed, with the reason in [`NormalIdentity::problems`].
    pub fn identify(&mut self) -> NormalIdentity {
        let mut id = NormalIdentity::default();
        let mut lost = false;
        if let Some(ati) = self.probe(&mut id, "model", "ATI", at::parse_ati, &mut lost) {
            id.manufacturer = ati.manufacturer;
            id.model = ati.model;
            id.revision = ati.revision.map(|text| FirmwareRevision { text });
        }
        // AT+QGMR gives the full revision with its sub-version; very old firmware answers ERROR
        // and needs AT+CGMR (USERS.md §2.9).
        let mut rev_problems = NormalIdentity::default();
        let detailed = self
            .probe(
                &mut rev_problems,
                "revision",
                "AT+QGMR",
                at::parse_revision,
                &mut lost,
            )
            .or_else(|| {
                self.probe(
                    &mut rev_problems,
                    "revision",
                    "AT+CGMR",
                    at::parse_revision,
                    &mut lost,
                )
            });
        match detailed {
            Some(r) => id.revision = Some(r),
            None if id.revision.is_none() => id.problems.extend(rev_problems.problems),
            None => {}
        }
        id.imei = self.probe(&mut id, "imei", "AT+CGSN", at::parse_imei, &mut lost);
        id.iccid = self.probe(&mut id, "iccid", "AT+QCCID", at::parse_iccid, &mut lost);
        id.cfun = self.probe(&mut id, "cfun", "AT+CFUN?", at::parse_cfun, &mut lost);
        id.usbnet = self.probe(
            &mut id,
            "usbnet",
            "AT+QCFG=\"usbnet\"",
            at::parse_usbnet,
            &mut lost,
        );
        id.urcs = self.urcs();
        id
    }
}

/// Plain advice for known failures (USERS.md §2.9).
fn advice_for(e: &AtError) -> Option<&'static str> {
    match e {
        AtError::Failed {
            command,
            result: FinalResult::CmeError(c),
        } if command.eq_ignore_ascii_case("AT+CGSN") && c.is(23) => {
            Some("IMEI missing: restore it from this unit's own backup or its label")
        }
        AtError::Failed {
            result: FinalResult::CmeError(c),
            ..
        } if c.is(10) => Some("No SIM card inserted (not a firmware problem)"),
        _ => None,
    }
}

fn at_error(e: AtError) -> Error {
    match &e {
        AtError::BadCommand { .. } => Error::usage(
            e.to_string(),
            "Give one AT command line in printable ASCII starting with AT",
        )
        .with_source(e),
        AtError::Failed { command, result } => {
            let why = advice_for(&e)
                .map(str::to_string)
                .unwrap_or_else(|| format!("The modem answered {result}"));
            Error::failure(
                format!("The modem refused {command}"),
                why,
                "See the modem's answer; a SIM or network error is not a firmware problem",
            )
            .with_source(e.clone())
        }
        AtError::Missing { .. } | AtError::Malformed { .. } => Error::failure(
            "The modem's AT answer could not be read",
            e.to_string(),
            "Retry; if it repeats, this firmware words its answer differently, please report the model and firmware",
        )
        .with_source(e),
    }
}

/// One identity field that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityProblem {
    /// Which field (`model`, `revision`, `imei`, `iccid`, `cfun`, `usbnet`).
    pub field: String,
    /// The command that failed.
    pub command: String,
    /// What went wrong.
    pub error: String,
    /// What it means, when known.
    pub advice: Option<String>,
}

/// The identity of a modem in normal mode, as read over its AT port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalIdentity {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    /// From AT+QGMR, else AT+CGMR, else ATI's `Revision:` line.
    pub revision: Option<FirmwareRevision>,
    pub imei: Option<Imei>,
    pub iccid: Option<Iccid>,
    pub cfun: Option<Cfun>,
    pub usbnet: Option<UsbNet>,
    /// The fields that could not be read, and why.
    pub problems: Vec<IdentityProblem>,
    /// URCs seen while identifying (e.g. `+CPIN: NOT INSERTED`).
    pub urcs: Vec<String>,
}

impl NormalIdentity {
    /// Plain-words warnings about what the record shows (USERS.md §1, §2, §2.9, §17).
    pub fn advice(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(a) = self.cfun.and_then(|c| c.advice()) {
            out.push(a.to_string());
        }
        if self.imei.as_ref().is_some_and(|i| !i.luhn_ok) {
            out.push(
                "The IMEI fails its check digit: it may be damaged; compare it with the label"
                    .to_string(),
            );
        }
        if self.usbnet.is_some_and(|u| u.moves_ports()) {
            out.push("The modem is in RNDIS mode: its DM and AT ports sit on other interfaces than usual".to_string());
        }
        out.extend(self.problems.iter().filter_map(|p| p.advice.clone()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::pipe::{self, PipeEnd};
    use crate::transport::Framing;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::thread;

    fn quick() -> AtTimeouts {
        AtTimeouts {
            write: Duration::from_secs(2),
            resync_quiet: Duration::from_millis(30),
            resync_max: Duration::from_secs(1),
        }
    }

    /// A scripted AT port: answers each `\r`-terminated command from `script` (missing
    /// commands get `ERROR`; `None` means never answer), optionally with echo, with URCs
    /// sprinkled in. Records what it received.
    fn modem(
        mut dev: PipeEnd,
        echo: bool,
        script: HashMap<&'static str, Option<&'static str>>,
        seen: Arc<Mutex<Vec<String>>>,
    ) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let _ = dev.write(b"\r\nRDY\r\n", Duration::from_secs(1));
            let mut buf = [0u8; 256];
            let mut line = Vec::new();
            loop {
                let n = match dev.read(&mut buf, Duration::from_secs(10)) {
                    Ok(n) => n,
                    Err(_) => return,
                };
                for &b in &buf[..n] {
                    if b != b'\r' {
                        line.push(b);
                        continue;
                    }
                    let cmd = String::from_utf8_lossy(&line).to_string();
                    line.clear();
                    seen.lock().unwrap().push(cmd.clone());
                    let mut out = String::new();
                    if echo {
                        out.push_str(&cmd);
                        out.push('\r');
                    }
                    match script.get(cmd.as_str()) {
                        Some(None) => continue,
                        Some(Some(body)) => out.push_str(body),
                        None => out.push_str("\r\nERROR\r\n"),
                    }
                    // Byte-by-byte writes: replies split anywhere.
                    for b in out.bytes() {
                        if dev.write(&[b], Duration::from_secs(1)).is_err() {
                            return;
                        }
                    }
                }
            }
        })
    }

    fn healthy() -> HashMap<&'static str, Option<&'static str>> {
        HashMap::from([
            (
                "ATI",
                Some("\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A17M4G\r\n\r\nOK\r\n"),
            ),
            (
                "AT+QGMR",
                Some("\r\nEC25EFAR06A17M4G_20.200.20.200\r\n+QIND: SMS DONE\r\n\r\nOK\r\n"),
            ),
            ("AT+CGSN", Some("\r\n490154203237518\r\n\r\nOK\r\n")),
            (
                "AT+QCCID",
                Some("\r\n+QCCID: 89860318740210183215\r\n\r\nOK\r\n"),
            ),
            (
                "AT+CFUN?",
                Some("\r\n+CPIN: READY\r\n+CFUN: 1\r\n\r\nOK\r\n"),
            ),
            (
                "AT+QCFG=\"usbnet\"",
                Some("\r\n+QCFG: \"usbnet\",0\r\n\r\nOK\r\n"),
            ),
            ("AT+CSQ", Some("\r\n+CSQ: 20,99\r\n\r\nOK\r\n")),
        ])
    }

    fn run_identify(
        echo: bool,
        script: HashMap<&'static str, Option<&'static str>>,
    ) -> (NormalIdentity, Vec<String>) {
        let (host, dev) = pipe::pair_named(Framing::Stream, "fake AT port", "device");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let h = modem(dev, echo, script, Arc::clone(&seen));
        let mut s = AtSession::with_timeouts(host, quick());
        let id = s.identify();
        drop(s);
        h.join().unwrap();
        let seen = seen.lock().unwrap().clone();
        (id, seen)
    }

    #[test]
    fn identify_healthy_modem_with_and_without_echo() {
        for echo in [false, true] {
            let (id, seen) = run_identify(echo, healthy());
            assert_eq!(id.manufacturer.as_deref(), Some("Quectel"));
            assert_eq!(id.model.as_deref(), Some("EC25"));
            assert_eq!(
                id.revision.as_ref().unwrap().text,
                "EC25EFAR06A17M4G_20.200.20.200"
            );
            assert!(id.imei.as_ref().unwrap().luhn_ok);
            assert_eq!(id.iccid.as_ref().unwrap().value, "89860318740210183215");
            assert_eq!(id.cfun.unwrap().level, 1);
            assert_eq!(id.usbnet.unwrap().name(), "RmNet (QMI/PPP)");
            assert!(id.problems.is_empty(), "{:?}", id.problems);
            assert!(id.advice().is_empty());
            assert!(id.urcs.contains(&"RDY".to_string()));
            assert!(id.urcs.contains(&"+QIND: SMS DONE".to_string()));
            assert!(id.urcs.contains(&"+CPIN: READY".to_string()));
            assert_eq!(
                seen,
                [
                    "ATI",
                    "AT+QGMR",
                    "AT+CGSN",
                    "AT+QCCID",
                    "AT+CFUN?",
                    "AT+QCFG=\"usbnet\""
                ]
            );
            let json = serde_json::to_string(&id).unwrap();
            let back: NormalIdentity = serde_json::from_str(&json).unwrap();
            assert_eq!(back, id);
        }
    }

    #[test]
    fn identify_ftm_modem_with_lost_imei_and_old_firmware() {
        let mut script = healthy();
        script.remove("AT+QGMR"); // -> ERROR, fall back to AT+CGMR
        script.insert("AT+CGMR", Some("\r\nEC25EFAR02A08M4G\r\n\r\nOK\r\n"));
        script.insert("AT+CGSN", Some("\r\n+CME ERROR: memory failure\r\n"));
        script.insert("AT+QCCID", Some("\r\n+CME ERROR: 10\r\n"));
        script.insert("AT+CFUN?", Some("\r\n+CFUN: 5\r\n\r\nOK\r\n"));
        let (id, seen) = run_identify(true, script);
        assert!(seen.contains(&"AT+CGMR".to_string()));
        assert_eq!(id.revision.as_ref().unwrap().text, "EC25EFAR02A08M4G");
        assert_eq!(id.imei, None);
        assert_eq!(id.iccid, None);
        assert_eq!(id.cfun.unwrap().level, 5);
        let fields: Vec<_> = id.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["imei", "iccid"]);
        let advice = id.advice();
        assert!(advice.iter().any(|a| a.contains("factory-test")));
        assert!(advice.iter().any(|a| a.contains("IMEI missing")));
        assert!(advice.iter().any(|a| a.contains("No SIM")));
    }

    #[test]
    fn unanswered_command_is_bounded_and_session_recovers() {
        let mut script = healthy();
        script.insert("AT+CGSN", None);
        let (host, dev) = pipe::pair(Framing::Stream);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let h = modem(dev, false, script, Arc::clone(&seen));
        let mut s = AtSession::with_timeouts(host, quick());
        let cmd = Command::new("AT+CGSN").unwrap();
        let e = s
            .send_with_timeout(&cmd, Duration::from_millis(100))
            .unwrap_err();
        assert!(e.what.contains("No complete answer"), "{e}");
        let csq = s.query("AT+CSQ", at::parse_csq).unwrap();
        assert_eq!(csq.dbm(), Some(-73));
        drop(s);
        h.join().unwrap();
    }

    #[test]
    fn composition_changes_are_refused_unless_allowed() {
        let mut script = healthy();
        script.insert("AT+QCFG=\"usbnet\",3", Some("\r\nOK\r\n"));
        let (host, dev) = pipe::pair(Framing::Stream);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let h = modem(dev, false, script, Arc::clone(&seen));
        let mut s = AtSession::with_timeouts(host, quick());
        let e = s.run("AT+QCFG=\"usbnet\",3").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.why.contains("RNDIS"), "{e}");
        let mut s = s.allow_usb_change(true);
        assert!(s.run("AT+QCFG=\"usbnet\",3").unwrap().is_ok());
        drop(s);
        h.join().unwrap();
        assert_eq!(*seen.lock().unwrap(), ["AT+QCFG=\"usbnet\",3"]);
    }

    #[test]
    fn lost_port_stops_identify() {
        let (host, dev) = pipe::pair(Framing::Stream);
        drop(dev);
        let mut s = AtSession::with_timeouts(host, quick());
        let id = s.identify();
        assert_eq!(id.model, None);
        assert!(id.problems.len() >= 6);
        assert!(id.problems[0].error.contains("went away"));
        assert!(id.problems[1..]
            .iter()
            .all(|p| p.error.contains("not asked")));
        let e = s.run("ATI").unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeviceLost);
        assert_eq!(s.run("AT\u{1}").unwrap_err().kind, ErrorKind::Usage);
    }
}
