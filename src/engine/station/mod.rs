//! Many modems at once ("station"): one checked package, every selected modem flashed in
//! parallel, a thread each, each with its own log file, optional recording, run record and
//! verdict, and one [`Summary`] row per modem for production records.
//!
//! # Identity, not ports
//!
//! Every bus (host USB, each emulator socket) is followed by its own
//! [`Monitor`](crate::device::monitor::Monitor) on its own thread: one tracker per bus, because
//! two emulators share bus numbers and locations but are never the same device. A device job
//! hears only the monitor's updates for *its* [`DeviceId`] — the tracker links a modem across
//! resets and mode switches by its EDL serial, its USB iSerial and its port history — and before
//! a byte is written it asks the boot ROM for its Sahara serial and refuses a modem that is not
//! the one it was given. So a modem that resets mid-run is found again as itself, and never
//! taken for its neighbour.
//!
//! # One device job ([`job::run_device`])
//!
//! normal mode: identify over AT (IMEI, calibration) → DIAG switch to EDL → wait for it in 9008;
//! then a journaled flash ([`crate::engine::resume::flash_resumable`], the same engine as
//! `qrescue flash PACKAGE`): Sahara identity (the serial must be this modem's) → its journal,
//! kept by its EDL serial ([`StationConfig::journals`]) → upload + the steps the journal does not
//! hold yet → (link dropped: the job waits for the *same* modem to come back in 9008 and the
//! flash continues — NAND from the interrupted partition, eMMC/UFS after the last confirmed
//! chunk) → reset → wait (bounded) for it in normal mode → identify over AT →
//! [`crate::workflow::verdict::judge`]. A finished journal of the same package is not a reason
//! to skip a flash: it is replaced, as `qrescue flash` does.
//!
//! The engine never renders: everything is a [`StationEvent`] (with the device's key on each)
//! for the caller to print, and files in the run folder.

pub mod job;
pub mod select;
pub mod summary;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::device::classify::Classification;
use crate::device::identity::DeviceId;
use crate::device::monitor::{Monitor, Update};
use crate::device::{DeviceSnapshot, DeviceSource};
use crate::engine::events::EngineEvent;
use crate::engine::firehose::FirehoseOptions;
use crate::engine::flash::{FlashPlan, DEFAULT_CHUNK_BYTES};
use crate::engine::journal::JournalStore;
use crate::engine::outcome::{unix_ms_now, utc_text, RunStore};
use crate::engine::resume::ResumeNotice;
use crate::engine::sahara::SaharaConfig;
use crate::transport::open::OpenOptions;
use crate::workflow::verdict::Expectation;
use crate::{Error, ErrorKind};

pub use select::{BusPlace, Selection, Selector};
pub use summary::{Outcome, Summary, SummaryRow};

/// One bus to follow: a device source and what it is.
pub struct Bus {
    /// For people and the summary (`USB (nusb hotplug)`, `emulator at /tmp/x.sock`).
    pub name: String,
    pub source: Box<dyn DeviceSource>,
    /// An emulator's bus (`sim` / `sim:N` selectors).
    pub sim: bool,
}

/// How long each wait of a run may last (every wait is bounded).
#[derive(Debug, Clone)]
pub struct Waits {
    /// At the start, the buses are read until quiet this long …
    pub settle_quiet: Duration,
    /// … or this long in total.
    pub settle_max: Duration,
    /// After the DIAG switch, for the modem in 9008.
    pub to_edl: Duration,
    /// After a dropped link, for the same modem back in 9008.
    pub come_back: Duration,
    /// After the reset, for the modem in normal mode.
    pub normal_return: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            settle_quiet: Duration::from_millis(400),
            settle_max: Duration::from_secs(5),
            to_edl: Duration::from_secs(30),
            come_back: Duration::from_secs(60),
            // Real modules take 20–60 s to boot after a flash (USERS.md §6).
            normal_return: Duration::from_secs(120),
        }
    }
}

/// What every device job of a run shares.
pub struct StationConfig {
    /// The package as people name it (summary rows).
    pub package: String,
    /// The checked plan (the caller ran the package checks; nothing here re-decides them).
    pub plan: FlashPlan,
    /// The programmer image to upload.
    pub programmer: Vec<u8>,
    /// The revision the package installs, when known (judged after the flash).
    pub revision: Option<String>,
    /// What is known of units before the run, by EDL serial (upper-case hex, no `0x`): e.g. the
    /// IMEI from a production record or a backup.
    pub expectations: BTreeMap<String, Expectation>,
    pub sahara: SaharaConfig,
    pub firehose: FirehoseOptions,
    /// Flash attempts per modem in all, counting the first (at least 1): a modem whose link
    /// drops is waited for and its flash continued up to this many times.
    pub attempts: u32,
    pub waits: Waits,
    /// The run folder: one log per modem, recordings, `summary.json`, `summary.csv`.
    pub log_dir: PathBuf,
    /// Record each modem's traffic to its own JSONL recording in the run folder.
    pub record: bool,
    pub open: OpenOptions,
    /// Where each flash leaves its run record for `qrescue status` (None: nowhere).
    pub runs: Option<RunStore>,
    /// Where each modem's flash journal is kept, by its EDL serial (the CLI gives
    /// [`JournalStore::default_location`], as `qrescue flash` does, so a run cut short
    /// continues on the next run). `None`: a folder for this run only — a drop is still
    /// resumed within the run, a later run starts over.
    pub journals: Option<JournalStore>,
    /// Ignore (replace) each modem's journal: every flash starts from its first step.
    pub fresh: bool,
    /// eMMC/UFS program steps go in confirmed chunks of about this many bytes: the most a drop
    /// makes a modem's flash send again. Default [`DEFAULT_CHUNK_BYTES`].
    pub chunk_bytes: u64,
}

impl StationConfig {
    /// A config with the defaults for everything but the package, plan, programmer and folder.
    pub fn new(package: String, plan: FlashPlan, programmer: Vec<u8>, log_dir: PathBuf) -> Self {
        StationConfig {
            package,
            plan,
            programmer,
            revision: None,
            expectations: BTreeMap::new(),
            sahara: SaharaConfig::default(),
            firehose: FirehoseOptions::default(),
            attempts: 3,
            waits: Waits::default(),
            log_dir,
            record: false,
            open: OpenOptions::default(),
            runs: None,
            journals: None,
            fresh: false,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// Where a device job is, for rows and lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Reading its identity over AT (normal mode).
    Identifying,
    /// Asked to switch to download mode; waiting for 9008.
    Switching,
    /// Sahara identity, programmer upload, Firehose steps.
    Flashing,
    /// Its link dropped: waiting for the same modem to come back.
    Waiting,
    /// Reset sent: waiting for it in normal mode.
    Restarting,
    /// Back in normal mode: asking it over AT.
    Checking,
}

impl DeviceState {
    pub fn word(self) -> &'static str {
        match self {
            DeviceState::Identifying => "identifying",
            DeviceState::Switching => "switching",
            DeviceState::Flashing => "flashing",
            DeviceState::Waiting => "waiting",
            DeviceState::Restarting => "restarting",
            DeviceState::Checking => "checking",
        }
    }
}

/// What happened to one modem.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Note {
    /// The run took this modem.
    Selected {
        bus: String,
        location: String,
        usb_id: String,
        mode: String,
        log: PathBuf,
    },
    /// It moved to another stage.
    State { state: DeviceState, detail: String },
    /// An event of its flash engine.
    Engine { engine: EngineEvent },
    /// It is done: its summary row.
    Finished { row: Box<SummaryRow> },
    /// What its resumable flash tells between attempts: its journal (new, resumed or started
    /// over), an attempt starting, a wait for it after a drop, another unit left alone.
    Resume { notice: ResumeNotice },
}

/// One event of a station run, tagged with the modem's key.
#[derive(Debug, Clone, Serialize)]
pub struct StationEvent {
    /// Milliseconds since the run started.
    pub t_ms: u64,
    /// The modem's key (as in the summary rows).
    pub device: String,
    #[serde(flatten)]
    pub note: Note,
}

/// A modem the run took.
#[derive(Debug, Clone)]
pub struct Selected {
    pub key: String,
    pub bus: usize,
    pub bus_name: String,
    pub id: DeviceId,
    pub snapshot: DeviceSnapshot,
    pub class: Classification,
}

/// The key of a modem: `SN:<EDL serial>`, else `USB:<iSerial>`, else its bus and tracker id.
pub fn device_key(
    snap: &DeviceSnapshot,
    class: &Classification,
    bus: usize,
    id: DeviceId,
) -> String {
    if let Some(sn) = &class.edl_serial {
        return format!("SN:{}", sn.to_ascii_uppercase());
    }
    match snap
        .serial
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(s) => format!("USB:{s}"),
        None => format!("BUS{}#{}", bus + 1, id.0),
    }
}

/// A key fit for a file name: letters, digits, `-`, `_`, `.` (others become `_`).
pub fn file_stem(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.trim_start_matches('.') {
        "" => "device".to_string(),
        t => t.to_string(),
    }
}

/// Read every bus until it has been quiet for a while (bounded), so the monitors know what is
/// present before anything is selected.
fn settle(buses: &mut [Bus], monitors: &mut [Monitor], waits: &Waits) -> crate::Result<()> {
    for (bus, monitor) in buses.iter_mut().zip(monitors.iter_mut()) {
        let start = Instant::now();
        loop {
            let left = waits.settle_max.saturating_sub(start.elapsed());
            if left.is_zero() || bus.source.finished() {
                break;
            }
            match bus.source.next_event(waits.settle_quiet.min(left))? {
                Some(e) => {
                    monitor.observe_initial(&e);
                }
                None => break,
            }
        }
    }
    Ok(())
}

/// The modems `selection` takes, with an error naming what is present when a selector (or
/// `--all`) finds nothing.
fn choose(
    buses: &[Bus],
    monitors: &[Monitor],
    selection: &Selection,
) -> crate::Result<Vec<Selected>> {
    let mut chosen = Vec::new();
    let mut present = Vec::new();
    let mut sim_index = 0;
    let mut matched: Vec<bool> = match selection {
        Selection::All => Vec::new(),
        Selection::Only(s) => vec![false; s.len()],
    };
    for (i, (bus, monitor)) in buses.iter().zip(monitors).enumerate() {
        if bus.sim {
            sim_index += 1;
        }
        let place = BusPlace {
            sim_index: bus.sim.then_some(sim_index),
        };
        for v in monitor.devices(monitor.last_t_ms()) {
            if !v.present || !v.class.mode.is_relevant() {
                continue;
            }
            present.push(format!(
                "{} {} {} on {}",
                v.location,
                v.device.id(),
                v.class.tag(),
                bus.name
            ));
            if let Selection::Only(sels) = selection {
                for (k, s) in sels.iter().enumerate() {
                    if s.matches(&v.device, &v.class, place) {
                        matched[k] = true;
                    }
                }
            }
            if selection.takes(&v.device, &v.class, place) {
                chosen.push(Selected {
                    key: device_key(&v.device, &v.class, i, v.id),
                    bus: i,
                    bus_name: bus.name.clone(),
                    id: v.id,
                    snapshot: v.device.clone(),
                    class: v.class.clone(),
                });
            }
        }
    }
    let seen = if present.is_empty() {
        "no modem at all".to_string()
    } else {
        present.join("; ")
    };
    if let Selection::Only(sels) = selection {
        let missing: Vec<String> = sels
            .iter()
            .zip(&matched)
            .filter(|(_, m)| !**m)
            .map(|(s, _)| s.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(Error::new(
                ErrorKind::NoDevice,
                format!("No modem matches {}", missing.join(", ")),
                format!("present: {seen}"),
                "Check the selectors against `qrescue list` (usb:LOCATION, usb:serial=SN, sim:N), or use --all",
            ));
        }
    }
    if chosen.is_empty() {
        return Err(Error::new(
            ErrorKind::NoDevice,
            "No modem to flash",
            format!("present: {seen}"),
            "Connect the modems (in download mode 9008, or in normal mode with their DM and AT ports) and run again",
        ));
    }
    // Keys name rows and files: two modems never share one.
    let mut count: HashMap<String, u32> = HashMap::new();
    for s in &mut chosen {
        let n = count.entry(s.key.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            s.key = format!("{}~{}", s.key, n);
        }
    }
    Ok(chosen)
}

/// Follow one bus until `stop`, sending each update of a selected modem to its job.
fn follow_bus(
    bus: &mut Bus,
    monitor: &mut Monitor,
    routes: HashMap<DeviceId, Sender<Update>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        match bus.source.next_event(Duration::from_millis(100)) {
            Ok(Some(e)) => {
                let u = monitor.observe(&e);
                if let Some(tx) = u.id.and_then(|id| routes.get(&id)) {
                    let _ = tx.send(u);
                }
            }
            Ok(None) if bus.source.finished() => break,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(bus = %bus.name, "stopped following the bus: {}: {}", e.what, e.why);
                break;
            }
        }
    }
}

/// Flash every modem `selection` takes on `buses` in parallel, as `cfg` says. `emit` hears
/// every [`StationEvent`] (on the caller's thread, in order per modem); `cancel` stops every
/// job at its next safe point. Returns the summary (also written to `summary.json` and
/// `summary.csv` in the run folder); an error only when nothing could start (no modem, a
/// selector that names none, a run folder that cannot be made).
pub fn run(
    mut buses: Vec<Bus>,
    selection: &Selection,
    cfg: &StationConfig,
    emit: &mut dyn FnMut(&StationEvent),
    cancel: &AtomicBool,
) -> crate::Result<Summary> {
    let started_unix = unix_ms_now();
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.log_dir).map_err(|e| {
        Error::failure(
            format!("Cannot create the run folder {}", cfg.log_dir.display()),
            "each modem's log and the run's summary go there",
            "Choose a folder you can write to",
        )
        .with_source(e)
    })?;
    let mut monitors: Vec<Monitor> = buses.iter().map(|_| Monitor::default()).collect();
    settle(&mut buses, &mut monitors, &cfg.waits)?;
    let chosen = choose(&buses, &monitors, selection)?;
    tracing::info!(devices = chosen.len(), "station run starts");
    // Without a store, this run's journals live (and die) with a temporary folder.
    let temporary;
    let journals = match &cfg.journals {
        Some(s) => s.clone(),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("qrescue-journals-")
                .tempdir()
                .map_err(|e| {
                    Error::failure(
                        "Cannot create a temporary folder for the flash journals",
                        "each modem's journal lets its flash continue after a drop",
                        "Check the temporary folder (TMPDIR), or give the station a journal store",
                    )
                    .with_source(e)
                })?;
            JournalStore::at(temporary.path())
        }
    };

    let (tx, rx) = mpsc::channel::<StationEvent>();
    let mut routes: Vec<HashMap<DeviceId, Sender<Update>>> =
        buses.iter().map(|_| HashMap::new()).collect();
    let mut jobs = Vec::new();
    for s in chosen {
        let (utx, urx) = mpsc::channel();
        routes[s.bus].insert(s.id, utx);
        jobs.push((s, urx));
    }
    let stop = AtomicBool::new(false);
    let mut rows: Vec<SummaryRow> = Vec::new();
    let ctx = job::JobContext {
        cfg,
        journals: &journals,
        started,
        cancel,
    };
    std::thread::scope(|scope| {
        for ((bus, monitor), routes) in buses.iter_mut().zip(monitors.iter_mut()).zip(routes) {
            let stop = &stop;
            scope.spawn(move || follow_bus(bus, monitor, routes, stop));
        }
        let mut handles = Vec::new();
        for (s, urx) in jobs {
            let tx = tx.clone();
            let ctx = &ctx;
            let name = format!("station {}", s.key);
            let h = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || job::run_device(ctx, s, urx, tx));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => tracing::error!("cannot start a device thread: {e}"),
            }
        }
        drop(tx);
        for ev in rx {
            emit(&ev);
            if let Note::Finished { row } = &ev.note {
                rows.push((**row).clone());
            }
        }
        for h in handles {
            let _ = h.join();
        }
        stop.store(true, Ordering::SeqCst);
    });
    rows.sort_by(|a, b| a.device.cmp(&b.device));
    let summary = Summary::new(
        cfg.package.clone(),
        utc_text(started_unix),
        started.elapsed().as_millis() as u64,
        rows,
    );
    for name in ["summary.json", "summary.csv"] {
        if let Err(e) = summary.write(&cfg.log_dir.join(name)) {
            tracing::warn!("{}: {}", e.what, e.why);
        }
    }
    Ok(summary)
}
