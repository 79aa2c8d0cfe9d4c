//! Preparing a flash from a firmware package: everything qrescue checks *before* a device is
//! touched, in one call, with one serialisable answer for the CLI (`qrescue package inspect`,
//! `qrescue flash PACKAGE`) and any other front end.
//!
//! [`prepare`] does, in order (nothing is sent to any device here):
//!
//! 1. **open** the package (a folder, or a `.zip` read in place: [`open_package`]);
//! 2. **discover** its layout, XML sets, programmer and revision hints ([`discover`]);
//! 3. **choose the XML set**: the person's `--set` (a flavour such as `update`/`factory`, a
//!    geometry or a set id), or the only set. Several sets and no choice is a usage error that
//!    lists them — never the filesystem's order;
//! 4. **programmer**: the override given, else the one discovery chose (ambiguous or missing is
//!    a refusal that names the candidates);
//! 5. **plan** ([`FlashPlan::build`]) from the set's rawprogram and patch files;
//! 6. **integrity**: md5.txt checked in full when present (any mismatch refuses and names the
//!    file and both digests; a missing file the plan uses refuses; unlisted files are reported)
//!    and the sha256 manifest of every file the flash uses (XMLs, images, programmer), computed
//!    in the same pass;
//! 7. **compatibility**: the package revision (from the revision hints, parsed) against the
//!    modem's revision when it is known; when it is not, the answer says plainly that it was
//!    not checked and what to do. A refusal stops unless a valid [`Override`] (the typed phrase
//!    and a verified backup from the ledger) turns it into an allowed flash;
//! 8. **guard**: every step that erases, programs or patches, mapped on the package's own
//!    partition table (the MIBIB image `partition_complete_*.mbn` on NAND, `gpt_main<N>.bin`
//!    on eMMC/UFS; by names when there is none) and checked against the [`BackupLedger`].
//!
//! The package's files are read through [`VerifyingFiles`]: once the manifest is made, a file
//! streamed whole from its start (what the flash engine does with an ordinary image) is hashed
//! on the way and refused at its last byte when it differs from what was checked. Files read
//! in pieces (sparse images, file offsets) are checked again by [`Prepared::reverify`] just
//! before a flash starts.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::engine::events::StepKind;
use crate::engine::firehose::StorageKind;
use crate::engine::guards::{
    self, classify, BackupLedger, Blocked, Region, Touch, TouchAction, VerifiedBackupRef,
};
use crate::engine::plan::{
    FlashPlan, FlashStep, ImageSource, PlanInput, PlanSummary, StepExtent, MAX_HOST_PATCH_FILE,
};
use crate::package::compat::{self, Allow, Decision, Override, Refusal, Rule};
use crate::package::discover::{self, glob_match, Discovery, ProgrammerChoice, XmlSet};
use crate::package::integrity::{
    self, check_md5_and_manifest, digest_file, Digests, HashingReader, ManifestEntry, Md5Report,
    Md5Status, Sha256Manifest,
};
use crate::package::revision::Revision;
use crate::package::source::{PackageFile, PackageFiles};
use crate::package::zip::open_package;
use crate::protocol::partitions::{parse_gpt_on, parse_mibib_table, Partition, MIBIB_GROW};
use crate::{Error, ErrorKind};

/// Largest programmer accepted (real ones are a few hundred KiB to a few MiB).
pub const MAX_PROGRAMMER_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest file that can be a programmer (an ELF header alone is 52 bytes).
const MIN_PROGRAMMER_BYTES: u64 = 64;

/// What to prepare.
#[derive(Debug, Clone, Default)]
pub struct PrepareRequest {
    /// The package: a folder or a `.zip`.
    pub package: PathBuf,
    /// Which XML set: a flavour (`update`, `factory`), a geometry (`p4K_b256K`) or a set id.
    pub set: Option<String>,
    /// A programmer file on disk to use instead of the package's.
    pub programmer: Option<PathBuf>,
    /// The modem's current firmware revision (`AT+QGMR`), when known.
    pub modem_revision: Option<String>,
    /// Do not check md5.txt (the sha256 manifest is still made).
    pub skip_md5: bool,
    /// The typed confirmation that overrides a compatibility refusal (with a verified backup).
    pub override_phrase: Option<String>,
    /// The storage kind, when the XML does not make it clear.
    pub storage: Option<StorageKind>,
}

/// Which check a reason comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Package,
    Programmer,
    Integrity,
    Plan,
    Compatibility,
    Guard,
}

/// Why a package is refused, for people (`what` happened, `why` it matters, `next` step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub stage: Stage,
    pub what: String,
    pub why: String,
    pub next: String,
}

impl Reason {
    fn from_error(stage: Stage, e: &Error) -> Reason {
        Reason {
            stage,
            what: e.what.clone(),
            why: e.why.clone(),
            next: e.next.clone(),
        }
    }
}

/// The programmer a flash would upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ProgrammerUse {
    /// The package's own, chosen by name pattern.
    Package {
        path: String,
        pattern: String,
        reason: String,
    },
    /// A file given by the person.
    Override { path: PathBuf },
    /// None could be chosen: the person must name one.
    Missing {
        reason: String,
        candidates: Vec<String>,
    },
}

/// One revision hint of the package that parses as a Quectel revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageRevision {
    /// As written in the hint.
    pub text: String,
    /// Where it was found (folder name, zip name, contents.xml …).
    pub source: String,
    /// `EC25-EFA`.
    pub product: String,
    /// `R06A08`.
    pub baseline_release: String,
    pub sub_version: Option<String>,
    pub tags: Vec<String>,
    #[serde(skip)]
    parsed: Revision,
}

impl PackageRevision {
    pub fn revision(&self) -> &Revision {
        &self.parsed
    }
}

/// The compatibility decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CompatReport {
    /// Nothing to compare with: the modem's revision is not known.
    NotChecked {
        package: Option<String>,
        reason: String,
        next: String,
    },
    Allowed {
        modem: String,
        package: String,
        rule: Allow,
        note: String,
    },
    Refused {
        modem: String,
        /// None when the package's revision could not be told.
        package: Option<String>,
        /// None when the package's revision could not be told.
        rule: Option<Rule>,
        title: String,
        why: String,
        next: String,
        /// The phrase that overrides this refusal (with a verified backup), when it can be.
        override_phrase: Option<String>,
    },
}

impl CompatReport {
    pub fn is_refused(&self) -> bool {
        matches!(self, CompatReport::Refused { .. })
    }
}

/// A device-unique partition a step touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UniqueTouch {
    /// Plan step index.
    pub step: usize,
    pub partition: String,
    /// What it holds, in plain words.
    pub holds: String,
    /// A verified backup of exactly it is on file.
    pub covered: bool,
    /// The backup, when covered.
    pub backup: Option<String>,
}

/// The device-unique-data guard's answer, for people and `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardReport {
    pub allowed: bool,
    /// Where the partition table came from (`update/firehose/partition_complete_p4K_b256K.mbn
    /// (MIBIB)`), or None when partitions were matched by name only.
    pub table_source: Option<String>,
    /// Partitions in that table.
    pub table_partitions: Vec<Partition>,
    /// Device-unique partitions of the table (names).
    pub device_unique: Vec<String>,
    /// The device-unique partitions the plan touches.
    pub touched: Vec<UniqueTouch>,
    pub blocked: Vec<Blocked>,
    pub notes: Vec<String>,
}

impl GuardReport {
    /// Device-unique partitions of the table that the plan leaves alone.
    pub fn untouched(&self) -> Vec<&str> {
        self.device_unique
            .iter()
            .filter(|n| !self.touched.iter().any(|t| t.partition == **n))
            .map(String::as_str)
            .collect()
    }
}

/// Everything qrescue found out about a package, and whether it may be flashed.
#[derive(Debug, Serialize)]
pub struct Prepared {
    pub discovery: Discovery,
    /// The XML set the plan uses (None when the package has none).
    pub set: Option<XmlSet>,
    pub programmer: ProgrammerUse,
    /// The md5.txt check (None without md5.txt, or with `skip_md5`).
    pub md5: Option<Md5Report>,
    /// sha256 of every file the flash uses.
    pub manifest: Sha256Manifest,
    pub summary: Option<PlanSummary>,
    /// The package's revision (the first hint that parses), if any.
    pub revision: Option<PackageRevision>,
    /// Every hint that parses (they may disagree).
    pub revisions: Vec<PackageRevision>,
    pub compat: CompatReport,
    pub guard: Option<GuardReport>,
    pub refusals: Vec<Reason>,
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub plan: Option<FlashPlan>,
    #[serde(skip)]
    files: Arc<VerifyingFiles>,
}

/// Flashable, or refused with the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub flashable: bool,
    /// One line for people.
    pub summary: String,
    pub reasons: Vec<Reason>,
}

impl Verdict {
    /// `None` when flashable; otherwise one error (kind Failure) carrying every reason.
    pub fn to_error(&self) -> Option<Error> {
        match self.reasons.as_slice() {
            [] => None,
            [one] => Some(Error::failure(&one.what, &one.why, &one.next)),
            many => {
                let what = format!(
                    "qrescue will not flash this package ({} reasons): {}",
                    many.len(),
                    many.iter()
                        .map(|r| r.what.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let why = many
                    .iter()
                    .map(|r| r.why.trim_end_matches('.'))
                    .collect::<Vec<_>>()
                    .join(". ");
                let mut next: Vec<&str> = Vec::new();
                for r in many {
                    if !next.contains(&r.next.as_str()) {
                        next.push(&r.next);
                    }
                }
                Some(Error::failure(what, why, next.join(" ")))
            }
        }
    }
}

impl Prepared {
    /// Flashable or refused, with every reason.
    pub fn verdict(&self) -> Verdict {
        let flashable = self.refusals.is_empty() && self.plan.is_some();
        let summary = if flashable {
            let s = self.summary.as_ref();
            format!(
                "flashable: {} steps, {:.2} MiB to write, nothing refused",
                s.map_or(0, |s| s.steps.len()),
                s.map_or(0, |s| s.total_bytes) as f64 / (1024.0 * 1024.0)
            )
        } else {
            let stages: Vec<&str> = self
                .refusals
                .iter()
                .map(|r| match r.stage {
                    Stage::Package => "package",
                    Stage::Programmer => "programmer",
                    Stage::Integrity => "integrity",
                    Stage::Plan => "plan",
                    Stage::Compatibility => "compatibility",
                    Stage::Guard => "device-unique data",
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            format!("refused ({})", stages.join(", "))
        };
        Verdict {
            flashable,
            summary,
            reasons: self.refusals.clone(),
        }
    }

    /// The package's files (reads are checked against the manifest once it is made).
    pub fn files(&self) -> Arc<dyn PackageFiles> {
        self.files.clone()
    }

    /// The programmer's bytes, checked against the manifest when they come from the package.
    pub fn programmer_image(&self) -> crate::Result<Vec<u8>> {
        match &self.programmer {
            ProgrammerUse::Override { path } => read_programmer_file(path),
            ProgrammerUse::Package { path, .. } => {
                let bytes = self.files.inner.read_all(path, MAX_PROGRAMMER_BYTES)?;
                let d = digest_bytes(&bytes);
                if self.manifest.get(path).is_some() {
                    self.manifest.verify(path, &d)?;
                }
                if (bytes.len() as u64) < MIN_PROGRAMMER_BYTES {
                    return Err(Error::failure(
                        format!(
                            "{path} is {} bytes, too small for a programmer",
                            bytes.len()
                        ),
                        "programmers are ELF files of a few hundred kilobytes to a few megabytes",
                        "Give the right programmer with --programmer",
                    ));
                }
                Ok(bytes)
            }
            ProgrammerUse::Missing { reason, .. } => Err(Error::failure(
                "no programmer was chosen for this package",
                reason.clone(),
                "Name it with --programmer FILE",
            )),
        }
    }

    /// Plan files the flash does not stream whole from their first byte (sparse images, file
    /// offsets, empty files): these are not checked on the way and must be hashed again right
    /// before a flash.
    pub fn files_to_reverify(&self) -> Vec<String> {
        let Some(plan) = &self.plan else {
            return Vec::new();
        };
        let mut whole: BTreeSet<&str> = BTreeSet::new();
        let mut all: BTreeSet<&str> = BTreeSet::new();
        for s in &plan.steps {
            if let FlashStep::Program { source, .. } = s {
                let mut pieces = Vec::new();
                flat(source, &mut pieces);
                for (path, offset, len) in pieces {
                    all.insert(path);
                    let size = self.manifest.get(path).map(|e| e.size);
                    if offset == 0 && Some(len) == size && len > 0 {
                        whole.insert(path);
                    }
                }
            }
        }
        all.difference(&whole).map(|s| s.to_string()).collect()
    }

    /// Hash [`Prepared::files_to_reverify`] again and compare with the manifest.
    pub fn reverify(&self) -> crate::Result<()> {
        for path in self.files_to_reverify() {
            let d = digest_file(&*self.files.inner, &path, false)?;
            self.manifest.verify(&path, &d)?;
        }
        Ok(())
    }
}

fn flat<'a>(s: &'a ImageSource, out: &mut Vec<(&'a str, u64, u64)>) {
    match s {
        ImageSource::File { path, offset, len }
        | ImageSource::Patched {
            path, offset, len, ..
        } => out.push((path, *offset, *len)),
        ImageSource::Fill { .. } => {}
        ImageSource::Chain(parts) => parts.iter().for_each(|p| flat(p, out)),
    }
}

fn digest_bytes(bytes: &[u8]) -> Digests {
    let mut h = HashingReader::new(bytes);
    let _ = std::io::copy(&mut h, &mut std::io::sink());
    h.finish()
}

fn read_programmer_file(path: &Path) -> crate::Result<Vec<u8>> {
    let open_error = |e: std::io::Error| {
        Error::new(
            ErrorKind::Usage,
            format!("Cannot open the programmer {}", path.display()),
            "the Firehose programmer is uploaded to the modem's boot ROM",
            "Give the programmer from update/firehose/ of this modem's firmware package",
        )
        .with_source(e)
    };
    let meta = std::fs::metadata(path).map_err(open_error)?;
    if !meta.is_file() || meta.len() > MAX_PROGRAMMER_BYTES || meta.len() < MIN_PROGRAMMER_BYTES {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "{} ({} bytes) is not a Firehose programmer",
                path.display(),
                meta.len()
            ),
            "programmers are ELF files of a few hundred kilobytes to a few megabytes",
            "Give the programmer from update/firehose/ of this modem's firmware package",
        ));
    }
    std::fs::read(path).map_err(open_error)
}

// ---------------------------------------------------------------------------------------------
// Reading package files against the manifest
// ---------------------------------------------------------------------------------------------

/// A package whose files, once [`VerifyingFiles::arm`]ed with a manifest, are checked while
/// streamed: a reader opened at byte 0 of a manifest file hashes what it yields and fails at
/// the file's last byte when the digest differs (the last piece is never handed out). Before
/// arming, and for readers opened at an offset, reads pass through unchanged.
#[derive(Debug)]
pub struct VerifyingFiles {
    inner: Box<dyn PackageFiles>,
    manifest: OnceLock<Sha256Manifest>,
}

impl VerifyingFiles {
    pub fn new(inner: Box<dyn PackageFiles>) -> Self {
        VerifyingFiles {
            inner,
            manifest: OnceLock::new(),
        }
    }

    /// Check reads against `manifest` from now on (the first manifest wins).
    pub fn arm(&self, manifest: Sha256Manifest) {
        let _ = self.manifest.set(manifest);
    }
}

impl PackageFiles for VerifyingFiles {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn origin_name(&self) -> Option<String> {
        self.inner.origin_name()
    }

    fn list(&self) -> crate::Result<Vec<PackageFile>> {
        self.inner.list()
    }

    fn size(&self, path: &str) -> crate::Result<u64> {
        self.inner.size(path)
    }

    fn open(&self, path: &str, offset: u64) -> crate::Result<Box<dyn Read + Send + '_>> {
        let r = self.inner.open(path, offset)?;
        let entry = match (self.manifest.get(), offset) {
            (Some(m), 0) => m.get(path).cloned(),
            _ => None,
        };
        match (entry, self.manifest.get()) {
            (Some(expected), Some(manifest)) if expected.size > 0 => Ok(Box::new(CheckingReader {
                hasher: Some(HashingReader::new(r)),
                expected,
                path: path.to_string(),
                manifest,
            })),
            _ => Ok(r),
        }
    }
}

struct CheckingReader<'a> {
    hasher: Option<HashingReader<Box<dyn Read + Send + 'a>>>,
    expected: ManifestEntry,
    path: String,
    manifest: &'a Sha256Manifest,
}

impl Read for CheckingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let Some(h) = self.hasher.as_mut() else {
            // Checked to its end: the stream is exactly the bytes that were checked.
            return Ok(0);
        };
        // Never more than the checked size: the digest is taken at exactly that many bytes (the
        // hasher is dropped when it is reached, so at least one byte is always left here), and
        // bytes a grown file has beyond it are never handed out.
        let room = (self.expected.size - h.bytes_read()).min(buf.len() as u64) as usize;
        let n = h.read(&mut buf[..room])?;
        if n == 0 || h.bytes_read() >= self.expected.size {
            let d = self.hasher.take().expect("present above").finish();
            if let Err(e) = self.manifest.verify(&self.path, &d) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} ({})", e.what, e.why),
                ));
            }
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// prepare
// ---------------------------------------------------------------------------------------------

/// Check a package and build its plan; see the module notes. `ledger` answers for verified
/// backups of `unit` (the modem's serial, when known). Errors are for things that stop even
/// the description (an unreadable or hostile package, a wrong argument, a set that must be
/// chosen); everything about the package's fitness is in [`Prepared::refusals`].
pub fn prepare(
    req: &PrepareRequest,
    ledger: &dyn BackupLedger,
    unit: Option<&str>,
) -> crate::Result<Prepared> {
    let files = Arc::new(VerifyingFiles::new(open_package(&req.package)?));
    let discovery = discover::discover(&*files)?;
    let mut refusals = Vec::new();
    let mut warnings: Vec<String> = discovery.notes.clone();

    // The modem's revision is an argument: a bad one is a usage error before any work.
    let modem = req
        .modem_revision
        .as_deref()
        .map(|text| {
            Revision::parse(text).map_err(|e| {
                Error::usage(
                    format!("--modem-revision {text:?} is not a Quectel revision: {e}"),
                    "Give it as the modem prints it for AT+QGMR, e.g. EC25EFAR06A08M4G_01.001.01.001",
                )
            })
        })
        .transpose()?;

    // The XML set.
    let set = choose_set(&discovery, req.set.as_deref())?;
    if !discovery.plannable {
        refusals.push(Reason {
            stage: Stage::Package,
            what: format!(
                "{} has no rawprogram/patch XML, so there is nothing qrescue can flash from it",
                discovery.source
            ),
            why: discovery.kind_description.clone(),
            next: "Get the Firehose package for this module (one with update/firehose/ and rawprogram XML)".into(),
        });
    }
    if let Some(s) = &set {
        warnings.extend(s.warnings.iter().cloned());
    }

    // The programmer.
    let programmer = match (&req.programmer, &discovery.programmer) {
        (Some(p), _) => {
            if let Err(e) = std::fs::metadata(p) {
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!("Cannot open the programmer {}", p.display()),
                    "the Firehose programmer is uploaded to the modem's boot ROM",
                    "Check the --programmer path",
                )
                .with_source(e));
            }
            ProgrammerUse::Override { path: p.clone() }
        }
        (
            None,
            ProgrammerChoice::Chosen {
                path,
                pattern,
                reason,
            },
        ) => ProgrammerUse::Package {
            path: path.clone(),
            pattern: pattern.clone(),
            reason: reason.clone(),
        },
        (None, other) => {
            let candidates: Vec<String> = match other {
                ProgrammerChoice::Ambiguous { paths, .. } => paths.clone(),
                _ => discovery
                    .programmers
                    .iter()
                    .map(|c| c.path.clone())
                    .collect(),
            };
            let what = match other {
                ProgrammerChoice::Ambiguous { .. } => format!(
                    "the package holds several programmers and qrescue will not guess: {}",
                    candidates.join(", ")
                ),
                _ => "the package holds no Firehose programmer".to_string(),
            };
            if discovery.plannable {
                refusals.push(Reason {
                    stage: Stage::Programmer,
                    what,
                    why: format!(
                        "{}; the modem's boot ROM only runs the programmer signed for its chip",
                        other.reason()
                    ),
                    next: "Name the programmer for this modem with --programmer FILE (prog_*.mbn / prog_firehose_*.elf from this module's package)".into(),
                });
            }
            ProgrammerUse::Missing {
                reason: other.reason().to_string(),
                candidates,
            }
        }
    };

    // The plan.
    let plan = match &set {
        Some(s) => {
            let input = PlanInput {
                rawprogram: s.parts.iter().map(|p| p.rawprogram.clone()).collect(),
                patch: s.parts.iter().filter_map(|p| p.patch.clone()).collect(),
                storage: req.storage,
            };
            let as_files: Arc<dyn PackageFiles> = files.clone();
            match FlashPlan::build(as_files, &input) {
                Ok(p) => Some(p),
                Err(e) => {
                    refusals.push(Reason::from_error(Stage::Plan, &e));
                    None
                }
            }
        }
        None => None,
    };
    if let Some(p) = &plan {
        warnings.extend(p.notes.iter().cloned());
    }

    // Integrity: md5.txt and the sha256 manifest of every file the flash uses, in one pass.
    let mut used: BTreeSet<String> = BTreeSet::new();
    if let Some(s) = &set {
        used.extend(s.files().into_iter().map(str::to_string));
    }
    if let ProgrammerUse::Package { path, .. } = &programmer {
        used.insert(path.clone());
    }
    if let Some(p) = &plan {
        for e in p.extents() {
            used.extend(e.files);
        }
    }
    let used: Vec<String> = used.into_iter().collect();
    let (md5, manifest) = integrity_check(
        &*files.inner,
        &discovery,
        req.skip_md5,
        &used,
        plan.is_some(),
        &mut refusals,
        &mut warnings,
    );
    files.arm(manifest.clone());

    // The guard's partition table, from the package itself.
    let mut guard_notes = Vec::new();
    let table = match &plan {
        Some(p) => package_table(&*files.inner, p, set.as_ref(), &mut guard_notes),
        None => PackageTable::default(),
    };
    let unit_name = unit.unwrap_or("(modem not yet identified)");

    // Compatibility.
    let revisions = package_revisions(&discovery);
    if revisions
        .iter()
        .map(|r| r.parsed.to_string())
        .collect::<BTreeSet<_>>()
        .len()
        > 1
    {
        warnings.push(format!(
            "the package's names disagree about its revision: {}",
            revisions
                .iter()
                .map(|r| format!("{} ({})", r.text, r.source))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let storage = plan.as_ref().map(|p| p.storage);
    let compat = compatibility(
        modem.as_ref(),
        &revisions,
        req.override_phrase.as_deref(),
        OverrideBackup {
            ledger,
            unit: unit_name,
            table: &table,
            storage,
        },
        &mut refusals,
        &mut warnings,
    );

    // The guard.
    let guard = plan
        .as_ref()
        .map(|p| run_guard(p, table, ledger, unit_name, guard_notes, &mut refusals));

    let summary = plan.as_ref().map(FlashPlan::summary);
    Ok(Prepared {
        discovery,
        set,
        programmer,
        md5,
        manifest,
        summary,
        revision: revisions.first().cloned(),
        revisions,
        compat,
        guard,
        refusals,
        warnings,
        plan,
        files,
    })
}

/// The set the person chose, the only set, or a usage error listing the sets.
fn choose_set(d: &Discovery, which: Option<&str>) -> crate::Result<Option<XmlSet>> {
    if d.sets.is_empty() {
        return Ok(None);
    }
    if let Some(w) = which {
        return discover::choose(d, w).map(|s| Some(s.clone()));
    }
    if let Some(s) = d.only_set() {
        return Ok(Some(s.clone()));
    }
    // The shortest word that picks each set: its flavour when no other set shares it.
    let word = |s: &XmlSet| -> String {
        let shared = d.sets.iter().filter(|o| o.flavour == s.flavour).count() > 1;
        if s.flavour == discover::Flavour::Plain || shared {
            s.id.clone()
        } else {
            s.flavour.as_str().to_string()
        }
    };
    let list = d
        .sets
        .iter()
        .map(|s| format!("  --set {:<9} {}", word(s), s.summary()))
        .collect::<Vec<_>>()
        .join("\n");
    let update = d
        .sets
        .iter()
        .any(|s| s.flavour == discover::Flavour::Update);
    Err(Error::new(
        ErrorKind::Usage,
        format!(
            "the package holds {} XML sets; choose one with --set:\n{list}",
            d.sets.len()
        ),
        "the sets do different things to the modem (a _factory set rewrites its calibration and IMEI area), so qrescue never picks one by itself",
        if update {
            "Add --set update for a normal firmware update (it leaves the modem's own data alone)".to_string()
        } else {
            "Add --set NAME with one of the set ids above".to_string()
        },
    ))
}

fn integrity_check(
    files: &dyn PackageFiles,
    d: &Discovery,
    skip_md5: bool,
    used: &[String],
    plan_known: bool,
    refusals: &mut Vec<Reason>,
    warnings: &mut Vec<String>,
) -> (Option<Md5Report>, Sha256Manifest) {
    let fail = |refusals: &mut Vec<Reason>, e: Error| {
        refusals.push(Reason::from_error(Stage::Integrity, &e));
        (None, Sha256Manifest::new())
    };
    let md5_path = d.md5_txt.as_deref().filter(|_| !skip_md5);
    let Some(md5_path) = md5_path else {
        warnings.push(if skip_md5 {
            "md5.txt was not checked (--skip-md5); the sha256 manifest of the files used was still made".into()
        } else {
            "the package has no md5.txt, so its files could not be checked against the vendor's checksums".into()
        });
        return match integrity::manifest_for(files, used) {
            Ok(m) => (None, m),
            Err(e) => fail(refusals, e),
        };
    };
    let (report, manifest) = match check_md5_and_manifest(files, md5_path, used) {
        Ok(r) => r,
        Err(e) => return fail(refusals, e),
    };
    for f in report.mismatches() {
        let Md5Status::Mismatch { actual } = &f.status else {
            continue;
        };
        refusals.push(Reason {
            stage: Stage::Integrity,
            what: format!(
                "{} is damaged: md5.txt (line {}) says MD5 {}, the file has {}",
                f.path, f.line, f.expected, actual
            ),
            why: "a file that differs from the vendor's checksum was corrupted in the download or changed, and flashing it can leave the modem unbootable".into(),
            next: "Download the package again (or unpack it again) and check it with `qrescue package inspect`".into(),
        });
    }
    for f in report.missing_files() {
        if used.iter().any(|u| u == &f.path) {
            refusals.push(Reason {
                stage: Stage::Integrity,
                what: format!(
                    "{} is listed in md5.txt and used by the plan, but missing",
                    f.path
                ),
                why: "the flash needs every file the plan names".into(),
                next: "Unpack the complete package again".into(),
            });
        }
    }
    let unused_missing: Vec<&str> = report
        .missing_files()
        .filter(|f| !used.iter().any(|u| u == &f.path))
        .map(|f| f.path.as_str())
        .collect();
    if !unused_missing.is_empty() {
        warnings.push(format!(
            "md5.txt lists {} file(s) the package lacks{}: {}",
            unused_missing.len(),
            if plan_known {
                "; the plan does not use them"
            } else {
                ""
            },
            unused_missing.join(", ")
        ));
    }
    if !report.complete {
        warnings.push("md5.txt lacks FILE:START or FILE:END and may be cut short".into());
    }
    (Some(report), manifest)
}

/// Every revision hint that parses, in discovery's order.
fn package_revisions(d: &Discovery) -> Vec<PackageRevision> {
    let mut out: Vec<PackageRevision> = Vec::new();
    for h in &d.revision_hints {
        let Ok(r) = Revision::parse(&h.text) else {
            continue;
        };
        if out.iter().any(|o| o.parsed == r) {
            continue;
        }
        out.push(PackageRevision {
            text: h.text.clone(),
            source: h.source.clone(),
            product: r.product_name(),
            baseline_release: r.baseline_release(),
            sub_version: r.sub_version().map(|s| s.as_str().to_string()),
            tags: r.tags().map(str::to_string).collect(),
            parsed: r,
        });
    }
    out
}

struct OverrideBackup<'a> {
    ledger: &'a dyn BackupLedger,
    unit: &'a str,
    table: &'a PackageTable,
    storage: Option<StorageKind>,
}

impl OverrideBackup<'_> {
    /// A verified backup of every device-unique partition of the table (the first one stands
    /// for all), or why there is none.
    fn find(&self) -> Result<VerifiedBackupRef, String> {
        let Some(storage) = self.storage else {
            return Err(
                "there is no plan, so qrescue cannot tell which partitions to look for".into(),
            );
        };
        let unique: Vec<&Partition> = self
            .table
            .partitions
            .iter()
            .filter(|p| p.num_sectors > 0 && classify(&p.name, storage).is_some())
            .collect();
        if unique.is_empty() {
            return Err("the package has no partition table, so qrescue cannot tell which backup would cover this modem".into());
        }
        let mut first = None;
        for p in &unique {
            // The table's units are the plan's sectors; the ledger compares bytes.
            let region = Region {
                lun: p.lun,
                start_sector: p.start_sector,
                num_sectors: p.num_sectors,
                sector_size: self.table.sector_size,
            };
            match self.ledger.verified_backup(self.unit, &region) {
                Some(b) => {
                    first.get_or_insert(b);
                }
                None => {
                    return Err(format!(
                        "no verified backup of {} of unit {} is on file",
                        p.name, self.unit
                    ))
                }
            }
        }
        first.ok_or_else(|| "no verified backup is on file".to_string())
    }
}

fn compatibility(
    modem: Option<&Revision>,
    revisions: &[PackageRevision],
    phrase: Option<&str>,
    backup: OverrideBackup<'_>,
    refusals: &mut Vec<Reason>,
    warnings: &mut Vec<String>,
) -> CompatReport {
    let package = revisions.first().map(|r| r.parsed.to_string());
    let Some(modem) = modem else {
        if phrase.is_some() {
            warnings.push("--override was given, but there was no refusal to override (the modem's revision is not known); it was ignored".into());
        }
        return CompatReport::NotChecked {
            package: package.clone(),
            reason: "not checked: the modem's current firmware revision is not known, so qrescue cannot tell whether this package is for its exact model, variant and baseline".into(),
            next: format!(
                "Give it with --modem-revision (AT+QGMR in normal mode prints it, e.g. EC25EFAR06A08M4G_01.001.01.001){}",
                package
                    .as_deref()
                    .map(|p| format!("; the package holds {p}"))
                    .unwrap_or_default()
            ),
        };
    };
    if revisions.is_empty() {
        let why = "qrescue cannot tell which firmware revision this package holds (neither its folder or zip name nor its contents.xml names one), so it cannot check it against the modem".to_string();
        let next = "Keep the package under the name Quectel gave it (e.g. EC25EFAR06A08M4G_01.001.01.001), or, with `qrescue flash`, leave out --modem-revision after checking yourself that it is for this exact model, variant and baseline".to_string();
        refusals.push(Reason {
            stage: Stage::Compatibility,
            what: format!("the package's revision is unknown, so it cannot be checked against the modem's {modem}"),
            why: why.clone(),
            next: next.clone(),
        });
        return CompatReport::Refused {
            modem: modem.to_string(),
            package: None,
            rule: None,
            title: "a package without a known revision".into(),
            why,
            next,
            override_phrase: None,
        };
    }
    // Every revision the package claims must be acceptable; the first refusal decides.
    let decisions: Vec<(&PackageRevision, Decision)> = revisions
        .iter()
        .map(|r| (r, compat::decide(modem, &r.parsed)))
        .collect();
    let refused = decisions
        .iter()
        .find_map(|(r, d)| d.refusal().map(|x| (*r, x.clone())));
    let Some((target, refusal)) = refused else {
        if phrase.is_some() {
            warnings.push(
                "--override was given, but the package is allowed without it; it was ignored"
                    .into(),
            );
        }
        let (r, d) = &decisions[0];
        let Decision::Allowed { rule, note } = d else {
            unreachable!("no refusal among the decisions");
        };
        return CompatReport::Allowed {
            modem: modem.to_string(),
            package: r.parsed.to_string(),
            rule: *rule,
            note: note.clone(),
        };
    };
    let mut extra = String::new();
    if let Some(typed) = phrase {
        match backup.find() {
            Ok(b) => match Override::new(&refusal, typed, b) {
                Ok(ov) => {
                    if let Decision::Allowed { rule, note } =
                        compat::decide_with_override(modem, &target.parsed, Some(&ov))
                    {
                        warnings.push(format!("compatibility refusal overridden: {note}"));
                        return CompatReport::Allowed {
                            modem: modem.to_string(),
                            package: target.parsed.to_string(),
                            rule,
                            note,
                        };
                    }
                }
                Err(e) => extra = format!(" The override was not accepted: {e}."),
            },
            Err(why) => {
                extra = format!(
                    " The override was not accepted: it needs a verified backup of this modem, and {why}."
                )
            }
        }
    }
    refusals.push(refusal_reason(&refusal, &extra));
    CompatReport::Refused {
        modem: modem.to_string(),
        package: Some(target.parsed.to_string()),
        rule: Some(refusal.rule),
        title: refusal.rule.title().to_string(),
        why: refusal.why.clone(),
        next: format!("{}{extra}", refusal.next),
        override_phrase: refusal
            .rule
            .overridable()
            .then(|| refusal.override_phrase()),
    }
}

fn refusal_reason(r: &Refusal, extra: &str) -> Reason {
    let e = r.to_error();
    Reason {
        stage: Stage::Compatibility,
        what: e.what,
        why: e.why,
        next: format!("{}{extra}", e.next),
    }
}

// ---------------------------------------------------------------------------------------------
// The guard over the package's own table
// ---------------------------------------------------------------------------------------------

/// The package's own partition table, in the plan's sector units.
#[derive(Debug, Clone, Default)]
struct PackageTable {
    partitions: Vec<Partition>,
    /// Where it came from, for people.
    source: Option<String>,
    /// Bytes per sector of the table (NAND: the page).
    sector_size: u32,
}

/// Read the package's own partition table: the MIBIB image (`partition_complete_*.mbn`, table
/// in its second page) on NAND, `gpt_main<N>.bin` programmed at sector 0 of each LUN on
/// eMMC/UFS. What cannot be read is noted; the guard then matches by names.
fn package_table(
    files: &dyn PackageFiles,
    plan: &FlashPlan,
    set: Option<&XmlSet>,
    notes: &mut Vec<String>,
) -> PackageTable {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let mut out = PackageTable::default();
    let mut sources = Vec::new();
    let mut seen_luns = BTreeSet::new();
    for step in &plan.steps {
        let FlashStep::Program { cmd, source, .. } = step else {
            continue;
        };
        for path in source.files() {
            let name = base(path);
            let nand_table = plan.storage == StorageKind::Nand
                && glob_match("partition_complete_*.mbn", &name)
                && sources.is_empty();
            let gpt = plan.storage != StorageKind::Nand
                && name.to_ascii_lowercase().starts_with("gpt_main")
                && cmd.start_sector.trim() == "0"
                && !seen_luns.contains(&cmd.physical_partition);
            if !nand_table && !gpt {
                continue;
            }
            let bytes = match files.read_all(path, MAX_HOST_PATCH_FILE) {
                Ok(b) => b,
                Err(e) => {
                    notes.push(format!("{path} was not read: {}", e.what));
                    continue;
                }
            };
            let ss = cmd.sector_size;
            if nand_table {
                let ppb = cmd.pages_per_block.or_else(|| {
                    set.and_then(|s| s.geometry.as_ref())
                        .map(|g| g.pages_per_block)
                });
                let Some(ppb) = ppb else {
                    notes.push(format!(
                        "{path}: the pages per block are unknown, so its MIBIB table was not read"
                    ));
                    continue;
                };
                let ps = ss as usize;
                let Some(page) = bytes.get(ps..ps.saturating_mul(2)) else {
                    notes.push(format!(
                        "{path} is shorter than two pages, so it holds no MIBIB table"
                    ));
                    continue;
                };
                // An unpatched table ends in a "to the end" entry whose size the patch file
                // fills in from the device: then let it reach as far as a table can.
                let parsed = parse_mibib_table(page, ppb, None)
                    .or_else(|_| parse_mibib_table(page, ppb, Some(u64::from(MIBIB_GROW))));
                match parsed {
                    Ok(t) => {
                        out.partitions = t;
                        out.sector_size = ss;
                        sources.push(format!("{path} (MIBIB)"));
                    }
                    Err(e) => notes.push(format!(
                        "{path} is not a readable MIBIB partition table ({e})"
                    )),
                }
            } else {
                let lun = cmd.physical_partition;
                seen_luns.insert(lun);
                match parse_gpt_on(&bytes, ss, lun, None) {
                    Ok(t) => {
                        out.partitions.extend(t);
                        out.sector_size = ss;
                        sources.push(format!("{path} (GPT of LUN {lun})"));
                    }
                    Err(e) => notes.push(format!("{path} is not a readable GPT ({e})")),
                }
            }
        }
    }
    out.source = (!sources.is_empty()).then(|| sources.join(", "));
    out
}

/// The guard's view of the plan. Steps at places only the device computes
/// (`NUM_DISK_SECTORS-33.`: the backup GPT at the end of the disk) lie outside every table
/// partition; one whose name is device-unique is refused outright, the others are noted.
fn touches(
    extents: &[StepExtent],
    storage: StorageKind,
    notes: &mut Vec<String>,
    refusals: &mut Vec<Reason>,
) -> Vec<Touch> {
    let mut out = Vec::new();
    let mut at_end = 0;
    for e in extents {
        let name = e.label.clone().unwrap_or_else(|| e.name.clone());
        let action = match e.kind {
            StepKind::Erase => TouchAction::Erase,
            StepKind::Program => TouchAction::Program {
                file: e.files.first().cloned().unwrap_or_default(),
            },
            StepKind::Patch => TouchAction::Patch,
            _ => continue,
        };
        let Some(start) = e.start else {
            if classify(&name, storage).is_some() {
                refusals.push(Reason {
                    stage: Stage::Guard,
                    what: format!(
                        "qrescue stopped before sending anything: step {} writes {name}, which holds data unique to this modem, at {}",
                        e.index, e.start_sector
                    ),
                    why: "a step may touch data unique to this modem only when a verified backup of exactly that data is on file, and where this step lands is known only on the device".into(),
                    next: "Use the package's _update set, which leaves the modem's own data alone".into(),
                });
            } else {
                at_end += 1;
            }
            continue;
        };
        out.push(Touch {
            step: e.index,
            action,
            lun: e.lun,
            start_sector: start,
            sectors: e.sectors,
            sector_size: e.sector_size,
            name,
        });
    }
    if at_end > 0 {
        notes.push(format!(
            "{at_end} step(s) at places the device computes (the end of the disk: the backup GPT and its patches) were checked by name"
        ));
    }
    out
}

fn run_guard(
    plan: &FlashPlan,
    table: PackageTable,
    ledger: &dyn BackupLedger,
    unit: &str,
    mut notes: Vec<String>,
    refusals: &mut Vec<Reason>,
) -> GuardReport {
    let before = refusals.len();
    let t = touches(&plan.extents(), plan.storage, &mut notes, refusals);
    if table.source.is_none() {
        notes.push("the package carries no partition table qrescue could read, so steps are matched to device-unique partitions by their names".into());
    }
    let v = guards::guard(&t, &table.partitions, plan.storage, unit, ledger);
    let mut touched = Vec::new();
    for b in &v.blocked {
        for h in &b.partitions {
            touched.push(UniqueTouch {
                step: b.step,
                partition: h.partition.clone(),
                holds: h.kind.holds.to_string(),
                covered: false,
                backup: None,
            });
        }
    }
    for c in &v.covered {
        touched.push(UniqueTouch {
            step: c.step,
            partition: c.partition.clone(),
            holds: classify(&c.partition, plan.storage)
                .map(|k| k.holds.to_string())
                .unwrap_or_default(),
            covered: true,
            backup: Some(c.backup.to_string()),
        });
    }
    touched.sort_by(|a, b| (a.step, &a.partition).cmp(&(b.step, &b.partition)));
    let device_unique = table
        .partitions
        .iter()
        .filter(|p| classify(&p.name, plan.storage).is_some())
        .map(|p| p.name.clone())
        .collect();
    let blocked = v.blocked.clone();
    let allowed = v.allowed && refusals.len() == before;
    if let Some(e) = v.into_error() {
        refusals.push(Reason::from_error(Stage::Guard, &e));
    }
    GuardReport {
        allowed,
        table_source: table.source,
        table_partitions: table.partitions,
        device_unique,
        touched,
        blocked,
        notes,
    }
}

#[cfg(test)]
mod tests;
