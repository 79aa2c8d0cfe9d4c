//! Boot-loop detector: pure code over one device's timeline of appear / vanish / mode events.
//!
//! Feed it what the device source saw, each with its monotonic time (`t_ms`), and ask
//! [`LoopDetector::status`] with the current time. No clocks, no I/O: the same timeline always
//! gives the same answer, so it is tested against synthetic and recorded timelines.
//!
//! One detector follows one physical device (the caller tracks identity across mode switches:
//! port path, EDL serial). Each appearance carries a [`ModeClass`] and an opaque `label`
//! (normally `VID:PID`, e.g. `05c6:9008`, `2c7c:0125`), so the detector does not depend on the
//! classifier.
//!
//! What it does with the timeline:
//! - **Visits.** An appearance opens a visit and a vanish closes it. A *blip* — a visit shorter
//!   than [`LoopConfig::merge_ms`] followed within `merge_ms` by a new appearance with the same
//!   label — is one visit, not two (a USB 3 modem in EDL shows up briefly on the SuperSpeed path,
//!   then re-enumerates as USB 2). A device that was up for seconds and comes back 60 ms after
//!   leaving has really reset (EG25-G: attach, detach 3.3 s later, re-attach 0.06 s after that —
//!   USERS.md §4.2, crust-firmware/crust#204), so that counts as a new appearance.
//! - **Rhythm.** The times between appearances are fitted to one period. An interval of about
//!   two or three periods is a *missed cycle* (the host did not see one appearance); one interval
//!   in four may be an outlier. When two modes alternate with uneven gaps (9008 ↔ fastboot,
//!   RG500 — xhikarishii/openwrt-ipq#3), the fit uses every second appearance and the period is
//!   the whole cycle. The loop is reported after three appearances of a clean loop (two periods).
//! - **Prediction.** The next appearance is the last one plus a period (a reboot loop restarts its
//!   clock at every boot). Once the device is later than the tolerance allows, the prediction steps
//!   on by a period and counts a missed cycle. It is never earlier than the last observation.
//! - **End.** The loop has stopped when the device stays present, or stays away, for several
//!   periods; the next appearance then starts detection afresh. A gap longer than
//!   [`LoopConfig::max_period_ms`] also starts afresh, so plugging a modem in once is no loop.
//! - **Triage.** A plain-words hint from the mode sequence and timing ([`Triage`]), with the facts
//!   from `docs/USERS.md` it rests on ([`Triage::evidence`]). Periods are measured, never assumed
//!   (USERS.md §6: "Don't hard-code 14 s; measure it").

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The mode of one appearance, as far as the loop detector cares. The caller maps the
/// classifier's finer mode into this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeClass {
    /// Emergency download: the boot ROM's Sahara (05c6:9008).
    Edl,
    /// Crash dump / Sahara memory debug (05c6:900e).
    CrashDump,
    /// Normal (application) mode: the modem's own USB composition.
    Normal,
    /// Fastboot (18d1:d00d on Quectel).
    Fastboot,
    /// A broken boot state, e.g. 2c7c:0125 showing `QHSUSB__BULK` with one interface.
    Broken,
    /// Anything else.
    Other,
}

impl ModeClass {
    /// A short word for people.
    pub fn label(self) -> &'static str {
        match self {
            ModeClass::Edl => "EDL",
            ModeClass::CrashDump => "crash dump",
            ModeClass::Normal => "normal",
            ModeClass::Fastboot => "fastboot",
            ModeClass::Broken => "broken boot state",
            ModeClass::Other => "other",
        }
    }
}

/// Tuning. The defaults suit the loops users report (1 s to a few minutes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopConfig {
    /// A visit shorter than this, followed within this long by the same label, is merged with
    /// the next appearance (re-enumeration noise). Default 100 ms.
    pub merge_ms: u64,
    /// Allowed deviation of an interval from a whole number of periods, as a fraction of the
    /// period. Also how late an appearance may be before it counts as missed. Default 0.25
    /// (covers ±10 % jitter on each appearance).
    pub tolerance: f64,
    /// Longest period considered a loop; a longer absence or visit starts detection afresh.
    /// Default 5 min (router modems reset every 30–120 s, USERS.md §4.2).
    pub max_period_ms: u64,
    /// The loop has stopped when the device stays present, or away, this many periods.
    /// Default 3.
    pub stop_periods: f64,
    /// Visits kept for the fit (older ones are forgotten). Default 16, at least 4.
    pub history: usize,
    /// A typical window shorter than this points at power or the USB link. Default 1 s.
    pub short_window_ms: u64,
    /// A normal-mode window up to this long counts as a crash soon after boot. Default 8 s
    /// (Sierra's firmware counts a crash within 8 s of boot as a loop, USERS.md §4.2
    /// [analogy]).
    pub early_crash_ms: u64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            merge_ms: 100,
            tolerance: 0.25,
            max_period_ms: 300_000,
            stop_periods: 3.0,
            history: 16,
            short_window_ms: 1_000,
            early_crash_ms: 8_000,
        }
    }
}

impl LoopConfig {
    /// The same configuration with out-of-range values pulled into range.
    fn sanitized(mut self) -> Self {
        if !self.tolerance.is_finite() || self.tolerance <= 0.0 {
            self.tolerance = 0.25;
        }
        self.tolerance = self.tolerance.min(0.45);
        if !self.stop_periods.is_finite() || self.stop_periods < 1.5 {
            self.stop_periods = 1.5;
        }
        self.stop_periods = self.stop_periods.min(1000.0);
        self.history = self.history.clamp(4, 1024);
        self.max_period_ms = self.max_period_ms.max(1);
        self
    }
}

/// One stay of the device on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    /// When it appeared, or when watching began for a device that was already present.
    pub start_ms: u64,
    /// False for a device that was already present when watching began: its real appearance
    /// time is unknown, so it counts for neither the period nor the window.
    #[serde(default = "start_known_default")]
    pub start_known: bool,
    /// `None` while the device is still present.
    pub end_ms: Option<u64>,
    pub mode: ModeClass,
    pub label: String,
}

fn start_known_default() -> bool {
    true
}

impl Visit {
    /// How long the device was (or, while present, has been) on the bus as of `now_ms`.
    pub fn duration_ms(&self, now_ms: u64) -> u64 {
        self.end_ms.unwrap_or(now_ms).saturating_sub(self.start_ms)
    }

    /// How long the device stayed, once it has left (and its appearance was seen).
    pub fn window_ms(&self) -> Option<u64> {
        match (self.start_known, self.end_ms) {
            (true, Some(end)) => Some(end.saturating_sub(self.start_ms)),
            _ => None,
        }
    }
}

/// One step of the repeating mode sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopStep {
    pub label: String,
    pub mode: ModeClass,
    /// Typical time present in this step (median of the closed windows).
    pub window_ms: u64,
}

/// A boot loop, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopReport {
    /// Time until the sequence repeats. With one appearance per cycle (the usual case) this is
    /// the time between appearances.
    pub period_ms: u64,
    /// Appearances per period: 1, or 2 when two modes alternate with uneven gaps.
    pub appearances_per_period: u32,
    /// Largest deviation of an observed interval from the fitted period (or a multiple of it).
    pub jitter_ms: u64,
    /// Typical time present (median of the closed windows).
    pub window_ms: u64,
    pub window_min_ms: u64,
    pub window_max_ms: u64,
    /// Appearances seen since the loop began.
    pub cycles: u32,
    /// Appearances that should have happened but were not seen (including any overdue now).
    pub missed_cycles: u32,
    /// The repeating sequence, starting with the oldest step seen (`["05c6:9008"]`, or
    /// `["05c6:9008", "18d1:d00d"]` alternating).
    pub mode_sequence: Vec<LoopStep>,
    /// False when the labels do not repeat in a short pattern; `mode_sequence` then lists the
    /// labels seen, in order of first appearance.
    pub sequence_regular: bool,
    /// When the device should appear next (never before the last observation; may be up to the
    /// tolerance before `as_of_ms` when the device is running late).
    pub next_appear_ms: u64,
    /// Which step is expected next (`None` when the sequence is irregular).
    pub next_label: Option<String>,
    pub next_mode: Option<ModeClass>,
    /// When that next window should close.
    pub next_window_closes_ms: u64,
    /// While the device is present: when the open window should close (never before `as_of_ms`).
    pub open_window_closes_ms: Option<u64>,
    /// 0..=1, a ranking of how well the timeline fits (more cycles, less jitter, fewer misses
    /// give more); not a probability.
    pub confidence: f64,
    pub triage: Triage,
    /// The time the predictions were made for.
    pub as_of_ms: u64,
}

impl LoopReport {
    /// Milliseconds from `now_ms` until the predicted appearance (0 when due or late).
    pub fn ms_until_next(&self, now_ms: u64) -> u64 {
        self.next_appear_ms.saturating_sub(now_ms)
    }

    /// Seconds from `now_ms` until the predicted appearance (0 when due or late).
    pub fn seconds_until_next(&self, now_ms: u64) -> f64 {
        self.ms_until_next(now_ms) as f64 / 1000.0
    }

    /// One line for people: `05c6:9008 every 14.0 s (±0.3 s), present 10.0 s`.
    pub fn summary(&self) -> String {
        let seq = self
            .mode_sequence
            .iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>();
        let seq = if self.sequence_regular {
            seq.join(" ↔ ")
        } else {
            format!("{} (irregular order)", seq.join(", "))
        };
        let mut line = format!("{seq} every {}", secs(self.period_ms));
        if self.jitter_ms >= 100 {
            line.push_str(&format!(" (±{})", secs(self.jitter_ms)));
        }
        line.push_str(&format!(", present {}", secs(self.window_ms)));
        if self.missed_cycles > 0 {
            let s = if self.missed_cycles == 1 { "" } else { "s" };
            line.push_str(&format!(", {} missed cycle{s}", self.missed_cycles));
        }
        line
    }
}

/// `14.0 s`
fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Why a loop is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The device came and stayed (it booted, or sits in download mode waiting).
    StayedPresent,
    /// The device has not come back for several periods.
    StayedAway,
}

/// What the timeline says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum LoopStatus {
    /// Nothing loop-like: no device, one visit, or a long quiet time.
    None,
    /// The device came back, but there is no steady rhythm yet. `triage` is set when it keeps
    /// coming and going without one (four or more appearances): that points at power or cable.
    Suspected {
        cycles: u32,
        triage: Option<Triage>,
    },
    Looping(LoopReport),
    /// A loop was seen and has ended; `last` is the report as of the last observation.
    Stopped {
        last: LoopReport,
        reason: StopReason,
        since_ms: u64,
    },
}

impl LoopStatus {
    pub fn is_looping(&self) -> bool {
        matches!(self, LoopStatus::Looping(_))
    }

    /// The current or last loop report.
    pub fn report(&self) -> Option<&LoopReport> {
        match self {
            LoopStatus::Looping(r) | LoopStatus::Stopped { last: r, .. } => Some(r),
            _ => None,
        }
    }
}

/// A hint for people: what the loop most likely means and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Triage {
    /// Crash-dump mode (05c6:900e) is part of the loop.
    FirmwareCrash,
    /// Windows under a second, an irregular rhythm, or windows that vary wildly.
    PowerOrCable,
    /// Only download mode (9008) comes up.
    DownloadModeLoop,
    /// Boot modes (9008, fastboot, the broken QHSUSB__BULK state) without normal mode.
    BrokenBootChain,
    /// Normal mode that drops within seconds of boot.
    EarlyAppCrash,
    /// Normal mode that runs for a while, then leaves the bus.
    AppModeResets,
    /// A loop in modes qrescue does not recognise.
    Unclear,
}

impl Triage {
    /// A few words: "power or USB link".
    pub fn headline(self) -> &'static str {
        match self {
            Triage::FirmwareCrash => "firmware crash (crash-dump mode 05c6:900e)",
            Triage::PowerOrCable => "power or USB link",
            Triage::DownloadModeLoop => "download-mode (9008) loop: no valid boot chain",
            Triage::BrokenBootChain => "broken boot chain: never reaches normal mode",
            Triage::EarlyAppCrash => "firmware crashes soon after boot",
            Triage::AppModeResets => "modem resets after running for a while",
            Triage::Unclear => "loop in an unrecognised mode",
        }
    }

    /// What it means and what to do, in plain words.
    pub fn advice(self) -> &'static str {
        match self {
            Triage::FirmwareCrash => {
                "The modem's firmware crashes and drops into crash-dump mode (05c6:900e). Take a \
                 RAM dump now if you want to report the crash, then reflash a known-good firmware \
                 package through download mode (EDL)."
            }
            Triage::PowerOrCable => {
                "The modem stays on the bus for under a second, or comes and goes without a steady \
                 rhythm. That points at power or the USB link, not the firmware: try another cable, \
                 a port without a hub and a stronger power supply first. A host program that \
                 resets the modem (a router's modem manager, eg25-manager) can do this too."
            }
            Triage::DownloadModeLoop => {
                "Only the boot ROM's download mode (05c6:9008) comes up, then the device resets: \
                 the boot ROM finds no valid boot chain, or the download-mode link drops. The modem \
                 is recoverable: flash a full firmware package through the window, starting the \
                 moment 9008 appears (one attempt per power-up). If the window length varies \
                 wildly, suspect power or the cable first."
            }
            Triage::BrokenBootChain => {
                "The modem cycles through boot modes (download mode, fastboot or the broken \
                 QHSUSB__BULK state) and never reaches normal mode: the boot chain is damaged, \
                 often by an interrupted or mismatched update. Flash a complete factory package \
                 through the 9008 window. The QHSUSB__BULK state clears only after a real \
                 power-off, not a USB replug."
            }
            Triage::EarlyAppCrash => {
                "The modem boots into normal mode and drops off within seconds, again and again: \
                 the firmware crashes after boot (broken or mismatched modem firmware, or a bad \
                 configuration), or the power sags under load. Check power and cable first (it is \
                 cheap), then enter download mode (EDL) and reflash."
            }
            Triage::AppModeResets => {
                "The modem runs in normal mode for a while and then leaves the bus again. Look for \
                 what resets it: a host program restarting a modem that stopped answering (router \
                 modem managers, eg25-manager), a firmware crash under load, or power sagging when \
                 it transmits. The host's log around each disappearance usually says which."
            }
            Triage::Unclear => {
                "The device loops in a mode qrescue does not recognise. Check power and cable, note \
                 the VID:PID shown, and attach a recording of this timeline to a bug report."
            }
        }
    }

    /// The facts from docs/USERS.md this hint rests on.
    pub fn evidence(self) -> &'static [&'static str] {
        match self {
            Triage::FirmwareCrash => &[
                "05c6:900e is crash-dump / Sahara memory-debug mode; qdl has `ramdump` for it \
                 (USERS.md §5: linux-msm/qdl README; bkerler/edl#405)",
            ],
            Triage::PowerOrCable => &[
                "EP06-E up 5.2 s then gone, power suspected (USERS.md §4.2: forums.quectel.com …/3851)",
                "Sahara errors fixed \"with new USB cable\" (USERS.md §1.14: iamromulan/RM551E-GL#4)",
                "`device descriptor read/64, error -110` and `error -71`: power or cable \
                 (USERS.md §2.8: forth32/qtools#28, forums.quectel.com …/58273)",
                "eg25-manager resets a lost modem (\"Lost modem, resetting...\", USERS.md §4.2: \
                 the-modem-distro/pinephone_modem_sdk#130)",
            ],
            Triage::DownloadModeLoop => &[
                "RM502Q-GL \"power_cicle every 14s\" in QDLoader 9008, \"less 14s of live\" \
                 (USERS.md §1.5, §4.3: forums.quectel.com …/31665)",
                "a device ending in :9008 is the recoverability test (USERS.md §4.3: …/44652, …/244)",
                "one HELLO per power-up; a second attempt fails until replug \
                 (USERS.md §4.3: linux-msm/qdl#184, openpst/sahara#7)",
            ],
            Triage::BrokenBootChain => &[
                "RG500 \"reboot itself between 9008 and fastboot\" after an update \
                 (USERS.md §1.5: xhikarishii/openwrt-ipq#3)",
                "2c7c:0125 with bcdDevice 0.00 and QHSUSB__BULK is a broken boot state that only a \
                 real power-off clears (USERS.md §5: forums.quectel.com …/35001)",
            ],
            Triage::EarlyAppCrash => &[
                "EG21-G \"recognized briefly, after about 5 seconds it is gone again\", looping \
                 (USERS.md §1.5, §4.2: forums.quectel.com …/55880)",
                "EC25-EFA \"within a few seconds, it disconnects\", repeating \
                 (USERS.md §4.2: forums.quectel.com …/33937)",
                "EP06-E up ~5.2 s after its first flash, power suspected \
                 (USERS.md §4.2: forums.quectel.com …/3851)",
                "Sierra firmware counts a crash within 8 s of boot as a loop [analogy] \
                 (USERS.md §4.2: HL75xx AT guide)",
            ],
            Triage::AppModeResets => &[
                "Teltonika RUT240 internal modem: ~30 s and ~120 s between connect and disconnect \
                 (USERS.md §4.2: community.teltonika.lt …/7083)",
                "eg25-manager: ~18 s from \"Lost modem, resetting...\" to the modem back \
                 (USERS.md §4.2: the-modem-distro/pinephone_modem_sdk#130)",
                "EG12 in a RUTX14: ~7.5 s USB re-enumeration after a spontaneous disconnect \
                 (USERS.md §4.2: community.teltonika-networks.com 54390)",
            ],
            Triage::Unclear => &[
                "boot-loop periods vary by cause; measure, don't assume (USERS.md §6)",
            ],
        }
    }
}

/// How many loop windows a job of `plan_duration_ms` needs when only the fraction `safety`
/// (0..=1) of each `window_ms` window is used (the rest is margin for connecting and jitter).
/// `None` when no usable time is left per window. This assumes the job can continue in the next
/// window where it stopped (a resumable plan); one that must finish in one window needs
/// `Some(1)`.
pub fn windows_needed(plan_duration_ms: u64, window_ms: u64, safety: f64) -> Option<u64> {
    if plan_duration_ms == 0 {
        return Some(0);
    }
    let safety = if safety.is_finite() {
        safety.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let usable = (window_ms as f64 * safety).floor() as u64;
    if usable == 0 {
        return None;
    }
    Some(plan_duration_ms.div_ceil(usable))
}

/// Most whole periods one interval may span (two missed appearances in a row).
const MAX_PERIODS_PER_INTERVAL: u64 = 3;
/// Alternations longer than this are not looked for.
const MAX_LAG: usize = 2;
/// Without a rhythm, visits this many times the longest gap between appearances apart are
/// unrelated (a modem that reset once and then stayed up is no loop). Large enough for a router
/// modem that stays up ~30 s one time and ~120 s the next (USERS.md §4.2, …/7083).
const UNRELATED_AFTER_GAPS: f64 = 8.0;

/// The detector for one device. See the module documentation.
#[derive(Debug, Clone)]
pub struct LoopDetector {
    cfg: LoopConfig,
    visits: VecDeque<Visit>,
    /// Visits of the current run forgotten from the front of `visits` (history bound).
    forgotten: u32,
    last_t: Option<u64>,
}

impl Default for LoopDetector {
    fn default() -> Self {
        LoopDetector::new(LoopConfig::default())
    }
}

impl LoopDetector {
    pub fn new(cfg: LoopConfig) -> Self {
        LoopDetector {
            cfg: cfg.sanitized(),
            visits: VecDeque::new(),
            forgotten: 0,
            last_t: None,
        }
    }

    pub fn config(&self) -> &LoopConfig {
        &self.cfg
    }

    /// The visits of the current run, oldest first (at most [`LoopConfig::history`]).
    pub fn visits(&self) -> impl Iterator<Item = &Visit> {
        self.visits.iter()
    }

    /// Whether the device is on the bus now.
    pub fn present(&self) -> bool {
        self.visits.back().is_some_and(|v| v.end_ms.is_none())
    }

    /// Time of the last observation (after ordering), if any.
    pub fn last_observation_ms(&self) -> Option<u64> {
        self.last_t
    }

    /// Forget everything.
    pub fn reset(&mut self) {
        self.visits.clear();
        self.forgotten = 0;
        self.last_t = None;
    }

    /// Times never run backwards: an event older than the last one is taken as happening at
    /// the last one's time.
    fn order(&mut self, t_ms: u64) -> u64 {
        let t = self.last_t.map_or(t_ms, |last| last.max(t_ms));
        self.last_t = Some(t);
        t
    }

    /// The device appeared (or, while present, changed mode). The same label while present only
    /// updates the mode (a refined classification or a duplicate event); a different label while
    /// present ends the visit and starts a new one (a mode switch whose vanish was not seen).
    pub fn observe_appear(&mut self, t_ms: u64, mode: ModeClass, label: impl Into<String>) {
        self.appear(t_ms, mode, label.into(), true);
    }

    /// The device was already on the bus when watching began (the listing a device source gives
    /// first). Its appearance time is unknown, so this visit is left out of the period and window
    /// measurements; counting it as an appearance at `t_ms` would bend the first interval.
    pub fn observe_already_present(
        &mut self,
        t_ms: u64,
        mode: ModeClass,
        label: impl Into<String>,
    ) {
        self.appear(t_ms, mode, label.into(), false);
    }

    fn appear(&mut self, t_ms: u64, mode: ModeClass, label: String, start_known: bool) {
        let t = self.order(t_ms);
        let merge_ms = self.cfg.merge_ms;
        if let Some(last) = self.visits.back_mut() {
            match last.end_ms {
                None if last.label == label => {
                    last.mode = mode;
                    return;
                }
                None => last.end_ms = Some(t),
                Some(end) => {
                    let blip = end.saturating_sub(last.start_ms) < merge_ms;
                    if blip && last.label == label && t.saturating_sub(end) < merge_ms {
                        last.end_ms = None;
                        last.mode = mode;
                        return;
                    }
                }
            }
        }
        if self.run_over(t) {
            self.visits.clear();
            self.forgotten = 0;
        }
        self.visits.push_back(Visit {
            start_ms: t,
            start_known,
            end_ms: None,
            mode,
            label,
        });
        while self.visits.len() > self.cfg.history {
            self.visits.pop_front();
            self.forgotten = self.forgotten.saturating_add(1);
        }
    }

    /// The device left the bus. A vanish while absent (a duplicate) is ignored.
    pub fn observe_vanish(&mut self, t_ms: u64) {
        let t = self.order(t_ms);
        if let Some(last) = self.visits.back_mut() {
            if last.end_ms.is_none() {
                last.end_ms = Some(t);
            }
        }
    }

    /// Whether a new appearance at `t` belongs to a new run: the loop has stopped, or (without a
    /// loop) the device was present or away too long for the visits to be related.
    fn run_over(&self, t: u64) -> bool {
        match self.assess(t) {
            Assessment::Empty | Assessment::Unrelated => true,
            Assessment::Stopped { .. } => true,
            Assessment::Active { .. } | Assessment::Loop { .. } => false,
        }
    }

    /// What the timeline says as of `now_ms` (a time before the last observation is taken as
    /// the last observation's time).
    pub fn status(&self, now_ms: u64) -> LoopStatus {
        let now = self.last_t.map_or(now_ms, |last| last.max(now_ms));
        match self.assess(now) {
            Assessment::Empty | Assessment::Unrelated => LoopStatus::None,
            Assessment::Active { appearances } => {
                if appearances < 2 {
                    return LoopStatus::None;
                }
                let triage = if appearances >= 4 {
                    let crash = self.visits.iter().any(|v| v.mode == ModeClass::CrashDump);
                    Some(if crash {
                        Triage::FirmwareCrash
                    } else {
                        Triage::PowerOrCable
                    })
                } else {
                    None
                };
                LoopStatus::Suspected {
                    cycles: appearances,
                    triage,
                }
            }
            Assessment::Loop { from, fit } => LoopStatus::Looping(self.report(from, &fit, now)),
            Assessment::Stopped {
                from,
                fit,
                reason,
                since_ms,
            } => {
                let as_of = self.last_t.unwrap_or(now);
                LoopStatus::Stopped {
                    last: self.report(from, &fit, as_of),
                    reason,
                    since_ms,
                }
            }
        }
    }

    fn assess(&self, now: u64) -> Assessment {
        let Some(last) = self.visits.back() else {
            return Assessment::Empty;
        };
        let present_for = last.duration_ms(now);
        let since_start = now.saturating_sub(last.start_ms);
        let (tol, stop) = (self.cfg.tolerance, self.cfg.stop_periods);
        if let Some((from, fit)) = self.best_fit() {
            let p = fit.period;
            if present_for as f64 > stop * p {
                return Assessment::Stopped {
                    from,
                    fit,
                    reason: StopReason::StayedPresent,
                    since_ms: last.start_ms,
                };
            }
            if since_start as f64 > (stop + tol) * p {
                return Assessment::Stopped {
                    from,
                    fit,
                    reason: StopReason::StayedAway,
                    since_ms: last.end_ms.unwrap_or(last.start_ms),
                };
            }
            return Assessment::Loop { from, fit };
        }
        let absent_for = last.end_ms.map_or(0, |end| now.saturating_sub(end));
        if present_for > self.cfg.max_period_ms || absent_for > self.cfg.max_period_ms {
            return Assessment::Unrelated;
        }
        // Without a rhythm, the longest gap between appearances so far sets the scale: a
        // device that stays (or stays away) many times longer than that has settled.
        let longest = self
            .visits
            .iter()
            .zip(self.visits.iter().skip(1))
            .filter(|(a, _)| a.start_known)
            .map(|(a, b)| b.start_ms.saturating_sub(a.start_ms))
            .max();
        if let Some(longest) = longest {
            let scale = longest.max(1) as f64 * UNRELATED_AFTER_GAPS;
            if present_for as f64 > scale || since_start as f64 > scale {
                return Assessment::Unrelated;
            }
        }
        let appearances = (self.visits.len() as u32).saturating_add(self.forgotten);
        Assessment::Active { appearances }
    }

    /// The longest suffix of the visits (at least three appearances) that keeps a rhythm.
    fn best_fit(&self) -> Option<(usize, Fit)> {
        let starts: Vec<u64> = self.visits.iter().map(|v| v.start_ms).collect();
        let tol = self.cfg.tolerance;
        // Only visits whose appearance was seen.
        let first = self
            .visits
            .iter()
            .rposition(|v| !v.start_known)
            .map_or(0, |i| i + 1);
        for from in first..starts.len() {
            let s = &starts[from..];
            if s.len() < 3 {
                break;
            }
            for lag in 1..=MAX_LAG {
                if let Some(fit) = fit_lag(s, lag, tol, self.cfg.max_period_ms) {
                    return Some((from, fit));
                }
            }
        }
        None
    }

    fn report(&self, from: usize, fit: &Fit, now: u64) -> LoopReport {
        let visits: Vec<&Visit> = self.visits.iter().skip(from).collect();
        let n = visits.len();
        let last = visits[n - 1];
        let last_obs = self.last_t.unwrap_or(now).max(last.start_ms);
        let period = (fit.period.round() as u64).max(1);
        let lag = fit.lag;

        // Windows: closed visits only.
        let mut all: Vec<u64> = visits.iter().filter_map(|v| v.window_ms()).collect();
        if all.is_empty() {
            all.push(last.duration_ms(now));
        }
        all.sort_unstable();
        let window = median(&all);
        let (window_min, window_max) = (all[0], all[all.len() - 1]);

        // The mode sequence.
        let keys: Vec<(&str, ModeClass)> =
            visits.iter().map(|v| (v.label.as_str(), v.mode)).collect();
        let unit = repeating_unit(&keys);
        let step_window = |label: &str, mode: ModeClass| -> u64 {
            let mut w: Vec<u64> = visits
                .iter()
                .filter(|v| v.label == label && v.mode == mode)
                .filter_map(|v| v.window_ms())
                .collect();
            if w.is_empty() {
                return window;
            }
            w.sort_unstable();
            median(&w)
        };
        let (sequence_regular, seq_keys): (bool, Vec<(&str, ModeClass)>) = match unit {
            Some(u) => (true, keys[..u].to_vec()),
            None => {
                let mut seen: Vec<(&str, ModeClass)> = Vec::new();
                for k in &keys {
                    if !seen.contains(k) {
                        seen.push(*k);
                    }
                }
                (false, seen)
            }
        };
        let mode_sequence: Vec<LoopStep> = seq_keys
            .iter()
            .map(|&(label, mode)| LoopStep {
                label: label.to_string(),
                mode,
                window_ms: step_window(label, mode),
            })
            .collect();

        // Prediction: from each of the last `lag` appearances, the first repeat that is not
        // before the last observation nor (while the device is away) more than the tolerance
        // overdue. While the device is present it cannot appear anew, so nothing is missed yet.
        let present = last.end_ms.is_none();
        let grace = (self.cfg.tolerance * fit.period / lag as f64) as u64;
        let floor_t = now.saturating_sub(grace);
        let mut best: Option<(u64, usize, u64)> = None; // (time, index, periods ahead)
        for (idx, v) in visits.iter().enumerate().skip(n.saturating_sub(lag)) {
            let s = v.start_ms;
            let k1 = ceil_div(last_obs.saturating_sub(s), period);
            let k2 = if present {
                0
            } else {
                ceil_div(floor_t.saturating_sub(s), period)
            };
            let k = k1.max(k2).max(1);
            let t = s.saturating_add(k.saturating_mul(period));
            if best.is_none_or(|(bt, _, _)| t < bt) {
                best = Some((t, idx, k));
            }
        }
        let (mut next_appear, next_idx, ahead) = best.unwrap_or((last_obs, n - 1, 1));
        if present {
            // Staying longer than usual delays the next appearance: it comes the usual gap
            // after this window closes, and the window has not closed yet.
            let usual_close = last
                .start_ms
                .saturating_add(step_window(&last.label, last.mode));
            let gap = next_appear.saturating_sub(usual_close);
            next_appear = next_appear.max(now.saturating_add(gap));
        }
        // Appearances from the last one to the predicted one (1 = the very next).
        let ahead = if present { 1 } else { ahead };
        let overdue: u64 = if present {
            0
        } else if lag == 1 {
            ahead - 1
        } else {
            // Predicted repeats of each phase that fell between the last appearance and the
            // chosen next one.
            (n - lag..n)
                .map(|idx| {
                    let s = visits[idx].start_ms;
                    let lo = last.start_ms.saturating_sub(s) / period + 1;
                    let hi = next_appear.saturating_sub(s).saturating_sub(1) / period;
                    hi.saturating_sub(lo - 1).min(1_000)
                })
                .sum::<u64>()
        };
        let (next_label, next_mode) = if lag == 1 {
            match unit {
                Some(u) => {
                    let u64u = u as u64;
                    let pos = (((n as u64 - 1) % u64u + ahead % u64u) % u64u) as usize;
                    (Some(keys[pos].0.to_string()), Some(keys[pos].1))
                }
                None => (None, None),
            }
        } else {
            let v = visits[next_idx];
            (Some(v.label.clone()), Some(v.mode))
        };
        let next_window = match (&next_label, next_mode) {
            (Some(l), Some(m)) => step_window(l, m),
            _ => window,
        };
        let open_window_closes = if last.end_ms.is_none() {
            let w = step_window(&last.label, last.mode);
            Some(last.start_ms.saturating_add(w).max(now))
        } else {
            None
        };
        let missed = fit.missed.saturating_add(overdue);

        // Confidence: more direct intervals, less jitter, fewer misses and outliers.
        let c_count = 1.0 - 0.5f64.powi(fit.direct.min(30) as i32);
        let c_jitter = 1.0 - 0.5 * (fit.jitter / (self.cfg.tolerance * fit.period)).min(1.0);
        let c_fit = fit.consistent as f64 / fit.total as f64;
        let c_miss = 1.0 / (1.0 + 0.25 * missed as f64);
        let confidence = (c_count * c_jitter * c_fit * c_miss).clamp(0.0, 1.0);

        // Triage.
        let steps: Vec<(ModeClass, u64)> = mode_sequence
            .iter()
            .map(|s| (s.mode, s.window_ms))
            .collect();
        let wild = {
            // Per step, so two modes with different windows do not look wild.
            seq_keys.iter().any(|&(label, mode)| {
                let w: Vec<u64> = visits
                    .iter()
                    .filter(|v| v.label == label && v.mode == mode)
                    .filter_map(|v| v.window_ms())
                    .collect();
                let (Some(&lo), Some(&hi)) = (w.iter().min(), w.iter().max()) else {
                    return false;
                };
                w.len() >= 3 && hi > lo.saturating_mul(2) && hi - lo >= 1_000
            })
        };
        // Intervals off by more than a fifth of a period: beyond the ±10 % jitter a clean loop
        // shows (each interval may still fit within the tolerance of 25 %).
        let irregular = fit.jitter > 0.2 * fit.period / lag as f64;
        let triage = triage_for(&steps, window, wild || irregular, &self.cfg);

        let cycles = (n as u32).saturating_add(if from == 0 { self.forgotten } else { 0 });
        LoopReport {
            period_ms: period,
            appearances_per_period: lag as u32,
            jitter_ms: fit.jitter.round() as u64,
            window_ms: window,
            window_min_ms: window_min,
            window_max_ms: window_max,
            cycles,
            missed_cycles: missed.min(u32::MAX as u64) as u32,
            mode_sequence,
            sequence_regular,
            next_appear_ms: next_appear,
            next_label,
            next_mode,
            next_window_closes_ms: next_appear.saturating_add(next_window),
            open_window_closes_ms: open_window_closes,
            confidence,
            triage,
            as_of_ms: now,
        }
    }
}

enum Assessment {
    Empty,
    /// The visits are too far apart to belong together.
    Unrelated,
    /// Recent visits, no rhythm (yet).
    Active {
        appearances: u32,
    },
    Loop {
        from: usize,
        fit: Fit,
    },
    Stopped {
        from: usize,
        fit: Fit,
        reason: StopReason,
        since_ms: u64,
    },
}

/// A period fitted to appearance times.
#[derive(Debug, Clone)]
struct Fit {
    /// Appearances per period.
    lag: usize,
    period: f64,
    /// Largest deviation of a consistent interval from its multiple of the period.
    jitter: f64,
    /// Intervals of one period.
    direct: usize,
    /// Intervals of one, two or three periods.
    consistent: usize,
    total: usize,
    /// Appearances missing inside the consistent intervals.
    missed: u64,
}

struct Eval {
    consistent: usize,
    direct: usize,
    missed: u64,
    sum_d: f64,
    sum_k: f64,
    dev_sum: f64,
    max_dev: f64,
    first_ok: bool,
}

fn evaluate(intervals: &[u64], p: f64, tol: f64) -> Eval {
    let mut e = Eval {
        consistent: 0,
        direct: 0,
        missed: 0,
        sum_d: 0.0,
        sum_k: 0.0,
        dev_sum: 0.0,
        max_dev: 0.0,
        first_ok: false,
    };
    for (i, &d) in intervals.iter().enumerate() {
        let d = d as f64;
        let k = (d / p).round().max(1.0);
        if k > MAX_PERIODS_PER_INTERVAL as f64 {
            continue;
        }
        let dev = (d - k * p).abs();
        if dev > tol * p {
            continue;
        }
        if i == 0 {
            e.first_ok = true;
        }
        e.consistent += 1;
        if k == 1.0 {
            e.direct += 1;
        }
        e.missed += k as u64 - 1;
        e.sum_d += d;
        e.sum_k += k;
        e.dev_sum += dev;
        e.max_dev = e.max_dev.max(dev);
    }
    e
}

/// Fit one period to the intervals between every `lag`-th appearance, or `None` when they keep
/// no rhythm. The first interval must fit (so a long visit before the loop is left out), at most
/// one interval in four may be an outlier, and at least two intervals must be one period long.
fn fit_lag(starts: &[u64], lag: usize, tol: f64, max_period_ms: u64) -> Option<Fit> {
    if starts.len() < lag + 2 {
        return None;
    }
    let intervals: Vec<u64> = starts
        .iter()
        .zip(starts.iter().skip(lag))
        .map(|(a, b)| b.saturating_sub(*a))
        .collect();
    if lag > 1 && intervals.len() < 3 {
        return None;
    }
    let mut best: Option<(f64, Eval)> = None;
    for &c in &intervals {
        if c == 0 {
            continue;
        }
        let e = evaluate(&intervals, c as f64, tol);
        let better = match &best {
            None => true,
            Some((_, b)) => {
                (e.consistent, e.direct) > (b.consistent, b.direct)
                    || ((e.consistent, e.direct) == (b.consistent, b.direct)
                        && e.dev_sum < b.dev_sum)
            }
        };
        if better {
            best = Some((c as f64, e));
        }
    }
    let (mut p, mut e) = best?;
    // Refine: the period that best explains the consistent intervals, then check again.
    for _ in 0..2 {
        if e.sum_k <= 0.0 {
            return None;
        }
        p = e.sum_d / e.sum_k;
        e = evaluate(&intervals, p, tol);
    }
    let total = intervals.len();
    let outliers = total - e.consistent;
    let enough = if lag == 1 {
        e.direct >= 2 && outliers * 4 <= total
    } else {
        e.direct >= 3 && outliers == 0
    };
    if !enough || !e.first_ok || p < 1.0 || p > (max_period_ms as f64) * lag as f64 {
        return None;
    }
    Some(Fit {
        lag,
        period: p,
        jitter: e.max_dev,
        direct: e.direct,
        consistent: e.consistent,
        total,
        missed: e.missed,
    })
}

/// The shortest pattern length (1–3) the labels repeat with, allowing one mismatch in five.
fn repeating_unit(keys: &[(&str, ModeClass)]) -> Option<usize> {
    (1..=3usize).find(|&u| {
        if keys.len() <= u {
            return false;
        }
        let compared = keys.len() - u;
        let mismatches = (u..keys.len()).filter(|&i| keys[i] != keys[i - u]).count();
        // Every step of the unit must differ from the others, else a shorter unit would do.
        let distinct = (0..u).all(|i| (0..i).all(|j| keys[i] != keys[j]));
        distinct && mismatches * 5 <= compared
    })
}

fn triage_for(steps: &[(ModeClass, u64)], window: u64, unsteady: bool, cfg: &LoopConfig) -> Triage {
    let has = |m: ModeClass| steps.iter().any(|(s, _)| *s == m);
    if has(ModeClass::CrashDump) {
        return Triage::FirmwareCrash;
    }
    if window < cfg.short_window_ms || unsteady {
        return Triage::PowerOrCable;
    }
    if has(ModeClass::Normal) {
        let normal: Vec<u64> = steps
            .iter()
            .filter(|(m, _)| *m == ModeClass::Normal)
            .map(|(_, w)| *w)
            .collect();
        let longest = normal.iter().copied().max().unwrap_or(window);
        return if longest <= cfg.early_crash_ms {
            Triage::EarlyAppCrash
        } else {
            Triage::AppModeResets
        };
    }
    if steps.iter().all(|(m, _)| *m == ModeClass::Edl) {
        return Triage::DownloadModeLoop;
    }
    if has(ModeClass::Edl) || has(ModeClass::Fastboot) || has(ModeClass::Broken) {
        return Triage::BrokenBootChain;
    }
    Triage::Unclear
}

/// Median of a sorted, non-empty slice (the lower middle for even lengths, so it is a value
/// that was observed).
fn median(sorted: &[u64]) -> u64 {
    sorted[(sorted.len() - 1) / 2]
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EDL: &str = "05c6:9008";
    const CRASH: &str = "05c6:900e";
    const FASTBOOT: &str = "18d1:d00d";
    const EG25: &str = "2c7c:0125";
    const EC21: &str = "2c7c:0121";

    #[derive(Debug, Clone)]
    enum Ev {
        A(u64, ModeClass, &'static str),
        V(u64),
    }
    use Ev::{A, V};

    fn feed(events: &[Ev]) -> LoopDetector {
        let mut d = LoopDetector::default();
        for e in events {
            match e {
                A(t, m, l) => d.observe_appear(*t, *m, *l),
                V(t) => d.observe_vanish(*t),
            }
        }
        d
    }

    /// One appearance per start, each present for its window. `windows` repeats if shorter.
    fn visits(starts: &[u64], windows: &[u64], mode: ModeClass, label: &'static str) -> Vec<Ev> {
        let mut ev = Vec::new();
        for (i, &s) in starts.iter().enumerate() {
            ev.push(A(s, mode, label));
            ev.push(V(s + windows[i % windows.len()]));
        }
        ev
    }

    /// Like `visits`, but the last appearance is still present (the window is open).
    fn visits_open(
        starts: &[u64],
        windows: &[u64],
        mode: ModeClass,
        label: &'static str,
    ) -> Vec<Ev> {
        let mut ev = visits(starts, windows, mode, label);
        ev.pop();
        ev
    }

    fn looping(d: &LoopDetector, now: u64) -> LoopReport {
        match d.status(now) {
            LoopStatus::Looping(r) => r,
            other => panic!("expected a loop at {now}, got {other:?}"),
        }
    }

    struct Case {
        name: &'static str,
        /// Where the figures come from.
        source: &'static str,
        events: Vec<Ev>,
        now: u64,
        period: (u64, u64),
        max_jitter: u64,
        window: (u64, u64),
        cycles: u32,
        missed: u32,
        next: (u64, u64),
        next_label: Option<&'static str>,
        triage: Triage,
        sequence: &'static [&'static str],
    }

    fn loop_cases() -> Vec<Case> {
        vec![
            Case {
                name: "RM502Q-GL in 9008, every 14 s, window 10 s, reported at the 3rd appearance",
                source: "USERS.md §1.5/§4.2/§4.3: RM502Q-GL 'power_cicle every 14s', 'less 14s of \
                         live' (…/31665); the 10 s window is `qrescue sim --boot-loop 14:10`",
                events: visits_open(&[5_000, 19_000, 33_000], &[10_000], ModeClass::Edl, EDL),
                now: 33_000,
                period: (14_000, 14_000),
                max_jitter: 0,
                window: (10_000, 10_000),
                cycles: 3,
                missed: 0,
                next: (47_000, 47_000),
                next_label: Some(EDL),
                triage: Triage::DownloadModeLoop,
                sequence: &[EDL],
            },
            Case {
                name: "RM502Q-GL 14 s loop with ±10 % jitter on each interval",
                source: "…/31665 period; jitter synthetic (15.4 s, 12.6 s, 14.0 s intervals)",
                events: visits(
                    &[0, 15_400, 28_000, 42_000],
                    &[10_000, 9_600, 10_400, 10_000],
                    ModeClass::Edl,
                    EDL,
                ),
                now: 53_000,
                period: (13_500, 14_500),
                max_jitter: 1_500,
                window: (9_600, 10_400),
                cycles: 4,
                missed: 0,
                next: (55_500, 56_500),
                next_label: Some(EDL),
                triage: Triage::DownloadModeLoop,
                sequence: &[EDL],
            },
            Case {
                name: "RM502Q-GL 14 s loop with one appearance not seen",
                source: "…/31665 period; the missed appearance at 42 s is synthetic",
                events: visits(&[0, 14_000, 28_000, 56_000, 70_000], &[10_000], ModeClass::Edl, EDL),
                now: 80_000,
                period: (14_000, 14_000),
                max_jitter: 0,
                window: (10_000, 10_000),
                cycles: 5,
                missed: 1,
                next: (84_000, 84_000),
                next_label: Some(EDL),
                triage: Triage::DownloadModeLoop,
                sequence: &[EDL],
            },
            Case {
                name: "EG21-G in normal mode, ~4-5 s present, ~5.2 s period with jitter",
                source: "USERS.md §4.2: EG21-G '~4–5 s present, then gone, repeating' (…/55880); \
                         the 0.5-0.8 s until it re-enumerates is assumed; 2c7c:0121 = EC21 family \
                         (PROTOCOLS.md §5)",
                events: visits(
                    &[0, 5_500, 10_300, 15_600, 20_700],
                    &[4_500, 4_300, 4_700, 4_600, 4_500],
                    ModeClass::Normal,
                    EC21,
                ),
                now: 25_200,
                period: (4_700, 5_700),
                max_jitter: 600,
                window: (4_300, 4_700),
                cycles: 5,
                missed: 0,
                next: (25_400, 26_400),
                next_label: Some(EC21),
                triage: Triage::EarlyAppCrash,
                sequence: &[EC21],
            },
            Case {
                name: "2c7c:0125 every 5.2 s (the wording of USERS.md §1.5)",
                source: "USERS.md §1.5 example '2c7c:0125 every 5.2 s'; EP06-E up 5.2 s \
                         (114158.02 → 114163.22, …/3851); window 4.2 s assumed",
                events: visits(&[1_000, 6_200, 11_400], &[4_200], ModeClass::Normal, EG25),
                now: 15_600,
                period: (5_200, 5_200),
                max_jitter: 0,
                window: (4_200, 4_200),
                cycles: 3,
                missed: 0,
                next: (16_600, 16_600),
                next_label: Some(EG25),
                triage: Triage::EarlyAppCrash,
                sequence: &[EG25],
            },
            Case {
                name: "router modem up ~30 s, back after ~7.5 s",
                source: "USERS.md §4.2: RUT240 '~30 s … between connect and disconnect' (…/7083); \
                         ~7.5 s USB re-enumeration (EG12 in RUTX14, Teltonika 54390)",
                events: visits(&[0, 37_500, 75_000], &[30_000], ModeClass::Normal, EG25),
                now: 105_000,
                period: (37_500, 37_500),
                max_jitter: 0,
                window: (30_000, 30_000),
                cycles: 3,
                missed: 0,
                next: (112_500, 112_500),
                next_label: Some(EG25),
                triage: Triage::AppModeResets,
                sequence: &[EG25],
            },
            Case {
                name: "router modem up ~120 s, back after ~7.5 s",
                source: "USERS.md §4.2: RUT240 '~120 s between connect and disconnect' (…/7083); \
                         ~7.5 s re-enumeration (Teltonika 54390)",
                events: visits(&[0, 127_500, 255_000], &[120_000], ModeClass::Normal, EG25),
                now: 300_000,
                period: (127_500, 127_500),
                max_jitter: 0,
                window: (120_000, 120_000),
                cycles: 3,
                missed: 0,
                next: (382_500, 382_500),
                next_label: Some(EG25),
                triage: Triage::AppModeResets,
                sequence: &[EG25],
            },
            Case {
                name: "RG500 alternating 9008 ↔ fastboot with uneven gaps: period is the cycle",
                source: "USERS.md §1.5/§4.2: RG500 'reboot itself between 9008 and fastboot' \
                         (xhikarishii/openwrt-ipq#3); 10 s in 9008, 5 s in fastboot, 2 s gaps assumed",
                events: {
                    let mut ev = Vec::new();
                    for c in 0..3u64 {
                        let s = c * 19_000;
                        ev.extend([
                            A(s, ModeClass::Edl, EDL),
                            V(s + 10_000),
                            A(s + 12_000, ModeClass::Fastboot, FASTBOOT),
                            V(s + 17_000),
                        ]);
                    }
                    ev
                },
                now: 55_000,
                period: (19_000, 19_000),
                max_jitter: 0,
                window: (5_000, 10_000),
                cycles: 6,
                missed: 0,
                next: (57_000, 57_000),
                next_label: Some(EDL),
                triage: Triage::BrokenBootChain,
                sequence: &[EDL, FASTBOOT],
            },
            Case {
                name: "RG500 alternating 9008 ↔ fastboot every 14 s: next step is the other mode",
                source: "xhikarishii/openwrt-ipq#3 (alternation); even 14 s spacing synthetic",
                events: vec![
                    A(0, ModeClass::Edl, EDL),
                    V(10_000),
                    A(14_000, ModeClass::Fastboot, FASTBOOT),
                    V(24_000),
                    A(28_000, ModeClass::Edl, EDL),
                    V(38_000),
                ],
                now: 39_000,
                period: (14_000, 14_000),
                max_jitter: 0,
                window: (10_000, 10_000),
                cycles: 3,
                missed: 0,
                next: (42_000, 42_000),
                next_label: Some(FASTBOOT),
                triage: Triage::BrokenBootChain,
                sequence: &[EDL, FASTBOOT],
            },
            Case {
                name: "normal mode crashing into 900e: offer a RAM dump",
                source: "USERS.md §5: 05c6:900e = crash dump, qdl ramdump (qdl README; \
                         bkerler/edl#405); timing synthetic",
                events: {
                    let mut ev = Vec::new();
                    for c in 0..2u64 {
                        let s = c * 14_000;
                        ev.extend([
                            A(s, ModeClass::Normal, EG25),
                            V(s + 5_000),
                            A(s + 7_000, ModeClass::CrashDump, CRASH),
                            V(s + 10_000),
                        ]);
                    }
                    ev
                },
                now: 25_000,
                period: (7_000, 7_000),
                max_jitter: 0,
                window: (3_000, 5_000),
                cycles: 4,
                missed: 0,
                next: (28_000, 28_000),
                next_label: Some(EG25),
                triage: Triage::FirmwareCrash,
                sequence: &[EG25, CRASH],
            },
            Case {
                name: "windows under a second: power or cable",
                source: "USERS.md §2.8 (descriptor read -110 / -71: power, cable) and §1.14; \
                         timing synthetic",
                events: visits(&[0, 2_000, 4_000, 6_000], &[300], ModeClass::Edl, EDL),
                now: 6_500,
                period: (2_000, 2_000),
                max_jitter: 0,
                window: (300, 300),
                cycles: 4,
                missed: 0,
                next: (8_000, 8_000),
                next_label: Some(EDL),
                triage: Triage::PowerOrCable,
                sequence: &[EDL],
            },
            Case {
                name: "9008 loop whose window varies wildly: power or cable",
                source: "brief: 'suspect power/cable if the window varies wildly'; …/31665 period",
                events: visits(
                    &[0, 14_000, 28_000, 42_000],
                    &[2_000, 9_000, 4_000, 12_000],
                    ModeClass::Edl,
                    EDL,
                ),
                now: 54_000,
                period: (14_000, 14_000),
                max_jitter: 0,
                window: (4_000, 9_000),
                cycles: 4,
                missed: 0,
                next: (56_000, 56_000),
                next_label: Some(EDL),
                triage: Triage::PowerOrCable,
                sequence: &[EDL],
            },
            Case {
                name: "USB 3 EDL blips then re-enumerates as USB 2 within 100 ms: one visit each",
                source: "DESIGN.md 'a USB3 modem re-enumerates as USB2 on another path in EDL'; \
                         …/31665 period",
                events: {
                    let mut ev = Vec::new();
                    for s in [0u64, 14_000, 28_000] {
                        ev.extend([
                            A(s, ModeClass::Edl, EDL),
                            V(s + 30),
                            V(s + 31),
                            A(s + 70, ModeClass::Edl, EDL),
                            A(s + 71, ModeClass::Edl, EDL),
                            V(s + 10_000),
                        ]);
                    }
                    ev
                },
                now: 38_000,
                period: (14_000, 14_000),
                max_jitter: 0,
                window: (10_000, 10_000),
                cycles: 3,
                missed: 0,
                next: (42_000, 42_000),
                next_label: Some(EDL),
                triage: Triage::DownloadModeLoop,
                sequence: &[EDL],
            },
        ]
    }

    #[test]
    fn loops_with_real_figures() {
        for c in loop_cases() {
            let d = feed(&c.events);
            let r = match d.status(c.now) {
                LoopStatus::Looping(r) => r,
                other => panic!("{} ({}): expected a loop, got {other:?}", c.name, c.source),
            };
            let ctx = format!("{} ({}): {r:#?}", c.name, c.source);
            assert!(
                (c.period.0..=c.period.1).contains(&r.period_ms),
                "period: {ctx}"
            );
            assert!(r.jitter_ms <= c.max_jitter, "jitter: {ctx}");
            assert!(
                (c.window.0..=c.window.1).contains(&r.window_ms),
                "window: {ctx}"
            );
            assert!(r.window_min_ms <= r.window_ms && r.window_ms <= r.window_max_ms);
            assert_eq!(r.cycles, c.cycles, "cycles: {ctx}");
            assert_eq!(r.missed_cycles, c.missed, "missed: {ctx}");
            assert!(
                (c.next.0..=c.next.1).contains(&r.next_appear_ms),
                "next: {ctx}"
            );
            assert_eq!(r.next_label.as_deref(), c.next_label, "next label: {ctx}");
            assert_eq!(r.triage, c.triage, "triage: {ctx}");
            let seq: Vec<&str> = r.mode_sequence.iter().map(|s| s.label.as_str()).collect();
            assert_eq!(seq, c.sequence, "sequence: {ctx}");
            assert!(r.sequence_regular, "{ctx}");
            assert!(r.confidence > 0.0 && r.confidence <= 1.0, "{ctx}");
            assert!(
                r.next_appear_ms >= d.last_observation_ms().unwrap(),
                "{ctx}"
            );
            assert_eq!(
                r.next_window_closes_ms,
                r.next_appear_ms + {
                    let step = r
                        .mode_sequence
                        .iter()
                        .find(|s| Some(&s.label) == r.next_label.as_ref())
                        .unwrap();
                    step.window_ms
                }
            );
        }
    }

    #[test]
    fn sim_boot_loop_14_10_is_reported_within_three_cycles_with_the_right_period() {
        // `qrescue sim --boot-loop 14:10`: not a loop after two appearances, a loop at the third.
        let mut d = LoopDetector::default();
        d.observe_appear(3_000, ModeClass::Edl, EDL);
        d.observe_vanish(13_000);
        d.observe_appear(17_000, ModeClass::Edl, EDL);
        assert_eq!(
            d.status(17_000),
            LoopStatus::Suspected {
                cycles: 2,
                triage: None
            }
        );
        d.observe_vanish(27_000);
        d.observe_appear(31_000, ModeClass::Edl, EDL);
        let r = looping(&d, 32_000);
        assert!(r.period_ms.abs_diff(14_000) <= 500);
        assert_eq!(r.next_appear_ms, 45_000);
        assert_eq!(r.open_window_closes_ms, Some(41_000));
        assert_eq!(r.next_window_closes_ms, 55_000);
        assert_eq!(r.ms_until_next(32_000), 13_000);
        assert_eq!(r.seconds_until_next(32_000), 13.0);
        assert_eq!(r.appearances_per_period, 1);
        assert_eq!(
            r.summary(),
            "05c6:9008 every 14.0 s, present 10.0 s",
            "{r:#?}"
        );
    }

    #[test]
    fn summary_wording() {
        let d = feed(&visits(
            &[1_000, 6_200, 11_400],
            &[4_200],
            ModeClass::Normal,
            EG25,
        ));
        assert!(looping(&d, 12_000)
            .summary()
            .starts_with("2c7c:0125 every 5.2 s"));
        let d = feed(&visits(
            &[0, 14_000, 28_000, 56_000],
            &[10_000],
            ModeClass::Edl,
            EDL,
        ));
        assert_eq!(
            looping(&d, 60_000).summary(),
            "05c6:9008 every 14.0 s, present 10.0 s, 1 missed cycle"
        );
    }

    #[test]
    fn prediction_steps_past_missed_cycles() {
        // 14 s loop seen three times (…/31665), then nothing.
        let d = feed(&visits(
            &[0, 14_000, 28_000],
            &[10_000],
            ModeClass::Edl,
            EDL,
        ));
        // Late by 2 s (within the tolerance of 3.5 s): still due.
        let r = looping(&d, 44_000);
        assert_eq!((r.next_appear_ms, r.missed_cycles), (42_000, 0));
        assert_eq!(r.ms_until_next(44_000), 0);
        // Late by 4 s: that one was missed, the next is one period on.
        let r = looping(&d, 46_000);
        assert_eq!((r.next_appear_ms, r.missed_cycles), (56_000, 1));
        assert_eq!(r.seconds_until_next(46_000), 10.0);
        assert_eq!(r.next_window_closes_ms, 66_000);
        let r = looping(&d, 70_000);
        assert_eq!((r.next_appear_ms, r.missed_cycles), (70_000, 2));
        // Three periods and the tolerance without it: the loop has stopped.
        match d.status(74_000) {
            LoopStatus::Stopped {
                last,
                reason,
                since_ms,
            } => {
                assert_eq!(reason, StopReason::StayedAway);
                assert_eq!(since_ms, 38_000);
                assert_eq!(last.period_ms, 14_000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_loops() {
        let cases: Vec<(&str, Vec<Ev>, u64, LoopStatus)> = vec![
            ("nothing seen", vec![], 1_000, LoopStatus::None),
            (
                "plugged in once and left there",
                vec![A(1_000, ModeClass::Normal, EG25)],
                3_600_000,
                LoopStatus::None,
            ),
            (
                "plugged in once, unplugged once",
                vec![A(1_000, ModeClass::Normal, EG25), V(600_000)],
                700_000,
                LoopStatus::None,
            ),
            (
                "replugged once: came back, no rhythm yet",
                vec![
                    A(1_000, ModeClass::Normal, EG25),
                    V(60_000),
                    A(80_000, ModeClass::Normal, EG25),
                ],
                81_000,
                LoopStatus::Suspected {
                    cycles: 2,
                    triage: None,
                },
            ),
            (
                "replugged once, then stayed for good",
                vec![
                    A(1_000, ModeClass::Normal, EG25),
                    V(60_000),
                    A(80_000, ModeClass::Normal, EG25),
                ],
                1_000_000,
                LoopStatus::None,
            ),
            (
                "sitting in 9008 waiting (EC25 'always in emergency download mode', …/44652)",
                vec![A(0, ModeClass::Edl, EDL)],
                600_000,
                LoopStatus::None,
            ),
            (
                // Recorded: crust-firmware/crust#204 kernel log (realdata/logs/
                // dmesg_eg25_crash_reenumeration.txt, SOURCE B): attached at 33232.936 s, last
                // interface gone at 33236.293 s, attached again at 33236.357 s. Up 3.3 s, so the
                // 64 ms gap is a real reset, not re-enumeration noise; one reset is no loop.
                "EG25-G reset once (crust#204)",
                vec![
                    A(33_232_936, ModeClass::Normal, EG25),
                    V(33_236_293),
                    A(33_236_357, ModeClass::Normal, EG25),
                ],
                33_236_400,
                LoopStatus::Suspected {
                    cycles: 2,
                    triage: None,
                },
            ),
            (
                "EG25-G reset once (crust#204), a minute later",
                vec![
                    A(33_232_936, ModeClass::Normal, EG25),
                    V(33_236_293),
                    A(33_236_357, ModeClass::Normal, EG25),
                ],
                33_296_357,
                LoopStatus::None,
            ),
            (
                // Recorded: the-modem-distro/pinephone_modem_sdk#9 (same file, SOURCE A): USB
                // disconnect at 3756.221 s, failed descriptor reads, port power cycle, the device
                // enumerates again at 3758.640 s. One crash and recovery.
                "EG25-G firmware crash and re-enumeration (pinephone_modem_sdk#9)",
                vec![
                    A(3_000_000, ModeClass::Normal, EG25),
                    V(3_756_221),
                    A(3_758_640, ModeClass::Normal, EG25),
                ],
                3_800_000,
                LoopStatus::None,
            ),
        ];
        for (name, events, now, want) in cases {
            assert_eq!(feed(&events).status(now), want, "{name}");
        }
    }

    #[test]
    fn router_modem_with_irregular_stays_is_suspected_with_a_power_hint() {
        // RUT240: "~30 s and ~120 s between connect and disconnect" (USERS.md §4.2, …/7083),
        // mixed without a pattern; 7.5 s to come back (Teltonika 54390).
        let windows = [30_000, 120_000, 45_000, 30_000, 110_000];
        let mut starts = vec![0u64];
        for w in windows {
            starts.push(starts.last().unwrap() + w + 7_500);
        }
        let d = feed(&visits_open(&starts, &windows, ModeClass::Normal, EG25));
        let now = *starts.last().unwrap();
        assert_eq!(
            d.status(now),
            LoopStatus::Suspected {
                cycles: 6,
                triage: Some(Triage::PowerOrCable)
            }
        );
    }

    #[test]
    fn loop_that_stays_present_stops_and_detection_restarts() {
        // 14 s 9008 loop (…/31665); the 4th appearance stays (someone held the modem in EDL).
        let mut ev = visits(&[0, 14_000, 28_000], &[10_000], ModeClass::Edl, EDL);
        ev.push(A(42_000, ModeClass::Edl, EDL));
        let mut d = feed(&ev);
        assert!(d.status(50_000).is_looping());
        match d.status(42_000 + 43_000) {
            LoopStatus::Stopped {
                last,
                reason,
                since_ms,
            } => {
                assert_eq!(reason, StopReason::StayedPresent);
                assert_eq!(since_ms, 42_000);
                assert_eq!(last.period_ms, 14_000);
                assert_eq!(last.cycles, 4);
            }
            other => panic!("{other:?}"),
        }
        // It leaves, and a new 20 s loop in normal mode begins: a fresh count.
        d.observe_vanish(100_000);
        for s in [110_000u64, 130_000] {
            d.observe_appear(s, ModeClass::Normal, EG25);
            d.observe_vanish(s + 15_000);
        }
        assert_eq!(
            d.status(146_000),
            LoopStatus::Suspected {
                cycles: 2,
                triage: None
            }
        );
        d.observe_appear(150_000, ModeClass::Normal, EG25);
        let r = looping(&d, 150_000);
        assert_eq!((r.period_ms, r.cycles, r.window_ms), (20_000, 3, 15_000));
        assert_eq!(r.triage, Triage::AppModeResets);
        assert_eq!(d.visits().count(), 3);
    }

    #[test]
    fn staying_longer_than_usual_delays_the_prediction_without_counting_a_miss() {
        // 14 s loop, 10 s window (…/31665, `sim --boot-loop 14:10`); the 4th visit overstays.
        let mut ev = visits(&[0, 14_000, 28_000], &[10_000], ModeClass::Edl, EDL);
        ev.push(A(42_000, ModeClass::Edl, EDL));
        let d = feed(&ev);
        let r = looping(&d, 50_000);
        assert_eq!((r.next_appear_ms, r.missed_cycles), (56_000, 0));
        assert_eq!(r.open_window_closes_ms, Some(52_000));
        // Still there at 65 s: the usual 4 s gap after it leaves, at the earliest.
        let r = looping(&d, 65_000);
        assert_eq!((r.next_appear_ms, r.missed_cycles), (69_000, 0));
        assert_eq!(r.open_window_closes_ms, Some(65_000));
    }

    #[test]
    fn a_device_already_present_when_watching_began_does_not_bend_the_period() {
        // `qrescue watch` starts 2 s into a 9008 window of a 14 s loop with 10 s windows:
        // the first listing is at t=0 but the device really appeared at -2 s.
        let mut d = LoopDetector::default();
        d.observe_already_present(0, ModeClass::Edl, EDL);
        d.observe_vanish(8_000);
        for s in [12_000u64, 26_000] {
            d.observe_appear(s, ModeClass::Edl, EDL);
            d.observe_vanish(s + 10_000);
        }
        d.observe_appear(40_000, ModeClass::Edl, EDL);
        let r = looping(&d, 40_000);
        assert_eq!(
            (r.period_ms, r.window_ms, r.window_min_ms),
            (14_000, 10_000, 10_000)
        );
        assert_eq!(r.cycles, 3);
        assert_eq!(r.next_appear_ms, 54_000);
        // Taken as an appearance at t=0 instead, the first interval (12 s) would pull the
        // period to 13 s: that is what the call is for.
        let mut naive = LoopDetector::default();
        naive.observe_appear(0, ModeClass::Edl, EDL);
        naive.observe_vanish(8_000);
        for s in [12_000u64, 26_000] {
            naive.observe_appear(s, ModeClass::Edl, EDL);
            naive.observe_vanish(s + 10_000);
        }
        assert_eq!(looping(&naive, 36_000).period_ms, 13_000);
    }

    #[test]
    fn a_long_visit_before_the_loop_is_left_out() {
        // Up for a minute, then a 14 s loop: reported at the loop's 3rd appearance.
        let mut ev = vec![A(0, ModeClass::Normal, EG25), V(60_000)];
        ev.extend(visits(
            &[62_000, 76_000, 90_000],
            &[10_000],
            ModeClass::Edl,
            EDL,
        ));
        let r = looping(&feed(&ev), 95_000);
        assert_eq!((r.period_ms, r.cycles, r.window_ms), (14_000, 3, 10_000));
        assert_eq!(r.triage, Triage::DownloadModeLoop);
    }

    #[test]
    fn mode_switch_without_a_vanish_starts_a_new_visit_and_same_label_refines() {
        let mut d = LoopDetector::default();
        d.observe_appear(0, ModeClass::Normal, EG25);
        d.observe_appear(500, ModeClass::Broken, EG25); // refined: QHSUSB__BULK on 2c7c:0125
        d.observe_appear(4_000, ModeClass::Edl, EDL); // switched without a vanish seen
        let v: Vec<&Visit> = d.visits().collect();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].mode, v[0].end_ms), (ModeClass::Broken, Some(4_000)));
        assert_eq!((v[1].start_ms, v[1].end_ms), (4_000, None));
        assert!(d.present());
    }

    #[test]
    fn out_of_order_times_are_taken_as_now() {
        let mut d = LoopDetector::default();
        d.observe_appear(10_000, ModeClass::Edl, EDL);
        d.observe_vanish(5_000); // older than the last event
        let v: Vec<&Visit> = d.visits().collect();
        assert_eq!(v[0].end_ms, Some(10_000));
        assert_eq!(d.last_observation_ms(), Some(10_000));
    }

    #[test]
    fn history_is_bounded_and_cycles_keep_counting() {
        let starts: Vec<u64> = (0..40u64).map(|i| i * 14_000).collect();
        let d = feed(&visits(&starts, &[10_000], ModeClass::Edl, EDL));
        assert_eq!(d.visits().count(), LoopConfig::default().history);
        let r = looping(&d, 39 * 14_000 + 11_000);
        assert_eq!((r.period_ms, r.cycles), (14_000, 40));
        assert!(r.confidence > 0.9, "{r:#?}");
    }

    #[test]
    fn triage_texts_are_complete() {
        for t in [
            Triage::FirmwareCrash,
            Triage::PowerOrCable,
            Triage::DownloadModeLoop,
            Triage::BrokenBootChain,
            Triage::EarlyAppCrash,
            Triage::AppModeResets,
            Triage::Unclear,
        ] {
            assert!(!t.headline().is_empty());
            assert!(t.advice().len() > 80, "{t:?}");
            assert!(t.evidence().iter().all(|e| e.contains("USERS.md")), "{t:?}");
        }
        // An unknown mode loops: unclear.
        let d = feed(&visits(
            &[0, 10_000, 20_000],
            &[5_000],
            ModeClass::Other,
            "1234:5678",
        ));
        assert_eq!(looping(&d, 21_000).triage, Triage::Unclear);
        // 2c7c:0125 stuck in the broken QHSUSB__BULK state, looping (…/35001).
        let d = feed(&visits(
            &[0, 10_000, 20_000],
            &[5_000],
            ModeClass::Broken,
            EG25,
        ));
        assert_eq!(looping(&d, 21_000).triage, Triage::BrokenBootChain);
    }

    #[test]
    fn status_serializes() {
        let d = feed(&visits(
            &[0, 14_000, 28_000],
            &[10_000],
            ModeClass::Edl,
            EDL,
        ));
        let json = serde_json::to_string(&d.status(30_000)).unwrap();
        assert!(json.contains("\"status\":\"looping\""), "{json}");
        assert!(json.contains("\"triage\":\"download-mode-loop\""), "{json}");
        let back: LoopStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d.status(30_000));
    }

    #[test]
    fn windows_needed_for_a_plan() {
        // EM20-G factory package: 77.9 s download (USERS.md §4.1, QFH EM20 log) through a
        // 10 s window using 80 % of it: 10 windows.
        assert_eq!(windows_needed(77_900, 10_000, 0.8), Some(10));
        // BG95-M6: 30.2 s (…/40192) through the RM502Q's ~14 s loop with a 12 s window.
        assert_eq!(windows_needed(30_200, 12_000, 0.75), Some(4));
        assert_eq!(windows_needed(5_000, 10_000, 1.0), Some(1));
        assert_eq!(windows_needed(0, 0, 0.5), Some(0));
        assert_eq!(windows_needed(1, 0, 0.5), None);
        assert_eq!(windows_needed(1, 10_000, f64::NAN), None);
        assert_eq!(windows_needed(1, 10_000, -1.0), None);
        assert_eq!(windows_needed(u64::MAX, u64::MAX, 2.0), Some(1));
    }

    fn time() -> impl Strategy<Value = u64> {
        prop_oneof![0..200_000u64, any::<u64>(), (u64::MAX - 200_000)..=u64::MAX,]
    }

    fn mode() -> impl Strategy<Value = ModeClass> {
        prop_oneof![
            Just(ModeClass::Edl),
            Just(ModeClass::CrashDump),
            Just(ModeClass::Normal),
            Just(ModeClass::Fastboot),
            Just(ModeClass::Broken),
            Just(ModeClass::Other),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_timelines_never_panic_nor_predict_the_past(
            events in proptest::collection::vec(
                (0..5u8, time(), mode(), 0..3usize, any::<bool>()), 0..60),
            queries in proptest::collection::vec(time(), 1..6),
            start in time(),
        ) {
            let labels = [EDL, FASTBOOT, EG25];
            let mut d = LoopDetector::default();
            // Half the events sorted from `start` (a plausible timeline), half raw times.
            let mut t = start;
            for (kind, dt, m, l, raw) in events {
                let at = if raw { dt } else { t = t.saturating_add(dt % 30_000); t };
                match kind {
                    0 => d.observe_already_present(at, m, labels[l]),
                    1 | 2 => d.observe_appear(at, m, labels[l]),
                    _ => d.observe_vanish(at),
                }
                for &q in &queries {
                    let st = d.status(q);
                    if let Some(r) = st.report() {
                        let last = d.last_observation_ms().unwrap();
                        prop_assert!(r.next_appear_ms >= last, "{r:?} last {last}");
                        prop_assert!(r.next_window_closes_ms >= r.next_appear_ms);
                        prop_assert!((0.0..=1.0).contains(&r.confidence));
                        prop_assert!(r.period_ms >= 1);
                        prop_assert!(!r.mode_sequence.is_empty());
                        if let Some(c) = r.open_window_closes_ms {
                            prop_assert!(c >= r.as_of_ms);
                        }
                        let _ = r.summary();
                        let _ = r.seconds_until_next(q);
                    }
                }
            }
        }

        #[test]
        fn loop_like_timelines_with_noise_keep_predictions_ahead(
            period in 500u64..=200_000,
            steps in proptest::collection::vec(
                (-0.3f64..=0.3, 0.0f64..1.0, 0..6u8, 0..3usize), 3..25),
            offset in time(),
            queries in proptest::collection::vec(0u64..2_000_000, 1..4),
        ) {
            let labels = [EDL, FASTBOOT, CRASH];
            let modes = [ModeClass::Edl, ModeClass::Fastboot, ModeClass::CrashDump];
            let mut d = LoopDetector::default();
            let mut t = offset;
            for (jit, wfrac, noise, l) in steps {
                let interval = (period as f64 * (1.0 + jit)) as u64;
                t = t.saturating_add(interval);
                if noise == 0 {
                    continue; // a missed appearance
                }
                d.observe_appear(t, modes[l], labels[l]);
                if noise == 1 {
                    d.observe_vanish(t.saturating_add(20)); // a blip, then re-enumeration
                    d.observe_appear(t.saturating_add(60), modes[l], labels[l]);
                }
                if noise == 2 {
                    d.observe_vanish(t); // duplicate vanishes
                }
                d.observe_vanish(t.saturating_add((interval as f64 * wfrac * 0.9) as u64));
                let last = d.last_observation_ms().unwrap();
                for &q in &queries {
                    let now = last.saturating_add(q);
                    if let Some(r) = d.status(now).report() {
                        prop_assert!(r.next_appear_ms >= last, "{r:?} last {last}");
                        prop_assert!(r.period_ms >= 1);
                        prop_assert!((0.0..=1.0).contains(&r.confidence));
                        prop_assert!(r.window_min_ms <= r.window_ms);
                        prop_assert!(r.window_ms <= r.window_max_ms);
                    }
                }
            }
        }

        #[test]
        fn clean_loop_period_within_5_percent_after_three_appearances(
            period in 2_000u64..=120_000,
            window_frac in 0.0f64..1.0,
            first in 0u64..1_000_000_000,
        ) {
            // The window leaves a gap longer than the 100 ms merge time.
            let window = 50 + ((period - 350) as f64 * window_frac) as u64;
            let starts = [first, first + period, first + 2 * period];
            let d = feed(&visits_open(&starts, &[window], ModeClass::Edl, EDL));
            let r = looping(&d, starts[2]);
            prop_assert!(r.period_ms.abs_diff(period) * 20 <= period, "{r:?}");
            prop_assert_eq!(r.next_appear_ms, starts[2] + r.period_ms);
            prop_assert_eq!(r.window_ms, window);
            prop_assert_eq!(r.cycles, 3);
        }

        #[test]
        fn jittered_loop_is_found_and_close(
            period in 2_000u64..=120_000,
            jitter in proptest::collection::vec(-0.1f64..=0.1, 4),
        ) {
            // Each interval off by up to ±10 %; the window is 40 % of the period (at least 1 s).
            let mut starts = vec![1_000u64];
            for j in &jitter {
                let d = (period as f64 * (1.0 + j)) as u64;
                starts.push(starts.last().unwrap() + d);
            }
            let window = (period * 2 / 5).max(1_000); // under 1 s would point at power
            let d = feed(&visits(&starts, &[window], ModeClass::Edl, EDL));
            let r = looping(&d, *starts.last().unwrap() + 1);
            prop_assert!(r.period_ms.abs_diff(period) * 10 <= period, "{r:?}");
            prop_assert_eq!(r.missed_cycles, 0);
            // ±10 % is ordinary loop jitter, not the irregular rhythm of a power fault.
            prop_assert_eq!(r.triage, Triage::DownloadModeLoop);
        }
    }
}
