//! The console's runtime: everything that does I/O around the pure model.
//!
//! ```text
//! device sources (one thread each) ─ Msg::Device ─┐
//! crossterm input thread ─ Msg::Key / Msg::Resize ┤
//! signal thread ─ Msg::Terminate / Msg::Hangup ───┤
//! log lines (coalesced) ─ Msg::Tick ──────────────┼─► update(&mut model, msg) ─► effects ─► Executor
//! tick (only while something animates) ───────────┤          │                              │
//! executor threads ─ Identified/Checked/Engine/… ─┘   dirty? draw(view)             threads answer
//! ```
//!
//! - One clock ([`Clock`]): every message carries milliseconds since the console started;
//!   device events are re-stamped on arrival (those in the first [`INITIAL_MS`] are `initial`,
//!   devices already there, as `qrescue watch` does).
//! - Draw only when the model is dirty; tick only while the model says something animates; no
//!   timer while idle (an idle console over SSH sends nothing).
//! - SIGHUP: stop drawing, keep running until no flash runs, then end. SIGTERM/SIGINT: the model
//!   hears it first; if it does not quit, running flashes are cancelled at their next safe point
//!   and the console ends when they have.
//! - [`drive`] is the loop itself, generic over the ratatui backend, so tests run it on a
//!   `TestBackend` with scripted messages.

use std::any::Any;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ratatui::backend::Backend;
use ratatui::Terminal;

use crate::device::DeviceSource;
use crate::engine::guards::BackupLedger;
use crate::engine::outcome::RunStore;
use crate::engine::sahara::SaharaConfig;
use crate::transport::open::OpenOptions;
use crate::Error;

use super::exec::{Clock, Control, ExecOptions, Executor, StationSetup, IDENTIFY_DEADLINE};
use super::model::{Config, Model, Outcome, Stage};
use super::msg::{BenchAction, Effect, JobId, Msg, StationDone};
use super::terminal::{SignalWatch, TerminalGuard};
use super::update::update;
use super::view::view;

/// Device events this soon after the start describe devices that were already there.
pub const INITIAL_MS: u64 = 300;
/// Most messages handled before the screen is drawn again (a burst never starves the screen).
const BATCH: usize = 256;
/// Log lines wake the screen at most this often.
const LOG_WAKE_EVERY: Duration = Duration::from_millis(100);

/// Where devices come from and what else the console needs alive.
#[derive(Default)]
pub struct Sources {
    pub devices: Vec<Box<dyn DeviceSource>>,
    /// The demo's hands on the emulated modem ([`Effect::Bench`]).
    pub bench: Option<Box<dyn Fn(BenchAction) + Send + Sync>>,
    /// Things to keep alive while the console runs (an emulator's threads, temp folders);
    /// dropped after the console ended, devices stopped first.
    pub keep_alive: Vec<Box<dyn Any + Send>>,
    /// Where station runs (`A`: every modem in download mode at once) get their buses and
    /// folders; None: the console offers no station run.
    pub station: Option<StationSetup>,
}

/// How the console runs besides its [`Config`].
#[derive(Clone)]
pub struct ConsoleOptions {
    pub open: OpenOptions,
    /// Verified backups on file (default: none).
    pub ledger: Option<Arc<dyn BackupLedger + Send + Sync>>,
    /// Where flashes are recorded (default: [`RunStore::default_location`]; None when that is
    /// unavailable too).
    pub runs: Option<RunStore>,
    /// Sahara settings of identity queries.
    pub identify: SaharaConfig,
    /// `console` or `demo`, for run records.
    pub tool: String,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            open: OpenOptions::default(),
            ledger: None,
            runs: RunStore::default_location().ok(),
            identify: SaharaConfig {
                info_deadline: IDENTIFY_DEADLINE,
                ..SaharaConfig::default()
            },
            tool: "console".into(),
        }
    }
}

impl ConsoleOptions {
    /// The executor's options for these console options.
    pub fn exec_options(
        &self,
        log_file: Option<PathBuf>,
        bench: Option<Box<dyn Fn(BenchAction) + Send + Sync>>,
    ) -> ExecOptions {
        let mut o = ExecOptions {
            open: self.open.clone(),
            identify: self.identify.clone(),
            runs: self.runs.clone(),
            log_file,
            bench,
            tool: self.tool.clone(),
            ..ExecOptions::default()
        };
        if let Some(l) = &self.ledger {
            o.ledger = l.clone();
        }
        o
    }
}

/// Why the console ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The person quit.
    Quit,
    /// SIGTERM/SIGINT.
    Terminated,
    /// The terminal went away (SIGHUP) and no flash was left running.
    HungUp,
    /// Every message source closed (nothing could ever happen again).
    Closed,
}

/// How a console session went.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub end: EndReason,
    /// Flash jobs started, with how each ended (`None`: still running when the loop ended,
    /// which only happens when every source closed).
    pub jobs: Vec<(JobId, Option<bool>)>,
    /// The last verdict the model reached.
    pub outcome: Option<Outcome>,
    /// Frames drawn.
    pub frames: u64,
    /// Ticks sent.
    pub ticks: u64,
    /// Messages handled.
    pub messages: u64,
    /// The last station run's summary and folder, when one ended.
    pub station: Option<StationDone>,
}

/// How often the model wants a tick, if at all.
///
/// How long the loop may sleep before the next tick: the model says (None while idle, so an
/// idle console sends nothing over SSH).
fn tick_interval(model: &Model) -> Option<Duration> {
    model.tick_interval_ms().map(Duration::from_millis)
}

/// The model's final verdict in one line, for the run record.
pub fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Verified { detail } => format!("verified: {detail}"),
        Outcome::NotVerified { what_failed, next } => {
            format!("flashed, NOT verified: {what_failed} ({next})")
        }
        Outcome::Failed { problem } => format!("failed: {} ({})", problem.what, problem.next),
        Outcome::Cancelled { detail } => format!("cancelled: {detail}"),
    }
}

/// The loop's own state besides the model.
#[derive(Default)]
struct LoopState {
    running: BTreeSet<JobId>,
    jobs: Vec<(JobId, Option<bool>)>,
    headless: bool,
    quitting: Option<EndReason>,
    /// Jobs whose final verdict went into their run record.
    noted: BTreeSet<JobId>,
    ticks: u64,
    messages: u64,
}

impl LoopState {
    fn handle(&mut self, model: &mut Model, exec: &Executor, ring: &mut dyn FnMut(), msg: Msg) {
        self.messages += 1;
        match &msg {
            Msg::Hangup => {
                if !self.headless {
                    tracing::warn!(
                        "the terminal went away (SIGHUP): the console keeps running without a screen until no flash runs; the log file and `qrescue status` tell how it ended"
                    );
                }
                self.headless = true;
            }
            Msg::JobEnded { job, result, .. } => {
                self.running.remove(job);
                if let Some(j) = self.jobs.iter_mut().find(|(id, _)| id == job) {
                    j.1 = Some(result.is_ok());
                }
            }
            Msg::StationEnded { run, result, .. } => {
                self.running.remove(run);
                if let Some(j) = self.jobs.iter_mut().find(|(id, _)| id == run) {
                    j.1 = Some(
                        result
                            .as_ref()
                            .is_ok_and(|d| d.summary.verified == d.summary.devices),
                    );
                }
            }
            _ => {}
        }
        let terminate = matches!(msg, Msg::Terminate);
        let effects = update(model, msg);
        self.apply(model, exec, ring, effects);
        // The model's last word on a flash goes into its run record.
        if let (Stage::Finished(o), Some(f)) = (&model.flow.stage, &model.flash) {
            if self.noted.insert(f.job) {
                exec.note_outcome(f.job, outcome_text(o));
            }
        }
        if terminate {
            // Nobody can confirm anything for a signal: whatever the model said, flashes stop
            // at their next safe point and the console ends when they have.
            exec.cancel_all();
            self.quitting = Some(EndReason::Terminated);
        }
    }

    fn apply(
        &mut self,
        model: &mut Model,
        exec: &Executor,
        ring: &mut dyn FnMut(),
        effects: Vec<Effect>,
    ) {
        for effect in effects {
            if let Effect::StartFlash { job, .. } | Effect::StartStation { run: job, .. } = &effect
            {
                self.running.insert(*job);
                self.jobs.push((*job, None));
            }
            match exec.execute(effect) {
                Control::Handled => {}
                Control::Bell => {
                    if model.config.bell && !self.headless && !model.headless {
                        ring();
                    }
                }
                Control::Quit { cancel_jobs } => {
                    if cancel_jobs {
                        exec.cancel_all();
                    } else if !self.running.is_empty() {
                        tracing::info!("waiting for the running flash to finish before leaving");
                    }
                    // After a hangup the model leaves on its own once nothing runs: that is
                    // still the hangup's end, not a person's quit.
                    let why = if self.headless {
                        EndReason::HungUp
                    } else {
                        EndReason::Quit
                    };
                    self.quitting.get_or_insert(why);
                }
            }
        }
    }

    fn done(&self) -> Option<EndReason> {
        if !self.running.is_empty() {
            return None;
        }
        self.quitting
            .or_else(|| self.headless.then_some(EndReason::HungUp))
    }
}

/// The loop: draw when dirty, wait for a message (or the next tick while something animates),
/// update, execute the effects; until the model quits (and its flashes ended), a hangup left
/// nothing running, or every sender is gone. `ring` rings the bell.
pub fn drive<B: Backend>(
    terminal: &mut Terminal<B>,
    model: &mut Model,
    inbox: &Receiver<Msg>,
    exec: &Executor,
    ring: &mut dyn FnMut(),
) -> crate::Result<RunSummary> {
    let clock = exec.clock();
    let mut st = LoopState::default();
    let mut frames = 0u64;
    let mut next_tick: Option<Instant> = None;
    let end = loop {
        if model.dirty && !st.headless && !model.headless {
            terminal
                .draw(|f| view(model, f))
                .map_err(|e| draw_error(e.to_string()))?;
            frames += 1;
            model.dirty = false;
        }
        if let Some(end) = st.done() {
            break end;
        }
        // The next tick, only while something animates.
        next_tick =
            tick_interval(model).map(|every| next_tick.unwrap_or_else(|| Instant::now() + every));
        let first = match next_tick {
            Some(at) => match inbox.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    next_tick = None;
                    st.ticks += 1;
                    Msg::Tick {
                        now_ms: clock.now_ms(),
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break EndReason::Closed,
            },
            None => match inbox.recv() {
                Ok(m) => m,
                Err(_) => break EndReason::Closed,
            },
        };
        st.handle(model, exec, ring, first);
        for _ in 1..BATCH {
            match inbox.try_recv() {
                Ok(m) => st.handle(model, exec, ring, m),
                Err(_) => break,
            }
        }
    };
    Ok(RunSummary {
        end,
        jobs: st.jobs,
        outcome: match &model.flow.stage {
            Stage::Finished(o) => Some(o.clone()),
            _ => None,
        },
        frames,
        ticks: st.ticks,
        messages: st.messages,
        station: model.station.as_ref().and_then(|s| s.done.clone()),
    })
}

fn draw_error(e: String) -> Error {
    Error::failure(
        "Cannot draw the console",
        format!("writing to the terminal failed ({e})"),
        "Check the terminal; use --no-tui for plain lines",
    )
}

/// Pump one device source into the channel until `stop`, re-stamping its events.
pub fn spawn_source(
    mut source: Box<dyn DeviceSource>,
    tx: Sender<Msg>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("console-devices".into())
        .spawn(move || {
            let name = source.describe();
            while !stop.load(Ordering::SeqCst) {
                match source.next_event(Duration::from_millis(200)) {
                    Ok(Some(mut event)) => {
                        event.t_ms = clock.now_ms();
                        let initial = event.t_ms < INITIAL_MS;
                        if tx.send(Msg::Device { event, initial }).is_err() {
                            return;
                        }
                    }
                    Ok(None) if source.finished() => {
                        tracing::info!("{name}: no more devices from this source");
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("{name} stopped: {e}");
                        return;
                    }
                }
            }
        })
}

/// Key presses and resizes from the terminal until `stop` (or the terminal is gone).
fn spawn_input(tx: Sender<Msg>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    use crossterm::event::{self, Event, KeyEventKind};
    std::thread::Builder::new()
        .name("console-input".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                // The bound only lets the thread notice `stop`; it wakes nothing else.
                match event::poll(Duration::from_millis(250)) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::debug!("terminal input ended: {e}");
                        return;
                    }
                }
                let msg = match event::read() {
                    Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => Msg::Key(k),
                    Ok(Event::Resize(width, height)) => Msg::Resize { width, height },
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!("terminal input ended: {e}");
                        return;
                    }
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
}

// -------------------------------------------------------------------------- log wake-ups

static LOG_WAKE: Mutex<Option<SyncSender<()>>> = Mutex::new(None);

/// A tracing layer that wakes the console when a log line arrives (the log pane changed).
/// Installed by the console's logging setup; does nothing while no console runs.
pub struct LogWakeLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogWakeLayer {
    fn on_event(
        &self,
        _event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Ok(guard) = LOG_WAKE.try_lock() {
            if let Some(tx) = guard.as_ref() {
                // A wake-up already pending covers this line too.
                let _ = tx.try_send(());
            }
        }
    }
}

/// Log lines become ticks (at most one per [`LOG_WAKE_EVERY`]) while this lives.
struct LogWake;

impl LogWake {
    fn start(tx: Sender<Msg>, clock: Clock) -> LogWake {
        let (wtx, wrx) = mpsc::sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("console-log-wake".into())
            .spawn(move || {
                while wrx.recv().is_ok() {
                    if tx
                        .send(Msg::Tick {
                            now_ms: clock.now_ms(),
                        })
                        .is_err()
                    {
                        return;
                    }
                    std::thread::sleep(LOG_WAKE_EVERY);
                }
            });
        if spawned.is_ok() {
            *LOG_WAKE.lock().unwrap_or_else(|p| p.into_inner()) = Some(wtx);
        }
        LogWake
    }
}

impl Drop for LogWake {
    fn drop(&mut self) {
        // Dropping the sender ends the thread.
        *LOG_WAKE.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Run the console on this terminal until the person quits (or a signal ends it).
pub fn run(config: Config, sources: Sources, opts: ConsoleOptions) -> crate::Result<RunSummary> {
    let clock = Clock::start();
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let Sources {
        devices,
        bench,
        keep_alive,
        station,
    } = sources;
    let mut exec_opts = opts.exec_options(config.log_file.clone(), bench);
    exec_opts.station = station;
    let exec = Executor::new(tx.clone(), clock, exec_opts);
    let mut model = Model::new(config);
    let result = (|| {
        let mut guard = TerminalGuard::enter()?;
        let _signals = SignalWatch::install(tx.clone())?;
        let _log = LogWake::start(tx.clone(), clock);
        if let Ok(area) = guard.terminal().size() {
            model.width = area.width;
            model.height = area.height;
        }
        for d in devices {
            if let Err(e) = spawn_source(d, tx.clone(), clock, stop.clone()) {
                tracing::error!("cannot follow a device source: {e}");
            }
        }
        spawn_input(tx.clone(), stop.clone()).map_err(|e| {
            Error::failure(
                "Cannot read the keyboard",
                "the console needs a thread for terminal input",
                "Close other programs and try again",
            )
            .with_source(e)
        })?;
        let mut bell = || {
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = out.write_all(b"\x07");
            let _ = out.flush();
        };
        let r = drive(guard.terminal(), &mut model, &rx, &exec, &mut bell);
        drop(guard);
        r
    })();
    stop.store(true, Ordering::SeqCst);
    drop(keep_alive);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot};
    use ratatui::backend::TestBackend;

    fn keyboard() -> DeviceSnapshot {
        DeviceSnapshot {
            bus: 1,
            ports: vec![3],
            address: 7,
            vid: 0x046d,
            pid: 0xc31c,
            bcd_device: 0,
            manufacturer: None,
            product: Some("USB Keyboard".into()),
            serial: None,
            speed: None,
            interfaces: vec![],
            origin: None,
        }
    }

    fn executor() -> (Executor, Receiver<Msg>) {
        let (tx, rx) = mpsc::channel();
        (
            Executor::new(tx, Clock::start(), ExecOptions::default()),
            rx,
        )
    }

    fn terminal() -> Terminal<TestBackend> {
        Terminal::new(TestBackend::new(80, 24)).unwrap()
    }

    #[test]
    fn draws_once_per_batch_of_messages_and_never_ticks_while_idle() {
        let (exec, _answers) = executor();
        let (tx, rx) = mpsc::channel();
        let mut model = Model::new(Config::default());
        tx.send(Msg::Resize {
            width: 100,
            height: 30,
        })
        .unwrap();
        tx.send(Msg::Device {
            event: DeviceEvent {
                t_ms: 5,
                change: DeviceChange::Appear { device: keyboard() },
            },
            initial: true,
        })
        .unwrap();
        tx.send(Msg::Terminate).unwrap();
        let mut rang = 0;
        let s = drive(&mut terminal(), &mut model, &rx, &exec, &mut || rang += 1).unwrap();
        assert_eq!(s.end, EndReason::Terminated);
        // The first screen, then one frame for the whole batch.
        assert_eq!(s.frames, 2);
        assert_eq!(s.ticks, 0);
        assert_eq!(s.messages, 3);
        assert!(!model.dirty);
        assert_eq!((model.width, model.height), (100, 30));
        assert_eq!(rang, 0);
    }

    #[test]
    fn a_hangup_stops_drawing_and_ends_when_nothing_runs() {
        let (exec, _answers) = executor();
        let (tx, rx) = mpsc::channel();
        let mut model = Model::new(Config::default());
        tx.send(Msg::Hangup).unwrap();
        let s = drive(&mut terminal(), &mut model, &rx, &exec, &mut || {}).unwrap();
        assert_eq!(s.end, EndReason::HungUp);
        assert_eq!(s.frames, 1, "only the screen before the hangup");
    }

    #[test]
    fn closed_inputs_end_the_loop() {
        let (exec, _answers) = executor();
        let (tx, rx) = mpsc::channel();
        drop(tx);
        let mut model = Model::new(Config::default());
        let s = drive(&mut terminal(), &mut model, &rx, &exec, &mut || {}).unwrap();
        assert_eq!(s.end, EndReason::Closed);
    }

    #[test]
    fn a_hangup_or_a_quit_waits_for_the_running_flash() {
        let (exec, _answers) = executor();
        let mut model = Model::new(Config::default());
        let mut st = LoopState::default();
        st.running.insert(JobId(3));
        st.jobs.push((JobId(3), None));
        st.handle(&mut model, &exec, &mut || {}, Msg::Hangup);
        assert_eq!(st.done(), None, "a flash runs on headless");
        st.apply(
            &mut model,
            &exec,
            &mut || {},
            vec![Effect::Quit { cancel_jobs: false }],
        );
        assert_eq!(st.done(), None);
        st.handle(
            &mut model,
            &exec,
            &mut || {},
            Msg::JobEnded {
                job: JobId(3),
                result: Ok(()),
                t_ms: 9,
            },
        );
        assert_eq!(
            st.done(),
            Some(EndReason::HungUp),
            "the hangup is why it ended"
        );
        assert_eq!(st.jobs, [(JobId(3), Some(true))]);
    }

    #[test]
    fn a_station_run_keeps_the_console_until_it_ended() {
        let (exec, answers) = executor();
        let mut model = Model::new(Config::default());
        let mut st = LoopState::default();
        st.apply(
            &mut model,
            &exec,
            &mut || {},
            vec![
                Effect::StartStation {
                    run: JobId(4),
                    package: "/nonexistent/package".into(),
                    modem_revision: None,
                    devices: Vec::new(),
                },
                Effect::Quit { cancel_jobs: true },
            ],
        );
        assert_eq!(st.done(), None, "the run must end first");
        // Without a station setup the run cannot start: it says so, and ends.
        let ended = answers.recv_timeout(Duration::from_secs(10)).unwrap();
        match &ended {
            Msg::StationEnded {
                run: JobId(4),
                result: Err(p),
                ..
            } => assert!(p.what.contains("several modems"), "{p:?}"),
            other => panic!("{other:?}"),
        }
        st.handle(&mut model, &exec, &mut || {}, ended);
        assert_eq!(st.done(), Some(EndReason::Quit));
        assert_eq!(st.jobs, [(JobId(4), Some(false))]);
    }

    #[test]
    fn the_bell_rings_only_when_wanted_and_someone_can_hear_it() {
        let (exec, _answers) = executor();
        let mut rang = 0;
        let mut model = Model::new(Config::default());
        let mut st = LoopState::default();
        st.apply(&mut model, &exec, &mut || rang += 1, vec![Effect::Bell]);
        assert_eq!(rang, 1);
        model.config.bell = false;
        st.apply(&mut model, &exec, &mut || rang += 1, vec![Effect::Bell]);
        assert_eq!(rang, 1, "--no-bell");
        model.config.bell = true;
        st.headless = true;
        st.apply(&mut model, &exec, &mut || rang += 1, vec![Effect::Bell]);
        assert_eq!(rang, 1, "no terminal after a hangup");
    }

    #[test]
    fn ticks_only_while_something_animates() {
        let mut model = Model::new(Config::default());
        assert_eq!(tick_interval(&model), None);
        model.flow.stage = Stage::Flashing {
            job: JobId(1),
            pins: false,
        };
        assert!(tick_interval(&model).is_some());
        model.flow.stage = Stage::Armed {
            since_ms: 0,
            pins: true,
        };
        assert!(tick_interval(&model).is_some());
        model.flow.stage = Stage::Ready;
        assert_eq!(tick_interval(&model), None);
    }

    #[test]
    fn device_events_are_restamped_on_the_console_clock() {
        let hub = crate::sim::hub::UsbHub::new();
        hub.appear(keyboard());
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        // A clock that started 10 s ago: the event is stamped on it, and is not initial.
        let started = Instant::now()
            .checked_sub(Duration::from_secs(10))
            .expect("the machine has been up for 10 s");
        let clock = Clock::from_instant(started);
        spawn_source(Box::new(hub.source()), tx, clock, stop.clone()).unwrap();
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            Msg::Device { event, initial } => {
                assert!(event.t_ms >= 10_000, "{}", event.t_ms);
                assert!(!initial);
            }
            other => panic!("{other:?}"),
        }
        stop.store(true, Ordering::SeqCst);
        hub.close();
    }
}
