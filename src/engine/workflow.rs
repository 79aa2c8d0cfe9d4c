//! The workflow driver: runs a [`crate::workflow`] state machine's actions over a real (or
//! emulated) modem. All the I/O of the guided workflows lives here; the machines stay pure.
//!
//! - Devices come from a [`DeviceSource`] through a [`Monitor`]: the unit is followed across
//!   the normal → 9008 switch and resets by the monitor's identity (EDL serial, companion
//!   ports, history), never by its port path.
//! - Normal-mode ports are found by their interface number ([`classify`]'s AT and DM roles)
//!   and opened as ttys; EDL ports through [`crate::transport::open`].
//! - Identify over AT ([`AtSession::identify`]), the DIAG switch
//!   ([`DiagSession::switch_to_edl`]), Sahara identity ([`backup::run::identify`]), the
//!   package check ([`prepare`] with the backup store's [`StoreLedger`]), programmer upload
//!   ([`attach_or_upload`]), backup ([`backup::run::take_backup`]), flash
//!   ([`flash_resumable`]: journaled by the unit's EDL serial in [`Setup::journals`], a run
//!   record per attempt in [`Setup::runs`]; when the link drops mid-flash the driver waits for
//!   the same unit back in 9008 and the flash continues where it stopped, and the reset ends the
//!   flash), restore ([`backup::run::restore`]) and the RAM dump ([`SaharaSession::ramdump`]).
//! - Every wait is bounded (the machine's `within_ms`, each protocol's own timeouts).
//! - Progress goes out as serde-serialisable [`WorkflowEvent`]s through a callback; nothing
//!   here prints. Questions go to the `ask` callback (the CLI answers `--yes` or asks).
//!
//! Action failures become [`Observation::Failed`] (the machine decides); only a device source
//! that fails ends the run with an error.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backup::run::{self as backup_run, BackupOptions};
use crate::backup::store::{BackupKind, Store, StoreLedger, StoredBackup};
use crate::backup::Identity;
use crate::device::classify::{classify, Mode as DeviceMode, PortRole};
use crate::device::identity::DeviceId;
use crate::device::monitor::{Monitor, Update as BusUpdate};
use crate::device::{DeviceSnapshot, DeviceSource};
use crate::engine::at::NormalIdentity;
use crate::engine::connect::attach_or_upload;
use crate::engine::diag::DiagSession;
use crate::engine::events::EngineEvent;
use crate::engine::firehose::{FirehoseOptions, FirehoseSession, PowerMode, StorageKind};
use crate::engine::flash::FlashJob;
use crate::engine::guards::BackupLedger;
use crate::engine::identify::{identify_over_at, AtTries};
use crate::engine::journal::{JournalStore, Opening, UnitKey};
use crate::engine::outcome::{RunDevice, RunHandle, RunStart, RunStore};
use crate::engine::prepare::{prepare, PrepareRequest, Prepared, Stage};
use crate::engine::resume::{
    flash_resumable, AttemptRecords, Link as ResumeLink, ResumeNotice, ResumeOptions,
};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::transport::open::{open_device, open_tty, OpenOptions};
use crate::transport::{Pushback, Transport};
use crate::workflow::crash::{Crash, CrashTiming};
use crate::workflow::restore::{Restore, RestoreTarget, RestoreTiming};
use crate::workflow::unbrick::{Unbrick, UnbrickTiming};
use crate::workflow::update::{Update, UpdateTiming};
use crate::workflow::{
    Action, Channel, Machine, Mode, Observation, PackageCheck, Question, Said, Stop, StopKind,
    Verdict, Want,
};
use crate::{Error, ErrorKind};

/// A port as the driver holds it.
pub type Link = Box<dyn Transport>;
type Fh = FirehoseSession<Pushback<Link>>;

/// Where the modem's link stands between actions.
enum Held {
    None,
    /// The boot ROM after Sahara command mode (a fresh HELLO pushed back).
    Sahara(Link),
    /// A programmer is running.
    Firehose(Box<Fh>),
}

/// What the driver needs besides the machine.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The package (its `package` is the path; `modem_revision` is filled from the modem).
    pub request: Option<PrepareRequest>,
    /// The backup store: backups are taken into it and the guard asks it.
    pub store: Store,
    /// RAM dumps go into new folders under this one.
    pub dump_dir: PathBuf,
    /// A programmer image to use when there is no package (restore).
    pub programmer: Option<Vec<u8>>,
    /// How EDL ports are opened (lock folder).
    pub open: OpenOptions,
    /// How long the first look for the modem lasts.
    pub find_within: Duration,
    /// AT identify attempts after the modem came back (a module's AT port may need a moment
    /// after it enumerates), with this pause between them.
    pub identify_tries: u32,
    pub identify_pause: Duration,
    /// Wraps every port the driver opens (the CLI's session recorder).
    pub wrap: Option<fn(Link) -> Link>,
    /// Where the flash journal is kept, by the unit's EDL serial (`qrescue update` gives
    /// [`JournalStore::default_location`], as `qrescue flash` does, so an update cut short
    /// continues on the next run). `None`: a folder for this flash only — a drop is still
    /// resumed, a later run starts over.
    pub journals: Option<JournalStore>,
    /// Where each flash attempt leaves its run record for `qrescue status` (None: nowhere).
    pub runs: Option<RunStore>,
    /// How long the flash waits for the unit to come back in 9008 after its link dropped.
    pub flash_return: Duration,
}

impl Setup {
    pub fn new(store: Store, dump_dir: PathBuf) -> Setup {
        Setup {
            request: None,
            store,
            dump_dir,
            programmer: None,
            open: OpenOptions::default(),
            find_within: Duration::from_secs(5),
            identify_tries: 5,
            identify_pause: Duration::from_secs(2),
            wrap: None,
            journals: None,
            runs: None,
            flash_return: Duration::from_secs(60),
        }
    }
}

/// How long each workflow waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub update: UpdateTiming,
    pub unbrick: UnbrickTiming,
    pub crash: CrashTiming,
    pub restore: RestoreTiming,
}

/// Which workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Chosen by the modem's mode: normal → update, 9008 → unbrick, 900e → crash.
    Auto,
    Update,
    Unbrick,
    Crash,
    Restore(RestoreTarget),
}

/// A workflow machine of any kind.
pub enum AnyMachine {
    Update(Update),
    Unbrick(Unbrick),
    Crash(Crash),
    Restore(Restore),
}

impl AnyMachine {
    /// The machine for `kind` and the mode the modem is in.
    pub fn new(kind: &Kind, mode: Mode, t: &Timings) -> AnyMachine {
        match (kind, mode) {
            (Kind::Update, _) | (Kind::Auto, Mode::Normal) => {
                AnyMachine::Update(Update::new(t.update))
            }
            (Kind::Unbrick, _) | (Kind::Auto, Mode::Edl) => {
                AnyMachine::Unbrick(Unbrick::new(t.unbrick))
            }
            (Kind::Crash, _) | (Kind::Auto, Mode::CrashDump) => {
                AnyMachine::Crash(Crash::new(t.crash))
            }
            (Kind::Restore(target), _) => {
                AnyMachine::Restore(Restore::new(target.clone(), t.restore))
            }
        }
    }

    fn inner(&mut self) -> &mut dyn Machine {
        match self {
            AnyMachine::Update(m) => m,
            AnyMachine::Unbrick(m) => m,
            AnyMachine::Crash(m) => m,
            AnyMachine::Restore(m) => m,
        }
    }
}

impl Machine for AnyMachine {
    fn name(&self) -> &'static str {
        match self {
            AnyMachine::Update(m) => m.name(),
            AnyMachine::Unbrick(m) => m.name(),
            AnyMachine::Crash(m) => m.name(),
            AnyMachine::Restore(m) => m.name(),
        }
    }
    fn step(&mut self, obs: Observation) -> Action {
        self.inner().step(obs)
    }
}

/// The modem as it was found.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub id: Option<DeviceId>,
    pub mode: Mode,
    pub usb_id: String,
    pub location: String,
    /// The port people would name (the Sahara tty in EDL, the AT tty in normal mode).
    pub port: Option<String>,
    pub dm_port: bool,
}

/// How a workflow ended.
#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    pub workflow: String,
    /// The terminal action: `done` with the verdict, or `stop`.
    pub end: Action,
    /// RAM dumps saved on the way.
    pub dumps: Vec<String>,
    /// The backup taken on the way, if any.
    pub backup: Option<String>,
}

impl Finished {
    /// "flashed and verified".
    pub fn verified(&self) -> bool {
        matches!(&self.end, Action::Done { verdict } if verdict.is_verified())
    }

    pub fn verdict(&self) -> Option<&Verdict> {
        match &self.end {
            Action::Done { verdict } => Some(verdict),
            _ => None,
        }
    }

    pub fn stop(&self) -> Option<&Stop> {
        match &self.end {
            Action::Stop { stop } => Some(stop),
            _ => None,
        }
    }

    /// `None` only for "flashed and verified"; otherwise the error a command line exits with.
    pub fn to_error(&self) -> Option<Error> {
        match &self.end {
            Action::Done {
                verdict: Verdict::Verified { .. },
            } => None,
            Action::Done {
                verdict: Verdict::NotVerified { failures, next },
            } => Some(Error::new(
                ErrorKind::VerifyMismatch,
                self.end.what(),
                format!(
                    "the flash was written, but the modem's return does not prove it worked ({} check(s) failed)",
                    failures.len()
                ),
                next.join("; "),
            )),
            Action::Stop { stop } => {
                let kind = match stop.kind {
                    StopKind::Lost => ErrorKind::DeviceLost,
                    _ => ErrorKind::Failure,
                };
                Some(Error::new(kind, &stop.what, &stop.why, &stop.next))
            }
            _ => Some(Error::failure(
                "The workflow ended without a verdict",
                "this is a bug in qrescue",
                "Please report it with --log-file",
            )),
        }
    }
}

/// What the driver tells its front end.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkflowEvent {
    /// The modem the workflow runs on, and which workflow.
    Started { workflow: String, found: Found },
    /// A device event seen while waiting (or looking for the modem).
    Device {
        t_ms: u64,
        change: String,
        usb_id: Option<String>,
        mode: Option<String>,
        tty: Option<String>,
        /// The unit this workflow follows.
        this_unit: bool,
    },
    /// A step begins: what it does and why.
    StepStarted {
        step: usize,
        action: Action,
        what: String,
        why: String,
    },
    /// Progress of an engine run inside a step (flash, backup, restore).
    Engine { step: usize, engine: EngineEvent },
    /// A step ended: what it found (a line per fact) and the observation fed to the machine.
    StepFinished {
        step: usize,
        action: String,
        ok: bool,
        lines: Vec<String>,
        observed: Observation,
    },
    /// What the resumable flash tells between attempts (its journal, a wait for the unit
    /// after a drop, the next attempt).
    Resume { step: usize, notice: ResumeNotice },
    /// A question and the answer given.
    Asked { question: Question, yes: bool },
    /// The end: the verdict or the stop.
    Finished { finished: Finished },
}

/// The driver ([module notes](self)).
pub struct Driver<'a> {
    src: &'a mut dyn DeviceSource,
    setup: &'a Setup,
    emit: &'a mut dyn FnMut(&WorkflowEvent),
    ask: &'a mut dyn FnMut(&Question) -> bool,
    cancel: &'a AtomicBool,
    monitor: Monitor,
    started: Instant,
    unit: Option<DeviceId>,
    current: Option<DeviceSnapshot>,
    held: Held,
    normal: Option<NormalIdentity>,
    edl: Option<Identity>,
    prepared: Option<Prepared>,
    dumps: Vec<String>,
    backup: Option<String>,
    lines: Vec<String>,
    step: usize,
    /// The workflow running (run records name it).
    workflow: &'static str,
    /// The run records of the flash's attempts while it runs.
    records: Option<AttemptRecords>,
    /// The record of the last flash attempt (the verdict is noted in it).
    run_record: Option<RunHandle>,
    /// The flash ended with the reset (the Reset action has nothing left to send).
    reset_by_flash: bool,
}

fn mode_of(m: &DeviceMode) -> Option<Mode> {
    match m {
        DeviceMode::QuectelNormal { .. } => Some(Mode::Normal),
        DeviceMode::Edl => Some(Mode::Edl),
        DeviceMode::CrashDump => Some(Mode::CrashDump),
        _ => None,
    }
}

fn said(e: &Error) -> Said {
    Said {
        what: e.what.clone(),
        why: e.why.clone(),
        next: e.next.clone(),
    }
}

fn port_of(d: &DeviceSnapshot, role: PortRole) -> Option<String> {
    classify(d)
        .port(role)
        .and_then(|p| p.tty.clone())
        .filter(|t| !t.is_empty())
}

impl<'a> Driver<'a> {
    pub fn new(
        src: &'a mut dyn DeviceSource,
        setup: &'a Setup,
        emit: &'a mut dyn FnMut(&WorkflowEvent),
        ask: &'a mut dyn FnMut(&Question) -> bool,
        cancel: &'a AtomicBool,
    ) -> Driver<'a> {
        Driver {
            src,
            setup,
            emit,
            ask,
            cancel,
            monitor: Monitor::default(),
            started: Instant::now(),
            unit: None,
            current: None,
            held: Held::None,
            normal: None,
            edl: None,
            prepared: None,
            dumps: Vec::new(),
            backup: None,
            lines: Vec::new(),
            step: 0,
            workflow: "workflow",
            records: None,
            run_record: None,
            reset_by_flash: false,
        }
    }

    /// The unit's latest snapshot.
    pub fn current(&self) -> Option<&DeviceSnapshot> {
        self.current.as_ref()
    }

    /// The next event, observed by the monitor and told to the front end.
    fn next_update(&mut self, wait: Duration) -> crate::Result<Option<BusUpdate>> {
        let Some(mut ev) = self.src.next_event(wait)? else {
            return Ok(None);
        };
        // One clock for every source: the time the event reached us.
        ev.t_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let u = self.monitor.observe(&ev);
        if u.relevant() {
            (self.emit)(&WorkflowEvent::Device {
                t_ms: u.t_ms,
                change: u.event.to_string(),
                usb_id: u.device.as_ref().map(|d| d.id()),
                mode: u.class.as_ref().map(|c| c.mode.tag().to_string()),
                tty: u.device.as_ref().and_then(|d| {
                    port_of(d, PortRole::Sahara).or_else(|| port_of(d, PortRole::At))
                }),
                this_unit: self.unit.is_some() && u.id == self.unit,
            });
        }
        Ok(Some(u))
    }

    fn interrupted(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Look for a modem in a mode a workflow handles (in `want` when given), at most
    /// `setup.find_within`. The devices already present come first from every source.
    pub fn find(&mut self, want: Option<Mode>) -> crate::Result<Found> {
        let end = Instant::now() + self.setup.find_within;
        let mut others: Vec<String> = Vec::new();
        loop {
            if self.interrupted() {
                return Err(Error::new(
                    ErrorKind::Interrupted,
                    "Stopped while looking for the modem",
                    "Ctrl-C",
                    "Nothing was changed; run the command again",
                ));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seen = if others.is_empty() {
                    "no Quectel or Qualcomm modem was seen".to_string()
                } else {
                    format!("seen: {}", others.join(", "))
                };
                return Err(Error::new(
                    ErrorKind::NoDevice,
                    match want {
                        Some(m) => format!("No modem in {} was found", m.words()),
                        None => "No modem in normal mode, EDL (9008) or crash-dump mode (900e) was found".to_string(),
                    },
                    seen,
                    "Plug the modem in and check `qrescue list`; for an emulator give --sim SOCKET (printed by `qrescue sim`)",
                ));
            }
            let Some(u) = self.next_update(left.min(Duration::from_millis(200)))? else {
                if self.src.finished() {
                    return Err(Error::new(
                        ErrorKind::NoDevice,
                        "No modem was found",
                        "the device source has nothing more to tell",
                        "Plug the modem in and run again",
                    ));
                }
                continue;
            };
            if u.event == "vanish" || !u.relevant() {
                continue;
            }
            let (Some(d), Some(c)) = (&u.device, &u.class) else {
                continue;
            };
            let Some(mode) = mode_of(&c.mode) else {
                others.push(format!("{} ({})", d.id(), c.label));
                continue;
            };
            if want.is_some_and(|w| w != mode) {
                others.push(format!("{} in {}", d.id(), mode.words()));
                continue;
            }
            self.unit = u.id;
            self.current = Some(d.clone());
            return Ok(self.found(mode));
        }
    }

    fn found(&self, mode: Mode) -> Found {
        let d = self.current.as_ref();
        Found {
            id: self.unit,
            mode,
            usb_id: d.map(|d| d.id()).unwrap_or_default(),
            location: d.map(|d| d.location()).unwrap_or_default(),
            port: d.and_then(|d| match mode {
                Mode::Normal => port_of(d, PortRole::At),
                _ => port_of(d, PortRole::Sahara),
            }),
            dm_port: d.and_then(|d| port_of(d, PortRole::Dm)).is_some(),
        }
    }

    /// Find the modem, pick the workflow (`kind`, or by its mode) and run it to its end.
    pub fn run_kind(&mut self, kind: &Kind, timings: &Timings) -> crate::Result<Finished> {
        let want = match kind {
            Kind::Auto | Kind::Restore(_) => None,
            Kind::Update => Some(Mode::Normal),
            Kind::Unbrick => Some(Mode::Edl),
            Kind::Crash => Some(Mode::CrashDump),
        };
        let found = self.find(want)?;
        let mut m = AnyMachine::new(kind, found.mode, timings);
        Ok(self.run(&mut m, found))
    }

    /// Run `machine` on the modem `found` until a terminal action.
    pub fn run(&mut self, machine: &mut dyn Machine, found: Found) -> Finished {
        self.workflow = machine.name();
        (self.emit)(&WorkflowEvent::Started {
            workflow: machine.name().to_string(),
            found: found.clone(),
        });
        let mut obs = Observation::Seen {
            mode: found.mode,
            dm_port: found.dm_port,
        };
        loop {
            let a = machine.step(obs);
            if a.is_terminal() {
                self.release();
                if let (Some(r), Action::Done { verdict }) = (&mut self.run_record, &a) {
                    r.verified(verdict.headline());
                }
                let finished = Finished {
                    workflow: machine.name().to_string(),
                    end: a,
                    dumps: self.dumps.clone(),
                    backup: self.backup.clone(),
                };
                (self.emit)(&WorkflowEvent::Finished {
                    finished: finished.clone(),
                });
                return finished;
            }
            self.step += 1;
            let step = self.step;
            (self.emit)(&WorkflowEvent::StepStarted {
                step,
                action: a.clone(),
                what: a.what(),
                why: a.why().to_string(),
            });
            self.lines.clear();
            obs = self.perform(&a);
            (self.emit)(&WorkflowEvent::StepFinished {
                step,
                action: a.name().to_string(),
                ok: !matches!(obs, Observation::Failed { .. }),
                lines: std::mem::take(&mut self.lines),
                observed: obs.clone(),
            });
        }
    }

    /// Run one action; failures come back as [`Observation::Failed`].
    pub fn perform(&mut self, a: &Action) -> Observation {
        if self.interrupted() && !matches!(a, Action::Reset) {
            return Observation::Failed {
                action: a.name().into(),
                said: Said {
                    what: "Stopped on request (Ctrl-C)".into(),
                    why: "the workflow ends between steps".into(),
                    next:
                        "Look at the modem with `qrescue watch`; run the workflow again to finish"
                            .into(),
                },
            };
        }
        let r = match a {
            Action::Identify { over: Channel::At } => self.identify_at(1),
            Action::Identify {
                over: Channel::Sahara,
            } => self.identify_sahara(),
            Action::CheckPackage {
                unit,
                modem_revision,
                imei,
            } => self.check_package(unit.clone(), modem_revision.clone(), imei.clone()),
            Action::Backup => self.take_backup(),
            Action::SwitchToEdl => self.switch_to_edl(),
            Action::Upload => self.upload(),
            Action::Flash => self.flash(),
            Action::Reset => self.reset(),
            Action::WaitFor { want, within_ms } => {
                self.wait_for(*want, Duration::from_millis(*within_ms))
            }
            Action::Verify => self.identify_at(self.setup.identify_tries.max(1)),
            Action::RamDump => self.ramdump(),
            Action::Restore { backup } => self.restore(backup),
            Action::AskPerson { question } => Ok(self.ask_person(question)),
            Action::Done { .. } | Action::Stop { .. } => Err(Error::failure(
                "A terminal action has nothing to run",
                "this is a bug in qrescue",
                "Please report it",
            )),
        };
        match r {
            Ok(o) => o,
            Err(e) => {
                if matches!(e.kind, ErrorKind::DeviceLost) {
                    self.release();
                }
                Observation::Failed {
                    action: a.name().into(),
                    said: said(&e),
                }
            }
        }
    }

    /// Close whatever port is held (before the modem re-enumerates).
    fn release(&mut self) {
        self.held = Held::None;
    }

    fn wrapped(&self, t: Link) -> Link {
        match self.setup.wrap {
            Some(w) => w(t),
            None => t,
        }
    }

    /// Open the unit's Sahara/Firehose port (locked against a second opener).
    fn open_edl(&self) -> crate::Result<Link> {
        Ok(self.wrapped(open_device(self.snapshot()?, &self.setup.open)?))
    }

    /// Open a normal-mode tty.
    fn open_serial(&self, tty: &str) -> crate::Result<Link> {
        Ok(self.wrapped(Box::new(open_tty(Path::new(tty))?)))
    }

    fn snapshot(&self) -> crate::Result<&DeviceSnapshot> {
        self.current.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::NoDevice,
                "The modem is not known yet",
                "no appearance was seen",
                "Run the workflow again",
            )
        })
    }

    fn tty_for(&self, role: PortRole) -> crate::Result<String> {
        let d = self.snapshot()?;
        port_of(d, role).ok_or_else(|| {
            Error::new(
                ErrorKind::NoDevice,
                format!("The modem shows no {} port", role.label()),
                format!(
                    "{} at {} has no tty bound to that interface",
                    d.id(),
                    d.location()
                ),
                "Check that the option/qcserial driver is bound (qrescue list), or that nothing else holds the port (qrescue preflight)",
            )
        })
    }

    // ----- actions ------------------------------------------------------------------------

    fn identify_at(&mut self, tries: u32) -> crate::Result<Observation> {
        let snapshot = self.snapshot()?.clone();
        let tries = AtTries {
            tries,
            pause: self.setup.identify_pause,
        };
        let id = identify_over_at(
            &snapshot,
            tries,
            &|t| self.wrapped(Box::new(t)),
            self.cancel,
        )?;
        self.lines.push(format!(
            "{} {} · revision {} · IMEI {} · {}",
            id.manufacturer.as_deref().unwrap_or("modem"),
            id.model.as_deref().unwrap_or(""),
            id.revision.as_ref().map(|r| r.text.as_str()).unwrap_or("?"),
            id.imei.as_ref().map(|i| i.digits.as_str()).unwrap_or("?"),
            id.cfun
                .map(|c| format!("+CFUN: {}", c.level))
                .unwrap_or_else(|| "+CFUN: ?".into())
        ));
        for a in id.advice() {
            self.lines.push(a);
        }
        self.normal = Some(id.clone());
        Ok(Observation::NormalIdentity {
            identity: Box::new(id),
        })
    }

    fn identify_sahara(&mut self) -> crate::Result<Observation> {
        self.release();
        let t = self.open_edl()?;
        let (t, info) = backup_run::identify(t, &SaharaConfig::default())?;
        self.held = Held::Sahara(Box::new(t));
        let mut id = info
            .as_ref()
            .map(Identity::from_device_info)
            .unwrap_or_default();
        if let Some(n) = &self.normal {
            id.revision = n.revision.as_ref().map(|r| r.text.clone());
            id.imei = n.imei.as_ref().map(|i| i.digits.clone());
            id.iccid = n.iccid.as_ref().map(|i| i.value.clone());
            id.usbnet = n.usbnet.map(|u| u.name().to_string());
        }
        let unit = id.unit_key();
        for l in id.describe() {
            self.lines.push(l);
        }
        if unit.is_none() {
            self.lines.push(
                "the boot ROM did not tell its serial: no backup can be matched or made".into(),
            );
        }
        self.edl = Some(id);
        Ok(Observation::EdlIdentity { unit })
    }

    /// The unit a backup of this IMEI belongs to (newest first), when the serial is not known.
    fn unit_by_imei(&self, imei: &str) -> Option<String> {
        let list = self.setup.store.list().ok()?;
        list.backups
            .iter()
            .rev()
            .find(|b| b.manifest.identity.imei.as_deref() == Some(imei))
            .map(|b| b.manifest.unit())
    }

    fn check_package(
        &mut self,
        unit: Option<String>,
        modem_revision: Option<String>,
        imei: Option<String>,
    ) -> crate::Result<Observation> {
        let Some(req) = &self.setup.request else {
            return Err(Error::usage(
                "No firmware package was given",
                "Name the package: qrescue update PACKAGE",
            ));
        };
        let mut req = req.clone();
        req.modem_revision = modem_revision;
        let by_imei = unit.is_none();
        let unit = unit.or_else(|| imei.as_deref().and_then(|i| self.unit_by_imei(i)));
        if by_imei {
            if let Some(u) = &unit {
                self.lines.push(format!(
                    "IMEI {} is on file in a backup of unit {u}",
                    imei.as_deref().unwrap_or("")
                ));
            }
        }
        let ledger = match StoreLedger::new(&self.setup.store) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("the backup store cannot be read: {}: {}", e.what, e.why);
                StoreLedger::empty()
            }
        };
        let on_file: Vec<StoredBackup> = unit
            .as_deref()
            .map(|u| ledger.backups_of(u).into_iter().cloned().collect())
            .unwrap_or_default();
        let ledger = match &self.edl {
            Some(id) if id.unit_key().is_some() => ledger.for_device(id),
            _ => ledger,
        };
        let p = prepare(&req, &ledger as &dyn BackupLedger, unit.as_deref())?;
        let v = p.verdict();
        let reasons: Vec<Said> = v
            .reasons
            .iter()
            .map(|r| {
                let mut next = r.next.clone();
                if r.stage == Stage::Guard && unit.is_none() {
                    next = format!(
                        "{next} (No backup of this modem is on file in {}: an update package's run of `qrescue update` makes one before it flashes; or switch it with `qrescue edl` and run `qrescue backup --port PORT`.)",
                        self.setup.store.root().display()
                    );
                }
                Said {
                    what: r.what.clone(),
                    why: r.why.clone(),
                    next,
                }
            })
            .collect();
        self.lines.push(match &p.revision {
            Some(r) => format!("package {} ({})", r.text, r.source),
            None => "package revision unknown".into(),
        });
        self.lines.push(v.summary.clone());
        for r in &reasons {
            self.lines.push(format!("- {}", r.what));
        }
        if let Some(g) = &p.guard {
            let kept = g.untouched();
            if g.allowed && !kept.is_empty() {
                self.lines.push(format!("left alone: {}", kept.join(", ")));
            }
        }
        let newest = on_file.last();
        let check = PackageCheck {
            flashable: v.flashable,
            reasons,
            revision: p.revision.as_ref().map(|r| r.text.clone()),
            steps: p.summary.as_ref().map_or(0, |s| s.steps.len()),
            unit: unit.clone(),
            backups_on_file: on_file.len(),
            backup: newest.map(|b| b.name.clone()),
            imei_on_file: newest.and_then(|b| b.manifest.identity.imei.clone()),
        };
        self.prepared = Some(p);
        Ok(Observation::PackageChecked { check })
    }

    fn programmer_image(&self) -> crate::Result<Vec<u8>> {
        if let Some(p) = &self.prepared {
            return p.programmer_image();
        }
        if let Some(p) = &self.setup.programmer {
            return Ok(p.clone());
        }
        if let Some(req) = &self.setup.request {
            let p = prepare(req, &StoreLedger::empty(), None)?;
            return p.programmer_image();
        }
        Err(Error::usage(
            "No programmer to start",
            "Give the package (its programmer is used) or a programmer file",
        ))
    }

    fn upload(&mut self) -> crate::Result<Observation> {
        let image = self.programmer_image()?;
        let t: Link = match std::mem::replace(&mut self.held, Held::None) {
            Held::Sahara(t) => t,
            Held::Firehose(fh) => {
                self.held = Held::Firehose(fh);
                return Ok(Observation::Uploaded);
            }
            Held::None => self.open_edl()?,
        };
        let (fh, attach) = attach_or_upload(
            t,
            Some(&image),
            &SaharaConfig::default(),
            FirehoseOptions::default(),
            &mut |_| {},
        )?;
        self.lines.push(match attach {
            crate::engine::connect::Attach::Uploaded(r) => format!(
                "programmer uploaded ({} bytes in {:.2} s)",
                r.bytes_sent,
                r.elapsed_ms as f64 / 1000.0
            ),
            crate::engine::connect::Attach::AlreadyRunning => {
                "a programmer was already running: attached to it".into()
            }
        });
        self.held = Held::Firehose(Box::new(fh));
        Ok(Observation::Uploaded)
    }

    fn firehose(&mut self) -> crate::Result<&mut Fh> {
        if !matches!(self.held, Held::Firehose(_)) {
            match std::mem::replace(&mut self.held, Held::None) {
                Held::Sahara(t) => {
                    self.held = Held::Firehose(Box::new(FirehoseSession::new(
                        Pushback::new(t),
                        Vec::new(),
                        FirehoseOptions::default(),
                    )))
                }
                _ => {
                    return Err(Error::failure(
                        "No programmer is running",
                        "the step needs the Firehose programmer",
                        "Run the workflow again",
                    ))
                }
            }
        }
        match &mut self.held {
            Held::Firehose(fh) => Ok(fh),
            _ => unreachable!("set above"),
        }
    }

    fn storage(&self) -> StorageKind {
        self.prepared
            .as_ref()
            .and_then(|p| p.plan.as_ref().map(|pl| pl.storage))
            .or_else(|| self.setup.request.as_ref().and_then(|r| r.storage))
            .unwrap_or(StorageKind::Nand)
    }

    fn take_backup(&mut self) -> crate::Result<Observation> {
        let identity = self
            .edl
            .clone()
            .ok_or_else(|| backup_run::unknown_identity("make a backup"))?;
        let storage = self.storage();
        if let Err(e) = self.setup.store.cleanup_incomplete() {
            tracing::warn!("{}: {}", e.what, e.why);
        }
        let step = self.step;
        let store = self.setup.store.clone();
        let cancel = self.cancel;
        let mut events = Vec::new();
        let r = {
            let fh = self.firehose()?;
            backup_run::take_backup(
                fh,
                &identity,
                &store,
                &BackupOptions {
                    kind: BackupKind::DeviceUnique,
                    storage,
                },
                &mut |e| events.push(e),
                cancel,
            )
        };
        for event in events {
            (self.emit)(&WorkflowEvent::Engine {
                step,
                engine: event,
            });
        }
        let b = r?;
        let parts: Vec<&str> = b
            .manifest
            .files
            .iter()
            .filter_map(|f| f.partition.as_deref())
            .collect();
        self.lines.push(format!(
            "backup {} in {}: {} ({} bytes), each partition read twice with the same sha256",
            b.name,
            store.root().display(),
            parts.join(", "),
            b.manifest.total_bytes()
        ));
        self.backup = Some(b.name.clone());
        Ok(Observation::BackedUp { backup: b.name })
    }

    fn switch_to_edl(&mut self) -> crate::Result<Observation> {
        self.release();
        let tty = self.tty_for(PortRole::Dm)?;
        let t = self.open_serial(&tty)?;
        let mut diag = DiagSession::new(t);
        let how = diag.switch_to_edl()?;
        drop(diag);
        self.lines.push(format!(
            "DIAG 4B 65 01 00 sent on {tty}: {}",
            match how {
                crate::engine::diag::EdlSwitch::Echoed => "echoed; the modem restarts into 9008",
                crate::engine::diag::EdlSwitch::LinkDropped =>
                    "the port dropped at once; the modem restarts into 9008",
            }
        ));
        Ok(Observation::Switched)
    }

    fn flash(&mut self) -> crate::Result<Observation> {
        let image = self.programmer_image()?;
        let p = self.prepared.take().ok_or_else(|| {
            Error::failure(
                "The package was not checked",
                "a flash runs only the plan the check validated",
                "Run the workflow again",
            )
        })?;
        let result = self.flash_prepared(&p, image);
        self.prepared = Some(p);
        result
    }

    /// Flash `p`'s plan through [`flash_resumable`] (see the module notes), ending with the
    /// reset.
    fn flash_prepared(&mut self, p: &Prepared, image: Vec<u8>) -> crate::Result<Observation> {
        let plan = p.plan.as_ref().ok_or_else(|| {
            Error::failure(
                "The package has no plan",
                "the check refused it",
                "See the package check",
            )
        })?;
        p.reverify()?;
        let first: Link = match std::mem::replace(&mut self.held, Held::None) {
            Held::Firehose(fh) => {
                let (mut t, rest) = fh.into_parts();
                t.unread(&rest);
                Box::new(t)
            }
            Held::Sahara(t) => t,
            Held::None => self.open_edl()?,
        };
        let temporary;
        let store = match &self.setup.journals {
            Some(s) => s.clone(),
            None => {
                temporary = tempfile::Builder::new()
                    .prefix("qrescue-journal-")
                    .tempdir()
                    .map_err(|e| {
                        Error::failure(
                            "Cannot create a temporary folder for the flash journal",
                            "the journal lets the flash continue after a drop",
                            "Check the temporary folder (TMPDIR)",
                        )
                        .with_source(e)
                    })?;
                JournalStore::at(temporary.path())
            }
        };
        // The serial read over Sahara before the programmer started: the unit this flash is
        // for (the link still holds that programmer, which tells no serial).
        let serial = self
            .edl
            .as_ref()
            .and_then(|i| i.edl.as_ref())
            .map(|e| e.serial);
        let package = self
            .setup
            .request
            .as_ref()
            .map(|r| r.package.display().to_string())
            .unwrap_or_default();
        let opts = ResumeOptions {
            package: package.clone(),
            return_wait: self.setup.flash_return,
            unit: serial.map(UnitKey::from_serial),
            ..ResumeOptions::default()
        };
        let job = FlashJob {
            programmer: Some(image),
            reset: Some(PowerMode::Reset),
            ..FlashJob::default()
        };
        let d = self.current.as_ref();
        self.records = Some(AttemptRecords::new(
            self.setup.runs.clone(),
            RunStart {
                tool: self.workflow.to_string(),
                device: RunDevice {
                    id: self.unit.map(|u| u.to_string()),
                    usb_id: d.map(|d| d.id()),
                    location: d.map(|d| d.location()),
                    serial: serial.map(|s| format!("0x{s:08x}")),
                    port: None,
                },
                package: Some(package),
                package_revision: p.revision.as_ref().map(|r| r.text.clone()),
                log_file: None,
            },
        ));
        let step = self.step;
        let cancel = self.cancel;
        let me = RefCell::new(&mut *self);
        let mut first = Some(first);
        let mut reconnect = |wait: Duration| -> crate::Result<Option<ResumeLink>> {
            me.borrow_mut().flash_link(&mut first, wait)
        };
        let result = flash_resumable(
            &mut reconnect,
            plan,
            &job,
            &store,
            &opts,
            &mut |e| me.borrow_mut().flash_event(step, e),
            &mut |n| me.borrow_mut().flash_notice(step, n),
            cancel,
        );
        self.run_record = self.records.take().and_then(|r| r.end(result.as_ref()));
        let r = result?;
        self.reset_by_flash = true;
        self.lines.push(format!(
            "{} steps, {} bytes written in {:.1} s",
            r.last.report.steps,
            r.bytes_sent,
            r.last.report.elapsed_ms as f64 / 1000.0
        ));
        if r.attempts > 1 {
            self.lines.push(format!(
                "finished in {} attempts, continued from its journal: {} bytes sent in all for a plan of {}",
                r.attempts,
                r.bytes_sent,
                plan.total_bytes()
            ));
        }
        Ok(Observation::Flashed {
            steps: r.last.report.steps,
            bytes: r.bytes_sent,
        })
    }

    /// The next connection for the flash: the link the driver holds first, later the unit when
    /// it is back in 9008 (within `wait`).
    fn flash_link(
        &mut self,
        first: &mut Option<Link>,
        wait: Duration,
    ) -> crate::Result<Option<ResumeLink>> {
        let link = |t: Link| {
            let port = t.describe();
            Some(ResumeLink {
                transport: t,
                appeared: Instant::now(),
                window: None,
                port,
            })
        };
        if let Some(t) = first.take() {
            return Ok(link(t));
        }
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if self.interrupted() {
                return Err(Error::new(
                    ErrorKind::Interrupted,
                    "Stopped waiting for the modem on request",
                    "the flash is not finished; its journal keeps what was written",
                    "Run the same update again to continue it",
                ));
            }
            if !matches!(
                self.wait_for(Want::Mode(Mode::Edl), left)?,
                Observation::Seen { .. }
            ) {
                return Ok(None);
            }
            match self.open_edl() {
                Ok(t) => return Ok(link(t)),
                // Gone again before it could be opened: wait for its next appearance.
                Err(e) if matches!(e.kind, ErrorKind::NoDevice | ErrorKind::DeviceLost) => {
                    tracing::info!("the modem could not be opened: {}", e.what);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn flash_event(&mut self, step: usize, e: EngineEvent) {
        if let Some(r) = &mut self.records {
            r.on_event(&e);
        }
        (self.emit)(&WorkflowEvent::Engine { step, engine: e });
    }

    fn flash_notice(&mut self, step: usize, n: &ResumeNotice) {
        if let Some(r) = &mut self.records {
            r.on_notice(n);
        }
        match n {
            ResumeNotice::Journal {
                opening: Opening::Restarted { why },
                ..
            } => self
                .lines
                .push(format!("its journal was not used ({why}): started over")),
            ResumeNotice::Journal {
                opening: Opening::Resume { steps_done, .. },
                path,
                ..
            } => self.lines.push(format!(
                "continued an interrupted flash: {steps_done} steps were written earlier (journal {path})"
            )),
            _ => {}
        }
        (self.emit)(&WorkflowEvent::Resume {
            step,
            notice: n.clone(),
        });
    }

    fn reset(&mut self) -> crate::Result<Observation> {
        if std::mem::take(&mut self.reset_by_flash) {
            self.release();
            self.lines
                .push("reset sent at the end of the flash (its last step)".into());
            return Ok(Observation::ResetSent);
        }
        let r = self.firehose().and_then(|fh| fh.power(PowerMode::Reset, 1));
        // The port closes before the modem leaves the bus.
        self.release();
        r?;
        self.lines.push("reset sent".into());
        Ok(Observation::ResetSent)
    }

    /// Wait for the unit's next appearance (in `want`), at most `within`.
    pub fn wait_for(&mut self, want: Want, within: Duration) -> crate::Result<Observation> {
        self.release();
        let start = Instant::now();
        let end = start + within;
        let mut last_mode = None;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || self.interrupted() {
                let waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.lines.push(format!(
                    "not seen{} within {} s",
                    match want {
                        Want::Mode(m) => format!(" in {}", m.words()),
                        Want::Any => String::new(),
                    },
                    waited_ms / 1000
                ));
                return Ok(Observation::WaitExpired {
                    waited_ms,
                    last_mode,
                });
            }
            let Some(u) = self.next_update(left.min(Duration::from_millis(200)))? else {
                if self.src.finished() {
                    return Err(Error::new(
                        ErrorKind::DeviceLost,
                        "The device source ended while waiting for the modem",
                        "a replay or emulator stopped",
                        "Run the workflow again",
                    ));
                }
                continue;
            };
            if u.event == "vanish" || self.unit.is_none() || u.id != self.unit {
                continue;
            }
            let (Some(d), Some(c)) = (&u.device, &u.class) else {
                continue;
            };
            let Some(mode) = mode_of(&c.mode) else {
                continue;
            };
            last_mode = Some(mode);
            self.current = Some(d.clone());
            if want == Want::Any || want == Want::Mode(mode) {
                let dm_port = port_of(d, PortRole::Dm).is_some();
                self.lines.push(format!(
                    "{} back in {} after {:.1} s ({})",
                    d.id(),
                    mode.words(),
                    start.elapsed().as_secs_f64(),
                    u.matched.why
                ));
                return Ok(Observation::Seen { mode, dm_port });
            }
        }
    }

    fn dump_folder(&self) -> PathBuf {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut n = self.dumps.len() + 1;
        loop {
            let p = self.setup.dump_dir.join(format!("ramdump-{stamp}-{n}"));
            if !p.exists() {
                return p;
            }
            n += 1;
        }
    }

    fn ramdump(&mut self) -> crate::Result<Observation> {
        self.release();
        let dir = self.dump_folder();
        let t = self.open_edl()?;
        let mut s = SaharaSession::new(t, SaharaConfig::default());
        let report = s.ramdump(&dir, &mut |_| {})?;
        drop(s);
        self.lines.push(format!(
            "{} region(s), {} bytes saved with a manifest in {}{}",
            report.regions.len(),
            report.bytes_written,
            dir.display(),
            if report.reset_acknowledged {
                "; the boot ROM resets the modem"
            } else {
                ""
            }
        ));
        let dir = dir.display().to_string();
        self.dumps.push(dir.clone());
        Ok(Observation::Dumped {
            dir,
            bytes: report.bytes_written,
        })
    }

    fn restore(&mut self, backup: &str) -> crate::Result<Observation> {
        let b = self.setup.store.get(backup)?;
        let plan = backup_run::plan_restore(&b, &[])?;
        let identity = self
            .edl
            .clone()
            .ok_or_else(|| backup_run::unknown_identity("restore a backup"))?;
        let step = self.step;
        let cancel = self.cancel;
        let mut events = Vec::new();
        let r = {
            let fh = self.firehose()?;
            backup_run::restore(fh, &b, &plan, &identity, &mut |e| events.push(e), cancel)
        };
        for event in events {
            (self.emit)(&WorkflowEvent::Engine {
                step,
                engine: event,
            });
        }
        let report = r?;
        self.lines.push(format!(
            "{} region(s), {} bytes written from {} and read back: all match",
            report.regions, report.bytes, report.backup
        ));
        Ok(Observation::Restored {
            regions: report.regions,
            bytes: report.bytes,
        })
    }

    fn ask_person(&mut self, q: &Question) -> Observation {
        if let Question::ConfirmRestore { backup, .. } = q {
            if let Ok(b) = self.setup.store.get(backup) {
                if let Ok(plan) = backup_run::plan_restore(&b, &[]) {
                    for s in &plan.steps {
                        self.lines.push(format!(
                            "would write {} ({} bytes, LUN {}, sectors from {})",
                            s.file.partition.as_deref().unwrap_or("(table area)"),
                            s.file.bytes,
                            s.file.lun,
                            s.file.start_sector
                        ));
                    }
                }
            }
        }
        let yes = (self.ask)(q);
        (self.emit)(&WorkflowEvent::Asked {
            question: q.clone(),
            yes,
        });
        Observation::Answered { yes }
    }
}
