//! What flows into the console ([`Msg`]) and what the console asks the runtime to do
//! ([`Effect`]). `update(&mut Model, Msg) -> Vec<Effect>` (see `update.rs`) is pure: it never
//! touches a device, a file or a clock; the runtime (`runtime.rs`) turns key presses, device
//! events, engine events and ticks into `Msg`s and executes the `Effect`s, each on its own thread,
//! answering with more `Msg`s.
//!
//! Times: every `t_ms`/`now_ms` is milliseconds since the console started, on one clock the
//! runtime owns (device events are re-stamped on arrival, like `qrescue watch` does).

use std::path::PathBuf;

use crossterm::event::KeyEvent;

use crate::device::identity::DeviceId;
use crate::device::{DeviceEvent, DeviceSnapshot};
use crate::engine::at::NormalIdentity;
use crate::engine::events::EngineEvent;
use crate::engine::plan::PlanSummary;
use crate::engine::prepare::{CompatReport, GuardReport, Verdict};
use crate::engine::station::{StationEvent, Summary};
use crate::protocol::sahara::info::DeviceInfo;

/// One flash (or other device job) the runtime runs; ids are handed out by the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u32);

/// An error as people read it: what happened, why it matters, what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub why: String,
    pub next: String,
}

impl From<&crate::Error> for Problem {
    fn from(e: &crate::Error) -> Self {
        Problem {
            what: e.what.clone(),
            why: e.why.clone(),
            next: e.next.clone(),
        }
    }
}

/// The result of checking a package against a modem (the runtime keeps the prepared plan
/// itself; the model only sees this review and its token).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanReview {
    /// Token of the prepared plan kept by the runtime; `Effect::StartFlash` names it.
    pub plan: u32,
    /// The package as given (folder or zip).
    pub package: PathBuf,
    /// The package's revision as read from its names (e.g. `RM502QAEAAR13A02M4G`).
    pub package_revision: Option<String>,
    /// Flashable, or refused with every reason.
    pub verdict: Verdict,
    pub compat: CompatReport,
    pub guard: Option<GuardReport>,
    pub summary: Option<PlanSummary>,
    /// The programmer file the flash would upload (for the plan summary).
    pub programmer: Option<String>,
    pub warnings: Vec<String>,
}

/// Something that happened, for `update`.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A key press (only presses: the runtime drops repeats and releases).
    Key(KeyEvent),
    /// The terminal changed size.
    Resize { width: u16, height: u16 },
    /// A device appeared or vanished; `initial` for those already there when the console began.
    Device { event: DeviceEvent, initial: bool },
    /// The time, while something animates (countdowns, waits, a running job).
    Tick { now_ms: u64 },
    /// The Sahara identity of a device, answering [`Effect::Identify`].
    Identified {
        device: DeviceId,
        result: Result<DeviceInfo, Problem>,
        t_ms: u64,
    },
    /// A normal-mode modem's identity over its AT port, answering [`Effect::IdentifyNormal`].
    NormalIdentified {
        device: DeviceId,
        result: Result<NormalIdentity, Problem>,
        t_ms: u64,
    },
    /// The DIAG switch to EDL was sent (the modem echoed it or dropped its port at once), or
    /// could not be; answering [`Effect::SwitchToEdl`]. The modem then re-enumerates as 9008.
    Switched {
        device: DeviceId,
        result: Result<(), Problem>,
        t_ms: u64,
    },
    /// A package checked, answering [`Effect::CheckPackage`] with its `token` (an answer to an
    /// earlier check, e.g. for another modem, is ignored).
    Checked {
        token: u32,
        result: Result<Box<PlanReview>, Problem>,
        t_ms: u64,
    },
    /// An event of a running job, in the engine's documented order.
    Engine {
        job: JobId,
        event: EngineEvent,
        t_ms: u64,
    },
    /// A job ended: `Ok` after its `Done`, `Err` when it could not run or failed (the reason in
    /// people's words). Always the last message of a job.
    JobEnded {
        job: JobId,
        result: Result<(), Problem>,
        t_ms: u64,
    },
    /// An event of a running station run (many modems at once), in the engine's order per
    /// modem. `t_ms` is the console's clock (the event's own `t_ms` counts from the run start).
    Station {
        run: JobId,
        event: StationEvent,
        t_ms: u64,
    },
    /// A station run ended: its summary and where it was written, or why it could not run.
    /// Always the last message of a run.
    StationEnded {
        run: JobId,
        result: Result<Box<StationDone>, Problem>,
        t_ms: u64,
    },
    /// SIGHUP: the terminal is gone; the console keeps running headless until the job ends.
    Hangup,
    /// SIGTERM/SIGINT from outside.
    Terminate,
}

/// Something `update` wants done. The runtime executes each and answers with `Msg`s.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Leave the console (the runtime restores the terminal). Running jobs are cancelled first
    /// when `cancel_jobs`; the model only asks for that after the person confirmed.
    Quit { cancel_jobs: bool },
    /// Ring the terminal bell (unless the person turned it off).
    Bell,
    /// Read the boot ROM's identity over Sahara (non-destructive), answer `Msg::Identified`.
    Identify {
        device: DeviceId,
        snapshot: DeviceSnapshot,
    },
    /// Ask a modem in normal mode who it is over its AT port (`ATI`, `AT+QGMR`, `AT+CGSN`,
    /// `AT+QCCID`, `AT+CFUN?`, …; read-only), answer `Msg::NormalIdentified`.
    IdentifyNormal {
        device: DeviceId,
        snapshot: DeviceSnapshot,
    },
    /// Send the Quectel DIAG command `4B 65 01 00` on the modem's DM port: it resets into its
    /// boot ROM and re-enumerates as 05c6:9008 about 2 s later. Answer `Msg::Switched`. The
    /// model only asks for it after the person confirmed.
    SwitchToEdl {
        device: DeviceId,
        snapshot: DeviceSnapshot,
    },
    /// Check a package for this modem (integrity, plan, compatibility, device-unique guard);
    /// answer `Msg::Checked`.
    CheckPackage {
        /// Echoed in `Msg::Checked`.
        token: u32,
        device: Option<DeviceId>,
        package: PathBuf,
        /// The modem's firmware revision when known (`AT+QGMR`), for the compatibility check.
        modem_revision: Option<String>,
        /// Typed text overriding a compatibility refusal.
        override_phrase: Option<String>,
    },
    /// Run the prepared plan `plan` on the device now present as `snapshot`: Sahara upload,
    /// Firehose, every step, reset. Answer with `Msg::Engine` events and one `Msg::JobEnded`.
    StartFlash {
        job: JobId,
        plan: u32,
        device: DeviceId,
        snapshot: DeviceSnapshot,
    },
    /// Flash every modem in `devices` in parallel with `package` (a station run: the package is
    /// checked once, then one job per modem, each followed by its identity across resets and
    /// verified after its reset). Answer with `Msg::Station` events and one
    /// `Msg::StationEnded`. `Cancel { job: run }` stops every modem at its next safe point.
    StartStation {
        run: JobId,
        package: PathBuf,
        /// The modem's revision when the person gave it (`--modem-revision`).
        modem_revision: Option<String>,
        /// The modems to take, as the console saw them when the person confirmed.
        devices: Vec<DeviceSnapshot>,
    },
    /// Stop a job at the next safe point.
    Cancel { job: JobId },
    /// Demo only: what a person at the bench does to the emulated modem. The runtime hands it
    /// to the emulator; outside the demo the console never emits it.
    Bench(BenchAction),
}

/// How a station run ended: its summary (one row per modem) and the files it was written to.
#[derive(Debug, Clone)]
pub struct StationDone {
    pub summary: Summary,
    /// The run folder (each modem's log, `summary.json`, `summary.csv`).
    pub folder: PathBuf,
}

impl StationDone {
    /// `summary.json` and `summary.csv` in the run folder.
    pub fn files(&self) -> [PathBuf; 2] {
        [
            self.folder.join("summary.json"),
            self.folder.join("summary.csv"),
        ]
    }
}

/// Demo only: hands on the emulated modem, to rehearse the pin-bridging rescue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchAction {
    /// Hold USB_BOOT to 1.8 V and power-cycle the modem: it comes back in its boot ROM (9008).
    BridgePinsAndPowerCycle,
    /// Let go of the wire.
    ReleasePins,
}
