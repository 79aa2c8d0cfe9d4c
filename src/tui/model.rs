//! The console's one model. Everything the screen shows is read from here (views are pure
//! functions of `&Model`); only `update` changes it. Plain data: no handles, no threads, no
//! clocks (`now_ms` is the latest time a message carried).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::device::bootloop::LoopStatus;
use crate::device::classify::Classification;
use crate::device::identity::DeviceId;
use crate::device::monitor::{DeviceView, Monitor};
use crate::device::DeviceSnapshot;
use crate::engine::events::StepKind;
use crate::protocol::sahara::info::DeviceInfo;

use super::msg::{JobId, PlanReview, Problem};

/// How the console was started.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The package to offer for a flash (`--package`, or the demo's generated one).
    pub package: Option<PathBuf>,
    /// The modem's revision when the person knows it (`--modem-revision`).
    pub modem_revision: Option<String>,
    /// Colours on (false with `NO_COLOR` or `--color never`: a monochrome theme).
    pub color: bool,
    /// Ring the bell on "9008 seen" and other moments that need the person's eyes.
    pub bell: bool,
    /// Where devices come from, one line ("USB", "emulated modem (demo: unbrick)").
    pub source: String,
    /// Set for `qrescue demo`: the scenario and what it shows.
    pub demo: Option<DemoInfo>,
    /// How long to wait after a flash for the modem to come back in normal mode before the
    /// verdict says "flashed, NOT verified".
    pub verify_timeout_ms: u64,
    /// Where the log file is (shown in the log pane title and in error hints).
    pub log_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            package: None,
            modem_revision: None,
            color: true,
            bell: true,
            source: "USB".into(),
            demo: None,
            verify_timeout_ms: 120_000,
            log_file: None,
        }
    }
}

/// What a demo scenario is, for the header and the workflow pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoInfo {
    /// `unbrick`, `update`, `crash`, `wrong-variant`, `factory`.
    pub scenario: String,
    /// One or two sentences: what is emulated and what to try.
    pub about: String,
}

/// One appear/vanish in a device's history (the timeline strip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blip {
    pub t_ms: u64,
    /// True for an appearance (or "already present"), false for a vanish.
    pub appear: bool,
    /// Mode tag of the appearance (`edl`, `crashdump`, `normal`, …: `Classification::tag`).
    pub mode: String,
}

/// Most blips kept per device (older ones are dropped).
pub const HISTORY_LIMIT: usize = 256;

/// The Sahara identity read from a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub info: DeviceInfo,
    pub t_ms: u64,
}

/// State of one plan step's row in the partitions pane.
#[derive(Debug, Clone, PartialEq)]
pub enum RowState {
    Pending,
    Active,
    Done {
        elapsed_ms: u64,
        bytes_per_s: f64,
    },
    Failed {
        problem: Problem,
    },
    /// Not run because an earlier step failed or the job was cancelled.
    Skipped,
}

/// One row of the partitions pane (one plan step).
#[derive(Debug, Clone, PartialEq)]
pub struct PartRow {
    pub index: usize,
    pub kind: StepKind,
    pub name: String,
    /// Bytes the step moves (0 for erase/patch/configure).
    pub bytes: u64,
    pub done: u64,
    pub bytes_per_s: f64,
    pub eta_s: Option<f64>,
    pub state: RowState,
}

/// A flash job as the partitions pane shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FlashView {
    pub job: JobId,
    pub device: DeviceId,
    pub rows: Vec<PartRow>,
    pub total_bytes: u64,
    /// Overall progress 0..=1 (weighted: Sahara small, partitions by bytes).
    pub overall: f64,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// Set by the engine's `Done`.
    pub ok: Option<bool>,
    /// Device logs worth showing (the engine's `Log` events), newest last, capped.
    pub device_log: Vec<String>,
}

impl FlashView {
    /// The row being worked on, if any.
    pub fn active(&self) -> Option<&PartRow> {
        self.rows.iter().find(|r| r.state == RowState::Active)
    }
}

/// The final word on a rescue. Never "success" on the write alone.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Flashed, and the modem came back in normal mode as the same unit.
    Verified { detail: String },
    /// Flashed, but the checks after it failed or could not run: say which.
    NotVerified { what_failed: String, next: String },
    /// The flash failed (nothing or part was written).
    Failed { problem: Problem },
    /// The person stopped it.
    Cancelled { detail: String },
}

/// Where the guided flow is.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Nothing chosen yet.
    Idle,
    /// Identify (Sahara) and package check in flight, or waiting for the modem's next window
    /// to identify it.
    Checking,
    /// The package was refused for this modem (reasons in `Flow::review`); an override may be
    /// typed when the compatibility refusal allows one.
    Refused,
    /// Checked and flashable; waiting for the person to confirm the plan.
    Ready,
    /// Confirmed; the automatic catch is armed: the moment the modem is seen in EDL the upload
    /// starts. `pins` when the person is bridging test pins (the pin screen is up).
    Armed {
        since_ms: u64,
        pins: bool,
    },
    /// The flash runs.
    Flashing {
        job: JobId,
        pins: bool,
    },
    /// Flashed; waiting for the modem to come back in normal mode.
    Verifying {
        since_ms: u64,
    },
    Finished(Outcome),
}

/// The guided flow for the selected modem.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub device: Option<DeviceId>,
    pub stage: Stage,
    pub review: Option<PlanReview>,
    /// The last problem, shown in the workflow pane in plain words with the next step.
    pub problem: Option<Problem>,
    /// When the "9008 seen" moment happened during a pin-bridging catch.
    pub seen_ms: Option<u64>,
    /// When the programmer upload finished during the current flash.
    pub uploaded_ms: Option<u64>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            device: None,
            stage: Stage::Idle,
            review: None,
            problem: None,
            seen_ms: None,
            uploaded_ms: None,
        }
    }
}

/// What covers the panes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    /// The plan summary with "press F to flash".
    ConfirmFlash,
    /// Typed confirmation of a compatibility override: the text typed so far.
    OverrideInput {
        typed: String,
    },
    /// Quit asked during a destructive phase: explains what happens to the modem.
    ConfirmQuit,
}

/// Which pane has the keyboard (for scrolling the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Devices,
    Log,
}

/// The console's state.
#[derive(Debug)]
pub struct Model {
    pub config: Config,
    /// Milliseconds since the console started (latest time any message carried).
    pub now_ms: u64,
    /// Terminal size.
    pub width: u16,
    pub height: u16,
    /// Identity tracking, classification and loop detection of everything seen.
    pub monitor: Monitor,
    /// Appear/vanish history per device (at most [`HISTORY_LIMIT`]).
    pub history: BTreeMap<DeviceId, Vec<Blip>>,
    pub identities: BTreeMap<DeviceId, Identity>,
    pub selected: Option<DeviceId>,
    pub flow: Flow,
    /// The current (or last) flash.
    pub flash: Option<FlashView>,
    pub overlay: Overlay,
    pub focus: Focus,
    /// Lines scrolled back in the log pane (0 = follow the end).
    pub log_scroll: u16,
    /// The terminal is gone (SIGHUP): keep running, draw nothing, quit when the job ends.
    pub headless: bool,
    /// Something changed since the last draw.
    pub dirty: bool,
    pub next_job: u32,
}

impl Model {
    pub fn new(config: Config) -> Model {
        Model {
            config,
            now_ms: 0,
            width: 80,
            height: 24,
            monitor: Monitor::default(),
            history: BTreeMap::new(),
            identities: BTreeMap::new(),
            selected: None,
            flow: Flow::default(),
            flash: None,
            overlay: Overlay::None,
            focus: Focus::Devices,
            log_scroll: 0,
            headless: false,
            dirty: true,
            next_job: 1,
        }
    }

    /// Every device the console knows, present ones first.
    pub fn devices(&self) -> Vec<DeviceView> {
        self.monitor
            .devices(self.now_ms)
            .into_iter()
            .filter(|d| d.class.mode.is_relevant())
            .collect()
    }

    /// The selected device as the monitor sees it now.
    pub fn selected_view(&self) -> Option<DeviceView> {
        let id = self.selected?;
        self.monitor
            .devices(self.now_ms)
            .into_iter()
            .find(|d| d.id == id)
    }

    /// The loop status of a device now.
    pub fn loop_status(&self, id: DeviceId) -> LoopStatus {
        self.monitor.loop_status(id, self.now_ms)
    }

    /// Latest snapshot and classification of a present device.
    pub fn present(&self, id: DeviceId) -> Option<(DeviceSnapshot, Classification)> {
        self.monitor
            .devices(self.now_ms)
            .into_iter()
            .find(|d| d.id == id && d.present)
            .map(|d| (d.device, d.class))
    }
}
