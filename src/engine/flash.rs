//! The first flash engine: a validated list of steps (erase / program / patch) built from a
//! rawprogram + patch XML pair, run over any [`Transport`]: Sahara upload of the programmer (unless
//! one is already running: [`attach_or_upload`] decides), Firehose configure, every step, then a
//! reset. Emits [`EngineEvent`]s in the documented order and never renders anything.
//!
//! Nothing is sent to the device until the whole plan validated: every file exists, sits inside
//! the package folder, and fits its partition entry.

use std::fs::File;
use std::io::{BufReader, Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::engine::connect::{attach_or_upload, Attach};
use crate::engine::events::{EngineEvent, ProgressThrottle, StepInfo, StepKind, Weights};
use crate::engine::firehose::{
    Erase, FirehoseOptions, Patch, PowerMode, Program, StorageInfo, StorageKind,
};
use crate::engine::sahara::SaharaConfig;
use crate::package::rawprogram::{
    parse_patch, parse_rawprogram, EraseEntry, PackagePath, PatchEntry, ProgramEntry, RawEntry,
};
use crate::transport::Transport;
use crate::{Error, ErrorKind};

/// Where a program step's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSource {
    pub path: PathBuf,
    /// Byte offset into the file (file_sector_offset × sector size).
    pub offset: u64,
    /// Bytes taken from the file; the rest of the partition entry is zero-padded.
    pub len: u64,
}

/// One step of a flash plan.
#[derive(Debug, Clone, PartialEq)]
pub enum FlashStep {
    Erase {
        name: String,
        cmd: Erase,
    },
    Program {
        name: String,
        cmd: Program,
        source: ImageSource,
    },
    Patch {
        name: String,
        cmd: Patch,
    },
    SetBootable {
        drive: u32,
    },
}

impl FlashStep {
    pub fn name(&self) -> String {
        match self {
            FlashStep::Erase { name, .. }
            | FlashStep::Program { name, .. }
            | FlashStep::Patch { name, .. } => name.clone(),
            FlashStep::SetBootable { drive } => format!("bootable drive {drive}"),
        }
    }

    pub fn kind(&self) -> StepKind {
        match self {
            FlashStep::Erase { .. } => StepKind::Erase,
            FlashStep::Program { .. } => StepKind::Program,
            FlashStep::Patch { .. } => StepKind::Patch,
            FlashStep::SetBootable { .. } => StepKind::SetBootable,
        }
    }

    /// Bytes moved over the link (the whole partition entry for a program: padding included).
    pub fn bytes(&self) -> u64 {
        match self {
            FlashStep::Program { cmd, .. } => cmd.byte_len().unwrap_or(0),
            _ => 0,
        }
    }

    fn info(&self, index: usize) -> StepInfo {
        let (lun, start, sectors) = match self {
            FlashStep::Erase { cmd, .. } => (
                Some(cmd.physical_partition),
                cmd.start_sector.clone(),
                cmd.num_sectors,
            ),
            FlashStep::Program { cmd, .. } => (
                Some(cmd.physical_partition),
                Some(cmd.start_sector.clone()),
                Some(cmd.num_sectors),
            ),
            FlashStep::Patch { cmd, .. } => (
                Some(cmd.physical_partition),
                Some(cmd.start_sector.clone()),
                None,
            ),
            FlashStep::SetBootable { .. } => (None, None, None),
        };
        StepInfo {
            index,
            kind: self.kind(),
            name: self.name(),
            bytes: self.bytes(),
            lun,
            start_sector: start,
            sectors,
        }
    }
}

/// A validated flash plan.
#[derive(Debug, Clone, PartialEq)]
pub struct FlashPlan {
    pub storage: StorageKind,
    pub steps: Vec<FlashStep>,
    /// Program entries without a file (partitions the package leaves alone), for the summary.
    pub skipped: Vec<String>,
    /// The folder files were resolved against and confined to.
    pub root: PathBuf,
}

fn plan_error(what: impl Into<String>, next: impl Into<String>) -> Error {
    Error::failure(
        what,
        "qrescue validates the whole plan before sending anything, and this entry cannot be flashed safely",
        next,
    )
}

/// The folder files may come from: the XML's folder's parent when the XML sits in a `firehose`
/// folder (Quectel layout: `update/firehose/x.xml` names `..\img` = `update/img`), otherwise the
/// XML's own folder.
fn package_root(xml: &Path) -> PathBuf {
    let dir = xml
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let is_firehose = dir
        .file_name()
        .map(|n| n.eq_ignore_ascii_case("firehose"))
        .unwrap_or(false);
    if is_firehose {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Resolve `path` (relative to `base`) and make sure the real file (symlinks followed) lies
/// inside `root`.
fn resolve(base: &Path, root: &Path, path: &PackagePath, entry: &str) -> crate::Result<PathBuf> {
    let candidate = base.join(path.to_path_buf());
    let real = candidate.canonicalize().map_err(|e| {
        plan_error(
            format!(
                "{entry} names the file {}, which is not in the package ({})",
                path.as_str(),
                candidate.display()
            ),
            "Use the complete firmware package (check that it was fully extracted), or remove the entry",
        )
        .with_source(e)
    })?;
    let real_root = root.canonicalize().map_err(|e| {
        plan_error(
            format!("the package folder {} cannot be read", root.display()),
            "Check the path and its permissions",
        )
        .with_source(e)
    })?;
    if !real.starts_with(&real_root) {
        return Err(plan_error(
            format!(
                "{entry} names {}, which resolves to {} outside the package folder {}",
                path.as_str(),
                real.display(),
                real_root.display()
            ),
            "Refusing: a package may only use its own files. Check where this package came from",
        ));
    }
    if !real.is_file() {
        return Err(plan_error(
            format!(
                "{entry} names {}, which is not a regular file",
                path.as_str()
            ),
            "Use the complete firmware package",
        ));
    }
    Ok(real)
}

/// Guess the storage kind from the entries: NAND attributes, else the sector size.
pub fn storage_from_entries(entries: &[RawEntry]) -> StorageKind {
    let nand = entries.iter().any(|e| match e {
        RawEntry::Program(p) => p.is_nand(),
        RawEntry::Erase(er) => er.is_nand(),
        _ => false,
    });
    if nand {
        return StorageKind::Nand;
    }
    let sector = entries.iter().find_map(|e| match e {
        RawEntry::Program(p) => Some(p.sector_size),
        RawEntry::Erase(er) => er.sector_size,
        _ => None,
    });
    match sector {
        Some(4096) => StorageKind::Ufs,
        _ => StorageKind::Emmc,
    }
}

fn program_step(p: &ProgramEntry, base: &Path, root: &Path) -> crate::Result<Option<FlashStep>> {
    let entry = format!("program entry {} ({})", p.index + 1, p.display_name);
    let Some(path) = &p.path else {
        return Ok(None);
    };
    if p.sector_size == 0 {
        return Err(plan_error(
            format!("{entry} has SECTOR_SIZE_IN_BYTES=0"),
            "Fix the package XML",
        ));
    }
    let file = resolve(base, root, path, &entry)?;
    let file_len = std::fs::metadata(&file)
        .map_err(|e| {
            plan_error(
                format!("cannot read {}", file.display()),
                "Check permissions",
            )
            .with_source(e)
        })?
        .len();
    let ss = u64::from(p.sector_size);
    let offset = p.file_sector_offset.checked_mul(ss).ok_or_else(|| {
        plan_error(
            format!("{entry} has an impossible file_sector_offset"),
            "Fix the package XML",
        )
    })?;
    let available = file_len.saturating_sub(offset);
    if p.sparse && is_sparse_file(&file) {
        return Err(Error::failure(
            format!("{entry} is an Android sparse image ({})", path.as_str()),
            "sparse images are expanded into one program step per chunk by the package planner, which this command does not use yet",
            "Flash this package with a command that plans sparse images, or convert the image with simg2img first",
        ));
    }
    // Like qdl and QFirehose, program only the image's sectors (rounded up, the last one
    // zero-padded), not the whole partition: the partition entry bounds the image.
    let sectors = available.div_ceil(ss);
    if p.num_partition_sectors > 0 && sectors > p.num_partition_sectors {
        return Err(plan_error(
            format!(
                "{entry}: the image {} has {available} bytes but the partition entry holds only {} bytes",
                path.as_str(),
                p.num_partition_sectors.saturating_mul(ss)
            ),
            "The image does not belong to this layout; use the matching package",
        ));
    }
    if sectors == 0 {
        return Ok(None);
    }
    let mut cmd = Program::new(
        p.sector_size,
        sectors,
        p.physical_partition_number,
        p.start_sector.to_string(),
    )
    .filename(p.filename.clone());
    cmd.label = p.label.clone();
    cmd.pages_per_block = p.pages_per_block;
    cmd.last_sector = p.last_sector;
    cmd.extra = p.extra.clone();
    Ok(Some(FlashStep::Program {
        name: p.display_name.clone(),
        cmd,
        source: ImageSource {
            path: file,
            offset,
            len: available,
        },
    }))
}

fn is_sparse_file(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| u32::from_le_bytes(magic) == 0xED26_FF3A)
        .unwrap_or(false)
}

fn erase_step(e: &EraseEntry) -> crate::Result<FlashStep> {
    let entry = format!("erase entry {} ({})", e.index + 1, e.display_name);
    let Some(ss) = e.sector_size else {
        return Err(plan_error(
            format!("{entry} has no SECTOR_SIZE_IN_BYTES: it would erase the whole storage"),
            "qrescue never erases a whole storage device from a package; remove the entry",
        ));
    };
    let lun = e.physical_partition_number.unwrap_or(0);
    let mut cmd = match (e.num_partition_sectors, &e.start_sector) {
        (Some(n), Some(s)) => Erase::new(ss, n, lun, s.to_string()),
        _ => {
            return Err(plan_error(
                format!("{entry} has no start_sector/num_partition_sectors: it would erase the whole physical partition {lun}"),
                "qrescue does not erase whole partitions from a package; remove the entry",
            ))
        }
    };
    cmd.label = e.label.clone();
    cmd.pages_per_block = e.pages_per_block;
    cmd.last_sector = e.last_sector;
    cmd.extra = e.extra.clone();
    Ok(FlashStep::Erase {
        name: e.display_name.clone(),
        cmd,
    })
}

fn patch_step(p: &PatchEntry) -> FlashStep {
    let mut cmd = Patch::disk(
        p.sector_size,
        p.physical_partition_number,
        p.start_sector.to_string(),
        p.byte_offset,
        p.size_in_bytes,
        p.value.clone(),
    );
    cmd.what = p.what.clone();
    FlashStep::Patch {
        name: p
            .what
            .clone()
            .unwrap_or_else(|| format!("patch {}", p.index + 1)),
        cmd,
    }
}

fn read_xml(path: &Path, what: &str) -> crate::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("cannot open the {what} XML {}", path.display()),
            "the flash plan is built from this file",
            "Check the path (it usually lives in update/firehose/ of the package)",
        )
        .with_source(e)
    })?;
    if meta.len() > 16 * 1024 * 1024 {
        return Err(plan_error(
            format!("the {what} XML {} is {} bytes", path.display(), meta.len()),
            "Real package XML is a few kilobytes; check that this is the right file",
        ));
    }
    std::fs::read(path).map_err(|e| {
        plan_error(
            format!("cannot read {}", path.display()),
            "Check permissions",
        )
        .with_source(e)
    })
}

fn starts_at_zero(step: &FlashStep) -> bool {
    let start = match step {
        FlashStep::Erase { cmd, .. } => cmd.start_sector.as_deref(),
        FlashStep::Program { cmd, .. } => Some(cmd.start_sector.as_str()),
        _ => None,
    };
    start
        .map(|s| s.trim_end_matches('.') == "0")
        .unwrap_or(false)
}

/// The order Quectel's own tool uses on NAND (PROTOCOLS.md §8): erase the SBL (start sector 0)
/// first, then every other erase, then every program except the SBL, and the SBL program last —
/// so a flash interrupted anywhere leaves no half-valid boot chain that looks bootable. The
/// emulated programmer, like the real one, refuses to program pages that were not erased, so
/// the file order (where erases and programs interleave and the MIBIB is programmed before its
/// erase) does not work on NAND. Identical erases (the files repeat some at the end) are sent
/// once.
fn nand_order(steps: Vec<FlashStep>) -> Vec<FlashStep> {
    let mut sbl_erases = Vec::new();
    let mut erases: Vec<FlashStep> = Vec::new();
    let mut programs = Vec::new();
    let mut sbl_programs = Vec::new();
    for step in steps {
        match (&step, starts_at_zero(&step)) {
            (FlashStep::Erase { .. }, true) => sbl_erases.push(step),
            (FlashStep::Erase { .. }, false) => erases.push(step),
            (FlashStep::Program { .. }, true) => sbl_programs.push(step),
            _ => programs.push(step),
        }
    }
    let mut out: Vec<FlashStep> = Vec::new();
    for step in sbl_erases.into_iter().chain(erases) {
        let dup = out.iter().any(|o| match (o, &step) {
            (FlashStep::Erase { cmd: a, .. }, FlashStep::Erase { cmd: b, .. }) => a == b,
            _ => false,
        });
        if !dup {
            out.push(step);
        }
    }
    out.extend(programs);
    out.extend(sbl_programs);
    out
}

impl FlashPlan {
    /// Build and validate a plan from a rawprogram XML and an optional patch XML. On eMMC/UFS the
    /// steps follow the file order; on NAND the vendor tool's order (see [`nand_order`]). Then
    /// the DISK patches, then `setbootablestoragedrive` on eMMC/UFS when an sbl1/xbl partition is
    /// programmed.
    pub fn from_xml(
        rawprogram: &Path,
        patch: Option<&Path>,
        storage: Option<StorageKind>,
    ) -> crate::Result<FlashPlan> {
        let entries = parse_rawprogram(&read_xml(rawprogram, "rawprogram")?)
            .map_err(|e| Error::from(e).with_kind(ErrorKind::Failure))?;
        let base = rawprogram
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let root = package_root(rawprogram);
        let storage = storage.unwrap_or_else(|| storage_from_entries(&entries));
        let mut steps = Vec::new();
        let mut skipped = Vec::new();
        let mut bootable = None;
        for e in &entries {
            match e {
                RawEntry::Program(p) => match program_step(p, &base, &root)? {
                    Some(step) => {
                        let l = p.display_name.to_ascii_lowercase();
                        if matches!(l.as_str(), "sbl1" | "xbl" | "xbl_a") {
                            bootable = Some(p.physical_partition_number);
                        }
                        steps.push(step)
                    }
                    None => skipped.push(p.display_name.clone()),
                },
                RawEntry::Erase(er) => steps.push(erase_step(er)?),
                RawEntry::Other(o) => {
                    return Err(plan_error(
                        format!(
                            "the rawprogram XML contains a <{}> entry (entry {}) that qrescue does not flash",
                            o.name,
                            o.index + 1
                        ),
                        "Only <program> and <erase> entries are supported; remove the entry or use the vendor tool",
                    ))
                }
            }
        }
        if storage == StorageKind::Nand {
            steps = nand_order(steps);
        }
        if let Some(patch) = patch {
            let patches = parse_patch(&read_xml(patch, "patch")?)
                .map_err(|e| Error::from(e).with_kind(ErrorKind::Failure))?;
            // File patches (gpt_main0.bin …) edit host files before programming; the DISK twins
            // do the same on the device, so only those are sent.
            steps.extend(patches.iter().filter(|p| p.targets_disk()).map(patch_step));
        }
        if storage != StorageKind::Nand {
            if let Some(drive) = bootable {
                steps.push(FlashStep::SetBootable { drive });
            }
        }
        if steps.is_empty() {
            return Err(plan_error(
                format!("{} has nothing to flash", rawprogram.display()),
                "Check that this is the package's rawprogram XML and that its images are present",
            ));
        }
        Ok(FlashPlan {
            storage,
            steps,
            skipped,
            root,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.steps.iter().map(FlashStep::bytes).sum()
    }

    /// Check every erase/program step against the geometry the device reports (getstorageinfo),
    /// before anything destructive is sent: on NAND the sector size must be the page size,
    /// PAGES_PER_BLOCK must match, steps must start on a block and end inside the device; on
    /// eMMC/UFS literal ranges must lie inside the LUN. A package for another flash part is
    /// refused here with nothing erased — the device's own refusal ("start_sector unaligned")
    /// would only come after the SBL erase that the vendor order sends first.
    pub fn validate_geometry(&self, lun0: &StorageInfo) -> crate::Result<()> {
        let refuse = |what: String, why: String| {
            Err(Error::new(
                ErrorKind::Failure,
                what,
                why,
                "Nothing was written. Use the package built for this module's exact variant (its flash size and block size); the modem is still in download mode",
            ))
        };
        for step in &self.steps {
            let (name, ss, lun, start, count, ppb, last) = match step {
                FlashStep::Erase { name, cmd } => (
                    name,
                    cmd.sector_size,
                    cmd.physical_partition,
                    cmd.start_sector.as_deref(),
                    cmd.num_sectors,
                    cmd.pages_per_block,
                    cmd.last_sector,
                ),
                FlashStep::Program { name, cmd, .. } => (
                    name,
                    cmd.sector_size,
                    cmd.physical_partition,
                    Some(cmd.start_sector.as_str()),
                    Some(cmd.num_sectors),
                    cmd.pages_per_block,
                    cmd.last_sector,
                ),
                _ => continue,
            };
            if lun != 0 {
                continue;
            }
            let start = start.and_then(|s| s.trim_end_matches('.').parse::<u64>().ok());
            if self.storage == StorageKind::Nand {
                let (Some(page), Some(dev_ppb)) = (lun0.page_size, lun0.pages_per_block()) else {
                    continue;
                };
                if u64::from(ss) != page {
                    return refuse(
                        format!("The package writes {name} in {ss}-byte pages, but this modem's NAND has {page}-byte pages"),
                        "the package was built for a different flash chip".into(),
                    );
                }
                if let Some(p) = ppb {
                    if u64::from(p) != dev_ppb {
                        return refuse(
                            format!("The package says {p} pages per block for {name}, but this modem's NAND has {dev_ppb}"),
                            "the package was built for a NAND with a different block size (e.g. p2K_b128K vs 256 KiB blocks)".into(),
                        );
                    }
                }
                if let Some(st) = start {
                    if st % dev_ppb != 0 {
                        return refuse(
                            format!("{name} starts at page {st}, which is not on a {dev_ppb}-page block boundary of this modem's NAND"),
                            "the package was built for a NAND with a different block size".into(),
                        );
                    }
                    let end = last
                        .map(|l| l.saturating_add(1))
                        .or(count.map(|c| st.saturating_add(c)));
                    if let (Some(end), Some(blocks)) = (end, lun0.total_blocks) {
                        let total = blocks.saturating_mul(dev_ppb);
                        if end > total {
                            return refuse(
                                format!("{name} reaches page {end}, past the end of this modem's NAND ({total} pages)"),
                                "the package is for a bigger flash variant".into(),
                            );
                        }
                    }
                }
            } else if let (Some(st), Some(c), Some(total)) = (start, count, lun0.total_blocks) {
                if lun0.block_size == Some(u64::from(ss)) && st.saturating_add(c) > total {
                    return refuse(
                        format!("{name} ends at sector {}, past the end of this modem's storage ({total} sectors)", st.saturating_add(c)),
                        "the package is for a bigger storage".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// What a finished flash did.
#[derive(Debug, Clone, Serialize)]
pub struct FlashReport {
    pub steps: usize,
    pub bytes: u64,
    pub elapsed_ms: u64,
    pub programmer_uploaded: bool,
    pub max_payload: Option<u32>,
}

/// How to run a flash.
#[derive(Debug, Clone)]
pub struct FlashJob {
    /// The programmer to upload if the device is still in Sahara.
    pub programmer: Option<Vec<u8>>,
    /// How to leave the device: None keeps it in Firehose.
    pub reset: Option<PowerMode>,
    pub sahara: SaharaConfig,
    pub firehose: FirehoseOptions,
}

impl Default for FlashJob {
    fn default() -> Self {
        FlashJob {
            programmer: None,
            reset: Some(PowerMode::Reset),
            sahara: SaharaConfig::default(),
            firehose: FirehoseOptions::default(),
        }
    }
}

struct Runner<'e> {
    emit: &'e mut dyn FnMut(EngineEvent),
    weights: Weights,
    started: Instant,
    bytes: u64,
}

impl Runner<'_> {
    fn step<R>(
        &mut self,
        index: usize,
        info: &StepInfo,
        body: impl FnOnce(&mut dyn FnMut(u64)) -> crate::Result<R>,
    ) -> crate::Result<R> {
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
        let result = {
            let mut progress = |done: u64| {
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
            };
            body(&mut progress)
        };
        let elapsed = throttle.elapsed();
        match result {
            Ok(r) => {
                self.bytes += last;
                (self.emit)(EngineEvent::StepFinished {
                    index,
                    bytes: last,
                    elapsed_ms: elapsed.as_millis() as u64,
                    bytes_per_s: last as f64 / elapsed.as_secs_f64().max(1e-6),
                });
                Ok(r)
            }
            Err(e) => {
                (self.emit)(EngineEvent::StepFailed {
                    index,
                    what: e.what.clone(),
                    why: e.why.clone(),
                    next: e.next.clone(),
                });
                Err(e)
            }
        }
    }
}

fn interrupted_error(done: usize, total: usize) -> Error {
    Error::new(
        ErrorKind::Interrupted,
        format!("Flash stopped on request after {done} of {total} steps"),
        "the modem holds a partly written firmware and will probably not boot",
        "It stays in download mode: run the same flash again to finish it",
    )
}

/// Run `plan` on `transport`: upload the programmer (if given and needed), configure, run every
/// step, reset. Emits events through `emit`; checks `cancel` between steps (a partition being
/// written is always finished, never cut in half).
pub fn run<T: Transport>(
    transport: T,
    plan: &FlashPlan,
    job: &FlashJob,
    emit: &mut dyn FnMut(EngineEvent),
    cancel: &AtomicBool,
) -> crate::Result<FlashReport> {
    let mut infos = Vec::new();
    let mut push = |kind, name: &str, bytes| {
        infos.push(StepInfo {
            index: infos.len(),
            kind,
            name: name.to_string(),
            bytes,
            lun: None,
            start_sector: None,
            sectors: None,
        })
    };
    if let Some(p) = &job.programmer {
        push(StepKind::SaharaUpload, "programmer", p.len() as u64);
    }
    push(StepKind::Configure, "configure", 0);
    let first_plan_step = infos.len();
    for (i, s) in plan.steps.iter().enumerate() {
        infos.push(s.info(first_plan_step + i));
    }
    if job.reset.is_some() {
        let index = infos.len();
        infos.push(StepInfo {
            index,
            kind: StepKind::Reset,
            name: "reset".into(),
            bytes: 0,
            lun: None,
            start_sector: None,
            sectors: None,
        });
    }
    emit(EngineEvent::Plan {
        steps: infos.clone(),
        total_bytes: infos.iter().map(|s| s.bytes).sum(),
    });
    let mut runner = Runner {
        emit,
        weights: Weights::new(&infos),
        started: Instant::now(),
        bytes: 0,
    };
    let result = run_steps(transport, plan, job, &infos, &mut runner, cancel);
    let elapsed_ms = runner.started.elapsed().as_millis() as u64;
    (runner.emit)(EngineEvent::Done {
        ok: result.is_ok(),
        bytes: runner.bytes,
        elapsed_ms,
    });
    result.map(|(uploaded, max_payload)| FlashReport {
        steps: infos.len(),
        bytes: runner.bytes,
        elapsed_ms,
        programmer_uploaded: uploaded,
        max_payload,
    })
}

fn run_steps<T: Transport>(
    transport: T,
    plan: &FlashPlan,
    job: &FlashJob,
    infos: &[StepInfo],
    runner: &mut Runner<'_>,
    cancel: &AtomicBool,
) -> crate::Result<(bool, Option<u32>)> {
    let mut index = 0;
    let mut transport = Some(transport);
    let mut session = None;
    let mut uploaded = false;
    if let Some(programmer) = &job.programmer {
        // The upload step: Sahara if the modem is in the boot ROM, otherwise an attach to the
        // programmer that is already running (the step then moves no bytes).
        let (fh, attach) = runner.step(index, &infos[index], |progress| {
            let t = transport.take().expect("the transport is used once");
            let (fh, attach) = attach_or_upload(
                t,
                Some(programmer),
                &job.sahara,
                job.firehose.clone(),
                progress,
            )?;
            if matches!(attach, Attach::Uploaded(_)) {
                // The boot ROM reads only the programmer's loadable parts (headers and
                // segments), usually less than the file: the step is complete when it says so.
                progress(programmer.len() as u64);
            }
            Ok((fh, attach))
        })?;
        uploaded = matches!(attach, Attach::Uploaded(_));
        if !uploaded {
            (runner.emit)(EngineEvent::Log {
                message: "A Firehose programmer was already running; attached to it, nothing was uploaded".into(),
            });
        }
        session = Some(fh);
        index += 1;
    }
    // Connect (when no programmer was given), configure, then check the plan against the
    // geometry the device reports, all before the first destructive command. A programmer
    // without getstorageinfo leaves the checks to the device itself.
    let (mut fh, negotiated, described) = runner.step(index, &infos[index], |_| {
        let mut fh = match session.take() {
            Some(fh) => fh,
            None => {
                let t = transport.take().expect("the transport is used once");
                attach_or_upload(t, None, &job.sahara, job.firehose.clone(), &mut |_| {})?.0
            }
        };
        let n = fh.configure(plan.storage)?;
        let described = match fh.storage_info(0) {
            Ok(info) if !info.is_empty() => {
                plan.validate_geometry(&info)?;
                true
            }
            _ => false,
        };
        Ok((fh, n, described))
    })?;
    (runner.emit)(EngineEvent::Log {
        message: format!(
            "Configured {}: {} bytes per transfer",
            plan.storage.memory_name(),
            negotiated.max_payload_to_target
        ),
    });
    if !described {
        (runner.emit)(EngineEvent::Log {
            message: "The programmer did not describe its storage; geometry is checked by the device only".into(),
        });
    }
    index += 1;
    for step in &plan.steps {
        if cancel.load(Ordering::SeqCst) {
            return Err(interrupted_error(index, infos.len()));
        }
        runner.step(index, &infos[index], |progress| match step {
            FlashStep::Erase { cmd, .. } => fh.erase(cmd),
            FlashStep::Patch { cmd, .. } => fh.patch(cmd),
            FlashStep::SetBootable { drive } => fh.set_bootable(*drive),
            FlashStep::Program { cmd, source, .. } => {
                let mut f = File::open(&source.path).map_err(|e| {
                    Error::failure(
                        format!("cannot open {}", source.path.display()),
                        "the image was readable when the plan was checked",
                        "Check that the package was not moved or changed during the flash",
                    )
                    .with_source(e)
                })?;
                f.seek(SeekFrom::Start(source.offset)).map_err(|e| {
                    Error::failure(
                        format!("cannot seek in {}", source.path.display()),
                        "the image is shorter than the plan expected",
                        "Check the package files",
                    )
                    .with_source(e)
                })?;
                let mut reader = BufReader::with_capacity(1 << 20, f.take(source.len));
                fh.program(cmd, &mut reader, source.len, progress)
            }
        })?;
        index += 1;
    }
    if let Some(mode) = job.reset {
        runner.step(index, &infos[index], |_| fh.power(mode, 1))?;
    }
    Ok((uploaded, Some(negotiated.max_payload_to_target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn quectel_layout_resolves_dotdot_paths_and_keeps_file_order() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "update/sbl1.mbn", &[1u8; 5000]);
        write(d.path(), "update/NON-HLOS.ubi", &[2u8; 9000]);
        let xml = write(
            d.path(),
            "update/firehose/rawprogram_nand_p4K_b256K_update.xml",
            br#"<?xml version="1.0" ?>
<data>
  <erase PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="4096" num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="4096" filename="..\sbl1.mbn" num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="4096" filename="..\NON-HLOS.ubi" num_partition_sectors="0" physical_partition_number="0" start_sector="1280"/>
  <program SECTOR_SIZE_IN_BYTES="4096" filename="" num_partition_sectors="10" physical_partition_number="0" start_sector="5000"/>
</data>"#,
        );
        let plan = FlashPlan::from_xml(&xml, None, None).unwrap();
        assert_eq!(plan.storage, StorageKind::Nand);
        assert_eq!(plan.steps.len(), 3);
        assert!(matches!(plan.steps[0], FlashStep::Erase { .. }));
        // NAND order: the SBL program (start sector 0) comes last.
        assert_eq!(plan.steps[2].name(), "sbl1");
        match &plan.steps[1] {
            FlashStep::Program { cmd, source, name } => {
                assert_eq!(name, "NON-HLOS");
                assert_eq!(cmd.num_sectors, 3, "size from file, rounded up");
                assert_eq!(cmd.last_sector, None);
                assert_eq!(source.len, 9000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan.skipped.len(), 1);
        // sbl1: 5000 bytes = 2 sectors; NON-HLOS: 9000 bytes = 3 sectors.
        assert_eq!(plan.total_bytes(), (2 + 3) * 4096);
    }

    #[test]
    fn missing_files_and_escapes_are_refused_before_anything_is_sent() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.bin", b"x");
        let xml = write(
            d.path(),
            "rawprogram0.xml",
            br#"<data><program SECTOR_SIZE_IN_BYTES="512" filename="missing.img" num_partition_sectors="8" physical_partition_number="0" start_sector="0"/></data>"#,
        );
        let e = FlashPlan::from_xml(&xml, None, None).unwrap_err();
        assert!(e.what.contains("not in the package"), "{e}");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(
                outside.path().join("secret.bin"),
                d.path().join("link.img"),
            )
            .unwrap();
            let xml = write(
                d.path(),
                "rawprogram1.xml",
                br#"<data><program SECTOR_SIZE_IN_BYTES="512" filename="link.img" num_partition_sectors="8" physical_partition_number="0" start_sector="0"/></data>"#,
            );
            let e = FlashPlan::from_xml(&xml, None, None).unwrap_err();
            assert!(e.what.contains("outside the package"), "{e}");
        }
    }

    #[test]
    fn oversize_images_and_whole_disk_erases_are_refused() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "big.img", &[0u8; 5000]);
        let xml = write(
            d.path(),
            "rawprogram0.xml",
            br#"<data><program SECTOR_SIZE_IN_BYTES="512" filename="big.img" num_partition_sectors="8" physical_partition_number="0" start_sector="0"/></data>"#,
        );
        let e = FlashPlan::from_xml(&xml, None, None).unwrap_err();
        assert!(e.what.contains("holds only 4096 bytes"), "{e}");
        let xml = write(
            d.path(),
            "rawprogram1.xml",
            br#"<data><erase physical_partition_number="0"/></data>"#,
        );
        let e = FlashPlan::from_xml(&xml, None, None).unwrap_err();
        assert!(e.what.contains("whole storage"), "{e}");
    }

    fn nand_info(page: u64, ppb: u64, blocks: u64) -> StorageInfo {
        StorageInfo {
            total_blocks: Some(blocks),
            block_size: Some(page * ppb),
            page_size: Some(page),
            ..StorageInfo::default()
        }
    }

    #[test]
    fn geometry_is_checked_against_what_the_device_reports() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "update/boot.img", &[1u8; 3000]);
        let xml = write(
            d.path(),
            "update/firehose/rawprogram_nand_p2K_b128K_update.xml",
            br#"<data>
  <erase PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
  <erase PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" num_partition_sectors="64" physical_partition_number="0" start_sector="960"/>
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" filename="..\\boot.img" num_partition_sectors="64" physical_partition_number="0" start_sector="960"/>
</data>"#,
        );
        let plan = FlashPlan::from_xml(&xml, None, None).unwrap();
        // The part the package was built for: 2 KiB pages, 64 per block, 1024 blocks.
        plan.validate_geometry(&nand_info(2048, 64, 1024)).unwrap();
        // A 128-page-per-block part (EG25 256 MB with 256 KiB blocks).
        let e = plan
            .validate_geometry(&nand_info(2048, 128, 1024))
            .unwrap_err();
        assert!(e.what.contains("64 pages per block"), "{e}");
        assert!(e.next.starts_with("Nothing was written"), "{e}");
        // A smaller part: the erase at 960..1024 does not fit 15 blocks.
        let e = plan
            .validate_geometry(&nand_info(2048, 64, 15))
            .unwrap_err();
        assert!(e.what.contains("past the end"), "{e}");
        assert!(e.why.contains("bigger flash variant"), "{e}");
        // 4 KiB pages.
        let e = plan
            .validate_geometry(&nand_info(4096, 64, 1024))
            .unwrap_err();
        assert!(e.what.contains("4096-byte pages"), "{e}");
    }

    #[test]
    fn only_disk_patches_become_steps_and_bootable_follows_sbl1() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "sbl1.mbn", &[1u8; 512]);
        let xml = write(
            d.path(),
            "rawprogram0.xml",
            br#"<data><program SECTOR_SIZE_IN_BYTES="512" filename="sbl1.mbn" label="sbl1" num_partition_sectors="1" physical_partition_number="0" start_sector="34"/></data>"#,
        );
        let patch = write(
            d.path(),
            "patch0.xml",
            br#"<patches>
  <patch SECTOR_SIZE_IN_BYTES="512" byte_offset="16" filename="gpt_main0.bin" physical_partition_number="0" size_in_bytes="4" start_sector="1" value="0" what="host"/>
  <patch SECTOR_SIZE_IN_BYTES="512" byte_offset="16" filename="DISK" physical_partition_number="0" size_in_bytes="4" start_sector="1" value="CRC32(1,92)" what="disk"/>
</patches>"#,
        );
        let plan = FlashPlan::from_xml(&xml, Some(&patch), None).unwrap();
        assert_eq!(plan.storage, StorageKind::Emmc);
        let kinds: Vec<StepKind> = plan.steps.iter().map(FlashStep::kind).collect();
        assert_eq!(
            kinds,
            vec![StepKind::Program, StepKind::Patch, StepKind::SetBootable]
        );
    }
}
