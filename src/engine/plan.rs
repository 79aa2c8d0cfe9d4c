//! The flash plan: an ordered, validated list of steps (erase / program / patch / bootable)
//! built from a package's rawprogram and patch XML, read through [`PackageFiles`] so a folder and
//! a zip are planned (and later streamed) the same way, without unpacking anything.
//!
//! Building ([`FlashPlan::build`]):
//! - Several rawprogramN/patchN files (UFS: one per LUN) combine in the order given. Image paths
//!   resolve against the XML's folder with [`join_relative`] (`..\sbl1.mbn` from
//!   `update/firehose/` is `update/sbl1.mbn`) and may never leave the package; the
//!   [`PackageFiles`] implementation also refuses symlinks leaving it.
//! - A program step writes the image's sectors (rounded up, the last one zero padded), not the
//!   whole partition entry, which bounds the image. `num_partition_sectors="0"` is ptool's *grow*
//!   entry (the last partition, `userdata`, whose GPT end the patch file sets to
//!   `NUM_DISK_SECTORS-34.`): the size comes from the file, and the device check makes sure the
//!   image ends before the next program range and inside the storage.
//! - `start_byte_hex`, when given, must equal `start_sector × SECTOR_SIZE_IN_BYTES` (literal or
//!   symbolic, checked for two disk sizes); a mismatch means a hand-edited or broken file.
//! - Android sparse images (the sparse magic at the file offset; `sparse="true"` without the
//!   magic is a plain image, as in qdl) are read once while planning — every chunk header, every
//!   CRC32 chunk verified against the data — and expanded into program steps: RAW chunks program
//!   from their file range, FILL chunks program the repeated value (never skipped, not even a zero
//!   fill: the partition may hold old data where the image says zeros), DONT_CARE chunks are
//!   skipped (the device keeps what it has there, libsparse's meaning). Runs that are contiguous
//!   on the disk merge into one program step whose source is a [`ImageSource::Chain`] of file
//!   ranges and fills. The expanded image must fit the partition entry. Sparse images are refused
//!   on NAND (bad-block skipping shifts every later page, so split programs would misplace data)
//!   and at symbolic start sectors.
//! - DISK patches become steps after every program (qdl's order). Patches naming a package file
//!   are host-side edits ([`crate::package::hostpatch`]): the program steps of that file become
//!   [`ImageSource::Patched`] and stream the file with the patched bytes laid over it. Values that
//!   need the device's size (`NUM_DISK_BLOCKS-1904.`) wait for [`FlashPlan::for_device`] at
//!   configure time; the others are computed at once.
//! - NAND steps follow the vendor order ([`nand_order`]); eMMC/UFS the file order, then the DISK
//!   patches, then `setbootablestoragedrive` when an sbl1/xbl partition is programmed.
//! - Program ranges may not overlap within a LUN (literal starts here, all starts once the
//!   device's size is known).
//!
//! Before anything destructive is sent, [`FlashPlan::for_device`] checks the plan against the
//! geometry the programmer reports (getstorageinfo per LUN) and resolves what waited for it.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::engine::events::{StepInfo, StepKind};
use crate::engine::firehose::{Erase, Patch, Program, StorageInfo, StorageKind};
use crate::package::expr::{self, ExprEnv};
use crate::package::hostpatch::{self, HostPatch, HostPatchError, Overlay};
use crate::package::rawprogram::{
    nand_geometry_from_name, parse_number, parse_patch, parse_rawprogram, EraseEntry, PatchEntry,
    ProgramEntry, RawEntry, SectorExpr,
};
use crate::package::source::{join_relative, parent_dir, DirPackage, PackageFiles};
use crate::package::sparse::{self, RunKind, SparseReader};
use crate::{Error, ErrorKind};

/// Largest rawprogram/patch XML read (real ones are a few KiB; the XML parser's own bound).
pub const MAX_XML_BYTES: u64 = 16 * 1024 * 1024;
/// Most rawprogram (or patch) files one plan combines (UFS packages have 6–8).
pub const MAX_XML_FILES: usize = 64;
/// Most steps one plan holds (a sparse image with a few thousand chunks stays far below).
pub const MAX_STEPS: usize = 65_536;
/// Largest file patched on the host (GPT images are KiB, MIBIB images a few hundred KiB); it is
/// read whole to compute CRCs.
pub const MAX_HOST_PATCH_FILE: u64 = 64 * 1024 * 1024;

/// What to build a plan from: package-relative XML paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanInput {
    /// rawprogram files, combined in this order.
    pub rawprogram: Vec<String>,
    /// patch files, applied in this order after every program.
    pub patch: Vec<String>,
    /// The storage kind; None guesses it from the entries (NAND attributes, else sector size).
    pub storage: Option<StorageKind>,
}

/// Where a program step's bytes come from, streamed through [`PackageFiles::open`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    /// Bytes `offset..offset + len` of a package file (offset = file_sector_offset × sector
    /// size). When `len` is short of the step's sectors the last sector is zero padded.
    File { path: String, offset: u64, len: u64 },
    /// `len` bytes of a little-endian u32 repeated (a sparse FILL chunk).
    Fill { pattern: u32, len: u64 },
    /// A package file edited on the host by patch XML entries: bytes `offset..offset + len` of
    /// the file with `overlays` (file offsets) laid over them. `overlays` is None until the
    /// values that need the device's size were computed ([`FlashPlan::for_device`]).
    Patched {
        path: String,
        offset: u64,
        len: u64,
        overlays: Option<Vec<Overlay>>,
    },
    /// Pieces streamed back to back (disk-contiguous runs of one sparse image). Never nested.
    Chain(Vec<ImageSource>),
}

impl ImageSource {
    /// Bytes the source yields.
    pub fn len(&self) -> u64 {
        match self {
            ImageSource::File { len, .. }
            | ImageSource::Fill { len, .. }
            | ImageSource::Patched { len, .. } => *len,
            ImageSource::Chain(parts) => parts.iter().map(ImageSource::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The package files it reads, once each, in order.
    pub fn files(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        fn walk<'a>(s: &'a ImageSource, out: &mut Vec<&'a str>) {
            match s {
                ImageSource::File { path, .. } | ImageSource::Patched { path, .. } => {
                    if !out.contains(&path.as_str()) {
                        out.push(path);
                    }
                }
                ImageSource::Fill { .. } => {}
                ImageSource::Chain(parts) => parts.iter().for_each(|p| walk(p, out)),
            }
        }
        walk(self, &mut out);
        out
    }

    /// Whether host patches still wait for the device's size.
    pub fn is_resolved(&self) -> bool {
        match self {
            ImageSource::Patched { overlays, .. } => overlays.is_some(),
            ImageSource::Chain(parts) => parts.iter().all(ImageSource::is_resolved),
            _ => true,
        }
    }
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

    /// Bytes moved over the link (the whole sector count for a program: padding included).
    pub fn bytes(&self) -> u64 {
        match self {
            FlashStep::Program { cmd, .. } => cmd.byte_len().unwrap_or(0),
            _ => 0,
        }
    }

    /// Every step changes the device (erase, program, patch, the boot drive).
    pub fn destructive(&self) -> bool {
        true
    }

    /// The physical partition (LUN) the step touches.
    pub fn lun(&self) -> Option<u32> {
        match self {
            FlashStep::Erase { cmd, .. } => Some(cmd.physical_partition),
            FlashStep::Program { cmd, .. } => Some(cmd.physical_partition),
            FlashStep::Patch { cmd, .. } => Some(cmd.physical_partition),
            FlashStep::SetBootable { .. } => None,
        }
    }

    /// The start sector as sent (possibly symbolic).
    pub fn start_sector(&self) -> Option<&str> {
        match self {
            FlashStep::Erase { cmd, .. } => cmd.start_sector.as_deref(),
            FlashStep::Program { cmd, .. } => Some(&cmd.start_sector),
            FlashStep::Patch { cmd, .. } => Some(&cmd.start_sector),
            FlashStep::SetBootable { .. } => None,
        }
    }

    /// Sectors touched: erase and program counts; for a patch the sectors from its start that
    /// hold `byte_offset + size_in_bytes`.
    pub fn sectors(&self) -> Option<u64> {
        match self {
            FlashStep::Erase { cmd, .. } => cmd.num_sectors,
            FlashStep::Program { cmd, .. } => Some(cmd.num_sectors),
            FlashStep::Patch { cmd, .. } => cmd
                .byte_offset
                .checked_add(u64::from(cmd.size_in_bytes))
                .map(|e| e.div_ceil(u64::from(cmd.sector_size.max(1)))),
            FlashStep::SetBootable { .. } => None,
        }
    }

    fn sector_size(&self) -> Option<u32> {
        match self {
            FlashStep::Erase { cmd, .. } => Some(cmd.sector_size),
            FlashStep::Program { cmd, .. } => Some(cmd.sector_size),
            FlashStep::Patch { cmd, .. } => Some(cmd.sector_size),
            FlashStep::SetBootable { .. } => None,
        }
    }

    /// The step as announced in the engine's Plan event.
    pub fn info(&self, index: usize) -> StepInfo {
        let (lun, start, sectors) = match self {
            FlashStep::Patch { cmd, .. } => (
                Some(cmd.physical_partition),
                Some(cmd.start_sector.clone()),
                None,
            ),
            _ => (
                self.lun(),
                self.start_sector().map(str::to_string),
                self.sectors(),
            ),
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

/// A step's place on the storage, for the device-unique-data guard and other checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepExtent {
    /// Index in [`FlashPlan::steps`].
    pub index: usize,
    pub kind: StepKind,
    pub name: String,
    pub label: Option<String>,
    pub lun: u32,
    /// As sent (possibly symbolic: `NUM_DISK_SECTORS-33.`).
    pub start_sector: String,
    /// The start when it is a plain number.
    pub start: Option<u64>,
    /// Sectors covered (see [`FlashStep::sectors`]); None for an erase without a count.
    pub sectors: Option<u64>,
    pub sector_size: u32,
    /// The package file(s) a program step writes.
    pub files: Vec<String>,
}

/// One step for people and `--json` (see [`FlashPlan::summary`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepSummary {
    pub index: usize,
    pub name: String,
    pub kind: StepKind,
    pub lun: Option<u32>,
    pub start_sector: Option<String>,
    pub sectors: Option<u64>,
    pub bytes: u64,
    pub files: Vec<String>,
    /// Host-side patches edit this step's data.
    pub host_patched: bool,
    pub destructive: bool,
}

/// The whole plan for people and `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    pub package: String,
    pub storage: StorageKind,
    pub steps: Vec<StepSummary>,
    pub total_bytes: u64,
    pub skipped: Vec<String>,
    pub notes: Vec<String>,
    pub host_patches: Vec<HostPatch>,
    /// Host patches wait for the device's size (resolved at configure time).
    pub needs_device_geometry: bool,
}

/// A validated flash plan.
#[derive(Debug, Clone)]
pub struct FlashPlan {
    pub storage: StorageKind,
    pub steps: Vec<FlashStep>,
    /// Program entries without a file (partitions the package leaves alone), for the summary.
    pub skipped: Vec<String>,
    /// Things people should know (sparse expansion, ignored host patches …).
    pub notes: Vec<String>,
    /// Host-side file patches, in patch-file order.
    pub host_patches: Vec<HostPatch>,
    files: Arc<dyn PackageFiles>,
}

fn plan_error(what: impl Into<String>, next: impl Into<String>) -> Error {
    Error::failure(
        what,
        "qrescue validates the whole plan before sending anything, and this entry cannot be flashed safely",
        next,
    )
}

/// Prefix an error from the package layer with the entry it concerns.
fn in_entry(entry: &str) -> impl Fn(Error) -> Error + '_ {
    move |mut e| {
        e.what = format!("{entry}: {}", e.what);
        e.why = format!(
            "{}; qrescue validates the whole plan before sending anything, so nothing was sent",
            e.why
        );
        e
    }
}

/// The refusal for a plan that does not fit the device.
fn device_refusal(what: String, why: String) -> Error {
    Error::new(
        ErrorKind::Failure,
        what,
        why,
        "Nothing was written. Use the package built for this module's exact variant (its flash size and block size); the modem is still in download mode",
    )
}

/// The folder files may come from: the XML's folder's parent when the XML sits in a `firehose`
/// folder (Quectel layout: `update/firehose/x.xml` names `..\img` = `update/img`), otherwise the
/// XML's own folder.
fn package_root(xml_dir: &Path) -> PathBuf {
    let is_firehose = xml_dir
        .file_name()
        .map(|n| n.eq_ignore_ascii_case("firehose"))
        .unwrap_or(false);
    if is_firehose {
        xml_dir.parent().unwrap_or(xml_dir).to_path_buf()
    } else {
        xml_dir.to_path_buf()
    }
}

/// The real (absolute) path of an XML file given on the command line, for locating it in the
/// package.
fn absolute_xml(path: &Path, what: &str) -> crate::Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        Error::usage(
            format!("{} is not a file name ({what} XML)", path.display()),
            "Give the path of the package's XML file",
        )
    })?;
    let real_dir = dir.canonicalize().map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("cannot open the {what} XML {}", path.display()),
            "the flash plan is built from this file",
            "Check the path (it usually lives in update/firehose/ of the package)",
        )
        .with_source(e)
    })?;
    Ok(real_dir.join(name))
}

fn relative_to(root: &Path, path: &Path, what: &str) -> crate::Result<String> {
    let rel = path.strip_prefix(root).map_err(|_| {
        Error::usage(
            format!(
                "the {what} XML {} is not inside the package folder {}",
                path.display(),
                root.display()
            ),
            "Keep the package's XML files in the package (rawprogram and patch side by side)",
        )
    })?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|p| p.join("/")).ok_or_else(|| {
        Error::usage(
            format!("the path {} is not valid UTF-8", path.display()),
            "Rename the package folder",
        )
    })
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

fn read_xml(files: &dyn PackageFiles, path: &str, what: &str) -> crate::Result<Vec<u8>> {
    let size = files.size(path).map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("cannot open the {what} XML {path} in {}", files.describe()),
            "the flash plan is built from this file",
            "Check the path (it usually lives in update/firehose/ of the package)",
        )
        .with_source(e)
    })?;
    if size > MAX_XML_BYTES {
        return Err(plan_error(
            format!("the {what} XML {path} is {size} bytes (at most {MAX_XML_BYTES} are read)"),
            "Real package XML is a few kilobytes; check that this is the right file",
        ));
    }
    files.read_all(path, MAX_XML_BYTES)
}

/// Check `start_byte_hex` against `start_sector × sector size` (both may be symbolic: they are
/// compared for two disk sizes).
fn check_start_byte_hex(p: &ProgramEntry, entry: &str) -> crate::Result<()> {
    let Some(hex) = &p.start_byte_hex else {
        return Ok(());
    };
    let ss = u64::from(p.sector_size);
    let start_text = p.start_sector.to_string();
    for n in [1u64 << 24, 1u64 << 31] {
        let env = ExprEnv {
            num_disk_sectors: n,
            num_disk_blocks: Some(n / 64),
        };
        let start = expr::eval(&start_text, &env);
        let bytes = expr::eval(hex, &env);
        match (start, bytes) {
            (Ok(s), Ok(b)) if s.checked_mul(ss) == Some(b) => {}
            (Ok(s), Ok(b)) => {
                return Err(plan_error(
                    format!(
                        "{entry}: start_sector {start_text} × {ss} bytes is byte {}, but start_byte_hex says {hex} (byte {b})",
                        s.saturating_mul(ss)
                    ),
                    "The two addresses of this entry disagree, so the file was edited or is damaged; use the vendor's original package",
                ))
            }
            (_, Err(e)) => {
                return Err(plan_error(
                    format!("{entry}: start_byte_hex {hex} cannot be read ({e})"),
                    "Use the vendor's original package XML",
                ))
            }
            (Err(e), _) => {
                return Err(plan_error(
                    format!("{entry}: start_sector {start_text} cannot be read ({e})"),
                    "Use the vendor's original package XML",
                ))
            }
        }
    }
    Ok(())
}

/// A start sector that is a plain number (`640`, `640.`, `0x280`).
fn literal(start: &str) -> Option<u64> {
    parse_number(start).ok()
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
pub fn nand_order(steps: Vec<FlashStep>) -> Vec<FlashStep> {
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

/// NUM_DISK_SECTORS / NUM_DISK_BLOCKS of one LUN from what getstorageinfo reported, for entries
/// of `sector_size` bytes. NAND: pages (total blocks × pages per block) and blocks. eMMC/UFS:
/// the block count when the device's block is the sector, else the size divided by it. None when
/// the report does not say enough.
pub fn device_env(storage: StorageKind, info: &StorageInfo, sector_size: u32) -> Option<ExprEnv> {
    let ss = u64::from(sector_size);
    if storage == StorageKind::Nand {
        let blocks = info.total_blocks?;
        let ppb = info.pages_per_block()?;
        if info.page_size != Some(ss) {
            return None;
        }
        return Some(ExprEnv {
            num_disk_sectors: blocks.checked_mul(ppb)?,
            num_disk_blocks: Some(blocks),
        });
    }
    let sectors = match (info.total_blocks, info.block_size) {
        (Some(b), Some(bs)) if bs == ss => b,
        (Some(b), Some(bs)) if bs > 0 && ss > 0 => b.checked_mul(bs)? / ss,
        _ => match (info.num_partition_sectors, info.sector_size) {
            (Some(n), Some(s)) if s == ss => n,
            _ => return None,
        },
    };
    Some(ExprEnv {
        num_disk_sectors: sectors,
        num_disk_blocks: None,
    })
}

struct Builder {
    files: Arc<dyn PackageFiles>,
    storage: StorageKind,
    steps: Vec<FlashStep>,
    skipped: Vec<String>,
    notes: Vec<String>,
    bootable: Option<u32>,
}

impl Builder {
    fn push(&mut self, step: FlashStep) -> crate::Result<()> {
        if self.steps.len() >= MAX_STEPS {
            return Err(plan_error(
                format!("the package would need more than {MAX_STEPS} flash steps"),
                "Real packages need a few dozen (a sparse image a few thousand); check that this is a firmware package",
            ));
        }
        self.steps.push(step);
        Ok(())
    }

    fn program(&mut self, xml: &str, p: &ProgramEntry) -> crate::Result<()> {
        let entry = format!(
            "program entry {} ({}) of {xml}",
            p.index + 1,
            p.display_name
        );
        let Some(path) = &p.path else {
            self.skipped.push(p.display_name.clone());
            return Ok(());
        };
        check_start_byte_hex(p, &entry)?;
        check_nand_entry(
            xml,
            &entry,
            p.sector_size,
            p.pages_per_block,
            Some(&p.start_sector),
            p.last_sector_consistent(),
        )?;
        let rel = join_relative(parent_dir(xml), path).map_err(in_entry(&entry))?;
        let file_len = self.files.size(&rel).map_err(in_entry(&entry))?;
        let ss = u64::from(p.sector_size);
        let offset = p.file_sector_offset.checked_mul(ss).ok_or_else(|| {
            plan_error(
                format!("{entry} has an impossible file_sector_offset"),
                "Fix the package XML",
            )
        })?;
        if offset > file_len {
            return Err(plan_error(
                format!(
                    "{entry}: file_sector_offset {} starts at byte {offset}, past the end of {rel} ({file_len} bytes)",
                    p.file_sector_offset
                ),
                "The image does not belong to this layout; use the matching package",
            ));
        }
        let available = file_len - offset;
        let mut magic = [0u8; 4];
        let got = if available >= 4 {
            let mut r = self.files.open(&rel, offset).map_err(in_entry(&entry))?;
            r.read_exact(&mut magic).is_ok()
        } else {
            false
        };
        if got && sparse::is_sparse(&magic) {
            if !p.sparse {
                self.notes.push(format!(
                    "{rel} is an Android sparse image although its entry does not say sparse=\"true\"; it is expanded, never written as is"
                ));
            }
            return self.sparse(p, &entry, &rel, offset, available);
        }
        if p.sparse {
            self.notes.push(format!(
                "{rel} is marked sparse but has no sparse header: programmed as a plain image (as qdl does)"
            ));
        }
        // Like qdl and QFirehose, program only the image's sectors (rounded up, the last one
        // zero-padded), not the whole partition: the partition entry bounds the image.
        let sectors = available.div_ceil(ss);
        if p.num_partition_sectors > 0 && sectors > p.num_partition_sectors {
            return Err(plan_error(
                format!(
                    "{entry}: the image {rel} has {available} bytes but the partition entry holds only {} bytes",
                    p.num_partition_sectors.saturating_mul(ss)
                ),
                "The image does not belong to this layout; use the matching package",
            ));
        }
        if sectors == 0 {
            self.notes.push(format!(
                "{rel} is empty: {} is not programmed",
                p.display_name
            ));
            self.skipped.push(p.display_name.clone());
            return Ok(());
        }
        self.note_bootable(p);
        let cmd = program_cmd(p, sectors, p.start_sector.to_string());
        self.push(FlashStep::Program {
            name: p.display_name.clone(),
            cmd,
            source: ImageSource::File {
                path: rel,
                offset,
                len: available,
            },
        })
    }

    fn note_bootable(&mut self, p: &ProgramEntry) {
        let l = p.display_name.to_ascii_lowercase();
        if matches!(l.as_str(), "sbl1" | "xbl" | "xbl_a") && self.bootable.is_none() {
            self.bootable = Some(p.physical_partition_number);
        }
    }

    /// Expand a sparse image into program steps (see the module notes).
    fn sparse(
        &mut self,
        p: &ProgramEntry,
        entry: &str,
        rel: &str,
        offset: u64,
        available: u64,
    ) -> crate::Result<()> {
        if self.storage == StorageKind::Nand {
            return Err(plan_error(
                format!("{entry}: {rel} is an Android sparse image, which qrescue does not write to NAND"),
                "NAND skips bad blocks, so a sparse image split into separate writes would land in the wrong pages; convert it with simg2img or use the vendor tool",
            ));
        }
        let Some(start) = p.start_sector.literal() else {
            return Err(plan_error(
                format!(
                    "{entry}: the sparse image {rel} starts at {}, a position known only on the device",
                    p.start_sector
                ),
                "qrescue expands sparse images only at plain start sectors; use the vendor tool for this entry",
            ));
        };
        let reader = self.files.open(rel, offset).map_err(in_entry(entry))?;
        let layout = SparseReader::new(BufReader::with_capacity(1 << 16, reader.take(available)))
            .and_then(SparseReader::runs)
            .map_err(|e| in_entry(entry)(Error::from(e)))?;
        let header = layout.header;
        let ss = u64::from(p.sector_size);
        let out_bytes = header.output_bytes();
        let out_sectors = out_bytes.div_ceil(ss);
        if p.num_partition_sectors > 0 && out_sectors > p.num_partition_sectors {
            return Err(plan_error(
                format!(
                    "{entry}: the sparse image {rel} expands to {out_bytes} bytes but the partition entry holds only {} bytes",
                    p.num_partition_sectors.saturating_mul(ss)
                ),
                "The image does not belong to this layout; use the matching package",
            ));
        }
        // Group the runs that are contiguous on the disk.
        let mut groups: Vec<(u64, u64, Vec<ImageSource>)> = Vec::new();
        for run in &layout.runs {
            let Some((first, count)) = run.sectors(header.blk_sz, p.sector_size) else {
                return Err(plan_error(
                    format!(
                        "{entry}: the sparse image {rel} has {}-byte blocks, which do not divide into {}-byte sectors",
                        header.blk_sz, p.sector_size
                    ),
                    "The image was made for another storage; use the matching package",
                ));
            };
            let len = run.blocks * u64::from(header.blk_sz);
            let piece = match run.kind {
                RunKind::Raw { data_offset } => ImageSource::File {
                    path: rel.to_string(),
                    offset: offset + data_offset,
                    len,
                },
                RunKind::Fill(pattern) => ImageSource::Fill { pattern, len },
            };
            match groups.last_mut() {
                Some((gfirst, gcount, pieces)) if *gfirst + *gcount == first => {
                    *gcount += count;
                    merge_piece(pieces, piece);
                }
                _ => groups.push((first, count, vec![piece])),
            }
        }
        let written: u64 = groups.iter().map(|g| g.1 * ss).sum();
        self.notes.push(format!(
            "{rel} is an Android sparse image ({} chunks, CRC32 chunks checked): {} program step(s) write {written} of its {out_bytes} bytes; the rest is DONT_CARE and left as it is on the device",
            header.total_chunks,
            groups.len()
        ));
        if groups.is_empty() {
            self.skipped.push(p.display_name.clone());
            return Ok(());
        }
        self.note_bootable(p);
        let n = groups.len();
        for (i, (first, count, mut pieces)) in groups.into_iter().enumerate() {
            let at = start.checked_add(first).ok_or_else(|| {
                plan_error(
                    format!("{entry}: the sparse image reaches past sector 2^64"),
                    "Use the vendor's original package",
                )
            })?;
            let cmd = program_cmd(p, count, at.to_string());
            let name = if n == 1 {
                p.display_name.clone()
            } else {
                format!("{} [{}/{n}]", p.display_name, i + 1)
            };
            let source = if pieces.len() == 1 {
                pieces.remove(0)
            } else {
                ImageSource::Chain(pieces)
            };
            self.push(FlashStep::Program { name, cmd, source })?;
        }
        Ok(())
    }

    fn erase(&mut self, xml: &str, e: &EraseEntry) -> crate::Result<()> {
        let entry = format!("erase entry {} ({}) of {xml}", e.index + 1, e.display_name);
        let Some(ss) = e.sector_size else {
            return Err(plan_error(
                format!("{entry} has no SECTOR_SIZE_IN_BYTES: it would erase the whole storage"),
                "qrescue never erases a whole storage device from a package; remove the entry",
            ));
        };
        check_nand_entry(
            xml,
            &entry,
            ss,
            e.pages_per_block,
            e.start_sector.as_ref(),
            e.last_sector_consistent(),
        )?;
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
        self.push(FlashStep::Erase {
            name: e.display_name.clone(),
            cmd,
        })
    }
}

/// NAND entries must agree with themselves and with the geometry in the XML's name
/// (`rawprogram_nand_p4K_b256K_update.xml`): the sector size is the page, PAGES_PER_BLOCK is
/// block / page, every start lies on a block boundary and last_sector (when given) is
/// start + count − 1. A mismatch means a renamed or edited file, and on NAND a misplaced range
/// lands in another partition.
fn check_nand_entry(
    xml: &str,
    entry: &str,
    ss: u32,
    ppb: Option<u32>,
    start: Option<&SectorExpr>,
    consistent: bool,
) -> crate::Result<()> {
    let Some(ppb) = ppb else {
        return Ok(());
    };
    if let Some((page, block)) = nand_geometry_from_name(xml) {
        if page != ss || block / page != ppb {
            return Err(plan_error(
                format!(
                    "{entry}: {ss}-byte pages and {ppb} pages per block, but the file name says {} KiB pages and {} KiB blocks ({} pages per block)",
                    page / 1024,
                    block / 1024,
                    block / page
                ),
                "The XML was renamed or edited; use the vendor's original package",
            ));
        }
    }
    if let Some(st) = start.and_then(SectorExpr::literal) {
        if st % u64::from(ppb) != 0 {
            return Err(plan_error(
                format!("{entry} starts at page {st}, which is not on a {ppb}-page block boundary"),
                "NAND is erased and programmed in whole blocks; use the vendor's original package",
            ));
        }
    }
    if !consistent {
        return Err(plan_error(
            format!("{entry}: last_sector does not equal start_sector + num_partition_sectors − 1"),
            "The entry's range is inconsistent, so the file was edited or is damaged; use the vendor's original package",
        ));
    }
    Ok(())
}

fn program_cmd(p: &ProgramEntry, sectors: u64, start: String) -> Program {
    let mut cmd = Program::new(p.sector_size, sectors, p.physical_partition_number, start)
        .filename(p.filename.clone());
    cmd.label = p.label.clone();
    cmd.pages_per_block = p.pages_per_block;
    cmd.last_sector = p.last_sector;
    cmd.extra = p.extra.clone();
    cmd
}

/// Append a piece, merging it with the previous one when both are file ranges contiguous in
/// the same file or fills of the same value.
fn merge_piece(pieces: &mut Vec<ImageSource>, piece: ImageSource) {
    match (pieces.last_mut(), &piece) {
        (
            Some(ImageSource::File {
                path: a,
                offset: ao,
                len: al,
            }),
            ImageSource::File {
                path: b,
                offset: bo,
                len: bl,
            },
        ) if a == b && *ao + *al == *bo => *al += bl,
        (
            Some(ImageSource::Fill {
                pattern: a,
                len: al,
            }),
            ImageSource::Fill {
                pattern: b,
                len: bl,
            },
        ) if a == b => *al += bl,
        _ => pieces.push(piece),
    }
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

fn host_patch_error(e: HostPatchError) -> Error {
    match &e {
        HostPatchError::NeedsDevice { .. } => Error::failure(
            e.to_string(),
            "the package edits this file with a value computed from the modem's storage size, and the programmer did not report its storage (getstorageinfo), so the bytes to write are unknown; writing the file unpatched could leave a partition table that does not match the flash",
            "Nothing was written. Use the programmer that came with the package (it answers getstorageinfo), or the vendor tool",
        ),
        _ => Error::failure(
            e.to_string(),
            "a host-side patch of the package cannot be applied, so the file it edits cannot be written correctly",
            "Nothing was written. Use the vendor's original package (check it against its md5.txt)",
        ),
    }
}

impl FlashPlan {
    /// Build and validate a plan from package files (see the module notes).
    pub fn build(files: Arc<dyn PackageFiles>, input: &PlanInput) -> crate::Result<FlashPlan> {
        if input.rawprogram.is_empty() {
            return Err(Error::usage(
                "no rawprogram XML was given",
                "Name the package's rawprogram file(s)",
            ));
        }
        if input.rawprogram.len() > MAX_XML_FILES || input.patch.len() > MAX_XML_FILES {
            return Err(Error::usage(
                format!("more than {MAX_XML_FILES} rawprogram or patch files were given"),
                "Real packages have one per physical partition (at most 8)",
            ));
        }
        let mut parsed = Vec::new();
        for xml in &input.rawprogram {
            let bytes = read_xml(&*files, xml, "rawprogram")?;
            let entries = parse_rawprogram(&bytes)
                .map_err(|e| Error::from(e.in_file(xml.clone())).with_kind(ErrorKind::Failure))?;
            parsed.push((xml.clone(), entries));
        }
        let all: Vec<RawEntry> = parsed.iter().flat_map(|(_, e)| e.iter().cloned()).collect();
        let storage = input.storage.unwrap_or_else(|| storage_from_entries(&all));
        let mut b = Builder {
            files: Arc::clone(&files),
            storage,
            steps: Vec::new(),
            skipped: Vec::new(),
            notes: Vec::new(),
            bootable: None,
        };
        for (xml, entries) in &parsed {
            for e in entries {
                match e {
                    RawEntry::Program(p) => b.program(xml, p)?,
                    RawEntry::Erase(er) => b.erase(xml, er)?,
                    RawEntry::Other(o) => {
                        return Err(plan_error(
                            format!(
                                "{xml} contains a <{}> entry (entry {}) that qrescue does not flash",
                                o.name,
                                o.index + 1
                            ),
                            "Only <program> and <erase> entries are supported; remove the entry or use the vendor tool",
                        ))
                    }
                }
            }
        }
        if storage == StorageKind::Nand {
            b.steps = nand_order(std::mem::take(&mut b.steps));
        }
        let mut host_patches = Vec::new();
        for xml in &input.patch {
            let bytes = read_xml(&*files, xml, "patch")?;
            let patches = parse_patch(&bytes)
                .map_err(|e| Error::from(e.in_file(xml.clone())).with_kind(ErrorKind::Failure))?;
            for p in &patches {
                if p.targets_disk() {
                    b.push(patch_step(p))?;
                    continue;
                }
                let Some(path) = &p.path else { continue };
                let entry = format!("patch {} of {xml}", p.index + 1);
                let file = join_relative(parent_dir(xml), path).map_err(in_entry(&entry))?;
                host_patches.push(HostPatch {
                    index: p.index,
                    xml: xml.clone(),
                    file,
                    lun: p.physical_partition_number,
                    sector_size: p.sector_size,
                    start_sector: p.start_sector.clone(),
                    byte_offset: p.byte_offset,
                    size_in_bytes: p.size_in_bytes,
                    value: p.value.clone(),
                    what: p.what.clone(),
                });
            }
        }
        if storage != StorageKind::Nand {
            if let Some(drive) = b.bootable {
                b.push(FlashStep::SetBootable { drive })?;
            }
        }
        if b.steps.is_empty() {
            return Err(plan_error(
                format!("{} has nothing to flash", input.rawprogram.join(", ")),
                "Check that this is the package's rawprogram XML and that its images are present",
            ));
        }
        let mut plan = FlashPlan {
            storage,
            steps: b.steps,
            skipped: b.skipped,
            notes: b.notes,
            host_patches,
            files,
        };
        plan.attach_host_patches()?;
        plan.check_overlaps(&|_, start| literal(start))?;
        // Compute every host patch that does not need the device now, so the plan is complete
        // whenever the device is not needed.
        plan.resolve_files(&|_| None, true)
    }

    /// Build from XML files on disk: the package is the folder that holds the rawprogram XML
    /// (its parent when that folder is `firehose`, the Quectel layout); `patch` must lie in the
    /// same package.
    pub fn from_xml(
        rawprogram: &Path,
        patch: Option<&Path>,
        storage: Option<StorageKind>,
    ) -> crate::Result<FlashPlan> {
        let raw = absolute_xml(rawprogram, "rawprogram")?;
        let root = package_root(raw.parent().unwrap_or(Path::new("/")));
        let files: Arc<dyn PackageFiles> = Arc::new(DirPackage::open(&root)?);
        let mut input = PlanInput {
            rawprogram: vec![relative_to(&root, &raw, "rawprogram")?],
            patch: Vec::new(),
            storage,
        };
        if let Some(patch) = patch {
            let p = absolute_xml(patch, "patch")?;
            input.patch.push(relative_to(&root, &p, "patch")?);
        }
        FlashPlan::build(files, &input)
    }

    /// The package the plan reads from.
    pub fn files(&self) -> &Arc<dyn PackageFiles> {
        &self.files
    }

    pub fn total_bytes(&self) -> u64 {
        self.steps.iter().map(FlashStep::bytes).sum()
    }

    /// The physical partitions (LUNs) the steps touch, ascending.
    pub fn luns(&self) -> Vec<u32> {
        let mut l: Vec<u32> = self.steps.iter().filter_map(FlashStep::lun).collect();
        l.sort_unstable();
        l.dedup();
        l
    }

    /// Whether host patches wait for the device's size ([`FlashPlan::for_device`]).
    pub fn needs_device_geometry(&self) -> bool {
        self.steps.iter().any(|s| match s {
            FlashStep::Program { source, .. } => !source.is_resolved(),
            _ => false,
        })
    }

    /// Where every erase/program/patch step lands, for the device-unique-data guard.
    pub fn extents(&self) -> Vec<StepExtent> {
        self.steps
            .iter()
            .enumerate()
            .filter_map(|(index, s)| {
                let (label, files) = match s {
                    FlashStep::Erase { cmd, .. } => (cmd.label.clone(), Vec::new()),
                    FlashStep::Program { cmd, source, .. } => (
                        cmd.label.clone(),
                        source.files().into_iter().map(str::to_string).collect(),
                    ),
                    FlashStep::Patch { .. } => (None, Vec::new()),
                    FlashStep::SetBootable { .. } => return None,
                };
                let start_sector = s.start_sector()?.to_string();
                Some(StepExtent {
                    index,
                    kind: s.kind(),
                    name: s.name(),
                    label,
                    lun: s.lun()?,
                    start: literal(&start_sector),
                    start_sector,
                    sectors: s.sectors(),
                    sector_size: s.sector_size()?,
                    files,
                })
            })
            .collect()
    }

    /// The plan for people and `--json`.
    pub fn summary(&self) -> PlanSummary {
        PlanSummary {
            package: self.files.describe(),
            storage: self.storage,
            steps: self
                .steps
                .iter()
                .enumerate()
                .map(|(index, s)| {
                    let (files, host_patched) = match s {
                        FlashStep::Program { source, .. } => (
                            source.files().into_iter().map(str::to_string).collect(),
                            matches!(source, ImageSource::Patched { .. }),
                        ),
                        _ => (Vec::new(), false),
                    };
                    StepSummary {
                        index,
                        name: s.name(),
                        kind: s.kind(),
                        lun: s.lun(),
                        start_sector: s.start_sector().map(str::to_string),
                        sectors: s.sectors(),
                        bytes: s.bytes(),
                        files,
                        host_patched,
                        destructive: s.destructive(),
                    }
                })
                .collect(),
            total_bytes: self.total_bytes(),
            skipped: self.skipped.clone(),
            notes: self.notes.clone(),
            host_patches: self.host_patches.clone(),
            needs_device_geometry: self.needs_device_geometry(),
        }
    }

    /// Turn the program steps of every host-patched file into [`ImageSource::Patched`].
    fn attach_host_patches(&mut self) -> crate::Result<()> {
        let mut files: Vec<&str> = self.host_patches.iter().map(|p| p.file.as_str()).collect();
        files.sort_unstable();
        files.dedup();
        let mut notes = Vec::new();
        for file in files {
            let mut used = false;
            for step in &mut self.steps {
                let FlashStep::Program { name, source, .. } = step else {
                    continue;
                };
                match source {
                    ImageSource::File { path, offset, len } if path == file => {
                        *source = ImageSource::Patched {
                            path: path.clone(),
                            offset: *offset,
                            len: *len,
                            overlays: None,
                        };
                        used = true;
                    }
                    ImageSource::Patched { path, .. } if path == file => used = true,
                    ImageSource::Chain(_) if source.files().contains(&file) => {
                        return Err(plan_error(
                            format!("the patch file edits {file}, which {name} writes as an Android sparse image"),
                            "A sparse image cannot be patched byte by byte; use the vendor's original package",
                        ))
                    }
                    _ => {}
                }
            }
            if !used {
                notes.push(format!(
                    "the patch file edits {file}, which no program step writes: those patches change nothing and are not applied"
                ));
            }
        }
        self.notes.extend(notes);
        Ok(())
    }

    /// Compute the overlays of every patched file whose sources are not resolved yet. With
    /// `lenient`, files whose patches need the device stay unresolved instead of failing.
    fn resolve_files(
        &self,
        env: &dyn Fn(u32) -> Option<ExprEnv>,
        lenient: bool,
    ) -> crate::Result<FlashPlan> {
        let mut out = self.clone();
        let mut files: Vec<&str> = self.host_patches.iter().map(|p| p.file.as_str()).collect();
        files.sort_unstable();
        files.dedup();
        for file in files {
            let pending = out.steps.iter().any(|s| {
                matches!(s, FlashStep::Program { source: ImageSource::Patched { path, overlays: None, .. }, .. } if path == file)
            });
            if !pending {
                continue;
            }
            let patches: Vec<HostPatch> = self
                .host_patches
                .iter()
                .filter(|p| p.file == file)
                .cloned()
                .collect();
            if lenient && patches.iter().any(HostPatch::needs_device) {
                continue;
            }
            let mut bytes = self.files.read_all(file, MAX_HOST_PATCH_FILE)?;
            let overlays =
                hostpatch::compute_overlays(&mut bytes, &patches, env).map_err(host_patch_error)?;
            for step in &mut out.steps {
                if let FlashStep::Program {
                    source:
                        ImageSource::Patched {
                            path, overlays: o, ..
                        },
                    ..
                } = step
                {
                    if path == file {
                        *o = Some(overlays.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Compute the host patches that wait for the device, with `env` giving NUM_DISK_SECTORS /
    /// NUM_DISK_BLOCKS per LUN (None: unknown). A patch that needs an unknown value is refused.
    pub fn resolve(&self, env: &dyn Fn(u32) -> Option<ExprEnv>) -> crate::Result<FlashPlan> {
        self.resolve_files(env, false)
    }

    /// Program ranges may not overlap within a LUN. `start` evaluates a start sector (None:
    /// unknown, not checked).
    fn check_overlaps(&self, start: &dyn Fn(u32, &str) -> Option<u64>) -> crate::Result<()> {
        let mut ranges: BTreeMap<u32, Vec<(u64, u64, String)>> = BTreeMap::new();
        for s in &self.steps {
            let FlashStep::Program { cmd, name, .. } = s else {
                continue;
            };
            let Some(st) = start(cmd.physical_partition, &cmd.start_sector) else {
                continue;
            };
            ranges.entry(cmd.physical_partition).or_default().push((
                st,
                st.saturating_add(cmd.num_sectors),
                name.clone(),
            ));
        }
        for (lun, mut r) in ranges {
            r.sort();
            for w in r.windows(2) {
                let (a, b) = (&w[0], &w[1]);
                if b.0 < a.1 {
                    return Err(plan_error(
                        format!(
                            "{} (sectors {}..{}) and {} (sectors {}..{}) overlap on physical partition {lun}",
                            a.2, a.0, a.1, b.2, b.0, b.1
                        ),
                        "One image would overwrite the other; the package's layout is inconsistent (an image too big for its partition?). Use the vendor's original package",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check the plan against LUN 0's geometry (see [`FlashPlan::validate_device`]).
    pub fn validate_geometry(&self, lun0: &StorageInfo) -> crate::Result<()> {
        let mut geo = BTreeMap::new();
        geo.insert(0, lun0.clone());
        self.validate_device(&geo)
    }

    /// Check every erase/program step against the geometry the device reports (getstorageinfo
    /// per LUN), before anything destructive is sent: on NAND the sector size must be the page
    /// size, PAGES_PER_BLOCK must match, steps must start on a block and end inside the device;
    /// on eMMC/UFS every range (symbolic starts evaluated) must lie inside its LUN, and program
    /// ranges may not overlap once their real positions are known. LUNs missing from `geo` are
    /// left to the device. A package for another flash part is refused here with nothing erased
    /// — the device's own refusal ("start_sector unaligned") would only come after the SBL erase
    /// that the vendor order sends first.
    pub fn validate_device(&self, geo: &BTreeMap<u32, StorageInfo>) -> crate::Result<()> {
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
                // DISK patches: the sectors they write must exist (eMMC/UFS).
                FlashStep::Patch { name, cmd } if self.storage != StorageKind::Nand => (
                    name,
                    cmd.sector_size,
                    cmd.physical_partition,
                    Some(cmd.start_sector.as_str()),
                    step.sectors(),
                    None,
                    None,
                ),
                _ => continue,
            };
            let Some(info) = geo.get(&lun) else {
                continue;
            };
            if self.storage == StorageKind::Nand {
                let start = start.and_then(literal);
                let (Some(page), Some(dev_ppb)) = (info.page_size, info.pages_per_block()) else {
                    continue;
                };
                if u64::from(ss) != page {
                    return Err(device_refusal(
                        format!("The package writes {name} in {ss}-byte pages, but this modem's NAND has {page}-byte pages"),
                        "the package was built for a different flash chip".into(),
                    ));
                }
                if let Some(p) = ppb {
                    if u64::from(p) != dev_ppb {
                        return Err(device_refusal(
                            format!("The package says {p} pages per block for {name}, but this modem's NAND has {dev_ppb}"),
                            "the package was built for a NAND with a different block size (e.g. p2K_b128K vs 256 KiB blocks)".into(),
                        ));
                    }
                }
                if let Some(st) = start {
                    if st % dev_ppb != 0 {
                        return Err(device_refusal(
                            format!("{name} starts at page {st}, which is not on a {dev_ppb}-page block boundary of this modem's NAND"),
                            "the package was built for a NAND with a different block size".into(),
                        ));
                    }
                    let end = last
                        .map(|l| l.saturating_add(1))
                        .or(count.map(|c| st.saturating_add(c)));
                    if let (Some(end), Some(blocks)) = (end, info.total_blocks) {
                        let total = blocks.saturating_mul(dev_ppb);
                        if end > total {
                            return Err(device_refusal(
                                format!("{name} reaches page {end}, past the end of this modem's NAND ({total} pages)"),
                                "the package is for a bigger flash variant".into(),
                            ));
                        }
                    }
                }
            } else if let (Some(start), Some(env)) = (start, device_env(self.storage, info, ss)) {
                let total = env.num_disk_sectors;
                let st = expr::eval(start, &env).map_err(|e| {
                    device_refusal(
                        format!("{name} starts at {start}, which cannot be placed on this modem's storage ({total} sectors): {e}"),
                        "the package is for a bigger storage".into(),
                    )
                })?;
                let end = st.saturating_add(count.unwrap_or(0));
                if end > total {
                    return Err(device_refusal(
                        format!("{name} ends at sector {end}, past the end of this modem's storage ({total} sectors)"),
                        "the package is for a bigger storage".into(),
                    ));
                }
            }
        }
        let storage = self.storage;
        self.check_overlaps(&|lun, start| {
            let info = geo.get(&lun)?;
            let ss = self.steps.iter().find_map(|s| match s {
                FlashStep::Program { cmd, .. } if cmd.physical_partition == lun => {
                    Some(cmd.sector_size)
                }
                _ => None,
            })?;
            match device_env(storage, info, ss) {
                Some(env) => expr::eval(start, &env).ok(),
                None => literal(start),
            }
        })
    }

    /// Everything that needs the device, at configure time: validate against `geo` (getstorageinfo
    /// per LUN; empty when the programmer did not describe its storage) and compute the host
    /// patches that waited for its size. Returns the plan to run.
    pub fn for_device(&self, geo: &BTreeMap<u32, StorageInfo>) -> crate::Result<FlashPlan> {
        self.validate_device(geo)?;
        let storage = self.storage;
        let ss_of = |lun: u32| {
            self.host_patches
                .iter()
                .find(|p| p.lun == lun)
                .map(|p| p.sector_size)
        };
        self.resolve(&|lun| device_env(storage, geo.get(&lun)?, ss_of(lun)?))
    }

    /// A streamer for the program sources (reuses an open file while reads move forward, so the
    /// runs of a sparse image inside a zip are not decompressed again for every step).
    pub fn streamer(&self) -> SourceStreamer<'_> {
        SourceStreamer {
            files: &*self.files,
            open: None,
        }
    }

    /// The bytes a source streams (for checks and tests), refusing more than `limit` bytes.
    pub fn source_bytes(&self, source: &ImageSource, limit: u64) -> crate::Result<Vec<u8>> {
        if source.len() > limit {
            return Err(Error::failure(
                format!("the image source has {} bytes", source.len()),
                format!("reading it whole is limited to {limit} bytes"),
                "Stream it instead",
            ));
        }
        let mut out = Vec::with_capacity(source.len() as usize);
        let mut st = self.streamer();
        st.reader(source).read_to_end(&mut out).map_err(|e| {
            Error::failure(
                format!("cannot read the image data from {}", self.files.describe()),
                e.to_string(),
                "Check the package files",
            )
        })?;
        Ok(out)
    }
}

/// Reads program sources through [`PackageFiles::open`] (see [`FlashPlan::streamer`]).
pub struct SourceStreamer<'p> {
    files: &'p dyn PackageFiles,
    open: Option<OpenFile<'p>>,
}

struct OpenFile<'p> {
    path: String,
    pos: u64,
    reader: Box<dyn Read + Send + 'p>,
}

/// Forward gaps up to this size are read and dropped instead of reopening the file.
const MAX_SKIP: u64 = 1 << 20;

impl<'p> SourceStreamer<'p> {
    fn file_at(&mut self, path: &str, offset: u64) -> io::Result<&mut OpenFile<'p>> {
        let reuse = matches!(&self.open, Some(o) if o.path == path && o.pos <= offset && offset - o.pos <= MAX_SKIP);
        if reuse {
            let o = self.open.as_mut().expect("checked above");
            let gap = offset - o.pos;
            if gap > 0 {
                let skipped = io::copy(&mut (&mut o.reader).take(gap), &mut io::sink())?;
                o.pos += skipped;
                if skipped < gap {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{path} ended before byte {offset}"),
                    ));
                }
            }
        } else {
            let reader = self
                .files
                .open(path, offset)
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.open = Some(OpenFile {
                path: path.to_string(),
                pos: offset,
                reader,
            });
        }
        Ok(self.open.as_mut().expect("set above"))
    }

    /// A reader for one source's bytes.
    pub fn reader<'s>(&'s mut self, source: &'s ImageSource) -> SourceReader<'s, 'p> {
        let mut pieces = Vec::new();
        flatten(source, &mut pieces);
        SourceReader {
            streamer: self,
            pieces,
            index: 0,
            done: 0,
        }
    }
}

enum Piece<'s> {
    File {
        path: &'s str,
        offset: u64,
        len: u64,
        overlays: &'s [Overlay],
    },
    Fill {
        pattern: [u8; 4],
        len: u64,
    },
    Unresolved {
        path: &'s str,
    },
}

fn flatten<'s>(source: &'s ImageSource, out: &mut Vec<Piece<'s>>) {
    match source {
        ImageSource::File { path, offset, len } => out.push(Piece::File {
            path,
            offset: *offset,
            len: *len,
            overlays: &[],
        }),
        ImageSource::Fill { pattern, len } => out.push(Piece::Fill {
            pattern: pattern.to_le_bytes(),
            len: *len,
        }),
        ImageSource::Patched {
            path,
            offset,
            len,
            overlays: Some(o),
        } => out.push(Piece::File {
            path,
            offset: *offset,
            len: *len,
            overlays: o,
        }),
        ImageSource::Patched {
            path,
            overlays: None,
            ..
        } => out.push(Piece::Unresolved { path }),
        ImageSource::Chain(parts) => parts.iter().for_each(|p| flatten(p, out)),
    }
}

/// The bytes of one [`ImageSource`], as [`Read`].
pub struct SourceReader<'s, 'p> {
    streamer: &'s mut SourceStreamer<'p>,
    pieces: Vec<Piece<'s>>,
    index: usize,
    done: u64,
}

impl Read for SourceReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(piece) = self.pieces.get(self.index) else {
                return Ok(0);
            };
            let len = match piece {
                Piece::File { len, .. } | Piece::Fill { len, .. } => *len,
                Piece::Unresolved { path } => {
                    return Err(io::Error::other(format!(
                        "the host patches of {path} were not computed (the plan was not resolved for the device)"
                    )))
                }
            };
            if self.done >= len {
                self.index += 1;
                self.done = 0;
                continue;
            }
            let want = (len - self.done).min(buf.len() as u64) as usize;
            let n = match *piece {
                Piece::File {
                    path,
                    offset,
                    overlays,
                    ..
                } => {
                    let at = offset + self.done;
                    let f = self.streamer.file_at(path, at)?;
                    let n = f.reader.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "{path} ended at byte {at}, earlier than when the plan was made"
                            ),
                        ));
                    }
                    f.pos += n as u64;
                    hostpatch::apply_overlays(&mut buf[..n], at, overlays);
                    n
                }
                Piece::Fill { pattern, .. } => {
                    for (i, b) in buf[..want].iter_mut().enumerate() {
                        *b = pattern[((self.done + i as u64) % 4) as usize];
                    }
                    want
                }
                Piece::Unresolved { .. } => 0,
            };
            self.done += n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests;
