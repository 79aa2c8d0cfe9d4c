//! The emulated Firehose programmer: welcome logs, then XML commands with raw data over any
//! [`Transport`], served against the emulated [`Storage`] (PROTOCOLS.md §2, §9).
//!
//! Wire rules kept here: every device document is one write that ends exactly at `</data>`; raw
//! data is written separately, right after the `rawmode="true"` document; raw data a host sends
//! in the same write as its XML is taken from the splitter's rest; whitespace after a host's
//! `</data>` is never raw data (the splitter drops it before the next document, and a program
//! reads exactly its byte count).
//!
//! Faults ([`crate::sim::faults`]) are one-shot per `Programmer`: each fires once, so a host that
//! resets and retries can recover. Command numbers (Nak, GarbledXml, Hang) count the documents of
//! the current `serve` call from 1; NandWriteFail counts NAND programs over the programmer's
//! life; DropInRaw counts raw bytes (program and read) over its life.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::storage::{Region, Storage, StorageProfile};
use crate::package::expr::{self, ExprEnv, PatchValue};
use crate::protocol::firehose::xml::{
    device_document, parse_elements, DocumentSplitter, Element, Limits,
};
use crate::sim::faults::{Fault, FaultPlan};
use crate::sim::profile::UnitIdentity;
use crate::sim::{AfterUpload, ProgrammerExit};
use crate::transport::{Transport, TransportError};

/// The functions the emulated programmer announces: the real Quectel SDX24 list (PROTOCOLS.md
/// §2.2), shared with the host's welcome parser.
pub use crate::protocol::firehose::welcome::SDX24_FUNCTIONS as SUPPORTED_FUNCTIONS;

pub const BUILD_DATE: &str = "Jun 11 2021 @ 10:04:28";
const DATE_TIME: &str = "Jun 11 2021 - 10:04:28";
pub const MAX_XML_SIZE: u64 = 4096;
/// A host document longer than this without `</data>` is refused.
const MAX_DOC_BYTES: usize = 16 * 1024;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_SLICE: Duration = Duration::from_millis(250);
/// Raw data is stored in pieces of at most this many bytes.
const RAW_PIECE: usize = 1 << 20;
const MAX_RECORDED_COMMANDS: usize = 100_000;

/// How the programmer behaves apart from its storage.
#[derive(Debug, Clone)]
pub struct ProgrammerOptions {
    /// Send the welcome logs after being started.
    pub welcome: bool,
    /// Delay between the call to `serve` (right after DONE_RESP) and the welcome logs.
    pub welcome_delay: Duration,
    /// Emulate slow storage: raw data (program and read) flows at most this many bytes/s.
    pub throughput_limit: Option<u64>,
    pub faults: FaultPlan,
    /// Give up on a program whose raw data stops arriving for this long (NAK).
    pub raw_idle_timeout: Duration,
}

impl Default for ProgrammerOptions {
    fn default() -> Self {
        ProgrammerOptions {
            welcome: true,
            welcome_delay: Duration::from_millis(150),
            throughput_limit: None,
            faults: FaultPlan::none(),
            raw_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// One command the programmer saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// 1-based `serve` call.
    pub session: u32,
    /// 1-based document number within the session.
    pub index: u64,
    /// Tag, lower case (`<malformed>` for a document that did not parse).
    pub tag: String,
    /// Addressing and value attributes as sent.
    pub attrs: BTreeMap<String, String>,
    /// "ACK", "NAK", "garbled", "hung" or "link-lost".
    pub outcome: String,
}

/// What a storage write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    Program,
    Erase,
    Patch,
}

/// One command that changed the storage: a program the programmer accepted (its raw data
/// stored as it arrived, so an interrupted one is here too, with the bytes it got), an erase
/// or a DISK patch that was carried out. Commands under `SkipWrite` are not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageWrite {
    /// 1-based `serve` call.
    pub session: u32,
    pub kind: WriteKind,
    pub lun: u32,
    pub start_sector: u64,
    /// Sectors the command addresses (pages on NAND; 1 for a patch).
    pub num_sectors: u64,
    /// Raw data bytes handed to the storage (programs; 0 otherwise).
    pub bytes: u64,
}

/// How often one partition was written, from a [`StorageWrite`] log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionWrites {
    pub lun: u32,
    pub name: String,
    pub start_sector: u64,
    pub num_sectors: u64,
    pub programs: u32,
    pub erases: u32,
    pub patches: u32,
    /// Raw data bytes programmed into it.
    pub bytes: u64,
}

impl StorageWrite {
    /// Whether the write touches sectors of `r`.
    pub fn touches(&self, r: &Region) -> bool {
        let end = self.start_sector.saturating_add(self.num_sectors.max(1));
        self.lun == r.lun
            && self.start_sector < r.start_sector.saturating_add(r.num_sectors)
            && end > r.start_sector
    }
}

/// Count the writes of `log` per partition of `regions` (a write spanning several partitions
/// counts for each). Partitions never written are listed with zeros.
pub fn writes_per_region(log: &[StorageWrite], regions: &[Region]) -> Vec<RegionWrites> {
    regions
        .iter()
        .map(|r| {
            let mut w = RegionWrites {
                lun: r.lun,
                name: r.name.clone(),
                start_sector: r.start_sector,
                num_sectors: r.num_sectors,
                programs: 0,
                erases: 0,
                patches: 0,
                bytes: 0,
            };
            for e in log.iter().filter(|e| e.touches(r)) {
                match e.kind {
                    WriteKind::Program => {
                        w.programs += 1;
                        w.bytes += e.bytes;
                    }
                    WriteKind::Erase => w.erases += 1,
                    WriteKind::Patch => w.patches += 1,
                }
            }
            w
        })
        .collect()
}

/// Storage facts for a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSummary {
    pub profile: String,
    pub memory: String,
    pub sector_size: u32,
    /// Sector count of every physical partition (LUN), in order.
    pub physical_partitions: Vec<u64>,
    pub pages_per_block: Option<u32>,
    pub bad_blocks: Vec<u32>,
    pub allocated_bytes: u64,
}

/// A partition region and the SHA-256 of its physical bytes now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDigest {
    #[serde(flatten)]
    pub region: Region,
    /// Hex SHA-256; `None` if the region lies outside the storage or is larger than
    /// [`super::storage::REPORT_HASH_LIMIT`].
    pub sha256: Option<String>,
}

/// What the emulated programmer did and what its storage holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimReport {
    pub storage: StorageSummary,
    pub partitions: Vec<PartitionDigest>,
    pub commands: Vec<CommandRecord>,
    /// Commands not recorded because the record was full.
    pub commands_dropped: u64,
    pub sessions: u32,
}

#[derive(Debug, Clone, Default)]
struct ArmedFaults {
    nak: Option<u64>,
    payload_too_large: bool,
    garbled: Option<u64>,
    drop_in_raw: Option<u64>,
    hang: Option<u64>,
    nand_write_fail: Option<u64>,
}

impl ArmedFaults {
    fn from_plan(plan: &mut FaultPlan) -> Self {
        ArmedFaults {
            nak: plan.number(|f| matches!(f, Fault::Nak(_)).then(|| num(f)), 1..10),
            payload_too_large: plan.has(|f| matches!(f, Fault::PayloadTooLarge)),
            garbled: plan.number(|f| matches!(f, Fault::GarbledXml(_)).then(|| num(f)), 1..10),
            drop_in_raw: plan.number(
                |f| matches!(f, Fault::DropInRaw(_)).then(|| num(f)),
                1..4 << 20,
            ),
            hang: plan.number(|f| matches!(f, Fault::Hang(_)).then(|| num(f)), 2..10),
            nand_write_fail: plan.number(
                |f| matches!(f, Fault::NandWriteFail(_)).then(|| num(f)),
                1..4,
            ),
        }
    }
}

fn num(f: &Fault) -> Option<u64> {
    match f {
        Fault::Nak(v)
        | Fault::GarbledXml(v)
        | Fault::DropInRaw(v)
        | Fault::Hang(v)
        | Fault::NandWriteFail(v) => *v,
        _ => None,
    }
}

/// The emulated Firehose programmer. Keeps its storage across `serve` calls (resets).
#[derive(Debug)]
pub struct Programmer {
    storage: Storage,
    opts: ProgrammerOptions,
    faults: ArmedFaults,
    commands: Vec<CommandRecord>,
    commands_dropped: u64,
    sessions: u32,
    nand_programs: u64,
    raw_bytes: u64,
    writes: Vec<StorageWrite>,
    writes_dropped: u64,
    write_seq: Arc<AtomicUsize>,
}

/// Per-`serve` link state.
struct Io<'a> {
    link: &'a mut dyn Transport,
    splitter: DocumentSplitter,
    index: u64,
    last_response: Option<&'static str>,
    skip_write: bool,
}

type Flow = Result<(), ProgrammerExit>;

impl Io<'_> {
    fn write(&mut self, bytes: &[u8]) -> Flow {
        self.link
            .write(bytes, WRITE_TIMEOUT)
            .map_err(|_| ProgrammerExit::LinkLost)
    }

    fn log(&mut self, msg: &str) -> Flow {
        self.write(&device_document(&Element::new("log").attr("value", msg)))
    }

    fn respond(&mut self, ack: bool, rawmode: bool, extra: &[(&str, String)]) -> Flow {
        let mut e = Element::new("response")
            .attr("value", if ack { "ACK" } else { "NAK" })
            .attr("rawmode", rawmode);
        for (k, v) in extra {
            e = e.attr(*k, v);
        }
        self.last_response = Some(if ack { "ACK" } else { "NAK" });
        self.write(&device_document(&e))
    }

    fn ack(&mut self) -> Flow {
        self.respond(true, false, &[])
    }

    fn nak(&mut self) -> Flow {
        self.respond(false, false, &[])
    }

    /// Log an error line, then NAK.
    fn fail(&mut self, msg: &str) -> Flow {
        self.log(msg)?;
        self.nak()
    }

    /// Read the next host document, waiting as long as the link stays up.
    fn next_document(&mut self) -> Result<Vec<u8>, ProgrammerExit> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.splitter.next_document() {
                Ok(Some(d)) => return Ok(d),
                Ok(None) => {}
                Err(_) => {
                    self.splitter.take_rest();
                    self.fail("ERROR: XML packet too large or not terminated by </data>")?;
                    continue;
                }
            }
            match self.link.read(&mut buf, READ_SLICE) {
                Ok(n) => self.splitter.push(&buf[..n]),
                Err(TransportError::Timeout { .. }) => {}
                Err(_) => return Err(ProgrammerExit::LinkLost),
            }
        }
    }
}

/// Paces raw data to a byte rate.
struct Throttle {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate: rate.filter(|r| *r > 0),
            start: Instant::now(),
            bytes: 0,
        }
    }

    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                sleep(due - elapsed);
            }
        }
    }
}

/// Addressing attributes of program/read/erase/getsha256digest, resolved.
struct Addr {
    lun: u32,
    start: Option<u64>,
    count: Option<u64>,
    last: Option<u64>,
}

const KEY_ATTRS: &[&str] = &[
    "MemoryName",
    "MaxPayloadSizeToTargetInBytes",
    "SkipWrite",
    "SECTOR_SIZE_IN_BYTES",
    "physical_partition_number",
    "start_sector",
    "num_partition_sectors",
    "last_sector",
    "PAGES_PER_BLOCK",
    "filename",
    "label",
    "byte_offset",
    "size_in_bytes",
    "value",
    "DelayInSeconds",
];

impl Programmer {
    pub fn new(profile: &StorageProfile, options: ProgrammerOptions) -> Self {
        Self::with_storage(Storage::new(profile), options)
    }

    pub fn with_storage(storage: Storage, mut options: ProgrammerOptions) -> Self {
        let faults = ArmedFaults::from_plan(&mut options.faults);
        Programmer {
            storage,
            opts: options,
            faults,
            commands: Vec::new(),
            commands_dropped: 0,
            sessions: 0,
            nand_programs: 0,
            raw_bytes: 0,
            writes: Vec::new(),
            writes_dropped: 0,
            write_seq: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }

    pub fn options(&self) -> &ProgrammerOptions {
        &self.opts
    }

    /// Every command seen so far.
    pub fn commands(&self) -> &[CommandRecord] {
        &self.commands
    }

    /// Every command that changed the storage so far, in order ([`writes_per_region`] counts
    /// them per partition).
    pub fn writes(&self) -> &[StorageWrite] {
        &self.writes
    }

    /// Writes not logged because the log was full.
    pub fn writes_dropped(&self) -> u64 {
        self.writes_dropped
    }

    /// A live count of the storage writes so far (logged or not), readable from another
    /// thread while the programmer serves: a harness marks where each host attempt's writes
    /// end in [`Programmer::writes`].
    pub fn write_seq(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.write_seq)
    }

    /// Log a storage write; the index of its entry, if logged.
    fn log_write(&mut self, kind: WriteKind, lun: u32, start: u64, sectors: u64) -> Option<usize> {
        self.write_seq.fetch_add(1, Ordering::SeqCst);
        if self.writes.len() >= MAX_RECORDED_COMMANDS {
            self.writes_dropped += 1;
            return None;
        }
        self.writes.push(StorageWrite {
            session: self.sessions,
            kind,
            lun,
            start_sector: start,
            num_sectors: sectors,
            bytes: 0,
        });
        Some(self.writes.len() - 1)
    }

    /// Sectors as a `<read>` without last_sector returns them.
    pub fn read_sectors(
        &self,
        lun: u32,
        start: u64,
        count: u64,
    ) -> Result<Vec<u8>, super::storage::AccessError> {
        self.storage.read_sectors(lun, start, count)
    }

    /// Hex SHA-256 of sectors as a `<read>` without last_sector returns them.
    pub fn sha256_of(
        &self,
        lun: u32,
        range: std::ops::Range<u64>,
    ) -> Result<String, super::storage::AccessError> {
        let count = range.end.saturating_sub(range.start);
        self.storage
            .sha256_of(lun, range.start, count, None)
            .map(hex::encode)
    }

    pub fn report(&self) -> SimReport {
        let s = &self.storage;
        let partitions = s
            .regions()
            .into_iter()
            .map(|r| PartitionDigest {
                sha256: s.physical_sha256(r.lun, r.start_sector, r.num_sectors),
                region: r,
            })
            .collect();
        SimReport {
            storage: StorageSummary {
                profile: s.profile_name().to_string(),
                memory: s.memory_name().to_string(),
                sector_size: s.sector_size(),
                physical_partitions: (0..s.num_physical())
                    .filter_map(|l| s.num_sectors(l))
                    .collect(),
                pages_per_block: s.pages_per_block(),
                bad_blocks: s.nand().map(|n| n.bad_blocks()).unwrap_or_default(),
                allocated_bytes: s.allocated_bytes(),
            },
            partitions,
            commands: self.commands.clone(),
            commands_dropped: self.commands_dropped,
            sessions: self.sessions,
        }
    }

    fn max_payload_supported(&self) -> u64 {
        if self.storage.is_nand() {
            8192
        } else {
            1 << 20
        }
    }

    fn max_payload_from_target(&self) -> u64 {
        self.max_payload_supported()
    }

    fn welcome_lines(unit: &UnitIdentity) -> Vec<String> {
        let mut v = vec![
            format!("INFO: Binary build date: {BUILD_DATE}"),
            format!(
                "INFO: Chip serial num: {} ({:#x})",
                unit.serial, unit.serial
            ),
            format!("INFO: Supported Functions ({}):", SUPPORTED_FUNCTIONS.len()),
        ];
        v.extend(SUPPORTED_FUNCTIONS.iter().map(|f| format!("INFO: {f}")));
        v.push(format!(
            "INFO: End of supported functions {}",
            SUPPORTED_FUNCTIONS.len()
        ));
        v
    }

    fn record(&mut self, session: u32, index: u64, el: Option<&Element>) -> Option<usize> {
        if self.commands.len() >= MAX_RECORDED_COMMANDS {
            self.commands_dropped += 1;
            return None;
        }
        let (tag, attrs) = match el {
            Some(e) => (
                e.name.to_ascii_lowercase(),
                e.attrs
                    .iter()
                    .filter(|(k, _)| KEY_ATTRS.iter().any(|a| a.eq_ignore_ascii_case(k)))
                    .map(|(k, v)| (k.clone(), v.chars().take(256).collect()))
                    .collect(),
            ),
            None => ("<malformed>".to_string(), BTreeMap::new()),
        };
        self.commands.push(CommandRecord {
            session,
            index,
            tag,
            attrs,
            outcome: String::new(),
        });
        Some(self.commands.len() - 1)
    }

    fn handle_document(&mut self, io: &mut Io<'_>, doc: &[u8]) -> Flow {
        io.index += 1;
        io.last_response = None;
        let index = io.index;
        let session = self.sessions;
        let parsed = parse_elements(doc, Limits::WIRE);
        let cmd = match &parsed {
            Ok(els) if els.first().is_some_and(|e| e.name == "data") => {
                els.iter().find(|e| e.depth == 1).cloned()
            }
            _ => None,
        };
        let slot = self.record(session, index, cmd.as_ref());
        let result = self.dispatch(io, &parsed, cmd.as_ref());
        if let Some(i) = slot {
            self.commands[i].outcome = match (&result, io.last_response) {
                (Err(ProgrammerExit::Hung), _) => "hung".into(),
                (Err(ProgrammerExit::LinkLost), _) => "link-lost".into(),
                (_, Some(r)) => r.into(),
                (_, None) => "garbled".into(),
            };
        }
        result
    }

    fn dispatch(
        &mut self,
        io: &mut Io<'_>,
        parsed: &Result<Vec<Element>, crate::protocol::firehose::xml::XmlError>,
        cmd: Option<&Element>,
    ) -> Flow {
        let index = io.index;
        if self.faults.hang.is_some_and(|n| index >= n) {
            self.faults.hang = None;
            return Err(ProgrammerExit::Hung);
        }
        if self.faults.garbled == Some(index) {
            self.faults.garbled = None;
            return io.write(b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<data>\n<response value=\"ACK\" rawmode=\n</data>");
        }
        let cmd = match (parsed, cmd) {
            (Err(e), _) => return io.fail(&format!("ERROR: XML not formed correctly: {e}")),
            (Ok(els), None) if els.first().is_some_and(|e| e.name == "data") => {
                return io.fail("ERROR: no command inside <data>")
            }
            (Ok(_), None) => return io.fail("ERROR: XML root element must be <data>"),
            (Ok(_), Some(c)) => c,
        };
        let tag = cmd.name.to_ascii_lowercase();
        if self.faults.nak == Some(index) {
            self.faults.nak = None;
            io.log(&format!("INFO: Calling handler for {tag}"))?;
            let r = io.fail(&format!(
                "ERROR: Failed to handle '{tag}' (emulated failure, fault nak:{index})"
            ));
            io.splitter.take_rest();
            return r;
        }
        match tag.as_str() {
            "configure" => self.configure(io, cmd),
            "program" => self.program(io, cmd),
            "read" => self.read(io, cmd),
            "erase" => self.erase(io, cmd),
            "patch" => self.patch(io, cmd),
            "getstorageinfo" => self.getstorageinfo(io, cmd),
            "getsha256digest" => self.getsha256digest(io, cmd),
            "nop" => io.ack(),
            "setbootablestoragedrive" => {
                let v = cmd.get_ci("value").unwrap_or("0");
                io.log(&format!("INFO: Using bootable storage drive {v}"))?;
                io.ack()
            }
            "power" => self.power(io, cmd),
            "benchmark" | "firmwarewrite" | "emmc" | "ufs" | "fixgpt" => {
                io.log(&format!("INFO: Calling handler for {tag}"))?;
                io.log(&format!(
                    "INFO: {tag}: nothing to do on the emulated {} storage",
                    self.storage.memory_name()
                ))?;
                io.ack()
            }
            _ => io.fail(&format!(
                "ERROR: Unrecognized tag <{}>; not supported by this programmer",
                cmd.name
            )),
        }
    }

    fn configure(&mut self, io: &mut Io<'_>, cmd: &Element) -> Flow {
        io.log("INFO: Calling handler for configure")?;
        let mem = self.storage.memory_name();
        let supported = self.max_payload_supported();
        if let Some(m) = cmd.get_ci("MemoryName") {
            let want = m.to_ascii_lowercase();
            let ok = match mem {
                "nand" => want == "nand",
                "eMMC" => want == "emmc" || want == "sdcc",
                _ => want == "ufs",
            };
            if !ok {
                io.log(&format!("ERROR: Not support configure MemoryName {m}"))?;
                return io.respond(false, false, &[("MemoryName", mem.to_string())]);
            }
            io.log(&format!("INFO: Storage type set to value {m}"))?;
        } else {
            io.log(&format!("INFO: Storage type set to value {mem}"))?;
        }
        if let Some(msg) = self.pages_per_block_mismatch(cmd) {
            return io.fail(&msg);
        }
        let requested = match cmd.get_ci("MaxPayloadSizeToTargetInBytes") {
            None => supported,
            Some(v) => match expr::eval(
                v,
                &ExprEnv {
                    num_disk_sectors: 0,
                    num_disk_blocks: None,
                },
            ) {
                Ok(n) => n,
                Err(e) => {
                    return io.fail(&format!("ERROR: MaxPayloadSizeToTargetInBytes '{v}': {e}"))
                }
            },
        };
        let ss = u64::from(self.storage.sector_size());
        let from = self.max_payload_from_target();
        let supported = if self.faults.payload_too_large {
            // The device offers a smaller size than it otherwise would (and than the host asks).
            if supported > 64 * 1024 {
                supported / 8
            } else {
                (supported / 2).max(ss) / ss * ss
            }
        } else {
            supported
        };
        let answer = |granted: u64| {
            vec![
                ("MemoryName", mem.to_string()),
                ("MinVersionSupported", "1".to_string()),
                ("Version", "1".to_string()),
                ("MaxPayloadSizeToTargetInBytes", granted.to_string()),
                (
                    "MaxPayloadSizeToTargetInBytesSupported",
                    supported.to_string(),
                ),
                ("MaxXMLSizeInBytes", MAX_XML_SIZE.to_string()),
                ("MaxPayloadSizeFromTargetInBytes", from.to_string()),
                ("DateTime", DATE_TIME.to_string()),
                ("TargetName", self.storage.target_name().to_string()),
            ]
        };
        if self.faults.payload_too_large && requested > supported {
            io.log("ERROR: Host's payload to target size is too large")?;
            return io.respond(false, false, &answer(supported));
        }
        let granted = (requested.min(supported) / ss * ss).max(ss).min(supported);
        io.skip_write = cmd.get_ci("SkipWrite").is_some_and(|v| v.trim() == "1");
        io.respond(true, false, &answer(granted))
    }

    fn pages_per_block_mismatch(&self, cmd: &Element) -> Option<String> {
        let spec = self.storage.nand_spec()?;
        if !spec.check_pages_per_block {
            return None;
        }
        let v = cmd.get_ci("PAGES_PER_BLOCK")?;
        let ppb = spec.geometry.pages_per_block;
        if v.trim().parse::<u64>().ok() == Some(u64::from(ppb)) {
            return None;
        }
        Some(format!(
            "ERROR: Attribute 'PAGES_PER_BLOCK'={v} must be equal to disk pages per block {ppb}"
        ))
    }

    /// Resolve addressing attributes; `Err` carries the log line for a NAK.
    fn addr(&self, cmd: &Element) -> Result<Addr, String> {
        let ss = self.storage.sector_size();
        if let Some(v) = cmd.get_ci("SECTOR_SIZE_IN_BYTES") {
            if v.trim().parse::<u64>().ok() != Some(u64::from(ss)) {
                return Err(format!(
                    "ERROR: SECTOR_SIZE_IN_BYTES={v} does not match the {} sector size {ss}",
                    self.storage.memory_name()
                ));
            }
        }
        let lun = match cmd.get_ci("physical_partition_number") {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("ERROR: physical_partition_number '{v}' is not a number"))?,
        };
        let env = self.storage.expr_env(lun).ok_or_else(|| {
            format!(
                "ERROR: Invalid physical partition {lun}; this {} has {}",
                self.storage.memory_name(),
                self.storage.num_physical()
            )
        })?;
        let num = |key: &str| -> Result<Option<u64>, String> {
            cmd.get_ci(key)
                .map(|v| expr::eval(v, &env).map_err(|e| format!("ERROR: {key} '{v}': {e}")))
                .transpose()
        };
        Ok(Addr {
            lun,
            start: num("start_sector")?,
            count: num("num_partition_sectors")?,
            last: num("last_sector")?,
        })
    }

    fn program(&mut self, io: &mut Io<'_>, cmd: &Element) -> Flow {
        io.log("INFO: Calling handler for program")?;
        let nand = self.storage.is_nand();
        if nand {
            io.log("INFO: NAND was previously open, returning existing handle 0.")?;
        }
        let r = self.program_inner(io, cmd, nand);
        if io.last_response == Some("NAK") {
            // Raw bytes a host sent along with a refused program are not a command.
            io.splitter.take_rest();
        }
        r
    }

    fn program_inner(&mut self, io: &mut Io<'_>, cmd: &Element, nand: bool) -> Flow {
        let a = match self.addr(cmd) {
            Ok(a) => a,
            Err(m) => return io.fail(&m),
        };
        let (Some(start), Some(count)) = (a.start, a.count) else {
            return io.fail("ERROR: program needs start_sector and num_partition_sectors");
        };
        if count == 0 {
            return io.fail("ERROR: num_partition_sectors is 0; nothing to program");
        }
        let ss = u64::from(self.storage.sector_size());
        let Some(total_bytes) = count.checked_mul(ss) else {
            return io.fail("ERROR: num_partition_sectors is too large");
        };
        let mut plan = None;
        let mut fail_at = None;
        if nand {
            if let Some(m) = self.pages_per_block_mismatch(cmd) {
                return io.fail(&m);
            }
            let n = self.storage.nand().expect("nand storage");
            match n.plan_program(start, count, a.last) {
                Ok(p) => {
                    for b in &p.skipped {
                        io.log(&format!("INFO: Skipping bad block {b}"))?;
                    }
                    plan = Some(p);
                }
                Err(e) => return io.fail(&e.to_string()),
            }
            self.nand_programs += 1;
            if self.faults.nand_write_fail == Some(self.nand_programs) {
                self.faults.nand_write_fail = None;
                fail_at = Some(count / 2);
            }
        } else {
            let total = self.storage.num_sectors(a.lun).unwrap_or(0);
            if start.checked_add(count).is_none_or(|e| e > total) {
                return io.fail(&format!(
                    "ERROR: Write of {count} sectors at {start} exceeds the end of physical partition {} ({total} sectors)",
                    a.lun
                ));
            }
        }
        io.respond(true, true, &[])?;
        let logged = if io.skip_write {
            None
        } else {
            self.log_write(WriteKind::Program, a.lun, start, count)
        };

        // Receive exactly total_bytes of raw data.
        let mut throttle = Throttle::new(self.opts.throughput_limit);
        let mut pending: Vec<u8> = io.splitter.take_rest();
        if pending.len() as u64 > total_bytes {
            let extra = pending.split_off(total_bytes as usize);
            io.splitter.push(&extra);
        }
        let mut received = pending.len() as u64;
        if self.count_raw(pending.len()).is_err() {
            return Err(ProgrammerExit::LinkLost);
        }
        throttle.add(pending.len());
        let mut written_sectors = 0u64;
        let mut failed_page = None;
        let mut buf = vec![0u8; RAW_PIECE];
        let mut idle = Duration::ZERO;
        loop {
            // Store every whole sector we hold (all of it at the end).
            let whole = (pending.len() as u64 / ss) * ss;
            if whole >= RAW_PIECE as u64 || (received == total_bytes && whole > 0) {
                let chunk: Vec<u8> = pending.drain(..whole as usize).collect();
                let n = whole / ss;
                if !io.skip_write {
                    self.store(
                        a.lun,
                        start,
                        written_sectors,
                        &chunk,
                        plan.as_ref(),
                        fail_at,
                        &mut failed_page,
                    );
                    if let Some(i) = logged {
                        self.writes[i].bytes += whole;
                    }
                }
                written_sectors += n;
            }
            if received == total_bytes {
                break;
            }
            let want = ((total_bytes - received) as usize).min(buf.len());
            match io.link.read(&mut buf[..want], READ_SLICE) {
                Ok(0) => {}
                Ok(n) => {
                    idle = Duration::ZERO;
                    if self.count_raw(n).is_err() {
                        return Err(ProgrammerExit::LinkLost);
                    }
                    pending.extend_from_slice(&buf[..n]);
                    received += n as u64;
                    throttle.add(n);
                }
                Err(TransportError::Timeout { .. }) => {
                    idle += READ_SLICE;
                    if idle >= self.opts.raw_idle_timeout {
                        return io.fail(&format!(
                            "ERROR: Timed out waiting for raw data: got {received} of {total_bytes} bytes"
                        ));
                    }
                }
                Err(_) => return Err(ProgrammerExit::LinkLost),
            }
        }
        if let Some(page) = failed_page {
            return io.fail(&format!("ERROR: NAND write failure at page {page}"));
        }
        io.ack()
    }

    /// Account `n` raw bytes against the DropInRaw fault: `Err(k)` when the link drops after
    /// only `k` of them.
    fn count_raw(&mut self, n: usize) -> Result<(), usize> {
        let before = self.raw_bytes;
        self.raw_bytes += n as u64;
        match self.faults.drop_in_raw {
            Some(at) if self.raw_bytes >= at => {
                self.faults.drop_in_raw = None;
                Err(at.saturating_sub(before).min(n as u64) as usize)
            }
            _ => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        lun: u32,
        start: u64,
        first: u64,
        data: &[u8],
        plan: Option<&super::nand::NandPlan>,
        fail_at: Option<u64>,
        failed_page: &mut Option<u64>,
    ) {
        let ss = u64::from(self.storage.sector_size());
        match plan {
            Some(plan) => {
                let ppb = self.storage.pages_per_block().unwrap_or(64);
                let n = data.len() as u64 / ss;
                let nand = self.storage.nand_mut().expect("nand storage");
                let stop = match fail_at {
                    Some(f) if failed_page.is_none() && f < first + n => Some(f.max(first)),
                    _ => None,
                };
                if failed_page.is_some() {
                    return;
                }
                let upto = stop.unwrap_or(first + n);
                let keep = ((upto - first) * ss) as usize;
                nand.program_pages(plan, first, &data[..keep]);
                if let Some(f) = stop {
                    *failed_page = plan.phys_page(f, ppb);
                }
            }
            None => {
                if let Some(s) = self.storage.block_store_mut(lun) {
                    s.write((start + first) * ss, data);
                }
            }
        }
    }

    fn read(&mut self, io: &mut Io<'_>, cmd: &Element) -> Flow {
        io.log("INFO: Calling handler for read")?;
        let a = match self.addr(cmd) {
            Ok(a) => a,
            Err(m) => return io.fail(&m),
        };
        let (Some(start), Some(count)) = (a.start, a.count) else {
            return io.fail("ERROR: read needs start_sector and num_partition_sectors");
        };
        if count == 0 {
            return io.fail("ERROR: num_partition_sectors is 0; nothing to read");
        }
        let ss = u64::from(self.storage.sector_size());
        let plan = match &self.storage {
            Storage::Nand { nand, .. } => match nand.plan(start, count, a.last, true) {
                Ok(p) => Some(p),
                Err(e) => return io.fail(&e.to_string()),
            },
            Storage::Block { .. } => {
                let total = self.storage.num_sectors(a.lun).unwrap_or(0);
                if start.checked_add(count).is_none_or(|e| e > total) {
                    return io.fail(&format!(
                        "ERROR: Read of {count} sectors at {start} exceeds the end of physical partition {} ({total} sectors)",
                        a.lun
                    ));
                }
                None
            }
        };
        io.respond(true, true, &[])?;
        let per = (self.max_payload_from_target() / ss).max(1);
        let mut throttle = Throttle::new(self.opts.throughput_limit);
        let mut buf = vec![0u8; (per * ss) as usize];
        let mut k = 0u64;
        while k < count {
            let n = per.min(count - k);
            let b = &mut buf[..(n * ss) as usize];
            match (&self.storage, &plan) {
                (Storage::Nand { nand, .. }, Some(p)) => nand.read_pages(p, k, b),
                _ => {
                    if let Some(s) = self.storage.block_store(a.lun) {
                        s.read((start + k) * ss, b);
                    }
                }
            }
            if let Err(cut) = self.count_raw(b.len()) {
                // Send what goes out before the drop, then vanish.
                if cut > 0 {
                    let _ = io.link.write(&b[..cut], WRITE_TIMEOUT);
                }
                return Err(ProgrammerExit::LinkLost);
            }
            io.write(b)?;
            throttle.add(b.len());
            k += n;
        }
        io.ack()
    }

    fn erase(&mut self, io: &mut Io<'_>, cmd: &Element) -> Flow {
        io.log("INFO: Calling handler for erase")?;
        let a = match self.addr(cmd) {
            Ok(a) => a,
            Err(m) => return io.fail(&m),
        };
        let total = self.storage.num_sectors(a.lun).unwrap_or(0);
        let start = a.start.unwrap_or(0);
        let count = a.count.unwrap_or_else(|| total.saturating_sub(start));
        if self.storage.is_nand() {
            if let Some(m) = self.pages_per_block_mismatch(cmd) {
                return io.fail(&m);
            }
            let nand = self.storage.nand_mut().expect("nand storage");
            match nand.erase(start, count, a.last) {
                Ok(plan) => {
                    self.log_write(WriteKind::Erase, a.lun, start, count);
                    for b in &plan.skipped {
                        io.log(&format!("INFO: Skipping bad block {b}"))?;
                    }
                    io.log(&format!(
                        "INFO: Erasing start sector {start}, {} blocks",
                        plan.blocks.len()
                    ))?;
                    io.ack()
                }
                Err(e) => io.fail(&e.to_string()),
            }
        } else {
            if start.checked_add(count).is_none_or(|e| e > total) {
                return io.fail(&format!(
                    "ERROR: Erase of {count} sectors at {start} exceeds the end of physical partition {} ({total} sectors)",
                    a.lun
                ));
            }
            let ss = u64::from(self.storage.sector_size());
            if let Some(s) = self.storage.block_store_mut(a.lun) {
                s.erase(start * ss, count * ss);
            }
            self.log_write(WriteKind::Erase, a.lun, start, count);
            io.log(&format!("INFO: Erased {count} sectors at {start}"))?;
            io.ack()
        }
    }

    fn patch(&mut self, io: &mut Io<'_>, cmd: &Element) -> Flow {
        io.log("INFO: Calling handler for patch")?;
        let filename = cmd.get_ci("filename").unwrap_or("DISK");
        if filename != "DISK" {
            io.log(&format!(
                "INFO: Patch for host-side file '{filename}' ignored; only filename=\"DISK\" patches the device"
            ))?;
            return io.ack();
        }
        if self.storage.is_nand() {
            return io.fail("ERROR: DISK patches are not supported on NAND storage");
        }
        match self.apply_disk_patch(cmd) {
            Ok(msg) => {
                io.log(&msg)?;
                io.ack()
            }
            Err(m) => io.fail(&m),
        }
    }

    fn apply_disk_patch(&mut self, cmd: &Element) -> Result<String, String> {
        let a = self.addr(cmd)?;
        let env = self
            .storage
            .expr_env(a.lun)
            .ok_or("ERROR: no such physical partition")?;
        let ss = u64::from(self.storage.sector_size());
        let start = a.start.ok_or("ERROR: patch needs start_sector")?;
        let get = |k: &str| -> Result<u64, String> {
            let v = cmd
                .get_ci(k)
                .ok_or_else(|| format!("ERROR: patch needs {k}"))?;
            expr::eval(v, &env).map_err(|e| format!("ERROR: {k} '{v}': {e}"))
        };
        let byte_offset = get("byte_offset")?;
        let size = get("size_in_bytes")?;
        if !(1..=8).contains(&size) {
            return Err(format!("ERROR: size_in_bytes {size} must be 1 to 8"));
        }
        let raw_value = cmd.get_ci("value").ok_or("ERROR: patch needs value")?;
        let value = expr::eval_patch_value(raw_value, &env)
            .map_err(|e| format!("ERROR: value '{raw_value}': {e}"))?;
        let store = self
            .storage
            .block_store(a.lun)
            .ok_or("ERROR: no such physical partition")?;
        let at = start
            .checked_mul(ss)
            .and_then(|b| b.checked_add(byte_offset))
            .filter(|b| b.checked_add(size).is_some_and(|e| e <= store.len()))
            .ok_or_else(|| {
                format!("ERROR: patch at sector {start} + {byte_offset} bytes is outside the disk")
            })?;
        let v = match value {
            PatchValue::Number(n) => n,
            PatchValue::Crc32 {
                start_sector,
                len_bytes,
            } => {
                let from = start_sector
                    .checked_mul(ss)
                    .filter(|b| b.checked_add(len_bytes).is_some_and(|e| e <= store.len()))
                    .ok_or_else(|| {
                        format!("ERROR: CRC32({start_sector},{len_bytes}) reaches outside the disk")
                    })?;
                let mut h = crc32fast::Hasher::new();
                store.for_each_piece(from, len_bytes, |p| h.update(p));
                u64::from(h.finalize())
            }
        };
        if size < 8 && v >> (8 * size) != 0 {
            return Err(format!("ERROR: value {v} does not fit in {size} bytes"));
        }
        let bytes = v.to_le_bytes();
        let store = self
            .storage
            .block_store_mut(a.lun)
            .ok_or("ERROR: no such physical partition")?;
        store.write(at, &bytes[..size as usize]);
        self.log_write(WriteKind::Patch, a.lun, at / ss, 1);
        Ok(format!(
            "INFO: Patched sector {start}, offset {byte_offset}, {size} bytes with value {v:#x}"
        ))
    }

    fn getstorageinfo(&mut self, io: &mut Io<'_>, cmd: &Element) -> Flow {
        io.log("INFO: Calling handler for getstorageinfo")?;
        let lun = cmd
            .get_ci("physical_partition_number")
            .map(|v| v.trim().parse::<u32>().unwrap_or(u32::MAX))
            .unwrap_or(0);
        match self.storage.storage_info(lun) {
            Some(j) => {
                io.log(&format!("INFO: {j}"))?;
                io.ack()
            }
            None => io.fail(&format!("ERROR: Invalid physical partition {lun}")),
        }
    }

    fn getsha256digest(&mut self, io: &mut Io<'_>, cmd: &Element) -> Flow {
        io.log("INFO: Calling handler for getsha256digest")?;
        let a = match self.addr(cmd) {
            Ok(a) => a,
            Err(m) => return io.fail(&m),
        };
        let (Some(start), Some(count)) = (a.start, a.count) else {
            return io.fail("ERROR: getsha256digest needs start_sector and num_partition_sectors");
        };
        match self.storage.sha256_of(a.lun, start, count, a.last) {
            Ok(d) => {
                let hex = hex::encode_upper(d);
                io.log(&format!("INFO: Digest {hex}"))?;
                io.respond(true, false, &[("Digest", hex)])
            }
            Err(e) => io.fail(&format!("ERROR: {e}")),
        }
    }

    fn power(&mut self, io: &mut Io<'_>, cmd: &Element) -> Flow {
        let value = cmd.get_ci("value").unwrap_or("reset").to_ascii_lowercase();
        let exit = match value.as_str() {
            "reset" => ProgrammerExit::Reset,
            "reset_to_edl" | "edl" => ProgrammerExit::ResetToEdl,
            "off" => ProgrammerExit::PowerOff,
            other => return io.fail(&format!("ERROR: Unknown power value '{other}'")),
        };
        io.log("INFO: Calling handler for power")?;
        io.log("INFO: Will issue reset/power off 100 useconds, if this hangs check if watchdog is enabled")?;
        io.ack()?;
        Err(exit)
    }
}

impl AfterUpload for Programmer {
    fn boot_storage(&self) -> Option<&Storage> {
        Some(&self.storage)
    }

    fn serve(&mut self, link: &mut dyn Transport, unit: &UnitIdentity) -> ProgrammerExit {
        self.sessions += 1;
        let mut io = Io {
            link,
            splitter: DocumentSplitter::new(MAX_DOC_BYTES),
            index: 0,
            last_response: None,
            skip_write: false,
        };
        if self.opts.welcome {
            sleep(self.opts.welcome_delay);
            for line in Self::welcome_lines(unit) {
                if io.log(&line).is_err() {
                    return ProgrammerExit::LinkLost;
                }
            }
        }
        loop {
            let doc = match io.next_document() {
                Ok(d) => d,
                Err(exit) => return exit,
            };
            if let Err(exit) = self.handle_document(&mut io, &doc) {
                return exit;
            }
        }
    }
}
