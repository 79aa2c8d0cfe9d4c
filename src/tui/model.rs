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
use crate::engine::at::NormalIdentity;
use crate::engine::events::StepKind;
use crate::protocol::sahara::info::DeviceInfo;
use crate::workflow::verdict::Verdict;

use super::msg::{JobId, PlanReview, Problem};
pub use super::station::{Counts, RowPhase, StationRow, StationView};

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

/// A normal-mode modem's identity read over AT.
#[derive(Debug, Clone, PartialEq)]
pub struct AtIdentity {
    pub id: NormalIdentity,
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
    /// The modem was absent when the flow started: read its identity (Sahara) the next time it
    /// appears in EDL, unless a flash is armed for that moment (the flash reads it then).
    pub identify_pending: bool,
    /// The person asked for the pin screen before confirming: after the confirmation the flow
    /// goes to the pin screen.
    pub pins_requested: bool,
    /// The person asked to stop the running flash (its end is reported as cancelled).
    pub cancel_requested: bool,
    /// An identity over AT is in flight (before the check, or after the flash to verify).
    pub at_pending: bool,
    /// The package check waits for the revision the AT identity reads.
    pub check_deferred: bool,
    /// Who the modem was before the flash (over AT), for the verdict afterwards.
    pub before: Option<NormalIdentity>,
    /// The DIAG switch to EDL was asked for: waiting for 9008.
    pub switching: bool,
    /// The last mode the modem was seen in after the flash (for "not back").
    pub last_mode: Option<String>,
    /// The verdict after the flash, with each check or failure.
    pub verdict: Option<Verdict>,
    /// The token of the package check the flow waits for (0: none asked yet).
    pub check_token: u32,
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
            identify_pending: false,
            pins_requested: false,
            cancel_requested: false,
            at_pending: false,
            check_deferred: false,
            before: None,
            switching: false,
            last_mode: None,
            verdict: None,
            check_token: 0,
        }
    }
}

/// What covers the panes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    /// The plan summary; `y` flashes (or arms the catch), Esc or `n` goes back.
    ConfirmFlash,
    /// Typed confirmation of a compatibility override: the text typed so far.
    OverrideInput {
        typed: String,
    },
    /// Quit asked during a destructive phase: explains what happens to the modem.
    ConfirmQuit,
    /// Stop (`c`) asked while the flash runs: the same explanation, but the console stays.
    ConfirmCancel,
    /// The plan is confirmed and the modem runs in normal mode: switch it to EDL over DIAG
    /// (`y`), or bridge the pins instead (`p`)?
    ConfirmSwitch,
    /// Flash every modem in download mode at once (a station run): `count` of them, with the
    /// console's package. `y` starts, Esc or `n` goes back.
    ConfirmStation {
        count: usize,
    },
    /// Stop (`c`, `q`, Ctrl-C) asked while a station run flashes: every modem stops at its next
    /// safe point.
    ConfirmStationStop,
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
    /// Identities of normal-mode modems read over AT.
    pub at_identities: BTreeMap<DeviceId, AtIdentity>,
    pub selected: Option<DeviceId>,
    pub flow: Flow,
    /// The current (or last) flash.
    pub flash: Option<FlashView>,
    pub overlay: Overlay,
    pub focus: Focus,
    /// Lines scrolled back in the log pane (0 = follow the end). May exceed the lines there
    /// are (Home sets it to the maximum): views clamp it to the log's length.
    pub log_scroll: u16,
    /// The terminal is gone (SIGHUP): keep running, draw nothing, quit when the job ends.
    pub headless: bool,
    /// Something changed since the last draw.
    pub dirty: bool,
    pub next_job: u32,
    /// The token the next package check gets.
    pub next_check: u32,
    /// A one-line hint about the last key or event that could not do what it usually does
    /// ("Finish or disarm the rescue of #1 first"); cleared by the next key.
    pub notice: Option<String>,
    /// `Effect::Quit` has been emitted (it is emitted once).
    pub quit_sent: bool,
    /// The station run on screen (many modems at once), while it runs and after it ended until
    /// the person goes back (Esc).
    pub station: Option<StationView>,
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
            at_identities: BTreeMap::new(),
            selected: None,
            flow: Flow::default(),
            flash: None,
            overlay: Overlay::None,
            focus: Focus::Devices,
            log_scroll: 0,
            headless: false,
            dirty: true,
            next_job: 1,
            next_check: 1,
            notice: None,
            quit_sent: false,
            station: None,
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

    /// The device's comings and goings are mode switches, not a loop: every appearance so far
    /// came in another mode than the one before (normal → EDL after a DIAG switch, EDL →
    /// normal after a flash), and fewer than four of them. The loop detector calls two
    /// appearances "suspected"; the console shows no loop badge for these.
    pub fn mode_switches_only(&self, id: DeviceId) -> bool {
        let Some(h) = self.history.get(&id) else {
            return false;
        };
        let modes: Vec<&str> = h
            .iter()
            .filter(|b| b.appear)
            .map(|b| b.mode.as_str())
            .collect();
        modes.len() < 4 && modes.windows(2).all(|w| w[0] != w[1])
    }

    /// A device's loop status as the console shows it: a "suspected" loop that is only mode
    /// switches ([`Model::mode_switches_only`]) is none.
    pub fn shown_loop_status(&self, id: DeviceId, status: &LoopStatus) -> LoopStatus {
        match status {
            LoopStatus::Suspected { triage: None, .. } if self.mode_switches_only(id) => {
                LoopStatus::None
            }
            s => s.clone(),
        }
    }

    /// Latest snapshot and classification of a present device.
    pub fn present(&self, id: DeviceId) -> Option<(DeviceSnapshot, Classification)> {
        self.monitor
            .devices(self.now_ms)
            .into_iter()
            .find(|d| d.id == id && d.present)
            .map(|d| (d.device, d.class))
    }

    /// Modems present in download mode (9008) now: what a station run from the console takes.
    pub fn edl_present(&self) -> Vec<DeviceView> {
        self.devices()
            .into_iter()
            .filter(|d| d.present && matches!(d.class.mode, crate::device::classify::Mode::Edl))
            .collect()
    }

    /// How many modems `A` would flash at once: two or more in download mode, a package given,
    /// and nothing else being worked on. `None` when the offer does not stand.
    pub fn station_offer(&self) -> Option<usize> {
        if self.config.package.is_none() || self.station.is_some() || self.flow_busy() {
            return None;
        }
        let n = self.edl_present().len();
        (n >= 2).then_some(n)
    }

    /// The guided flow works on a modem now (a check, an armed catch, a flash, a verification).
    pub fn flow_busy(&self) -> bool {
        matches!(
            self.flow.stage,
            Stage::Checking
                | Stage::Armed { .. }
                | Stage::Flashing { .. }
                | Stage::Verifying { .. }
        )
    }

    /// A station run is going (modems are being worked on).
    pub fn station_running(&self) -> bool {
        self.station.as_ref().is_some_and(StationView::running)
    }
}

/// Tick period while the pin screen is up or a flash runs: the screen must feel live.
pub const TICK_FAST_MS: u64 = 100;
/// Tick period of the armed catch's countdown to a predicted window.
pub const TICK_COUNTDOWN_MS: u64 = 250;
/// Tick period of slow waits: the package check, verification, a boot loop's next window.
pub const TICK_SLOW_MS: u64 = 500;
/// A flash starts inside an open boot-loop window only when at least this much of it is left;
/// otherwise the catch waits for the next window (the upload must not be cut off).
pub const MIN_WINDOW_LEFT_MS: u64 = 3_000;

/// Where the pin-bridging screen is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinPhase {
    /// Watching for 9008 while the person bridges USB_BOOT and powers the modem on.
    Waiting,
    /// 9008 appeared and the upload started: the person lets go of the wire now.
    SeenReleaseNow,
    /// The programmer is running: the wire is no longer needed.
    Uploaded,
}

/// A key that does something now, for the footer and the workflow pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHint {
    pub key: &'static str,
    pub action: &'static str,
}

/// What the workflow pane says about the current step.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowText {
    /// The step in a few words: "Waiting for the next window".
    pub title: String,
    /// What to do now, or what happens next by itself.
    pub next: String,
    /// Why, in a sentence or two.
    pub why: String,
    /// The keys that do something now.
    pub keys: Vec<KeyHint>,
}

/// `4.2 s`
fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `2 min`, `90 s`.
pub(crate) fn duration_words(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

const fn hint(key: &'static str, action: &'static str) -> KeyHint {
    KeyHint { key, action }
}

impl Model {
    /// The flow's device as the monitor sees it now.
    pub fn flow_view(&self) -> Option<DeviceView> {
        let id = self.flow.device?;
        self.monitor
            .devices(self.now_ms)
            .into_iter()
            .find(|d| d.id == id)
    }

    /// The job of the running flash.
    pub fn running_job(&self) -> Option<JobId> {
        match self.flow.stage {
            Stage::Flashing { job, .. } => Some(job),
            _ => None,
        }
    }

    /// The running flash is uploading the programmer over Sahara (nothing is written yet).
    pub fn uploading(&self) -> bool {
        self.running_job().is_some()
            && self
                .flash
                .as_ref()
                .and_then(|f| f.active())
                .is_some_and(|r| r.kind == StepKind::SaharaUpload)
    }

    /// The pin screen's phase while it is up (`None` otherwise).
    pub fn pin_phase(&self) -> Option<PinPhase> {
        match self.flow.stage {
            Stage::Armed { pins: true, .. } => Some(PinPhase::Waiting),
            Stage::Flashing { pins: true, .. } => Some(if self.flow.uploaded_ms.is_some() {
                PinPhase::Uploaded
            } else {
                PinPhase::SeenReleaseNow
            }),
            _ => None,
        }
    }

    /// Some listed device is in a boot loop: its next-window countdown is on screen.
    fn loop_countdown_shown(&self) -> bool {
        self.devices().iter().any(|d| d.loop_status.is_looping())
    }

    /// How often the runtime should send `Msg::Tick`; `None` when nothing on screen depends on
    /// the time (the runtime then runs no timer: no idle repaint over SSH).
    pub fn tick_interval_ms(&self) -> Option<u64> {
        if self.station_running() {
            return Some(super::station::STATION_FRAME_MS);
        }
        match self.flow.stage {
            Stage::Armed { pins: true, .. } | Stage::Flashing { .. } => Some(TICK_FAST_MS),
            Stage::Armed { pins: false, .. } => Some(TICK_COUNTDOWN_MS),
            Stage::Checking | Stage::Verifying { .. } => Some(TICK_SLOW_MS),
            _ if self.loop_countdown_shown() => Some(TICK_SLOW_MS),
            _ => None,
        }
    }

    /// Something on screen changes with the time alone.
    pub fn animating(&self) -> bool {
        self.tick_interval_ms().is_some()
    }

    /// The keys that do something now (overlays first: they take every key).
    pub fn key_hints(&self) -> Vec<KeyHint> {
        match &self.overlay {
            Overlay::Help => return vec![hint("any key", "close help")],
            Overlay::ConfirmFlash => return vec![hint("y", "flash"), hint("Esc/n", "back")],
            Overlay::OverrideInput { .. } => {
                return vec![hint("Enter", "check with this text"), hint("Esc", "back")]
            }
            Overlay::ConfirmQuit => {
                return vec![
                    hint("y", "stop the flash and quit"),
                    hint("Esc/n", "keep going"),
                ]
            }
            Overlay::ConfirmCancel => {
                return vec![hint("y", "stop the flash"), hint("Esc/n", "keep going")]
            }
            Overlay::ConfirmSwitch => {
                return vec![
                    hint("y", "switch to EDL over DIAG"),
                    hint("p", "bridge the pins instead"),
                    hint("Esc/n", "back"),
                ]
            }
            Overlay::ConfirmStation { .. } => {
                return vec![hint("y", "flash them all"), hint("Esc/n", "back")]
            }
            Overlay::ConfirmStationStop => {
                return vec![
                    hint("y", "stop every modem at its next safe point"),
                    hint("Esc/n", "keep going"),
                ]
            }
            Overlay::None => {}
        }
        if let Some(st) = &self.station {
            let mut keys = vec![hint("↑/↓", "choose a modem")];
            if st.running() && !st.stop_requested {
                keys.push(hint("c", "stop every modem at its next safe point"));
                keys.push(hint("q", "stop and quit (asks first)"));
            } else if st.running() {
                keys.push(hint("q", "quit once every modem has stopped"));
            } else {
                keys.push(hint("Esc", "back to the devices"));
                keys.push(hint("q", "quit"));
            }
            keys.push(hint("?", "help"));
            return keys;
        }
        let mut keys = Vec::new();
        let demo = self.config.demo.is_some();
        match &self.flow.stage {
            Stage::Idle | Stage::Finished(_) => {
                if self.selected.is_some() {
                    keys.push(hint("Enter", "check the package for this modem"));
                }
            }
            Stage::Checking => {}
            Stage::Refused => {
                if self.override_phrase().is_some() {
                    keys.push(hint("o", "type the override"));
                }
                keys.push(hint("Enter", "check again"));
            }
            Stage::Ready => {
                keys.push(hint("f", "review the plan and flash"));
                keys.push(hint("p", "bridge the pins (pin screen)"));
            }
            Stage::Armed { pins, .. } => {
                if !pins {
                    keys.push(hint("p", "pin screen"));
                }
                keys.push(hint("Esc", "disarm"));
                if demo {
                    keys.push(hint("b", "bench: bridge USB_BOOT and power-cycle"));
                    keys.push(hint("r", "bench: release the wire"));
                }
            }
            Stage::Flashing { pins, .. } => {
                keys.push(hint("c", "stop the flash"));
                if demo && *pins {
                    keys.push(hint("r", "bench: release the wire"));
                }
            }
            Stage::Verifying { .. } => {}
        }
        if self.station_offer().is_some() {
            keys.push(hint("A", "flash every modem in download mode at once"));
        }
        if self.devices().len() > 1 {
            keys.push(hint("↑/↓", "choose a modem"));
        }
        keys.push(hint("Tab", "devices/log"));
        keys.push(hint("?", "help"));
        keys.push(hint("q", "quit"));
        keys
    }

    /// The phrase that overrides the current compatibility refusal, when one may.
    pub fn override_phrase(&self) -> Option<&str> {
        match &self.flow.review.as_ref()?.compat {
            crate::engine::prepare::CompatReport::Refused {
                override_phrase: Some(p),
                ..
            } => Some(p.as_str()),
            _ => None,
        }
    }

    /// The current step for the workflow pane: title, what to do next, why.
    pub fn workflow_text(&self) -> WorkflowText {
        let (title, next, why) = self.workflow_words();
        let next = match &self.notice {
            Some(n) => format!("{n} — {next}"),
            None => next,
        };
        WorkflowText {
            title,
            next,
            why,
            keys: self.key_hints(),
        }
    }

    fn workflow_words(&self) -> (String, String, String) {
        let flow = &self.flow;
        let view = self.flow_view();
        let name = |v: &Option<DeviceView>| {
            v.as_ref()
                .map(|d| format!("{} {}", d.id, d.class.label))
                .unwrap_or_else(|| "the modem".into())
        };
        let problem = flow.problem.as_ref();
        match &flow.stage {
            Stage::Idle => {
                if let Some(p) = problem {
                    return (p.what.clone(), p.next.clone(), p.why.clone());
                }
                let Some(sel) = self.selected_view() else {
                    return (
                        "Waiting for a modem".into(),
                        "Plug the modem in or power it on; it shows up in the device list.".into(),
                        format!(
                            "qrescue watches {} live and recognises EDL (9008), crash dump (900e) \
                             and normal mode.",
                            self.config.source
                        ),
                    );
                };
                if let Some(n) = self.station_offer() {
                    return (
                        format!("{n} modems in download mode (9008)"),
                        format!(
                            "Press A to flash all {n} at once with the package, or Enter to check \
                             the selected one alone."
                        ),
                        "A station run flashes each modem with its own job, finds it again as \
                         itself after every reset, and verifies it over AT when it comes back."
                            .into(),
                    );
                }
                let title = format!("{} {}", sel.id, sel.class.label);
                if let Some(r) = sel
                    .loop_status
                    .report()
                    .filter(|_| sel.loop_status.is_looping())
                {
                    return (
                        format!("{title}: boot loop, {}", r.summary()),
                        "Press Enter to check the package; once you confirm the plan, the \
                         flash starts in the next window."
                            .into(),
                        r.triage.headline().to_string(),
                    );
                }
                let (next, why) = match sel.class.mode {
                    crate::device::classify::Mode::Edl => (
                        "Press Enter to check the firmware package for it.",
                        "The boot ROM waits for a programmer: this is the mode a rescue flashes in.",
                    ),
                    crate::device::classify::Mode::CrashDump => (
                        "Take a RAM dump with `qrescue ramdump` if you want one, then power-cycle \
                         it; if it comes back as 9008, press Enter.",
                        "In crash-dump mode (900e) the modem offers its RAM, not a download.",
                    ),
                    crate::device::classify::Mode::QuectelNormal { .. } => (
                        "Press Enter: qrescue asks it over AT who it is, checks the package \
                         against its revision, and offers to switch it to EDL over DIAG.",
                        "Firmware is written through the boot ROM's emergency download mode; \
                         what the modem says now (IMEI, +CFUN) is what the flash must keep.",
                    ),
                    _ => (
                        "Press Enter to check the package; to flash, the modem must be in EDL \
                         (9008): the pin screen (p) helps after the check.",
                        "Firmware is written through the boot ROM's emergency download mode.",
                    ),
                };
                (title, next.into(), why.into())
            }
            Stage::Checking => {
                let mut next = if flow.at_pending {
                    "Wait: asking the modem over AT who it is; then the package is checked \
                     against its revision."
                        .to_string()
                } else {
                    "Wait: the package's integrity, plan, compatibility and guards are being \
                     checked."
                        .to_string()
                };
                if flow.identify_pending {
                    next.push_str(" The modem is identified the next time it appears in EDL.");
                }
                (
                    format!("Checking the package for {}", name(&view)),
                    next,
                    "Nothing is written before the plan is checked and confirmed.".into(),
                )
            }
            Stage::Refused => {
                let summary = flow
                    .review
                    .as_ref()
                    .map(|r| r.verdict.summary.clone())
                    .unwrap_or_else(|| "the package was refused".into());
                let (next, why) = match problem {
                    Some(p) => (p.next.clone(), p.why.clone()),
                    None => (String::new(), String::new()),
                };
                (format!("Refused: {summary}"), next, why)
            }
            Stage::Ready => {
                let rev = flow
                    .review
                    .as_ref()
                    .and_then(|r| r.package_revision.clone())
                    .unwrap_or_else(|| "the package".into());
                let next = match problem {
                    Some(p) => format!("Press f to review the plan. {}", p.next),
                    None => "Press f to review the plan and flash.".into(),
                };
                (
                    format!("Ready to flash {rev} to {}", name(&view)),
                    next,
                    "The package passed its checks; the flash needs your confirmation.".into(),
                )
            }
            Stage::Armed { since_ms, pins } => self.armed_words(view.as_ref(), *since_ms, *pins),
            Stage::Flashing { pins, .. } => {
                let step = self
                    .flash
                    .as_ref()
                    .and_then(|f| f.active().map(|r| r.name.clone()))
                    .unwrap_or_else(|| "starting".into());
                let title = match self.pin_phase() {
                    Some(PinPhase::SeenReleaseNow) => "9008 SEEN — RELEASE NOW".to_string(),
                    Some(PinPhase::Uploaded) => format!("PROGRAMMER UPLOADED — flashing: {step}"),
                    _ if self.uploading() => "Uploading the programmer".to_string(),
                    _ => format!("Flashing: {step}"),
                };
                let next = if *pins && flow.uploaded_ms.is_none() {
                    "Let go of the USB_BOOT wire now; keep the power and cable as they are."
                } else {
                    "Do not unplug or power off the modem; c stops at the next safe point."
                };
                (
                    title,
                    next.into(),
                    "An interrupted flash leaves the modem half-written (it can still be flashed \
                     again in EDL)."
                        .into(),
                )
            }
            Stage::Verifying { .. } if flow.at_pending => (
                "Verifying: asking it over AT".into(),
                "It is back in normal mode; its IMEI, +CFUN and revision are being read.".into(),
                "A flash counts only when the same unit comes back calibrated on the new firmware."
                    .into(),
            ),
            Stage::Verifying { since_ms } => {
                let waited = self.now_ms.saturating_sub(*since_ms);
                (
                    "Verifying: waiting for the modem to boot".into(),
                    format!(
                        "Waiting for it to come back in normal mode: {} of {}.",
                        duration_words(waited),
                        duration_words(self.config.verify_timeout_ms)
                    ),
                    "A flash counts only when the modem boots the new firmware.".into(),
                )
            }
            Stage::Finished(outcome) => match outcome {
                Outcome::Verified { detail } => (
                    "Flashed and verified".into(),
                    format!("Done: {detail}."),
                    "The same unit came back calibrated on the new firmware.".into(),
                ),
                Outcome::NotVerified { what_failed, next } => (
                    "Flashed, NOT verified".into(),
                    next.clone(),
                    format!("After the flash {what_failed}."),
                ),
                Outcome::Failed { problem } => (
                    format!("Flash failed: {}", problem.what),
                    problem.next.clone(),
                    problem.why.clone(),
                ),
                Outcome::Cancelled { detail } => (
                    "Flash stopped".into(),
                    "Press Enter to check and flash again.".into(),
                    detail.clone(),
                ),
            },
        }
    }

    fn armed_words(
        &self,
        view: Option<&DeviceView>,
        since_ms: u64,
        pins: bool,
    ) -> (String, String, String) {
        if self.flow.switching {
            return (
                "Switching to EDL over DIAG: waiting for 9008".into(),
                "The modem resets into its boot ROM; the upload starts the moment 9008 appears."
                    .into(),
                "DIAG 4B 65 01 00 makes a running Quectel modem re-enumerate as 05c6:9008 about \
                 2 s later."
                    .into(),
            );
        }
        if pins {
            return (
                "Bridge the pins: WAITING for 9008".into(),
                "Hold USB_BOOT to 1.8 V (VDD_EXT), then power the modem on; release the moment \
                 9008 is seen."
                    .into(),
                "With USB_BOOT held at power-on the boot ROM stays in emergency download mode; \
                 the upload starts the moment it appears."
                    .into(),
            );
        }
        let waited = duration_words(self.now_ms.saturating_sub(since_ms));
        let looping = view.and_then(|v| match &v.loop_status {
            LoopStatus::Looping(r) => Some(r),
            _ => None,
        });
        match looping {
            Some(r) => {
                let until = r.ms_until_next(self.now_ms);
                let next = if view.is_some_and(|v| v.present) {
                    let left = r
                        .open_window_closes_ms
                        .map(|c| c.saturating_sub(self.now_ms))
                        .unwrap_or(0);
                    format!(
                        "The open window closes in {}, too short to start; the next is expected \
                         in {}.",
                        secs(left),
                        secs(until)
                    )
                } else if until == 0 {
                    "The next window is due now; the upload starts the moment it appears.".into()
                } else {
                    format!(
                        "Expected in {}; the upload starts the moment it appears.",
                        secs(until)
                    )
                };
                (
                    "Waiting for the next window".into(),
                    next,
                    format!(
                        "The modem loops ({}): each window gives one attempt.",
                        r.summary()
                    ),
                )
            }
            None => (
                "Armed: waiting for the modem in EDL (9008)".into(),
                format!("Waiting ({waited}); the upload starts the moment 9008 appears."),
                "Waiting is safe: nothing is written until the modem is in download mode.".into(),
            ),
        }
    }
}
