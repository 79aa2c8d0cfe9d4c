//! Taking a backup over a Firehose session, and restoring one. Engine code: no printing; progress
//! goes out as [`EngineEvent`]s in the documented order (plan → per step started / progress /
//! finished | failed → done).
//!
//! # Identity first
//!
//! [`identify`] looks at what the port says first (for [`PEEK_WAIT`]): a boot ROM greeting with
//! a Sahara HELLO is asked who it is over command mode (serial, HW ID, PK hash) and is left at a
//! fresh HELLO, so the programmer upload follows on the same link. A port that is silent or
//! talks XML (a programmer already running) is not touched: the identity is then unknown, and
//! [`take_backup`] and [`restore`] refuse, because a backup that cannot be tied to its unit
//! could be restored onto another one.
//!
//! # Backup ([`take_backup`])
//!
//! 1. The device's partition table(s) are read (`engine::partitions`), with the sector size,
//!    pages per block and size that `getstorageinfo` reports for each LUN.
//! 2. The partitions to save: the device-unique ones (`guards::classify`), or with
//!    [`BackupKind::Full`] every partition plus the sectors outside all partitions at the start
//!    of each LUN (MBR + primary GPT) and, on eMMC/UFS, at its end (the backup GPT).
//! 3. Each partition is read into the store's hidden folder (hashed while written), then
//!    **read from the device a second time** and hashed without storing. The two digests must
//!    be equal. Why a second read and not `getsha256digest`: real Quectel NAND programmers do
//!    not all implement it, and on NAND what the digest covers (raw blocks or the bad-block
//!    mapped pages a `<read>` with `last_sector` returns) is not documented; two reads through
//!    the same path catch a flaky link, a programmer that pads or a page that reads unstably,
//!    at the cost of reading the (small) device-unique partitions twice.
//! 4. The store reads every file back from disk, writes the sealed manifest and renames the
//!    folder into place ([`crate::backup::store`]): the backup exists only once all of this
//!    passed.
//!
//! # Restore ([`plan_restore`], [`restore`])
//!
//! The plan comes from the manifest alone (so it can be shown and confirmed before a device is
//! touched). Running it refuses, before anything is written, unless the connected modem is the
//! same unit ([`Identity::same_unit`]), every file still matches its sha256, and every
//! partition still lies where the backup found it (the device's table is read again). Then each
//! partition is erased (NAND) and programmed, and finally read back and compared with the
//! manifest's sha256.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backup::identity::Identity;
use crate::backup::store::{BackupKind, FileEntry, FileSpec, Store, StoredBackup};
use crate::engine::connect::{probe_programmer, PEEK_WAIT, PROBE_WAIT};
use crate::engine::events::{EngineEvent, ProgressThrottle, StepInfo, StepKind, Weights};
use crate::engine::firehose::{
    Erase, FirehoseOptions, FirehoseSession, Program, Read, StorageKind,
};
use crate::engine::guards::classify;
use crate::engine::partitions::{read_partition_table, MAX_SEARCHED_LUNS};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::protocol::partitions::Partition;
use crate::protocol::sahara::{DeviceInfo, Packet, ParseError};
use crate::transport::{Pushback, Transport, TransportError};
use crate::{Error, ErrorKind};

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

/// Look at the port and, when the boot ROM is there, read its identity over Sahara command mode.
///
/// - HELLO within [`PEEK_WAIT`]: command mode at once.
/// - Silence: a `<nop/>` probe ([`probe_programmer`]) tells a running programmer (it answers;
///   no identity) from a boot ROM whose HELLO an earlier program read (`qrescue info`, another
///   tool): the latter is asked with an unsolicited HELLO_RESP, as the upload would do.
/// - XML or anything else: no identity, nothing sent.
///
/// Returns the link with every byte not consumed pushed back (after command mode: the boot
/// ROM's fresh HELLO, so an upload follows at once) and the identity when it was read. Only a
/// lost link or missing permission is an error; a boot ROM that does not answer command mode
/// gives `None`.
pub fn identify<T: Transport>(
    transport: T,
    sahara: &SaharaConfig,
) -> crate::Result<(Pushback<T>, Option<DeviceInfo>)> {
    let mut t = Pushback::new(transport);
    let until = Instant::now() + PEEK_WAIT;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 512];
    let sahara_seen = loop {
        match Packet::parse(&buf) {
            Ok(_) => break true,
            Err(ParseError::Incomplete { .. }) => {}
            Err(_) => break false,
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        match t.read(&mut tmp, left) {
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(TransportError::Timeout { .. }) => break false,
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::DeviceLost,
                    "The modem's port failed while qrescue looked at what it says",
                    e.to_string(),
                    "Check the cable; power-cycle the modem into download mode and run again",
                ))
            }
        }
    };
    t.unread(&buf);
    let mut cfg = sahara.clone();
    if !sahara_seen {
        if !buf.is_empty() {
            tracing::info!(target: "qrescue::backup", "the port speaks no Sahara: the modem's identity is not read");
            return Ok((t, None));
        }
        if probe_programmer(&mut t, &FirehoseOptions::default(), PROBE_WAIT)? {
            tracing::info!(target: "qrescue::backup", "a programmer is running: the modem's identity is not read");
            return Ok((t, None));
        }
        // A boot ROM whose HELLO is gone: ask at once instead of waiting for one.
        cfg.hello_wait = cfg.hello_wait.min(Duration::from_millis(100));
    }
    let mut s = SaharaSession::new(t, cfg);
    let info = s.read_info();
    let (mut t, rest) = s.into_transport().into_parts();
    t.unread(&rest);
    match info {
        Ok(i) => Ok((t, Some(i))),
        Err(e) if fatal(&e) => Err(e),
        Err(e) => {
            tracing::info!(target: "qrescue::backup", "the boot ROM did not tell who it is: {}", e.what);
            Ok((t, None))
        }
    }
}

/// The error for a modem whose identity is not known.
pub fn unknown_identity(action: &str) -> Error {
    Error::failure(
        format!("qrescue will not {action} without knowing which modem this is"),
        "the modem did not tell its serial number: only the boot ROM tells it, and it did not greet (a programmer was already running, or the modem was still starting) or did not answer command mode; a backup that cannot be tied to its unit could end up on another unit and destroy that unit's calibration",
        "Power-cycle the modem into download mode (9008) so qrescue talks to its boot ROM first, and run again",
    )
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

struct Steps<'e> {
    emit: &'e mut dyn FnMut(EngineEvent),
    infos: Vec<StepInfo>,
    weights: Weights,
    started: Instant,
    bytes: u64,
    next: usize,
}

impl<'e> Steps<'e> {
    fn new(emit: &'e mut dyn FnMut(EngineEvent), infos: Vec<StepInfo>) -> Self {
        emit(EngineEvent::Plan {
            total_bytes: infos.iter().map(|s| s.bytes).sum(),
            steps: infos.clone(),
        });
        Steps {
            emit,
            weights: Weights::new(&infos),
            infos,
            started: Instant::now(),
            bytes: 0,
            next: 0,
        }
    }

    fn log(&mut self, message: String) {
        (self.emit)(EngineEvent::Log { message });
    }

    /// Run the next step of the plan.
    fn step<R>(
        &mut self,
        cancel: &AtomicBool,
        body: impl FnOnce(&mut dyn FnMut(u64)) -> crate::Result<R>,
    ) -> crate::Result<R> {
        let index = self.next;
        self.next += 1;
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Interrupted,
                format!(
                    "Stopped on request before step {} of {}",
                    index + 1,
                    self.infos.len()
                ),
                "a step that had started was finished first, never cut in half",
                "Run the command again",
            ));
        }
        let info = self.infos[index].clone();
        (self.emit)(EngineEvent::StepStarted {
            index,
            kind: info.kind,
            name: info.name.clone(),
            bytes: info.bytes,
        });
        let total = info.bytes;
        let mut throttle = ProgressThrottle::new(total);
        let weights = self.weights.clone();
        let emit = &mut *self.emit;
        let mut last = 0u64;
        let result = body(&mut |done: u64| {
            last = done;
            if let Some((rate, eta)) = throttle.update(done) {
                emit(EngineEvent::Progress {
                    index,
                    done,
                    total,
                    bytes_per_s: rate,
                    eta_s: eta,
                    overall: weights.overall(index, done, total),
                });
            }
        });
        let elapsed = throttle.elapsed();
        match &result {
            Ok(_) => {
                self.bytes += last;
                (self.emit)(EngineEvent::StepFinished {
                    index,
                    bytes: last,
                    elapsed_ms: elapsed.as_millis() as u64,
                    bytes_per_s: last as f64 / elapsed.as_secs_f64().max(1e-6),
                });
            }
            Err(e) => (self.emit)(EngineEvent::StepFailed {
                index,
                what: e.what.clone(),
                why: e.why.clone(),
                next: e.next.clone(),
            }),
        }
        result
    }

    fn done<R>(self, result: crate::Result<R>) -> crate::Result<R> {
        (self.emit)(EngineEvent::Done {
            ok: result.is_ok(),
            bytes: self.bytes,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        });
        result
    }
}

fn info(
    index: usize,
    kind: StepKind,
    name: String,
    bytes: u64,
    at: Option<&FileEntry>,
) -> StepInfo {
    StepInfo {
        index,
        kind,
        name,
        bytes,
        lun: at.map(|f| f.lun),
        start_sector: at.map(|f| f.start_sector.to_string()),
        sectors: at.map(|f| f.sectors),
    }
}

// ---------------------------------------------------------------------------------------------
// The device's layout
// ---------------------------------------------------------------------------------------------

/// One LUN as the device describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LunLayout {
    pub lun: u32,
    /// Bytes per sector (NAND: the page).
    pub sector_size: u32,
    /// NAND: pages per block.
    pub pages_per_block: Option<u32>,
    /// Sectors of the LUN, when the programmer says.
    pub total_sectors: Option<u64>,
    pub table: Vec<Partition>,
}

fn fatal(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::DeviceLost | ErrorKind::Permission | ErrorKind::Interrupted
    )
}

fn plausible(v: Option<u64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| v.is_power_of_two() && (512..=65536).contains(v))
}

/// Geometry and partition table of `lun`.
pub fn read_layout<T: Transport>(
    fh: &mut FirehoseSession<T>,
    storage: StorageKind,
    lun: u32,
) -> crate::Result<LunLayout> {
    let info = match fh.storage_info(lun) {
        Ok(i) => Some(i),
        Err(e) if fatal(&e) => return Err(e),
        Err(_) => None,
    };
    let fallback = storage.default_sector_size();
    let (sector_size, pages_per_block, total_sectors) = match &info {
        Some(i) if storage == StorageKind::Nand => {
            let ppb = i
                .pages_per_block()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=4096).contains(n));
            let total = match (i.total_blocks, ppb) {
                (Some(b), Some(p)) => b.checked_mul(u64::from(p)),
                _ => None,
            };
            (plausible(i.page_size).unwrap_or(fallback), ppb, total)
        }
        Some(i) => match plausible(i.block_size) {
            Some(ss) => (ss, None, i.total_blocks),
            None => match plausible(i.sector_size) {
                Some(ss) => (ss, None, i.num_partition_sectors),
                None => (fallback, None, None),
            },
        },
        None => (fallback, None, None),
    };
    let table = read_partition_table(fh, storage, lun)?;
    Ok(LunLayout {
        lun,
        sector_size,
        pages_per_block,
        total_sectors: total_sectors.filter(|n| *n > 0),
        table,
    })
}

/// The layouts of every LUN with a table: LUN 0 on NAND and eMMC; on UFS every LUN the
/// programmer reports (LUNs without a readable table are skipped, with a note).
pub fn read_layouts<T: Transport>(
    fh: &mut FirehoseSession<T>,
    storage: StorageKind,
    notes: &mut Vec<String>,
) -> crate::Result<Vec<LunLayout>> {
    if storage != StorageKind::Ufs {
        return Ok(vec![read_layout(fh, storage, 0)?]);
    }
    let luns = match fh.storage_info(0) {
        Ok(i) => i
            .num_physical
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1)
            .clamp(1, MAX_SEARCHED_LUNS),
        Err(e) if fatal(&e) => return Err(e),
        Err(_) => 1,
    };
    let mut out = Vec::new();
    let mut first_err = None;
    for lun in 0..luns {
        match read_layout(fh, storage, lun) {
            Ok(l) => out.push(l),
            Err(e) if fatal(&e) => return Err(e),
            Err(e) => {
                notes.push(format!(
                    "LUN {lun} has no readable partition table ({})",
                    e.what
                ));
                first_err.get_or_insert(e);
            }
        }
    }
    match (out.is_empty(), first_err) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

/// What to read for a backup of `kind` from `layouts`.
pub fn choose(layouts: &[LunLayout], storage: StorageKind, kind: BackupKind) -> Vec<FileSpec> {
    let mut out = Vec::new();
    for l in layouts {
        let nand = storage == StorageKind::Nand;
        let spec = |p: &Partition| FileSpec {
            partition: Some(p.name.clone()),
            lun: l.lun,
            start_sector: p.start_sector,
            sectors: p.num_sectors,
            sector_size: l.sector_size,
            // The partition's last page bounds the programmer's bad-block mapping, as in the
            // package XML: the read returns what a program of this partition wrote.
            last_sector: nand.then(|| p.end_sector().saturating_sub(1)),
            device_unique: classify(&p.name, storage).is_some(),
        };
        let sized = l.table.iter().filter(|p| p.num_sectors > 0);
        match kind {
            BackupKind::DeviceUnique => out.extend(
                sized
                    .filter(|p| classify(&p.name, storage).is_some())
                    .map(spec),
            ),
            // Partitions are never part of an NV/EFS backup (taken over DIAG, not here).
            BackupKind::NvEfs => {}
            BackupKind::Full => {
                let first = l
                    .table
                    .iter()
                    .filter(|p| p.num_sectors > 0)
                    .map(|p| p.start_sector)
                    .min();
                let last = l.table.iter().map(Partition::end_sector).max();
                if let Some(first) = first.filter(|f| *f > 0) {
                    out.push(FileSpec {
                        partition: None,
                        lun: l.lun,
                        start_sector: 0,
                        sectors: first,
                        sector_size: l.sector_size,
                        last_sector: None,
                        device_unique: false,
                    });
                }
                out.extend(sized.map(spec));
                if let (false, Some(total), Some(last)) = (nand, l.total_sectors, last) {
                    if total > last {
                        out.push(FileSpec {
                            partition: None,
                            lun: l.lun,
                            start_sector: last,
                            sectors: total - last,
                            sector_size: l.sector_size,
                            last_sector: None,
                            device_unique: false,
                        });
                    }
                }
            }
        }
    }
    out
}

fn read_cmd(f: &FileSpec) -> Read {
    let mut cmd = Read::new(f.sector_size, f.sectors, f.lun, f.start_sector.to_string());
    cmd.label = f.partition.clone();
    cmd.last_sector = f.last_sector;
    cmd
}

fn spec_of(f: &FileEntry) -> FileSpec {
    FileSpec {
        partition: f.partition.clone(),
        lun: f.lun,
        start_sector: f.start_sector,
        sectors: f.sectors,
        sector_size: f.sector_size,
        last_sector: f.last_sector,
        device_unique: f.device_unique,
    }
}

fn display_name(f: &FileSpec) -> String {
    match &f.partition {
        Some(p) => p.clone(),
        None => format!(
            "LUN {} sectors {}..{}",
            f.lun,
            f.start_sector,
            f.start_sector.saturating_add(f.sectors)
        ),
    }
}

/// A writer that only hashes.
struct HashSink {
    h: Sha256,
    n: u64,
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.h.update(buf);
        self.n += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Read `spec`'s sectors from the device again and return their sha256.
fn device_sha256<T: Transport>(
    fh: &mut FirehoseSession<T>,
    spec: &FileSpec,
    progress: &mut dyn FnMut(u64),
) -> crate::Result<String> {
    let mut sink = HashSink {
        h: Sha256::new(),
        n: 0,
    };
    fh.read(&read_cmd(spec), &mut sink, progress)?;
    Ok(hex::encode(sink.h.finalize()))
}

// ---------------------------------------------------------------------------------------------
// Backup
// ---------------------------------------------------------------------------------------------

/// How to take a backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub kind: BackupKind,
    pub storage: StorageKind,
}

/// How the data of a backup was checked (recorded in its manifest).
pub const VERIFICATION: &str = "each region was read from the modem twice and both reads had the same sha256; every file was read back from disk and matched before the backup was recorded";

/// Back up the unit `identity` over `fh` (a ready session; configured here if it is not yet)
/// into `store`. See the module notes for the steps. Emits the plan once the partition table
/// is known: one read and one verify step per partition, then the step that reads the files
/// back and records the backup.
pub fn take_backup<T: Transport>(
    fh: &mut FirehoseSession<T>,
    identity: &Identity,
    store: &Store,
    opts: &BackupOptions,
    emit: &mut dyn FnMut(EngineEvent),
    cancel: &AtomicBool,
) -> crate::Result<StoredBackup> {
    if identity.unit_key().is_none() {
        return Err(unknown_identity("make a backup"));
    }
    if fh.negotiated().is_none() {
        fh.configure(opts.storage)?;
    }
    let mut notes = Vec::new();
    let layouts = read_layouts(fh, opts.storage, &mut notes)?;
    let specs = choose(&layouts, opts.storage, opts.kind);
    if specs.is_empty() {
        let names: Vec<String> = layouts
            .iter()
            .flat_map(|l| l.table.iter().map(|p| p.name.clone()))
            .collect();
        return Err(Error::failure(
            "the modem's partition table names no partition that holds its own data",
            format!(
                "qrescue backs up the device-unique partitions it knows (efs2, modemst1/2, fsg, fsc, sys_rev, rawdata, cust_info, persist, …); the table lists: {}",
                if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
            ),
            "Make a full backup of every partition with --full",
        ));
    }
    let mut pending = store.begin(identity, opts.kind, opts.storage)?;
    pending.set_table(layouts.iter().flat_map(|l| l.table.clone()).collect());
    for n in &notes {
        pending.note(n.clone());
    }
    let mut infos = Vec::new();
    for s in &specs {
        let bytes = s.sectors.saturating_mul(u64::from(s.sector_size));
        let at = FileEntry {
            name: String::new(),
            partition: s.partition.clone(),
            lun: s.lun,
            start_sector: s.start_sector,
            sectors: s.sectors,
            sector_size: s.sector_size,
            last_sector: s.last_sector,
            bytes,
            sha256: String::new(),
            device_unique: s.device_unique,
        };
        let n = infos.len();
        infos.push(info(n, StepKind::Read, display_name(s), bytes, Some(&at)));
        infos.push(info(
            n + 1,
            StepKind::Verify,
            format!("{} (second read)", display_name(s)),
            bytes,
            Some(&at),
        ));
    }
    let total: u64 = specs
        .iter()
        .map(|s| s.sectors.saturating_mul(u64::from(s.sector_size)))
        .sum();
    infos.push(info(
        infos.len(),
        StepKind::Verify,
        "backup folder (read back, recorded)".into(),
        total,
        None,
    ));
    let mut steps = Steps::new(emit, infos);
    for n in &notes {
        steps.log(n.clone());
    }
    let result = (|| {
        for s in &specs {
            let entry = steps.step(cancel, |progress| {
                let mut w = pending.create_file(s.clone())?;
                fh.read(&read_cmd(s), &mut w, progress)?;
                w.finish()
            })?;
            steps.step(cancel, |progress| {
                let again = device_sha256(fh, s, progress)?;
                if again != entry.sha256 {
                    return Err(Error::new(
                        ErrorKind::VerifyMismatch,
                        format!("Two reads of {} from the modem differ", display_name(s)),
                        format!(
                            "first read sha256 {}, second {again}: the link or the flash does not return the same data twice, so neither copy can be trusted",
                            entry.sha256
                        ),
                        "Check the cable and USB port (avoid hubs), then run the backup again; nothing was recorded",
                    ));
                }
                Ok(())
            })?;
        }
        steps.step(cancel, |progress| {
            let b = pending.commit(VERIFICATION)?;
            progress(total);
            Ok(b)
        })
    })();
    steps.done(result)
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// The refusal to restore an NV/EFS backup: qrescue does not write NV items or EFS files.
pub fn nv_efs_not_restorable(backup: &StoredBackup) -> Error {
    Error::failure(
        format!("Backup {} cannot be restored by qrescue; nothing was written", backup.name),
        "it is an NV/EFS backup taken over DIAG in normal mode: it keeps each NV item and EFS2 file as the modem gave it (sha256-checked), for reference and manual recovery; qrescue does not write NV items or EFS files back",
        format!(
            "Keep it safe and check it with `qrescue backup verify {}`; to restore calibration or the IMEI, use a download-mode backup of the EFS partitions (qrescue backup --port …, then qrescue restore) or give these files to whoever restores them by hand (QPST/QXDM, Quectel support)",
            backup.name
        ),
    )
}

/// One region to write back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreStep {
    pub file: FileEntry,
    /// NAND: erase the region first.
    pub erase: bool,
}

/// What a restore would write, from the manifest alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    pub backup: String,
    pub unit: String,
    pub storage: StorageKind,
    pub steps: Vec<RestoreStep>,
    pub bytes: u64,
}

/// Plan the restore of `backup`: every file, or only the partitions named in `only`
/// (case-insensitive).
pub fn plan_restore(backup: &StoredBackup, only: &[String]) -> crate::Result<RestorePlan> {
    let m = &backup.manifest;
    let storage = match (m.kind, m.storage) {
        (BackupKind::NvEfs, _) | (_, None) => return Err(nv_efs_not_restorable(backup)),
        (_, Some(s)) => s,
    };
    let chosen: Vec<&FileEntry> = if only.is_empty() {
        m.files.iter().collect()
    } else {
        let mut v = Vec::new();
        for name in only {
            let hit = m.files.iter().find(|f| {
                f.partition
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(name.trim()))
            });
            match hit {
                Some(f) if !v.contains(&f) => v.push(f),
                Some(_) => {}
                None => {
                    return Err(Error::usage(
                        format!("Backup {} holds no partition named {name}", backup.name),
                        format!(
                            "It holds: {}",
                            m.files
                                .iter()
                                .filter_map(|f| f.partition.as_deref())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            }
        }
        v
    };
    let steps: Vec<RestoreStep> = chosen
        .into_iter()
        .map(|f| RestoreStep {
            file: f.clone(),
            erase: storage == StorageKind::Nand,
        })
        .collect();
    Ok(RestorePlan {
        backup: backup.name.clone(),
        unit: m.unit(),
        storage,
        bytes: steps.iter().map(|s| s.file.bytes).sum(),
        steps,
    })
}

/// What a finished restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub regions: usize,
    pub bytes: u64,
    pub elapsed_ms: u64,
}

fn refuse(what: String, why: String) -> Error {
    Error::failure(
        what,
        why,
        "Nothing was written. Restore a backup of this very modem (see `qrescue backup list`), or make a new backup",
    )
}

/// Check that every region of `plan` still lies where the backup found it, against the
/// device's current tables. A LUN whose table cannot be read is accepted only when the plan
/// writes that LUN's table area itself (a full backup); otherwise it is refused.
fn check_layout(
    plan: &RestorePlan,
    layouts: &[(u32, Option<LunLayout>)],
    logs: &mut Vec<String>,
) -> crate::Result<()> {
    for s in &plan.steps {
        let f = &s.file;
        let layout = layouts
            .iter()
            .find(|(l, _)| *l == f.lun)
            .and_then(|(_, l)| l.as_ref());
        let Some(layout) = layout else {
            let rewrites_table = plan.steps.iter().any(|o| {
                o.file.lun == f.lun && o.file.partition.is_none() && o.file.start_sector == 0
            });
            if !rewrites_table {
                return Err(refuse(
                    format!(
                        "qrescue cannot read the modem's partition table on LUN {}",
                        f.lun
                    ),
                    format!(
                        "so it cannot check that {} still lies where the backup found it",
                        f.name
                    ),
                ));
            }
            logs.push(format!("LUN {}: the modem's partition table could not be read; the backup's own table is written back", f.lun));
            continue;
        };
        if layout.sector_size != f.sector_size {
            return Err(refuse(
                format!(
                    "LUN {} has {}-byte sectors now, the backup has {}",
                    f.lun, layout.sector_size, f.sector_size
                ),
                "the storage is not the one the backup was taken from".into(),
            ));
        }
        match &f.partition {
            Some(label) => {
                let now = layout
                    .table
                    .iter()
                    .find(|p| p.name.eq_ignore_ascii_case(label));
                match now {
                    Some(p) if p.start_sector == f.start_sector && p.num_sectors == f.sectors => {}
                    Some(p) => {
                        return Err(refuse(
                            format!("{label} has moved since the backup"),
                            format!(
                                "the backup holds sectors {}..{} of LUN {}, the modem's table now puts {label} at {}..{}; writing the backup there would overwrite other data",
                                f.start_sector, f.start_sector + f.sectors, f.lun, p.start_sector, p.end_sector()
                            ),
                        ))
                    }
                    None => {
                        return Err(refuse(
                            format!("The modem's partition table has no {label} any more"),
                            format!("the backup holds it at sectors {}..{} of LUN {}", f.start_sector, f.start_sector + f.sectors, f.lun),
                        ))
                    }
                }
            }
            None => {
                let end = f.start_sector + f.sectors;
                if let Some(p) = layout.table.iter().find(|p| {
                    p.num_sectors > 0 && p.start_sector < end && p.end_sector() > f.start_sector
                }) {
                    return Err(refuse(
                        format!(
                            "Sectors {}..{end} of LUN {} now overlap the partition {}",
                            f.start_sector, f.lun, p.name
                        ),
                        "the partition table changed since the backup".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Write `plan` (from `backup`) back to the modem on `fh`, whose identity is `device`. Refuses
/// before writing anything unless the unit matches, the files are intact and the layout is
/// unchanged; then erases (NAND) and programs every region and reads each back. The plan
/// event lists: per region [erase,] program; then one verify per region.
pub fn restore<T: Transport>(
    fh: &mut FirehoseSession<T>,
    backup: &StoredBackup,
    plan: &RestorePlan,
    device: &Identity,
    emit: &mut dyn FnMut(EngineEvent),
    cancel: &AtomicBool,
) -> crate::Result<RestoreReport> {
    let started = Instant::now();
    if device.unit_key().is_none() {
        return Err(unknown_identity("restore a backup"));
    }
    if let Err(why) = backup.manifest.identity.same_unit(device) {
        return Err(refuse(
            format!("Backup {} is not from this modem", backup.name),
            format!("{why}; calibration and IMEI belong to one unit, and another unit's data would leave this one without signal"),
        ));
    }
    if backup.name != plan.backup {
        return Err(Error::usage(
            "the restore plan was made for another backup",
            "Plan the restore of this backup again",
        ));
    }
    for s in &plan.steps {
        backup.verify_file(&s.file)?;
    }
    if fh.negotiated().is_none() {
        fh.configure(plan.storage)?;
    }
    let mut luns: Vec<u32> = plan.steps.iter().map(|s| s.file.lun).collect();
    luns.sort_unstable();
    luns.dedup();
    let mut layouts = Vec::new();
    let mut ppb = std::collections::BTreeMap::new();
    for lun in luns {
        match read_layout(fh, plan.storage, lun) {
            Ok(l) => {
                ppb.insert(lun, l.pages_per_block);
                layouts.push((lun, Some(l)));
            }
            Err(e) if fatal(&e) => return Err(e),
            Err(_) => layouts.push((lun, None)),
        }
    }
    let mut logs = Vec::new();
    check_layout(plan, &layouts, &mut logs)?;

    let mut infos = Vec::new();
    for s in &plan.steps {
        let name = display_name(&spec_of(&s.file));
        if s.erase {
            infos.push(info(
                infos.len(),
                StepKind::Erase,
                name.clone(),
                0,
                Some(&s.file),
            ));
        }
        infos.push(info(
            infos.len(),
            StepKind::Program,
            name,
            s.file.bytes,
            Some(&s.file),
        ));
    }
    for s in &plan.steps {
        let name = format!("{} (read back)", display_name(&spec_of(&s.file)));
        infos.push(info(
            infos.len(),
            StepKind::Verify,
            name,
            s.file.bytes,
            Some(&s.file),
        ));
    }
    let mut steps = Steps::new(emit, infos);
    for l in logs {
        steps.log(l);
    }
    let result = (|| {
        for s in &plan.steps {
            let f = &s.file;
            let pages = ppb.get(&f.lun).copied().flatten();
            if s.erase {
                steps.step(cancel, |_| {
                    let mut cmd =
                        Erase::new(f.sector_size, f.sectors, f.lun, f.start_sector.to_string());
                    cmd.label = f.partition.clone();
                    cmd.last_sector = f.last_sector;
                    cmd.pages_per_block = pages;
                    fh.erase(&cmd)
                })?;
            }
            steps.step(cancel, |progress| {
                let mut cmd =
                    Program::new(f.sector_size, f.sectors, f.lun, f.start_sector.to_string());
                cmd.label = f.partition.clone();
                cmd.filename = Some(f.name.clone());
                cmd.last_sector = f.last_sector;
                if plan.storage == StorageKind::Nand {
                    cmd.pages_per_block = pages;
                }
                let path = backup.file_path(f);
                let mut file = std::fs::File::open(&path).map_err(|e| {
                    Error::failure(
                        format!("Cannot open {}", path.display()),
                        "it was checked a moment ago",
                        "Run the restore again",
                    )
                    .with_source(e)
                })?;
                fh.program(&cmd, &mut file, f.bytes, progress)
            })?;
        }
        for s in &plan.steps {
            let f = &s.file;
            steps.step(cancel, |progress| {
                let got = device_sha256(fh, &spec_of(f), progress)?;
                if got != f.sha256 {
                    return Err(Error::new(
                        ErrorKind::VerifyMismatch,
                        format!("{} reads back differently from the backup", f.name),
                        format!("backup sha256 {}, the modem now returns {got}", f.sha256),
                        "Run the restore again; if it repeats, the flash may be worn at this place — keep the backup safe",
                    ));
                }
                Ok(())
            })?;
        }
        Ok(RestoreReport {
            backup: backup.name.clone(),
            regions: plan.steps.len(),
            bytes: plan.bytes,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    })();
    steps.done(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::store::FileEntry;

    fn part(name: &str, start: u64, n: u64) -> Partition {
        Partition {
            lun: 0,
            name: name.into(),
            start_sector: start,
            num_sectors: n,
        }
    }

    fn layout(table: Vec<Partition>, ss: u32, total: Option<u64>) -> LunLayout {
        LunLayout {
            lun: 0,
            sector_size: ss,
            pages_per_block: (ss == 4096).then_some(64),
            total_sectors: total,
            table,
        }
    }

    #[test]
    fn device_unique_and_full_choices() {
        let nand = layout(
            vec![
                part("SBL", 0, 640),
                part("MIBIB", 640, 640),
                part("EFS2", 1280, 5632),
                part("sec", 6912, 64),
                part("modem", 6976, 1000),
                part("empty", 7976, 0),
            ],
            4096,
            Some(131_072),
        );
        let u = choose(
            std::slice::from_ref(&nand),
            StorageKind::Nand,
            BackupKind::DeviceUnique,
        );
        let names: Vec<_> = u.iter().map(|s| s.partition.as_deref().unwrap()).collect();
        assert_eq!(names, ["EFS2", "sec"]);
        assert_eq!(u[0].last_sector, Some(6911));
        assert!(u.iter().all(|s| s.device_unique && s.sector_size == 4096));
        // On eMMC `sec` is the package's sec.dat, not unit data.
        let emmc = layout(
            vec![
                part("modem", 34, 100),
                part("modemst1", 134, 16),
                part("sec", 150, 2),
                part("fsg", 152, 16),
            ],
            512,
            Some(1000),
        );
        let u = choose(
            std::slice::from_ref(&emmc),
            StorageKind::Emmc,
            BackupKind::DeviceUnique,
        );
        let names: Vec<_> = u.iter().map(|s| s.partition.as_deref().unwrap()).collect();
        assert_eq!(names, ["modemst1", "fsg"]);
        assert!(u.iter().all(|s| s.last_sector.is_none()));

        // Full: every sized partition; on eMMC also the table areas before and after.
        let f = choose(&[emmc], StorageKind::Emmc, BackupKind::Full);
        assert_eq!(f.len(), 6);
        assert_eq!(
            (f[0].partition.clone(), f[0].start_sector, f[0].sectors),
            (None, 0, 34)
        );
        assert_eq!(
            (f[5].partition.clone(), f[5].start_sector, f[5].sectors),
            (None, 168, 832)
        );
        let f = choose(&[nand], StorageKind::Nand, BackupKind::Full);
        assert_eq!(
            f.len(),
            5,
            "no empty partition, no table areas outside partitions on NAND"
        );
        assert!(f.iter().all(|s| s.partition.is_some()));
    }

    fn entry(name: Option<&str>, start: u64, n: u64) -> RestoreStep {
        RestoreStep {
            file: FileEntry {
                name: "000_lun0_x.bin".into(),
                partition: name.map(str::to_string),
                lun: 0,
                start_sector: start,
                sectors: n,
                sector_size: 512,
                last_sector: None,
                bytes: n * 512,
                sha256: "0".repeat(64),
                device_unique: true,
            },
            erase: false,
        }
    }

    fn plan(steps: Vec<RestoreStep>) -> RestorePlan {
        RestorePlan {
            backup: "b".into(),
            unit: "0x00000001".into(),
            storage: StorageKind::Emmc,
            bytes: 0,
            steps,
        }
    }

    #[test]
    fn restore_checks_the_layout_before_writing() {
        let now = |t| vec![(0u32, Some(layout(t, 512, Some(1000))))];
        let table = vec![part("modemst1", 134, 16), part("fsg", 152, 16)];
        let mut logs = Vec::new();
        let ok = plan(vec![entry(Some("MODEMST1"), 134, 16)]);
        assert!(check_layout(&ok, &now(table.clone()), &mut logs).is_ok());
        // Moved, resized, gone.
        for t in [
            vec![part("modemst1", 200, 16)],
            vec![part("modemst1", 134, 8)],
            vec![part("fsg", 152, 16)],
        ] {
            let e = check_layout(&ok, &now(t), &mut logs).unwrap_err();
            assert!(e.next.starts_with("Nothing was written"), "{e}");
        }
        // Other sector size.
        let e = check_layout(
            &ok,
            &[(0, Some(layout(table.clone(), 4096, None)))],
            &mut logs,
        )
        .unwrap_err();
        assert!(e.what.contains("4096-byte sectors"), "{e}");
        // A table area must not overlap a partition now.
        let area = plan(vec![entry(None, 0, 140)]);
        assert!(check_layout(&area, &now(table.clone()), &mut logs).is_err());
        let area = plan(vec![entry(None, 0, 34)]);
        assert!(check_layout(&area, &now(table), &mut logs).is_ok());
        // No readable table: only a plan that writes the table area back may go on.
        let unreadable = vec![(0u32, None)];
        assert!(check_layout(&ok, &unreadable, &mut logs).is_err());
        let full = plan(vec![entry(None, 0, 34), entry(Some("modemst1"), 134, 16)]);
        assert!(check_layout(&full, &unreadable, &mut logs).is_ok());
        assert!(logs.iter().any(|l| l.contains("could not be read")));
    }
}
