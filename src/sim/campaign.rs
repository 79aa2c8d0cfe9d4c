//! The fault campaign: a seeded loop of whole flashes against the emulated modem, each with
//! random faults, and the invariants every run must keep.
//!
//! Run `i` of a campaign with seed `S` draws everything from its own seed ([`run_seed`]): a
//! fresh emulated unit (NAND and eMMC profiles alternate) whose storage left the factory with
//! firmware, its EFS and known bytes in every other partition that holds device-unique data
//! ([`crate::engine::guards::DEVICE_UNIQUE`]); a generated package ([`package_gen`]), an update
//! set or, sometimes, a `_factory` set that also writes the EFS; a backup ledger with no, an
//! unverified or a verified backup of what a factory set overwrites; and one to three
//! [`Injected`] faults. Then it runs the real engine as a person would: `prepare` (integrity,
//! plan, the device-unique-data guard with the ledger), then `flash::run` over an in-process pipe,
//! and again after a failure (the unit power-cycled or, sometimes, still running), until it
//! succeeds or [`CampaignConfig::max_attempts`] is used up.
//!
//! After every run:
//! 1. **bounded**: every attempt ended within [`CampaignConfig::attempt_limit`] (a watchdog;
//!    an attempt past it is a hang, reported with the seed and faults) and nothing panicked;
//! 2. **device-unique data**: no partition holding device-unique data was erased, programmed or
//!    changed unless a verified backup of exactly it was on the ledger (from the emulator's
//!    [`StorageWrite`] log and the partitions' sha256 before and after);
//! 3. **verified success**: when the engine reports success, every partition the plan wrote is
//!    read back from the emulated storage and its sha256 compared with the package's image
//!    (host patches and on-device DISK patches applied to the expected bytes);
//! 4. **recoverable**: a failed attempt is followed by another (a fresh run: until the journal
//!    resumes, it starts over) until one succeeds and verifies;
//! 5. **expected verdict**: update sets and factory sets with a verified backup are flashed;
//!    factory sets without one are refused before anything is sent.
//!
//! Every run reports how often each partition was written, per attempt, and which partitions
//! earlier attempts completed ([`RunReport::partitions`], [`AttemptReport::completed`]), so
//! "a resumed run does not rewrite completed partitions" is one more invariant:
//! [`CampaignConfig::expect_resume`] turns it on.
//!
//! Timing faults (boot-loop windows, a slow device) make a run depend on the machine's speed:
//! the seed reproduces the faults drawn, not the exact byte where a window closes.
//!
//! The harness never panics on a bad run and never prints: everything is in the
//! [`CampaignReport`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::events::{EngineEvent, StepKind};
use crate::engine::firehose::{FirehoseOptions, PowerMode, StorageKind, Timeouts};
use crate::engine::flash::{self, FlashJob, FlashPlan, FlashStep};
use crate::engine::guards::{self, BackupLedger, MemoryLedger};
use crate::engine::prepare::{prepare, PrepareRequest};
use crate::engine::sahara::SaharaConfig;
use crate::package::expr::{self, PatchValue};
use crate::sim::device::{self, DeviceConfig, RunOutcome};
use crate::sim::faults::{Fault, FaultPlan};
use crate::sim::firehose::programmer::{writes_per_region, StorageWrite, WriteKind};
use crate::sim::firehose::{Programmer, ProgrammerOptions, Region, Storage, StorageProfile};
use crate::sim::normal::state::{read_region, write_region};
use crate::sim::package_gen::{self, PackageOptions, PackageSummary};
use crate::sim::profile::Profile;
use crate::sim::stoplink::StopLink;
use crate::transport::pipe::{self, Cutter, PipeEnd};
use crate::transport::Framing;

/// The storage profiles runs alternate between (even runs NAND, odd runs eMMC).
pub const PROFILES: [&str; 2] = ["nand-ec25e", "emmc-msm8916"];
/// The model of every emulated unit.
const MODEL: &str = "ec25";
/// Known bytes written at the start of each device-unique partition the factory left blank.
const UNIQUE_BYTES: usize = 8 * 1024;
/// Largest image the verification holds in memory.
const VERIFY_IMAGE_LIMIT: u64 = 256 << 20;
/// How long a unit gets to stop after a power-cycle request.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long an engine thread gets to give up after its unit was pulled, once past the bound.
const ABANDON_WAIT: Duration = Duration::from_secs(10);

/// How big and how strict a campaign is.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    /// Runs to do (indices `0..runs`).
    pub runs: u32,
    /// The campaign seed; each run's own seed is [`run_seed`]`(seed, index)`.
    pub seed: u64,
    /// Do only this run index (to replay one run of a campaign).
    pub only: Option<u32>,
    /// Upper bound of one attempt (prepare + flash); an attempt past it is a hang.
    pub attempt_limit: Duration,
    /// Attempts per run before a failed run counts as not recovered, on top of two per fault
    /// drawn and one per boot-loop window: every fault is one-shot, so it fails at most one
    /// attempt, plus one more when that attempt is re-run on the unit as the fault left it
    /// (never twice in a row: the second re-run power-cycles it).
    pub max_attempts: u32,
    /// Image bytes of the generated packages, drawn per run from this range.
    pub image_bytes: std::ops::Range<u64>,
    /// Require every attempt after a failure to leave the partitions that earlier attempts
    /// completed alone (resume from a journal).
    pub expect_resume: bool,
    /// Where packages are generated (a temporary folder per run when `None`).
    pub workdir: Option<PathBuf>,
    /// Runs done at the same time (each has its own unit, package and engine; most of a run's
    /// time is the engine waiting on the emulated unit).
    pub parallel: usize,
}

impl Default for CampaignConfig {
    fn default() -> Self {
        CampaignConfig {
            runs: 24,
            seed: 1,
            only: None,
            attempt_limit: Duration::from_secs(40),
            max_attempts: 1,
            image_bytes: (192 << 10)..(2 << 20),
            expect_resume: false,
            workdir: None,
            parallel: 4,
        }
    }
}

/// One fault injected into a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Injected {
    /// The link drops after this many bytes (both directions) of the unit's first appearance.
    LinkDrop { at_byte: u64 },
    /// The programmer drops the link after this many raw data bytes (programs and reads).
    DropInRaw { at_byte: u64 },
    /// The programmer NAKs the Nth command of a session (once).
    Nak { command: u64 },
    /// The programmer answers the Nth command of a session with broken XML (once).
    GarbledXml { command: u64 },
    /// The programmer stops answering from the Nth command of a session on, until the unit is
    /// power-cycled (once).
    Hang { command: u64 },
    /// The Nth NAND program fails half-way with a write error (once).
    NandWriteFail { program: u64 },
    /// The programmer offers a smaller payload than the host asks for.
    PayloadTooLarge,
    /// A boot loop: the unit vanishes `window_ms` after each of its first `windows`
    /// appearances and is back `gap_ms` later; then it stays.
    BootLoop {
        window_ms: u64,
        gap_ms: u64,
        windows: u32,
    },
    /// A slow device: every write of the unit waits `delay_ms`, raw data flows at most
    /// `bytes_per_s`.
    Slow { delay_ms: u64, bytes_per_s: u64 },
    /// The boot ROM's HELLO was consumed before the host connected (first appearance).
    ConsumeHello,
    /// DONE_RESP says more images are pending (first appearance).
    DonePending,
}

impl Injected {
    /// The kind, for tallies.
    pub fn kind(&self) -> &'static str {
        match self {
            Injected::LinkDrop { .. } => "link-drop",
            Injected::DropInRaw { .. } => "drop-in-raw",
            Injected::Nak { .. } => "nak",
            Injected::GarbledXml { .. } => "garbled-xml",
            Injected::Hang { .. } => "hang",
            Injected::NandWriteFail { .. } => "nand-write-fail",
            Injected::PayloadTooLarge => "payload-too-large",
            Injected::BootLoop { .. } => "boot-loop",
            Injected::Slow { .. } => "slow",
            Injected::ConsumeHello => "consume-hello",
            Injected::DonePending => "done-pending",
        }
    }

    /// The emulator fault of the unit's first appearance (the boot ROM and link side).
    fn first_appearance(&self) -> Option<Fault> {
        match self {
            Injected::LinkDrop { at_byte } => Some(Fault::DropAfter(Some(*at_byte))),
            Injected::ConsumeHello => Some(Fault::ConsumeHello),
            Injected::DonePending => Some(Fault::DonePending),
            _ => None,
        }
    }

    /// The emulator fault of the programmer (one-shot over the unit's life).
    fn programmer(&self) -> Option<Fault> {
        match self {
            Injected::DropInRaw { at_byte } => Some(Fault::DropInRaw(Some(*at_byte))),
            Injected::Nak { command } => Some(Fault::Nak(Some(*command))),
            Injected::GarbledXml { command } => Some(Fault::GarbledXml(Some(*command))),
            Injected::Hang { command } => Some(Fault::Hang(Some(*command))),
            Injected::NandWriteFail { program } => Some(Fault::NandWriteFail(Some(*program))),
            Injected::PayloadTooLarge => Some(Fault::PayloadTooLarge),
            _ => None,
        }
    }
}

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Injected::BootLoop {
                window_ms,
                gap_ms,
                windows,
            } => write!(f, "boot-loop:{windows}x{window_ms}ms/gap {gap_ms}ms"),
            Injected::Slow {
                delay_ms,
                bytes_per_s,
            } => write!(f, "slow:{delay_ms}ms,{bytes_per_s}B/s"),
            other => match other.first_appearance().or_else(|| other.programmer()) {
                Some(fault) => write!(f, "{fault}"),
                None => write!(f, "{}", other.kind()),
            },
        }
    }
}

/// Which XML set a run flashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    Update,
    /// Also writes the EFS (NAND: cefs.mbn to EFS2; eMMC: an image to modemst1).
    Factory,
}

/// What the ledger holds about the partitions a factory set overwrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    None,
    /// A backup that was not read back and verified: it must not count.
    Unverified,
    Verified,
}

/// The invariant a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// An attempt did not end within the bound, or a unit did not stop.
    Bounded,
    /// Something panicked.
    NoPanic,
    /// Device-unique data was erased or written without a verified backup of it.
    DeviceUniqueData,
    /// The engine reported success, but the storage does not hold the package.
    VerifiedSuccess,
    /// A failed run could not be brought to a verified success.
    Recoverable,
    /// An update set (or a factory set with a verified backup) was refused, or a factory set
    /// without one was not.
    ExpectedVerdict,
    /// An attempt after a failure rewrote a partition an earlier attempt had completed.
    Resume,
    /// The harness itself could not set the run up.
    Harness,
}

/// One broken invariant, with what it takes to replay it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Violation {
    pub run: u32,
    pub seed: u64,
    pub storage: String,
    pub faults: Vec<Injected>,
    pub invariant: Invariant,
    pub detail: String,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AttemptResult {
    /// The engine reported success.
    Flashed,
    /// prepare refused the package (nothing sent).
    Refused { reasons: Vec<String> },
    /// prepare or the flash failed.
    Failed { kind: String, what: String },
    /// The attempt did not end within the bound.
    TimedOut,
    /// The engine thread panicked.
    Panicked { message: String },
}

/// One attempt of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptReport {
    /// 1-based.
    pub attempt: u32,
    /// A new appearance of the unit (after a power-cycle or a boot-loop gap), or the same
    /// running unit again.
    pub fresh_appearance: bool,
    pub result: AttemptResult,
    pub elapsed_ms: u64,
    /// Program steps the engine finished in this attempt (partition names).
    pub completed: Vec<String>,
    /// Storage writes this attempt made (programs, erases, patches).
    pub writes: u32,
}

/// How often one partition was written over a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionWrites {
    pub lun: u32,
    pub name: String,
    /// Program commands per attempt (index 0 = attempt 1).
    pub programs: Vec<u32>,
    /// Erase commands per attempt.
    pub erases: Vec<u32>,
    /// Raw bytes programmed over the run.
    pub bytes: u64,
    pub device_unique: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// Flashed and verified (possibly after failed attempts).
    Verified,
    /// Refused before anything was sent (a factory set without a verified backup).
    Refused,
    /// Attempts used up without a verified success.
    NotRecovered,
    /// An attempt hit the bound.
    Hung,
    /// The run could not be set up or checked.
    HarnessError,
}

impl RunEnd {
    fn as_str(self) -> &'static str {
        match self {
            RunEnd::Verified => "verified",
            RunEnd::Refused => "refused",
            RunEnd::NotRecovered => "not_recovered",
            RunEnd::Hung => "hung",
            RunEnd::HarnessError => "harness_error",
        }
    }
}

/// One run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub run: u32,
    pub seed: u64,
    pub storage: String,
    pub unit_serial: String,
    pub set: SetKind,
    pub backup: BackupKind,
    pub image_bytes: u64,
    pub faults: Vec<Injected>,
    pub attempts: Vec<AttemptReport>,
    pub end: RunEnd,
    /// Partitions written at least once.
    pub partitions: Vec<PartitionWrites>,
    /// Partitions an attempt after a failure programmed again although an earlier attempt had
    /// completed them (expected until resume exists; a violation with `expect_resume`).
    pub rewritten_after_completion: Vec<String>,
    /// Partitions compared with the package after the verified success.
    pub verified_partitions: usize,
    pub violations: Vec<Violation>,
    pub elapsed_ms: u64,
}

/// A whole campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignReport {
    pub seed: u64,
    pub runs: Vec<RunReport>,
    /// Faults drawn, by kind.
    pub faults_drawn: BTreeMap<String, u32>,
    /// Runs by how they ended.
    pub outcomes: BTreeMap<String, u32>,
    /// Attempts by result.
    pub attempt_results: BTreeMap<String, u32>,
    pub violations: Vec<Violation>,
    pub elapsed_ms: u64,
}

impl CampaignReport {
    /// Whether every invariant held in every run.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Lines for people: the tallies, then each violation with its run, seed and faults.
    pub fn summary(&self) -> String {
        let tally = |m: &BTreeMap<String, u32>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!(
            "fault campaign, seed {}: {} runs in {:.1} s; outcomes: {}; attempts: {}; faults: {}; {} violation(s)\n",
            self.seed,
            self.runs.len(),
            self.elapsed_ms as f64 / 1000.0,
            tally(&self.outcomes),
            tally(&self.attempt_results),
            tally(&self.faults_drawn),
            self.violations.len()
        );
        for v in &self.violations {
            let faults: Vec<String> = v.faults.iter().map(ToString::to_string).collect();
            s.push_str(&format!(
                "  run {} (run seed {:#x}, {}): {:?}: {} [faults: {}]\n",
                v.run,
                v.seed,
                v.storage,
                v.invariant,
                v.detail,
                faults.join(", ")
            ));
        }
        s
    }
}

/// The seed of run `index` of a campaign seeded `seed` (SplitMix64 of both).
pub fn run_seed(seed: u64, index: u32) -> u64 {
    let mut z = seed ^ u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Run a whole campaign. Never panics on a bad run: everything is in the report.
pub fn run_campaign(cfg: &CampaignConfig) -> CampaignReport {
    let started = Instant::now();
    let mut report = CampaignReport {
        seed: cfg.seed,
        runs: Vec::new(),
        faults_drawn: BTreeMap::new(),
        outcomes: BTreeMap::new(),
        attempt_results: BTreeMap::new(),
        violations: Vec::new(),
        elapsed_ms: 0,
    };
    let indices: Vec<u32> = (0..cfg.runs)
        .filter(|i| cfg.only.is_none_or(|o| o == *i))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..cfg.parallel.clamp(1, indices.len().max(1)) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(&index) = indices.get(k) else {
                    return;
                };
                let run = run_one(cfg, index, run_seed(cfg.seed, index));
                tracing::info!(
                    run = index,
                    seed = run.seed,
                    end = run.end.as_str(),
                    attempts = run.attempts.len(),
                    violations = run.violations.len(),
                    "campaign run done"
                );
                done.lock().unwrap_or_else(|e| e.into_inner()).push(run);
            });
        }
    });
    let mut runs = done.into_inner().unwrap_or_else(|e| e.into_inner());
    runs.sort_by_key(|r| r.run);
    for run in runs {
        for f in &run.faults {
            *report.faults_drawn.entry(f.kind().to_string()).or_default() += 1;
        }
        *report
            .outcomes
            .entry(run.end.as_str().to_string())
            .or_default() += 1;
        for a in &run.attempts {
            let k = match &a.result {
                AttemptResult::Flashed => "flashed",
                AttemptResult::Refused { .. } => "refused",
                AttemptResult::Failed { .. } => "failed",
                AttemptResult::TimedOut => "timed_out",
                AttemptResult::Panicked { .. } => "panicked",
            };
            *report.attempt_results.entry(k.to_string()).or_default() += 1;
        }
        report.violations.extend(run.violations.iter().cloned());
        report.runs.push(run);
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

// ---------------------------------------------------------------------------------------------
// Drawing a run
// ---------------------------------------------------------------------------------------------

/// What a run is made of, drawn from its seed.
#[derive(Debug, Clone)]
struct Setup {
    storage: StorageProfile,
    unit: Profile,
    set: SetKind,
    backup: BackupKind,
    image_bytes: u64,
    /// Re-run on the same running unit after a failure (instead of a power-cycle) when a coin
    /// drawn per attempt is below this.
    keep_running: f64,
}

fn draw_setup(cfg: &CampaignConfig, index: u32, rng: &mut ChaCha8Rng) -> Option<Setup> {
    let storage = StorageProfile::by_name(PROFILES[index as usize % PROFILES.len()])?;
    let unit = Profile::by_name(MODEL)?.for_unit(rng.gen());
    let set = if rng.gen_bool(0.3) {
        SetKind::Factory
    } else {
        SetKind::Update
    };
    let backup = match (set, rng.gen_range(0..3)) {
        (SetKind::Update, _) | (_, 0) => BackupKind::None,
        (_, 1) => BackupKind::Unverified,
        _ => BackupKind::Verified,
    };
    let image_bytes = if cfg.image_bytes.is_empty() {
        cfg.image_bytes.start.max(4096)
    } else {
        rng.gen_range(cfg.image_bytes.clone())
    };
    Some(Setup {
        storage,
        unit,
        set,
        backup,
        image_bytes,
        keep_running: 0.4,
    })
}

/// One to three faults for a run whose first appearance moves about `link_bytes` and whose
/// sessions have about `commands` commands.
fn draw_faults(rng: &mut ChaCha8Rng, nand: bool, link_bytes: u64, commands: u64) -> Vec<Injected> {
    let n = rng.gen_range(1..=3);
    let mut out: Vec<Injected> = Vec::new();
    while out.len() < n {
        let f = match rng.gen_range(0..11) {
            0 | 1 => Injected::LinkDrop {
                at_byte: rng.gen_range(1..link_bytes.max(2)),
            },
            2 => Injected::DropInRaw {
                at_byte: rng.gen_range(1..link_bytes.max(2)),
            },
            3 => Injected::Nak {
                command: rng.gen_range(1..commands.max(2)),
            },
            4 => Injected::GarbledXml {
                command: rng.gen_range(1..commands.max(2)),
            },
            5 => Injected::Hang {
                command: rng.gen_range(2..commands.max(3)),
            },
            6 if nand => Injected::NandWriteFail {
                program: rng.gen_range(1..8),
            },
            6 => Injected::PayloadTooLarge,
            7 => Injected::BootLoop {
                window_ms: rng.gen_range(150..900),
                gap_ms: rng.gen_range(10..120),
                windows: rng.gen_range(1..=2),
            },
            8 => Injected::Slow {
                delay_ms: rng.gen_range(1..12),
                bytes_per_s: rng.gen_range(2u64..16) << 20,
            },
            9 => Injected::ConsumeHello,
            _ => Injected::DonePending,
        };
        // One of each kind per run.
        if !out.iter().any(|o| o.kind() == f.kind()) {
            out.push(f);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The unit
// ---------------------------------------------------------------------------------------------

/// A device-unique partition of the unit and the sha256 of its bytes before the run.
#[derive(Debug, Clone)]
struct Unique {
    region: Region,
    sha256: Option<String>,
}

/// The unit's storage as it left the factory: firmware and EFS ([`seed_factory`]) and known
/// bytes at the start of every other device-unique partition.
fn factory_storage(
    profile: &StorageProfile,
    unit: &Profile,
    seed: u64,
) -> Result<(Storage, Vec<Unique>), String> {
    let mut storage = Storage::new(profile);
    crate::sim::normal::seed_factory(&mut storage, unit)?;
    let kind = storage_kind(&storage);
    let ss = storage.sector_size() as usize;
    let mut unique = Vec::new();
    for r in storage.regions() {
        if r.source == "fixed" || r.num_sectors == 0 || guards::classify(&r.name, kind).is_none() {
            continue;
        }
        let first = read_region(&storage, &r, ss as u64).unwrap_or_default();
        let blank = first.iter().all(|b| *b == 0xFF) || first.iter().all(|b| *b == 0);
        if blank {
            let len = UNIQUE_BYTES.min((r.num_sectors as usize).saturating_mul(ss));
            let data = known_bytes(seed, &format!("{} {} {}", unit.name, r.lun, r.name), len);
            write_region(&mut storage, &r, &data)?;
        }
        unique.push(Unique {
            sha256: storage.physical_sha256(r.lun, r.start_sector, r.num_sectors),
            region: r,
        });
    }
    if unique.is_empty() {
        return Err(format!("{} has no device-unique partition", profile.name()));
    }
    Ok((storage, unique))
}

fn storage_kind(storage: &Storage) -> StorageKind {
    if storage.is_nand() {
        StorageKind::Nand
    } else {
        StorageKind::Emmc
    }
}

/// Deterministic bytes: SHA-256 in counter mode over the seed and a label.
fn known_bytes(seed: u64, label: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(label.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// One appearance of the unit: the device runner on its thread, the host end of its link.
struct Appearance {
    host: Option<PipeEnd>,
    stop: Arc<AtomicBool>,
    cutter: Cutter,
    done: mpsc::Receiver<(RunOutcome, Programmer)>,
    /// Set to end the boot-loop timer early.
    timer_off: Arc<AtomicBool>,
    /// Set when the boot-loop window closed.
    vanished: Arc<AtomicBool>,
    ended: Option<(RunOutcome, Programmer)>,
}

impl Appearance {
    /// Plug the unit in: its boot ROM sends HELLO on a fresh link. `window`: it vanishes
    /// after this long (a boot loop).
    fn start(
        mut programmer: Programmer,
        unit: &Profile,
        faults: Vec<Fault>,
        seed: u64,
        window: Option<Duration>,
    ) -> Appearance {
        let (mut dev, host) = pipe::pair(Framing::Stream);
        let cutter = host.cutter();
        let hook_cut = cutter.clone();
        let mut cfg = DeviceConfig::new(unit.clone())
            .with_faults(FaultPlan::new(faults, seed))
            .with_link_drop_hook(Box::new(move || hook_cut.cut()));
        cfg.reboot_delay = Duration::from_millis(20);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let end_cut = cutter.clone();
        let spawned = std::thread::Builder::new()
            .name("campaign-unit".into())
            .spawn(move || {
                let outcome = {
                    let mut link = StopLink::new(&mut dev, &flag);
                    device::run(&mut link, &mut cfg, &mut programmer, &flag)
                };
                // The unit is gone: the host sees the link go at once.
                drop(dev);
                end_cut.cut();
                let _ = tx.send((outcome, programmer));
            });
        let timer_off = Arc::new(AtomicBool::new(false));
        let vanished = Arc::new(AtomicBool::new(false));
        if spawned.is_err() {
            // No unit thread: the link is dead from the start; `finish` reports it.
            cutter.cut();
        }
        if let Some(w) = window {
            let (off, gone, stop, cut) = (
                Arc::clone(&timer_off),
                Arc::clone(&vanished),
                Arc::clone(&stop),
                cutter.clone(),
            );
            let _ = std::thread::Builder::new()
                .name("campaign-boot-loop".into())
                .spawn(move || {
                    let end = Instant::now() + w;
                    while !off.load(Ordering::SeqCst) {
                        let left = end.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            gone.store(true, Ordering::SeqCst);
                            stop.store(true, Ordering::SeqCst);
                            cut.cut();
                            return;
                        }
                        std::thread::sleep(left.min(Duration::from_millis(10)));
                    }
                });
        }
        Appearance {
            host: Some(host),
            stop,
            cutter,
            done,
            timer_off,
            vanished,
            ended: None,
        }
    }

    /// Whether the unit is still there (its runner has not ended).
    fn running(&mut self) -> bool {
        if self.ended.is_none() {
            match self.done.try_recv() {
                Ok(end) => self.ended = Some(end),
                Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => {}
            }
        }
        self.ended.is_none() && !self.cutter.is_cut()
    }

    /// Pull the plug and get the unit's programmer (its storage) back; `Err` when the unit's
    /// runner does not stop, or ended without handing it back (it panicked).
    fn finish(mut self) -> Result<(RunOutcome, Programmer), (Invariant, String)> {
        self.timer_off.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        self.cutter.cut();
        drop(self.host.take());
        if let Some(end) = self.ended.take() {
            return Ok(end);
        }
        self.done.recv_timeout(STOP_WAIT).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => (
                Invariant::Bounded,
                format!(
                    "the emulated unit did not stop within {} s of being unplugged",
                    STOP_WAIT.as_secs()
                ),
            ),
            mpsc::RecvTimeoutError::Disconnected => (
                Invariant::NoPanic,
                "the emulated unit's thread ended without handing back its storage (it panicked)"
                    .to_string(),
            ),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Packages
// ---------------------------------------------------------------------------------------------

/// Add a `_factory` set to a generated package (NAND: a copy of the update XML that also erases
/// EFS2 and programs cefs.mbn into it) or make its only set one (eMMC: rawprogram0.xml also
/// programs an EFS image into modemst1), as real factory packages do. Returns the `--set`
/// word to choose it and the regions it overwrites.
fn add_factory_set(
    pkg: &PackageSummary,
    storage: &Storage,
    seed: u64,
) -> Result<(Option<String>, Vec<Region>), String> {
    let ss = u64::from(storage.sector_size());
    let regions = storage.regions();
    let io = |e: std::io::Error| format!("writing the factory set: {e}");
    if let Some(ppb) = storage.pages_per_block() {
        let target = regions
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case("efs2"))
            .ok_or("the NAND layout has no EFS2")?;
        let raw = pkg
            .rawprogram
            .first()
            .ok_or("the package has no rawprogram")?;
        let xml = std::fs::read_to_string(raw).map_err(io)?;
        let last = target.start_sector + target.num_sectors - 1;
        let entry = |kind: &str, file: &str| {
            format!(
                "  <{kind} PAGES_PER_BLOCK=\"{ppb}\" SECTOR_SIZE_IN_BYTES=\"{ss}\"{file} label=\"{}\" last_sector=\"{last}\" num_partition_sectors=\"{}\" physical_partition_number=\"0\" start_sector=\"{}\"/>\n",
                target.name, target.num_sectors, target.start_sector
            )
        };
        let extra = entry("erase", "") + &entry("program", " filename=\"..\\cefs.mbn\"");
        let name = raw
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .replace("_update.xml", "_factory.xml");
        std::fs::write(
            raw.with_file_name(&name),
            xml.replace("</data>", &format!("{extra}</data>")),
        )
        .map_err(io)?;
        let image = known_bytes(seed, "factory EFS image", (48 * ss) as usize);
        std::fs::write(pkg.root.join("update/cefs.mbn"), image).map_err(io)?;
        let xml_rel = format!("update/firehose/{name}");
        rewrite_md5(pkg, &[xml_rel.as_str(), "update/cefs.mbn"])?;
        Ok((Some("factory".into()), vec![target.clone()]))
    } else {
        let target = regions
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case("modemst1"))
            .ok_or("the eMMC layout has no modemst1")?;
        let raw = pkg.root.join(format!("rawprogram{}.xml", target.lun));
        let xml = std::fs::read_to_string(&raw).map_err(io)?;
        let line = format!(
            "  <program SECTOR_SIZE_IN_BYTES=\"{ss}\" file_sector_offset=\"0\" filename=\"fs_factory.img\" label=\"{}\" num_partition_sectors=\"{}\" physical_partition_number=\"{}\" sparse=\"false\" start_sector=\"{}\"/>\n",
            target.name, target.num_sectors, target.lun, target.start_sector
        );
        std::fs::write(&raw, xml.replace("</data>", &format!("{line}</data>"))).map_err(io)?;
        let len = (64 << 10).min(target.num_sectors * ss) as usize;
        std::fs::write(
            pkg.root.join("fs_factory.img"),
            known_bytes(seed, "factory EFS image", len),
        )
        .map_err(io)?;
        rewrite_md5(pkg, &["fs_factory.img"])?;
        Ok((None, vec![target.clone()]))
    }
}

/// Write md5.txt again over the package's files as they are now plus `added`, so the package
/// stays intact for prepare's integrity check.
fn rewrite_md5(pkg: &PackageSummary, added: &[&str]) -> Result<(), String> {
    use md5::Md5;
    let mut files: Vec<String> = pkg.files.iter().map(|f| f.path.clone()).collect();
    files.extend(added.iter().map(|s| s.to_string()));
    let mut text = String::from("VERSION:1.0\r\nFILE:START\r\n");
    for rel in &files {
        let bytes = std::fs::read(pkg.root.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
        text.push_str(&format!(
            "FILE:\\{}:{}\r\n",
            rel.replace('/', "\\"),
            hex::encode_upper(Md5::digest(&bytes))
        ));
    }
    text.push_str("FILE:END\r\n");
    std::fs::write(pkg.root.join("md5.txt"), text).map_err(|e| format!("md5.txt: {e}"))
}

// ---------------------------------------------------------------------------------------------
// One attempt on the engine's thread
// ---------------------------------------------------------------------------------------------

struct AttemptOutput {
    result: AttemptResult,
    events: Vec<EngineEvent>,
    plan: Option<FlashPlan>,
    link: PipeEnd,
}

/// Timeouts scaled down like the emulator's timings, so a hung unit costs seconds, not minutes;
/// still far above what the emulator needs.
fn campaign_job(programmer: Vec<u8>) -> FlashJob {
    let two = Duration::from_secs(2);
    FlashJob {
        programmer: Some(programmer),
        reset: Some(PowerMode::Reset),
        sahara: SaharaConfig {
            hello_wait: Duration::from_millis(300),
            handshake_wait: Duration::from_secs(3),
            ..SaharaConfig::default()
        },
        firehose: FirehoseOptions {
            timeouts: Timeouts {
                welcome_first: Duration::from_secs(1),
                welcome_quiet: Duration::from_millis(250),
                nop: two,
                configure: two,
                short_command: two,
                raw_setup: two,
                data_base: two,
                erase_base: two,
                read_idle: two,
                power_ack: Duration::from_secs(1),
                power_drain: Duration::from_millis(100),
                // The emulator erases at once; a unit that does not answer an erase is found
                // out in seconds, not in the minutes a real NAND would be given.
                min_erase_bytes_per_s: 64 << 20,
                ..Timeouts::default()
            },
            ..FirehoseOptions::default()
        },
    }
}

/// prepare + flash, as `qrescue flash PACKAGE` does.
fn attempt_body(
    req: PrepareRequest,
    ledger: MemoryLedger,
    unit: String,
    mut link: PipeEnd,
    cancel: Arc<AtomicBool>,
) -> AttemptOutput {
    let mut events = Vec::new();
    let failed = |e: &crate::Error| AttemptResult::Failed {
        kind: format!("{:?}", e.kind),
        what: e.what.clone(),
    };
    let p = match prepare(&req, &ledger, Some(&unit)) {
        Ok(p) => p,
        Err(e) => {
            return AttemptOutput {
                result: failed(&e),
                events,
                plan: None,
                link,
            }
        }
    };
    let verdict = p.verdict();
    let plan = p.plan.clone();
    if !verdict.flashable {
        return AttemptOutput {
            result: AttemptResult::Refused {
                reasons: verdict.reasons.iter().map(|r| r.what.clone()).collect(),
            },
            events,
            plan,
            link,
        };
    }
    let programmer = match p.reverify().and_then(|_| p.programmer_image()) {
        Ok(b) => b,
        Err(e) => {
            return AttemptOutput {
                result: failed(&e),
                events,
                plan,
                link,
            }
        }
    };
    let Some(flash_plan) = plan.as_ref() else {
        return AttemptOutput {
            result: AttemptResult::Failed {
                kind: "Failure".into(),
                what: "a flashable verdict without a plan".into(),
            },
            events,
            plan,
            link,
        };
    };
    let job = campaign_job(programmer);
    let result = flash::run(
        &mut link,
        flash_plan,
        &job,
        &mut |e| events.push(e),
        &cancel,
    );
    AttemptOutput {
        result: match result {
            Ok(_) => AttemptResult::Flashed,
            Err(e) => failed(&e),
        },
        events,
        plan,
        link,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Run one attempt under the watchdog. `None` for the link when it could not be taken back
/// (the engine thread timed out or panicked).
fn watched_attempt(
    req: &PrepareRequest,
    ledger: &MemoryLedger,
    unit: &str,
    link: PipeEnd,
    limit: Duration,
    pull_plug: &Cutter,
) -> (AttemptOutput, Duration) {
    let started = Instant::now();
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (req2, ledger2, unit2, cancel2) = (
        req.clone(),
        ledger.clone(),
        unit.to_string(),
        Arc::clone(&cancel),
    );
    let spare_link = || pipe::pair(Framing::Stream).0;
    let spawned = std::thread::Builder::new()
        .name("campaign-engine".into())
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                attempt_body(req2, ledger2, unit2, link, cancel2)
            }));
            let _ = tx.send(out);
        });
    if let Err(e) = spawned {
        return (
            AttemptOutput {
                result: AttemptResult::Failed {
                    kind: "Harness".into(),
                    what: format!("cannot start the engine thread: {e}"),
                },
                events: Vec::new(),
                plan: None,
                link: spare_link(),
            },
            started.elapsed(),
        );
    }
    let out = match rx.recv_timeout(limit) {
        Ok(Ok(out)) => out,
        Ok(Err(panic)) => AttemptOutput {
            result: AttemptResult::Panicked {
                message: panic_message(&*panic),
            },
            events: Vec::new(),
            plan: None,
            link: spare_link(),
        },
        Err(_) => {
            // Past the bound: ask the engine to stop and pull the cable, then give it a little
            // time to notice; a thread that still does not end is left behind.
            cancel.store(true, Ordering::SeqCst);
            pull_plug.cut();
            let _ = rx.recv_timeout(ABANDON_WAIT);
            AttemptOutput {
                result: AttemptResult::TimedOut,
                events: Vec::new(),
                plan: None,
                link: spare_link(),
            }
        }
    };
    (out, started.elapsed())
}

/// Names, LUNs and start sectors of the program steps the engine finished, from its events.
fn completed_programs(events: &[EngineEvent]) -> Vec<(String, u32, Option<String>)> {
    let Some(EngineEvent::Plan { steps, .. }) = events.first() else {
        return Vec::new();
    };
    events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::StepFinished { index, .. } => steps.get(*index),
            _ => None,
        })
        .filter(|s| s.kind == StepKind::Program)
        .map(|s| (s.name.clone(), s.lun.unwrap_or(0), s.start_sector.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// What one program step should have left on the storage.
struct Expected {
    name: String,
    lun: u32,
    start: u64,
    sectors: u64,
    last_sector: Option<u64>,
    data: Vec<u8>,
}

/// Compare every partition `plan` programs with what `storage` holds: the image bytes as the
/// engine streams them (host patches applied), zero padded to whole sectors, with the plan's
/// DISK patches applied in order. Returns the number of partitions compared, or what differs.
pub fn verify_storage(plan: &FlashPlan, storage: &Storage) -> Result<usize, Vec<String>> {
    let plan = plan
        .resolve(&|lun| storage.expr_env(lun))
        .map_err(|e| vec![format!("the plan does not resolve for this unit: {e}")])?;
    let mut model: Vec<Expected> = Vec::new();
    let mut problems = Vec::new();
    for step in &plan.steps {
        match step {
            FlashStep::Program { name, cmd, source } => {
                let Some(env) = storage.expr_env(cmd.physical_partition) else {
                    problems.push(format!(
                        "{name}: LUN {} does not exist",
                        cmd.physical_partition
                    ));
                    continue;
                };
                let start = match expr::eval(&cmd.start_sector, &env) {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push(format!("{name}: start sector: {e}"));
                        continue;
                    }
                };
                let mut data = match plan.source_bytes(source, VERIFY_IMAGE_LIMIT) {
                    Ok(d) => d,
                    Err(e) => {
                        problems.push(format!("{name}: reading the image: {e}"));
                        continue;
                    }
                };
                data.resize((cmd.num_sectors * u64::from(cmd.sector_size)) as usize, 0);
                model.push(Expected {
                    name: name.clone(),
                    lun: cmd.physical_partition,
                    start,
                    sectors: cmd.num_sectors,
                    last_sector: cmd.last_sector,
                    data,
                });
            }
            FlashStep::Patch { name, cmd } if cmd.filename == "DISK" => {
                if let Err(e) = apply_patch(&mut model, cmd, storage) {
                    problems.push(format!("{name}: {e}"));
                }
            }
            FlashStep::Erase { cmd, .. } => {
                // A later erase over a programmed range leaves nothing to compare there.
                let Some(env) = storage.expr_env(cmd.physical_partition) else {
                    continue;
                };
                let start = cmd
                    .start_sector
                    .as_deref()
                    .map_or(Ok(0), |s| expr::eval(s, &env))
                    .unwrap_or(0);
                let end = cmd
                    .num_sectors
                    .map_or(u64::MAX, |n| start.saturating_add(n));
                let lun = cmd.physical_partition;
                model.retain(|m| !(m.lun == lun && m.start < end && m.start + m.sectors > start));
            }
            _ => {}
        }
    }
    for m in &model {
        match storage.sha256_of(m.lun, m.start, m.sectors, m.last_sector) {
            Ok(got) if got[..] == Sha256::digest(&m.data)[..] => {}
            Ok(got) => problems.push(format!(
                "{} (LUN {} sector {}): the storage holds sha256 {}…, the package image {}…",
                m.name,
                m.lun,
                m.start,
                &hex::encode(got)[..12],
                &hex::encode(Sha256::digest(&m.data))[..12]
            )),
            Err(e) => problems.push(format!("{}: reading it back: {e}", m.name)),
        }
    }
    if problems.is_empty() {
        Ok(model.len())
    } else {
        Err(problems)
    }
}

/// Apply one DISK patch to the expected contents.
fn apply_patch(
    model: &mut [Expected],
    cmd: &crate::protocol::firehose::commands::Patch,
    storage: &Storage,
) -> Result<(), String> {
    let env = storage
        .expr_env(cmd.physical_partition)
        .ok_or("no such LUN")?;
    let ss = u64::from(cmd.sector_size);
    let start = expr::eval(&cmd.start_sector, &env).map_err(|e| e.to_string())?;
    let at = start * ss + cmd.byte_offset;
    let value = match expr::eval_patch_value(&cmd.value, &env).map_err(|e| e.to_string())? {
        PatchValue::Number(n) => n,
        PatchValue::Crc32 {
            start_sector,
            len_bytes,
        } => {
            let (i, off) = locate(model, cmd.physical_partition, start_sector * ss, len_bytes)
                .ok_or("its CRC32 covers sectors the plan does not program")?;
            u64::from(crc32fast::hash(
                &model[i].data[off..off + len_bytes as usize],
            ))
        }
    };
    let size = cmd.size_in_bytes as usize;
    let (i, off) = locate(model, cmd.physical_partition, at, size as u64)
        .ok_or("it lands outside the sectors the plan programs")?;
    model[i].data[off..off + size].copy_from_slice(&value.to_le_bytes()[..size.min(8)]);
    Ok(())
}

/// The latest program holding bytes `[at, at + len)` of `lun`, and the offset in it.
fn locate(model: &[Expected], lun: u32, at: u64, len: u64) -> Option<(usize, usize)> {
    model.iter().enumerate().rev().find_map(|(i, m)| {
        let ss = m.data.len() as u64 / m.sectors.max(1);
        let base = m.start * ss;
        let end = base + m.data.len() as u64;
        (m.lun == lun && at >= base && at + len <= end).then(|| (i, (at - base) as usize))
    })
}

// ---------------------------------------------------------------------------------------------
// The invariants on device-unique data and resume
// ---------------------------------------------------------------------------------------------

/// Device-unique partitions that were written (per the unit's write log) or changed (their
/// sha256 now differs from before the run) without a verified backup of exactly them, for
/// `serial`, on the ledger.
fn unique_data_problems(
    unique: &[Unique],
    log: &[StorageWrite],
    storage: &Storage,
    ledger: &dyn BackupLedger,
    serial: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for u in unique {
        let r = &u.region;
        let written = log.iter().any(|w| w.touches(r));
        let changed = storage.physical_sha256(r.lun, r.start_sector, r.num_sectors) != u.sha256;
        if !(written || changed) {
            continue;
        }
        let region = guards::Region {
            lun: r.lun,
            start_sector: r.start_sector,
            num_sectors: r.num_sectors,
            sector_size: storage.sector_size(),
        };
        if ledger.verified_backup(serial, &region).is_none() {
            out.push(format!(
                "{} (LUN {} sectors {}..{}) was {} without a verified backup of it on the ledger",
                r.name,
                r.lun,
                r.start_sector,
                r.start_sector + r.num_sectors,
                if changed { "changed" } else { "written" },
            ));
        }
    }
    out
}

/// Partitions (step names) whose program step an attempt finished and a later attempt
/// programmed again (same LUN and start sector). `completed[k]` and `per_attempt[k]` belong to
/// attempt `k + 1`.
fn rewritten_after_completion(
    completed: &[Vec<(String, u32, Option<String>)>],
    per_attempt: &[&[StorageWrite]],
    storage: &Storage,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (k, done) in completed.iter().enumerate() {
        for (name, lun, start) in done {
            let Some(start) = start
                .as_deref()
                .and_then(|s| expr::eval(s, &storage.expr_env(*lun)?).ok())
            else {
                continue;
            };
            let again = per_attempt.iter().skip(k + 1).any(|s| {
                s.iter().any(|w| {
                    w.kind == WriteKind::Program && w.lun == *lun && w.start_sector == start
                })
            });
            if again && !out.contains(name) {
                out.push(name.clone());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

/// Run `index` of a campaign with its own `seed`. Never panics on a bad run.
pub fn run_one(cfg: &CampaignConfig, index: u32, seed: u64) -> RunReport {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = RunReport {
        run: index,
        seed,
        storage: PROFILES[index as usize % PROFILES.len()].to_string(),
        unit_serial: String::new(),
        set: SetKind::Update,
        backup: BackupKind::None,
        image_bytes: 0,
        faults: Vec::new(),
        attempts: Vec::new(),
        end: RunEnd::HarnessError,
        partitions: Vec::new(),
        rewritten_after_completion: Vec::new(),
        verified_partitions: 0,
        violations: Vec::new(),
        elapsed_ms: 0,
    };
    if let Err(e) = run_inner(cfg, &mut rng, &mut report) {
        report.end = RunEnd::HarnessError;
        violate(&mut report, Invariant::Harness, e);
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

fn violate(report: &mut RunReport, invariant: Invariant, detail: impl Into<String>) {
    report.violations.push(Violation {
        run: report.run,
        seed: report.seed,
        storage: report.storage.clone(),
        faults: report.faults.clone(),
        invariant,
        detail: detail.into(),
    });
}

/// The folder a run's package goes to (removed with the guard).
fn package_dir(cfg: &CampaignConfig, index: u32) -> Result<tempfile::TempDir, String> {
    let made = match &cfg.workdir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            tempfile::Builder::new()
                .prefix(&format!("run{index}-"))
                .tempdir_in(dir)
        }
        None => tempfile::Builder::new()
            .prefix(&format!("qrescue-campaign-{index}-"))
            .tempdir(),
    };
    made.map_err(|e| format!("cannot make a folder for the package: {e}"))
}

fn run_inner(
    cfg: &CampaignConfig,
    rng: &mut ChaCha8Rng,
    report: &mut RunReport,
) -> Result<(), String> {
    let setup = draw_setup(cfg, report.run, rng).ok_or("unknown profile")?;
    report.set = setup.set;
    report.backup = setup.backup;
    report.image_bytes = setup.image_bytes;
    let unit = setup.unit.clone();
    let serial = format!("{:08X}", unit.identity.serial);
    report.unit_serial = serial.clone();

    // The unit as it left the factory.
    let (storage, unique) = factory_storage(&setup.storage, &unit, report.seed)?;
    let factory_regions = storage.regions();

    // The package.
    let dir = package_dir(cfg, report.run)?;
    let root = dir.path().join("pkg");
    let pkg = package_gen::emit(
        &root,
        &unit,
        &setup.storage,
        PackageOptions {
            image_bytes: setup.image_bytes,
            seed: report.seed,
        },
    )
    .map_err(|e| format!("generating the package: {e}"))?;
    let (set_word, overwrites) = match setup.set {
        SetKind::Factory => add_factory_set(&pkg, &storage, report.seed)?,
        SetKind::Update => (None, Vec::new()),
    };

    // The ledger: backups of what a factory set overwrites.
    let mut ledger = MemoryLedger::new();
    if setup.backup != BackupKind::None {
        for r in &overwrites {
            let sha = storage
                .sha256_of(r.lun, r.start_sector, r.num_sectors, None)
                .map(hex::encode)
                .map_err(|e| format!("backing up {}: {e}", r.name))?;
            ledger.record(
                &serial,
                &r.name,
                guards::Region {
                    lun: r.lun,
                    start_sector: r.start_sector,
                    num_sectors: r.num_sectors,
                    sector_size: storage.sector_size(),
                },
                &sha,
                setup.backup == BackupKind::Verified,
            );
        }
    }

    // The faults.
    let programmer_len = unit.programmer(report.seed).len() as u64;
    let images = pkg.files.iter().filter(|f| f.partition.is_some()).count() as u64;
    report.faults = draw_faults(
        rng,
        storage.is_nand(),
        programmer_len + pkg.image_bytes + 64 * 1024,
        2 * images + 4,
    );
    let first_faults: Vec<Fault> = report
        .faults
        .iter()
        .filter_map(Injected::first_appearance)
        .collect();
    let programmer_faults: Vec<Fault> = report
        .faults
        .iter()
        .filter_map(Injected::programmer)
        .collect();
    let (delay_ms, throughput) = report
        .faults
        .iter()
        .find_map(|f| match f {
            Injected::Slow {
                delay_ms,
                bytes_per_s,
            } => Some((*delay_ms, Some(*bytes_per_s))),
            _ => None,
        })
        .unwrap_or((0, None));
    let (window, gap, windows) = report
        .faults
        .iter()
        .find_map(|f| match f {
            Injected::BootLoop {
                window_ms,
                gap_ms,
                windows,
            } => Some((
                Some(Duration::from_millis(*window_ms)),
                Duration::from_millis(*gap_ms),
                *windows,
            )),
            _ => None,
        })
        .unwrap_or((None, Duration::ZERO, 0));
    let every_appearance: Vec<Fault> = if delay_ms > 0 {
        vec![Fault::Delay(delay_ms)]
    } else {
        Vec::new()
    };

    let programmer = Programmer::with_storage(
        storage,
        ProgrammerOptions {
            throughput_limit: throughput,
            faults: FaultPlan::new(programmer_faults, report.seed),
            raw_idle_timeout: Duration::from_secs(3),
            ..ProgrammerOptions::default()
        },
    );
    let write_seq = programmer.write_seq();
    let req = PrepareRequest {
        package: root.clone(),
        set: set_word,
        ..PrepareRequest::default()
    };

    // Attempts: a person running the flash again until it works.
    let max_attempts = cfg.max_attempts.max(1) + 2 * report.faults.len() as u32 + windows;
    let faults_of = |n: u32| -> Vec<Fault> {
        let mut f = every_appearance.clone();
        if n == 0 {
            f.extend(first_faults.iter().cloned());
        }
        f
    };
    let window_of = |n: u32| if n < windows { window } else { None };
    let mut app = Appearance::start(programmer, &unit, faults_of(0), report.seed, window_of(0));
    let mut appearances = 1u32;
    let mut fresh = true;
    let mut mark = 0usize;
    // Where each attempt's writes are in the unit's write log.
    let mut attempt_writes: Vec<std::ops::Range<usize>> = Vec::new();
    let mut completed: Vec<Vec<(String, u32, Option<String>)>> = Vec::new();
    let mut last_plan: Option<FlashPlan> = None;
    let mut outcome = RunEnd::NotRecovered;
    let prog = loop {
        let attempt = report.attempts.len() as u32 + 1;
        let link = app.host.take().ok_or("the unit's link was already taken")?;
        let (out, elapsed) =
            watched_attempt(&req, &ledger, &serial, link, cfg.attempt_limit, &app.cutter);
        app.host = Some(out.link);
        if out.plan.is_some() {
            last_plan = out.plan;
        }
        let result = out.result;
        let done = completed_programs(&out.events);
        report.attempts.push(AttemptReport {
            attempt,
            fresh_appearance: fresh,
            result: result.clone(),
            elapsed_ms: elapsed.as_millis() as u64,
            completed: done.iter().map(|d| d.0.clone()).collect(),
            writes: 0,
        });
        completed.push(done);
        tracing::debug!(run = report.run, attempt, ?result, "campaign attempt");

        let end_now = match &result {
            AttemptResult::Flashed => Some(RunEnd::Verified),
            AttemptResult::Refused { .. } => Some(RunEnd::Refused),
            AttemptResult::TimedOut => {
                violate(
                    report,
                    Invariant::Bounded,
                    format!(
                        "attempt {attempt} did not end within {} s",
                        cfg.attempt_limit.as_secs()
                    ),
                );
                Some(RunEnd::Hung)
            }
            AttemptResult::Panicked { message } => {
                violate(
                    report,
                    Invariant::NoPanic,
                    format!("attempt {attempt} panicked: {message}"),
                );
                Some(RunEnd::HarnessError)
            }
            AttemptResult::Failed { .. } => None,
        };
        let last = attempt >= max_attempts;
        // Run again on the unit as it is (still in Firehose), or unplug it. The coin is drawn
        // every time, so the draws do not depend on timing.
        let coin = rng.gen_bool(setup.keep_running);
        let keep = coin
            && end_now.is_none()
            && !last
            && fresh
            && !app.vanished.load(Ordering::SeqCst)
            && app.running();
        if keep {
            let now = write_seq.load(Ordering::SeqCst);
            attempt_writes.push(mark..now);
            mark = now;
            fresh = false;
            continue;
        }
        let vanished = app.vanished.load(Ordering::SeqCst);
        let prog = match app.finish() {
            Ok((_, prog)) => prog,
            Err((invariant, e)) => {
                violate(report, invariant, e);
                report.end = if invariant == Invariant::Bounded {
                    RunEnd::Hung
                } else {
                    RunEnd::HarnessError
                };
                return Ok(());
            }
        };
        let now = write_seq.load(Ordering::SeqCst);
        attempt_writes.push(mark..now);
        mark = now;
        if let Some(end) = end_now {
            outcome = end;
            break prog;
        }
        if last {
            break prog;
        }
        if vanished {
            std::thread::sleep(gap);
        }
        app = Appearance::start(
            prog,
            &unit,
            faults_of(appearances),
            report.seed,
            window_of(appearances),
        );
        appearances += 1;
        fresh = true;
    };

    // Writes per attempt and per partition.
    let log = prog.writes();
    let mut per_attempt: Vec<&[StorageWrite]> = Vec::new();
    for (i, r) in attempt_writes.iter().enumerate() {
        let slice = log.get(r.clone()).unwrap_or(&[]);
        if let Some(a) = report.attempts.get_mut(i) {
            a.writes = slice.len() as u32;
        }
        per_attempt.push(slice);
    }
    let kind = storage_kind(prog.storage());
    let overall = writes_per_region(log, &factory_regions);
    for (i, total) in overall.iter().enumerate() {
        if total.programs + total.erases + total.patches == 0 {
            continue;
        }
        let region = &factory_regions[i];
        let each = |k: WriteKind| -> Vec<u32> {
            per_attempt
                .iter()
                .map(|s| {
                    s.iter()
                        .filter(|w| w.kind == k && w.touches(region))
                        .count() as u32
                })
                .collect()
        };
        report.partitions.push(PartitionWrites {
            lun: region.lun,
            name: region.name.clone(),
            programs: each(WriteKind::Program),
            erases: each(WriteKind::Erase),
            bytes: total.bytes,
            device_unique: guards::classify(&region.name, kind).is_some(),
        });
    }

    // (ii) Device-unique data.
    for problem in unique_data_problems(&unique, log, prog.storage(), &ledger, &serial) {
        violate(
            report,
            Invariant::DeviceUniqueData,
            format!("{problem} ({:?} backup)", setup.backup),
        );
    }

    // (v) The verdict expected from the set and the ledger.
    let must_refuse = setup.set == SetKind::Factory && setup.backup != BackupKind::Verified;
    match (outcome, must_refuse) {
        (RunEnd::Refused, false) => {
            let reasons = report
                .attempts
                .last()
                .map(|a| format!("{:?}", a.result))
                .unwrap_or_default();
            violate(
                report,
                Invariant::ExpectedVerdict,
                format!(
                    "a {:?} set with a {:?} backup was refused: {reasons}",
                    setup.set, setup.backup
                ),
            );
        }
        (RunEnd::Refused, true) if !log.is_empty() || prog.report().sessions > 0 => violate(
            report,
            Invariant::ExpectedVerdict,
            "the package was refused, but the unit was sent commands",
        ),
        (RunEnd::Refused, true) => {}
        (_, true) => violate(
            report,
            Invariant::ExpectedVerdict,
            format!(
                "a factory set with a {:?} backup was not refused before the flash",
                setup.backup
            ),
        ),
        _ => {}
    }

    // (iii) A reported success holds the package; (iv) failures recover.
    match outcome {
        RunEnd::Verified => match last_plan.as_ref() {
            Some(plan) => match verify_storage(plan, prog.storage()) {
                Ok(n) => report.verified_partitions = n,
                Err(problems) => {
                    outcome = RunEnd::NotRecovered;
                    violate(
                        report,
                        Invariant::VerifiedSuccess,
                        format!(
                            "the engine reported success on attempt {}, but: {}",
                            report.attempts.len(),
                            problems.join("; ")
                        ),
                    );
                }
            },
            None => violate(
                report,
                Invariant::Harness,
                "the engine reported success without a plan",
            ),
        },
        RunEnd::NotRecovered => {
            let last = report
                .attempts
                .last()
                .map(|a| format!("{:?}", a.result))
                .unwrap_or_default();
            violate(
                report,
                Invariant::Recoverable,
                format!(
                    "no verified success in {} attempts; the last: {last}",
                    report.attempts.len()
                ),
            );
        }
        _ => {}
    }

    // Resume: partitions completed by an attempt and programmed again by a later one.
    let rewritten = rewritten_after_completion(&completed, &per_attempt, prog.storage());
    if cfg.expect_resume && !rewritten.is_empty() {
        violate(
            report,
            Invariant::Resume,
            format!(
                "attempts after a failure programmed again what earlier ones had completed: {}",
                rewritten.join(", ")
            ),
        );
    }
    report.rewritten_after_completion = rewritten;
    report.end = outcome;
    drop(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(seed: u64, index: u32) -> (u32, SetKind, BackupKind, u64, Vec<Injected>) {
        let cfg = CampaignConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let s = draw_setup(&cfg, index, &mut rng).unwrap();
        let nand = s.storage.name().starts_with("nand");
        let f = draw_faults(&mut rng, nand, 1 << 20, 30);
        (s.unit.identity.serial, s.set, s.backup, s.image_bytes, f)
    }

    #[test]
    fn seeds_reproduce_the_draws_and_faults_stay_in_range() {
        assert_eq!(draw(5, 0), draw(5, 0));
        assert_ne!(run_seed(1, 0), run_seed(1, 1));
        assert_ne!(run_seed(1, 0), run_seed(2, 0));
        let cfg = CampaignConfig::default();
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..300 {
            for index in [0, 1] {
                let (_, set, backup, bytes, faults) = draw(run_seed(9, seed), index);
                assert!(cfg.image_bytes.contains(&bytes));
                assert!(set == SetKind::Factory || backup == BackupKind::None);
                assert!((1..=3).contains(&faults.len()), "{faults:?}");
                for (i, f) in faults.iter().enumerate() {
                    assert!(
                        faults[..i].iter().all(|g| g.kind() != f.kind()),
                        "{faults:?}"
                    );
                    kinds.insert(f.kind());
                    match f {
                        Injected::LinkDrop { at_byte } | Injected::DropInRaw { at_byte } => {
                            assert!((1..1 << 20).contains(at_byte))
                        }
                        Injected::Nak { command } | Injected::GarbledXml { command } => {
                            assert!((1..30).contains(command))
                        }
                        Injected::Hang { command } => assert!((2..30).contains(command)),
                        Injected::NandWriteFail { .. } => assert_eq!(index, 0, "NAND only"),
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(kinds.len(), 11, "every fault kind is drawn: {kinds:?}");
    }

    #[test]
    fn injected_faults_print_as_the_emulator_fault_specs() {
        let cases = [
            (Injected::LinkDrop { at_byte: 4096 }, "drop-after:4096"),
            (Injected::DropInRaw { at_byte: 77 }, "drop-in-raw:77"),
            (Injected::Nak { command: 3 }, "nak:3"),
            (Injected::GarbledXml { command: 4 }, "garbled-xml:4"),
            (Injected::Hang { command: 5 }, "hang:5"),
            (Injected::NandWriteFail { program: 2 }, "nand-write-fail:2"),
            (Injected::PayloadTooLarge, "payload-too-large"),
            (Injected::ConsumeHello, "consume-hello"),
            (Injected::DonePending, "done-pending"),
        ];
        for (f, spec) in cases {
            assert_eq!(f.to_string(), spec);
            let parsed: Fault = spec.parse().unwrap();
            assert_eq!(
                f.first_appearance().or_else(|| f.programmer()),
                Some(parsed)
            );
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<Injected>(&json).unwrap(), f);
        }
        let looped = Injected::BootLoop {
            window_ms: 300,
            gap_ms: 50,
            windows: 2,
        };
        assert_eq!(looped.to_string(), "boot-loop:2x300ms/gap 50ms");
        assert!(looped.first_appearance().is_none() && looped.programmer().is_none());
    }

    #[test]
    fn writing_or_changing_device_unique_data_needs_a_verified_backup_of_it() {
        let unit = Profile::by_name(MODEL).unwrap().for_unit(9);
        let profile = StorageProfile::by_name("nand-ec25e").unwrap();
        let (mut storage, unique) = factory_storage(&profile, &unit, 9).unwrap();
        let names: Vec<&str> = unique.iter().map(|u| u.region.name.as_str()).collect();
        for n in ["EFS2", "SYS_REV", "RAWDATA"] {
            assert!(
                names.iter().any(|m| m.eq_ignore_ascii_case(n)),
                "{n} in {names:?}"
            );
        }
        let efs = unique
            .iter()
            .find(|u| u.region.name.eq_ignore_ascii_case("efs2"))
            .unwrap()
            .region
            .clone();
        let serial = "0000ABCD";
        let empty = MemoryLedger::new();
        assert!(unique_data_problems(&unique, &[], &storage, &empty, serial).is_empty());
        let erase = StorageWrite {
            session: 1,
            kind: WriteKind::Erase,
            lun: 0,
            start_sector: efs.start_sector,
            num_sectors: 64,
            bytes: 0,
        };
        let p = unique_data_problems(&unique, &[erase], &storage, &empty, serial);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains(&efs.name) && p[0].contains("written"),
            "{p:?}"
        );
        // Changed without a logged write (the check does not rely on the log alone).
        write_region(&mut storage, &efs, b"not this unit's EFS").unwrap();
        let p = unique_data_problems(&unique, &[], &storage, &empty, serial);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("changed"), "{p:?}");
        // Only a verified backup of exactly that region, of this unit, counts.
        let region = guards::Region {
            lun: efs.lun,
            start_sector: efs.start_sector,
            num_sectors: efs.num_sectors,
            sector_size: storage.sector_size(),
        };
        let sha = "ab".repeat(32);
        let mut ledger = MemoryLedger::new();
        ledger.record(serial, &efs.name, region.clone(), &sha, false);
        ledger.record("0000FFFF", &efs.name, region.clone(), &sha, true);
        let smaller = guards::Region {
            num_sectors: efs.num_sectors - 64,
            ..region.clone()
        };
        ledger.record(serial, &efs.name, smaller, &sha, true);
        assert_eq!(
            unique_data_problems(&unique, &[], &storage, &ledger, serial).len(),
            1
        );
        ledger.record(serial, &efs.name, region, &sha, true);
        assert!(unique_data_problems(&unique, &[], &storage, &ledger, serial).is_empty());
    }

    #[test]
    fn rewritten_partitions_are_those_an_earlier_attempt_completed() {
        let storage = Storage::new(&StorageProfile::by_name("emmc-msm8916").unwrap());
        let n = storage.num_sectors(0).unwrap();
        let program = |start: u64| StorageWrite {
            session: 1,
            kind: WriteKind::Program,
            lun: 0,
            start_sector: start,
            num_sectors: 8,
            bytes: 4096,
        };
        let completed = vec![
            vec![
                ("modem".to_string(), 0, Some("1000".to_string())),
                (
                    "BackupGPT".to_string(),
                    0,
                    Some("NUM_DISK_SECTORS-33.".to_string()),
                ),
            ],
            vec![("boot".to_string(), 0, Some("5000".to_string()))],
        ];
        let first = [program(1000), program(n - 33)];
        let later = [program(5000)];
        assert!(rewritten_after_completion(&completed, &[&first, &later], &storage).is_empty());
        let again = [program(5000), program(1000), program(n - 33)];
        assert_eq!(
            rewritten_after_completion(&completed, &[&first, &again], &storage),
            ["modem", "BackupGPT"]
        );
        // An erase of a completed partition is not a rewrite of it.
        let erase = [StorageWrite {
            kind: WriteKind::Erase,
            ..program(1000)
        }];
        assert!(rewritten_after_completion(&completed, &[&first, &erase], &storage).is_empty());
    }

    /// The engine flashes a generated package with no fault; the verification accepts the
    /// result and names the partition once one of them no longer holds its image.
    #[test]
    fn a_clean_flash_verifies_and_a_changed_partition_does_not() {
        for (i, name) in PROFILES.iter().enumerate() {
            let seed = 40 + i as u64;
            let unit = Profile::by_name(MODEL).unwrap().for_unit(seed);
            let profile = StorageProfile::by_name(name).unwrap();
            let (storage, _) = factory_storage(&profile, &unit, seed).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let pkg = package_gen::emit(
                &dir.path().join("pkg"),
                &unit,
                &profile,
                PackageOptions {
                    image_bytes: 256 << 10,
                    seed,
                },
            )
            .unwrap();
            let programmer = Programmer::with_storage(storage, ProgrammerOptions::default());
            let mut app = Appearance::start(programmer, &unit, Vec::new(), seed, None);
            let req = PrepareRequest {
                package: pkg.root.clone(),
                ..PrepareRequest::default()
            };
            let link = app.host.take().unwrap();
            let limit = Duration::from_secs(60);
            let (out, _) =
                watched_attempt(&req, &MemoryLedger::new(), "1", link, limit, &app.cutter);
            assert_eq!(out.result, AttemptResult::Flashed, "{name}");
            app.host = Some(out.link);
            let (_, mut prog) = app.finish().unwrap();
            let plan = out.plan.unwrap();
            let n = verify_storage(&plan, prog.storage()).unwrap();
            let programs = plan
                .steps
                .iter()
                .filter(|s| matches!(s, FlashStep::Program { .. }))
                .count();
            assert_eq!(n, programs, "{name}");
            let counts = writes_per_region(prog.writes(), &prog.storage().regions());
            let modem = counts.iter().find(|c| c.name == "modem").unwrap();
            assert_eq!(modem.programs, 1, "{name}: {modem:?}");
            // Another image in the modem partition.
            let region = prog
                .storage()
                .regions()
                .into_iter()
                .find(|r| r.name == "modem")
                .unwrap();
            write_region(prog.storage_mut(), &region, b"another image").unwrap();
            let problems = verify_storage(&plan, prog.storage()).unwrap_err();
            assert_eq!(problems.len(), 1, "{name}: {problems:?}");
            assert!(problems[0].starts_with("modem"), "{name}: {problems:?}");
        }
    }
}
