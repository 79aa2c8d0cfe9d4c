//! Finishing a flash across interruptions: wait for the unit to come back, make sure it is the
//! same unit, and run the next journaled attempt — until the plan is done.
//!
//! How a caller resumes (the whole contract):
//! 1. Build and validate the plan ([`FlashPlan`]) and the job ([`FlashJob`], with the
//!    programmer: every attempt after a drop uploads it again).
//! 2. Give a [`Reconnect`]: where the next connection comes from. [`SourceReconnect`] follows a
//!    [`DeviceSource`] (real USB, the emulator's socket, an in-process hub) and opens the unit
//!    the moment it appears in download mode — it blocks in the source, so it is *armed* and
//!    starts within milliseconds of the appearance, never a sleeping poll. Tests can pass a
//!    closure `FnMut(Duration) -> Result<Option<Link>>`.
//! 3. Call [`flash_resumable`]. Each attempt reads the unit's identity over Sahara (the EDL
//!    serial), opens or continues its journal ([`JournalStore::open`]; another package or plan
//!    starts over with a warning, `fresh` ignores a journal), and runs
//!    [`crate::engine::flash::run_journaled`]: finished steps are skipped, NAND re-erases and
//!    rewrites the interrupted partition, eMMC/UFS continues after the last confirmed chunk. A
//!    link that drops ([`ErrorKind::DeviceLost`]) or a boot-loop window that closes means: wait
//!    for the unit and go on. A unit with another serial is never flashed by this call.
//! 4. Every wait is bounded ([`ResumeOptions::return_wait`], also when other units answer in
//!    the meantime); attempts are bounded ([`ResumeOptions::max_attempts`]) and so are attempts
//!    in a row that make no progress ([`ResumeOptions::max_stalls`]). A unit whose serial cannot
//!    be read (its programmer already runs) is flashed without a journal only while no
//!    unfinished journal of the same plan exists (it might be that unit's).
//!
//! A process that died mid-flash resumes the same way: the next `qrescue flash PACKAGE` finds the
//! unit's journal and continues it (the journal lives in the data folder, not in the process).
//!
//! Boot loops: when the [`Reconnect`] knows the unit's loop (the [`Monitor`]'s loop detector:
//! period and window), each attempt gets the window's end; the engine then starts only work
//! that ends before it (a step on NAND, a confirmed chunk on eMMC/UFS), measures the rate in
//! the first window, and [`flash_resumable`] tells how many windows the plan needs
//! ([`ResumeNotice::Windows`], [`windows_needed`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::device::bootloop::LoopConfig;
use crate::device::classify::{classify, Mode};
use crate::device::monitor::Monitor;
use crate::device::{DeviceChange, DeviceSnapshot, DeviceSource};
use crate::engine::events::EngineEvent;
use crate::engine::firehose::StorageKind;
use crate::engine::flash::{
    run_journaled, AttemptEnd, AttemptReport, FlashJob, FlashPlan, FlashStep, JournalRun,
    RateEstimate, Window, DEFAULT_CHUNK_BYTES, MIN_CHUNK_BYTES,
};
use crate::engine::journal::{
    Journal, JournalState, JournalStore, Opening, PackageIdentity, UnitKey,
};
use crate::engine::outcome::{RunDevice, RunHandle, RunStart, RunStore};
use crate::transport::Transport;
use crate::{Error, ErrorKind};

/// One connection to the unit.
pub struct Link {
    pub transport: Box<dyn Transport>,
    /// When the unit appeared (or was found present).
    pub appeared: Instant,
    /// The length of the unit's boot-loop window, when a loop is known.
    pub window: Option<Duration>,
    /// The port for people (`/dev/pts/4`, `USB 3-1.2`).
    pub port: String,
}

/// Where the next connection to the unit comes from.
pub trait Reconnect {
    /// Wait at most `wait` for the unit to be there in download mode (now, or when it next
    /// appears) and open it. `Ok(None)` when it did not come in time.
    fn next_link(&mut self, wait: Duration, cancel: &AtomicBool) -> crate::Result<Option<Link>>;
}

impl<F> Reconnect for F
where
    F: FnMut(Duration) -> crate::Result<Option<Link>>,
{
    fn next_link(&mut self, wait: Duration, _cancel: &AtomicBool) -> crate::Result<Option<Link>> {
        self(wait)
    }
}

/// Opens a device the source showed.
pub type Opener = Box<dyn FnMut(&DeviceSnapshot) -> crate::Result<Box<dyn Transport>> + Send>;

struct Present {
    snapshot: DeviceSnapshot,
    appeared: Instant,
    window: Option<Duration>,
    used: bool,
}

/// A [`Reconnect`] over a [`DeviceSource`]: follows appear/vanish events through a [`Monitor`]
/// (identity tracking and the boot-loop detector) and opens a unit in download mode (05c6:9008)
/// as soon as it appears. Each appearance is opened once; after a drop it waits for the next.
pub struct SourceReconnect {
    source: Box<dyn DeviceSource>,
    monitor: Monitor,
    open: Opener,
    accept: Box<dyn Fn(&DeviceSnapshot) -> bool + Send>,
    present: BTreeMap<String, Present>,
    primed: bool,
}

/// Longest single wait in the source (so a cancel request is seen).
const SLICE: Duration = Duration::from_millis(200);

impl SourceReconnect {
    /// Follow `source`, opening with `open` (e.g. [`crate::transport::open::open_device`]).
    pub fn new(source: Box<dyn DeviceSource>, open: Opener) -> SourceReconnect {
        SourceReconnect {
            source,
            monitor: Monitor::new(LoopConfig::default()),
            open,
            accept: Box::new(|_| true),
            present: BTreeMap::new(),
            primed: false,
        }
    }

    /// Only consider devices `accept` likes (a location or serial the person chose).
    pub fn accept(mut self, accept: impl Fn(&DeviceSnapshot) -> bool + Send + 'static) -> Self {
        self.accept = Box::new(accept);
        self
    }

    /// The monitor's picture (devices, loop status).
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    fn take(&mut self, ev: &crate::device::DeviceEvent, initial: bool) {
        let update = if initial {
            self.monitor.observe_initial(ev)
        } else {
            self.monitor.observe(ev)
        };
        match &ev.change {
            DeviceChange::Appear { device } => {
                let edl = matches!(classify(device).mode, Mode::Edl);
                if edl && (self.accept)(device) {
                    let window = update
                        .loop_status
                        .report()
                        .filter(|_| update.loop_status.is_looping())
                        .map(|r| Duration::from_millis(r.window_min_ms.max(1)));
                    self.present.insert(
                        device.location(),
                        Present {
                            snapshot: device.clone(),
                            appeared: Instant::now(),
                            window,
                            used: false,
                        },
                    );
                }
            }
            DeviceChange::Vanish { location, .. } => {
                self.present.remove(location);
            }
        }
    }
}

impl Reconnect for SourceReconnect {
    fn next_link(&mut self, wait: Duration, cancel: &AtomicBool) -> crate::Result<Option<Link>> {
        let deadline = Instant::now() + wait;
        if !self.primed {
            self.primed = true;
            while let Some(ev) = self.source.next_event(Duration::ZERO)? {
                self.take(&ev, true);
            }
        }
        loop {
            // Everything that already happened first, so a vanish is not missed.
            while let Some(ev) = self.source.next_event(Duration::ZERO)? {
                self.take(&ev, false);
            }
            let pick = self
                .present
                .iter()
                .filter(|(_, p)| !p.used)
                .max_by_key(|(_, p)| p.appeared)
                .map(|(loc, _)| loc.clone());
            if let Some(loc) = pick {
                let p = self.present.get_mut(&loc).expect("picked from the map");
                p.used = true;
                let transport = match (self.open)(&p.snapshot) {
                    Ok(t) => t,
                    // Gone again before it could be opened (a short window, a glitch): wait
                    // for the next appearance.
                    Err(e) if matches!(e.kind, ErrorKind::NoDevice | ErrorKind::DeviceLost) => {
                        tracing::info!("{loc} could not be opened: {e}");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                return Ok(Some(Link {
                    port: format!("{} at {}", transport.describe(), loc),
                    transport,
                    appeared: p.appeared,
                    window: p.window,
                }));
            }
            if cancel.load(Ordering::SeqCst) {
                return Err(Error::new(
                    ErrorKind::Interrupted,
                    "Stopped waiting for the modem on request",
                    "the flash is not finished; its journal keeps what was written",
                    "Run the same flash again to continue it",
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.source.finished() {
                return Ok(None);
            }
            if let Some(ev) = self.source.next_event(left.min(SLICE))? {
                self.take(&ev, false);
            }
        }
    }
}

/// How [`flash_resumable`] behaves.
#[derive(Debug, Clone)]
pub struct ResumeOptions {
    /// The package as people know it (recorded in the journal).
    pub package: String,
    /// Ignore (replace) a journal of this unit.
    pub fresh: bool,
    /// Longest wait for the unit to appear, first and after each drop. Default 120 s.
    pub return_wait: Duration,
    /// Most attempts in all. Default 200.
    pub max_attempts: u32,
    /// Attempts in a row that finish no step or chunk before giving up. Default 5.
    pub max_stalls: u32,
    /// eMMC/UFS chunk size ([`JournalRun::chunk_bytes`]). Default [`DEFAULT_CHUNK_BYTES`].
    pub chunk_bytes: u64,
    /// The unit this flash is for, when the caller knows it before the first link (a station's
    /// selected modem, the serial a workflow read over Sahara before it started the
    /// programmer). A unit that tells another serial is never flashed: it is left alone
    /// ([`ResumeNotice::OtherUnit`]) and the flash waits for this one. On the *first* link
    /// only, a unit that tells no serial (its programmer already runs — the link the caller
    /// read the serial on and then started the programmer over) is taken to be this unit, so
    /// its flash is journaled too; a later link that tells no serial is refused.
    pub unit: Option<UnitKey>,
}

impl Default for ResumeOptions {
    fn default() -> Self {
        ResumeOptions {
            package: String::new(),
            fresh: false,
            return_wait: Duration::from_secs(120),
            max_attempts: 200,
            max_stalls: 5,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            unit: None,
        }
    }
}

/// How many boot-loop windows the plan needs, as estimated after a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowForecast {
    /// Windows used so far plus the windows the rest needs.
    pub windows_total: u32,
    pub windows_left: u32,
    pub window_ms: u64,
    /// Time from the appearance to a configured programmer.
    pub setup_ms: u64,
    pub bytes_per_s: f64,
}

/// What the driver tells the person between attempts (the engine events carry the rest).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum ResumeNotice {
    /// Waiting for the unit (first, or after a drop / a closed window).
    Waiting {
        attempt: u32,
        wait_s: f64,
        /// Why the last attempt stopped.
        #[serde(skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Connected: attempt `attempt` starts.
    Connected {
        attempt: u32,
        port: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        window_ms: Option<u64>,
    },
    /// The unit's journal was opened.
    Journal {
        unit: UnitKey,
        path: String,
        opening: Opening,
    },
    /// A unit with another serial appeared; it is left alone.
    OtherUnit { found: UnitKey, expected: UnitKey },
    /// How many windows the plan needs (after the first measured window).
    Windows(WindowForecast),
    /// The unit's serial could not be read (its programmer was already running): this flash
    /// runs once, without a journal, and cannot be resumed.
    Unjournaled { why: String },
}

/// What a finished resumable flash did.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    /// The unit the journal is kept for; `None` when its serial could not be read (a
    /// programmer already running) and the flash ran once without a journal.
    pub unit: Option<UnitKey>,
    pub opening: Opening,
    pub attempts: u32,
    /// Image bytes sent over all attempts.
    pub bytes_sent: u64,
    pub windows: Option<WindowForecast>,
    /// The last attempt.
    pub last: AttemptReport,
}

/// One piece of work left, for [`windows_needed`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Work {
    /// A step that must run within one window (NAND programs, erases, patches): its bytes (0
    /// for a step without data).
    Whole { bytes: u64 },
    /// A program that may be cut at chunk boundaries (eMMC/UFS).
    Split { bytes: u64 },
}

/// Windows of `usable_s` seconds (after setup) needed for `work` at `bytes_per_s`, with steps
/// without data taking `fixed_s` each and every piece given a fifth more as margin, filled in
/// order (the plan's order is the vendor's and is kept). `None` when a whole step cannot fit
/// in one window at all.
pub fn windows_needed(work: &[Work], bytes_per_s: f64, fixed_s: f64, usable_s: f64) -> Option<u32> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(bytes_per_s) || !positive(usable_s) {
        return None;
    }
    let min_chunk = MIN_CHUNK_BYTES as f64 / bytes_per_s * 1.2;
    let mut windows = 1u32;
    let mut used = 0.0f64;
    for w in work {
        match *w {
            Work::Whole { bytes } => {
                let t = if bytes == 0 {
                    fixed_s
                } else {
                    bytes as f64 / bytes_per_s
                } * 1.2;
                if t > usable_s {
                    return None;
                }
                if used + t > usable_s {
                    windows = windows.checked_add(1)?;
                    used = 0.0;
                }
                used += t;
            }
            Work::Split { bytes } => {
                let mut left = bytes as f64 / bytes_per_s * 1.2;
                while left > 1e-9 {
                    let room = usable_s - used;
                    if room < min_chunk.min(left) {
                        windows = windows.checked_add(1)?;
                        used = 0.0;
                        continue;
                    }
                    let take = room.min(left);
                    used += take;
                    left -= take;
                }
            }
        }
    }
    Some(windows)
}

/// The work `state` leaves of `plan`.
pub fn work_left(plan: &FlashPlan, state: &JournalState) -> Vec<Work> {
    plan.steps
        .iter()
        .enumerate()
        .filter(|(i, _)| !state.done.contains_key(i))
        .map(|(i, s)| match s {
            FlashStep::Program { cmd, .. }
                if plan.storage != StorageKind::Nand
                    && crate::package::rawprogram::parse_number(&cmd.start_sector).is_ok() =>
            {
                let confirmed = state.chunks.get(&i).copied().unwrap_or(0);
                Work::Split {
                    bytes: cmd.num_sectors.saturating_sub(confirmed) * u64::from(cmd.sector_size),
                }
            }
            s => Work::Whole { bytes: s.bytes() },
        })
        .collect()
}

/// How far a journal got: steps done and sectors confirmed.
fn progress_mark(s: &JournalState) -> (usize, u64) {
    (s.done.len(), s.chunks.values().sum())
}

fn unknown_unit() -> Error {
    Error::new(
        ErrorKind::Failure,
        "qrescue could not read this modem's serial number",
        "the flash journal is kept per unit (the serial its boot ROM tells over Sahara); without it an interrupted flash could be continued on the wrong modem. A programmer that is already running does not tell it",
        "Power-cycle the modem into download mode (9008) and run the flash again",
    )
}

/// The refusal to flash a unit whose serial is unknown while `store` holds an unfinished
/// journal of the same plan (it may be that unit's).
fn unfinished_journal_of(
    store: &JournalStore,
    plan: &FlashPlan,
    identity: &PackageIdentity,
) -> Option<Error> {
    let list = store.list().ok()?;
    let (summary, path) = list.iter().filter(|s| !s.finished).find_map(|s| {
        let state = store.load(&s.unit).ok()??.ok()?;
        let same =
            state.plan.storage == plan.storage && state.plan.identity.differs(identity).is_none();
        same.then(|| (s, store.path_for(&s.unit)))
    })?;
    Some(Error::new(
        ErrorKind::Failure,
        "This modem's programmer is already running, and a flash of this package is unfinished",
        format!(
            "a modem whose programmer runs does not tell its serial number, so qrescue cannot tell whether it is {} ({} of {} steps written, journal {}); flashing it without that journal would leave the journal claiming steps as written that this flash overwrites",
            summary.unit,
            summary.steps_done,
            summary.steps_total,
            path.display()
        ),
        "Power-cycle the modem into download mode (9008) and run the same flash again: it continues where the journal stopped (or delete that journal to flash without it)",
    ))
}

/// Run `plan` to the end across drops and boot-loop windows (see the module docs). `emit` gets
/// every attempt's engine events (each attempt is a whole Plan … Done sequence); `notice` what
/// happens between attempts.
#[allow(clippy::too_many_arguments)]
pub fn flash_resumable(
    reconnect: &mut dyn Reconnect,
    plan: &FlashPlan,
    job: &FlashJob,
    store: &JournalStore,
    opts: &ResumeOptions,
    emit: &mut dyn FnMut(EngineEvent),
    notice: &mut dyn FnMut(&ResumeNotice),
    cancel: &AtomicBool,
) -> crate::Result<ResumeReport> {
    let identity = PackageIdentity::of_plan(plan)?;
    let mut journal: Option<(Journal, Opening)> = None;
    let mut rate = RateEstimate::default();
    let mut attempts = 0u32;
    let mut stalls = 0u32;
    let mut sent_total = 0u64;
    let mut last_error: Option<Error> = None;
    let mut forecast: Option<WindowForecast> = None;
    let mut links = 0u32;
    // When the wait for the unit began: another unit answering does not start a new one.
    let mut waiting_since: Option<Instant> = None;
    loop {
        if attempts >= opts.max_attempts {
            return Err(gave_up(
                format!("The flash did not finish in {attempts} attempts"),
                last_error,
            ));
        }
        let since = *waiting_since.get_or_insert_with(Instant::now);
        let left = opts.return_wait.saturating_sub(since.elapsed());
        notice(&ResumeNotice::Waiting {
            attempt: attempts + 1,
            wait_s: left.as_secs_f64(),
            after: last_error.as_ref().map(|e| e.what.clone()),
        });
        let link = if left.is_zero() {
            None
        } else {
            reconnect.next_link(left, cancel)?
        };
        let Some(link) = link else {
            let what = if attempts == 0 {
                format!(
                    "No modem in download mode appeared within {:.0} s",
                    opts.return_wait.as_secs_f64()
                )
            } else {
                format!(
                    "The modem did not come back within {:.0} s",
                    opts.return_wait.as_secs_f64()
                )
            };
            return Err(match last_error {
                Some(mut e) => {
                    e.next = format!(
                        "{what}. Its journal keeps what was written: bring it back into download mode (9008) and run the same flash again to continue"
                    );
                    e
                }
                None => Error::new(
                    ErrorKind::NoDevice,
                    what,
                    "the flash starts when the modem shows up as 05c6:9008",
                    "Put the modem into download mode (EDL) and run again",
                ),
            });
        };
        links += 1;
        let Link {
            transport,
            appeared,
            window,
            port,
        } = link;
        let (t, info) = match crate::backup::run::identify(transport, &job.sahara) {
            Ok(x) => x,
            Err(e) if e.kind == ErrorKind::DeviceLost => {
                waiting_since = None;
                attempts += 1;
                stalls += 1;
                last_error = Some(e);
                if stalls >= opts.max_stalls {
                    return Err(stalled(stalls, last_error));
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let told = info.as_ref().and_then(UnitKey::from_device_info);
        // The caller vouches for the first link (see `ResumeOptions::unit`).
        let vouched = (links == 1 && journal.is_none())
            .then(|| opts.unit.clone())
            .flatten();
        let Some(key) = told.or(vouched) else {
            if journal.is_some() {
                // A unit that told its serial before and not now may be another modem.
                return Err(unknown_unit());
            }
            // This may be the unit of an unfinished journal of this plan: flashing it without
            // the journal would leave that journal claiming steps as done that this flash
            // overwrites or cuts off (and a later flash would skip them).
            if let Some(e) = unfinished_journal_of(store, plan, &identity) {
                return Err(e);
            }
            notice(&ResumeNotice::Unjournaled {
                why: unknown_unit().why,
            });
            attempts += 1;
            let report = crate::engine::flash::run(t, plan, job, emit, cancel)?;
            let bytes_sent = report.bytes;
            return Ok(ResumeReport {
                unit: None,
                opening: Opening::New {
                    replaced_finished: false,
                    fresh: true,
                },
                attempts,
                bytes_sent,
                windows: None,
                last: AttemptReport {
                    end: crate::engine::flash::AttemptEnd::Completed,
                    report,
                    skipped: Vec::new(),
                    continued: None,
                    reerased: None,
                    steps_left: 0,
                },
            });
        };
        if let Some(want) = opts.unit.as_ref().filter(|w| **w != key) {
            notice(&ResumeNotice::OtherUnit {
                found: key,
                expected: want.clone(),
            });
            continue;
        }
        match &journal {
            Some((j, _)) if *j.unit() != key => {
                notice(&ResumeNotice::OtherUnit {
                    found: key,
                    expected: j.unit().clone(),
                });
                // Still waiting for the right unit, within the same bound.
                continue;
            }
            Some(_) => {}
            None => {
                let (j, opening) = store.open(&key, &opts.package, plan, &identity, opts.fresh)?;
                notice(&ResumeNotice::Journal {
                    unit: key.clone(),
                    path: j.path().display().to_string(),
                    opening: opening.clone(),
                });
                journal = Some((j, opening));
            }
        }
        waiting_since = None;
        let (j, opening) = journal.as_mut().expect("opened above");
        attempts += 1;
        notice(&ResumeNotice::Connected {
            attempt: attempts,
            port,
            window_ms: window.map(|w| w.as_millis() as u64),
        });
        let before = progress_mark(j.state());
        let mut sent = 0u64;
        let mut jr = JournalRun {
            journal: j,
            chunk_bytes: opts.chunk_bytes,
            window: window.map(|length| Window {
                closes_at: appeared + length,
                length,
            }),
            rate: &mut rate,
            appeared: Some(appeared),
        };
        let mut first_log = forecast.as_ref().map(|f| {
            format!(
                "Boot-loop window {attempts} of about {} ({:.1} s each)",
                f.windows_total,
                f.window_ms as f64 / 1000.0
            )
        });
        let result = run_journaled(
            t,
            plan,
            job,
            &mut jr,
            &mut |e| {
                if let EngineEvent::Done { bytes, .. } = &e {
                    sent = *bytes;
                }
                let is_plan = matches!(e, EngineEvent::Plan { .. });
                emit(e);
                if is_plan {
                    if let Some(message) = first_log.take() {
                        emit(EngineEvent::Log { message });
                    }
                }
            },
            cancel,
        );
        sent_total += sent;
        let progressed = progress_mark(j.state()) > before;
        stalls = if progressed { 0 } else { stalls + 1 };
        match result {
            Ok(last) if last.end == AttemptEnd::Completed => {
                return Ok(ResumeReport {
                    unit: Some(j.unit().clone()),
                    opening: opening.clone(),
                    attempts,
                    bytes_sent: sent_total,
                    windows: forecast,
                    last,
                });
            }
            Ok(_) => {
                last_error = Some(Error::new(
                    ErrorKind::DeviceLost,
                    "Paused at a safe point before the boot-loop window closed",
                    "the modem leaves the bus at the end of each window",
                    "Wait for the next window",
                ));
            }
            Err(e) if e.kind == ErrorKind::DeviceLost => last_error = Some(e),
            Err(e) => return Err(e),
        }
        if stalls >= opts.max_stalls {
            return Err(stalled(stalls, last_error));
        }
        if let (Some(w), Some(bps)) = (window, rate.bytes_per_s()) {
            let setup = rate.setup_secs.unwrap_or(0.0);
            let fixed = rate
                .estimate(0)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            let left = windows_needed(
                &work_left(plan, j.state()),
                bps,
                fixed,
                w.as_secs_f64() - setup,
            );
            if left.is_none() {
                if let Some(e) = too_long_for_window(plan, j.state(), bps, w.as_secs_f64(), setup) {
                    return Err(e);
                }
            }
            if let Some(left) = left {
                let f = WindowForecast {
                    windows_total: attempts + left,
                    windows_left: left,
                    window_ms: w.as_millis() as u64,
                    setup_ms: (setup * 1000.0) as u64,
                    bytes_per_s: bps,
                };
                let tell = forecast
                    .as_ref()
                    .is_none_or(|old| old.windows_total.abs_diff(f.windows_total) > 1);
                if tell {
                    notice(&ResumeNotice::Windows(f.clone()));
                }
                forecast = Some(f);
            }
        }
    }
}

/// The error for a plan that cannot finish inside the unit's boot loop: a step that must run
/// whole (a NAND partition) was cut off by a window's end and takes longer at the measured
/// rate than a window leaves after the setup. `None` while every step left fits, if only
/// barely, or the too-long step was not tried yet: the margin [`windows_needed`] adds is left
/// out and one real try is given, as estimates from a first window can be off (attempts in a
/// row that make no progress are bounded anyway).
fn too_long_for_window(
    plan: &FlashPlan,
    state: &JournalState,
    bytes_per_s: f64,
    window_s: f64,
    setup_s: f64,
) -> Option<Error> {
    let usable = window_s - setup_s;
    let work = work_left(plan, state);
    let left = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(i, _)| !state.done.contains_key(i));
    let (step, bytes, secs) = left.zip(work).find_map(|((i, step), w)| match w {
        Work::Whole { bytes }
            if bytes > 0 && bytes as f64 / bytes_per_s > usable && state.started.contains(&i) =>
        {
            Some((step, bytes, bytes as f64 / bytes_per_s))
        }
        _ => None,
    })?;
    let done = state.done.len();
    Some(Error::new(
        ErrorKind::DeviceLost,
        format!(
            "{} cannot be written inside this modem's boot loop",
            step.name()
        ),
        format!(
            "it is {:.1} MB and takes about {secs:.1} s at the measured {:.2} MB/s, but each {window_s:.1} s window leaves only {:.1} s once the programmer is ready; a NAND partition is written whole (never trusted half-written), so every window would erase it again and be cut off",
            bytes as f64 / 1e6,
            bytes_per_s / 1e6,
            usable.max(0.0)
        ),
        format!(
            "Stop the loop first: keep the modem in download mode through the power cycle (hold its USB_BOOT / EDL test point, or fix an unstable supply), then run the same flash again. Its journal keeps the {done} step(s) already written"
        ),
    ))
}

fn stalled(stalls: u32, last: Option<Error>) -> Error {
    gave_up(
        format!("The flash made no progress in {stalls} attempts in a row"),
        last,
    )
}

fn gave_up(what: String, last: Option<Error>) -> Error {
    let why = match &last {
        Some(e) => format!("the last attempt ended with: {} ({})", e.what, e.why),
        None => "every attempt ended before finishing a step".into(),
    };
    Error::new(
        ErrorKind::DeviceLost,
        what,
        why,
        "Its journal keeps what was written. Check power and the cable (a boot-loop window may be too short for the setup), then run the same flash again to continue",
    )
}

/// The run records ([`RunStore`], what `qrescue status` lists) of a resumable flash: one per
/// attempt, each begun at the attempt's `Plan` event and ended at its `Done` — a completed
/// attempt as finished, one cut off (a drop, a closed boot-loop window) with what its failed
/// step said, the last one with the error [`flash_resumable`] returned. Steps an attempt skips
/// because an earlier one wrote them count as done (with no bytes), as the engine reports
/// them. A record that cannot be written never stops the flash (it is logged).
///
/// Feed it every engine event ([`AttemptRecords::on_event`]) and notice
/// ([`AttemptRecords::on_notice`]), then [`AttemptRecords::end`] with the result.
pub struct AttemptRecords {
    store: Option<RunStore>,
    start: RunStart,
    open: Option<RunHandle>,
    /// An attempt that ended without finishing, waiting for the next attempt or the end.
    cut: Option<RunHandle>,
    /// What the running attempt's failed step said.
    failed: Option<Error>,
    last: Option<RunHandle>,
}

impl AttemptRecords {
    /// Records in `store` (none when `None`), each started from `start`.
    pub fn new(store: Option<RunStore>, start: RunStart) -> AttemptRecords {
        AttemptRecords {
            store,
            start,
            open: None,
            cut: None,
            failed: None,
            last: None,
        }
    }

    /// The device as the next attempts' records name it.
    pub fn device(&mut self) -> &mut RunDevice {
        &mut self.start.device
    }

    /// Follow a notice: the port of each attempt, the unit once its journal is open (as its
    /// serial, when the record does not name one yet).
    pub fn on_notice(&mut self, n: &ResumeNotice) {
        match n {
            ResumeNotice::Connected { port, .. } => self.start.device.port = Some(port.clone()),
            ResumeNotice::Journal { unit, .. } if self.start.device.serial.is_none() => {
                self.start.device.serial = Some(unit.to_string());
            }
            _ => {}
        }
    }

    /// Follow an engine event of the running attempt.
    pub fn on_event(&mut self, e: &EngineEvent) {
        match e {
            EngineEvent::Plan { .. } => {
                self.close_cut(None);
                self.failed = None;
                self.open = self.store.as_ref().and_then(|s| {
                    s.begin(self.start.clone())
                        .map_err(|e| tracing::warn!("this flash attempt is not recorded: {e}"))
                        .ok()
                });
            }
            EngineEvent::StepFailed {
                what, why, next, ..
            } => {
                self.failed = Some(Error::new(
                    ErrorKind::DeviceLost,
                    what.clone(),
                    why.clone(),
                    next.clone(),
                ));
            }
            _ => {}
        }
        if let Some(h) = &mut self.open {
            h.on_event(e);
        }
        if let EngineEvent::Done { ok, bytes, .. } = e {
            if let Some(mut h) = self.open.take() {
                if *ok {
                    h.finish(Ok(*bytes));
                    self.last = Some(h);
                } else {
                    self.cut = Some(h);
                }
            }
        }
    }

    /// End the attempt cut off before: with `e`, else what its failed step said.
    fn close_cut(&mut self, e: Option<&Error>) {
        let Some(mut h) = self.cut.take() else {
            return;
        };
        let fallback = Error::new(
            ErrorKind::DeviceLost,
            "The attempt ended before the plan was done",
            "the link dropped or the boot-loop window closed",
            "Nothing to do: the flash continues in the next attempt",
        );
        let e = e.or(self.failed.as_ref()).unwrap_or(&fallback);
        h.finish(Err(e));
        self.last = Some(h);
    }

    /// The flash ended with `result`: the attempt still open is ended with its error. Returns
    /// the record of the last attempt (for [`RunHandle::verified`] after the check).
    pub fn end<T>(mut self, result: Result<&T, &Error>) -> Option<RunHandle> {
        if let Some(h) = self.open.take() {
            self.cut = Some(h);
        }
        match result {
            Ok(_) => self.close_cut(None),
            Err(e) => self.close_cut(Some(e)),
        }
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_counted_from_the_measured_rate() {
        // 10 s windows, 1 MB/s: 26 MB of splittable programs are 31.2 s with the margin, so
        // three full windows and a bit of a fourth.
        let work = [Work::Split { bytes: 26_000_000 }];
        assert_eq!(windows_needed(&work, 1e6, 0.1, 10.0), Some(4));
        // Whole steps are never cut: three 4 MB steps (4.8 s each) fit two per 10 s window.
        let work = [Work::Whole { bytes: 4_000_000 }; 3];
        assert_eq!(windows_needed(&work, 1e6, 0.1, 10.0), Some(2));
        // A whole step longer than a window cannot be done through the loop.
        assert_eq!(
            windows_needed(&[Work::Whole { bytes: 9_000_000 }], 1e6, 0.1, 10.0),
            None
        );
        // Erases count their measured time.
        let work = [Work::Whole { bytes: 0 }; 20];
        assert_eq!(windows_needed(&work, 1e6, 1.0, 10.0), Some(3));
        assert_eq!(windows_needed(&[], 1e6, 0.1, 10.0), Some(1));
        assert_eq!(windows_needed(&work, 0.0, 0.1, 10.0), None);
        assert_eq!(windows_needed(&work, 1e6, 0.1, -1.0), None);
    }

    #[test]
    fn every_attempt_leaves_its_own_run_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::at(dir.path());
        let mut r = AttemptRecords::new(
            Some(store.clone()),
            RunStart {
                tool: "station".into(),
                ..RunStart::default()
            },
        );
        let plan = EngineEvent::Plan {
            steps: Vec::new(),
            total_bytes: 300,
        };
        let finished = |bytes| EngineEvent::StepFinished {
            index: 0,
            bytes,
            elapsed_ms: 1,
            bytes_per_s: 1.0,
        };
        r.on_notice(&ResumeNotice::Journal {
            unit: UnitKey::from_serial(0xabc),
            path: "/j".into(),
            opening: Opening::New {
                replaced_finished: false,
                fresh: false,
            },
        });
        r.on_notice(&ResumeNotice::Connected {
            attempt: 1,
            port: "pty at 1-1".into(),
            window_ms: None,
        });
        // Attempt 1: a step, then the link drops in the next.
        r.on_event(&plan);
        r.on_event(&finished(100));
        r.on_event(&EngineEvent::StepFailed {
            index: 1,
            what: "The modem went away".into(),
            why: "it left the bus".into(),
            next: "wait".into(),
        });
        r.on_event(&EngineEvent::Done {
            ok: false,
            bytes: 150,
            elapsed_ms: 5,
        });
        // Attempt 2: the first step skipped, the rest written.
        r.on_event(&plan);
        r.on_event(&finished(0));
        r.on_event(&finished(200));
        r.on_event(&EngineEvent::Done {
            ok: true,
            bytes: 200,
            elapsed_ms: 5,
        });
        let last = r.end(Ok(&())).unwrap();
        assert_eq!(
            last.record().state,
            crate::engine::outcome::RunState::Finished
        );
        let mut all = store.list(10).unwrap();
        all.sort_by_key(|x| x.state.word());
        assert_eq!(all.len(), 2, "{all:#?}");
        let (failed, done) = (&all[0], &all[1]);
        assert_eq!(failed.state.word(), "failed", "{failed:#?}");
        assert_eq!(failed.problem.as_ref().unwrap().what, "The modem went away");
        assert_eq!(failed.steps_done, 1);
        assert_eq!(done.steps_done, 2);
        assert_eq!(done.bytes_done, 200);
        for x in &all {
            assert_eq!(x.device.serial.as_deref(), Some("sn-0x00000abc"));
            assert_eq!(x.device.port.as_deref(), Some("pty at 1-1"));
        }
        // Without a store nothing is written, and an error ends the open attempt.
        let mut r = AttemptRecords::new(None, RunStart::default());
        r.on_event(&plan);
        let e = Error::failure("x", "y", "z");
        assert!(r.end::<()>(Err(&e)).is_none());
    }
}
