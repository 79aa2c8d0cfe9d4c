//! A station run (many modems flashed at once) as the console's model holds it: one
//! [`StationRow`] per modem, fed by the run's [`StationEvent`]s, and the run's end. Plain data
//! and pure methods, like the rest of the model; `update` changes it, views read it.
//!
//! Redraws are coalesced: events only mark the view `pending`; the tick (every
//! [`STATION_FRAME_MS`] while the run goes) turns pending changes into one frame, so sixteen
//! modems reporting progress never cost more than about ten frames a second.

use std::path::PathBuf;

use crate::engine::events::EngineEvent;
use crate::engine::station::{DeviceState, Note, Outcome, StationEvent, SummaryRow};

use super::msg::{JobId, Problem, StationDone};

/// Shortest time between two frames the run's events cause (keys still redraw at once).
pub const STATION_FRAME_MS: u64 = 100;
/// Lines kept per modem for its pane (newest last).
pub const STATION_LINES: usize = 64;

/// Where one modem of the run is.
#[derive(Debug, Clone, PartialEq)]
pub enum RowPhase {
    /// Taken by the run; its job has not reported a stage yet.
    Found,
    /// A stage of its job (identifying, switching, flashing, waiting, restarting, checking).
    Active(DeviceState),
    /// Its job ended: the summary row says how.
    Finished(Box<SummaryRow>),
}

/// One modem of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct StationRow {
    /// The run's key for it (`SN:5A17C000`): the same in the summary.
    pub key: String,
    pub location: String,
    pub usb_id: String,
    /// The bus it was found on.
    pub bus: String,
    /// Its own log file in the run folder.
    pub log: Option<PathBuf>,
    pub phase: RowPhase,
    /// The detail of its latest stage ("waiting for 9008").
    pub detail: String,
    /// The step being worked on (partition name), with its index and the plan's step count.
    pub step: Option<String>,
    pub step_index: usize,
    pub steps: usize,
    pub step_done: u64,
    pub step_bytes: u64,
    /// Bytes the plan writes, and the overall fraction done (0..=1) of the current attempt.
    pub total_bytes: u64,
    pub overall: f64,
    /// Current write rate (0 when not writing).
    pub bytes_per_s: f64,
    /// Flash attempts so far (a plan per attempt).
    pub attempts: u32,
    /// The last step failure, in people's words.
    pub problem: Option<Problem>,
    /// Its engine and stage lines, newest last (at most [`STATION_LINES`]).
    pub lines: Vec<String>,
}

impl StationRow {
    pub fn new(key: &str) -> StationRow {
        StationRow {
            key: key.to_string(),
            location: String::new(),
            usb_id: String::new(),
            bus: String::new(),
            log: None,
            phase: RowPhase::Found,
            detail: String::new(),
            step: None,
            step_index: 0,
            steps: 0,
            step_done: 0,
            step_bytes: 0,
            total_bytes: 0,
            overall: 0.0,
            bytes_per_s: 0.0,
            attempts: 0,
            problem: None,
            lines: Vec::new(),
        }
    }

    /// Seconds left of the current write at the current rate (None when not writing).
    pub fn eta_s(&self) -> Option<f64> {
        if !self.writing() || self.bytes_per_s <= 0.0 || self.total_bytes == 0 {
            return None;
        }
        let left = self.total_bytes as f64 * (1.0 - self.overall.clamp(0.0, 1.0));
        Some(left / self.bytes_per_s)
    }

    /// Its flash engine runs now.
    pub fn writing(&self) -> bool {
        self.phase == RowPhase::Active(DeviceState::Flashing) && self.step.is_some()
    }

    /// Its summary row, once finished.
    pub fn finished(&self) -> Option<&SummaryRow> {
        match &self.phase {
            RowPhase::Finished(r) => Some(r),
            _ => None,
        }
    }

    fn line(&mut self, text: String) {
        self.lines.push(text);
        if self.lines.len() > STATION_LINES {
            let excess = self.lines.len() - STATION_LINES;
            self.lines.drain(..excess);
        }
    }

    /// Apply one note of this modem's job.
    pub fn apply(&mut self, note: Note) {
        match note {
            Note::Selected {
                bus,
                location,
                usb_id,
                mode,
                log,
            } => {
                self.line(format!("found: {usb_id} ({mode}) at {location} on {bus}"));
                self.bus = bus;
                self.location = location;
                self.usb_id = usb_id;
                self.log = Some(log);
            }
            Note::State { state, detail } => {
                self.phase = RowPhase::Active(state);
                if state != DeviceState::Flashing {
                    self.bytes_per_s = 0.0;
                    self.step = None;
                }
                self.line(if detail.is_empty() {
                    state.word().to_string()
                } else {
                    format!("{}: {detail}", state.word())
                });
                self.detail = detail;
            }
            Note::Engine { engine } => self.engine(engine),
            Note::Resume { notice } => {
                if let Some(l) = crate::cli::flash_resume::notice_line(&notice) {
                    self.line(l);
                }
            }
            Note::Finished { row } => {
                self.bytes_per_s = 0.0;
                self.step = None;
                self.attempts = self.attempts.max(row.attempts);
                self.line(format!("{}: {}", outcome_word(row.outcome), row.detail));
                if let Some(n) = &row.next {
                    self.line(format!("next: {n}"));
                }
                self.phase = RowPhase::Finished(row);
            }
        }
    }

    fn engine(&mut self, e: EngineEvent) {
        match e {
            EngineEvent::Plan { steps, total_bytes } => {
                self.attempts += 1;
                self.steps = steps.len();
                self.total_bytes = total_bytes;
                self.overall = 0.0;
                self.step = None;
                self.problem = None;
                self.line(format!(
                    "plan: {} steps, {} to write (attempt {})",
                    steps.len(),
                    crate::cli::output::bytes(total_bytes),
                    self.attempts
                ));
            }
            EngineEvent::StepStarted {
                index, name, bytes, ..
            } => {
                self.line(format!(
                    "step {}/{}: {name}",
                    index + 1,
                    self.steps.max(index + 1)
                ));
                self.step = Some(name);
                self.step_index = index;
                self.step_bytes = bytes;
                self.step_done = 0;
            }
            EngineEvent::Progress {
                index,
                done,
                total,
                bytes_per_s,
                overall,
                ..
            } => {
                self.step_index = index;
                self.step_done = done;
                self.step_bytes = total;
                if bytes_per_s.is_finite() && bytes_per_s >= 0.0 {
                    self.bytes_per_s = bytes_per_s;
                }
                if overall.is_finite() {
                    self.overall = self.overall.max(overall.clamp(0.0, 1.0));
                }
            }
            EngineEvent::StepFinished {
                bytes, elapsed_ms, ..
            } => {
                self.step_done = self.step_done.max(bytes);
                let name = self.step.clone().unwrap_or_else(|| "step".into());
                if bytes > 0 {
                    self.line(format!(
                        "{name} done: {} in {:.1} s",
                        crate::cli::output::bytes(bytes),
                        elapsed_ms as f64 / 1000.0
                    ));
                }
            }
            EngineEvent::StepFailed {
                what, why, next, ..
            } => {
                self.line(format!("step failed: {what}"));
                self.problem = Some(Problem { what, why, next });
            }
            EngineEvent::Log { message } => self.line(format!("device: {message}")),
            EngineEvent::Done {
                ok,
                bytes,
                elapsed_ms,
            } => {
                self.bytes_per_s = 0.0;
                self.step = None;
                if ok {
                    self.overall = 1.0;
                    self.line(format!(
                        "all written: {} in {:.1} s",
                        crate::cli::output::bytes(bytes),
                        elapsed_ms as f64 / 1000.0
                    ));
                } else {
                    self.line("the flash stopped before its last step".into());
                }
            }
        }
    }
}

/// The word a finished modem's row shows.
pub fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Verified => "VERIFIED",
        Outcome::NotVerified => "NOT VERIFIED",
        Outcome::Failed => "FAILED",
        Outcome::Skipped => "SKIPPED",
        Outcome::Interrupted => "STOPPED",
    }
}

/// How many modems are where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Found, identifying, switching, or waiting for the modem to come back.
    pub waiting: usize,
    /// Being written.
    pub flashing: usize,
    /// Written; restarting or being asked over AT.
    pub checking: usize,
    pub verified: usize,
    /// Finished without being verified (failed, not verified, skipped, stopped).
    pub failed: usize,
}

/// A station run on screen.
#[derive(Debug, Clone)]
pub struct StationView {
    pub run: JobId,
    pub package: PathBuf,
    /// Modems the person confirmed.
    pub asked: usize,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// One row per modem, sorted by key (the summary's order).
    pub rows: Vec<StationRow>,
    /// The key of the selected row.
    pub selected: Option<String>,
    /// The person asked every modem to stop.
    pub stop_requested: bool,
    /// The summary and its files, once the run ended.
    pub done: Option<StationDone>,
    /// Why the run could not run at all.
    pub problem: Option<Problem>,
    /// Changes not drawn yet (see the module docs).
    pub pending: bool,
    /// When the run's events last caused a frame.
    pub frame_ms: u64,
    /// The elapsed second that frame showed.
    pub frame_s: u64,
}

impl StationView {
    pub fn new(run: JobId, package: PathBuf, asked: usize, now_ms: u64) -> StationView {
        StationView {
            run,
            package,
            asked,
            started_ms: now_ms,
            ended_ms: None,
            rows: Vec::new(),
            selected: None,
            stop_requested: false,
            done: None,
            problem: None,
            pending: false,
            frame_ms: now_ms,
            frame_s: 0,
        }
    }

    pub fn running(&self) -> bool {
        self.ended_ms.is_none()
    }

    /// Position of the selected row.
    pub fn selected_index(&self) -> Option<usize> {
        let key = self.selected.as_deref()?;
        self.rows.iter().position(|r| r.key == key)
    }

    pub fn selected_row(&self) -> Option<&StationRow> {
        self.selected_index().map(|i| &self.rows[i])
    }

    /// Move the selection by `delta` rows (clamped); the first row when none is selected.
    pub fn move_selection(&mut self, delta: isize) {
        if self.rows.is_empty() {
            return;
        }
        let next = match self.selected_index() {
            None => 0,
            Some(p) => p.saturating_add_signed(delta).min(self.rows.len() - 1),
        };
        self.selected = Some(self.rows[next].key.clone());
    }

    /// One event of the run: the row of its modem (made, in key order, on first sight).
    pub fn apply(&mut self, event: StationEvent) {
        self.pending = true;
        let i = match self
            .rows
            .binary_search_by(|r| r.key.as_str().cmp(&event.device))
        {
            Ok(i) => i,
            Err(i) => {
                self.rows.insert(i, StationRow::new(&event.device));
                i
            }
        };
        if self.selected.is_none() {
            self.selected = Some(event.device.clone());
        }
        self.rows[i].apply(event.note);
    }

    /// The run ended: its summary (rows the jobs never finished take their summary row), or
    /// why it could not run.
    pub fn end(&mut self, result: Result<StationDone, Problem>, now_ms: u64) {
        self.ended_ms = Some(now_ms);
        self.pending = true;
        match result {
            Ok(done) => {
                for r in &done.summary.rows {
                    let row = match self.rows.iter_mut().find(|x| x.key == r.device) {
                        Some(x) => x,
                        None => {
                            self.rows.push(StationRow::new(&r.device));
                            self.rows.last_mut().expect("just pushed")
                        }
                    };
                    if row.finished().is_none() {
                        row.phase = RowPhase::Finished(Box::new(r.clone()));
                        row.bytes_per_s = 0.0;
                        row.step = None;
                    }
                }
                self.rows.sort_by(|a, b| a.key.cmp(&b.key));
                self.done = Some(done);
            }
            Err(p) => self.problem = Some(p),
        }
        for r in &mut self.rows {
            r.bytes_per_s = 0.0;
        }
        if self.selected.is_none() {
            self.selected = self.rows.first().map(|r| r.key.clone());
        }
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.rows {
            match &r.phase {
                RowPhase::Found => c.waiting += 1,
                RowPhase::Active(s) => match s {
                    DeviceState::Flashing => c.flashing += 1,
                    DeviceState::Restarting | DeviceState::Checking => c.checking += 1,
                    DeviceState::Identifying | DeviceState::Switching | DeviceState::Waiting => {
                        c.waiting += 1
                    }
                },
                RowPhase::Finished(row) if row.outcome == Outcome::Verified => c.verified += 1,
                RowPhase::Finished(_) => c.failed += 1,
            }
        }
        c
    }

    /// Sum of the write rates of every modem being written now (bytes/s).
    pub fn bytes_per_s(&self) -> f64 {
        self.rows
            .iter()
            .filter(|r| r.writing())
            .map(|r| r.bytes_per_s)
            .sum()
    }

    /// How long the run has gone (or went).
    pub fn elapsed_ms(&self, now_ms: u64) -> u64 {
        self.ended_ms
            .unwrap_or(now_ms)
            .saturating_sub(self.started_ms)
    }

    /// A tick at `now_ms` while the run goes: true when it should draw a frame now (pending
    /// changes, or the elapsed second changed), at most once per [`STATION_FRAME_MS`].
    pub fn frame_due(&mut self, now_ms: u64) -> bool {
        let second = self.elapsed_ms(now_ms) / 1000;
        let changed = self.pending || (self.running() && second != self.frame_s);
        if !changed || now_ms.saturating_sub(self.frame_ms) < STATION_FRAME_MS {
            return false;
        }
        self.pending = false;
        self.frame_ms = now_ms;
        self.frame_s = second;
        true
    }
}
