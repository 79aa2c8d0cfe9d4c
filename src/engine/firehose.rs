//! The Firehose session: drives the sans-IO pieces of `crate::protocol::firehose` over any
//! [`Transport`], with every wait bounded.
//!
//! Decisions (see also the module docs of `protocol::firehose::timeouts` and `::configure`):
//! - **Framing.** Incoming bytes go through one [`DocumentSplitter`]; bytes that follow a document
//!   (raw data after `ACK rawmode="true"`, or the next document) stay in it, so nothing that
//!   arrived in the same read as an ACK is lost. Zero-length reads (ZLPs) are skipped everywhere.
//! - **Program padding.** The device is told `num_partition_sectors`, and it expects exactly
//!   `num_partition_sectors × SECTOR_SIZE_IN_BYTES` bytes. Data shorter than that (`data_len`
//!   smaller than the declared size: the last partial sector, or a package that declares more
//!   sectors than the file fills) is zero-padded up to the declared size, like qdl. Data *longer*
//!   than declared is refused before anything is sent: silently truncating an image is never
//!   right. If the reader ends before `data_len` bytes (file changed or unreadable), the rest is
//!   zero-filled so the programmer stays in step, the final ACK is awaited, and then an error is
//!   returned because the partition content is wrong.
//! - **Chunks** are at most the negotiated MaxPayloadSizeToTargetInBytes, rounded down to a
//!   multiple of the sector size; before configure, 8192 bytes (the smallest real value). The
//!   ZLP after a transfer that is a multiple of wMaxPacketSize is the transport's job.
//! - **Retries.** An XML write that times out is retried once after draining logs for
//!   [`Timeouts::drain`] (db410c quirk). A NAK whose log says "XML not formed correctly" is
//!   retried once. `AttemptRetry` on a response means "read again" within the same deadline.
//!   Configure follows `protocol::firehose::configure` (at most 3 documents).
//! - **Errors.** Link drops are [`ErrorKind::DeviceLost`]; NAKs are explained from the
//!   programmer's logs (`protocol::firehose::explain`); timeouts say what was awaited and for
//!   how long. A link drop or silence right after `<power>` is expected and not an error.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};
use crate::protocol::firehose::configure::ConfigureError;
use crate::protocol::firehose::explain::{explain_log, explain_nak, Advice};
use crate::protocol::firehose::xml::{host_document, DocumentSplitter, Element};
use crate::protocol::firehose::{
    parse_device_document, parse_sha256_digest, parse_storage_info, Configure, ConfigureStep,
    DeviceMessage, Exchange, FirehoseCommand, GetStorageInfo, Negotiation, Nop, Power, Response,
    SetBootableStorageDrive, WelcomeParser,
};
use crate::transport::{Transport, TransportError};

/// The command and result types a caller of the session needs, re-exported.
pub use crate::protocol::firehose::{
    Erase, GetSha256Digest, Negotiated, Patch, PowerMode, Program, Read, StorageInfo, StorageKind,
    Timeouts, Welcome,
};

/// Chunk size used before a configure has been negotiated.
pub const UNCONFIGURED_PAYLOAD: u32 = 8192;
/// The largest document the splitter buffers without finding `</data>`.
const MAX_DOCUMENT: usize = 64 * 1024;
/// Receive buffer (large enough for one 1 MiB bulk transfer).
const RX_BUF: usize = 1024 * 1024;
/// Device log lines kept for the explainer and the log file.
const MAX_LOGS: usize = 20_000;

/// How a session behaves.
#[derive(Debug, Clone)]
pub struct FirehoseOptions {
    /// MaxPayloadSizeToTargetInBytes to ask for; None: 8192 on NAND, 1 MiB otherwise.
    pub max_payload: Option<u32>,
    /// Send ZlpAwareHost=1 (turn off for hosts without zero-length packets, e.g. MT7621).
    pub zlp_aware: bool,
    /// SkipStorageInit=1 (unprovisioned UFS).
    pub skip_storage_init: bool,
    /// MaxDigestTableSizeInBytes; None: 2048 on NAND, 8192 otherwise.
    pub max_digest_table: Option<u32>,
    /// PAGES_PER_BLOCK on a NAND configure (edl sends it; QFirehose does not).
    pub pages_per_block: Option<u32>,
    /// Configure documents at most (1..=3).
    pub max_configure_attempts: u32,
    /// If no welcome logs arrive, probe with a nop instead of failing.
    pub nop_probe: bool,
    pub timeouts: Timeouts,
}

impl Default for FirehoseOptions {
    fn default() -> Self {
        FirehoseOptions {
            max_payload: None,
            zlp_aware: true,
            skip_storage_init: false,
            max_digest_table: None,
            pages_per_block: None,
            max_configure_attempts: 3,
            nop_probe: true,
            timeouts: Timeouts::default(),
        }
    }
}

/// A Firehose session over one transport.
pub struct FirehoseSession<T: Transport> {
    transport: T,
    splitter: DocumentSplitter,
    /// Messages parsed from a document but not consumed yet.
    held: VecDeque<DeviceMessage>,
    negotiated: Option<Negotiated>,
    welcome: Option<Welcome>,
    logs: Vec<String>,
    opts: FirehoseOptions,
    rx: Vec<u8>,
    /// The start of the last device document that could not be parsed (reset per wait), so a
    /// wait that ends without an answer can say the answer arrived garbled.
    garbled: Option<String>,
    /// When the unreadable document was a response, the current wait ends by this instant: the
    /// programmer has answered and will not answer again, so the rest of a long (size-scaled)
    /// timeout is not waited out.
    garbled_until: Option<Instant>,
}

fn elapsed_s(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl<T: Transport> FirehoseSession<T> {
    /// Start a session. `pending` holds bytes already read from the transport (for example by
    /// the Sahara layer, which may have read the first welcome log together with DONE_RESP).
    pub fn new(transport: T, pending: Vec<u8>, opts: FirehoseOptions) -> Self {
        let mut splitter = DocumentSplitter::new(MAX_DOCUMENT);
        splitter.push(&pending);
        FirehoseSession {
            transport,
            splitter,
            held: VecDeque::new(),
            negotiated: None,
            welcome: None,
            logs: Vec::new(),
            opts,
            rx: vec![0; RX_BUF],
            garbled: None,
            garbled_until: None,
        }
    }

    /// Everything the device logged so far (bounded to the last 20 000 lines).
    pub fn logs(&self) -> &[String] {
        &self.logs
    }

    /// The configure result, once negotiated.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// What the programmer announced, once [`FirehoseSession::wait_ready`] ran.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    pub fn options(&self) -> &FirehoseOptions {
        &self.opts
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Give the transport back (bytes buffered but not consumed are dropped; see
    /// [`FirehoseSession::into_parts`]).
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// The transport and any bytes received but not consumed.
    pub fn into_parts(mut self) -> (T, Vec<u8>) {
        let rest = self.splitter.take_rest();
        (self.transport, rest)
    }

    // ----- errors -------------------------------------------------------------------------

    fn lost(&self, during: &str, detail: &str) -> Error {
        Error::new(
            ErrorKind::DeviceLost,
            format!("The modem dropped off the bus while {during}"),
            format!(
                "The link to the programmer is gone ({detail}), so this step did not finish"
            ),
            "Don't unplug it. Wait for it to come back: in download mode (9008) it is safe to run the flash again; if it does not return, power-cycle the modem",
        )
    }

    /// Nothing happened within `after` while `during` (e.g. "waiting for the answer to erase",
    /// "sending the configure command").
    fn stalled(&self, during: &str, after: Duration) -> Error {
        Error::failure(
            format!(
                "The modem stopped responding while {during} (gave up after {})",
                elapsed_s(after)
            ),
            "The programmer did not answer in time: the cable, port or hub may be dropping data, or the programmer hung",
            "Check the cable and port (avoid hubs), power-cycle the modem into download mode and run again",
        )
    }

    /// The device answered, but with a document that does not parse, and nothing readable
    /// followed within `after`: whether the command was carried out is unknown.
    fn garbled_answer(&self, name: &str, doc: &str, after: Duration) -> Error {
        Error::failure(
            format!("The programmer's answer to {name} could not be read"),
            format!(
                "It sent a malformed XML document ({doc:?}) and nothing readable within {}, so it is unknown whether {name} was carried out",
                elapsed_s(after)
            ),
            "Power-cycle the modem into download mode and run the flash again; if it repeats, try another cable or port (avoid hubs)",
        )
    }

    fn transport_error(&self, e: TransportError, during: &str, after: Duration) -> Error {
        match e {
            TransportError::Timeout { .. } => self.stalled(during, after),
            TransportError::Disconnected(d) => self.lost(during, &d),
            TransportError::Permission(d) => Error::new(
                ErrorKind::Permission,
                format!("Permission denied while {during}"),
                d,
                "Give your user access to the device (udev rule for 05c6:9008) or run with the needed rights",
            ),
            TransportError::Busy(d) => Error::failure(
                format!("The device is busy while {during}"),
                d,
                "Close other programs that hold the modem's port (ModemManager, another flasher) and retry",
            ),
            TransportError::Io(io) => Error::failure(
                format!("An I/O error stopped the transfer while {during}"),
                io.to_string(),
                "Check the cable and port, power-cycle the modem into download mode and run again",
            ),
        }
    }

    // ----- receiving ----------------------------------------------------------------------

    fn record_log(&mut self, line: &str) {
        tracing::debug!(target: "qrescue::firehose", "device log: {line}");
        if let Some(x) = crate::explain::explain(line, crate::explain::Context::Firehose)
            .filter(|x| x.severity.is_problem())
        {
            tracing::info!(target: "qrescue::firehose", "device log {line:?}: {}", x.one_line());
        }
        if self.logs.len() >= MAX_LOGS {
            self.logs.drain(..MAX_LOGS / 10);
        }
        self.logs.push(line.to_string());
    }

    /// The next device message before `deadline`; `Ok(None)` when the deadline passed.
    fn next_message(
        &mut self,
        deadline: Instant,
        during: &str,
    ) -> crate::Result<Option<DeviceMessage>> {
        loop {
            if let Some(m) = self.held.pop_front() {
                if let DeviceMessage::Log(l) = &m {
                    let l = l.clone();
                    self.record_log(&l);
                }
                return Ok(Some(m));
            }
            match self.splitter.next_document() {
                Ok(Some(doc)) => {
                    match parse_device_document(&doc) {
                        Ok(msgs) => self.held.extend(msgs),
                        Err(e) => {
                            let head = String::from_utf8_lossy(&doc[..doc.len().min(200)]);
                            tracing::warn!(
                                target: "qrescue::firehose",
                                "ignoring an unreadable document from the device ({e}): {head:?}"
                            );
                            self.garbled = Some(head.chars().take(120).collect());
                            if head.contains("<response") {
                                let grace = Instant::now() + self.opts.timeouts.short_command;
                                self.garbled_until =
                                    Some(self.garbled_until.map_or(grace, |g| g.min(grace)));
                            }
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    let junk = self.splitter.take_rest();
                    tracing::warn!(
                        target: "qrescue::firehose",
                        "discarding {} bytes that are not a Firehose document ({e})",
                        junk.len()
                    );
                }
            }
            let deadline = self.garbled_until.map_or(deadline, |g| deadline.min(g));
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.transport.read(&mut self.rx, left) {
                Ok(0) => continue,
                Ok(n) => {
                    let n = n.min(self.rx.len());
                    self.splitter.push(&self.rx[..n]);
                }
                Err(TransportError::Timeout { .. }) => return Ok(None),
                Err(e) => return Err(self.transport_error(e, during, left)),
            }
        }
    }

    /// Collect logs for up to `dur`. Errors end the drain quietly (a real operation will
    /// report them). With `keep_responses`, a response ends the drain and is kept for the next
    /// wait; otherwise it is stale and dropped.
    fn drain_logs(&mut self, dur: Duration, keep_responses: bool) -> Vec<String> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        while let Ok(Some(m)) = self.next_message(deadline, "reading the programmer's logs") {
            match m {
                DeviceMessage::Log(l) => out.push(l),
                DeviceMessage::Response(r) if keep_responses => {
                    self.held.push_front(DeviceMessage::Response(r));
                    break;
                }
                DeviceMessage::Response(r) => tracing::warn!(
                    target: "qrescue::firehose",
                    "dropping an unexpected response while draining logs: {:?}",
                    r.attrs
                ),
            }
        }
        out
    }

    /// Wait for the response to `name`, collecting logs, within `timeout` (cut short when the
    /// response itself arrives unreadable: see `garbled_until`).
    fn wait_response(&mut self, name: &str, timeout: Duration) -> crate::Result<Exchange> {
        self.garbled = None;
        self.garbled_until = None;
        let r = self.wait_response_within(name, timeout);
        self.garbled_until = None;
        r
    }

    fn wait_response_within(&mut self, name: &str, timeout: Duration) -> crate::Result<Exchange> {
        let deadline = Instant::now() + timeout;
        let during = format!("waiting for the answer to {name}");
        let mut ex = Exchange::default();
        loop {
            match self.next_message(deadline, &during)? {
                None => {
                    if let Some(doc) = self.garbled.take() {
                        let waited = if self.garbled_until.is_some() {
                            self.opts.timeouts.short_command.min(timeout)
                        } else {
                            timeout
                        };
                        return Err(self.garbled_answer(name, &doc, waited));
                    }
                    return Err(self.stalled(&format!("waiting for the answer to {name}"), timeout));
                }
                Some(DeviceMessage::Log(l)) => {
                    ex.push(DeviceMessage::Log(l));
                }
                Some(DeviceMessage::Response(r)) => {
                    if r.attempt_retry() {
                        tracing::debug!(target: "qrescue::firehose", "{name}: AttemptRetry, reading again");
                        continue;
                    }
                    ex.push(DeviceMessage::Response(r));
                    break;
                }
            }
        }
        if ex.response.as_ref().is_some_and(|r| !r.ack) {
            // Programmers often explain a NAK in logs right after it.
            let after = self.drain_logs(self.opts.timeouts.drain, true);
            ex.logs_after.extend(after);
        }
        Ok(ex)
    }

    // ----- sending ------------------------------------------------------------------------

    fn write_xml(&mut self, cmd: &Element) -> crate::Result<()> {
        let bytes = host_document(cmd);
        if let Some(n) = &self.negotiated {
            if bytes.len() > n.max_xml_size as usize {
                return Err(Error::failure(
                    format!("The {} command is too long for this programmer", cmd.name),
                    format!(
                        "It is {} bytes; the programmer accepts at most {} (MaxXMLSizeInBytes)",
                        bytes.len(),
                        n.max_xml_size
                    ),
                    "Shorten the command's attributes (e.g. a long filename or label in the package XML)",
                ));
            }
        }
        tracing::trace!(target: "qrescue::firehose", "-> {}", String::from_utf8_lossy(&bytes));
        let t = self.opts.timeouts.xml_write;
        let during = format!("sending the {} command", cmd.name);
        match self.transport.write(&bytes, t) {
            Ok(()) => Ok(()),
            Err(TransportError::Timeout { .. }) => {
                // Some programmers keep logging after a response and block writes until the
                // logs are read (db410c): drain, then retry once.
                tracing::debug!(target: "qrescue::firehose", "write of {} timed out; draining logs and retrying once", cmd.name);
                let drain = self.opts.timeouts.drain;
                self.drain_logs(drain, false);
                self.transport
                    .write(&bytes, t)
                    .map_err(|e| self.transport_error(e, &during, t))
            }
            Err(e) => Err(self.transport_error(e, &during, t)),
        }
    }

    /// Send a command and wait for its response. A NAK whose logs say the XML was garbled is
    /// retried once. NAKs are returned, not turned into errors.
    fn command(&mut self, cmd: &Element, timeout: Duration) -> crate::Result<Exchange> {
        let mut retried = false;
        loop {
            self.write_xml(cmd)?;
            let ex = self.wait_response(&cmd.name, timeout)?;
            let nak = ex.response.as_ref().is_some_and(|r| !r.ack);
            if nak && !retried {
                let logs = ex.all_logs();
                if explain_nak(&cmd.name, &logs).advice == Advice::Retry {
                    tracing::info!(target: "qrescue::firehose", "{} was garbled on the way; sending it once more", cmd.name);
                    retried = true;
                    continue;
                }
            }
            return Ok(ex);
        }
    }

    fn nak_error(&self, name: &str, ex: &Exchange) -> Error {
        let mut logs = ex.all_logs();
        if logs.is_empty() {
            let n = self.logs.len();
            logs = self.logs[n.saturating_sub(5)..].to_vec();
        }
        explain_nak(name, &logs).to_error()
    }

    fn restart_error(&self, name: &str) -> Error {
        Error::failure(
            format!("The programmer asked to be restarted after {name}"),
            "It answered with AttemptRestart: it cannot continue in its current state",
            "Power-cycle the modem into download mode (9008) and run again",
        )
    }

    fn response<'a>(&self, name: &str, ex: &'a Exchange) -> crate::Result<&'a Response> {
        let r = ex.response.as_ref().ok_or_else(|| {
            self.stalled(&format!("waiting for the answer to {name}"), Duration::ZERO)
        })?;
        if r.attempt_restart() {
            return Err(self.restart_error(name));
        }
        if !r.ack {
            return Err(self.nak_error(name, ex));
        }
        Ok(r)
    }

    /// Send and require an ACK.
    fn expect_ack(&mut self, cmd: &Element, timeout: Duration) -> crate::Result<Exchange> {
        let ex = self.command(cmd, timeout)?;
        self.response(&cmd.name, &ex)?;
        Ok(ex)
    }

    // ----- public operations --------------------------------------------------------------

    /// Wait until the programmer has announced itself: collect welcome logs until "End of
    /// supported functions", or until it goes quiet (first log within
    /// [`Timeouts::welcome_first`], then [`Timeouts::welcome_quiet`] between logs, all within
    /// [`Timeouts::welcome_total`]). A programmer that logs nothing is probed with a nop; any
    /// answer (even a NAK) proves it is running.
    pub fn wait_ready(&mut self) -> crate::Result<Welcome> {
        let t = self.opts.timeouts.clone();
        let start = Instant::now();
        let total = start + t.welcome_total;
        let mut deadline = start + t.welcome_first;
        let mut parser = WelcomeParser::new();
        let during = "waiting for the programmer to start";
        loop {
            let d = deadline.min(total);
            match self.next_message(d, during)? {
                None => break,
                Some(DeviceMessage::Log(l)) => {
                    parser.push_log(&l);
                    if parser.is_ready() {
                        break;
                    }
                    deadline = Instant::now() + t.welcome_quiet;
                }
                Some(DeviceMessage::Response(r)) => {
                    tracing::warn!(target: "qrescue::firehose", "unexpected response before any command: {:?}", r.attrs);
                    deadline = Instant::now() + t.welcome_quiet;
                }
            }
            if Instant::now() >= total {
                break;
            }
        }
        if parser.saw_logs() {
            let w = parser.finish();
            tracing::info!(
                target: "qrescue::firehose",
                "programmer ready={} functions={} serial={:?}",
                w.ready,
                w.functions.len(),
                w.chip_serial
            );
            self.welcome = Some(w.clone());
            return Ok(w);
        }
        if !self.opts.nop_probe {
            return Err(self.never_answered(t.welcome_first));
        }
        tracing::info!(target: "qrescue::firehose", "no welcome logs; probing with nop");
        let nop = Nop.to_element();
        self.write_xml(&nop)?;
        let ex = match self.wait_response("nop", t.nop) {
            Ok(ex) => ex,
            Err(e) if e.kind == ErrorKind::DeviceLost => return Err(e),
            Err(_) => return Err(self.never_answered(t.welcome_first + t.nop)),
        };
        let w = Welcome {
            via_nop_probe: true,
            ready: true,
            logs: ex.all_logs(),
            ..Welcome::default()
        };
        self.welcome = Some(w.clone());
        Ok(w)
    }

    fn never_answered(&self, after: Duration) -> Error {
        Error::failure(
            format!(
                "The programmer was sent but never answered ({} without a word)",
                elapsed_s(after)
            ),
            "Either it is the wrong programmer for this chip or baseline, or the USB link lost its data",
            "Check that the programmer comes from this module's own firmware package, then the cable and port; power-cycle the modem into download mode and run again",
        )
    }

    /// Negotiate `<configure>` for `storage` (see `protocol::firehose::configure`).
    pub fn configure(&mut self, storage: StorageKind) -> crate::Result<Negotiated> {
        let mut req = Configure::new(storage);
        if let Some(p) = self.opts.max_payload {
            req.max_payload_to_target = p;
        }
        if let Some(d) = self.opts.max_digest_table {
            req.max_digest_table = d;
        }
        req.zlp_aware = self.opts.zlp_aware;
        req.skip_storage_init = self.opts.skip_storage_init;
        if storage == StorageKind::Nand {
            req.pages_per_block = self.opts.pages_per_block;
        }
        let timeout = self.opts.timeouts.configure;
        let mut neg = Negotiation::new(req, self.opts.max_configure_attempts);
        let mut cmd = neg.start();
        loop {
            let ex = self.command(&cmd.to_element(), timeout)?;
            let r = ex
                .response
                .clone()
                .ok_or_else(|| self.stalled("waiting for the answer to configure", timeout))?;
            for l in ex.logs() {
                if let Some(e) = explain_log(l) {
                    tracing::debug!(target: "qrescue::firehose", "configure: {} ({})", e.what, e.id);
                }
            }
            match neg.on_response(&r) {
                ConfigureStep::Send(next) => {
                    tracing::info!(
                        target: "qrescue::firehose",
                        "configure {}: payload {} -> {}",
                        if r.ack { "ACK" } else { "NAK" },
                        cmd.max_payload_to_target,
                        next.max_payload_to_target
                    );
                    cmd = next;
                }
                ConfigureStep::Done(n) => {
                    tracing::info!(
                        target: "qrescue::firehose",
                        "configured {}: payload {} bytes, xml {} bytes, {} attempt(s)",
                        storage,
                        n.max_payload_to_target,
                        n.max_xml_size,
                        n.attempts
                    );
                    self.negotiated = Some(n.clone());
                    return Ok(n);
                }
                ConfigureStep::Failed(ConfigureError::UnsupportedVersion { min_version }) => {
                    return Err(Error::failure(
                        format!("The programmer needs Firehose protocol version {min_version}; qrescue speaks version 1"),
                        "It answered configure with MinVersionSupported above 1, so commands may be misread",
                        "Use the programmer from this module's own firmware package, or a newer qrescue",
                    ));
                }
                ConfigureStep::Failed(ConfigureError::BadPayload { value }) => {
                    return Err(Error::failure(
                        format!("The programmer offered an unusable transfer size ({value} bytes)"),
                        "Its configure answer cannot be used safely",
                        "Power-cycle the modem into download mode and run again; if it repeats, use the programmer from this module's package",
                    ));
                }
                ConfigureStep::Failed(ConfigureError::Refused { .. }) => {
                    if r.attempt_restart() {
                        return Err(self.restart_error("configure"));
                    }
                    return Err(self.nak_error("configure", &ex));
                }
            }
        }
    }

    fn chunk_size(&self, sector_size: u32) -> usize {
        let p = self
            .negotiated
            .as_ref()
            .map(|n| n.max_payload_to_target)
            .unwrap_or(UNCONFIGURED_PAYLOAD)
            .max(1) as usize;
        let s = sector_size.max(1) as usize;
        if p >= s {
            p - p % s
        } else {
            p
        }
    }

    fn enter_raw(&mut self, cmd: &Element, name: &str) -> crate::Result<()> {
        let ex = self.command(cmd, self.opts.timeouts.raw_setup)?;
        let r = self.response(name, &ex)?;
        if !r.starts_raw() {
            return Err(Error::failure(
                format!("The programmer accepted {name} but did not start the data transfer"),
                format!("It answered ACK without rawmode=\"true\" ({:?})", r.attrs),
                "Power-cycle the modem into download mode and run again; if it repeats, use the programmer from this module's package",
            ));
        }
        Ok(())
    }

    /// Program `cmd`: wait for `ACK rawmode="true"`, stream exactly num_partition_sectors ×
    /// SECTOR_SIZE_IN_BYTES bytes (the first `data_len` from `data`, zero padding after that),
    /// then wait for the final ACK (its timeout scales with the image size). `progress` gets
    /// the bytes sent so far, padding included; its last call reports the full declared size.
    pub fn program(
        &mut self,
        cmd: &Program,
        data: &mut dyn std::io::Read,
        data_len: u64,
        progress: &mut dyn FnMut(u64),
    ) -> crate::Result<()> {
        let name = cmd
            .label
            .clone()
            .or_else(|| cmd.filename.clone())
            .unwrap_or_else(|| format!("sector {}", cmd.start_sector));
        let total = match cmd.byte_len() {
            Some(t) if cmd.sector_size > 0 => t,
            _ => {
                return Err(Error::failure(
                    format!("The program entry for {name} has an impossible size"),
                    format!("{} sectors of {} bytes", cmd.num_sectors, cmd.sector_size),
                    "Check SECTOR_SIZE_IN_BYTES and num_partition_sectors in the package XML",
                ))
            }
        };
        if data_len > total {
            return Err(Error::failure(
                format!("The image for {name} is larger than its partition entry; nothing was sent"),
                format!(
                    "The image has {data_len} bytes but the entry declares {} sectors of {} bytes ({total} bytes)",
                    cmd.num_sectors, cmd.sector_size
                ),
                "Use the image that belongs to this package, or fix num_partition_sectors in its XML",
            ));
        }
        self.enter_raw(&cmd.to_element(), "program")?;

        let chunk = self.chunk_size(cmd.sector_size);
        let mut buf = vec![
            0u8;
            chunk
                .min(usize::try_from(total).unwrap_or(usize::MAX))
                .max(1)
        ];
        let mut sent = 0u64;
        let mut from_file = 0u64;
        let mut file_problem: Option<String> = None;
        tracing::info!(target: "qrescue::firehose", "program {name}: {total} bytes in chunks of {chunk}");
        while sent < total {
            let n = (total - sent).min(chunk as u64) as usize;
            let want = if file_problem.is_some() {
                0
            } else {
                (data_len - from_file).min(n as u64) as usize
            };
            let mut got = 0;
            while got < want {
                match data.read(&mut buf[got..want]) {
                    Ok(0) => {
                        file_problem = Some(format!(
                            "the image ended after {} of {data_len} bytes",
                            from_file + got as u64
                        ));
                        break;
                    }
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        file_problem = Some(format!(
                            "reading the image failed after {} bytes: {e}",
                            from_file + got as u64
                        ));
                        break;
                    }
                }
            }
            from_file += got as u64;
            buf[got..n].fill(0);
            let t = self.opts.timeouts.raw_chunk(n);
            if let Err(e) = self.transport.write(&buf[..n], t) {
                let during = format!("sending {name} ({sent} of {total} bytes sent)");
                return Err(self.transport_error(e, &during, t));
            }
            sent += n as u64;
            progress(sent);
        }
        let ex = self.wait_response("program", self.opts.timeouts.program_final_ack(total))?;
        let r = self.response("program", &ex)?;
        if r.rawmode == Some(true) {
            tracing::warn!(target: "qrescue::firehose", "final program ACK still says rawmode=true");
        }
        if let Some(problem) = file_problem {
            return Err(Error::failure(
                format!("{name} was not written completely"),
                format!("{problem}; the rest of the partition was filled with zeros to keep the programmer in step"),
                "Check the image file (disk full, changed or unreadable during the flash) and run the flash again",
            ));
        }
        Ok(())
    }

    /// Read `cmd`'s sectors into `out`. Raw bytes that arrived together with the ACK are kept,
    /// zero-length reads are skipped, and bytes after the data (the final ACK in the same read)
    /// go back to the document splitter. `progress` gets the bytes received so far.
    pub fn read(
        &mut self,
        cmd: &Read,
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64),
    ) -> crate::Result<()> {
        let total = match cmd.byte_len() {
            Some(t) if cmd.sector_size > 0 => t,
            _ => {
                return Err(Error::failure(
                    "The read request has an impossible size",
                    format!("{} sectors of {} bytes", cmd.num_sectors, cmd.sector_size),
                    "Check the sector size and count",
                ))
            }
        };
        self.enter_raw(&cmd.to_element(), "read")?;
        let t = self.opts.timeouts.clone();
        let overall = t.read_total(total);
        let deadline = Instant::now() + overall;
        let mut got = 0u64;
        let out_err = |e: std::io::Error| {
            Error::failure(
                "Could not store the data read from the modem",
                e.to_string(),
                "Check the destination (free space, permissions) and run again",
            )
        };
        let first = self.splitter.take_rest();
        if !first.is_empty() {
            let take = (total - got).min(first.len() as u64) as usize;
            out.write_all(&first[..take]).map_err(out_err)?;
            got += take as u64;
            self.splitter.push(&first[take..]);
            progress(got);
        }
        while got < total {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = left.min(t.read_idle);
            let during = format!("reading data ({got} of {total} bytes received)");
            if wait.is_zero() {
                return Err(self.stalled(
                    &format!(
                        "waiting for the rest of the read data ({got} of {total} bytes received)"
                    ),
                    overall,
                ));
            }
            match self.transport.read(&mut self.rx, wait) {
                Ok(0) => continue,
                Ok(n) => {
                    let n = n.min(self.rx.len());
                    let take = (total - got).min(n as u64) as usize;
                    out.write_all(&self.rx[..take]).map_err(out_err)?;
                    got += take as u64;
                    if take < n {
                        self.splitter.push(&self.rx[take..n]);
                    }
                    progress(got);
                }
                Err(TransportError::Timeout { .. }) => {
                    return Err(self.stalled(
                        &format!("waiting for read data ({got} of {total} bytes received)"),
                        wait,
                    ));
                }
                Err(e) => return Err(self.transport_error(e, &during, wait)),
            }
        }
        let ex = self.wait_response("read", t.data_base)?;
        self.response("read", &ex)?;
        Ok(())
    }

    /// Erase; the wait scales with the erased size.
    pub fn erase(&mut self, cmd: &Erase) -> crate::Result<()> {
        let t = self.opts.timeouts.erase(cmd.byte_len());
        self.expect_ack(&cmd.to_element(), t).map(|_| ())
    }

    /// Apply a DISK patch on the device. Patches naming a file (`gpt_main0.bin` …) are
    /// host-side edits applied to that file by the package layer before it is programmed; they
    /// are skipped here (returning Ok), as every Firehose host does.
    pub fn patch(&mut self, cmd: &Patch) -> crate::Result<()> {
        if !cmd.targets_device() {
            tracing::debug!(target: "qrescue::firehose", "skipping host-side patch for {}", cmd.filename);
            return Ok(());
        }
        let t = self.opts.timeouts.short_command;
        self.expect_ack(&cmd.to_element(), t).map(|_| ())
    }

    /// getstorageinfo for one physical partition (LUN).
    pub fn storage_info(&mut self, physical_partition: u32) -> crate::Result<StorageInfo> {
        let t = self.opts.timeouts.short_command;
        let mut ex = self.expect_ack(&GetStorageInfo { physical_partition }.to_element(), t)?;
        if let Some(i) = parse_storage_info(&ex.all_logs()) {
            return Ok(i);
        }
        let drain = self.opts.timeouts.drain * 2;
        ex.logs_after.extend(self.drain_logs(drain, true));
        parse_storage_info(&ex.all_logs()).ok_or_else(|| {
            Error::failure(
                "The programmer answered getstorageinfo without storage details",
                "Its logs carried neither the JSON storage_info nor num_partition_sectors lines",
                "Continue without it: the package's own geometry is used, and the checks that need the device's size are skipped",
            )
        })
    }

    /// getsha256digest over a sector range; the wait scales with the range.
    pub fn sha256(&mut self, cmd: &GetSha256Digest) -> crate::Result<[u8; 32]> {
        let t = self
            .opts
            .timeouts
            .sha256(cmd.byte_len().unwrap_or(u64::MAX / 2));
        let mut ex = self.expect_ack(&cmd.to_element(), t)?;
        if let Some(d) = parse_sha256_digest(ex.response.as_ref(), &ex.all_logs()) {
            return Ok(d);
        }
        let drain = self.opts.timeouts.drain * 2;
        ex.logs_after.extend(self.drain_logs(drain, true));
        parse_sha256_digest(ex.response.as_ref(), &ex.all_logs()).ok_or_else(|| {
            Error::failure(
                "The programmer answered getsha256digest without a digest",
                "No 64-character hex digest was in its logs or response",
                "Verify by reading the data back instead",
            )
        })
    }

    /// `<nop value="ping"/>`.
    pub fn nop(&mut self) -> crate::Result<()> {
        let t = self.opts.timeouts.nop;
        self.expect_ack(&Nop.to_element(), t).map(|_| ())
    }

    /// `<setbootablestoragedrive value="drive"/>`.
    pub fn set_bootable(&mut self, drive: u32) -> crate::Result<()> {
        let t = self.opts.timeouts.short_command;
        self.expect_ack(&SetBootableStorageDrive { drive }.to_element(), t)
            .map(|_| ())
    }

    /// `<power>`; then drain logs briefly. The modem leaving the bus (during the write, the
    /// wait or the drain) or saying nothing before it resets is expected and not an error; a
    /// NAK is.
    pub fn power(&mut self, mode: PowerMode, delay_s: u32) -> crate::Result<()> {
        let cmd = Power { mode, delay_s }.to_element();
        match self.write_xml(&cmd) {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::DeviceLost => {
                tracing::info!(target: "qrescue::firehose", "link dropped while sending power {}: the modem is resetting", mode.value());
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        match self.wait_response("power", self.opts.timeouts.power_ack) {
            Ok(ex) => {
                self.response("power", &ex)?;
            }
            Err(e) if e.kind == ErrorKind::DeviceLost => {
                tracing::info!(target: "qrescue::firehose", "link dropped after power {} (expected)", mode.value());
                return Ok(());
            }
            Err(_) => {
                tracing::warn!(target: "qrescue::firehose", "no answer to power {}; the modem may already be resetting", mode.value());
                return Ok(());
            }
        }
        let d = self.opts.timeouts.power_drain;
        self.drain_logs(d, false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::firehose::welcome::SDX24_FUNCTIONS;
    use crate::protocol::firehose::xml::{device_document, parse_elements, Limits};
    use std::sync::{Arc, Mutex};

    /// One scripted read result.
    #[derive(Debug, Clone)]
    enum In {
        Data(Vec<u8>),
        Zlp,
        Disconnect,
        /// Returned forever (a device that never stops talking).
        Forever(Vec<u8>),
    }

    type OnWrite = Box<dyn FnMut(&[u8], &mut VecDeque<In>) + Send>;

    /// A scripted device: plays canned reads, records writes, and lets a handler queue answers
    /// to each write. An empty queue sleeps for the read timeout (capped) and times out, so
    /// real-time bounds can be tested.
    struct Fake {
        inbox: VecDeque<In>,
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        on_write: OnWrite,
        write_results: VecDeque<TransportError>,
        max_sleep: Duration,
    }

    impl Fake {
        fn new(inbox: Vec<In>) -> Self {
            Fake {
                inbox: inbox.into(),
                writes: Arc::new(Mutex::new(Vec::new())),
                on_write: Box::new(|_, _| {}),
                write_results: VecDeque::new(),
                max_sleep: Duration::from_millis(5),
            }
        }
        fn on_write(mut self, f: impl FnMut(&[u8], &mut VecDeque<In>) + Send + 'static) -> Self {
            self.on_write = Box::new(f);
            self
        }
    }

    impl Transport for Fake {
        fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
            match self.inbox.pop_front() {
                None => {
                    std::thread::sleep(timeout.min(self.max_sleep));
                    Err(TransportError::Timeout {
                        op: "read",
                        after: timeout,
                    })
                }
                Some(In::Data(d)) => {
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    if n < d.len() {
                        self.inbox.push_front(In::Data(d[n..].to_vec()));
                    }
                    Ok(n)
                }
                Some(In::Forever(d)) => {
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    self.inbox.push_front(In::Forever(d));
                    Ok(n)
                }
                Some(In::Zlp) => Ok(0),
                Some(In::Disconnect) => Err(TransportError::Disconnected("no such device".into())),
            }
        }
        fn write(&mut self, data: &[u8], _timeout: Duration) -> Result<(), TransportError> {
            if let Some(e) = self.write_results.pop_front() {
                return Err(e);
            }
            self.writes.lock().unwrap().push(data.to_vec());
            (self.on_write)(data, &mut self.inbox);
            Ok(())
        }
        fn describe(&self) -> String {
            "scripted fake".into()
        }
    }

    fn log(s: &str) -> Vec<u8> {
        device_document(&Element::new("log").attr("value", s))
    }

    fn resp(attrs: &[(&str, &str)]) -> Vec<u8> {
        let mut e = Element::new("response");
        for (k, v) in attrs {
            e = e.attr(*k, *v);
        }
        device_document(&e)
    }

    fn ack() -> Vec<u8> {
        resp(&[("value", "ACK"), ("rawmode", "false")])
    }
    fn ack_raw() -> Vec<u8> {
        resp(&[("value", "ACK"), ("rawmode", "true")])
    }

    fn fast_opts() -> FirehoseOptions {
        let mut o = FirehoseOptions::default();
        let t = &mut o.timeouts;
        t.welcome_first = Duration::from_millis(50);
        t.welcome_quiet = Duration::from_millis(30);
        t.welcome_total = Duration::from_millis(300);
        t.nop = Duration::from_millis(50);
        t.configure = Duration::from_millis(200);
        t.short_command = Duration::from_millis(200);
        t.raw_setup = Duration::from_millis(200);
        t.data_base = Duration::from_millis(200);
        t.read_idle = Duration::from_millis(100);
        t.power_ack = Duration::from_millis(50);
        t.power_drain = Duration::from_millis(30);
        t.drain = Duration::from_millis(20);
        o
    }

    fn cmd_name(w: &[u8]) -> Option<String> {
        if !w.starts_with(b"<?xml") {
            return None;
        }
        parse_elements(w, Limits::WIRE)
            .ok()?
            .get(1)
            .map(|e| e.name.clone())
    }

    fn cmd_attr(w: &[u8], k: &str) -> Option<String> {
        parse_elements(w, Limits::WIRE)
            .ok()?
            .get(1)?
            .get(k)
            .map(str::to_string)
    }

    fn welcome_stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(log("INFO: Binary build date: Jan  1 2020 @ 00:00:00"));
        s.extend(log("INFO: Chip serial num: 217664612 (0xcf94c64)"));
        s.extend(log("INFO: Supported Functions (15):"));
        for f in SDX24_FUNCTIONS {
            s.extend(log(&format!("INFO: {f}")));
        }
        s.extend(log("INFO: End of supported functions 15"));
        s
    }

    /// A simple device that ACKs commands and answers configure with `cfg`.
    fn acking_device(cfg: Vec<u8>) -> impl FnMut(&[u8], &mut VecDeque<In>) + Send {
        move |w, inbox| match cmd_name(w).as_deref() {
            Some("configure") => inbox.push_back(In::Data(cfg.clone())),
            Some(_) => inbox.push_back(In::Data(ack())),
            None => {}
        }
    }

    fn nand_cfg_ack() -> Vec<u8> {
        resp(&[
            ("value", "ACK"),
            ("MemoryName", "nand"),
            ("MinVersionSupported", "1"),
            ("Version", "1"),
            ("MaxPayloadSizeToTargetInBytes", "8192"),
            ("MaxPayloadSizeToTargetInBytesSupported", "8192"),
            ("MaxXMLSizeInBytes", "4096"),
        ])
    }

    #[test]
    fn welcome_with_the_real_15_functions_split_and_merged() {
        let s = welcome_stream();
        // Part arrives with the Sahara layer's last read; the rest split mid-document.
        let (a, rest) = s.split_at(40);
        let (b, c) = rest.split_at(777);
        let fake = Fake::new(vec![In::Data(b.to_vec()), In::Zlp, In::Data(c.to_vec())]);
        let mut fh = FirehoseSession::new(fake, a.to_vec(), fast_opts());
        let w = fh.wait_ready().unwrap();
        assert!(w.ready);
        assert!(!w.via_nop_probe);
        assert_eq!(w.functions, SDX24_FUNCTIONS.to_vec());
        assert_eq!(w.chip_serial, Some(217664612));
        assert_eq!(w.build_date.as_deref(), Some("Jan  1 2020 @ 00:00:00"));
        assert_eq!(fh.logs().len(), 19);
        assert!(fh.welcome().is_some());
        assert!(fh.into_transport().writes.lock().unwrap().is_empty());
    }

    #[test]
    fn no_welcome_falls_back_to_a_nop_probe() {
        let fake = Fake::new(vec![]).on_write(|w, inbox| {
            if cmd_name(w).as_deref() == Some("nop") {
                inbox.push_back(In::Data(resp(&[("value", "NAK")])));
            }
        });
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let w = fh.wait_ready().unwrap();
        assert!(w.via_nop_probe);
        assert!(w.ready);
    }

    #[test]
    fn silent_programmer_fails_in_bounded_time() {
        let mut fake = Fake::new(vec![]);
        fake.max_sleep = Duration::from_secs(10);
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let t0 = Instant::now();
        let e = fh.wait_ready().unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(e.what.contains("never answered"), "{e}");
        assert_eq!(e.kind, ErrorKind::Failure);
    }

    #[test]
    fn endless_logs_do_not_stall_the_welcome_or_a_command() {
        let fake = Fake::new(vec![In::Forever(log("INFO: chatter"))]);
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let t0 = Instant::now();
        let w = fh.wait_ready().unwrap();
        assert!(!w.ready);
        assert!(t0.elapsed() < Duration::from_secs(2));
        let t0 = Instant::now();
        let e = fh.nop().unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(e.what.contains("waiting for the answer to nop"), "{e}");
        assert!(e.what.contains("gave up after"), "{e}");
    }

    #[test]
    fn configure_nak_adopts_the_device_size_then_ack() {
        let mut n = 0;
        let fake = Fake::new(vec![]).on_write(move |w, inbox| {
            if cmd_name(w).as_deref() != Some("configure") {
                return;
            }
            n += 1;
            if n == 1 {
                let mut d = log("ERROR: Host's payload to target size is too large");
                d.extend(resp(&[
                    ("value", "NAK"),
                    ("MaxPayloadSizeToTargetInBytes", "16384"),
                    ("MaxPayloadSizeToTargetInBytesSupported", "16384"),
                ]));
                inbox.push_back(In::Data(d));
            } else {
                inbox.push_back(In::Data(resp(&[
                    ("value", "ACK"),
                    ("MemoryName", "eMMC"),
                    ("MinVersionSupported", "1"),
                    ("Version", "1"),
                    ("MaxPayloadSizeToTargetInBytes", "16384"),
                    ("MaxPayloadSizeToTargetInBytesSupported", "16384"),
                    ("MaxXMLSizeInBytes", "4096"),
                ])));
            }
        });
        let writes = fake.writes.clone();
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let n = fh.configure(StorageKind::Emmc).unwrap();
        assert_eq!(n.max_payload_to_target, 16384);
        assert_eq!(n.memory_name.as_deref(), Some("eMMC"));
        assert_eq!(n.attempts, 2);
        let w = writes.lock().unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            cmd_attr(&w[0], "MaxPayloadSizeToTargetInBytes").as_deref(),
            Some("1048576")
        );
        assert_eq!(
            cmd_attr(&w[1], "MaxPayloadSizeToTargetInBytes").as_deref(),
            Some("16384")
        );
        assert_eq!(cmd_attr(&w[0], "ZlpAwareHost").as_deref(), Some("1"));
        assert_eq!(cmd_attr(&w[0], "MemoryName").as_deref(), Some("emmc"));
        assert!(fh.logs().iter().any(|l| l.contains("too large")));
    }

    #[test]
    fn configure_ack_moves_up_to_supported() {
        let fake = Fake::new(vec![]).on_write(|w, inbox| {
            let asked = cmd_attr(w, "MaxPayloadSizeToTargetInBytes").unwrap();
            inbox.push_back(In::Data(resp(&[
                ("value", "ACK"),
                ("MinVersionSupported", "1"),
                ("MaxPayloadSizeToTargetInBytes", &asked),
                ("MaxPayloadSizeToTargetInBytesSupported", "1048576"),
            ])));
        });
        let writes = fake.writes.clone();
        let mut o = fast_opts();
        o.zlp_aware = false;
        let mut fh = FirehoseSession::new(fake, vec![], o);
        let n = fh.configure(StorageKind::Nand).unwrap();
        assert_eq!(n.max_payload_to_target, 1048576);
        assert!(!n.zlp_aware);
        let w = writes.lock().unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            cmd_attr(&w[0], "MaxPayloadSizeToTargetInBytes").as_deref(),
            Some("8192")
        );
        assert_eq!(cmd_attr(&w[0], "ZlpAwareHost").as_deref(), Some("0"));
        assert_eq!(
            cmd_attr(&w[1], "MaxPayloadSizeToTargetInBytes").as_deref(),
            Some("1048576")
        );
    }

    #[test]
    fn configure_refuses_min_version_2() {
        let fake = Fake::new(vec![]).on_write(|_, inbox| {
            inbox.push_back(In::Data(resp(&[
                ("value", "ACK"),
                ("MinVersionSupported", "2"),
                ("Version", "2"),
                ("MaxPayloadSizeToTargetInBytes", "1048576"),
            ])));
        });
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let e = fh.configure(StorageKind::Ufs).unwrap_err();
        assert!(e.what.contains("version 2"), "{e}");
        assert!(fh.negotiated().is_none());
    }

    /// A device that enters raw mode on program and counts raw bytes; with `extra_after_ack`
    /// it sends a log in the same read as the rawmode ACK.
    fn programming_device(
        total: usize,
        raw: Arc<Mutex<Vec<u8>>>,
        chunks: Arc<Mutex<Vec<usize>>>,
    ) -> impl FnMut(&[u8], &mut VecDeque<In>) + Send {
        move |w, inbox| match cmd_name(w).as_deref() {
            Some("configure") => inbox.push_back(In::Data(nand_cfg_ack())),
            Some("program") => {
                let mut d = log("INFO: Calling handler for program");
                d.extend(ack_raw());
                d.extend(log(
                    "INFO: NAND was previously open, returning existing handle 0.",
                ));
                inbox.push_back(In::Data(d));
            }
            Some(_) => inbox.push_back(In::Data(ack())),
            None => {
                chunks.lock().unwrap().push(w.len());
                let mut r = raw.lock().unwrap();
                r.extend_from_slice(w);
                if r.len() == total {
                    inbox.push_back(In::Zlp);
                    inbox.push_back(In::Data(ack()));
                }
            }
        }
    }

    #[test]
    fn program_streams_negotiated_chunks_and_zero_pads() {
        let total = 5 * 4096;
        let raw = Arc::new(Mutex::new(Vec::new()));
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let fake =
            Fake::new(vec![]).on_write(programming_device(total, raw.clone(), chunks.clone()));
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        fh.configure(StorageKind::Nand).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let cmd = Program::new(4096, 5, 0, "13696")
            .filename("..\\tools.fv")
            .pages_per_block(64)
            .last_sector(12735);
        let mut seen = Vec::new();
        fh.program(&cmd, &mut &data[..], data.len() as u64, &mut |n| {
            seen.push(n)
        })
        .unwrap();
        assert_eq!(*chunks.lock().unwrap(), vec![8192, 8192, 4096]);
        let r = raw.lock().unwrap();
        assert_eq!(r.len(), total);
        assert_eq!(&r[..10_000], &data[..]);
        assert!(r[10_000..].iter().all(|b| *b == 0));
        assert_eq!(seen, vec![8192, 16384, 20480]);
        // The log that came in the same read as the rawmode ACK was kept.
        assert!(fh.logs().iter().any(|l| l.contains("previously open")));
        // The session is still in step: the next command works.
        fh.nop().unwrap();
    }

    #[test]
    fn program_refuses_an_image_larger_than_declared_and_sends_nothing() {
        let fake = Fake::new(vec![]);
        let writes = fake.writes.clone();
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let data = vec![1u8; 4097];
        let e = fh
            .program(
                &Program::new(4096, 1, 0, "0").label("sbl"),
                &mut &data[..],
                4097,
                &mut |_| {},
            )
            .unwrap_err();
        assert!(e.what.contains("sbl"), "{e}");
        assert!(e.what.contains("nothing was sent"));
        assert!(writes.lock().unwrap().is_empty());
    }

    #[test]
    fn program_with_a_short_file_keeps_in_step_and_reports() {
        let total = 2 * 512;
        let raw = Arc::new(Mutex::new(Vec::new()));
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake::new(vec![]).on_write(programming_device(total, raw.clone(), chunks));
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let data = vec![7u8; 300];
        let e = fh
            .program(
                &Program::new(512, 2, 0, "34").label("boot"),
                &mut &data[..],
                1000,
                &mut |_| {},
            )
            .unwrap_err();
        assert!(e.why.contains("ended after 300 of 1000"), "{e}");
        assert_eq!(raw.lock().unwrap().len(), total);
        fh.nop().unwrap();
    }

    #[test]
    fn program_nak_start_sector_unaligned_is_explained() {
        let fake = Fake::new(vec![]).on_write(|w, inbox| {
            if cmd_name(w).as_deref() == Some("program") {
                let mut d = log("INFO: Calling handler for program");
                d.extend(log("start_sector unaligned"));
                d.extend(resp(&[("value", "NAK")]));
                inbox.push_back(In::Data(d));
            }
        });
        let writes = fake.writes.clone();
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let data = vec![0u8; 4096];
        let e = fh
            .program(
                &Program::new(4096, 1, 0, "1"),
                &mut &data[..],
                4096,
                &mut |_| {},
            )
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failure);
        assert!(
            e.what.contains("doesn't match this module's flash chip"),
            "{e}"
        );
        assert!(e.what.contains("Nothing was written"));
        assert!(e.why.contains("start_sector unaligned"));
        assert_eq!(writes.lock().unwrap().len(), 1, "no raw data after a NAK");
    }

    #[test]
    fn read_keeps_raw_bytes_merged_with_the_ack_and_skips_zlps() {
        let total = 3 * 512;
        let data: Vec<u8> = (0..total).map(|i| (i * 7 % 256) as u8).collect();
        let d2 = data.clone();
        let fake = Fake::new(vec![]).on_write(move |w, inbox| {
            if cmd_name(w).as_deref() == Some("read") {
                let mut first = ack_raw();
                first.extend_from_slice(&d2[..100]);
                inbox.push_back(In::Data(first));
                inbox.push_back(In::Zlp);
                inbox.push_back(In::Data(d2[100..1000].to_vec()));
                let mut last = d2[1000..].to_vec();
                last.extend(ack());
                last.extend(log("INFO: read done"));
                inbox.push_back(In::Data(last));
            } else {
                inbox.push_back(In::Data(ack()));
            }
        });
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let mut out = Vec::new();
        let mut last = 0;
        fh.read(&Read::new(512, 3, 0, "0"), &mut out, &mut |n| last = n)
            .unwrap();
        assert_eq!(out, data);
        assert_eq!(last, total as u64);
        fh.nop().unwrap();
        assert!(fh.logs().iter().any(|l| l == "INFO: read done"));
    }

    #[test]
    fn read_stall_times_out_with_what_was_awaited() {
        let fake = Fake::new(vec![]).on_write(|w, inbox| {
            if cmd_name(w).as_deref() == Some("read") {
                let mut d = ack_raw();
                d.extend_from_slice(&[0u8; 10]);
                inbox.push_back(In::Data(d));
            }
        });
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let t0 = Instant::now();
        let e = fh
            .read(&Read::new(512, 1, 0, "0"), &mut Vec::new(), &mut |_| {})
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(e.what.contains("10 of 512 bytes"), "{e}");
    }

    #[test]
    fn disconnect_is_device_lost() {
        let fake = Fake::new(vec![]).on_write(|_, inbox| inbox.push_back(In::Disconnect));
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let e = fh.erase(&Erase::new(4096, 64, 0, "0")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeviceLost);
        assert!(e.what.contains("dropped off"), "{e}");
    }

    #[test]
    fn power_reset_then_link_drop_is_fine() {
        let fake = Fake::new(vec![]).on_write(|w, inbox| {
            if cmd_name(w).as_deref() == Some("power") {
                let mut d = log("INFO: Will issue reset/power off 100 useconds, if this hangs check if watchdog is enabled");
                d.extend(ack());
                inbox.push_back(In::Data(d));
                inbox.push_back(In::Disconnect);
            }
        });
        let writes = fake.writes.clone();
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        fh.power(PowerMode::Reset, 10).unwrap();
        assert_eq!(
            cmd_attr(&writes.lock().unwrap()[0], "DelayInSeconds").as_deref(),
            Some("10")
        );
        // Silence, or the link gone before any ACK, is also fine.
        let mut fh = FirehoseSession::new(Fake::new(vec![]), vec![], fast_opts());
        fh.power(PowerMode::ResetToEdl, 0).unwrap();
        let fake = Fake::new(vec![]).on_write(|_, inbox| inbox.push_back(In::Disconnect));
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        fh.power(PowerMode::Off, 0).unwrap();
        // A NAK is not.
        let fake = Fake::new(vec![])
            .on_write(|_, inbox| inbox.push_back(In::Data(resp(&[("value", "NAK")]))));
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        assert!(fh.power(PowerMode::Reset, 0).is_err());
    }

    #[test]
    fn write_timeout_drains_and_retries_once() {
        let mut fake = Fake::new(vec![In::Data(log("INFO: late log"))])
            .on_write(|_, inbox| inbox.push_back(In::Data(ack())));
        fake.write_results.push_back(TransportError::Timeout {
            op: "write",
            after: Duration::from_secs(1),
        });
        let writes = fake.writes.clone();
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        fh.set_bootable(0).unwrap();
        assert_eq!(writes.lock().unwrap().len(), 1);
        assert!(fh.logs().iter().any(|l| l == "INFO: late log"));

        let mut fake = Fake::new(vec![]);
        for _ in 0..2 {
            fake.write_results.push_back(TransportError::Timeout {
                op: "write",
                after: Duration::from_secs(1),
            });
        }
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let e = fh.set_bootable(0).unwrap_err();
        assert!(e.what.contains("setbootablestoragedrive"), "{e}");
    }

    #[test]
    fn garbled_xml_nak_is_retried_once_and_garbage_documents_are_skipped() {
        let mut n = 0;
        let fake = Fake::new(vec![]).on_write(move |_, inbox| {
            n += 1;
            if n == 1 {
                let mut d =
                    b"<?xml version=\"1.0\" ?><data><response value=\"MAYBE\"/></data>".to_vec();
                d.extend(log("ERROR: XML not formed correctly"));
                d.extend(resp(&[("value", "NAK")]));
                inbox.push_back(In::Data(d));
            } else {
                inbox.push_back(In::Data(ack()));
            }
        });
        let writes = fake.writes.clone();
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        fh.patch(&Patch::disk(512, 0, "NUM_DISK_SECTORS-1.", 16, 4, "0"))
            .unwrap();
        assert_eq!(writes.lock().unwrap().len(), 2);
    }

    /// Found by the fault campaign (a NAND erase answered with broken XML waited out its whole
    /// size-scaled timeout, minutes for a large partition): once the response itself arrived
    /// unreadable, the wait ends after `short_command`.
    #[test]
    fn a_garbled_response_is_not_waited_out_for_the_whole_scaled_timeout() {
        use crate::transport::{pipe, Framing};
        let (host, mut dev) = pipe::pair(Framing::Stream);
        let device = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.ends_with(b"</data>") {
                match dev.read(&mut buf, Duration::from_secs(5)) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => return,
                }
            }
            let garbled = b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<data>\n<response value=\"ACK\" rawmode=\n</data>";
            dev.write(garbled, Duration::from_secs(1)).unwrap();
            // Silent from now on, until the host goes away.
            while dev.read(&mut buf, Duration::from_secs(30)).is_ok() {}
        });
        let mut opts = fast_opts();
        // An erase whose scaled wait is long (as for a large NAND partition).
        opts.timeouts.erase_base = Duration::from_secs(120);
        let mut fh = FirehoseSession::new(host, vec![], opts);
        let e = fh.erase(&Erase::new(4096, 64, 0, "9984")).unwrap_err();
        assert!(e.what.contains("could not be read"), "{e}");
        assert!(e.why.contains("within 0.2 s"), "{e}");
        drop(fh);
        device.join().unwrap();
    }

    #[test]
    fn file_patches_are_not_sent() {
        let fake = Fake::new(vec![]);
        let writes = fake.writes.clone();
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let mut p = Patch::disk(512, 0, "1", 16, 4, "0");
        p.filename = "gpt_main0.bin".into();
        fh.patch(&p).unwrap();
        assert!(writes.lock().unwrap().is_empty());
    }

    #[test]
    fn storage_info_and_sha256() {
        let hexs = "0f".repeat(32);
        let fake = Fake::new(vec![]).on_write(move |w, inbox| match cmd_name(w).as_deref() {
            Some("getstorageinfo") => {
                let mut d = log(r#"INFO: {"storage_info": {"total_blocks":2048, "block_size":131072, "page_size":2048, "num_physical":1, "mem_type":"NAND", "prod_name":"MT29F2G"}}"#);
                d.extend(ack());
                inbox.push_back(In::Data(d));
            }
            Some("getsha256digest") => {
                let mut d = ack();
                d.extend(log(&format!("INFO: Digest {hexs}")));
                inbox.push_back(In::Data(d));
            }
            _ => inbox.push_back(In::Data(resp(&[("value", "NAK")]))),
        });
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let i = fh.storage_info(0).unwrap();
        assert_eq!(i.pages_per_block(), Some(64));
        assert_eq!(i.mem_type.as_deref(), Some("NAND"));
        let d = fh.sha256(&GetSha256Digest::new(4096, 4, 0, "0")).unwrap();
        assert_eq!(d, [0x0f; 32]);
        let e = fh.nop().unwrap_err();
        assert!(e.what.contains("refused the nop"), "{e}");
    }

    #[test]
    fn pending_bytes_and_into_parts() {
        let mut pending = log("INFO: hello");
        pending.extend(b"<?xml ver");
        let fake = Fake::new(vec![]);
        let fh = FirehoseSession::new(fake, pending, fast_opts());
        let (_t, rest) = fh.into_parts();
        assert!(rest.ends_with(b"<?xml ver"));
    }

    #[test]
    fn attempt_retry_reads_again_and_attempt_restart_fails() {
        let fake = Fake::new(vec![]).on_write(|_, inbox| {
            let mut d = resp(&[("value", "NAK"), ("AttemptRetry", "1")]);
            d.extend(ack());
            inbox.push_back(In::Data(d));
        });
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        fh.nop().unwrap();
        let fake = Fake::new(vec![]).on_write(|_, inbox| {
            inbox.push_back(In::Data(resp(&[("value", "NAK"), ("AttemptRestart", "1")])))
        });
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        let e = fh.erase(&Erase::whole_partition(512, 0)).unwrap_err();
        assert!(e.what.contains("restarted"), "{e}");
    }

    #[test]
    fn chunk_size_is_a_multiple_of_the_sector_size() {
        let cfg = resp(&[("value", "ACK"), ("MaxPayloadSizeToTargetInBytes", "10000")]);
        let fake = Fake::new(vec![]).on_write(acking_device(cfg));
        let mut fh = FirehoseSession::new(fake, vec![], fast_opts());
        assert_eq!(fh.chunk_size(4096), UNCONFIGURED_PAYLOAD as usize);
        fh.configure(StorageKind::Ufs).unwrap();
        assert_eq!(fh.chunk_size(4096), 8192);
        assert_eq!(fh.chunk_size(512), 9728);
    }
}
