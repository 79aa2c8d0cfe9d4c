//! One modem's job in a station run, on its own thread: (normal mode: identify over AT, switch
//! to EDL) → Sahara identity check → flash → (dropped: wait for the same modem, flash again) →
//! reset → wait for it in normal mode → identify over AT → verdict. It hears only the monitor's
//! updates for its own device and writes its own log (JSON lines), recording and run record.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
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
use crate::engine::flash::{self, FlashJob, FlashReport};
use crate::engine::outcome::{unix_ms_now, utc_text, RunDevice, RunHandle, RunStart};
use crate::engine::sahara::SaharaSession;
use crate::record::writer::lock;
use crate::record::{RecordOptions, Recorder, SharedRecorder};
use crate::transport::open::{open_device, open_tty};
use crate::transport::record::RecordingTransport;
use crate::transport::Transport;
use crate::workflow::verdict::{judge, Expectation, Return, Verdict};
use crate::{Error, ErrorKind};

/// What every job of a run shares.
pub struct JobContext<'a> {
    pub cfg: &'a StationConfig,
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

    /// Wait for this modem to appear in 9008.
    fn wait_edl(&mut self, within: Duration, what: &str) -> crate::Result<()> {
        let got = self.wait_for(within, &|u| {
            u.event == "appear" && u.class.as_ref().is_some_and(|c| c.mode == Mode::Edl)
        })?;
        match got {
            Some(_) => Ok(()),
            None => Err(Error::new(
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
            )),
        }
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
        let mut attempt = 0;
        let report = loop {
            attempt += 1;
            self.row.attempts = attempt;
            match self.flash_attempt(&mut expect) {
                Ok(r) => break r,
                Err(e)
                    if e.kind == ErrorKind::DeviceLost
                        && attempt < cfg.attempts.max(1)
                        && !self.cancelled() =>
                {
                    self.state(
                        DeviceState::Waiting,
                        format!("{} — waiting for this modem to come back in 9008", e.what),
                    );
                    self.wait_edl(cfg.waits.come_back, "come back after its link dropped")?;
                }
                Err(e) => return Err(e),
            }
        };
        self.row.bytes = report.bytes;
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

    /// One flash of this modem from 9008: open it, check it is the modem this job was given
    /// (Sahara serial), upload the programmer and run the plan with a reset at the end.
    ///
    /// This is the seam for a per-device journal: a resume would read this modem's journal (by
    /// its EDL serial) here and run only what is left instead of the whole plan.
    pub fn flash_attempt(&mut self, expect: &mut Expectation) -> crate::Result<FlashReport> {
        let cfg = self.ctx.cfg;
        let cancel = self.ctx.cancel;
        if self.cancelled() {
            return Err(self.interrupted());
        }
        self.state(
            DeviceState::Flashing,
            format!(
                "attempt {} at {}",
                self.row.attempts,
                self.snapshot.location()
            ),
        );
        self.mark(&format!("flash attempt {}", self.row.attempts));
        let t = self.wrap(open_device(&self.snapshot, &cfg.open)?);
        let port = t.describe();
        let mut sahara = SaharaSession::new(t, cfg.sahara.clone());
        let info = sahara.read_info()?;
        if let Some(serial) = info.serial {
            let got = format!("{serial:08X}");
            match &self.row.edl_serial {
                Some(want) if !want.eq_ignore_ascii_case(&got) => {
                    return Err(Error::failure(
                        format!(
                            "Another modem answered at {}: serial {got}, not {want}",
                            self.snapshot.location()
                        ),
                        "a station never writes to a modem it was not given; the modems were moved or re-plugged during the run",
                        "Run again: each modem is then taken by its own serial",
                    ));
                }
                Some(_) => {}
                None => self.row.edl_serial = Some(got.clone()),
            }
            if let Some(known) = cfg.expectations.get(&got) {
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
        let mut run = cfg.runs.as_ref().and_then(|store| {
            store
                .begin(RunStart {
                    tool: "station".into(),
                    device: RunDevice {
                        id: Some(self.dev.key.clone()),
                        usb_id: Some(self.snapshot.id()),
                        location: Some(self.snapshot.location()),
                        serial: self.row.edl_serial.clone(),
                        port: Some(port),
                    },
                    package: Some(cfg.package.clone()),
                    package_revision: cfg.revision.clone(),
                    log_file: Some(self.row.log.clone()),
                })
                .map_err(|e| tracing::warn!("no run record for {}: {}", self.dev.key, e.what))
                .ok()
        });
        let job = FlashJob {
            programmer: Some(cfg.programmer.clone()),
            reset: Some(PowerMode::Reset),
            sahara: cfg.sahara.clone(),
            firehose: cfg.firehose.clone(),
        };
        let link = sahara.into_transport();
        let result = flash::run(
            link,
            &cfg.plan,
            &job,
            &mut |e| self.engine_event(e, &mut run),
            cancel,
        );
        if let Some(r) = &mut run {
            r.finish(result.as_ref().map(|r| r.bytes));
        }
        self.run = run;
        self.mark(match &result {
            Ok(_) => "flash finished",
            Err(_) => "flash stopped",
        });
        result
    }

    fn engine_event(&mut self, e: EngineEvent, run: &mut Option<RunHandle>) {
        if let Some(r) = run {
            r.on_event(&e);
        }
        if let EngineEvent::StepStarted { index, name, .. } = &e {
            self.mark(&format!("step {index} {name}"));
        }
        self.note(Note::Engine { engine: e });
    }

    /// The port of `role` of this modem in normal mode.
    fn normal_port(&self, role: PortRole) -> crate::Result<PathBuf> {
        self.class
            .port(role)
            .and_then(|p| p.tty.clone())
            .map(PathBuf::from)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NoDevice,
                    format!(
                        "{} has no {} port with a tty",
                        self.dev.key,
                        role.label()
                    ),
                    "qrescue talks to a modem in normal mode over its DM and AT ports",
                    "Check that the option driver is bound (qrescue list), or put the modem in download mode (9008)",
                )
            })
    }

    fn identify_normal(&mut self) -> crate::Result<NormalIdentity> {
        let path = self.normal_port(PortRole::At)?;
        let t = self.wrap(open_tty(&path)?);
        Ok(AtSession::new(t).identify())
    }

    fn switch_to_edl(&mut self) -> crate::Result<()> {
        let path = self.normal_port(PortRole::Dm)?;
        let t = self.wrap(open_tty(&path)?);
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
        let path = match self.normal_port(PortRole::At) {
            Ok(p) => p,
            Err(e) => return Ok(Return::Unidentified { why: e.what }),
        };
        // A port that just enumerated may refuse the first open for a moment.
        let mut opened = open_tty(&path);
        for _ in 0..5 {
            if opened.is_ok() || self.cancelled() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            opened = open_tty(&path);
        }
        Ok(match opened {
            Ok(t) => {
                let id = AtSession::new(self.wrap(t)).identify();
                if id.imei.is_none() && id.cfun.is_none() && id.model.is_none() {
                    Return::Unidentified {
                        why: id
                            .problems
                            .first()
                            .map(|p| format!("{}: {}", p.command, p.error))
                            .unwrap_or_else(|| "no answer".into()),
                    }
                } else {
                    Return::Normal(Box::new(id))
                }
            }
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
