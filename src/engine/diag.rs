//! A DIAG client over a [`Transport`] (the modem's DM port in normal mode): drain pending
//! output, then request/response with bounded waits. The protocol itself lives in
//! [`crate::protocol::diag`].
//!
//! - **Draining.** A DM port may already be streaming log, event and message packets when it is
//!   opened; QFirehose reads for up to 100 × 1 s before switching to EDL because this spam
//!   blocked the switch (PROTOCOLS.md §6). The session drains once before its first request:
//!   it reads until the port has been quiet for [`DiagTimeouts::drain_quiet`], giving up after
//!   [`DiagTimeouts::drain_max`] (the spam may never stop; replies are matched anyway).
//! - **Matching.** Frames that are not the reply to the pending request (log output, replies to
//!   earlier requests) are skipped; an error response (0x13/0x14/0x15/…) that echoes the request
//!   is a refusal. Frames with a bad CRC are counted and skipped.
//! - **Switch to EDL.** [`DiagSession::switch_to_edl`] succeeds when the modem echoes the
//!   request (what QFirehose and fwupd check) *or* when the link drops while waiting for the
//!   echo: a real module resets at once, and its DM port can vanish before the echo is read.
//!   Either way the caller should next wait for 05c6:9008 (about 2 s later in a QFirehose log,
//!   USERS.md §6). No reply at all within [`DiagTimeouts::edl_echo`] is an error.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, ErrorKind};
use crate::protocol::diag::efs::{self, EfsDirEntry, EfsRequest, EfsResponse, EfsStat};
use crate::protocol::diag::hdlc::{self, Decoder};
use crate::protocol::diag::packet::{
    self, match_reply, subsys, BuildId, DiagError, NvItem, RejectKind, Rejection, Reply,
};
use crate::transport::{Transport, TransportError};

/// Waits used by [`DiagSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagTimeouts {
    /// Most time for one write.
    pub write: Duration,
    /// Most time to wait for the reply to one request (qfenix waits 3 s).
    pub response: Duration,
    /// Draining stops after this long without input.
    pub drain_quiet: Duration,
    /// Draining stops after this long in total.
    pub drain_max: Duration,
    /// Most time to wait for the echo of the switch to EDL.
    pub edl_echo: Duration,
}

impl Default for DiagTimeouts {
    fn default() -> Self {
        DiagTimeouts {
            write: Duration::from_secs(3),
            response: Duration::from_secs(3),
            drain_quiet: Duration::from_millis(300),
            drain_max: Duration::from_secs(5),
            edl_echo: Duration::from_secs(10),
        }
    }
}

/// How the switch to EDL ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdlSwitch {
    /// The modem echoed the request.
    Echoed,
    /// The link dropped while waiting for the echo (the module reset at once).
    LinkDropped,
}

/// Counters for logs and bug reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiagStats {
    /// Bytes read and thrown away while draining.
    pub drained_bytes: usize,
    /// Well-formed frames that were not the reply being waited for.
    pub skipped_frames: usize,
    /// Frames dropped for a bad CRC, bad escape or size.
    pub bad_frames: usize,
}

/// Most entries [`DiagSession::efs_list_dir`] returns.
pub const MAX_DIR_ENTRIES: usize = 4096;

/// Why one exchange failed, before it is put in words.
enum Fail {
    Transport(TransportError),
    Rejected(Rejection),
    NoAnswer(Duration),
}

/// A DIAG client on one DM port.
pub struct DiagSession<T: Transport> {
    t: T,
    dec: Decoder,
    frames: VecDeque<Vec<u8>>,
    timeouts: DiagTimeouts,
    drained: bool,
    efs_subsys: Option<u8>,
    stats: DiagStats,
}

impl<T: Transport> DiagSession<T> {
    pub fn new(t: T) -> Self {
        Self::with_timeouts(t, DiagTimeouts::default())
    }

    pub fn with_timeouts(t: T, timeouts: DiagTimeouts) -> Self {
        DiagSession {
            t,
            dec: Decoder::new(),
            frames: VecDeque::new(),
            timeouts,
            drained: false,
            efs_subsys: None,
            stats: DiagStats::default(),
        }
    }

    pub fn stats(&self) -> DiagStats {
        self.stats
    }

    pub fn into_inner(self) -> T {
        self.t
    }

    fn port(&self) -> String {
        self.t.describe()
    }

    // ----- raw exchange -------------------------------------------------------------------

    /// Read and discard pending output until the port is quiet (bounded); returns the bytes
    /// thrown away. Runs by itself before the first request.
    pub fn drain(&mut self) -> Result<usize, Error> {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            let left = self.timeouts.drain_max.saturating_sub(start.elapsed());
            if left.is_zero() {
                tracing::debug!(target: "qrescue::diag", "still receiving after {:?}; stop draining", self.timeouts.drain_max);
                break;
            }
            match self.t.read(&mut buf, self.timeouts.drain_quiet.min(left)) {
                Ok(n) => total += n,
                Err(TransportError::Timeout { .. }) => break,
                Err(e) => return Err(self.transport_error(e, "draining the DIAG port")),
            }
        }
        self.dec.reset();
        self.frames.clear();
        self.drained = true;
        self.stats.drained_bytes += total;
        if total > 0 {
            tracing::debug!(target: "qrescue::diag", "drained {total} bytes of pending DIAG output");
        }
        Ok(total)
    }

    fn exchange(&mut self, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, Fail> {
        self.t
            .write(&hdlc::encode(payload), self.timeouts.write)
            .map_err(Fail::Transport)?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            while let Some(frame) = self.frames.pop_front() {
                match match_reply(payload, &frame) {
                    Reply::Response(_) => return Ok(frame),
                    Reply::Rejected(r) => return Err(Fail::Rejected(r)),
                    Reply::Unrelated => {
                        self.stats.skipped_frames += 1;
                        tracing::trace!(target: "qrescue::diag", "skipped {}", packet::describe_frame(&frame));
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Fail::NoAnswer(timeout));
            }
            match self.t.read(&mut buf, left) {
                Ok(n) => {
                    for r in self.dec.push(&buf[..n]) {
                        match r {
                            Ok(f) => self.frames.push_back(f),
                            Err(e) => {
                                self.stats.bad_frames += 1;
                                tracing::debug!(target: "qrescue::diag", "dropped a frame: {e}");
                            }
                        }
                    }
                }
                Err(TransportError::Timeout { .. }) => return Err(Fail::NoAnswer(timeout)),
                Err(e) => return Err(Fail::Transport(e)),
            }
        }
    }

    /// Send one request payload and return the reply payload. `what` names the operation for
    /// messages ("reading the firmware revision").
    pub fn request(&mut self, payload: &[u8], what: &str) -> Result<Vec<u8>, Error> {
        if !self.drained {
            self.drain()?;
        }
        let timeout = self.timeouts.response;
        self.exchange(payload, timeout)
            .map_err(|f| self.fail(f, what))
    }

    // ----- errors -------------------------------------------------------------------------

    fn transport_error(&self, e: TransportError, during: &str) -> Error {
        let port = self.port();
        match e {
            TransportError::Disconnected(d) => Error::new(
                ErrorKind::DeviceLost,
                format!("The DIAG port went away while {during}"),
                format!("{port}: {d}. The modem reset or was unplugged"),
                "Check what the modem shows up as now (qrescue watch) and start again from there",
            ),
            TransportError::Permission(d) => Error::new(
                ErrorKind::Permission,
                format!("Permission denied on the DIAG port while {during}"),
                format!("{port}: {d}"),
                "Give your user access to the modem's ports (udev rule or the dialout group) or run with the needed rights",
            ),
            TransportError::Busy(d) => Error::failure(
                format!("The DIAG port is busy while {during}"),
                format!("{port}: {d}. Another program (ModemManager, qmi-proxy, another tool) holds it"),
                "Stop the program that holds the port and retry",
            ),
            TransportError::Timeout { after, .. } => Error::failure(
                format!("The DIAG port did not take our data while {during}"),
                format!("{port}: a write did not finish within {} ms", after.as_millis()),
                "Check the cable and that the DM interface is the right one for this model, then retry",
            ),
            TransportError::Io(io) => Error::failure(
                format!("An I/O error on the DIAG port while {during}"),
                format!("{port}: {io}"),
                "Check the cable and port, then retry",
            ),
        }
    }

    fn fail(&self, f: Fail, what: &str) -> Error {
        match f {
            Fail::Transport(e) => self.transport_error(e, what),
            Fail::Rejected(r) => rejected(&r, what),
            Fail::NoAnswer(after) => Error::failure(
                format!("No DIAG answer while {what}"),
                format!(
                    "{} sent nothing that answers the request within {} ms (the modem may still be starting, or this is not its DM interface)",
                    self.port(),
                    after.as_millis()
                ),
                "Wait until the modem has finished starting and retry; check that the port is the DM interface for this model (interface 0 on most, 3 on laptop modules)",
            ),
        }
    }

    // ----- operations ---------------------------------------------------------------------

    /// Switch the modem to emergency download mode (EDL, 05c6:9008). See the module notes for
    /// what counts as success.
    pub fn switch_to_edl(&mut self) -> Result<EdlSwitch, Error> {
        const WHAT: &str = "switching the modem to download mode";
        if !self.drained {
            self.drain()?;
        }
        let req = packet::switch_to_edl_request();
        match self.exchange(&req, self.timeouts.edl_echo) {
            Ok(frame) => match packet::parse_switch_to_edl(&frame) {
                Ok(()) => Ok(EdlSwitch::Echoed),
                Err(e) => Err(Error::failure(
                    "The modem answered the switch to download mode unexpectedly",
                    format!("{e}; QFirehose and fwupd only accept the exact echo"),
                    "Watch whether 05c6:9008 appears anyway; if not, retry or use the test-point method",
                )
                .with_source(e)),
            },
            Err(Fail::Transport(TransportError::Disconnected(d))) => {
                tracing::info!(target: "qrescue::diag", "DM port dropped after the EDL switch ({d}); the modem is resetting");
                Ok(EdlSwitch::LinkDropped)
            }
            Err(f) => Err(self.fail(f, WHAT)),
        }
    }

    /// Read the extended build ID (the firmware revision). QFirehose notes that this fails
    /// while the modem is not ready; callers may treat a failure as not fatal.
    pub fn build_id(&mut self) -> Result<BuildId, Error> {
        const WHAT: &str = "reading the firmware revision over DIAG";
        let frame = self.request(&packet::build_id_request(), WHAT)?;
        BuildId::parse(&frame).map_err(|e| malformed(e, WHAT))
    }

    /// Read NV item `item`. An item that is inactive or not defined is returned with that
    /// status (it is an answer, not a failure); check [`NvItem::is_ok`].
    pub fn nv_read(&mut self, item: u16) -> Result<NvItem, Error> {
        let what = format!("reading NV item {item}");
        let frame = self.request(&packet::nv_read_request(item), &what)?;
        let nv = NvItem::parse(&frame).map_err(|e| malformed(e, &what))?;
        if nv.item != item {
            let e = DiagError::ItemMismatch {
                asked: item,
                got: nv.item,
            };
            return Err(malformed(e, &what));
        }
        Ok(nv)
    }

    /// The EFS2 subsystem ID this modem answers on (0x13, else 0x3E), found with HELLO.
    pub fn efs_subsystem(&mut self) -> Result<u8, Error> {
        if let Some(s) = self.efs_subsys {
            return Ok(s);
        }
        const WHAT: &str = "opening the modem's EFS2 file system over DIAG";
        if !self.drained {
            self.drain()?;
        }
        let mut last = None;
        for sub in [subsys::EFS2, subsys::EFS2_ALT] {
            let req = EfsRequest::Hello(efs::HelloParams::host_default()).encode(sub);
            match self.exchange(&req, self.timeouts.response) {
                Ok(_) => {
                    self.efs_subsys = Some(sub);
                    return Ok(sub);
                }
                Err(Fail::Rejected(r)) if r.kind == RejectKind::BadCommand => {
                    last = Some(Fail::Rejected(r))
                }
                Err(f @ Fail::NoAnswer(_)) => last = Some(f),
                Err(f) => return Err(self.fail(f, WHAT)),
            }
        }
        let mut err = self.fail(last.unwrap_or(Fail::NoAnswer(self.timeouts.response)), WHAT);
        err.next = "This firmware does not offer EFS2 over DIAG (subsystems 0x13 and 0x3E were tried); back up the EFS partitions in download mode instead".to_string();
        Err(err)
    }

    fn efs_call(&mut self, req: EfsRequest, what: &str) -> Result<EfsResponse, Error> {
        let sub = self.efs_subsystem()?;
        let frame = self.request(&req.encode(sub), what)?;
        let (_, resp) = EfsResponse::parse(&frame).map_err(|e| malformed(e, what))?;
        if resp.op() != req.op() {
            return Err(malformed(
                DiagError::Malformed {
                    what: "EFS2",
                    detail: format!("reply for op {} to op {}", resp.op(), req.op()),
                },
                what,
            ));
        }
        resp.check().map_err(|e| efs_failed(e, what))
    }

    /// STAT an EFS2 path.
    pub fn efs_stat(&mut self, path: &str) -> Result<EfsStat, Error> {
        efs::check_path(path).map_err(bad_path)?;
        let what = format!("reading the EFS2 attributes of {path}");
        match self.efs_call(
            EfsRequest::Stat {
                path: path.to_string(),
            },
            &what,
        )? {
            EfsResponse::Stat { stat, .. } => Ok(stat),
            other => Err(unexpected(&other, &what)),
        }
    }

    /// List an EFS2 directory (without `.` and `..`), at most [`MAX_DIR_ENTRIES`] entries.
    pub fn efs_list_dir(&mut self, path: &str) -> Result<Vec<EfsDirEntry>, Error> {
        efs::check_path(path).map_err(bad_path)?;
        let what = format!("listing the EFS2 directory {path}");
        let dir = match self.efs_call(
            EfsRequest::OpenDir {
                path: path.to_string(),
            },
            &what,
        )? {
            EfsResponse::OpenDir { dir, .. } => dir,
            other => return Err(unexpected(&other, &what)),
        };
        let listed = self.read_dir(dir, &what);
        let closed = self.efs_call(EfsRequest::CloseDir { dir }, &what);
        let entries = listed?;
        if let Err(e) = closed {
            tracing::debug!(target: "qrescue::diag", "closedir failed after listing {path}: {e}");
        }
        Ok(entries)
    }

    fn read_dir(&mut self, dir: i32, what: &str) -> Result<Vec<EfsDirEntry>, Error> {
        let mut out = Vec::new();
        for seq in 1..=(MAX_DIR_ENTRIES as i32 + 2) {
            match self.efs_call(EfsRequest::ReadDir { dir, seq }, what)? {
                EfsResponse::ReadDir { entry, .. } => {
                    if entry.is_end() {
                        return Ok(out);
                    }
                    if entry.name != "." && entry.name != ".." {
                        if out.len() >= MAX_DIR_ENTRIES {
                            break;
                        }
                        out.push(entry);
                    }
                }
                other => return Err(unexpected(&other, what)),
            }
        }
        tracing::warn!(target: "qrescue::diag", "EFS2 directory listing cut at {MAX_DIR_ENTRIES} entries");
        Ok(out)
    }

    /// Read a whole EFS2 file of at most `max_bytes` bytes (STAT, OPEN, READ in 1 KiB steps,
    /// CLOSE). A larger file is refused before reading. EFS item files that only the GET item
    /// interface can read are not supported.
    pub fn efs_read_file(&mut self, path: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        let stat = self.efs_stat(path)?;
        let what = format!("reading the EFS2 file {path}");
        if stat.is_dir() {
            return Err(Error::usage(
                format!("{path} on the modem is a directory, not a file"),
                "List it instead, or name a file inside it",
            ));
        }
        let size = u64::try_from(stat.size).unwrap_or(0);
        if size > max_bytes {
            return Err(Error::failure(
                format!("{path} on the modem is larger than allowed"),
                format!("It has {size} bytes; the limit for this read is {max_bytes} bytes"),
                "Raise the limit if the file is expected to be this large",
            ));
        }
        let fd = match self.efs_call(
            EfsRequest::Open {
                flags: efs::O_RDONLY,
                mode: 0,
                path: path.to_string(),
            },
            &what,
        )? {
            EfsResponse::Open { fd, .. } => fd,
            other => return Err(unexpected(&other, &what)),
        };
        let read = self.read_fd(fd, size, &what);
        if let Err(e) = self.efs_call(EfsRequest::Close { fd }, &what) {
            tracing::debug!(target: "qrescue::diag", "close failed after reading {path}: {e}");
        }
        read
    }

    fn read_fd(&mut self, fd: i32, size: u64, what: &str) -> Result<Vec<u8>, Error> {
        let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
        while (data.len() as u64) < size {
            let offset = data.len() as u32;
            let len = (size - data.len() as u64).min(u64::from(efs::MAX_READ_REQ)) as u32;
            match self.efs_call(EfsRequest::Read { fd, len, offset }, what)? {
                EfsResponse::Read {
                    bytes_read,
                    data: chunk,
                    ..
                } => {
                    let n = usize::try_from(bytes_read).unwrap_or(0);
                    if n == 0 {
                        tracing::debug!(target: "qrescue::diag", "EFS2 file ended at {offset} of {size} bytes");
                        break;
                    }
                    if n > chunk.len() || n > len as usize {
                        return Err(malformed(
                            DiagError::Malformed {
                                what: "EFS2 read",
                                detail: format!(
                                    "says {n} bytes, carries {} for a {len}-byte request",
                                    chunk.len()
                                ),
                            },
                            what,
                        ));
                    }
                    data.extend_from_slice(&chunk[..n]);
                }
                other => return Err(unexpected(&other, what)),
            }
        }
        Ok(data)
    }
}

fn rejected(r: &Rejection, what: &str) -> Error {
    let next = match r.kind {
        RejectKind::BadCommand => {
            "This firmware does not offer the command over DIAG; use AT commands or download mode instead"
        }
        RejectKind::SpcLocked | RejectKind::SecurityRequired => {
            "This firmware locks the command behind DIAG security; use AT commands or download mode instead"
        }
        RejectKind::BadMode => "Retry once the modem has finished starting; some commands need it offline",
        RejectKind::BadParameters | RejectKind::BadLength => {
            "This firmware expects another layout for the command; please report the model and firmware"
        }
    };
    Error::failure(
        format!("The modem refused DIAG while {what}"),
        r.to_string(),
        next,
    )
    .with_source(DiagError::Rejected(r.clone()))
}

fn malformed(e: DiagError, what: &str) -> Error {
    if let DiagError::Rejected(r) = &e {
        return rejected(r, what);
    }
    Error::failure(
        format!("The modem's DIAG answer made no sense while {what}"),
        e.to_string(),
        "Retry; if it repeats, the port may not be the DM interface, or the firmware speaks another layout",
    )
    .with_source(e)
}

fn efs_failed(e: DiagError, what: &str) -> Error {
    let why = e.to_string();
    let next = match &e {
        DiagError::Efs { errno: 2, .. } => "Check the path; list the directory to see what exists",
        DiagError::Efs { errno: 13, .. } | DiagError::Efs { errno: 1, .. } => {
            "This firmware does not let DIAG read the path; back up the EFS partitions in download mode instead"
        }
        _ => "Retry; if it repeats, back up the EFS partitions in download mode instead",
    };
    Error::failure(format!("EFS2 refused while {what}"), why, next).with_source(e)
}

fn bad_path(e: DiagError) -> Error {
    Error::usage(
        e.to_string(),
        "Give an absolute EFS2 path such as /nv/item_files",
    )
    .with_source(e)
}

fn unexpected(r: &EfsResponse, what: &str) -> Error {
    malformed(
        DiagError::Malformed {
            what: "EFS2",
            detail: format!("unexpected {} reply", efs::op::name(r.op())),
        },
        what,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::diag::efs::mode;
    use crate::protocol::diag::packet::{NvStatus, Request};
    use crate::protocol::diag::EfsRequest as Req;
    use crate::transport::pipe::{self, PipeEnd};
    use crate::transport::Framing;
    use std::collections::BTreeMap;
    use std::thread;

    fn quick() -> DiagTimeouts {
        DiagTimeouts {
            write: Duration::from_secs(2),
            response: Duration::from_secs(5),
            drain_quiet: Duration::from_millis(30),
            drain_max: Duration::from_secs(2),
            edl_echo: Duration::from_secs(5),
        }
    }

    /// A scripted DM port: decodes requests, answers with `answer`, interleaves log spam.
    fn responder(
        mut dev: PipeEnd,
        spam_first: bool,
        mut answer: impl FnMut(&[u8]) -> Option<Vec<Vec<u8>>> + Send + 'static,
    ) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let log = hdlc::encode(&[0x10, 0x00, 0x12, 0x00, 0xAA, 0xBB]);
            if spam_first {
                for _ in 0..5 {
                    let _ = dev.write(&log, Duration::from_secs(1));
                }
            }
            let mut dec = Decoder::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = match dev.read(&mut buf, Duration::from_secs(10)) {
                    Ok(n) => n,
                    Err(_) => return,
                };
                for f in dec.push(&buf[..n]).into_iter().flatten() {
                    let Some(replies) = answer(&f) else {
                        return; // drop the link
                    };
                    let mut wire = log.clone();
                    // A torn frame with a bad CRC before the reply.
                    wire.extend_from_slice(&[0x7C, 0x01, 0x02, 0x7E]);
                    for r in replies {
                        wire.extend(hdlc::encode(&r));
                    }
                    if dev.write(&wire, Duration::from_secs(1)).is_err() {
                        return;
                    }
                }
            }
        })
    }

    fn session(
        spam: bool,
        answer: impl FnMut(&[u8]) -> Option<Vec<Vec<u8>>> + Send + 'static,
    ) -> (DiagSession<PipeEnd>, thread::JoinHandle<()>) {
        let (host, dev) = pipe::pair_named(Framing::Stream, "fake DM port", "device");
        let h = responder(dev, spam, answer);
        (DiagSession::with_timeouts(host, quick()), h)
    }

    #[test]
    fn edl_switch_echoed_after_drain() {
        let (mut s, h) = session(true, |f| Some(vec![f.to_vec()]));
        assert_eq!(s.switch_to_edl().unwrap(), EdlSwitch::Echoed);
        assert!(s.stats().drained_bytes > 0);
        assert!(s.stats().bad_frames >= 1);
        drop(s);
        h.join().unwrap();
    }

    #[test]
    fn edl_switch_link_drop_counts_as_success() {
        let (mut s, h) = session(false, |_| None);
        assert_eq!(s.switch_to_edl().unwrap(), EdlSwitch::LinkDropped);
        h.join().unwrap();
    }

    #[test]
    fn edl_switch_refused() {
        let (mut s, h) = session(false, |f| {
            Some(vec![Rejection::encode(RejectKind::SecurityRequired, f)])
        });
        let e = s.switch_to_edl().unwrap_err();
        assert!(e.what.contains("refused"), "{e}");
        assert!(e.why.contains("security"), "{e}");
        drop(s);
        h.join().unwrap();
    }

    #[test]
    fn build_id_and_nv() {
        let (mut s, h) = session(true, |f| {
            Some(match Request::parse(f).unwrap() {
                Request::BuildId => vec![
                    // A stale NV reply first: must be skipped.
                    NvItem {
                        item: 1,
                        data: vec![0; 128],
                        status: NvStatus::Done,
                    }
                    .encode(),
                    BuildId {
                        version: 1,
                        msm_hw_version: 0x10,
                        mobile_model: 0x20,
                        sw_revision: "EC25EFAR06A17M4G".into(),
                        model_string: None,
                    }
                    .encode(),
                ],
                Request::NvRead { item: 550 } => vec![NvItem {
                    item: 550,
                    data: b"\x08\x3a\x09\x10\x05\x00\x00\x00\x00"
                        .iter()
                        .copied()
                        .chain([0; 119])
                        .collect(),
                    status: NvStatus::Done,
                }
                .encode()],
                Request::NvRead { item } => vec![NvItem {
                    item,
                    data: vec![0; 128],
                    status: NvStatus::Inactive,
                }
                .encode()],
                _ => vec![Rejection::encode(RejectKind::BadCommand, f)],
            })
        });
        let b = s.build_id().unwrap();
        assert_eq!(b.sw_revision, "EC25EFAR06A17M4G");
        assert!(s.stats().skipped_frames >= 1);
        let nv = s.nv_read(550).unwrap();
        assert!(nv.is_ok());
        assert_eq!(nv.data[0], 0x08);
        let nv = s.nv_read(7).unwrap();
        assert_eq!(nv.status, NvStatus::Inactive);
        let e = s.efs_subsystem().unwrap_err();
        assert!(e.next.contains("EFS2"), "{e}");
        drop(s);
        h.join().unwrap();
    }

    #[test]
    fn no_answer_is_bounded() {
        let (host, mut dev) = pipe::pair(Framing::Stream);
        let mut t = quick();
        t.response = Duration::from_millis(100);
        let mut s = DiagSession::with_timeouts(host, t);
        let e = s.build_id().unwrap_err();
        assert!(e.what.contains("No DIAG answer"), "{e}");
        // The request was sent as one frame.
        let mut buf = [0u8; 16];
        let n = dev.read(&mut buf, Duration::from_secs(1)).unwrap();
        assert_eq!(&buf[..n], &[0x7C, 0x93, 0x49, 0x7E]);
    }

    /// A tiny EFS: "/" holds "nv" (dir) and "f.bin" (3000 bytes); answers on subsystem 0x3E only.
    fn fake_efs(f: &[u8]) -> Vec<u8> {
        let file: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let req = match Request::parse(f) {
            Ok(Request::Efs {
                subsys: 0x3E,
                request,
            }) => request,
            _ => return Rejection::encode(RejectKind::BadCommand, f),
        };
        let r = match req {
            Req::Hello(p) => EfsResponse::Hello(p),
            Req::Stat { path } => match path.as_str() {
                "/" | "/nv" => EfsResponse::Stat {
                    errno: 0,
                    stat: EfsStat {
                        mode: mode::S_IFDIR | 0o755,
                        ..Default::default()
                    },
                },
                "/f.bin" => EfsResponse::Stat {
                    errno: 0,
                    stat: EfsStat {
                        mode: mode::S_IFREG | 0o644,
                        size: file.len() as i32,
                        ..Default::default()
                    },
                },
                _ => EfsResponse::Stat {
                    errno: 2,
                    stat: EfsStat::default(),
                },
            },
            Req::Open { path, .. } => EfsResponse::Open {
                fd: if path == "/f.bin" { 5 } else { -1 },
                errno: if path == "/f.bin" { 0 } else { 2 },
            },
            Req::Read { fd: 5, len, offset } => {
                let a = (offset as usize).min(file.len());
                let b = (a + len as usize).min(file.len());
                EfsResponse::Read {
                    fd: 5,
                    offset,
                    bytes_read: (b - a) as i32,
                    errno: 0,
                    data: file[a..b].to_vec(),
                }
            }
            Req::Close { .. } => EfsResponse::Close { errno: 0 },
            Req::OpenDir { .. } => EfsResponse::OpenDir { dir: 1, errno: 0 },
            Req::ReadDir { dir, seq } => {
                let names: BTreeMap<i32, (&str, i32)> = [
                    (1, (".", mode::S_IFDIR)),
                    (2, ("nv", mode::S_IFDIR)),
                    (3, ("f.bin", mode::S_IFREG)),
                ]
                .into_iter()
                .collect();
                let entry = match names.get(&seq) {
                    Some((n, m)) => EfsDirEntry {
                        name: n.to_string(),
                        mode: *m,
                        entry_type: 1,
                        ..EfsDirEntry::end(seq)
                    },
                    None => EfsDirEntry::end(seq),
                };
                EfsResponse::ReadDir {
                    dir,
                    errno: 0,
                    entry,
                }
            }
            Req::CloseDir { .. } => EfsResponse::CloseDir { errno: 0 },
            _ => return Rejection::encode(RejectKind::BadCommand, f),
        };
        r.encode(0x3E)
    }

    #[test]
    fn efs_list_and_read() {
        let (mut s, h) = session(false, |f| Some(vec![fake_efs(f)]));
        assert_eq!(s.efs_subsystem().unwrap(), 0x3E);
        let list = s.efs_list_dir("/").unwrap();
        let names: Vec<_> = list.iter().map(|e| (e.name.as_str(), e.is_dir())).collect();
        assert_eq!(names, [("nv", true), ("f.bin", false)]);
        let data = s.efs_read_file("/f.bin", 1 << 20).unwrap();
        assert_eq!(data.len(), 3000);
        assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        let e = s.efs_read_file("/f.bin", 100).unwrap_err();
        assert!(e.what.contains("larger"), "{e}");
        let e = s.efs_read_file("/missing", 100).unwrap_err();
        assert!(e.why.contains("ENOENT"), "{e}");
        let e = s.efs_read_file("/nv", 100).unwrap_err();
        assert!(e.what.contains("directory"), "{e}");
        let e = s.efs_read_file("relative", 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        drop(s);
        h.join().unwrap();
    }

    #[test]
    fn lost_port_is_device_lost() {
        let (host, dev) = pipe::pair(Framing::Stream);
        drop(dev);
        let mut s = DiagSession::with_timeouts(host, quick());
        let e = s.build_id().unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeviceLost);
    }
}
