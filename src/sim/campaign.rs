//! The fault campaign: a seeded loop of whole flashes against the emulated modem, each with
//! random faults, through the real resumable engine, and the invariants every run must keep.
//!
//! Run `i` of a campaign with seed `S` draws everything from its own seed ([`run_seed`]): a
//! fresh emulated unit (NAND and eMMC profiles alternate) whose storage left the factory with
//! firmware, its EFS and known bytes in every other partition that holds device-unique data
//! ([`crate::engine::guards::DEVICE_UNIQUE`]); a generated package ([`package_gen`]), an update
//! set or, sometimes, a `_factory` set that also writes the EFS; a backup ledger with no, an
//! unverified or a verified backup of what a factory set overwrites; and one to three
//! [`Injected`] faults. Then it runs the real engine as a person would: `prepare` (integrity,
//! plan, the device-unique-data guard with the ledger), then
//! [`crate::engine::resume::flash_resumable`] with a journal store of the run's own. Its
//! reconnect brings the same unit back after every drop (same Sahara serial, storage kept, a
//! fresh in-process link; a boot-looping unit after its window and gap, and with
//! [`crate::engine::resume::Link::window`] set so the engine pauses at safe points). A flash
//! that fails anyway (a NAK, broken XML, a hang, a killed process) is run again — a new
//! `flash_resumable` call with the same store, as a new `qrescue flash` would be — on the unit
//! power-cycled or, sometimes, still running its programmer, until one succeeds or
//! [`CampaignConfig::max_attempts`] is used up.
//!
//! Terms: a *flash* ([`AttemptReport`]) is one `qrescue flash` process; a *connection*
//! ([`ConnectionReport`]) is one engine attempt within it (identify, upload, journaled steps,
//! until the plan is done or the link goes).
//!
//! After every run:
//! 1. **bounded**: every flash ended within [`CampaignConfig::attempt_limit`] (a watchdog; one
//!    past it is a hang, reported with the seed and faults) and nothing panicked;
//! 2. **device-unique data**: no partition holding device-unique data was erased, programmed or
//!    changed unless a verified backup of exactly it was on the ledger (from the emulator's
//!    [`StorageWrite`] log and the partitions' sha256 before and after);
//! 3. **verified success**: when the engine reports success, every partition the plan wrote is
//!    read back from the emulated storage and its sha256 compared with the package's image
//!    (host patches and on-device DISK patches applied to the expected bytes);
//! 4. **recoverable**: a failed flash is followed by another until one succeeds and verifies;
//! 5. **expected verdict**: update sets and factory sets with a verified backup are flashed;
//!    factory sets without one are refused before anything is sent;
//! 6. **resume** ([`CampaignConfig::expect_resume`], on by default), exact from the unit's
//!    write log and the journal after each connection: a step the journal had as done is never
//!    erased, programmed or patched again by a later connection; on NAND the cut partition is
//!    erased again before it is rewritten; on eMMC the sectors the programmer confirmed before
//!    the drop are not written again; a new flash after an unfinished one continues its journal
//!    (`Opening::Resume`), and a journal of another package is started over with a warning;
//! 7. **other unit**: a unit with another serial that answers after a drop is left alone (its
//!    write log stays empty, the engine says so) and the flash goes on with the right one.
//!
//! The report counts, per run and for the campaign, the flashes, connections, resumes, killed
//! processes, and the image bytes sent beyond one clean flash (re-sent after drops) against the
//! sizes of the steps the drops cut ([`ResumeTally`]).
//!
//! Timing faults (boot-loop windows, a slow device) make a run depend on the machine's speed:
//! the seed reproduces the faults drawn, not the exact byte where a window closes.
//!
//! The harness never panics on a bad run and never prints: everything is in the
//! [`CampaignReport`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::events::{EngineEvent, StepKind};
use crate::engine::firehose::{FirehoseOptions, PowerMode, StorageKind, Timeouts};
use crate::engine::flash::{FlashJob, FlashPlan, FlashStep};
use crate::engine::guards::{self, BackupLedger, MemoryLedger};
use crate::engine::journal::{
    JournalState, JournalStore, Opening, PackageIdentity, PlanRecord, Record, UnitKey,
    JOURNAL_VERSION,
};
use crate::engine::prepare::{prepare, PrepareRequest};
use crate::engine::resume::{flash_resumable, Link, ResumeNotice, ResumeOptions};
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
use crate::transport::{Framing, Transport, TransportError};

mod rewrites;

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
/// How long a flash waits for the unit to come back (the harness brings it back at once, or
/// after a boot-loop window and gap).
const RETURN_WAIT: Duration = Duration::from_secs(10);
/// eMMC/UFS chunk size of the campaign's flashes (small, so partitions span several chunks).
const CHUNK_BYTES: u64 = 64 * 1024;
/// The package a stale journal ([`Injected::ChangedPackage`]) names.
const OLD_PACKAGE: &str = "an older package";
/// Longest single wait on the unit's port, so a killed process's handle goes dead at once.
const PORT_SLICE: Duration = Duration::from_millis(50);

/// How big and how strict a campaign is.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    /// Runs to do (indices `0..runs`).
    pub runs: u32,
    /// The campaign seed; each run's own seed is [`run_seed`]`(seed, index)`.
    pub seed: u64,
    /// Do only this run index (to replay one run of a campaign).
    pub only: Option<u32>,
    /// Upper bound of one flash (prepare + `flash_resumable`, every reconnect included); a
    /// flash past it is a hang.
    pub attempt_limit: Duration,
    /// Flashes (qrescue runs) per run before a failed run counts as not recovered, on top of
    /// two per fault drawn and one per boot-loop window: every fault is one-shot, so it fails
    /// at most one flash, plus one more when that flash is re-run on the unit as the fault left
    /// it (never twice in a row: the second re-run power-cycles it).
    pub max_attempts: u32,
    /// Image bytes of the generated packages, drawn per run from this range.
    pub image_bytes: std::ops::Range<u64>,
    /// Hold the resume invariant (see the module docs): what a connection completed is never
    /// written again, NAND rewrites the cut partition after erasing it, eMMC continues after
    /// the last confirmed chunk, a new flash continues the journal. Off: only reported.
    pub expect_resume: bool,
    /// Where packages are generated (a temporary folder per run when `None`).
    pub workdir: Option<PathBuf>,
    /// Runs done at the same time (each has its own unit, package and engine; most of a run's
    /// time is the engine waiting on the emulated unit).
    pub parallel: usize,
    /// Inject exactly these faults in every run instead of the drawn ones (to aim at one
    /// fault; everything else is still drawn from the run's seed).
    pub faults: Option<Vec<Injected>>,
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
            expect_resume: true,
            workdir: None,
            parallel: 4,
            faults: None,
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
    /// The qrescue process is killed when the flash is this far through (overall progress, in
    /// percent): its port goes dead, the flash is abandoned, and a new one (a new process, the
    /// same journal store) must continue the journal.
    Killed { at_percent: u32 },
    /// The store already holds an unfinished journal of this unit for another package: the
    /// first flash must start over, with a warning.
    ChangedPackage,
    /// The link drops this far through the flash (percent), and a unit with another serial
    /// answers first: the engine must leave it alone and go on with the right unit.
    OtherUnit { at_percent: u32 },
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
            Injected::Killed { .. } => "killed",
            Injected::ChangedPackage => "changed-package",
            Injected::OtherUnit { .. } => "other-unit",
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
            Injected::Killed { at_percent } => write!(f, "killed:{at_percent}%"),
            Injected::OtherUnit { at_percent } => write!(f, "other-unit:{at_percent}%"),
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
    /// A connection wrote what an earlier one had completed (journaled done), a cut NAND
    /// partition was rewritten without being erased, confirmed eMMC sectors were written again,
    /// or a new flash did not continue the journal (or trusted another package's).
    Resume,
    /// A unit with another serial was written to, or not refused.
    OtherUnit,
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

/// One flash of a run: a `qrescue flash` process (prepare, then `flash_resumable` with every
/// reconnect it makes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptReport {
    /// 1-based.
    pub attempt: u32,
    /// A new appearance of the unit (after a power-cycle or a boot-loop gap), or the unit an
    /// earlier flash left running its programmer.
    pub fresh_appearance: bool,
    pub result: AttemptResult,
    pub elapsed_ms: u64,
    /// Connections (engine attempts) it made.
    pub connections: u32,
    /// How it opened the unit's journal (`new`, `resume …`, `restarted: why`); `None` when it
    /// did not get that far.
    pub opening: Option<String>,
    /// The process was killed mid-flash ([`Injected::Killed`]).
    pub killed: bool,
    /// It ran without a journal (the unit's serial could not be read).
    pub unjournaled: bool,
    /// Image bytes it sent.
    pub bytes_sent: u64,
    /// Steps its connections completed (the journal's new done steps).
    pub completed: Vec<String>,
    /// Storage writes its connections made (programs, erases, patches).
    pub writes: u32,
}

/// One connection to the unit: one engine attempt (identify, upload, journaled steps) until
/// the plan was done, the link went or a boot-loop window paused it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionReport {
    /// 1-based over the run.
    pub attempt: u32,
    /// The flash ([`AttemptReport::attempt`]) it belonged to.
    pub flash: u32,
    /// A new appearance of the unit.
    pub fresh_appearance: bool,
    /// It continued a journal that had work done (a resume).
    pub resumed: bool,
    /// Steps the journal had as done after it and not before.
    pub completed: Vec<String>,
    pub writes: u32,
}

/// The unit with another serial that answered after a drop ([`Injected::OtherUnit`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OtherUnitReport {
    pub serial: String,
    /// The engine said it was another unit and left it alone.
    pub refused: bool,
    /// Firehose commands and storage writes it got (both must be 0).
    pub commands: u32,
    pub writes: u32,
}

/// How often one partition was written over a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionWrites {
    pub lun: u32,
    pub name: String,
    /// Program commands per connection (index 0 = connection 1).
    pub programs: Vec<u32>,
    /// Erase commands per connection.
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
    /// The flashes (qrescue runs), in order.
    pub attempts: Vec<AttemptReport>,
    /// The connections (engine attempts) of all flashes, in order.
    pub connections: Vec<ConnectionReport>,
    pub end: RunEnd,
    /// Partitions written at least once.
    pub partitions: Vec<PartitionWrites>,
    /// Steps a connection wrote again although an earlier one had completed them (a violation
    /// with `expect_resume`).
    pub rewritten_after_completion: Vec<String>,
    /// Image bytes sent over every connection.
    pub bytes_sent: u64,
    /// Image bytes of the plan (what one uninterrupted flash sends).
    pub plan_bytes: u64,
    /// Program steps cut off after some of their bytes were sent (a drop, a closed window, a
    /// killed process, a failed command), and their sizes.
    pub interruptions: u32,
    pub interrupted_bytes: u64,
    /// Connections the engine ended at a safe point because the boot-loop window was closing.
    pub pauses: u32,
    /// Flashes that opened an unfinished journal of another package and started over with a
    /// warning.
    pub restarted_with_warning: u32,
    pub other_unit: Option<OtherUnitReport>,
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
    /// Flashes by result.
    pub attempt_results: BTreeMap<String, u32>,
    /// What resuming did and cost over all runs.
    pub resume: ResumeTally,
    pub violations: Vec<Violation>,
    pub elapsed_ms: u64,
}

/// What resuming did and cost over a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeTally {
    /// Flashes (qrescue runs) and the connections (engine attempts) they made.
    pub flashes: u32,
    pub connections: u32,
    /// Connections that continued a journal with work done.
    pub resumes: u32,
    /// Flashes whose process was killed, flashes that found the unit still running its
    /// programmer (an earlier flash left it so), and flashes that ran without a journal.
    pub killed: u32,
    pub on_running_programmer: u32,
    pub unjournaled: u32,
    /// Journals of another package started over with a warning.
    pub restarted_with_warning: u32,
    /// Units with another serial left alone.
    pub other_units_refused: u32,
    /// Connections paused at a safe point before a boot-loop window closed.
    pub pauses: u32,
    /// What the interruptions cost, per storage profile, over the verified runs.
    pub cost: BTreeMap<String, ResumeCost>,
}

/// Over the verified runs of one storage profile in which a program step was cut off
/// mid-transfer: how many cuts, the sizes of the steps cut, and the image bytes sent beyond one
/// clean flash (re-sent after the cuts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeCost {
    pub runs: u32,
    pub interruptions: u32,
    pub interrupted_bytes: u64,
    pub resent_bytes: u64,
}

impl ResumeTally {
    fn add(&mut self, run: &RunReport) {
        self.flashes += run.attempts.len() as u32;
        self.connections += run.connections.len() as u32;
        self.resumes += run.connections.iter().filter(|c| c.resumed).count() as u32;
        self.killed += run.attempts.iter().filter(|a| a.killed).count() as u32;
        self.on_running_programmer += run
            .attempts
            .iter()
            .filter(|a| !a.fresh_appearance && a.connections > 0)
            .count() as u32;
        self.unjournaled += run.attempts.iter().filter(|a| a.unjournaled).count() as u32;
        self.restarted_with_warning += run.restarted_with_warning;
        self.other_units_refused += run.other_unit.as_ref().is_some_and(|o| o.refused) as u32;
        self.pauses += run.pauses;
        if run.end == RunEnd::Verified && run.interruptions > 0 {
            let c = self.cost.entry(run.storage.clone()).or_default();
            c.runs += 1;
            c.interruptions += run.interruptions;
            c.interrupted_bytes += run.interrupted_bytes;
            c.resent_bytes += run.bytes_sent.saturating_sub(run.plan_bytes);
        }
    }
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
        let r = &self.resume;
        let mut s = format!(
            "fault campaign, seed {}: {} runs in {:.1} s; outcomes: {}; flashes: {}; faults: {}; {} violation(s)\n",
            self.seed,
            self.runs.len(),
            self.elapsed_ms as f64 / 1000.0,
            tally(&self.outcomes),
            tally(&self.attempt_results),
            tally(&self.faults_drawn),
            self.violations.len()
        );
        s.push_str(&format!(
            "  resume: {} flashes ({} processes killed, {} on a programmer left running, {} without a journal), {} connections, {} resumed a journal, {} paused at a safe point for a boot-loop window; {} other-package journals restarted with a warning; {} other units left alone\n",
            r.flashes,
            r.killed,
            r.on_running_programmer,
            r.unjournaled,
            r.connections,
            r.resumes,
            r.pauses,
            r.restarted_with_warning,
            r.other_units_refused
        ));
        for (storage, c) in &r.cost {
            s.push_str(&format!(
                "  resume cost, {storage}: {} steps cut mid-transfer in {} verified runs, {} KiB in those steps, {} KiB re-sent ({:.0}%)\n",
                c.interruptions,
                c.runs,
                c.interrupted_bytes / 1024,
                c.resent_bytes / 1024,
                if c.interrupted_bytes == 0 {
                    0.0
                } else {
                    c.resent_bytes as f64 * 100.0 / c.interrupted_bytes as f64
                }
            ));
        }
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
        resume: ResumeTally::default(),
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
        report.resume.add(&run);
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
        let f = match rng.gen_range(0..14) {
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
            10 => Injected::DonePending,
            11 => Injected::Killed {
                at_percent: rng.gen_range(5..95),
            },
            12 => Injected::ChangedPackage,
            _ => Injected::OtherUnit {
                at_percent: rng.gen_range(5..95),
            },
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
    /// The host end, shared by the handles ([`HostPort`]) the flashes open on it.
    port: Arc<Mutex<PipeEnd>>,
    /// When it appeared, and its boot-loop window.
    appeared: Instant,
    window: Option<Duration>,
    /// A flash already used it (it is not a fresh appearance any more).
    used: bool,
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
            port: Arc::new(Mutex::new(host)),
            appeared: Instant::now(),
            window,
            used: false,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host's handle on the unit's port as one qrescue process holds it: a killed process's
/// handle goes dead at once; the next process opens the port again (the unit's link lives on,
/// and so does a programmer that was running on it).
struct HostPort {
    port: Arc<Mutex<PipeEnd>>,
    dead: Arc<AtomicBool>,
}

impl HostPort {
    fn gone() -> TransportError {
        TransportError::Disconnected("the qrescue process holding the port was killed".into())
    }
}

impl Transport for HostPort {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        let end = Instant::now() + timeout;
        loop {
            if self.dead.load(Ordering::SeqCst) {
                return Err(Self::gone());
            }
            let left = end.saturating_duration_since(Instant::now());
            let slice = left.min(PORT_SLICE);
            match lock(&self.port).read(buf, slice) {
                Err(TransportError::Timeout { .. }) if left > slice => continue,
                Err(TransportError::Timeout { op, .. }) => {
                    return Err(TransportError::Timeout { op, after: timeout })
                }
                r => return r,
            }
        }
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Self::gone());
        }
        lock(&self.port).write(data, timeout)
    }

    fn describe(&self) -> String {
        "the emulated unit's port".into()
    }
}

/// The unit with another serial of [`Injected::OtherUnit`], before it answers.
struct OtherUnit {
    at: f64,
    profile: Profile,
    programmer: Programmer,
}

/// Where one connection's writes start in the unit's write log, and what it left behind.
struct Conn {
    flash: u32,
    mark: usize,
    fresh: bool,
    /// The unit's journal for this package after the connection.
    journal_after: Option<JournalState>,
}

/// The unit on the bench, shared by the harness (between flashes) and the engine's reconnect
/// (which brings it back after a drop, as its own reset would).
struct Bench {
    unit: Profile,
    seed: u64,
    app: Option<Appearance>,
    appearances: u32,
    /// Faults of every appearance, and of the first one only.
    every: Vec<Fault>,
    first: Vec<Fault>,
    /// The boot loop: window, gap, and how many appearances have the window.
    window: Option<Duration>,
    gap: Duration,
    windows: u32,
    write_seq: Arc<AtomicUsize>,
    store: JournalStore,
    key: UnitKey,
    package: String,
    conns: Vec<Conn>,
    conn_open: bool,
    // The current flash.
    flash: u32,
    port_dead: Arc<AtomicBool>,
    links: u32,
    journal_opened: bool,
    killed: bool,
    // Pending faults.
    kill_at: Option<f64>,
    other: Option<OtherUnit>,
    other_armed: bool,
    other_app: Option<(Appearance, String)>,
    other_report: Option<OtherUnitReport>,
    /// The watchdog gave up on the flash: its engine thread must not touch the unit again.
    abandoned: bool,
    /// What went wrong in the harness during a flash.
    problem: Option<(Invariant, String)>,
}

impl Bench {
    /// A bench for `unit` (whose programmer is `programmer`, not plugged in yet) with no faults.
    fn new(
        unit: Profile,
        seed: u64,
        programmer: &Programmer,
        store: JournalStore,
        package: String,
    ) -> Bench {
        Bench {
            key: UnitKey::from_serial(unit.identity.serial),
            unit,
            seed,
            app: None,
            appearances: 0,
            every: Vec::new(),
            first: Vec::new(),
            window: None,
            gap: Duration::ZERO,
            windows: 0,
            write_seq: programmer.write_seq(),
            store,
            package,
            conns: Vec::new(),
            conn_open: false,
            flash: 0,
            port_dead: Arc::new(AtomicBool::new(false)),
            links: 0,
            journal_opened: false,
            killed: false,
            kill_at: None,
            other: None,
            other_armed: false,
            other_app: None,
            other_report: None,
            abandoned: false,
            problem: None,
        }
    }

    fn faults_of(&self, n: u32) -> Vec<Fault> {
        let mut f = self.every.clone();
        if n == 0 {
            f.extend(self.first.iter().cloned());
        }
        f
    }

    fn plug_in(&mut self, programmer: Programmer) {
        let n = self.appearances;
        let window = if n < self.windows { self.window } else { None };
        let faults = self.faults_of(n);
        self.app = Some(Appearance::start(
            programmer,
            &self.unit,
            faults,
            self.seed.wrapping_add(u64::from(n)),
            window,
        ));
        self.appearances += 1;
    }

    /// The unit resets (a power-cycle, or the end of its boot-loop window) and comes back: a
    /// fresh boot ROM over the same storage, on a new link.
    fn power_cycle(&mut self) -> Result<(), (Invariant, String)> {
        let mut app = self
            .app
            .take()
            .ok_or((Invariant::Harness, "no unit on the bench".to_string()))?;
        // A boot-looping unit leaves the bus when its window closes, not before.
        if let Some(w) = app.window {
            let closes = app.appeared + w;
            while !app.vanished.load(Ordering::SeqCst) && app.running() {
                let left = closes.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(10)));
            }
        }
        let vanished = app.vanished.load(Ordering::SeqCst) || app.window.is_some();
        let (_, programmer) = app.finish()?;
        if vanished {
            std::thread::sleep(self.gap);
        }
        self.plug_in(programmer);
        Ok(())
    }

    fn load_journal(&self) -> Option<JournalState> {
        match self.store.load(&self.key) {
            Ok(Some(Ok(s))) if s.plan.package == self.package => Some(s),
            _ => None,
        }
    }

    fn close_conn(&mut self) {
        if self.conn_open {
            self.conn_open = false;
            let j = self.load_journal();
            if let Some(c) = self.conns.last_mut() {
                c.journal_after = j;
            }
        }
    }

    /// A new flash (a new process) starts: it opens the port anew.
    fn begin_flash(&mut self, flash: u32) {
        self.flash = flash;
        self.port_dead = Arc::new(AtomicBool::new(false));
        self.links = 0;
        self.journal_opened = false;
        self.killed = false;
    }

    /// The flash ended (or was given up on).
    fn end_flash(&mut self) {
        self.close_conn();
        if let Some((app, serial)) = self.other_app.take() {
            self.finish_other(app, serial);
        }
    }

    fn finish_other(&mut self, app: Appearance, serial: String) {
        let refused = self.other_report.as_ref().is_some_and(|o| o.refused);
        match app.finish() {
            Ok((_, p)) => {
                self.other_report = Some(OtherUnitReport {
                    serial,
                    refused,
                    commands: p.commands().len() as u32,
                    writes: p.writes().len() as u32,
                });
            }
            Err(e) => self.problem = Some(e),
        }
    }

    fn harness_error(&mut self, invariant: Invariant, what: String) -> crate::Error {
        let e = crate::Error::failure(
            format!("The campaign's bench failed: {what}"),
            "the emulated unit could not be brought back",
            "This is a bug in the campaign harness",
        );
        self.problem = Some((invariant, what));
        e
    }

    /// The engine's reconnect: the unit as it is for a flash's first connection, the unit
    /// brought back (or, once, another unit) after that.
    fn next_link(&mut self) -> crate::Result<Option<Link>> {
        if self.abandoned {
            return Err(crate::Error::new(
                crate::ErrorKind::Interrupted,
                "The watchdog gave up on this flash",
                "it did not end within the campaign's bound",
                "See the campaign report",
            ));
        }
        if self.killed {
            return Err(crate::Error::new(
                crate::ErrorKind::Interrupted,
                "The qrescue process was killed",
                "the campaign's killed-process fault",
                "Run the same flash again: it continues the journal",
            ));
        }
        if self.links > 0 {
            self.close_conn();
            if let Some((app, serial)) = self.other_app.take() {
                self.finish_other(app, serial);
            } else if self.other_armed {
                if let Some(o) = self.other.take() {
                    // Another unit is on the bus first; ours is still resetting.
                    let serial = format!("{:08X}", o.profile.identity.serial);
                    let mut app =
                        Appearance::start(o.programmer, &o.profile, Vec::new(), self.seed, None);
                    app.used = true;
                    let link = Link {
                        transport: Box::new(HostPort {
                            port: Arc::clone(&app.port),
                            dead: Arc::clone(&self.port_dead),
                        }),
                        appeared: app.appeared,
                        window: None,
                        port: format!("the emulated unit {serial}"),
                    };
                    self.other_report = Some(OtherUnitReport {
                        serial: serial.clone(),
                        refused: false,
                        commands: 0,
                        writes: 0,
                    });
                    self.other_app = Some((app, serial));
                    self.links += 1;
                    return Ok(Some(link));
                }
            }
            if let Err((invariant, what)) = self.power_cycle() {
                return Err(self.harness_error(invariant, what));
            }
        }
        let dead = Arc::clone(&self.port_dead);
        let Some(app) = self.app.as_mut() else {
            return Err(self.harness_error(Invariant::Harness, "no unit on the bench".into()));
        };
        let fresh = !app.used;
        app.used = true;
        let link = Link {
            transport: Box::new(HostPort {
                port: Arc::clone(&app.port),
                dead,
            }),
            appeared: app.appeared,
            window: app.window,
            port: "the emulated unit's port".into(),
        };
        self.links += 1;
        self.conns.push(Conn {
            flash: self.flash,
            mark: self.write_seq.load(Ordering::SeqCst),
            fresh,
            journal_after: None,
        });
        self.conn_open = true;
        Ok(Some(link))
    }

    /// The engine reported progress: fire the faults that wait for it.
    fn progress(&mut self, overall: f64) {
        let other_due = self.other.as_ref().is_some_and(|o| overall >= o.at);
        if other_due && !self.other_armed && self.journal_opened {
            // The link drops; another unit will answer first.
            self.other_armed = true;
            if let Some(app) = &self.app {
                app.cutter.cut();
            }
            return;
        }
        // The kill waits until another unit due to answer has answered.
        let other_pending = self.other_armed && self.other.is_some();
        if !other_pending && self.kill_at.is_some_and(|k| overall >= k) {
            self.kill_at = None;
            self.killed = true;
            self.port_dead.store(true, Ordering::SeqCst);
        }
    }

    fn notice(&mut self, n: &ResumeNotice) {
        match n {
            ResumeNotice::Journal { .. } => self.journal_opened = true,
            ResumeNotice::OtherUnit { .. } => {
                if let Some(o) = self.other_report.as_mut() {
                    o.refused = true;
                }
            }
            _ => {}
        }
    }

    /// The watchdog gives up on the flash: pull every plug.
    fn abandon(&mut self) {
        self.abandoned = true;
        self.port_dead.store(true, Ordering::SeqCst);
        if let Some(app) = &self.app {
            app.cutter.cut();
        }
        if let Some((app, _)) = &self.other_app {
            app.cutter.cut();
        }
    }
}

/// What one flash left.
struct FlashOutput {
    result: AttemptResult,
    events: Vec<EngineEvent>,
    notices: Vec<ResumeNotice>,
    plan: Option<FlashPlan>,
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

/// What a flash needs besides the bench.
#[derive(Clone)]
struct FlashRequest {
    req: PrepareRequest,
    ledger: MemoryLedger,
    unit: String,
    store: JournalStore,
    package: String,
    /// Most connections of one flash.
    max_connections: u32,
}

/// prepare + `flash_resumable`, as `qrescue flash PACKAGE` does.
fn flash_body(r: FlashRequest, bench: Arc<Mutex<Bench>>, cancel: Arc<AtomicBool>) -> FlashOutput {
    let mut events = Vec::new();
    let mut notices = Vec::new();
    let failed = |e: &crate::Error| AttemptResult::Failed {
        kind: format!("{:?}", e.kind),
        what: e.what.clone(),
    };
    let p = match prepare(&r.req, &r.ledger, Some(&r.unit)) {
        Ok(p) => p,
        Err(e) => {
            return FlashOutput {
                result: failed(&e),
                events,
                notices,
                plan: None,
            }
        }
    };
    let verdict = p.verdict();
    let plan = p.plan.clone();
    if !verdict.flashable {
        return FlashOutput {
            result: AttemptResult::Refused {
                reasons: verdict.reasons.iter().map(|r| r.what.clone()).collect(),
            },
            events,
            notices,
            plan,
        };
    }
    let programmer = match p.reverify().and_then(|_| p.programmer_image()) {
        Ok(b) => b,
        Err(e) => {
            return FlashOutput {
                result: failed(&e),
                events,
                notices,
                plan,
            }
        }
    };
    let Some(flash_plan) = plan.as_ref() else {
        return FlashOutput {
            result: AttemptResult::Failed {
                kind: "Failure".into(),
                what: "a flashable verdict without a plan".into(),
            },
            events,
            notices,
            plan,
        };
    };
    let job = campaign_job(programmer);
    let opts = ResumeOptions {
        package: r.package.clone(),
        fresh: false,
        return_wait: RETURN_WAIT,
        max_attempts: r.max_connections,
        chunk_bytes: CHUNK_BYTES,
        ..ResumeOptions::default()
    };
    let b = Arc::clone(&bench);
    let mut reconnect =
        move |_wait: Duration| -> crate::Result<Option<Link>> { lock(&b).next_link() };
    let result = flash_resumable(
        &mut reconnect,
        flash_plan,
        &job,
        &r.store,
        &opts,
        &mut |e| {
            if let EngineEvent::Progress { overall, .. } = &e {
                lock(&bench).progress(*overall);
            }
            events.push(e);
        },
        &mut |n| {
            lock(&bench).notice(n);
            notices.push(n.clone());
        },
        &cancel,
    );
    FlashOutput {
        result: match result {
            Ok(_) => AttemptResult::Flashed,
            Err(e) => failed(&e),
        },
        events,
        notices,
        plan,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Run one flash under the watchdog.
fn watched_flash(
    r: &FlashRequest,
    bench: &Arc<Mutex<Bench>>,
    limit: Duration,
) -> (FlashOutput, Duration) {
    let started = Instant::now();
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (r2, bench2, cancel2) = (r.clone(), Arc::clone(bench), Arc::clone(&cancel));
    let empty = |result| FlashOutput {
        result,
        events: Vec::new(),
        notices: Vec::new(),
        plan: None,
    };
    let spawned = std::thread::Builder::new()
        .name("campaign-engine".into())
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                flash_body(r2, bench2, cancel2)
            }));
            let _ = tx.send(out);
        });
    if let Err(e) = spawned {
        return (
            empty(AttemptResult::Failed {
                kind: "Harness".into(),
                what: format!("cannot start the engine thread: {e}"),
            }),
            started.elapsed(),
        );
    }
    let out = match rx.recv_timeout(limit) {
        Ok(Ok(out)) => out,
        Ok(Err(panic)) => empty(AttemptResult::Panicked {
            message: panic_message(&*panic),
        }),
        Err(_) => {
            // Past the bound: ask the engine to stop and pull the cable, then give it a little
            // time to notice; a thread that still does not end is left behind (and may not
            // touch the unit again).
            cancel.store(true, Ordering::SeqCst);
            lock(bench).abandon();
            let _ = rx.recv_timeout(ABANDON_WAIT);
            empty(AttemptResult::TimedOut)
        }
    };
    (out, started.elapsed())
}

/// What one flash's events tell about its interruptions.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cuts {
    /// Program steps cut off after some of their bytes were sent (a pause at a safe point is
    /// not a cut) and their sizes.
    cuts: u32,
    cut_bytes: u64,
    /// Connections that paused at a safe point for a boot-loop window.
    pauses: u32,
    /// Image bytes sent.
    sent: u64,
}

fn interruptions(events: &[EngineEvent]) -> Cuts {
    let mut steps: &[crate::engine::events::StepInfo] = &[];
    let mut progressed: Option<usize> = None;
    let mut pausing = false;
    let (mut cuts, mut cut_bytes, mut sent, mut pauses) = (0u32, 0u64, 0u64, 0u32);
    for e in events {
        match e {
            EngineEvent::Log { message } if message.starts_with("Pausing") => pausing = true,
            EngineEvent::StepFailed { what, .. } if what.starts_with("Paused") => pausing = true,
            EngineEvent::Plan { steps: s, .. } => steps = s,
            EngineEvent::StepStarted { .. } => progressed = None,
            EngineEvent::Progress { index, done, .. } if *done > 0 => progressed = Some(*index),
            EngineEvent::StepFailed { index, what, .. }
                if !what.starts_with("Paused") && progressed == Some(*index) =>
            {
                if let Some(s) = steps.get(*index).filter(|s| s.kind == StepKind::Program) {
                    cuts += 1;
                    cut_bytes += s.bytes;
                }
            }
            EngineEvent::Done { bytes, .. } => {
                sent += bytes;
                pauses += u32::from(pausing);
                pausing = false;
            }
            _ => {}
        }
    }
    Cuts {
        cuts,
        cut_bytes,
        pauses,
        sent,
    }
}

/// A stale journal of this unit for another package, as an interrupted flash of an older
/// package would have left it: most steps done.
fn write_stale_journal(
    store: &JournalStore,
    key: &UnitKey,
    storage: StorageKind,
    pkg: &PackageSummary,
    seed: u64,
) -> Result<(), String> {
    let images: Vec<_> = pkg.files.iter().filter(|f| f.partition.is_some()).collect();
    let plan = PlanRecord {
        version: JOURNAL_VERSION,
        unit: key.clone(),
        package: OLD_PACKAGE.into(),
        storage,
        identity: PackageIdentity {
            files: images
                .iter()
                .map(|f| (f.path.clone(), hex::encode(known_bytes(seed, &f.path, 32))))
                .collect(),
            steps_sha256: hex::encode(known_bytes(seed, "older steps", 32)),
            steps: images.len(),
        },
        step_names: images.iter().filter_map(|f| f.partition.clone()).collect(),
        bytes_total: pkg.image_bytes,
        created_unix_ms: 1,
    };
    let mut records = vec![Record::Plan(plan), Record::Attempt { n: 1, unix_ms: 2 }];
    for step in 0..images.len().saturating_sub(1) {
        records.push(Record::Started { step, unix_ms: 3 });
        records.push(Record::StepDone {
            step,
            bytes: 4096,
            sha256: None,
            unix_ms: 4,
        });
    }
    let mut text = Vec::new();
    for r in &records {
        serde_json::to_writer(&mut text, r).map_err(|e| format!("a stale journal: {e}"))?;
        text.push(b'\n');
    }
    let io = |e: std::io::Error| format!("writing a stale journal: {e}");
    std::fs::create_dir_all(store.dir()).map_err(io)?;
    std::fs::write(store.path_for(key), text).map_err(io)
}

fn opening_text(o: &Opening) -> String {
    match o {
        Opening::New { .. } => "new".into(),
        Opening::Resume {
            steps_done,
            steps_total,
            ..
        } => format!("resume ({steps_done} of {steps_total} steps done)"),
        Opening::Restarted { why } => format!("restarted: {why}"),
    }
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
        connections: Vec::new(),
        end: RunEnd::HarnessError,
        partitions: Vec::new(),
        rewritten_after_completion: Vec::new(),
        bytes_sent: 0,
        plan_bytes: 0,
        interruptions: 0,
        interrupted_bytes: 0,
        pauses: 0,
        restarted_with_warning: 0,
        other_unit: None,
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
    let kind = storage_kind(&storage);

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
    if let Some(f) = &cfg.faults {
        report.faults = f.clone();
    }
    let faults = &report.faults;
    let first: Vec<Fault> = faults
        .iter()
        .filter_map(Injected::first_appearance)
        .collect();
    let programmer_faults: Vec<Fault> = faults.iter().filter_map(Injected::programmer).collect();
    let (delay_ms, throughput) = faults
        .iter()
        .find_map(|f| match f {
            Injected::Slow {
                delay_ms,
                bytes_per_s,
            } => Some((*delay_ms, Some(*bytes_per_s))),
            _ => None,
        })
        .unwrap_or((0, None));
    let (window, gap, windows) = faults
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
    let kill_at = faults.iter().find_map(|f| match f {
        Injected::Killed { at_percent } => Some(f64::from(*at_percent) / 100.0),
        _ => None,
    });
    let changed_package = faults.contains(&Injected::ChangedPackage);
    let other = match faults.iter().find_map(|f| match f {
        Injected::OtherUnit { at_percent } => Some(f64::from(*at_percent) / 100.0),
        _ => None,
    }) {
        Some(at) => {
            // A unit of the same model and OEM key (so a confused engine's upload would be
            // taken), with another serial.
            let mut profile = unit.clone();
            profile.identity.serial = unit.identity.serial.wrapping_add(1).max(1);
            let (storage, _) = factory_storage(&setup.storage, &profile, report.seed ^ 1)?;
            Some(OtherUnit {
                at,
                profile,
                programmer: Programmer::with_storage(storage, ProgrammerOptions::default()),
            })
        }
        None => None,
    };
    let every: Vec<Fault> = if delay_ms > 0 {
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

    // The run's journal store (a stale journal of another package in it, sometimes).
    let store = JournalStore::at(dir.path().join("journals"));
    let key = UnitKey::from_serial(unit.identity.serial);
    let package = root.display().to_string();
    if changed_package {
        write_stale_journal(&store, &key, kind, &pkg, report.seed)?;
    }
    let n_faults = report.faults.len() as u32;
    let mut b = Bench::new(
        unit.clone(),
        report.seed,
        &programmer,
        store.clone(),
        package.clone(),
    );
    b.every = every;
    b.first = first;
    (b.window, b.gap, b.windows) = (window, gap, windows);
    b.kill_at = kill_at;
    b.other = other;
    b.plug_in(programmer);
    let bench = Arc::new(Mutex::new(b));
    let request = FlashRequest {
        req: PrepareRequest {
            package: root.clone(),
            set: set_word,
            ..PrepareRequest::default()
        },
        ledger: ledger.clone(),
        unit: serial.clone(),
        store,
        package,
        max_connections: 2 * n_faults + windows + 4,
    };

    // Flashes: a person running `qrescue flash` again until it works.
    let max_attempts = cfg.max_attempts.max(1) + 2 * n_faults + windows;
    let mut openings: Vec<Option<Opening>> = Vec::new();
    let mut last_plan: Option<FlashPlan> = None;
    let mut outcome = RunEnd::NotRecovered;
    loop {
        let attempt = report.attempts.len() as u32 + 1;
        let (before, fresh) = {
            let mut b = lock(&bench);
            b.begin_flash(attempt);
            (b.conns.len(), b.app.as_ref().is_some_and(|a| !a.used))
        };
        let (out, elapsed) = watched_flash(&request, &bench, cfg.attempt_limit);
        let (killed, problem, connections) = {
            let mut b = lock(&bench);
            b.end_flash();
            (b.killed, b.problem.take(), b.conns.len() - before)
        };
        if out.plan.is_some() {
            last_plan = out.plan;
        }
        let opening = out.notices.iter().find_map(|n| match n {
            ResumeNotice::Journal { opening, .. } => Some(opening.clone()),
            _ => None,
        });
        let unjournaled = out
            .notices
            .iter()
            .any(|n| matches!(n, ResumeNotice::Unjournaled { .. }));
        let cuts = interruptions(&out.events);
        let sent = cuts.sent;
        report.interruptions += cuts.cuts;
        report.interrupted_bytes += cuts.cut_bytes;
        report.pauses += cuts.pauses;
        report.bytes_sent += sent;
        if matches!(opening, Some(Opening::Restarted { .. })) {
            report.restarted_with_warning += 1;
        }
        let result = out.result;
        report.attempts.push(AttemptReport {
            attempt,
            fresh_appearance: fresh,
            result: result.clone(),
            elapsed_ms: elapsed.as_millis() as u64,
            connections: connections as u32,
            opening: opening.as_ref().map(opening_text),
            killed,
            unjournaled,
            bytes_sent: sent,
            completed: Vec::new(),
            writes: 0,
        });
        openings.push(opening);
        tracing::debug!(run = report.run, attempt, ?result, "campaign flash");

        let mut end_now = match &result {
            AttemptResult::Flashed => Some(RunEnd::Verified),
            AttemptResult::Refused { .. } => Some(RunEnd::Refused),
            AttemptResult::TimedOut => {
                violate(
                    report,
                    Invariant::Bounded,
                    format!(
                        "flash {attempt} did not end within {} s",
                        cfg.attempt_limit.as_secs()
                    ),
                );
                Some(RunEnd::Hung)
            }
            AttemptResult::Panicked { message } => {
                violate(
                    report,
                    Invariant::NoPanic,
                    format!("flash {attempt} panicked: {message}"),
                );
                Some(RunEnd::HarnessError)
            }
            AttemptResult::Failed { .. } => None,
        };
        if let Some((invariant, e)) = problem {
            violate(report, invariant, format!("flash {attempt}: {e}"));
            end_now = Some(if invariant == Invariant::Bounded {
                RunEnd::Hung
            } else {
                RunEnd::HarnessError
            });
        }
        let last = attempt >= max_attempts;
        // Run again on the unit as it is (still running its programmer), or power-cycle it.
        // The coin is drawn every time, so the draws do not depend on timing.
        let coin = rng.gen_bool(setup.keep_running);
        if let Some(end) = end_now {
            outcome = end;
            break;
        }
        if last {
            break;
        }
        let mut b = lock(&bench);
        let alive = b
            .app
            .as_mut()
            .is_some_and(|a| !a.vanished.load(Ordering::SeqCst) && a.running());
        if !(coin && fresh && alive) {
            if let Err((invariant, e)) = b.power_cycle() {
                drop(b);
                violate(report, invariant, e);
                outcome = if invariant == Invariant::Bounded {
                    RunEnd::Hung
                } else {
                    RunEnd::HarnessError
                };
                break;
            }
        }
    }

    // The unit's storage and write log, the connections.
    let (app, conns, other_report) = {
        let mut b = lock(&bench);
        b.abandoned = true;
        (
            b.app.take(),
            std::mem::take(&mut b.conns),
            b.other_report.take(),
        )
    };
    let prog = match app.map(Appearance::finish) {
        Some(Ok((_, prog))) => prog,
        Some(Err((invariant, e))) => {
            violate(report, invariant, e);
            report.end = if invariant == Invariant::Bounded {
                RunEnd::Hung
            } else {
                RunEnd::HarnessError
            };
            return Ok(());
        }
        None => return Err("the unit was not on the bench at the end".into()),
    };
    let log = prog.writes();
    let per_conn: Vec<&[StorageWrite]> = conns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let end = conns
                .get(i + 1)
                .map_or(log.len(), |n| n.mark)
                .min(log.len());
            log.get(c.mark.min(end)..end).unwrap_or(&[])
        })
        .collect();
    let mut prev: Option<&JournalState> = None;
    for (i, c) in conns.iter().enumerate() {
        let same =
            |a: &JournalState, b: &JournalState| a.plan.created_unix_ms == b.plan.created_unix_ms;
        let completed: Vec<String> = c
            .journal_after
            .as_ref()
            .map(|j| {
                j.done
                    .keys()
                    .filter(|k| prev.is_none_or(|p| !same(p, j) || !p.done.contains_key(k)))
                    .map(|k| j.plan.step_names.get(*k).cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        let resumed = match (prev, c.journal_after.as_ref()) {
            (Some(p), Some(j)) => {
                !p.finished && !p.started.is_empty() && same(p, j) && j.attempts > p.attempts
            }
            _ => false,
        };
        if let Some(a) = report.attempts.get_mut(c.flash.saturating_sub(1) as usize) {
            a.completed.extend(completed.iter().cloned());
            a.writes += per_conn[i].len() as u32;
        }
        report.connections.push(ConnectionReport {
            attempt: i as u32 + 1,
            flash: c.flash,
            fresh_appearance: c.fresh,
            resumed,
            completed,
            writes: per_conn[i].len() as u32,
        });
        if c.journal_after.is_some() {
            prev = c.journal_after.as_ref();
        }
    }
    let overall = writes_per_region(log, &factory_regions);
    for (i, total) in overall.iter().enumerate() {
        if total.programs + total.erases + total.patches == 0 {
            continue;
        }
        let region = &factory_regions[i];
        let each = |k: WriteKind| -> Vec<u32> {
            per_conn
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
        (RunEnd::Refused, true) if !log.is_empty() || !prog.commands().is_empty() => violate(
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
                            "the engine reported success in flash {}, but: {}",
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
                    "no verified success in {} flashes; the last: {last}",
                    report.attempts.len()
                ),
            );
        }
        _ => {}
    }

    // (vi) Resume, exact from the write log and the journal after each connection.
    if let Some(plan) = last_plan.as_ref() {
        report.plan_bytes = plan.total_bytes();
        let spans = rewrites::step_spans(plan, prog.storage());
        let view: Vec<rewrites::Connection<'_>> = conns
            .iter()
            .enumerate()
            .map(|(i, c)| rewrites::Connection {
                attempt: i as u32 + 1,
                flash: c.flash,
                writes: per_conn[i],
                journal_after: c.journal_after.as_ref(),
            })
            .collect();
        for f in rewrites::check(&spans, kind == StorageKind::Nand, &view) {
            if f.rewrote_completed && !report.rewritten_after_completion.contains(&f.step) {
                report.rewritten_after_completion.push(f.step.clone());
            }
            if cfg.expect_resume {
                violate(
                    report,
                    Invariant::Resume,
                    format!(
                        "connection {} (flash {}): {} {}",
                        f.attempt, f.flash, f.step, f.what
                    ),
                );
            }
        }
    }
    // A new flash continues an unfinished journal; a journal of another package starts over.
    let mut first_opening = true;
    for (k, opening) in openings.iter().enumerate() {
        let Some(opening) = opening else {
            continue;
        };
        let flash = k as u32 + 1;
        let before = conns
            .iter()
            .rev()
            .filter(|c| c.flash < flash)
            .find_map(|c| c.journal_after.as_ref());
        let unfinished = before.is_some_and(|b| !b.finished && !b.started.is_empty());
        let problem = match opening {
            Opening::Resume { .. } if changed_package && first_opening => Some(
                "continued a journal of another package instead of starting over with a warning"
                    .to_string(),
            ),
            Opening::Restarted { .. } if changed_package && first_opening => None,
            Opening::Resume { .. } => None,
            o if changed_package && first_opening => Some(format!(
                "opened a journal of another package as {}, without the warning",
                opening_text(o)
            )),
            o if unfinished => Some(format!(
                "started over ({}) instead of continuing the unfinished journal of flash {}",
                opening_text(o),
                flash - 1
            )),
            _ => None,
        };
        first_opening = false;
        if let (Some(p), true) = (problem, cfg.expect_resume) {
            violate(report, Invariant::Resume, format!("flash {flash} {p}"));
        }
    }

    // (vii) Another unit that answered was left alone.
    if let Some(o) = &other_report {
        if o.commands > 0 || o.writes > 0 {
            violate(
                report,
                Invariant::OtherUnit,
                format!(
                    "the unit {} (another serial) got {} Firehose commands and {} storage writes",
                    o.serial, o.commands, o.writes
                ),
            );
        }
        if !o.refused {
            violate(
                report,
                Invariant::OtherUnit,
                format!(
                    "the engine did not say that {} is another unit than {serial}",
                    o.serial
                ),
            );
        }
    }
    report.other_unit = other_report;
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
                        Injected::Killed { at_percent } | Injected::OtherUnit { at_percent } => {
                            assert!((5..95).contains(at_percent))
                        }
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(kinds.len(), 14, "every fault kind is drawn: {kinds:?}");
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
        for (f, text) in [
            (Injected::Killed { at_percent: 40 }, "killed:40%"),
            (Injected::OtherUnit { at_percent: 7 }, "other-unit:7%"),
            (Injected::ChangedPackage, "changed-package"),
        ] {
            assert_eq!(f.to_string(), text);
            assert!(f.first_appearance().is_none() && f.programmer().is_none());
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<Injected>(&json).unwrap(), f);
        }
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

    /// The engine flashes a generated package with no fault through `flash_resumable` on the
    /// bench; the verification accepts the result and names the partition once one of them no
    /// longer holds its image.
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
            let store = JournalStore::at(dir.path().join("journals"));
            let package = pkg.root.display().to_string();
            let mut b = Bench::new(
                unit.clone(),
                seed,
                &programmer,
                store.clone(),
                package.clone(),
            );
            b.plug_in(programmer);
            let bench = Arc::new(Mutex::new(b));
            let request = FlashRequest {
                req: PrepareRequest {
                    package: pkg.root.clone(),
                    ..PrepareRequest::default()
                },
                ledger: MemoryLedger::new(),
                unit: format!("{:08X}", unit.identity.serial),
                store: store.clone(),
                package,
                max_connections: 4,
            };
            lock(&bench).begin_flash(1);
            let (out, _) = watched_flash(&request, &bench, Duration::from_secs(60));
            assert_eq!(out.result, AttemptResult::Flashed, "{name}");
            assert!(out.notices.iter().any(|n| matches!(
                n,
                ResumeNotice::Journal {
                    opening: Opening::New { .. },
                    ..
                }
            )));
            let (app, conns) = {
                let mut b = lock(&bench);
                b.end_flash();
                (b.app.take().unwrap(), std::mem::take(&mut b.conns))
            };
            assert_eq!(conns.len(), 1, "{name}: one connection");
            let journal = conns[0].journal_after.as_ref().expect("a journal");
            assert!(journal.finished, "{name}");
            let (_, mut prog) = app.finish().unwrap();
            let plan = out.plan.unwrap();
            assert_eq!(journal.done.len(), plan.steps.len(), "{name}");
            let n = verify_storage(&plan, prog.storage()).unwrap();
            let programs = plan
                .steps
                .iter()
                .filter(|s| matches!(s, FlashStep::Program { .. }))
                .count();
            assert_eq!(n, programs, "{name}");
            let cuts = interruptions(&out.events);
            assert_eq!(
                cuts,
                Cuts {
                    sent: plan.total_bytes(),
                    ..Cuts::default()
                },
                "{name}"
            );
            let counts = writes_per_region(prog.writes(), &prog.storage().regions());
            let modem = counts.iter().find(|c| c.name == "modem").unwrap();
            assert!(modem.programs >= 1, "{name}: {modem:?}");
            // One connection, nothing completed before it: nothing to find.
            let spans = rewrites::step_spans(&plan, prog.storage());
            let view = [rewrites::Connection {
                attempt: 1,
                flash: 1,
                writes: prog.writes(),
                journal_after: Some(journal),
            }];
            assert!(rewrites::check(&spans, prog.storage().is_nand(), &view).is_empty());
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
