//! The executor: runs each [`Effect`] that touches a device or a file on its own thread and
//! answers through the console's channel with [`Msg`]s stamped on the runtime's [`Clock`].
//!
//! - `Identify`: open the device ([`open_device`]), read its boot ROM identity over Sahara
//!   (bounded by [`IDENTIFY_DEADLINE`]), answer `Msg::Identified`.
//! - `IdentifyNormal`: open the AT port of a normal-mode modem ([`crate::engine::identify::open_port`]) and read its
//!   identity ([`AtSession::identify`], every command bounded), answer `Msg::NormalIdentified`.
//! - `SwitchToEdl`: open its DM port and send the DIAG switch to EDL
//!   ([`DiagSession::switch_to_edl`]), answer `Msg::Switched`.
//! - `CheckPackage`: [`prepare`] the package (with the backup ledger given), keep the
//!   [`Prepared`] under a token, answer `Msg::Checked` with a [`PlanReview`] naming the token.
//! - `StartFlash`: the prepared plan and its programmer through [`flash::run`] over
//!   `open_device(snapshot)`, with a per-job cancel flag; every engine event becomes
//!   `Msg::Engine`, then exactly one `Msg::JobEnded` (also when the job could not start, or
//!   panicked). The run is recorded in the [`RunStore`] at its start, after every step and at
//!   its end.
//! - `StartStation`: check the package once (as `qrescue flash --all` does), then
//!   [`station::run`] on fresh buses from the [`StationSetup`] (the console's own device sources
//!   keep running; never the same device handle twice) with the modems the person confirmed,
//!   each selected by its EDL serial; every [`station::StationEvent`] becomes `Msg::Station`,
//!   then exactly one `Msg::StationEnded`. Its cancel flag is the run's job id.
//! - `Cancel`: set the job's flag (the engine stops at the next safe point: between steps).
//! - `Bench`: hand the action to the hook the demo gave.
//!
//! `Quit` and `Bell` concern the screen and the loop; [`Executor::execute`] hands them back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::device::classify::{classify, PortRole};
use crate::device::identity::DeviceId;
use crate::device::DeviceSnapshot;
use crate::engine::at::AtSession;
use crate::engine::diag::DiagSession;
use crate::engine::firehose::PowerMode;
use crate::engine::flash::{self, FlashJob};
use crate::engine::guards::{BackupLedger, MemoryLedger};
use crate::engine::outcome::{RunDevice, RunHandle, RunStart, RunStore};
use crate::engine::prepare::{prepare, PrepareRequest, Prepared, ProgrammerUse};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::transport::open::{open_device, OpenOptions};
use crate::transport::Transport;
use crate::{Error, ErrorKind};

use crate::engine::station::{self, Bus, Selection, Selector, StationConfig, Waits};
use crate::transport::usb::UsbSelector;

use super::msg::{BenchAction, Effect, JobId, Msg, PlanReview, Problem, StationDone};

/// The console's one clock: milliseconds since it started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// A clock that started at `start` (e.g. an emulated hub's start).
    pub fn from_instant(start: Instant) -> Clock {
        Clock { start }
    }

    pub fn started(&self) -> Instant {
        self.start
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Longest an identity query may take (a boot-looping modem's window is often shorter).
pub const IDENTIFY_DEADLINE: Duration = Duration::from_secs(20);

/// The demo's hands on the emulated modem.
pub type BenchHook = Box<dyn Fn(BenchAction) + Send + Sync>;

/// What a station run started from the console needs.
pub struct StationSetup {
    /// Fresh device sources for one run (host USB, each `--sim` socket, the demo's hubs): the
    /// run follows each bus with its own monitor, as `qrescue flash --all` does.
    pub buses: Box<dyn Fn() -> crate::Result<Vec<Bus>> + Send + Sync>,
    /// The folder of a new run (each modem's log, `summary.json`, `summary.csv`).
    pub folder: Box<dyn Fn() -> crate::Result<PathBuf> + Send + Sync>,
    /// How long each wait of the run may last.
    pub waits: Waits,
}

/// What the executor needs besides the channel and the clock.
pub struct ExecOptions {
    pub open: OpenOptions,
    /// Sahara settings of the identity query.
    pub identify: SaharaConfig,
    /// Verified backups on file (none until the backup store exists).
    pub ledger: Arc<dyn BackupLedger + Send + Sync>,
    /// Where flashes are recorded (None: not recorded).
    pub runs: Option<RunStore>,
    /// The log file, named in run records.
    pub log_file: Option<PathBuf>,
    pub bench: Option<BenchHook>,
    /// `console` or `demo`, for run records.
    pub tool: String,
    /// Where station runs get their buses and folders (None: the console offers none).
    pub station: Option<StationSetup>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            open: OpenOptions::default(),
            identify: SaharaConfig {
                info_deadline: IDENTIFY_DEADLINE,
                ..SaharaConfig::default()
            },
            ledger: Arc::new(MemoryLedger::new()),
            runs: None,
            log_file: None,
            bench: None,
            tool: "console".into(),
            station: None,
        }
    }
}

/// What the loop must do itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Done (or running on a thread).
    Handled,
    Bell,
    Quit {
        cancel_jobs: bool,
    },
}

/// A checked package kept for a flash.
struct Plan {
    prepared: Arc<Prepared>,
    package: PathBuf,
    revision: Option<String>,
}

struct Shared {
    tx: Sender<Msg>,
    clock: Clock,
    opts: ExecOptions,
    plans: Mutex<BTreeMap<u32, Plan>>,
    next_plan: AtomicU32,
    /// Cancel flags of running flash jobs.
    jobs: Mutex<BTreeMap<JobId, Arc<AtomicBool>>>,
    /// Serials learned by identity queries (the unit a backup is filed under).
    serials: Mutex<BTreeMap<DeviceId, String>>,
    /// Records of ended flashes, until the check after the flash is noted in them.
    records: Mutex<BTreeMap<JobId, RunHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn send(&self, msg: Msg) {
        // The console has gone: nobody is left to tell.
        let _ = self.tx.send(msg);
    }
}

/// Runs effects; cheap to share by reference.
pub struct Executor {
    shared: Arc<Shared>,
}

fn bug(what: &str) -> Problem {
    Problem {
        what: format!("qrescue hit an internal error while {what}"),
        why: "a bug stopped this task; nothing else was affected".into(),
        next: "Please report it with the log file; try again or restart qrescue".into(),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Executor {
    pub fn new(tx: Sender<Msg>, clock: Clock, opts: ExecOptions) -> Executor {
        Executor {
            shared: Arc::new(Shared {
                tx,
                clock,
                opts,
                plans: Mutex::new(BTreeMap::new()),
                next_plan: AtomicU32::new(1),
                jobs: Mutex::new(BTreeMap::new()),
                serials: Mutex::new(BTreeMap::new()),
                records: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    /// Flash jobs whose thread still runs.
    pub fn running(&self) -> Vec<JobId> {
        lock(&self.shared.jobs).keys().copied().collect()
    }

    /// Ask every running job to stop at its next safe point.
    pub fn cancel_all(&self) {
        for (job, flag) in lock(&self.shared.jobs).iter() {
            tracing::info!("stopping job {} at the next safe point", job.0);
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Note in job's run record what the check after the flash found (the model's final
    /// verdict: verified, not verified, failed, cancelled). Once per job.
    pub fn note_outcome(&self, job: JobId, text: String) {
        if let Some(mut r) = lock(&self.shared.records).remove(&job) {
            r.verified(text);
        }
    }

    /// Run one effect (device and file work on its own thread).
    pub fn execute(&self, effect: Effect) -> Control {
        match effect {
            Effect::Quit { cancel_jobs } => Control::Quit { cancel_jobs },
            Effect::Bell => Control::Bell,
            Effect::Identify { device, snapshot } => {
                self.spawn("identify", move |s| identify(s, device, &snapshot), {
                    move |s, p| {
                        s.send(Msg::Identified {
                            device,
                            result: Err(p),
                            t_ms: s.clock.now_ms(),
                        })
                    }
                });
                Control::Handled
            }
            Effect::IdentifyNormal { device, snapshot } => {
                self.spawn(
                    "identify-at",
                    move |s| identify_normal(s, device, &snapshot),
                    move |s, p| {
                        s.send(Msg::NormalIdentified {
                            device,
                            result: Err(p),
                            t_ms: s.clock.now_ms(),
                        })
                    },
                );
                Control::Handled
            }
            Effect::SwitchToEdl { device, snapshot } => {
                self.spawn(
                    "switch-to-edl",
                    move |s| switch_to_edl(s, device, &snapshot),
                    move |s, p| {
                        s.send(Msg::Switched {
                            device,
                            result: Err(p),
                            t_ms: s.clock.now_ms(),
                        })
                    },
                );
                Control::Handled
            }
            Effect::CheckPackage {
                token,
                device,
                package,
                modem_revision,
                override_phrase,
            } => {
                self.spawn(
                    "check-package",
                    move |s| check(s, token, device, package, modem_revision, override_phrase),
                    move |s, p| {
                        s.send(Msg::Checked {
                            token,
                            result: Err(p),
                            t_ms: s.clock.now_ms(),
                        })
                    },
                );
                Control::Handled
            }
            Effect::StartFlash {
                job,
                plan,
                device,
                snapshot,
            } => {
                let cancel = Arc::new(AtomicBool::new(false));
                lock(&self.shared.jobs).insert(job, cancel.clone());
                let spawned = self.spawn(
                    "flash",
                    move |s| {
                        let result = flash_job(s, job, plan, device, &snapshot, &cancel);
                        lock(&s.jobs).remove(&job);
                        s.send(Msg::JobEnded {
                            job,
                            result,
                            t_ms: s.clock.now_ms(),
                        });
                    },
                    move |s, p| {
                        lock(&s.jobs).remove(&job);
                        s.send(Msg::JobEnded {
                            job,
                            result: Err(p),
                            t_ms: s.clock.now_ms(),
                        })
                    },
                );
                if !spawned {
                    lock(&self.shared.jobs).remove(&job);
                }
                Control::Handled
            }
            Effect::StartStation {
                run,
                package,
                modem_revision,
                devices,
            } => {
                let cancel = Arc::new(AtomicBool::new(false));
                lock(&self.shared.jobs).insert(run, cancel.clone());
                let spawned = self.spawn(
                    "station",
                    move |s| {
                        let result =
                            station_job(s, run, &package, modem_revision, &devices, &cancel);
                        lock(&s.jobs).remove(&run);
                        s.send(Msg::StationEnded {
                            run,
                            result: result.map(Box::new),
                            t_ms: s.clock.now_ms(),
                        });
                    },
                    move |s, p| {
                        lock(&s.jobs).remove(&run);
                        s.send(Msg::StationEnded {
                            run,
                            result: Err(p),
                            t_ms: s.clock.now_ms(),
                        })
                    },
                );
                if !spawned {
                    lock(&self.shared.jobs).remove(&run);
                }
                Control::Handled
            }
            Effect::Cancel { job } => {
                match lock(&self.shared.jobs).get(&job) {
                    Some(flag) => {
                        tracing::info!("cancel asked for job {}: it stops at the next safe point (a partition being written is finished first)", job.0);
                        flag.store(true, Ordering::SeqCst);
                    }
                    None => tracing::debug!("cancel for job {} which is not running", job.0),
                }
                Control::Handled
            }
            Effect::Bench(action) => {
                match &self.shared.opts.bench {
                    Some(hook) => hook(action),
                    None => tracing::warn!(
                        "{action:?} is for the demo's emulated modem; there is none here"
                    ),
                }
                Control::Handled
            }
        }
    }

    /// Run `body` on a named thread; if it panics, or no thread can be started, `failed`
    /// answers in its place so the model is never left waiting. False when no thread started.
    fn spawn<F>(&self, name: &str, body: impl FnOnce(&Shared) + Send + 'static, failed: F) -> bool
    where
        F: FnOnce(&Shared, Problem) + Send + Clone + 'static,
    {
        let shared = self.shared.clone();
        let what = name.to_string();
        let on_panic = failed.clone();
        let started = std::thread::Builder::new()
            .name(format!("console-{name}"))
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&shared)));
                if let Err(p) = r {
                    tracing::error!("the {what} task panicked: {}", panic_text(&*p));
                    on_panic(&shared, bug(&what));
                }
            });
        match started {
            Ok(_) => true,
            Err(e) => {
                tracing::error!("cannot start a thread for {name}: {e}");
                failed(
                    &self.shared,
                    Problem {
                        what: format!("qrescue could not start the {name} task"),
                        why: format!("the system refused a new thread ({e})"),
                        next: "Close other programs and try again".into(),
                    },
                );
                false
            }
        }
    }
}

/// Ask a normal-mode modem who it is over its AT port (every command bounded).
fn identify_normal(s: &Shared, device: DeviceId, snapshot: &DeviceSnapshot) {
    let result = crate::engine::identify::open_port(snapshot, PortRole::At).map(|t| {
        let port = t.describe();
        let id = AtSession::new(t).identify();
        tracing::info!(
            "{device} over AT ({port}): revision {}, IMEI {}, +CFUN: {}",
            id.revision.as_ref().map_or("?", |r| r.text.as_str()),
            id.imei.as_ref().map_or("none", |i| i.digits.as_str()),
            id.cfun.map_or("?".to_string(), |c| c.level.to_string())
        );
        for p in &id.problems {
            tracing::warn!("{device}: {} failed: {}", p.command, p.error);
        }
        id
    });
    if let Err(e) = &result {
        tracing::warn!("identity of {device} over AT failed: {e}");
    }
    s.send(Msg::NormalIdentified {
        device,
        result: result.map_err(|e| Problem::from(&e)),
        t_ms: s.clock.now_ms(),
    });
}

/// Send the DIAG switch to EDL on the modem's DM port.
fn switch_to_edl(s: &Shared, device: DeviceId, snapshot: &DeviceSnapshot) {
    let result = crate::engine::identify::open_port(snapshot, PortRole::Dm).and_then(|t| {
        let port = t.describe();
        let how = DiagSession::new(t).switch_to_edl()?;
        tracing::info!(
            "{device}: DIAG switch to EDL sent on {port} ({how:?}); it re-enumerates as 05c6:9008"
        );
        Ok(())
    });
    if let Err(e) = &result {
        tracing::warn!("DIAG switch of {device} failed: {e}");
    }
    s.send(Msg::Switched {
        device,
        result: result.map_err(|e| Problem::from(&e)),
        t_ms: s.clock.now_ms(),
    });
}

/// Read the boot ROM's identity.
fn identify(s: &Shared, device: DeviceId, snapshot: &DeviceSnapshot) {
    let result = (|| {
        let t = open_device(snapshot, &s.opts.open)?;
        let mut session = SaharaSession::new(t, s.opts.identify.clone());
        session.read_info()
    })();
    if let Ok(info) = &result {
        if let Some(sn) = &info.serial_hex {
            lock(&s.serials).insert(device, sn.clone());
        }
    }
    if let Err(e) = &result {
        tracing::warn!("identity query of {device} failed: {e}");
    }
    s.send(Msg::Identified {
        device,
        result: result.map_err(|e| Problem::from(&e)),
        t_ms: s.clock.now_ms(),
    });
}

/// Check a package and keep its plan.
fn check(
    s: &Shared,
    token: u32,
    device: Option<DeviceId>,
    package: PathBuf,
    modem_revision: Option<String>,
    override_phrase: Option<String>,
) {
    let unit = device.and_then(|d| lock(&s.serials).get(&d).cloned());
    let req = PrepareRequest {
        package: package.clone(),
        modem_revision,
        override_phrase,
        ..PrepareRequest::default()
    };
    let result = prepare(&req, &*s.opts.ledger, unit.as_deref()).map(|p| {
        let plan = s.next_plan.fetch_add(1, Ordering::SeqCst);
        let review = review(plan, &package, &p);
        tracing::info!("checked {}: {}", package.display(), review.verdict.summary);
        lock(&s.plans).insert(
            plan,
            Plan {
                revision: review.package_revision.clone(),
                prepared: Arc::new(p),
                package: package.clone(),
            },
        );
        Box::new(review)
    });
    if let Err(e) = &result {
        tracing::warn!("checking {} failed: {e}", package.display());
    }
    s.send(Msg::Checked {
        token,
        result: result.map_err(|e| Problem::from(&e)),
        t_ms: s.clock.now_ms(),
    });
}

/// What the model sees of a prepared package.
pub fn review(token: u32, package: &std::path::Path, p: &Prepared) -> PlanReview {
    PlanReview {
        plan: token,
        package: package.to_path_buf(),
        package_revision: p.revision.as_ref().map(|r| r.text.clone()),
        verdict: p.verdict(),
        compat: p.compat.clone(),
        guard: p.guard.clone(),
        summary: p.summary.clone(),
        programmer: match &p.programmer {
            ProgrammerUse::Package { path, .. } => Some(path.clone()),
            ProgrammerUse::Override { path } => Some(path.display().to_string()),
            ProgrammerUse::Missing { .. } => None,
        },
        warnings: p.warnings.clone(),
    }
}

fn not_flashable(p: &Prepared) -> Error {
    p.verdict().to_error().unwrap_or_else(|| {
        Error::failure(
            "The checked package has no plan to run",
            "nothing can be flashed without a validated plan",
            "Check the package again",
        )
    })
}

/// One flash job, recorded in the run store. Returns the job's result for `JobEnded`.
fn flash_job(
    s: &Shared,
    job: JobId,
    token: u32,
    device: DeviceId,
    snapshot: &DeviceSnapshot,
    cancel: &AtomicBool,
) -> Result<(), Problem> {
    let plan = lock(&s.plans)
        .get(&token)
        .map(|p| (p.prepared.clone(), p.package.clone(), p.revision.clone()));
    let Some((prepared, package, revision)) = plan else {
        return Err(Problem {
            what: "The checked plan for this flash is no longer known".into(),
            why: "the package must be checked again before anything is written".into(),
            next: "Check the package again, then start the flash".into(),
        });
    };
    let class = classify(snapshot);
    let mut record = s.opts.runs.as_ref().and_then(|store| {
        store
            .begin(RunStart {
                tool: s.opts.tool.clone(),
                device: RunDevice {
                    id: Some(device.to_string()),
                    usb_id: Some(snapshot.id()),
                    location: Some(snapshot.location()),
                    serial: class
                        .serial(snapshot)
                        .map(str::to_string)
                        .or_else(|| lock(&s.serials).get(&device).cloned()),
                    port: None,
                },
                package: Some(package.display().to_string()),
                package_revision: revision,
                log_file: s.opts.log_file.clone(),
            })
            .map_err(|e| tracing::warn!("the run will not be recorded: {e}"))
            .ok()
    });
    if let Some(r) = &record {
        tracing::info!("job {}: recording the run in {}", job.0, r.path().display());
    }
    let result = (|| -> crate::Result<u64> {
        if !prepared.verdict().flashable {
            return Err(not_flashable(&prepared));
        }
        let plan = prepared
            .plan
            .as_ref()
            .ok_or_else(|| not_flashable(&prepared))?;
        // Files the flash reads in pieces are hashed again now; the others as they are sent.
        prepared.reverify()?;
        let fj = FlashJob {
            programmer: Some(prepared.programmer_image()?),
            reset: Some(PowerMode::Reset),
            ..FlashJob::default()
        };
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Interrupted,
                "Flash cancelled before it started",
                "nothing was sent to the modem",
                "Start it again when ready",
            ));
        }
        let t = open_device(snapshot, &s.opts.open)?;
        tracing::info!(
            "job {}: flashing {} over {}",
            job.0,
            package.display(),
            t.describe()
        );
        if let Some(r) = &mut record {
            r.set_port(t.describe());
        }
        let report = flash::run(
            t,
            plan,
            &fj,
            &mut |event| {
                if let Some(r) = &mut record {
                    r.on_event(&event);
                }
                s.send(Msg::Engine {
                    job,
                    event,
                    t_ms: s.clock.now_ms(),
                });
            },
            cancel,
        )?;
        Ok(report.bytes)
    })();
    match &result {
        Ok(bytes) => tracing::info!("job {}: every step ran ({bytes} bytes)", job.0),
        Err(e) => tracing::warn!("job {} ended: {e}", job.0),
    }
    if let Some(mut r) = record {
        r.finish(result.as_ref().map(|b| *b));
        let mut kept = lock(&s.records);
        // Only recent jobs wait for their verdict.
        while kept.len() >= 16 {
            kept.pop_first();
        }
        kept.insert(job, r);
    }
    result.map(|_| ()).map_err(|e| Problem::from(&e))
}

/// The selector that names one confirmed modem in a station run: its EDL serial, else where
/// it sits.
pub fn station_selector(snapshot: &DeviceSnapshot) -> Selector {
    match classify(snapshot).edl_serial {
        Some(sn) => Selector::Usb(UsbSelector::Serial(sn)),
        None => Selector::Usb(UsbSelector::Location(snapshot.location())),
    }
}

/// A station run: the package checked once, then every confirmed modem flashed in parallel.
fn station_job(
    s: &Shared,
    run: JobId,
    package: &std::path::Path,
    modem_revision: Option<String>,
    devices: &[DeviceSnapshot],
    cancel: &AtomicBool,
) -> Result<StationDone, Problem> {
    let result = (|| -> crate::Result<StationDone> {
        let setup = s.opts.station.as_ref().ok_or_else(|| {
            Error::failure(
                "This console cannot flash several modems at once",
                "it was started without a way to follow the buses for a station run",
                "Use `qrescue flash PACKAGE --all` instead",
            )
        })?;
        let req = PrepareRequest {
            package: package.to_path_buf(),
            modem_revision,
            ..PrepareRequest::default()
        };
        // One check for every modem: no unit, so no backup can lift a refusal (the guard then
        // refuses anything that would need one: the safe side).
        let p = prepare(&req, &*s.opts.ledger, None)?;
        if let Some(e) = p.verdict().to_error() {
            return Err(e);
        }
        let plan = p.plan.clone().ok_or_else(|| not_flashable(&p))?;
        p.reverify()?;
        let folder = (setup.folder)()?;
        let mut cfg = StationConfig::new(
            package.display().to_string(),
            plan,
            p.programmer_image()?,
            folder.clone(),
        );
        cfg.revision = p.revision.as_ref().map(|r| r.text.clone());
        cfg.waits = setup.waits.clone();
        cfg.runs = s.opts.runs.clone();
        let selection = Selection::Only(devices.iter().map(station_selector).collect());
        let buses = (setup.buses)()?;
        tracing::info!(
            "station run {}: {} modem(s) with {}; run folder {}",
            run.0,
            devices.len(),
            package.display(),
            folder.display()
        );
        let summary = station::run(
            buses,
            &selection,
            &cfg,
            &mut |e| {
                s.send(Msg::Station {
                    run,
                    event: e.clone(),
                    t_ms: s.clock.now_ms(),
                })
            },
            cancel,
        )?;
        tracing::info!(
            "station run {}: {} of {} modem(s) verified; summary in {}",
            run.0,
            summary.verified,
            summary.devices,
            folder.display()
        );
        Ok(StationDone { summary, folder })
    })();
    if let Err(e) = &result {
        tracing::warn!("station run {} ended: {e}", run.0);
    }
    result.map_err(|e| Problem::from(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn quit_and_bell_go_back_to_the_loop_and_unknown_jobs_are_ignored() {
        let (tx, rx) = mpsc::channel();
        let ex = Executor::new(tx, Clock::start(), ExecOptions::default());
        assert_eq!(
            ex.execute(Effect::Quit { cancel_jobs: true }),
            Control::Quit { cancel_jobs: true }
        );
        assert_eq!(ex.execute(Effect::Bell), Control::Bell);
        assert_eq!(
            ex.execute(Effect::Cancel { job: JobId(9) }),
            Control::Handled
        );
        assert!(ex.running().is_empty());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn bench_actions_reach_the_hook() {
        let (tx, _rx) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let ex = Executor::new(
            tx,
            Clock::start(),
            ExecOptions {
                bench: Some(Box::new(move |a| s2.lock().unwrap().push(a))),
                ..ExecOptions::default()
            },
        );
        ex.execute(Effect::Bench(BenchAction::BridgePinsAndPowerCycle));
        ex.execute(Effect::Bench(BenchAction::ReleasePins));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                BenchAction::BridgePinsAndPowerCycle,
                BenchAction::ReleasePins
            ]
        );
    }

    #[test]
    fn a_flash_of_an_unknown_plan_ends_with_a_problem() {
        let (tx, rx) = mpsc::channel();
        let ex = Executor::new(tx, Clock::start(), ExecOptions::default());
        let snapshot = crate::sim::usb_ids::boot_rom_snapshot(
            &crate::sim::profile::Profile::by_name("ec25")
                .unwrap()
                .for_unit(1),
            None,
            2,
        );
        ex.execute(Effect::StartFlash {
            job: JobId(1),
            plan: 77,
            device: DeviceId(1),
            snapshot,
        });
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            Msg::JobEnded {
                job,
                result: Err(p),
                ..
            } => {
                assert_eq!(job, JobId(1));
                assert!(p.what.contains("no longer known"), "{p:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_package_that_cannot_be_read_is_a_problem_not_a_hang() {
        let (tx, rx) = mpsc::channel();
        let ex = Executor::new(tx, Clock::start(), ExecOptions::default());
        ex.execute(Effect::CheckPackage {
            token: 3,
            device: None,
            package: "/nonexistent/package".into(),
            modem_revision: None,
            override_phrase: None,
        });
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            Msg::Checked {
                token: 3,
                result: Err(p),
                ..
            } => assert!(!p.what.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
