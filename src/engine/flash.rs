//! The flash runner: runs a validated [`FlashPlan`] (built in `engine::plan`) over any
//! [`Transport`]: Sahara upload of the programmer (unless one is already running:
//! [`attach_or_upload`] decides), Firehose configure, the geometry check and the host patches
//! that wait for the device's size ([`FlashPlan::for_device`]), every step, then a reset. Emits
//! [`EngineEvent`]s in the documented order and never renders anything. Image bytes are streamed
//! through the plan's [`PackageFiles`](crate::package::source::PackageFiles) (a folder or a zip).
//!
//! Nothing destructive is sent to the device until the whole plan validated against the
//! package and the device.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use serde::Serialize;

use crate::engine::connect::{attach_or_upload, Attach};
use crate::engine::events::{EngineEvent, ProgressThrottle, StepInfo, StepKind, Weights};
use crate::engine::firehose::{Erase, FirehoseOptions, FirehoseSession, PowerMode, StorageKind};
use crate::engine::journal::{Journal, Record};
use crate::engine::outcome::unix_ms_now;
use crate::engine::sahara::SaharaConfig;
use crate::transport::Transport;
use crate::{Error, ErrorKind};

/// The plan types, re-exported for callers that know them from here.
pub use crate::engine::plan::{
    storage_from_entries, FlashPlan, FlashStep, ImageSource, PlanInput, PlanSummary, StepExtent,
    StepSummary,
};

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

/// The steps one run announces: the upload (when a programmer is given), configure, the plan's
/// steps, the reset (when asked for).
fn step_infos(plan: &FlashPlan, job: &FlashJob) -> Vec<StepInfo> {
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
    infos
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
    let infos = step_infos(plan, job);
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

/// A configured session, the plan checked against the device, and where the plan's steps start
/// in the step list.
struct Opened<T: Transport> {
    fh: FirehoseSession<crate::transport::Pushback<T>>,
    plan: FlashPlan,
    uploaded: bool,
    max_payload: u32,
    /// Index (in the step list) of the plan's first step.
    index: usize,
}

/// The upload (or attach) and configure steps, up to the first destructive command.
fn open_session<T: Transport>(
    transport: T,
    plan: &FlashPlan,
    job: &FlashJob,
    infos: &[StepInfo],
    runner: &mut Runner<'_>,
) -> crate::Result<Opened<T>> {
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
    let (fh, negotiated, described, plan) = runner.step(index, &infos[index], |_| {
        let mut fh = match session.take() {
            Some(fh) => fh,
            None => {
                let t = transport.take().expect("the transport is used once");
                attach_or_upload(t, None, &job.sahara, job.firehose.clone(), &mut |_| {})?.0
            }
        };
        let n = fh.configure(plan.storage)?;
        let geo = device_geometry(&mut fh, plan)?;
        let ready = plan.for_device(&geo)?;
        Ok((fh, n, !geo.is_empty(), ready))
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
    Ok(Opened {
        fh,
        plan,
        uploaded,
        max_payload: negotiated.max_payload_to_target,
        index,
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
    let Opened {
        mut fh,
        plan,
        uploaded,
        max_payload,
        mut index,
    } = open_session(transport, plan, job, infos, runner)?;
    let mut streamer = plan.streamer();
    for step in &plan.steps {
        if cancel.load(Ordering::SeqCst) {
            return Err(interrupted_error(index, infos.len()));
        }
        runner.step(index, &infos[index], |progress| match step {
            FlashStep::Erase { cmd, .. } => fh.erase(cmd),
            FlashStep::Patch { cmd, .. } => fh.patch(cmd),
            FlashStep::SetBootable { drive } => fh.set_bootable(*drive),
            FlashStep::Program { cmd, source, .. } => {
                let mut reader = streamer.reader(source);
                fh.program(cmd, &mut reader, source.len(), progress)
            }
        })?;
        index += 1;
    }
    if let Some(mode) = job.reset {
        runner.step(index, &infos[index], |_| fh.power(mode, 1))?;
    }
    Ok((uploaded, Some(max_payload)))
}

/// What the programmer reports about the storage the plan touches: getstorageinfo for LUN 0,
/// then (eMMC/UFS) for every other LUN of the plan. A programmer that does not answer leaves
/// the map empty (or without that LUN); only a lost link or a stop request is an error.
fn device_geometry<T: Transport>(
    fh: &mut FirehoseSession<T>,
    plan: &FlashPlan,
) -> crate::Result<BTreeMap<u32, crate::engine::firehose::StorageInfo>> {
    let mut geo = BTreeMap::new();
    let mut luns = vec![0];
    if plan.storage != StorageKind::Nand {
        luns.extend(plan.luns().into_iter().filter(|l| *l != 0));
    }
    for lun in luns {
        match fh.storage_info(lun) {
            Ok(info) if !info.is_empty() => {
                geo.insert(lun, info);
            }
            Err(e) if matches!(e.kind, ErrorKind::DeviceLost | ErrorKind::Interrupted) => {
                return Err(e)
            }
            _ if lun == 0 => break,
            _ => {}
        }
    }
    Ok(geo)
}

// ------------------------------------------------------------------ journaled (resumable) runs

/// Default size of a confirmed chunk on eMMC/UFS: one program command, acknowledged by the
/// programmer and journaled before the next.
pub const DEFAULT_CHUNK_BYTES: u64 = 1 << 20;
/// Smallest chunk a boot-loop window shrinks chunks to (smaller ones cost more in round trips
/// than they save).
pub const MIN_CHUNK_BYTES: u64 = 64 * 1024;

/// A boot-loop window an attempt runs in.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When the unit is expected to leave the bus.
    pub closes_at: Instant,
    /// How long one window lasts (the loop detector's shortest window).
    pub length: Duration,
}

impl Window {
    /// Whether work estimated to take `est` still ends before the window closes, with a margin
    /// (a fifth of the estimate plus 20 ms).
    pub fn fits(&self, est: Duration) -> bool {
        Instant::now() + est + est / 5 + Duration::from_millis(20) <= self.closes_at
    }
}

/// Speeds measured so far, carried from attempt to attempt: the first window measures, the
/// later ones plan with it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RateEstimate {
    /// Image bytes sent and the time they took (program commands, final ACK included).
    pub program_bytes: u64,
    pub program_secs: f64,
    /// Steps without data (erase, patch, bootable drive): how many and their total time.
    pub fixed_steps: u32,
    pub fixed_secs: f64,
    /// Time from the unit's appearance to a configured programmer, last measured.
    pub setup_secs: Option<f64>,
}

impl RateEstimate {
    /// Image bytes per second, once something was measured.
    pub fn bytes_per_s(&self) -> Option<f64> {
        (self.program_bytes > 0 && self.program_secs > 1e-4)
            .then(|| self.program_bytes as f64 / self.program_secs)
    }

    /// Estimated time of work moving `bytes` image bytes (0: a step without data); `None` while
    /// nothing was measured.
    pub fn estimate(&self, bytes: u64) -> Option<Duration> {
        if bytes == 0 {
            return Some(if self.fixed_steps == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(self.fixed_secs / f64::from(self.fixed_steps))
            });
        }
        self.bytes_per_s()
            .map(|r| Duration::from_secs_f64(bytes as f64 / r))
    }

    fn add_program(&mut self, bytes: u64, took: Duration) {
        self.program_bytes += bytes;
        self.program_secs += took.as_secs_f64();
    }

    fn add_fixed(&mut self, took: Duration) {
        self.fixed_steps += 1;
        self.fixed_secs += took.as_secs_f64();
    }
}

/// One journaled attempt: the journal (already opened for this unit and plan, see
/// [`crate::engine::journal::JournalStore::open`]) and how to cut the work.
pub struct JournalRun<'j> {
    pub journal: &'j mut Journal,
    /// eMMC/UFS: program steps go in chunks of about this many bytes, each confirmed.
    pub chunk_bytes: u64,
    /// A boot-loop window: stop at a safe point before it closes.
    pub window: Option<Window>,
    /// Measured speeds, updated by the attempt.
    pub rate: &'j mut RateEstimate,
    /// When the unit appeared (setup time is measured from here; default: the attempt's start).
    pub appeared: Option<Instant>,
}

/// How an attempt ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptEnd {
    /// Every step of the plan is done (and the reset sent, when asked for).
    Completed,
    /// Stopped at a safe point because the boot-loop window is about to close.
    Paused,
}

/// What one journaled attempt did.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptReport {
    pub end: AttemptEnd,
    /// `bytes` counts the image bytes sent in this attempt.
    pub report: FlashReport,
    /// Plan steps skipped because an earlier attempt finished them.
    pub skipped: Vec<usize>,
    /// A program step continued after its last confirmed chunk: (plan step, sectors skipped).
    pub continued: Option<(usize, u64)>,
    /// A NAND program step that was erased again before being rewritten.
    pub reerased: Option<usize>,
    /// Plan steps not done yet.
    pub steps_left: usize,
}

/// Reads through, hashing what passes.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The erase that makes a NAND program step's pages writable again: the plan's erase of the
/// same partition (same LUN and start), else one over the step's own blocks.
fn reerase_cmd(plan: &FlashPlan, cmd: &crate::engine::firehose::Program) -> Erase {
    let start = crate::package::rawprogram::parse_number(&cmd.start_sector).ok();
    let same = plan.steps.iter().find_map(|s| match s {
        FlashStep::Erase { cmd: e, .. }
            if e.physical_partition == cmd.physical_partition
                && start.is_some()
                && e.start_sector
                    .as_deref()
                    .and_then(|x| crate::package::rawprogram::parse_number(x).ok())
                    == start =>
        {
            Some(e.clone())
        }
        _ => None,
    });
    same.unwrap_or_else(|| {
        let ppb = u64::from(cmd.pages_per_block.unwrap_or(1).max(1));
        let mut e = Erase::new(
            cmd.sector_size,
            cmd.num_sectors.div_ceil(ppb) * ppb,
            cmd.physical_partition,
            cmd.start_sector.clone(),
        );
        e.label = cmd.label.clone();
        e.pages_per_block = cmd.pages_per_block;
        e.last_sector = cmd.last_sector;
        e
    })
}

fn paused_error(name: &str, done: u64, total: u64) -> Error {
    Error::new(
        ErrorKind::Interrupted,
        format!("Paused {name} at a safe point ({done} of {total} bytes confirmed): the boot-loop window is about to close"),
        "the modem leaves the bus at the end of each window; everything confirmed so far is kept in the journal",
        "Nothing to do: the flash continues in the next window",
    )
}

/// Run one attempt of `plan` with a journal: steps the journal records as done are skipped
/// (with a log line and a zero-byte step), the interrupted step continues safely — on NAND it is
/// erased again and rewritten whole (a half-written NAND partition is never trusted), on
/// eMMC/UFS it continues after its last confirmed chunk — and every finished step, confirmed
/// chunk and the end are appended to the journal before the engine goes on.
///
/// Program steps on eMMC/UFS (at a literal start sector) are sent in chunks of
/// [`JournalRun::chunk_bytes`], each an acknowledged program command. With a
/// [`JournalRun::window`], work that would not end before the window closes is not started
/// (after at least one step or chunk of progress in this attempt): the attempt ends
/// [`AttemptEnd::Paused`]; chunks shrink to about a quarter of the usable window once a rate
/// is known.
///
/// Events: the same contract as [`run`], except that `Done.bytes` counts every image byte sent
/// in this attempt (a failed step's partial bytes too), and a pause ends the running step with a
/// `StepFailed` that says so (then `Done { ok: false }`). A failed attempt returns its error; the
/// caller reconnects (the unit came back) and calls this again with the same journal:
/// [`crate::engine::resume::flash_resumable`] does exactly that.
pub fn run_journaled<T: Transport>(
    transport: T,
    plan: &FlashPlan,
    job: &FlashJob,
    jr: &mut JournalRun<'_>,
    emit: &mut dyn FnMut(EngineEvent),
    cancel: &AtomicBool,
) -> crate::Result<AttemptReport> {
    if jr.journal.state().plan.step_names.len() != plan.steps.len() {
        return Err(Error::failure(
            "The journal does not belong to this plan",
            format!(
                "it records {} steps, the plan has {}",
                jr.journal.state().plan.step_names.len(),
                plan.steps.len()
            ),
            "This is a bug in the caller: open the journal for this plan (JournalStore::open)",
        ));
    }
    let infos = step_infos(plan, job);
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
    let mut att = AttemptState::default();
    let result = journaled_steps(
        transport,
        plan,
        job,
        &infos,
        &mut runner,
        jr,
        &mut att,
        cancel,
    );
    let elapsed_ms = runner.started.elapsed().as_millis() as u64;
    (runner.emit)(EngineEvent::Done {
        ok: matches!(result, Ok(AttemptEnd::Completed)),
        bytes: att.sent,
        elapsed_ms,
    });
    let state = jr.journal.state();
    let steps_left = plan.steps.len() - state.done.len().min(plan.steps.len());
    result.map(|end| AttemptReport {
        end,
        report: FlashReport {
            steps: infos.len(),
            bytes: att.sent,
            elapsed_ms,
            programmer_uploaded: att.uploaded,
            max_payload: att.max_payload,
        },
        skipped: att.skipped,
        continued: att.continued,
        reerased: att.reerased,
        steps_left,
    })
}

#[derive(Default)]
struct AttemptState {
    sent: u64,
    uploaded: bool,
    max_payload: Option<u32>,
    skipped: Vec<usize>,
    continued: Option<(usize, u64)>,
    reerased: Option<usize>,
    /// A step or chunk was completed in this attempt (a window never ends without progress).
    worked: bool,
    journal_warned: bool,
}

impl AttemptState {
    /// Append to the journal; a failure is logged once and the flash goes on (the journal then
    /// knows less than happened, which only makes a later resume redo more).
    fn record(&mut self, journal: &mut Journal, r: Record, log: &mut Vec<String>) {
        if let Err(e) = journal.append(r) {
            if !self.journal_warned {
                self.journal_warned = true;
                log.push(format!(
                    "{}: {} (the flash goes on; an interrupted flash may redo more)",
                    e.what, e.why
                ));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn journaled_steps<T: Transport>(
    transport: T,
    plan: &FlashPlan,
    job: &FlashJob,
    infos: &[StepInfo],
    runner: &mut Runner<'_>,
    jr: &mut JournalRun<'_>,
    att: &mut AttemptState,
    cancel: &AtomicBool,
) -> crate::Result<AttemptEnd> {
    let before = jr.journal.state().clone();
    let mut log = Vec::new();
    att.record(
        jr.journal,
        Record::Attempt {
            n: before.attempts + 1,
            unix_ms: unix_ms_now(),
        },
        &mut log,
    );
    let appeared = jr.appeared.unwrap_or(runner.started);
    let Opened {
        mut fh,
        plan: ready,
        uploaded,
        max_payload,
        mut index,
    } = open_session(transport, plan, job, infos, runner)?;
    att.uploaded = uploaded;
    att.max_payload = Some(max_payload);
    jr.rate.setup_secs = Some(appeared.elapsed().as_secs_f64());
    if !before.done.is_empty() || !before.chunks.is_empty() {
        (runner.emit)(EngineEvent::Log {
            message: format!(
                "Continuing an interrupted flash: {} of {} steps were written in earlier attempts (journal {})",
                before.done.len(),
                plan.steps.len(),
                jr.journal.path().display()
            ),
        });
    }
    let mut streamer = ready.streamer();
    for (i, step) in ready.steps.iter().enumerate() {
        for message in log.drain(..) {
            (runner.emit)(EngineEvent::Log { message });
        }
        if cancel.load(Ordering::SeqCst) {
            return Err(interrupted_error(index, infos.len()));
        }
        let info = &infos[index];
        if let Some(d) = before.done.get(&i) {
            let sha = d
                .sha256
                .as_deref()
                .map(|h| format!(", sha256 {}", &h[..h.len().min(16)]))
                .unwrap_or_default();
            (runner.emit)(EngineEvent::Log {
                message: format!(
                    "Skipping step {index} ({}): written in an earlier attempt{sha}",
                    info.name
                ),
            });
            (runner.emit)(EngineEvent::StepStarted {
                index,
                kind: info.kind,
                name: info.name.clone(),
                bytes: info.bytes,
            });
            (runner.emit)(EngineEvent::StepFinished {
                index,
                bytes: 0,
                elapsed_ms: 0,
                bytes_per_s: 0.0,
            });
            att.skipped.push(i);
            index += 1;
            continue;
        }
        let chunked = match step {
            FlashStep::Program { cmd, .. } => {
                ready.storage != StorageKind::Nand
                    && crate::package::rawprogram::parse_number(&cmd.start_sector).is_ok()
            }
            _ => false,
        };
        let chunk_bytes = chunk_size(jr);
        if let Some(w) = jr.window {
            let confirmed = before.chunks.get(&i).copied().unwrap_or(0);
            let next_bytes = match step {
                FlashStep::Program { cmd, .. } if chunked => {
                    let left =
                        cmd.num_sectors.saturating_sub(confirmed) * u64::from(cmd.sector_size);
                    left.min(chunk_bytes)
                }
                s => s.bytes(),
            };
            if att.worked && jr.rate.estimate(next_bytes).is_some_and(|e| !w.fits(e)) {
                (runner.emit)(EngineEvent::Log {
                    message: format!(
                        "Pausing before step {index} ({}): the boot-loop window closes in {:.1} s, too soon to finish it; the flash continues in the next window",
                        info.name,
                        w.closes_at.saturating_duration_since(Instant::now()).as_secs_f64()
                    ),
                });
                return Ok(AttemptEnd::Paused);
            }
        }
        let reerase = ready.storage == StorageKind::Nand
            && matches!(step, FlashStep::Program { .. })
            && (before.started.contains(&i) || jr.journal.write_failed());
        att.record(
            jr.journal,
            Record::Started {
                step: i,
                unix_ms: unix_ms_now(),
            },
            &mut log,
        );
        let resume_at = before.chunks.get(&i).copied().filter(|_| chunked);
        match (reerase, resume_at) {
            (true, _) => {
                (runner.emit)(EngineEvent::Log {
                    message: format!(
                        "Step {index} ({}) was cut off in an earlier attempt: erasing it again and rewriting it whole (a half-written NAND partition is never trusted)",
                        info.name
                    ),
                });
                att.reerased = Some(i);
            }
            (false, Some(k)) if k > 0 => {
                (runner.emit)(EngineEvent::Log {
                    message: format!(
                        "Continuing step {index} ({}) after its last confirmed chunk: {k} sectors were written in an earlier attempt",
                        info.name
                    ),
                });
                att.continued = Some((i, k));
            }
            _ => {}
        }
        let mut paused = false;
        let mut sent_now = 0u64;
        let t0 = Instant::now();
        let window = jr.window;
        let sha = {
            let rate = &mut *jr.rate;
            let journal = &mut *jr.journal;
            let worked = &mut att.worked;
            let (paused, sent_now, log) = (&mut paused, &mut sent_now, &mut log);
            let ready = &ready;
            let streamer = &mut streamer;
            let fh = &mut fh;
            runner.step(index, info, move |progress| match step {
                FlashStep::Erase { cmd, .. } => fh.erase(cmd).map(|_| None),
                FlashStep::Patch { cmd, .. } => fh.patch(cmd).map(|_| None),
                FlashStep::SetBootable { drive } => fh.set_bootable(*drive).map(|_| None),
                FlashStep::Program { cmd, source, .. } if !chunked => {
                    if reerase {
                        fh.erase(&reerase_cmd(ready, cmd))?;
                    }
                    let mut hr = HashingReader {
                        inner: streamer.reader(source),
                        hasher: Sha256::new(),
                    };
                    let t = Instant::now();
                    let mut last = 0;
                    let r = fh.program(cmd, &mut hr, source.len(), &mut |k| {
                        last = k;
                        progress(k);
                    });
                    *sent_now += last;
                    if r.is_ok() {
                        rate.add_program(last, t.elapsed());
                    }
                    r.map(|_| Some(hex::encode(hr.hasher.finalize())))
                }
                FlashStep::Program { cmd, source, name } => {
                    let mut ctx = Chunked {
                        step: i,
                        name,
                        chunk_bytes,
                        window,
                        journal,
                        rate,
                        worked,
                        sent_now,
                        log,
                    };
                    match ctx.program(
                        fh,
                        cmd,
                        source,
                        streamer,
                        resume_at.unwrap_or(0),
                        progress,
                    )? {
                        Some(sha) => Ok(Some(sha)),
                        None => {
                            *paused = true;
                            let ss = u64::from(cmd.sector_size);
                            let done = ctx.confirmed(i).saturating_mul(ss);
                            Err(paused_error(name, done, cmd.num_sectors * ss))
                        }
                    }
                }
            })
        };
        att.sent += sent_now;
        let sha = match sha {
            Ok(sha) => sha,
            Err(_) if paused => {
                for message in log.drain(..) {
                    (runner.emit)(EngineEvent::Log { message });
                }
                return Ok(AttemptEnd::Paused);
            }
            Err(e) => return Err(e),
        };
        if !matches!(step, FlashStep::Program { .. }) {
            jr.rate.add_fixed(t0.elapsed());
        }
        att.worked = true;
        att.record(
            jr.journal,
            Record::StepDone {
                step: i,
                bytes: step.bytes(),
                sha256: sha,
                unix_ms: unix_ms_now(),
            },
            &mut log,
        );
        index += 1;
    }
    att.record(
        jr.journal,
        Record::Finished {
            unix_ms: unix_ms_now(),
        },
        &mut log,
    );
    for message in log.drain(..) {
        (runner.emit)(EngineEvent::Log { message });
    }
    if let Some(mode) = job.reset {
        runner.step(index, &infos[index], |_| fh.power(mode, 1))?;
    }
    Ok(AttemptEnd::Completed)
}

/// Longest a chunk should take at the measured rate, boot loop or not: a slow link still gets
/// a confirmation (and a resume point) at least this often.
pub const MAX_CHUNK_TIME: Duration = Duration::from_millis(500);

/// The chunk size for this attempt: [`JournalRun::chunk_bytes`], once a rate is known at most
/// [`MAX_CHUNK_TIME`] of transfer, and in a boot-loop window at most about a quarter of the
/// usable window (never below [`MIN_CHUNK_BYTES`]).
fn chunk_size(jr: &JournalRun<'_>) -> u64 {
    let base = jr.chunk_bytes.max(1);
    let Some(rate) = jr.rate.bytes_per_s() else {
        return base;
    };
    let mut secs = MAX_CHUNK_TIME.as_secs_f64();
    if let Some(w) = jr.window {
        let usable = (w.length.as_secs_f64() - jr.rate.setup_secs.unwrap_or(0.0)).max(0.0);
        secs = secs.min(usable / 4.0);
    }
    base.min(((rate * secs) as u64).max(MIN_CHUNK_BYTES))
}

/// A program step sent in confirmed chunks.
struct Chunked<'a> {
    step: usize,
    name: &'a str,
    chunk_bytes: u64,
    window: Option<Window>,
    journal: &'a mut Journal,
    rate: &'a mut RateEstimate,
    worked: &'a mut bool,
    sent_now: &'a mut u64,
    log: &'a mut Vec<String>,
}

impl Chunked<'_> {
    fn confirmed(&self, step: usize) -> u64 {
        self.journal.state().chunks.get(&step).copied().unwrap_or(0)
    }

    /// Send `cmd` from sector `from` on, chunk by chunk. `Some(sha256 of the image)` when the
    /// step is done, `None` when paused at a chunk boundary for the window.
    fn program<T: Transport>(
        &mut self,
        fh: &mut FirehoseSession<T>,
        cmd: &crate::engine::firehose::Program,
        source: &ImageSource,
        streamer: &mut crate::engine::plan::SourceStreamer<'_>,
        from: u64,
        progress: &mut dyn FnMut(u64),
    ) -> crate::Result<Option<String>> {
        let ss = u64::from(cmd.sector_size.max(1));
        let start = crate::package::rawprogram::parse_number(&cmd.start_sector).map_err(|_| {
            Error::failure(
                format!("{} has no plain start sector", self.name),
                "only programs at a literal start sector are sent in chunks",
                "This is a bug in qrescue; please report it",
            )
        })?;
        let total = cmd.num_sectors;
        let data_len = source.len();
        let mut hr = HashingReader {
            inner: streamer.reader(source),
            hasher: Sha256::new(),
        };
        let mut done = from.min(total);
        // The confirmed part is not sent again, but read (and hashed) to keep the stream in step.
        let skip = done.saturating_mul(ss).min(data_len);
        let skipped =
            std::io::copy(&mut (&mut hr).take(skip), &mut std::io::sink()).map_err(|e| {
                Error::failure(
                    format!("Cannot read the image of {}", self.name),
                    e.to_string(),
                    "Check the package files and run the flash again",
                )
            })?;
        if skipped < skip {
            return Err(Error::failure(
                format!(
                    "The image of {} is shorter than when the plan was made",
                    self.name
                ),
                format!("it ended after {skipped} of {skip} bytes"),
                "The package changed during the flash; run it again with --fresh",
            ));
        }
        progress(done * ss);
        let chunk = (self.chunk_bytes / ss).max(1);
        while done < total {
            let n = chunk.min(total - done);
            if let Some(w) = self.window {
                let est = self.rate.estimate(n * ss);
                if *self.worked && est.is_some_and(|e| !w.fits(e)) {
                    return Ok(None);
                }
            }
            let mut sub = cmd.clone();
            sub.start_sector = (start + done).to_string();
            sub.num_sectors = n;
            sub.last_sector = None;
            let off = done * ss;
            let sub_len = data_len.saturating_sub(off).min(n * ss);
            let t = Instant::now();
            let mut last = 0;
            let r = fh.program(&sub, &mut hr, sub_len, &mut |k| {
                last = k;
                progress(off + k);
            });
            *self.sent_now += last;
            r?;
            // Only whole transfers count: a cut one measures the cut, not the link.
            self.rate.add_program(last, t.elapsed());
            done += n;
            *self.worked = true;
            if let Err(e) = self.journal.append(Record::Chunk {
                step: self.step,
                sectors_done: done,
                unix_ms: unix_ms_now(),
            }) {
                if self.log.is_empty() {
                    self.log.push(format!("{}: {}", e.what, e.why));
                }
            }
        }
        Ok(Some(hex::encode(hr.hasher.finalize())))
    }
}
