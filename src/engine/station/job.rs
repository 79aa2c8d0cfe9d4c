//! One modem's job in a station run, on its own thread: (normal mode: identify over AT, switch
//! to EDL) → Sahara identity check → flash → (dropped: wait for the same modem, flash again) →
//! reset → wait for it in normal mode → identify over AT → verdict. It hears only the monitor's
//! updates for its own device and writes its own log (JSON lines), recording and run record.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::select::flashable;
use super::summary::{Outcome, SummaryRow};
use super::{file_stem, DeviceState, Note, Selected, StationConfig, StationEvent};
use crate::device::classify::{Classification, Mode, PortRole};
use crate::device::monitor::Update;
use crate::device::DeviceSnapshot;
use crate::engine::at::{AtSession, NormalIdentity};
use crate::engine::diag::DiagSession;
use crate::engine::events::EngineEvent;
use crate::engine::firehose::PowerMode;
use crate::engine::flash::FlashJob;
use crate::engine::identify::{identify_over_at, open_port, AtTries};
use crate::engine::journal::{JournalStore, Opening, UnitKey};
use crate::engine::outcome::{unix_ms_now, utc_text, RunDevice, RunHandle, RunStart};
use crate::engine::resume::{flash_resumable, AttemptRecords, Link, ResumeNotice, ResumeOptions};
use crate::record::writer::lock;
use crate::record::{RecordOptions, Recorder, SharedRecorder};
use crate::transport::open::open_device;
use crate::transport::record::RecordingTransport;
use crate::transport::Transport;
use crate::workflow::verdict::{judge, Expectation, Return, Verdict};
use crate::{Error, ErrorKind};

/// What every job of a run shares.
pub struct JobContext<'a> {
    pub cfg: &'a StationConfig,
    /// Where each modem's flash journal is kept.
    pub journals: &'a JournalStore,
    /// When the run started (event times count from it).
    pub started: Instant,
    pub cancel: &'a AtomicBool,
}

/// Run one modem's job to its end; never panics on device input, always returns its row (also
/// sent as the last [`Note::Finished`]).
pub fn run_device(
    ctx: &JobContext<'_>,
    dev: Selected,
    updates: Receiver<Update>,
    events: Sender<StationEvent>,
) -> SummaryRow {
    let stem = file_stem(&dev.key);
    let log_path = ctx.cfg.log_dir.join(format!("{stem}.log"));
    let log = match File::create(&log_path) {
        Ok(f) => Some(BufWriter::new(f)),
        Err(e) => {
            tracing::warn!("cannot write {}: {e}", log_path.display());
            None
        }
    };
    let recording = ctx
        .cfg
        .record
        .then(|| ctx.cfg.log_dir.join(format!("{stem}.rec.jsonl")));
    let recorder = recording
        .as_deref()
        .and_then(|p| start_recording(p, &dev.key));
    let row = SummaryRow {
        device: dev.key.clone(),
        edl_serial: dev
            .class
            .edl_serial
            .as_ref()
            .map(|s| s.to_ascii_uppercase()),
        usb_serial: dev
            .class
            .edl_serial
            .is_none()
            .then(|| dev.snapshot.serial.clone())
            .flatten(),
        imei: None,
        bus: dev.bus_name.clone(),
        location: dev.snapshot.location(),
        package: ctx.cfg.package.clone(),
        outcome: Outcome::Failed,
        verdict: None,
        detail: String::new(),
        next: None,
        started: utc_text(unix_ms_now()),
        duration_ms: 0,
        bytes: 0,
        attempts: 0,
        log: log_path.clone(),
        recording: recorder.as_ref().and(recording),
        journal: None,
        resumed: false,
        bytes_resent: 0,
    };
    let mut job = Job {
        ctx,
        snapshot: dev.snapshot.clone(),
        class: dev.class.clone(),
        last_mode: None,
        dev,
        updates,
        events,
        log,
        recorder,
        row,
        begun: Instant::now(),
        run: None,
        records: None,
        journal_before: 0,
        other: None,
    };
    job.note(Note::Selected {
        bus: job.dev.bus_name.clone(),
        location: job.dev.snapshot.location(),
        usb_id: job.dev.snapshot.id(),
        mode: job.dev.class.tag().to_string(),
        log: log_path,
    });
    let result = job.body();
    job.finish(result)
}

/// The journal key of an EDL serial as the station writes it (`5A17C000`, `0x5a17c000`).
fn unit_of_serial(sn: &str) -> Option<UnitKey> {
    let hex = sn.trim();
    let hex = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(hex);
    if hex.is_empty() || hex.len() > 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(UnitKey::from_serial)
}

fn start_recording(path: &Path, key: &str) -> Option<SharedRecorder> {
    let opts = RecordOptions {
        note: format!("qrescue station: modem {key}"),
        ..RecordOptions::default()
    };
    match Recorder::create(path, opts) {
        Ok(r) => Some(r.shared()),
        Err(e) => {
            tracing::warn!("no recording for {key}: {}: {}", e.what, e.why);
            None
        }
    }
}

/// How a job body ended without an error.
enum Ended {
    Judged(Verdict),
    Skipped(String),
}

/// One modem's job (see the module docs).
pub struct Job<'a> {
    ctx: &'a JobContext<'a>,
    dev: Selected,
    /// The latest snapshot of this modem (it changes at every appearance).
    snapshot: DeviceSnapshot,
    class: Classification,
    /// What it was seen as last (`EDL (…) 05c6:9008`), for a verdict when it does not return.
    last_mode: Option<String>,
    updates: Receiver<Update>,
    events: Sender<StationEvent>,
    log: Option<BufWriter<File>>,
    recorder: Option<SharedRecorder>,
    row: SummaryRow,
    begun: Instant,
    /// The run record of the last flash attempt (for `qrescue status`).
    run: Option<RunHandle>,
    /// The run records of the flash's attempts while it runs.
    records: Option<AttemptRecords>,
    /// Image bytes its journal already held when the flash began (a run cut short earlier).
    journal_before: u64,
    /// Another modem answered in its place (said when the flash fails).
    other: Option<String>,
}

impl Job<'_> {
    fn note(&mut self, note: Note) {
        let ev = StationEvent {
            t_ms: self.ctx.started.elapsed().as_millis() as u64,
            device: self.dev.key.clone(),
            note,
        };
        if let Some(log) = &mut self.log {
            let ok = serde_json::to_writer(&mut *log, &ev).is_ok() && log.write_all(b"\n").is_ok();
            if !ok {
                tracing::warn!("the log of {} could not be written", self.dev.key);
                self.log = None;
            }
        }
        let _ = self.events.send(ev);
    }

    fn state(&mut self, state: DeviceState, detail: impl Into<String>) {
        self.note(Note::State {
            state,
            detail: detail.into(),
        });
    }

    fn cancelled(&self) -> bool {
        self.ctx.cancel.load(Ordering::SeqCst)
    }

    fn interrupted(&self) -> Error {
        Error::new(
            ErrorKind::Interrupted,
            "The station run was stopped",
            "a stop was requested (Ctrl-C)",
            "Run the same command again for the modems that are not verified",
        )
    }

    /// Wrap a transport so this modem's recording (if any) sees its traffic.
    fn wrap<T: Transport>(&self, t: T) -> RecordingTransport<T> {
        match &self.recorder {
            Some(r) => RecordingTransport::new(t, r),
            None => RecordingTransport::passthrough(t),
        }
    }

    fn mark(&self, label: &str) {
        if let Some(r) = &self.recorder {
            lock(r).mark(label, None);
        }
    }

    /// Take an update of this modem into account.
    fn seen(&mut self, u: &Update) {
        if u.event == "vanish" {
            return;
        }
        if let (Some(d), Some(c)) = (&u.device, &u.class) {
            self.snapshot = d.clone();
            self.class = c.clone();
            self.last_mode = Some(format!("{} {}", c.label, d.id()));
            if self.row.edl_serial.is_none() {
                self.row.edl_serial = c.edl_serial.as_ref().map(|s| s.to_ascii_uppercase());
            }
            if c.edl_serial.is_none() && d.serial.is_some() && self.row.usb_serial.is_none() {
                self.row.usb_serial = d.serial.clone();
            }
        }
    }

    /// The next update of this modem that `want` accepts, within `within`.
    fn wait_for(
        &mut self,
        within: Duration,
        want: &dyn Fn(&Update) -> bool,
    ) -> crate::Result<Option<Update>> {
        let end = Instant::now() + within;
        loop {
            if self.cancelled() {
                return Err(self.interrupted());
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self
                .updates
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(u) => {
                    self.seen(&u);
                    if want(&u) {
                        return Ok(Some(u));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::new(
                        ErrorKind::DeviceLost,
                        format!("qrescue stopped hearing from {}", self.dev.bus_name),
                        "the modem is followed through that bus's device events, and they ended",
                        "Check the log (-v --log-file FILE) and run again for this modem",
                    ))
                }
            }
        }
    }

    /// Wait (at most `within`) for this modem to appear in 9008: whether it did.
    fn await_edl(&mut self, within: Duration) -> crate::Result<bool> {
        let got = self.wait_for(within, &|u| {
            u.event == "appear" && u.class.as_ref().is_some_and(|c| c.mode == Mode::Edl)
        })?;
        Ok(got.is_some())
    }

    /// Wait for this modem to appear in 9008.
    fn wait_edl(&mut self, within: Duration, what: &str) -> crate::Result<()> {
        if self.await_edl(within)? {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::NoDevice,
            format!(
                "{} did not {what} within {} s",
                self.dev.key,
                within.as_secs()
            ),
            format!(
                "it was last seen as {}",
                self.last_mode.as_deref().unwrap_or("(nothing)")
            ),
            "Power-cycle it into download mode (9008) and run again for this modem",
        ))
    }

    fn body(&mut self) -> crate::Result<Ended> {
        let from_edl = match flashable(&self.class) {
            Ok(e) => e,
            Err(why) => return Ok(Ended::Skipped(why)),
        };
        let cfg = self.ctx.cfg;
        let mut expect = Expectation {
            revision: cfg.revision.clone(),
            ..Expectation::default()
        };
        if !from_edl {
            self.state(DeviceState::Identifying, "asking it who it is over AT");
            let id = self.identify_normal()?;
            expect.imei = id.imei.as_ref().map(|i| i.digits.clone());
            expect.calibrated_before = id.cfun.map(|c| c.level == 1);
            self.row.imei = expect.imei.clone();
            self.state(
                DeviceState::Switching,
                "DIAG switch to download mode; waiting for 9008",
            );
            self.switch_to_edl()?;
            self.wait_edl(
                cfg.waits.to_edl,
                "come up in download mode after the switch",
            )?;
        }
        self.flash(&mut expect)?;
        self.state(
            DeviceState::Restarting,
            "written and reset; waiting for it in normal mode",
        );
        let ret = self.wait_return()?;
        let verdict = judge(&expect, &ret);
        if self.row.imei.is_none() {
            if let Return::Normal(id) = &ret {
                self.row.imei = id.imei.as_ref().map(|i| i.digits.clone());
            }
        }
        Ok(Ended::Judged(verdict))
    }

    /// The flash of this modem from 9008, journaled by its EDL serial and continued across
    /// drops ([`flash_resumable`], the engine of `qrescue flash PACKAGE`): each attempt checks
    /// over Sahara that the modem is the one this job was given (another is left alone), uploads
    /// the programmer and runs what its journal does not hold yet, with a reset at the end.
    /// After a drop the job waits (bounded) for this same modem — the monitor follows it by its
    /// identity — to come back in 9008 and the next attempt continues. Every attempt leaves a
    /// run record.
    pub fn flash(&mut self, expect: &mut Expectation) -> crate::Result<()> {
        let ctx = self.ctx;
        let cfg = ctx.cfg;
        if self.cancelled() {
            return Err(self.interrupted());
        }
        let opts = ResumeOptions {
            package: cfg.package.clone(),
            fresh: cfg.fresh,
            return_wait: cfg.waits.come_back,
            max_attempts: cfg.attempts.max(1),
            chunk_bytes: cfg.chunk_bytes,
            unit: self.row.edl_serial.as_deref().and_then(unit_of_serial),
            ..ResumeOptions::default()
        };
        let job = FlashJob {
            programmer: Some(cfg.programmer.clone()),
            reset: Some(PowerMode::Reset),
            sahara: cfg.sahara.clone(),
            firehose: cfg.firehose.clone(),
        };
        self.records = Some(AttemptRecords::new(
            cfg.runs.clone(),
            RunStart {
                tool: "station".into(),
                device: RunDevice {
                    id: Some(self.dev.key.clone()),
                    usb_id: Some(self.snapshot.id()),
                    location: Some(self.snapshot.location()),
                    serial: self.row.edl_serial.clone(),
                    port: None,
                },
                package: Some(cfg.package.clone()),
                package_revision: cfg.revision.clone(),
                log_file: Some(self.row.log.clone()),
            },
        ));
        let me = RefCell::new(&mut *self);
        let mut first = true;
        let mut reconnect = |wait: Duration| -> crate::Result<Option<Link>> {
            me.borrow_mut().next_link(std::mem::take(&mut first), wait)
        };
        let result = flash_resumable(
            &mut reconnect,
            &cfg.plan,
            &job,
            ctx.journals,
            &opts,
            &mut |e| me.borrow_mut().engine_event(e),
            &mut |n| me.borrow_mut().resume_notice(n),
            ctx.cancel,
        );
        self.run = self.records.take().and_then(|r| r.end(result.as_ref()));
        self.mark(match &result {
            Ok(_) => "flash finished",
            Err(_) => "flash stopped",
        });
        if let Ok(r) = &result {
            // Continued from work its journal already held (an earlier attempt or run).
            self.row.resumed |= !r.last.skipped.is_empty() || r.last.continued.is_some();
            self.row.attempts = r.attempts;
        }
        let needed = cfg.plan.total_bytes().saturating_sub(self.journal_before);
        self.row.bytes_resent = self.row.bytes.saturating_sub(needed);
        if let Some(sn) = &self.row.edl_serial {
            if let Some(known) = cfg.expectations.get(sn) {
                if expect.imei.is_none() {
                    expect.imei = known.imei.clone();
                }
                if expect.calibrated_before.is_none() {
                    expect.calibrated_before = known.calibrated_before;
                }
                if expect.backup.is_none() {
                    expect.backup = known.backup.clone();
                }
            }
        }
        match (result, self.other.take()) {
            (Ok(_), _) => Ok(()),
            (Err(mut e), Some(other)) => {
                e.why = format!("{}; {other}", e.why);
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// The next connection to this modem for its flash: the first at once (it is in 9008 now),
    /// later ones when it appears again in 9008 within `wait`.
    fn next_link(&mut self, first: bool, wait: Duration) -> crate::Result<Option<Link>> {
        let end = Instant::now() + wait;
        let mut waited = first;
        loop {
            if !waited {
                let left = end.saturating_duration_since(Instant::now());
                if !self.await_edl(left)? {
                    return Ok(None);
                }
            }
            waited = false;
            match open_device(&self.snapshot, &self.ctx.cfg.open) {
                Ok(t) => {
                    let t = self.wrap(t);
                    let port = format!("{} at {}", t.describe(), self.snapshot.location());
                    return Ok(Some(Link {
                        transport: Box::new(t),
                        appeared: Instant::now(),
                        window: None,
                        port,
                    }));
                }
                // Gone again before it could be opened: wait for its next appearance.
                Err(e)
                    if !first && matches!(e.kind, ErrorKind::NoDevice | ErrorKind::DeviceLost) =>
                {
                    tracing::info!("{} could not be opened: {}", self.dev.key, e.what);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn resume_notice(&mut self, n: &ResumeNotice) {
        if let Some(r) = &mut self.records {
            r.on_notice(n);
        }
        self.note(Note::Resume { notice: n.clone() });
        match n {
            ResumeNotice::Waiting {
                attempt,
                wait_s,
                after,
            } if *attempt > 1 => self.state(
                DeviceState::Waiting,
                format!(
                    "{} — waiting up to {wait_s:.0} s for this modem to come back in 9008",
                    after.as_deref().unwrap_or("its link dropped")
                ),
            ),
            ResumeNotice::Journal { unit, opening, .. } => {
                self.row.journal = Some(unit.to_string());
                if self.row.edl_serial.is_none() {
                    self.row.edl_serial = unit.serial().map(|s| format!("{s:08X}"));
                }
                if let Some(Ok(s)) = self.ctx.journals.load(unit).ok().flatten() {
                    self.journal_before = s.summary().bytes_done;
                }
                self.row.resumed |= matches!(opening, Opening::Resume { .. });
            }
            ResumeNotice::Connected { attempt, port, .. } => {
                self.row.attempts = *attempt;
                self.state(
                    DeviceState::Flashing,
                    format!("attempt {attempt} on {port}"),
                );
                self.mark(&format!("flash attempt {attempt}"));
            }
            ResumeNotice::OtherUnit { found, expected } => {
                self.other = Some(format!(
                    "another modem (unit {found}) answered at {} and was left alone; this one is unit {expected}",
                    self.snapshot.location()
                ));
            }
            _ => {}
        }
    }

    fn engine_event(&mut self, e: EngineEvent) {
        if let Some(r) = &mut self.records {
            r.on_event(&e);
        }
        match &e {
            EngineEvent::StepStarted { index, name, .. } => {
                self.mark(&format!("step {index} {name}"))
            }
            EngineEvent::Done { bytes, .. } => self.row.bytes += bytes,
            _ => {}
        }
        self.note(Note::Engine { engine: e });
    }

    fn identify_normal(&mut self) -> crate::Result<NormalIdentity> {
        let t = self.wrap(open_port(&self.snapshot, PortRole::At)?);
        Ok(AtSession::new(t).identify())
    }

    fn switch_to_edl(&mut self) -> crate::Result<()> {
        let t = self.wrap(open_port(&self.snapshot, PortRole::Dm)?);
        DiagSession::new(t).switch_to_edl()?;
        Ok(())
    }

    /// After the reset: wait (bounded) for this modem in normal mode and ask it over AT.
    fn wait_return(&mut self) -> crate::Result<Return> {
        let within = self.ctx.cfg.waits.normal_return;
        let start = Instant::now();
        let got = self.wait_for(within, &|u| {
            u.event == "appear"
                && u.class
                    .as_ref()
                    .is_some_and(|c| matches!(c.mode, Mode::QuectelNormal { .. }))
        })?;
        if got.is_none() {
            return Ok(Return::NoReturn {
                waited_ms: start.elapsed().as_millis() as u64,
                last_mode: self.last_mode.clone(),
            });
        }
        self.state(
            DeviceState::Checking,
            "back in normal mode; asking it over AT",
        );
        // A port that just enumerated may refuse the first open, or not answer at once.
        let asked = identify_over_at(
            &self.snapshot,
            AtTries::default(),
            &|t| Box::new(self.wrap(t)),
            self.ctx.cancel,
        );
        Ok(match asked {
            Ok(id) => Return::Normal(Box::new(id)),
            Err(e) => Return::Unidentified {
                why: format!("{}: {}", e.what, e.why),
            },
        })
    }

    fn finish(mut self, result: crate::Result<Ended>) -> SummaryRow {
        self.row.duration_ms = self.begun.elapsed().as_millis() as u64;
        match result {
            Ok(Ended::Judged(v)) => {
                self.row.outcome = if v.is_verified() {
                    Outcome::Verified
                } else {
                    Outcome::NotVerified
                };
                self.row.detail = v.headline();
                if let Verdict::NotVerified { next, .. } = &v {
                    self.row.next = Some(next.join("; "));
                }
                if let Some(r) = &mut self.run {
                    r.verified(self.row.detail.clone());
                }
                self.row.verdict = Some(v);
            }
            Ok(Ended::Skipped(why)) => {
                self.row.outcome = Outcome::Skipped;
                self.row.detail = format!("not flashed: {why}");
            }
            Err(e) => {
                self.row.outcome = if e.kind == ErrorKind::Interrupted {
                    Outcome::Interrupted
                } else {
                    Outcome::Failed
                };
                self.row.detail = format!("{}: {}", e.what, e.why);
                self.row.next = Some(e.next.clone());
            }
        }
        self.mark(&format!("station: {}", self.row.outcome.word()));
        let row = self.row.clone();
        self.note(Note::Finished {
            row: Box::new(row.clone()),
        });
        if let Some(log) = &mut self.log {
            let _ = log.flush();
        }
        if let Some(r) = &self.recorder {
            if let Err(e) = lock(r).finish() {
                tracing::warn!("the recording of {} is incomplete: {e}", self.dev.key);
            }
        }
        row
    }
}
