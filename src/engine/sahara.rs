//! The Sahara driver: runs the sans-IO [`HostMachine`] over any [`Transport`] with bounded
//! waits, and turns its failures into errors written for people.
//!
//! Waits: the first HELLO is awaited for [`SaharaConfig::hello_wait`] (then one unsolicited
//! HELLO_RESP goes out, qdl's recovery for a HELLO something else consumed); the answer to that,
//! or to a RESET_STATE_MACHINE recovery, for [`SaharaConfig::handshake_wait`]; every other packet
//! for [`SaharaConfig::io_timeout`]; each 512 KiB memory read for
//! [`SaharaConfig::ramdump_chunk_timeout`]. Each operation also has an overall deadline.
//!
//! Stream transports split and merge packets, so incoming bytes go through a reassembly buffer
//! (by the length field, [`Packet::parse`]). Bytes that arrive after the last Sahara packet (the
//! programmer's first XML logs) stay in that buffer and are handed on by
//! [`SaharaSession::into_transport`], never lost.
//!
//! Exit codes chosen here: nothing at all from the device → `NoDevice` (3); the link drops →
//! `DeviceLost` (6); everything else (refused programmer, a device past the handshake, protocol
//! trouble, timeouts mid-session) → `Failure` (1).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};
use crate::protocol::sahara::host::{
    Action, DumpLimits, DumpSummary, Goal, HostError, HostMachine, Outcome, RawPurpose, UploadSet,
    Wait,
};
pub use crate::protocol::sahara::info::DeviceInfo;
use crate::protocol::sahara::memdebug::{self, Region, TableFormat};
use crate::protocol::sahara::packet::{
    looks_like_xml, mode, status_text, Packet, ParseError, CMD_END_OF_IMAGE,
};
use crate::transport::{Pushback, Transport, TransportError};

/// Timeouts and limits of a Sahara session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaharaConfig {
    /// How long to wait for the first HELLO before sending an unsolicited HELLO_RESP (1 s, as
    /// qdl and edl).
    pub hello_wait: Duration,
    /// How long to wait for the device's first answer after the unsolicited HELLO_RESP or after
    /// a RESET_STATE_MACHINE recovery (real devices have been seen silent for 5 s before
    /// sending a stale packet).
    pub handshake_wait: Duration,
    /// Per packet.
    pub io_timeout: Duration,
    /// Per 512 KiB memory read in a RAM dump (30 s, as qdl).
    pub ramdump_chunk_timeout: Duration,
    /// Refuse a RAM dump whose regions add up to more than this.
    pub max_dump_bytes: u64,
    /// Refuse a RAM dump region table with more entries than this.
    pub max_dump_regions: usize,
    /// Overall limit for [`SaharaSession::read_info`].
    pub info_deadline: Duration,
    /// Overall limit for [`SaharaSession::upload`].
    pub upload_deadline: Duration,
    /// Overall limit for [`SaharaSession::ramdump`].
    pub ramdump_deadline: Duration,
}

impl Default for SaharaConfig {
    fn default() -> Self {
        SaharaConfig {
            hello_wait: Duration::from_secs(1),
            handshake_wait: Duration::from_secs(6),
            io_timeout: Duration::from_secs(2),
            ramdump_chunk_timeout: Duration::from_secs(30),
            max_dump_bytes: 16 << 30,
            max_dump_regions: memdebug::DEFAULT_MAX_ENTRIES,
            info_deadline: Duration::from_secs(60),
            upload_deadline: Duration::from_secs(300),
            ramdump_deadline: Duration::from_secs(6 * 3600),
        }
    }
}

/// Progress of a programmer upload, reported after every request served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UploadProgress {
    /// Raw bytes sent so far (requests may overlap; can exceed `image_len`).
    pub bytes_sent: u64,
    /// Size of the image(s) supplied.
    pub image_len: u64,
    pub requests: u64,
}

/// The result of [`SaharaSession::upload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadReport {
    pub bytes_sent: u64,
    pub requests: u64,
    pub elapsed_ms: u64,
    /// Image IDs the device asked for, in order of first request.
    pub image_ids_requested: Vec<u64>,
    /// DONE_RESP said "more images pending" and was accepted (known quirk for 7/13/21).
    pub pending_quirk: bool,
    /// `<?xml` arrived instead of HELLO: a programmer was already running and nothing was sent.
    pub already_running: bool,
    pub notes: Vec<String>,
}

/// Progress of a RAM dump, reported after every memory read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpProgress {
    pub region_index: usize,
    pub region_count: usize,
    pub file: String,
    pub region_done: u64,
    pub region_len: u64,
    pub total_done: u64,
    pub total_len: u64,
}

/// One region of a RAM dump as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpedRegion {
    pub index: usize,
    /// The device's description of the region.
    pub name: String,
    /// The file name the device suggested (display only).
    pub device_file_name: String,
    /// The sanitised file name inside the output folder.
    pub file: String,
    pub base: u64,
    pub base_hex: String,
    pub length: u64,
    /// sha256 of the file, when the region was read completely.
    pub sha256: Option<String>,
    /// "ok", "empty" (length 0, nothing read) or "refused: …".
    pub status: String,
}

/// The result of [`SaharaSession::ramdump`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpReport {
    pub out_dir: PathBuf,
    pub manifest: PathBuf,
    /// "32-bit" or "64-bit" region table.
    pub table_format: String,
    pub regions: Vec<DumpedRegion>,
    pub bytes_written: u64,
    pub elapsed_ms: u64,
    pub reset_acknowledged: bool,
    pub notes: Vec<String>,
}

/// One Sahara conversation with one device over one transport.
pub struct SaharaSession<T: Transport> {
    transport: T,
    cfg: SaharaConfig,
    /// Reassembly buffer: bytes read but not consumed yet.
    buf: Vec<u8>,
    /// A HELLO the previous operation left unanswered (the next one starts from it).
    carry_hello: Option<Packet>,
    /// A READ_DATA request an info pass received (the device skipped command mode).
    carry_request: Option<Packet>,
    /// What the last info pass learned (goes into RAM dump manifests).
    last_info: Option<DeviceInfo>,
}

/// What arrived while waiting for a packet.
enum Incoming {
    Packet(Packet),
    Firehose,
    Garbage(String),
    Timeout,
    Lost(String),
}

/// What arrived while waiting for raw bytes.
enum RawIn {
    Data,
    /// A 16-byte END_OF_IMAGE instead of the data: the device refused the read.
    Refusal(Packet),
    Timeout,
    Lost(String),
}

/// Callbacks of one drive loop.
trait Hooks {
    fn image_sent(&mut self, _bytes: u64) {}
    fn regions(&mut self, _regions: &[Region]) -> crate::Result<()> {
        Ok(())
    }
    fn region_data(&mut self, _index: usize, _offset: u64, _data: &[u8]) -> crate::Result<()> {
        Ok(())
    }
}

struct NoHooks;
impl Hooks for NoHooks {}

struct UploadHooks<'a> {
    progress: &'a mut dyn FnMut(UploadProgress),
    sent: u64,
    requests: u64,
    image_len: u64,
}

impl Hooks for UploadHooks<'_> {
    fn image_sent(&mut self, bytes: u64) {
        self.sent += bytes;
        self.requests += 1;
        (self.progress)(UploadProgress {
            bytes_sent: self.sent,
            image_len: self.image_len,
            requests: self.requests,
        });
    }
}

impl<T: Transport> SaharaSession<T> {
    pub fn new(transport: T, cfg: SaharaConfig) -> Self {
        SaharaSession {
            transport,
            cfg,
            buf: Vec::new(),
            carry_hello: None,
            carry_request: None,
            last_info: None,
        }
    }

    pub fn config(&self) -> &SaharaConfig {
        &self.cfg
    }

    /// Bytes read from the device but not consumed by Sahara (e.g. Firehose logs).
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    /// What the last [`Self::read_info`] learned.
    pub fn last_info(&self) -> Option<&DeviceInfo> {
        self.last_info.as_ref()
    }

    /// Give the transport back wrapped in a [`Pushback`] that returns every unconsumed byte
    /// first: packets left for a next Sahara step (an unanswered HELLO), then whatever arrived
    /// after the last Sahara packet (Firehose welcome logs).
    pub fn into_transport(self) -> Pushback<T> {
        let mut p = Pushback::new(self.transport);
        p.unread(&self.buf);
        if let Some(r) = &self.carry_request {
            p.unread(&r.encode());
        }
        if let Some(h) = &self.carry_hello {
            p.unread(&h.encode());
        }
        p
    }

    /// Ask the boot ROM who it is (command mode): serial, HW ID or chip ID v3, PK hash, SBL
    /// version. Leaves the device at a fresh HELLO, so an upload can follow in this session.
    /// A device in crash-dump mode answers with its HELLO fields only.
    pub fn read_info(&mut self) -> crate::Result<DeviceInfo> {
        if self.carry_request.is_some() {
            // The device already asked for the programmer; command mode is over for it.
            let mut i = self.last_info.clone().unwrap_or_default();
            i.note(
                "The modem already asked for the programmer; command mode is no longer available",
            );
            return Ok(i);
        }
        let mut m = HostMachine::new(Goal::Info);
        let deadline = Instant::now() + self.cfg.info_deadline;
        let r = self.drive(&mut m, deadline, "identity query", &mut NoHooks);
        self.carry_hello = m.take_unanswered_hello();
        self.carry_request = m.take_pending_request();
        match r? {
            Outcome::Info(i) => {
                tracing::info!(serial = ?i.serial_hex, "Sahara identity read");
                self.last_info = Some(i.clone());
                Ok(i)
            }
            other => Err(internal(format!("info pass ended with {other:?}"))),
        }
    }

    /// Upload a Firehose programmer (served as image 13, and for whatever image ID a single-image
    /// device asks for). If a programmer is already running (`<?xml` instead of HELLO), returns
    /// `Ok` with `already_running` and leaves the XML for [`Self::into_transport`].
    pub fn upload(
        &mut self,
        programmer: &[u8],
        progress: &mut dyn FnMut(UploadProgress),
    ) -> crate::Result<UploadReport> {
        if programmer.is_empty() {
            return Err(Error::usage(
                "The programmer file is empty",
                "Point qrescue at the prog_firehose*.mbn / *.elf from this modem's firmware package",
            ));
        }
        self.upload_set(UploadSet::programmer(programmer.to_vec()), progress)
    }

    /// Upload a multi-image set (image ID → bytes); each image is served only for its own ID.
    pub fn upload_images(
        &mut self,
        images: BTreeMap<u32, Vec<u8>>,
        progress: &mut dyn FnMut(UploadProgress),
    ) -> crate::Result<UploadReport> {
        if images.is_empty() || images.values().any(|v| v.is_empty()) {
            return Err(Error::usage(
                "An image to upload is missing or empty",
                "Check the image files given for the upload",
            ));
        }
        self.upload_set(UploadSet::multi(images), progress)
    }

    fn upload_set(
        &mut self,
        set: UploadSet,
        progress: &mut dyn FnMut(UploadProgress),
    ) -> crate::Result<UploadReport> {
        let start = Instant::now();
        let image_len = set.total_len();
        let mut m = HostMachine::new(Goal::Upload(set));
        let mut hooks = UploadHooks {
            progress,
            sent: 0,
            requests: 0,
            image_len,
        };
        tracing::info!(image_len, port = %self.transport.describe(), "Sahara: uploading the programmer");
        let deadline = start + self.cfg.upload_deadline;
        let r = self.drive(&mut m, deadline, "programmer upload", &mut hooks);
        self.carry_hello = m.take_unanswered_hello();
        let elapsed_ms = start.elapsed().as_millis() as u64;
        match r? {
            Outcome::Uploaded(s) => {
                tracing::info!(
                    bytes = s.bytes_sent,
                    requests = s.requests,
                    elapsed_ms,
                    "programmer accepted"
                );
                Ok(UploadReport {
                    bytes_sent: s.bytes_sent,
                    requests: s.requests,
                    elapsed_ms,
                    image_ids_requested: s.image_ids_requested,
                    pending_quirk: s.pending_quirk,
                    already_running: false,
                    notes: s.notes,
                })
            }
            Outcome::AlreadyRunning => Ok(UploadReport {
                bytes_sent: 0,
                requests: 0,
                elapsed_ms,
                image_ids_requested: Vec::new(),
                pending_quirk: false,
                already_running: true,
                notes: vec![
                    "A Firehose programmer was already running; nothing was uploaded".into(),
                ],
            }),
            other => Err(internal(format!("upload ended with {other:?}"))),
        }
    }

    /// Save a crash dump (memory-debug mode, 05c6:900e): each region to
    /// `<out_dir>/<sanitised name>` in 512 KiB steps, then `manifest.json`. Never overwrites a
    /// file (except its own `*.qrescue-partial` temp files) and never writes outside `out_dir`.
    pub fn ramdump(
        &mut self,
        out_dir: &Path,
        progress: &mut dyn FnMut(DumpProgress),
    ) -> crate::Result<DumpReport> {
        let start = Instant::now();
        fs::create_dir_all(out_dir).map_err(|e| {
            Error::failure(
                format!("Cannot create the dump folder {}", out_dir.display()),
                "The RAM dump needs a folder to write its region files into",
                "Choose a folder you can write to (--out DIR)",
            )
            .with_source(e)
        })?;
        let manifest = out_dir.join(memdebug::MANIFEST_NAME);
        if manifest.exists() {
            return Err(exists_error(&manifest));
        }
        let limits = DumpLimits {
            max_entries: self.cfg.max_dump_regions,
            max_total_bytes: self.cfg.max_dump_bytes,
            chunk: memdebug::READ_CHUNK,
        };
        let mut m = HostMachine::new(Goal::MemoryDump(limits));
        let mut w = DumpWriter {
            dir: out_dir.to_path_buf(),
            regions: Vec::new(),
            current: None,
            done: BTreeMap::new(),
            total_len: 0,
            total_done: 0,
            progress,
        };
        let deadline = start + self.cfg.ramdump_deadline;
        let r = self.drive(&mut m, deadline, "memory dump", &mut w);
        self.carry_hello = m.take_unanswered_hello();
        let summary = match r {
            Ok(Outcome::Dumped(s)) => s,
            Ok(other) => {
                w.abandon_current();
                return Err(internal(format!("memory dump ended with {other:?}")));
            }
            Err(e) => {
                w.abandon_current();
                return Err(e);
            }
        };
        w.abandon_current();
        let report = self.finish_dump(out_dir, &manifest, summary, &w, start)?;
        tracing::info!(
            regions = report.regions.len(),
            bytes = report.bytes_written,
            "RAM dump saved"
        );
        Ok(report)
    }

    fn finish_dump(
        &self,
        out_dir: &Path,
        manifest: &Path,
        s: DumpSummary,
        w: &DumpWriter<'_>,
        start: Instant,
    ) -> crate::Result<DumpReport> {
        let regions: Vec<DumpedRegion> = s
            .regions
            .iter()
            .map(|r| {
                let failed = s.failed.iter().find(|(i, _)| *i == r.index);
                let (sha256, status) = match (failed, w.done.get(&r.index)) {
                    (Some((_, why)), _) => (None, format!("refused: {why}")),
                    (None, Some(h)) => (Some(h.clone()), "ok".to_string()),
                    (None, None) if r.length == 0 => (None, "empty".to_string()),
                    (None, None) => (None, "not read".to_string()),
                };
                DumpedRegion {
                    index: r.index,
                    name: r.desc.clone(),
                    device_file_name: r.device_file_name.clone(),
                    file: r.file_name.clone(),
                    base: r.base,
                    base_hex: format!("0x{:x}", r.base),
                    length: r.length,
                    sha256,
                    status,
                }
            })
            .collect();
        let bytes_written = s
            .regions
            .iter()
            .filter(|r| w.done.contains_key(&r.index))
            .map(|r| r.length)
            .sum();
        let mut info = s.info.clone();
        if let Some(prev) = &self.last_info {
            if info.serial.is_none() {
                info.serial = prev.serial;
                info.serial_hex = prev.serial_hex.clone();
            }
            info.hw_id = info.hw_id.or_else(|| prev.hw_id.clone());
            info.pk_hash = info.pk_hash.or_else(|| prev.pk_hash.clone());
        }
        let table_format = match s.format {
            Some(TableFormat::Bits64) => "64-bit",
            _ => "32-bit",
        }
        .to_string();
        let report = DumpReport {
            out_dir: out_dir.to_path_buf(),
            manifest: manifest.to_path_buf(),
            table_format,
            regions,
            bytes_written,
            elapsed_ms: start.elapsed().as_millis() as u64,
            reset_acknowledged: s.reset_acknowledged,
            notes: s.notes.clone(),
        };
        let (unix, rfc3339) = now_utc();
        let doc = serde_json::json!({
            "format": "qrescue-ramdump-manifest",
            "version": 1,
            "tool": "qrescue",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "created": rfc3339,
            "created_unix": unix,
            "device": info,
            "table_format": report.table_format,
            "regions": report.regions,
            "bytes_written": report.bytes_written,
            "reset_acknowledged": report.reset_acknowledged,
            "notes": report.notes,
        });
        let text = serde_json::to_vec_pretty(&doc).map_err(|e| internal(e.to_string()))?;
        write_atomically(out_dir, memdebug::MANIFEST_NAME, &text)?;
        Ok(report)
    }

    // ------------------------------------------------------------------ the loop

    fn drive(
        &mut self,
        m: &mut HostMachine,
        deadline: Instant,
        op: &'static str,
        hooks: &mut dyn Hooks,
    ) -> crate::Result<Outcome> {
        let mut queue: VecDeque<Action> = VecDeque::new();
        let mut lost_why: Option<String> = None;
        let mut raw: Vec<u8> = Vec::new();
        if let Some(req) = self.carry_request.take() {
            m.assume_transfer_started();
            queue.extend(m.feed(req));
        } else if let Some(h) = self.carry_hello.take() {
            queue.extend(m.feed(h));
        }
        loop {
            if let Some(a) = queue.pop_front() {
                match a {
                    Action::Send(p) => {
                        tracing::debug!(packet = ?p, "sahara: send");
                        let bytes = p.encode();
                        if let Err(e) = self.write(&bytes, op)? {
                            lost_why = Some(e);
                            queue.clear();
                            queue.extend(m.on_link_lost());
                        }
                    }
                    Action::SendImage {
                        image_id,
                        offset,
                        len,
                    } => {
                        tracing::debug!(image_id, offset, len, "sahara: image data");
                        let Some(data) = m.image_slice(image_id, offset, len) else {
                            return Err(internal(format!(
                                "image slice {image_id}/{offset:#x}+{len:#x} missing"
                            )));
                        };
                        let data = data.to_vec();
                        match self.write(&data, op)? {
                            Ok(()) => hooks.image_sent(len),
                            Err(e) => {
                                lost_why = Some(e);
                                queue.clear();
                                queue.extend(m.on_link_lost());
                            }
                        }
                    }
                    Action::ReadRaw { len, purpose } => {
                        let wait = match purpose {
                            RawPurpose::Region { .. } => self.cfg.ramdump_chunk_timeout,
                            _ => self.cfg.io_timeout,
                        };
                        let len = usize::try_from(len)
                            .map_err(|_| internal(format!("raw read of {len} bytes")))?;
                        match self.read_raw(len, wait, deadline, op, &mut raw)? {
                            RawIn::Data => {
                                tracing::debug!(len, ?purpose, "sahara: raw data in");
                                if let RawPurpose::Region { index, offset } = purpose {
                                    hooks.region_data(index, offset, &raw)?;
                                }
                                queue.extend(m.feed_raw(&raw));
                            }
                            RawIn::Refusal(p) => {
                                tracing::debug!(packet = ?p, "sahara: refusal instead of raw data");
                                queue.extend(m.feed(p));
                            }
                            RawIn::Timeout => queue.extend(m.on_timeout()),
                            RawIn::Lost(why) => {
                                lost_why = Some(why);
                                queue.clear();
                                queue.extend(m.on_link_lost());
                            }
                        }
                    }
                    Action::Regions(rs) => hooks.regions(&rs)?,
                    Action::Done(o) => return Ok(*o),
                    Action::Fail(e) => return Err(host_error(e, op, lost_why.as_deref())),
                }
                continue;
            }
            let wait = match m.wait() {
                Wait::Hello => self.cfg.hello_wait,
                Wait::Handshake => self.cfg.handshake_wait,
                Wait::Reply => self.cfg.io_timeout,
                Wait::DumpChunk => self.cfg.ramdump_chunk_timeout,
                Wait::Nothing => {
                    return Err(internal(
                        "the Sahara machine stopped without an outcome".into(),
                    ))
                }
            };
            match self.next_incoming(wait, deadline, op)? {
                Incoming::Packet(p) => {
                    tracing::debug!(packet = ?p, "sahara: packet in");
                    queue.extend(m.feed(p));
                }
                Incoming::Firehose => queue.extend(m.on_firehose_detected()),
                Incoming::Garbage(w) => queue.extend(m.on_garbage(w)),
                Incoming::Timeout => {
                    tracing::debug!(waiting_for = m.waiting_for(), ?wait, "sahara: timeout");
                    queue.extend(m.on_timeout());
                }
                Incoming::Lost(why) => {
                    lost_why = Some(why);
                    queue.extend(m.on_link_lost());
                }
            }
        }
    }

    /// Write one transfer. `Ok(Err(why))` when the link went away (the machine decides what
    /// that means), `Err` for anything else.
    fn write(&mut self, data: &[u8], op: &'static str) -> crate::Result<Result<(), String>> {
        match self.transport.write(data, self.cfg.io_timeout) {
            Ok(()) => Ok(Ok(())),
            Err(TransportError::Disconnected(why)) => Ok(Err(why)),
            Err(e) => Err(transport_error(e, op, &self.transport.describe())),
        }
    }

    fn remaining(deadline: Instant, op: &'static str) -> crate::Result<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::failure(
                format!("The {op} took too long and was stopped"),
                "qrescue bounds every operation so a stuck modem cannot hang it",
                "Power-cycle the modem and try again; if the link is very slow, raise the time limit",
            ));
        }
        Ok(left)
    }

    fn next_incoming(
        &mut self,
        wait: Duration,
        deadline: Instant,
        op: &'static str,
    ) -> crate::Result<Incoming> {
        let until = Instant::now() + wait;
        let mut tmp = [0u8; 4096];
        loop {
            match Packet::parse(&self.buf) {
                Ok((p, n)) => {
                    self.buf.drain(..n);
                    return Ok(Incoming::Packet(p));
                }
                // Decide on "<?xml" only with all five bytes seen, so a lone '<' is not taken
                // for a running programmer before the wait is over.
                Err(ParseError::FirehoseRunning) if self.buf.len() >= 5 => {
                    return Ok(Incoming::Firehose)
                }
                Err(ParseError::FirehoseRunning | ParseError::Incomplete { .. }) => {}
                Err(e) => {
                    let head = hex::encode(&self.buf[..self.buf.len().min(16)]);
                    self.buf.clear();
                    return Ok(Incoming::Garbage(format!("{e} (bytes {head})")));
                }
            }
            let left_wait = until.saturating_duration_since(Instant::now());
            if left_wait.is_zero() {
                return Ok(self.timed_out_incoming());
            }
            let t = left_wait.min(Self::remaining(deadline, op)?);
            match self.transport.read(&mut tmp, t) {
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(TransportError::Timeout { .. }) => {
                    // The overall deadline may be what cut this wait short.
                    Self::remaining(deadline, op)?;
                    return Ok(self.timed_out_incoming());
                }
                Err(TransportError::Disconnected(why)) => return Ok(Incoming::Lost(why)),
                Err(e) => return Err(transport_error(e, op, &self.transport.describe())),
            }
        }
    }

    /// The wait ended with a partial packet or nothing in the buffer.
    fn timed_out_incoming(&self) -> Incoming {
        if !self.buf.is_empty() && looks_like_xml(&self.buf) {
            Incoming::Firehose
        } else {
            Incoming::Timeout
        }
    }

    fn read_raw(
        &mut self,
        len: usize,
        wait: Duration,
        deadline: Instant,
        op: &'static str,
        out: &mut Vec<u8>,
    ) -> crate::Result<RawIn> {
        out.clear();
        out.reserve(len);
        let take = self.buf.len().min(len);
        out.extend(self.buf.drain(..take));
        let until = Instant::now() + wait;
        let mut checked = false;
        let mut tmp = vec![0u8; len.clamp(1, 64 * 1024)];
        loop {
            if !checked && out.len() >= 16 {
                checked = true;
                // A device that refuses a read answers with END_OF_IMAGE (16 bytes) instead.
                if len != 16
                    && out.len() == 16
                    && u32::from_le_bytes([out[0], out[1], out[2], out[3]]) == CMD_END_OF_IMAGE
                {
                    if let Ok((p @ Packet::EndOfImage { .. }, _)) = Packet::parse(out) {
                        out.clear();
                        return Ok(RawIn::Refusal(p));
                    }
                }
            }
            if out.len() >= len {
                return Ok(RawIn::Data);
            }
            let left_wait = until.saturating_duration_since(Instant::now());
            if left_wait.is_zero() {
                out.clear();
                return Ok(RawIn::Timeout);
            }
            let t = left_wait.min(Self::remaining(deadline, op)?);
            let want = (len - out.len()).min(tmp.len());
            match self.transport.read(&mut tmp[..want], t) {
                Ok(n) => out.extend_from_slice(&tmp[..n]),
                Err(TransportError::Timeout { .. }) => {
                    Self::remaining(deadline, op)?;
                    out.clear();
                    return Ok(RawIn::Timeout);
                }
                Err(TransportError::Disconnected(why)) => return Ok(RawIn::Lost(why)),
                Err(e) => return Err(transport_error(e, op, &self.transport.describe())),
            }
        }
    }
}

// ---------------------------------------------------------------------- dump writer

struct OpenRegion {
    index: usize,
    file: File,
    tmp: PathBuf,
    hasher: Sha256,
    written: u64,
}

struct DumpWriter<'a> {
    dir: PathBuf,
    regions: Vec<Region>,
    current: Option<OpenRegion>,
    /// index → sha256 of regions written completely.
    done: BTreeMap<usize, String>,
    total_len: u64,
    total_done: u64,
    progress: &'a mut dyn FnMut(DumpProgress),
}

impl DumpWriter<'_> {
    fn path_for(&self, name: &str) -> crate::Result<PathBuf> {
        // The sanitiser promises a plain name; check again before touching the file system.
        if !memdebug::is_plain_file_name(name) {
            return Err(internal(format!("unsafe region file name {name:?}")));
        }
        Ok(self.dir.join(name))
    }

    fn abandon_current(&mut self) {
        if let Some(c) = self.current.take() {
            drop(c.file);
            if let Err(e) = fs::remove_file(&c.tmp) {
                tracing::debug!(error = %e, path = %c.tmp.display(), "could not remove a partial region file");
            }
        }
    }
}

impl Hooks for DumpWriter<'_> {
    fn regions(&mut self, regions: &[Region]) -> crate::Result<()> {
        for r in regions.iter().filter(|r| r.length > 0) {
            let p = self.path_for(&r.file_name)?;
            if p.exists() {
                return Err(exists_error(&p));
            }
        }
        self.total_len = regions.iter().map(|r| r.length).sum();
        self.regions = regions.to_vec();
        Ok(())
    }

    fn region_data(&mut self, index: usize, offset: u64, data: &[u8]) -> crate::Result<()> {
        let Some(r) = self.regions.get(index).cloned() else {
            return Err(internal(format!("data for unknown region {index}")));
        };
        if self.current.as_ref().is_some_and(|c| c.index != index) {
            // The previous region was refused part-way: drop its partial file.
            self.abandon_current();
        }
        if offset == 0 || self.current.is_none() {
            self.abandon_current();
            let tmp = self.path_for(&format!("{}{}", r.file_name, memdebug::TEMP_SUFFIX))?;
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| io_error("create", &tmp, e))?;
            self.current = Some(OpenRegion {
                index,
                file,
                tmp,
                hasher: Sha256::new(),
                written: 0,
            });
        }
        let c = self.current.as_mut().expect("opened above");
        if offset != c.written {
            return Err(internal(format!(
                "region {index} data at {offset:#x}, expected {:#x}",
                c.written
            )));
        }
        c.file
            .write_all(data)
            .map_err(|e| io_error("write", &c.tmp, e))?;
        c.hasher.update(data);
        c.written += data.len() as u64;
        self.total_done += data.len() as u64;
        let written = c.written;
        (self.progress)(DumpProgress {
            region_index: index,
            region_count: self.regions.len(),
            file: r.file_name.clone(),
            region_done: written,
            region_len: r.length,
            total_done: self.total_done,
            total_len: self.total_len,
        });
        if written >= r.length {
            let c = self.current.take().expect("present");
            c.file.sync_all().map_err(|e| io_error("sync", &c.tmp, e))?;
            drop(c.file);
            let final_path = self.path_for(&r.file_name)?;
            if final_path.exists() {
                let _ = fs::remove_file(&c.tmp);
                return Err(exists_error(&final_path));
            }
            fs::rename(&c.tmp, &final_path).map_err(|e| io_error("rename", &c.tmp, e))?;
            let sha = hex::encode(c.hasher.finalize());
            tracing::info!(file = %r.file_name, bytes = written, sha256 = %sha, "region saved");
            self.done.insert(index, sha);
        }
        Ok(())
    }
}

/// Write `name` in `dir` atomically: temp file, fsync, rename, fsync of the folder.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> crate::Result<()> {
    let tmp = dir.join(format!("{name}{}", memdebug::TEMP_SUFFIX));
    let fin = dir.join(name);
    {
        let mut f = File::create(&tmp).map_err(|e| io_error("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| io_error("write", &tmp, e))?;
        f.sync_all().map_err(|e| io_error("sync", &tmp, e))?;
    }
    if fin.exists() {
        let _ = fs::remove_file(&tmp);
        return Err(exists_error(&fin));
    }
    fs::rename(&tmp, &fin).map_err(|e| io_error("rename", &tmp, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Seconds since the epoch and an RFC 3339 UTC timestamp.
fn now_utc() -> (u64, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        secs,
        format!(
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        ),
    )
}

// ---------------------------------------------------------------------- errors for people

const USE_PACKAGE_PROGRAMMER: &str = "Use the programmer from this modem's own firmware package (the prog_firehose*.mbn or *.elf in its update folder). Nothing was written to the modem";

fn internal(what: String) -> Error {
    Error::failure(
        format!("Internal error in the Sahara driver: {what}"),
        "qrescue reached a state it does not expect",
        "Please report this with a log (--log-file)",
    )
}

fn exists_error(p: &Path) -> Error {
    Error::failure(
        format!("{} already exists", p.display()),
        "qrescue never overwrites files in a dump folder",
        "Choose an empty folder (--out DIR) or move the old dump away",
    )
}

fn io_error(op: &str, p: &Path, e: std::io::Error) -> Error {
    Error::failure(
        format!("Cannot {op} {}", p.display()),
        "The RAM dump could not be written to disk",
        "Check free space and permissions of the dump folder",
    )
    .with_source(e)
}

fn transport_error(e: TransportError, op: &'static str, port: &str) -> Error {
    match e {
        TransportError::Permission(_) => Error::new(
            ErrorKind::Permission,
            format!("No permission to use {port}"),
            format!("The {op} needs read and write access to the modem's port"),
            "Install the udev rule for Qualcomm download mode (05c6:9008) or run with sufficient rights",
        ),
        TransportError::Busy(_) => Error::failure(
            format!("{port} is held by another program"),
            "A second program on the same port can wedge the boot ROM",
            "Close other tools (ModemManager, qdl, QFlash, edl) and try again",
        ),
        TransportError::Timeout { .. } => Error::failure(
            format!("The modem stopped accepting data during the {op}"),
            "A write to the modem timed out",
            "Power-cycle the modem and try again; if it repeats, change cable or port",
        ),
        TransportError::Disconnected(_) => Error::new(
            ErrorKind::DeviceLost,
            format!("The modem left the bus during the {op}"),
            "The link dropped",
            "Power-cycle it and try again; check the cable",
        ),
        TransportError::Io(_) => Error::failure(
            format!("I/O error on {port} during the {op}"),
            "The operating system reported an error on the modem's port",
            "Replug the modem and try again; if it repeats, change cable or port",
        ),
    }
    .with_source(e)
}

/// Turn a state-machine failure into an error for people.
fn host_error(e: HostError, op: &'static str, lost_why: Option<&str>) -> Error {
    let err = match &e {
        HostError::NoResponse => Error::new(
            ErrorKind::NoDevice,
            "The modem sent nothing in download mode",
            "Its handshake may already have been used by another program or an earlier attempt, and it did not answer qrescue's recovery either",
            "Replug or power-cycle it and try again",
        ),
        HostError::PastHandshake { cmd } => Error::failure(
            format!("The modem is already past the handshake (it sent command {cmd} instead of HELLO)"),
            "An earlier attempt or another program left the boot ROM mid-session, or the link is dropping packets; it did not restart the handshake when asked",
            "Power-cycle or replug it; if it repeats, change cable/port",
        ),
        HostError::Refused { image_id, status } => {
            let (name, words) = status_text(*status);
            Error::failure(
                format!("The modem refused the programmer (Sahara status {status:#04x}: {name}, image {image_id})"),
                format!("{}.", upper_first(words)),
                USE_PACKAGE_PROGRAMMER,
            )
        }
        HostError::OutOfRange { .. } => Error::failure(
            "The modem asked for data beyond the end of the programmer file",
            format!("{}; the file is probably not a programmer for this chip, or it is truncated", upper_first(&e.to_string())),
            USE_PACKAGE_PROGRAMMER,
        ),
        HostError::ImageNotSupplied { image_id } => Error::failure(
            format!("The modem asked for image {image_id}, which was not supplied"),
            "This modem boots a different set of images than the ones given",
            "Give the images from this modem's firmware package",
        ),
        HostError::FirehoseRunning => Error::failure(
            "A Firehose programmer is already running on this port",
            format!("The modem already left the boot ROM, and the {op} needs the boot ROM"),
            "Flash directly (the programmer is already there), or reset (power-cycle) the modem to get back to download mode",
        ),
        HostError::WrongMode { offered, .. } if *offered == mode::MEMORY_DEBUG => Error::failure(
            "The modem is in crash-dump mode (900e), not download mode",
            "It offers memory debug only; a programmer cannot be uploaded in this mode",
            "Save the dump with `qrescue ramdump`, or power-cycle it into download mode (9008) to flash",
        ),
        HostError::WrongMode { offered, .. } => Error::failure(
            format!("The modem is in {} mode, not crash-dump mode", mode::name(*offered)),
            "There is no RAM dump to save: the modem did not crash into memory-debug mode (900e)",
            "Nothing to dump; to repair the modem, flash it instead",
        ),
        HostError::LinkLost { during } => Error::new(
            ErrorKind::DeviceLost,
            format!("The modem left the bus during {during}"),
            "The USB link dropped (a modem reset, a loose cable or a power dip)",
            "Power-cycle it and try again; check the cable",
        ),
        HostError::Timeout { waiting_for } => Error::failure(
            format!("The modem stopped answering during the {op}"),
            format!("Nothing arrived while waiting for {waiting_for}"),
            "Power-cycle the modem and try again; if it repeats, change cable or port",
        ),
        HostError::Unexpected { .. } | HostError::Garbled { .. } => Error::failure(
            format!("The modem answered out of protocol during the {op}"),
            upper_first(&e.to_string()),
            "Power-cycle the modem and try again; if it repeats, change cable or port and attach a log (--log-file)",
        ),
        HostError::Limit { .. } | HostError::BadTable(_) => Error::failure(
            format!("qrescue stopped the {op}: the modem asked for too much or sent a bad table"),
            upper_first(&e.to_string()),
            "If the modem is genuine and the numbers are plausible, raise the limit (e.g. --max-dump-bytes); otherwise power-cycle it",
        ),
        HostError::DumpRefused { .. } => Error::failure(
            "The modem refused the memory dump",
            upper_first(&e.to_string()),
            "Power-cycle it; if it comes back in crash-dump mode, try once more",
        ),
    };
    let mut err = err.with_source(e);
    if let Some(w) = lost_why {
        if err.kind == ErrorKind::DeviceLost {
            err.why = format!("{} ({w})", err.why);
        }
    }
    err
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// One step of a canned device script.
    #[derive(Debug, Clone)]
    enum Step {
        /// The device sends these bytes.
        Dev(Vec<u8>),
        /// The host must write exactly these bytes.
        Host(Vec<u8>),
        /// The host must write this many bytes (image data).
        HostLen(usize),
        /// The next read times out.
        Silence,
        /// The link drops (every later read or write fails).
        Drop,
    }

    #[derive(Debug, Default)]
    struct Shared {
        written: Vec<Vec<u8>>,
        mismatches: Vec<String>,
    }

    struct Scripted {
        steps: VecDeque<Step>,
        rx: VecDeque<u8>,
        max_chunk: usize,
        shared: Arc<Mutex<Shared>>,
    }

    impl Scripted {
        fn new(steps: Vec<Step>, max_chunk: usize) -> (Self, Arc<Mutex<Shared>>) {
            let shared = Arc::new(Mutex::new(Shared::default()));
            (
                Scripted {
                    steps: steps.into(),
                    rx: VecDeque::new(),
                    max_chunk,
                    shared: shared.clone(),
                },
                shared,
            )
        }

        /// Device output does not wait for the host to read it.
        fn release_device_bytes(&mut self) {
            while let Some(Step::Dev(_)) = self.steps.front() {
                if let Some(Step::Dev(b)) = self.steps.pop_front() {
                    self.rx.extend(b);
                }
            }
        }
    }

    impl Transport for Scripted {
        fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
            if self.rx.is_empty() {
                self.release_device_bytes();
            }
            if !self.rx.is_empty() {
                let n = buf.len().min(self.max_chunk).min(self.rx.len());
                for b in buf.iter_mut().take(n) {
                    *b = self.rx.pop_front().expect("non-empty");
                }
                return Ok(n);
            }
            match self.steps.front() {
                Some(Step::Silence) => {
                    self.steps.pop_front();
                    Err(TransportError::Timeout {
                        op: "read",
                        after: timeout,
                    })
                }
                Some(Step::Drop) => {
                    Err(TransportError::Disconnected("script: link dropped".into()))
                }
                _ => Err(TransportError::Timeout {
                    op: "read",
                    after: timeout,
                }),
            }
        }

        fn write(&mut self, data: &[u8], _timeout: Duration) -> Result<(), TransportError> {
            self.release_device_bytes();
            let mut sh = self.shared.lock().unwrap();
            sh.written.push(data.to_vec());
            match self.steps.front().cloned() {
                Some(Step::Host(e)) => {
                    self.steps.pop_front();
                    if e != data {
                        sh.mismatches.push(format!(
                            "expected write {} got {}",
                            hex::encode(&e),
                            hex::encode(data)
                        ));
                    }
                    Ok(())
                }
                Some(Step::HostLen(n)) => {
                    self.steps.pop_front();
                    if n != data.len() {
                        sh.mismatches
                            .push(format!("expected a write of {n} bytes, got {}", data.len()));
                    }
                    Ok(())
                }
                Some(Step::Drop) => {
                    Err(TransportError::Disconnected("script: link dropped".into()))
                }
                other => {
                    sh.mismatches.push(format!(
                        "unexpected write {} (next step {other:?})",
                        hex::encode(data)
                    ));
                    Ok(())
                }
            }
        }

        fn describe(&self) -> String {
            "scripted device".into()
        }
    }

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn cfg() -> SaharaConfig {
        SaharaConfig {
            hello_wait: Duration::from_millis(50),
            handshake_wait: Duration::from_millis(50),
            io_timeout: Duration::from_millis(50),
            ramdump_chunk_timeout: Duration::from_millis(50),
            ..SaharaConfig::default()
        }
    }

    fn check(shared: &Arc<Mutex<Shared>>) {
        let sh = shared.lock().unwrap();
        assert!(sh.mismatches.is_empty(), "{:#?}", sh.mismatches);
    }

    // Bytes from /work/shared/realdata/logs/hostside_qdlrs_vs_pty_stub.txt and
    // hostside_edl_vs_pty_stub.txt (the emulated device's side, and the host writes we share).
    const HELLO_V2: &str = "010000003000000002000000010000000004000000000000000000000000000000000000000000000000000000000000";
    const RESP_MODE3: &str = "020000003000000002000000010000000000000003000000000000000000000000000000000000000000000000000000";
    const RESP_MODE0: &str = "020000003000000002000000010000000000000000000000000000000000000000000000000000000000000000000000";
    const PK96: &str = "cc3153a80293939b90d02d3bf8b23e0292e452fef662c74998421adad42a380fcc3153a80293939b90d02d3bf8b23e0292e452fef662c74998421adad42a380fcc3153a80293939b90d02d3bf8b23e0292e452fef662c74998421adad42a380f";
    const XML_LOG: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<data>\n<log value=\"INFO: Binary build date: Jan  1 2020 @ 00:00:00\" />\n</data>";

    fn capture_script() -> Vec<Step> {
        use Step::*;
        let mut done_resp_and_logs = h("060000000c00000001000000");
        done_resp_and_logs.extend_from_slice(XML_LOG);
        vec![
            Dev(h(HELLO_V2)),
            Host(h(RESP_MODE3)),
            Dev(h("0b00000008000000")),
            Host(h("0d0000000c00000001000000")),
            Dev(h("0e000000100000000100000004000000")),
            Host(h("0f0000000c00000001000000")),
            Dev(h("644cf90c")),
            Host(h("0d0000000c00000002000000")),
            Dev(h("0e000000100000000200000008000000")),
            Host(h("0f0000000c00000002000000")),
            Dev(h("00000000e1800400")),
            Host(h("0d0000000c00000003000000")),
            Dev(h("0e000000100000000300000060000000")),
            Host(h("0f0000000c00000003000000")),
            Dev(h(PK96)),
            Host(h("0d0000000c00000007000000")),
            // SBL version: not supported by this device.
            Dev(h("04000000100000000000000020000000")),
            Host(h("0c0000000c00000000000000")),
            Dev(h(HELLO_V2)),
            Host(h(RESP_MODE0)),
            Dev(h("03000000140000000d0000000000000000100000")),
            HostLen(0x1000),
            Dev(h("03000000140000000d0000000010000000100000")),
            HostLen(0x1000),
            Dev(h("03000000140000000d0000000020000000100000")),
            HostLen(0x1000),
            Dev(h("03000000140000000d0000000030000000100000")),
            HostLen(0x1000),
            Dev(h("04000000100000000d00000000000000")),
            Host(h("0500000008000000")),
            Dev(done_resp_and_logs),
        ]
    }

    fn info_then_upload(max_chunk: usize) {
        let (t, shared) = Scripted::new(capture_script(), max_chunk);
        let mut s = SaharaSession::new(t, cfg());
        let info = s.read_info().unwrap();
        assert_eq!(info.serial, Some(0x0cf9_4c64));
        assert_eq!(info.hw_id.as_ref().unwrap().msm_id, 0x0004_80e1);
        assert_eq!(info.pk_hash.as_deref(), Some(&PK96[..64]));
        assert!(info.sbl_version.is_none());
        assert_eq!(info.sahara_version, Some(2));
        let programmer: Vec<u8> = (0..0x4000u32).map(|i| (i % 251) as u8).collect();
        let mut seen = Vec::new();
        let rep = s
            .upload(&programmer, &mut |p| seen.push(p.bytes_sent))
            .unwrap();
        assert_eq!(rep.bytes_sent, 0x4000);
        assert_eq!(rep.requests, 4);
        assert!(!rep.already_running && !rep.pending_quirk);
        assert_eq!(seen, vec![0x1000, 0x2000, 0x3000, 0x4000]);
        check(&shared);
        // The image bytes were the exact slices.
        {
            let sh = shared.lock().unwrap();
            let data: Vec<u8> = sh
                .written
                .iter()
                .filter(|w| w.len() == 0x1000)
                .flatten()
                .copied()
                .collect();
            assert_eq!(data, programmer);
        }
        // The welcome log that came with DONE_RESP is handed on.
        let mut p = s.into_transport();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while got.len() < XML_LOG.len() {
            let n = p.read(&mut buf, Duration::from_millis(10)).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, XML_LOG);
    }

    #[test]
    fn replays_the_capture_device_side() {
        info_then_upload(4096);
    }

    #[test]
    fn reassembles_packets_split_on_a_stream() {
        info_then_upload(3);
    }

    #[test]
    fn missed_hello_is_recovered_with_an_unsolicited_hello_resp() {
        use Step::*;
        let (t, shared) = Scripted::new(
            vec![
                Silence,
                Host(h(RESP_MODE0)),
                Dev(h("03000000140000000d0000000000000040000000")),
                HostLen(0x40),
                Dev(h("04000000100000000d00000000000000")),
                Host(h("0500000008000000")),
                Dev(h("060000000c00000000000000")),
            ],
            4096,
        );
        let mut s = SaharaSession::new(t, cfg());
        let rep = s.upload(&[7u8; 0x40], &mut |_| {}).unwrap();
        assert!(rep.pending_quirk);
        assert!(rep
            .notes
            .iter()
            .any(|n| n.contains("unsolicited HELLO_RESP")));
        check(&shared);
    }

    #[test]
    fn silence_is_no_device_with_exit_code_3() {
        let (t, shared) = Scripted::new(vec![Step::Silence, Step::Host(h(RESP_MODE0))], 4096);
        let mut s = SaharaSession::new(t, cfg());
        let e = s.upload(&[1u8; 16], &mut |_| {}).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoDevice);
        assert_eq!(e.exit_code(), 3);
        assert!(e.what.contains("sent nothing in download mode"));
        assert!(e.next.contains("Replug or power-cycle"));
        check(&shared);
    }

    #[test]
    fn mid_session_device_gets_one_recovery_then_a_clear_failure() {
        use Step::*;
        let (t, shared) = Scripted::new(
            vec![
                Silence,
                Host(h(RESP_MODE0)),
                Dev(h("04000000100000000d00000001000000")),
                Host(h("1300000008000000")),
            ],
            4096,
        );
        let mut s = SaharaSession::new(
            t,
            SaharaConfig {
                handshake_wait: Duration::from_millis(200),
                ..cfg()
            },
        );
        let e = s.upload(&[1u8; 16], &mut |_| {}).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failure);
        assert!(
            e.what
                .contains("already past the handshake (it sent command 4 instead of HELLO)"),
            "{e}"
        );
        assert!(e.next.contains("change cable/port"));
        check(&shared);
    }

    #[test]
    fn refused_programmer_names_status_and_next_step() {
        use Step::*;
        let (t, shared) = Scripted::new(
            vec![
                Dev(h(HELLO_V2)),
                Host(h(RESP_MODE0)),
                Dev(h("03000000140000000d0000000000000034000000")),
                HostLen(0x34),
                Dev(h("04000000100000000d00000025000000")),
            ],
            4096,
        );
        let mut s = SaharaSession::new(t, cfg());
        let e = s.upload(&[1u8; 0x100], &mut |_| {}).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.what.contains("0x25") && e.what.contains("image auth failure"),
            "{e}"
        );
        assert!(e.next.contains("own firmware package"));
        check(&shared);
    }

    #[test]
    fn link_drop_is_device_lost() {
        use Step::*;
        let (t, _shared) = Scripted::new(
            vec![
                Dev(h(HELLO_V2)),
                Host(h(RESP_MODE0)),
                Dev(h("03000000140000000d0000000000000034000000")),
                HostLen(0x34),
                Drop,
            ],
            4096,
        );
        let mut s = SaharaSession::new(t, cfg());
        let e = s.upload(&[1u8; 0x100], &mut |_| {}).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeviceLost);
        assert_eq!(e.exit_code(), 6);
        assert!(e.what.contains("left the bus during the programmer upload"));
        assert!(e.why.contains("script: link dropped"));
    }

    #[test]
    fn firehose_already_running() {
        let (t, _) = Scripted::new(vec![Step::Dev(XML_LOG.to_vec())], 7);
        let mut s = SaharaSession::new(t, cfg());
        let rep = s.upload(&[1u8; 16], &mut |_| {}).unwrap();
        assert!(rep.already_running);
        assert_eq!(rep.bytes_sent, 0);
        // Nothing of the XML was lost.
        let mut p = s.into_transport();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < XML_LOG.len() {
            let n = p.read(&mut buf, Duration::from_millis(10)).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, XML_LOG);

        let (t, _) = Scripted::new(vec![Step::Dev(XML_LOG.to_vec())], 4096);
        let mut s = SaharaSession::new(t, cfg());
        let e = s.read_info().unwrap_err();
        assert!(e.what.contains("Firehose programmer is already running"));
        assert!(e.next.contains("Flash directly"));
        let dir = tempfile::tempdir().unwrap();
        let (t, _) = Scripted::new(vec![Step::Dev(XML_LOG.to_vec())], 4096);
        let mut s = SaharaSession::new(t, cfg());
        let e = s.ramdump(dir.path(), &mut |_| {}).unwrap_err();
        assert!(e.what.contains("already running"));
    }

    fn name20(s: &[u8]) -> Vec<u8> {
        let mut a = vec![0u8; 20];
        a[..s.len()].copy_from_slice(s);
        a
    }

    fn pattern(seed: u8, n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn hello_mode2() -> Vec<u8> {
        Packet::Hello {
            version: 2,
            version_supported: 1,
            max_cmd_len: 0x400,
            mode: 2,
            reserved: [0; 6],
        }
        .encode()
    }

    fn resp_mode2() -> Vec<u8> {
        Packet::HelloResp {
            version: 2,
            version_supported: 1,
            status: 0,
            mode: 2,
            reserved: [0; 6],
        }
        .encode()
    }

    #[test]
    fn ramdump_64_bit_streams_regions_and_writes_a_manifest() {
        use Step::*;
        let big = 0x90000usize; // 512 KiB + 64 KiB: two reads
        let r0 = pattern(1, big);
        let r1 = pattern(2, 0x1000);
        let mut table = Vec::new();
        for (base, len, name) in [
            (0x8000_0000u64, big as u64, b"DDRCS0.BIN".as_slice()),
            (0x146A_A000, 0x1000, b"../../evil"),
        ] {
            table.extend(1u64.to_le_bytes());
            table.extend(base.to_le_bytes());
            table.extend(len.to_le_bytes());
            table.extend(name20(b"desc"));
            table.extend(name20(name));
        }
        let rd = |addr: u64, len: u64| Packet::MemoryRead64 { addr, len }.encode();
        let steps = vec![
            Dev(hello_mode2()),
            Host(resp_mode2()),
            Dev(Packet::MemoryDebug64 {
                table_addr: 0x1000,
                table_len: 128,
            }
            .encode()),
            Host(rd(0x1000, 128)),
            Dev(table),
            Host(rd(0x8000_0000, 0x80000)),
            Dev(r0[..0x80000].to_vec()),
            Host(rd(0x8008_0000, 0x10000)),
            Dev(r0[0x80000..].to_vec()),
            Host(rd(0x146A_A000, 0x1000)),
            Dev(r1.clone()),
            Host(Packet::Reset.encode()),
            Dev(Packet::ResetResp.encode()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("dump");
        let (t, shared) = Scripted::new(steps, 60_000);
        let mut s = SaharaSession::new(t, cfg());
        let mut last = None;
        let rep = s.ramdump(&out, &mut |p| last = Some(p)).unwrap();
        check(&shared);
        let last = last.unwrap();
        assert_eq!(last.total_done, last.total_len);
        assert_eq!(rep.table_format, "64-bit");
        assert!(rep.reset_acknowledged);
        assert_eq!(rep.regions.len(), 2);
        assert_eq!(rep.regions[1].file, "evil");
        assert_eq!(fs::read(out.join("DDRCS0.BIN")).unwrap(), r0);
        assert_eq!(fs::read(out.join("evil")).unwrap(), r1);
        assert_eq!(
            rep.regions[0].sha256.as_deref(),
            Some(hex::encode(Sha256::digest(&r0)).as_str())
        );
        // Nothing outside the folder, no temp files left.
        let mut names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["DDRCS0.BIN", "evil", "manifest.json"]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let m: serde_json::Value =
            serde_json::from_slice(&fs::read(&rep.manifest).unwrap()).unwrap();
        assert_eq!(m["tool"], "qrescue");
        assert_eq!(m["regions"][1]["sha256"], hex::encode(Sha256::digest(&r1)));
        assert_eq!(m["device"]["mode_name"], "crash-dump");
        assert!(m["created"].as_str().unwrap().ends_with('Z'));

        // A second dump into the same folder refuses to overwrite.
        let (t, _) = Scripted::new(vec![Dev(hello_mode2())], 4096);
        let mut s = SaharaSession::new(t, cfg());
        let e = s.ramdump(&out, &mut |_| {}).unwrap_err();
        assert!(e.what.contains("already exists"));
    }

    #[test]
    fn ramdump_32_bit_with_a_refused_region() {
        use Step::*;
        let mut table = Vec::new();
        for (base, len, name) in [
            (0x1000u32, 0x100u32, b"A.BIN".as_slice()),
            (0x2000, 0x80, b"B.BIN"),
        ] {
            table.extend(0u32.to_le_bytes());
            table.extend(base.to_le_bytes());
            table.extend(len.to_le_bytes());
            table.extend(name20(b"d"));
            table.extend(name20(name));
        }
        let rd = |addr: u32, len: u32| Packet::MemoryRead { addr, len }.encode();
        let b = pattern(9, 0x80);
        let steps = vec![
            Silence,
            Host(resp_mode2()),
            Dev(Packet::MemoryDebug {
                table_addr: 0x40,
                table_len: 104,
            }
            .encode()),
            Host(rd(0x40, 104)),
            Dev(table),
            Host(rd(0x1000, 0x100)),
            Dev(Packet::EndOfImage {
                image_id: 0,
                status: 0x19,
            }
            .encode()),
            Host(rd(0x2000, 0x80)),
            Dev(b.clone()),
            Host(Packet::Reset.encode()),
            Drop,
        ];
        let dir = tempfile::tempdir().unwrap();
        let (t, shared) = Scripted::new(steps, 4096);
        let mut s = SaharaSession::new(t, cfg());
        let rep = s.ramdump(dir.path(), &mut |_| {}).unwrap();
        check(&shared);
        assert_eq!(rep.table_format, "32-bit");
        assert!(
            rep.regions[0].status.starts_with("refused"),
            "{:?}",
            rep.regions[0]
        );
        assert!(rep.regions[0].sha256.is_none());
        assert_eq!(rep.regions[1].status, "ok");
        assert!(!dir.path().join("A.BIN").exists());
        assert_eq!(fs::read(dir.path().join("B.BIN")).unwrap(), b);
        assert!(!rep.reset_acknowledged);
        assert!(rep.notes.iter().any(|n| n.contains("unsolicited")));
    }

    #[test]
    fn ramdump_on_a_download_mode_device_keeps_the_hello_for_an_upload() {
        use Step::*;
        let dir = tempfile::tempdir().unwrap();
        let (t, shared) = Scripted::new(
            vec![
                Dev(h(HELLO_V2)),
                Host(h(RESP_MODE0)),
                Dev(h("03000000140000000d0000000000000010000000")),
                HostLen(0x10),
                Dev(h("04000000100000000d00000000000000")),
                Host(h("0500000008000000")),
                Dev(h("060000000c00000001000000")),
            ],
            4096,
        );
        let mut s = SaharaSession::new(t, cfg());
        let e = s.ramdump(dir.path(), &mut |_| {}).unwrap_err();
        assert!(e.what.contains("not crash-dump mode"), "{e}");
        // The HELLO was not answered; the upload that follows starts from it.
        s.upload(&[3u8; 0x10], &mut |_| {}).unwrap();
        check(&shared);
    }

    #[test]
    fn crash_dump_device_info_then_upload_is_refused_plainly() {
        let (t, _) = Scripted::new(vec![Step::Dev(hello_mode2())], 4096);
        let mut s = SaharaSession::new(t, cfg());
        let i = s.read_info().unwrap();
        assert_eq!(i.mode, Some(2));
        assert_eq!(i.mode_name.as_deref(), Some("crash-dump"));
        let e = s.upload(&[1u8; 4], &mut |_| {}).unwrap_err();
        assert!(e.what.contains("crash-dump mode (900e)"));
        // The unanswered HELLO is still handed on.
        let mut p = s.into_transport();
        let mut buf = [0u8; 64];
        assert_eq!(p.read(&mut buf, Duration::from_millis(5)).unwrap(), 0x30);
        assert_eq!(&buf[..0x30], &hello_mode2()[..]);
    }

    #[test]
    fn info_pass_on_a_device_without_command_mode_hands_the_request_to_the_upload() {
        use Step::*;
        let (t, shared) = Scripted::new(
            vec![
                Dev(h(HELLO_V2)),
                Host(h(RESP_MODE3)),
                // The device ignores mode 3 and asks for the programmer.
                Dev(h("03000000140000000d0000000000000020000000")),
                HostLen(0x20),
                Dev(h("04000000100000000d00000000000000")),
                Host(h("0500000008000000")),
                Dev(h("060000000c00000001000000")),
            ],
            4096,
        );
        let mut s = SaharaSession::new(t, cfg());
        let i = s.read_info().unwrap();
        assert!(i
            .notes
            .iter()
            .any(|n| n.contains("does not offer command mode")));
        let rep = s.upload(&[5u8; 0x20], &mut |_| {}).unwrap();
        assert_eq!(rep.requests, 1);
        check(&shared);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn random_device_bytes_never_panic_and_always_end(
            op in 0u8..3,
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 0..12),
            with_hello in proptest::prelude::any::<bool>(),
            max_chunk in 1usize..64,
        ) {
            let mut steps = Vec::new();
            if with_hello {
                let m = u32::from(op == 2) * 2;
                steps.push(Step::Dev(Packet::Hello { version: 2, version_supported: 1, max_cmd_len: 0x400, mode: m, reserved: [0; 6] }.encode()));
            }
            for c in chunks {
                steps.push(Step::Dev(c));
                steps.push(Step::Silence);
            }
            let (t, _) = Scripted::new(steps, max_chunk);
            let mut s = SaharaSession::new(t, SaharaConfig { max_dump_bytes: 1 << 20, ..cfg() });
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("d");
            match op {
                0 => { let _ = s.upload(&[0xA5u8; 0x200], &mut |_| {}); }
                1 => { let _ = s.read_info(); }
                _ => {
                    let _ = s.ramdump(&out, &mut |_| {});
                    if out.exists() {
                        for e in fs::read_dir(&out).unwrap() {
                            let name = e.unwrap().file_name().into_string().unwrap();
                            proptest::prop_assert!(memdebug::is_plain_file_name(&name), "{}", name);
                        }
                    }
                    proptest::prop_assert_eq!(fs::read_dir(dir.path()).unwrap().count(), usize::from(out.exists()));
                }
            }
            let _ = s.into_transport();
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let (secs, s) = now_utc();
        assert!(secs > 1_600_000_000);
        assert_eq!(s.len(), 20);
        assert_eq!(&s[4..5], "-");
        assert_eq!(&s[10..11], "T");
    }
}
