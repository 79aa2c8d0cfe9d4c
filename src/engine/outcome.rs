//! The run-outcome store: every flash leaves a small JSON record in
//! `$XDG_DATA_HOME/qrescue/runs/<time>-<id>.json` (or `~/.local/share/qrescue/runs`, or
//! `$QRESCUE_DATA_DIR/runs`), written when it starts, after each finished step, and when it ends.
//! `qrescue status` reads them back, so the outcome of a flash that ran on after its SSH
//! session dropped is never lost.
//!
//! - Writes are atomic (a temp file in the same folder, fsync, rename, fsync of the folder): a
//!   reader sees the old record or the new one, never half of one.
//! - A record that still says `running` whose process is gone (or whose PID now belongs to
//!   another process) is reported as `interrupted`.
//! - Records are files on disk anyone could edit: reading them is bounded in size, skips what
//!   does not parse, and never panics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::events::EngineEvent;
use crate::{Error, ErrorKind};

/// Environment variable naming qrescue's data folder (tests, portable installs).
pub const DATA_DIR_ENV: &str = "QRESCUE_DATA_DIR";
/// Largest record read back.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;
/// Record format version.
pub const RECORD_VERSION: u32 = 1;

/// qrescue's data folder: `$QRESCUE_DATA_DIR`, else `$XDG_DATA_HOME/qrescue`, else
/// `~/.local/share/qrescue`. `None` when none of them is set.
pub fn data_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var(DATA_DIR_ENV) {
        return Some(d);
    }
    if let Some(x) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Some(x.join("qrescue"));
    }
    var("HOME").map(|h| h.join(".local/share/qrescue"))
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    // Shift to a calendar whose years start on 1 March, so the leap day ends a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn parts(unix_ms: u64) -> (i64, u32, u32, u64, u64, u64) {
    let secs = unix_ms / 1000;
    let (y, m, d) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

/// `2024-05-01T12:34:56Z`.
pub fn utc_text(unix_ms: u64) -> String {
    let (y, mo, d, h, mi, s) = parts(unix_ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `20240501T123456Z`, for file names (sorts by time).
pub fn utc_compact(unix_ms: u64) -> String {
    let (y, mo, d, h, mi, s) = parts(unix_ms);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Every step ran (the write is done; whether the modem boots is in `verification`).
    Finished,
    Failed,
    /// Stopped on request at a safe point.
    Cancelled,
    /// The process ended without recording an end (killed, crashed, power lost). Only ever
    /// derived when reading.
    Interrupted,
}

impl RunState {
    pub fn word(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
        }
    }
}

/// The device a run was for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDevice {
    /// The console's device id (`#1`), when it came from the console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The EDL serial or the Sahara serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The port or transport used (`serial /dev/ttyUSB0`, `USB 3-1.2 05c6:9008`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// A problem in people's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProblem {
    pub what: String,
    pub why: String,
    pub next: String,
}

/// One run's record, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub version: u32,
    /// `<time>-<pid>-<n>`: unique per run, also the file name's stem.
    pub id: String,
    /// What ran it: `console` or `flash`.
    pub tool: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), to tell a reused PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_start: Option<u64>,
    pub state: RunState,
    pub started_unix_ms: u64,
    pub started: String,
    pub updated_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    #[serde(default)]
    pub device: RunDevice,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_revision: Option<String>,
    #[serde(default)]
    pub steps_total: usize,
    #[serde(default)]
    pub steps_done: usize,
    #[serde(default)]
    pub bytes_total: u64,
    #[serde(default)]
    pub bytes_done: u64,
    /// One line for people: what the run came to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<RunProblem>,
    /// What the check after the flash found (the modem came back, or not), when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
}

/// What a run is about, given when it starts.
#[derive(Debug, Clone, Default)]
pub struct RunStart {
    pub tool: String,
    pub device: RunDevice,
    pub package: Option<String>,
    pub package_revision: Option<String>,
    pub log_file: Option<PathBuf>,
}

/// The folder of run records.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
}

fn store_error(what: String, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Failure,
        what,
        "qrescue keeps the outcome of every flash there, so it can be read after the session ends",
        format!("Check the folder's permissions or set {DATA_DIR_ENV} to a writable folder"),
    )
    .with_source(e)
}

impl RunStore {
    /// The store in `dir` (the `runs` folder itself).
    pub fn at(dir: impl Into<PathBuf>) -> RunStore {
        RunStore { dir: dir.into() }
    }

    /// The store in [`data_dir`]`/runs`.
    pub fn default_location() -> crate::Result<RunStore> {
        data_dir()
            .map(|d| RunStore::at(d.join("runs")))
            .ok_or_else(|| {
                Error::usage(
                    "No folder for qrescue's records: HOME, XDG_DATA_HOME and QRESCUE_DATA_DIR are all unset",
                    format!("Set {DATA_DIR_ENV} to a writable folder"),
                )
            })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Record that a run starts now.
    pub fn begin(&self, start: RunStart) -> crate::Result<RunHandle> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| store_error(format!("Cannot create {}", self.dir.display()), e))?;
        let now = unix_ms_now();
        let pid = std::process::id();
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("{}-{pid}-{n}", utc_compact(now));
        let record = RunRecord {
            version: RECORD_VERSION,
            id: id.clone(),
            tool: start.tool,
            pid,
            proc_start: proc_start_time(pid),
            state: RunState::Running,
            started_unix_ms: now,
            started: utc_text(now),
            updated_unix_ms: now,
            ended_unix_ms: None,
            ended: None,
            device: start.device,
            package: start.package,
            package_revision: start.package_revision,
            steps_total: 0,
            steps_done: 0,
            bytes_total: 0,
            bytes_done: 0,
            verdict: None,
            problem: None,
            verification: None,
            log_file: start.log_file,
        };
        let h = RunHandle {
            path: self.dir.join(format!("{id}.json")),
            record,
        };
        h.save()?;
        Ok(h)
    }

    /// The most recent `limit` records, newest first, with `running` records of processes that
    /// are gone turned into `interrupted`. Files that do not parse are skipped (and logged).
    pub fn list(&self, limit: usize) -> crate::Result<Vec<RunRecord>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(store_error(
                    format!("Cannot read {}", self.dir.display()),
                    e,
                ))
            }
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        // Names start with the UTC time: newest first.
        names.sort();
        names.reverse();
        let mut out = Vec::new();
        for p in names {
            if out.len() >= limit {
                break;
            }
            match read_record(&p) {
                Ok(r) => out.push(resolve(r)),
                Err(why) => tracing::info!("skipping {}: {why}", p.display()),
            }
        }
        Ok(out)
    }
}

/// Read one record file (bounded in size).
fn read_record(path: &Path) -> Result<RunRecord, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err("larger than a run record can be".into());
    }
    parse_record(&bytes)
}

/// Parse a record (any bytes: never panics).
pub fn parse_record(bytes: &[u8]) -> Result<RunRecord, String> {
    serde_json::from_slice::<RunRecord>(bytes).map_err(|e| e.to_string())
}

/// A `running` record whose process is gone is `interrupted`.
fn resolve(mut r: RunRecord) -> RunRecord {
    if r.state == RunState::Running && !process_alive(r.pid, r.proc_start) {
        r.state = RunState::Interrupted;
        if r.verdict.is_none() {
            r.verdict = Some(format!(
                "interrupted: the process ended without recording an end after {} of {} steps",
                r.steps_done, r.steps_total
            ));
        }
    }
    r
}

/// Whether process `pid` is alive and (when `start` is known) still the same process.
pub fn process_alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return false,
    }
    match (start, proc_start_time(pid)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn proc_start_time(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_start(&text)
}

/// Field 22 of a `/proc/<pid>/stat` line; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_stat_start(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A run being recorded.
#[derive(Debug)]
pub struct RunHandle {
    path: PathBuf,
    record: RunRecord,
}

impl RunHandle {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Write the record atomically.
    fn save(&self) -> crate::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let json = serde_json::to_vec_pretty(&self.record).map_err(|e| {
            Error::failure(
                "Cannot encode a run record",
                e.to_string(),
                "This is a bug in qrescue; please report it",
            )
        })?;
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(".run-")
                .suffix(".tmp")
                .tempfile_in(dir)?;
            tmp.write_all(&json)?;
            tmp.write_all(b"\n")?;
            tmp.as_file().sync_all()?;
            tmp.persist(&self.path).map_err(|e| e.error)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| store_error(format!("Cannot write {}", self.path.display()), e))
    }

    /// Save, logging instead of failing: a record that cannot be written must not stop a
    /// flash that is running.
    fn save_or_log(&self) {
        if let Err(e) = self.save() {
            tracing::warn!("{e}");
        }
    }

    /// Follow the engine's events: the plan's size, each finished step (saved), the end.
    pub fn on_event(&mut self, e: &EngineEvent) {
        match e {
            EngineEvent::Plan { steps, total_bytes } => {
                self.record.steps_total = steps.len();
                self.record.bytes_total = *total_bytes;
                self.touch();
            }
            EngineEvent::StepFinished { bytes, .. } => {
                self.record.steps_done += 1;
                self.record.bytes_done += bytes;
                self.touch();
            }
            _ => {}
        }
    }

    /// Note the transport used.
    pub fn set_port(&mut self, port: String) {
        self.record.device.port = Some(port);
        self.touch();
    }

    /// Note the device's serial once known.
    pub fn set_serial(&mut self, serial: String) {
        self.record.device.serial = Some(serial);
        self.touch();
    }

    fn touch(&mut self) {
        self.record.updated_unix_ms = unix_ms_now();
        self.save_or_log();
    }

    /// Record the end: `Ok(bytes)` when every step ran, or the error that stopped it.
    pub fn finish(&mut self, result: Result<u64, &Error>) {
        let now = unix_ms_now();
        self.record.ended_unix_ms = Some(now);
        self.record.ended = Some(utc_text(now));
        match result {
            Ok(bytes) => {
                self.record.state = RunState::Finished;
                self.record.bytes_done = self.record.bytes_done.max(bytes);
                self.record.verdict = Some(format!(
                    "written: all {} steps ran (whether the modem boots is checked after)",
                    self.record.steps_total
                ));
            }
            Err(e) => {
                self.record.state = if e.kind == ErrorKind::Interrupted {
                    RunState::Cancelled
                } else {
                    RunState::Failed
                };
                self.record.verdict = Some(format!(
                    "{} after {} of {} steps: {}",
                    self.record.state.word(),
                    self.record.steps_done,
                    self.record.steps_total,
                    e.what
                ));
                self.record.problem = Some(RunProblem {
                    what: e.what.clone(),
                    why: e.why.clone(),
                    next: e.next.clone(),
                });
            }
        }
        self.touch();
    }

    /// Record what the check after the flash found.
    pub fn verified(&mut self, text: String) {
        self.record.verification = Some(text);
        self.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utc_text_reads_like_rfc3339() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_text(1_714_566_896_789), "2024-05-01T12:34:56Z");
        assert_eq!(utc_compact(1_714_566_896_789), "20240501T123456Z");
        assert_eq!(utc_text(4_102_444_799_000), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn stat_start_is_counted_after_the_command_name() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2";
        assert_eq!(parse_stat_start(line), Some(987_654));
        assert_eq!(parse_stat_start("garbage"), None);
        assert!(proc_start_time(std::process::id()).is_some());
    }

    fn start() -> RunStart {
        RunStart {
            tool: "console".into(),
            device: RunDevice {
                id: Some("#1".into()),
                usb_id: Some("05c6:9008".into()),
                ..RunDevice::default()
            },
            package: Some("/tmp/pkg".into()),
            ..RunStart::default()
        }
    }

    #[test]
    fn a_run_is_recorded_at_start_per_step_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::at(dir.path().join("runs"));
        let mut h = store.begin(start()).unwrap();
        let listed = store.list(10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, RunState::Running, "this process is alive");
        h.on_event(&EngineEvent::Plan {
            steps: vec![],
            total_bytes: 100,
        });
        h.on_event(&EngineEvent::StepFinished {
            index: 0,
            bytes: 60,
            elapsed_ms: 1,
            bytes_per_s: 1.0,
        });
        assert_eq!(store.list(10).unwrap()[0].bytes_done, 60);
        h.finish(Ok(60));
        let r = &store.list(10).unwrap()[0];
        assert_eq!(r.state, RunState::Finished);
        assert!(r.ended.is_some());
        assert_eq!(r, &parse_record(&std::fs::read(h.path()).unwrap()).unwrap());
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(store.dir()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_running_record_of_a_gone_process_is_interrupted_and_garbage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::at(dir.path());
        let mut h = store.begin(start()).unwrap();
        let e = Error::new(ErrorKind::Interrupted, "stopped", "asked", "again");
        h.finish(Err(&e));
        assert_eq!(store.list(5).unwrap()[0].state, RunState::Cancelled);
        // A record from a process that is gone: a PID that cannot exist.
        let mut r = h.record().clone();
        r.id = "19990101T000000Z-1-1".into();
        r.state = RunState::Running;
        r.pid = i32::MAX as u32;
        r.ended = None;
        r.ended_unix_ms = None;
        r.verdict = None;
        r.problem = None;
        std::fs::write(
            dir.path().join("19990101T000000Z-1-1.json"),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        // The same PID as ours but another start time: a reused PID.
        r.id = "19990101T000001Z-1-2".into();
        r.pid = std::process::id();
        r.proc_start = Some(u64::MAX);
        std::fs::write(
            dir.path().join("19990101T000001Z-1-2.json"),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("20000101T000000Z-x.json"), b"{not json").unwrap();
        let list = store.list(10).unwrap();
        let states: Vec<_> = list.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                RunState::Cancelled,
                RunState::Interrupted,
                RunState::Interrupted
            ]
        );
        assert!(list[1]
            .verdict
            .as_deref()
            .unwrap()
            .starts_with("interrupted"));
        assert_eq!(store.list(1).unwrap().len(), 1);
    }

    #[test]
    fn an_unset_folder_is_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RunStore::at(dir.path().join("none"))
            .list(10)
            .unwrap()
            .is_empty());
    }

    proptest! {
        #[test]
        fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_record(&bytes);
        }

        #[test]
        fn utc_dates_are_well_formed(ms in 0u64..8_000_000_000_000) {
            let t = utc_text(ms);
            prop_assert_eq!(t.len(), 20);
            let month: u32 = t[5..7].parse().unwrap();
            let day: u32 = t[8..10].parse().unwrap();
            prop_assert!((1..=12).contains(&month) && (1..=31).contains(&day));
        }
    }
}
