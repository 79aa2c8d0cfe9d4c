//! The flash journal: a durable, per-device record of a plan and of every step that finished,
//! so a flash interrupted by a dropped link, a reset or a boot loop continues where it stopped
//! instead of starting again.
//!
//! - **Keyed by the unit** ([`UnitKey`]): the EDL serial the boot ROM tells over Sahara (it
//!   survives resets and re-enumeration on another port), or the HW ID + OEM PK hash when the
//!   serial is missing. One journal per unit: `<data dir>/journals/<key>.jsonl`.
//! - **What it holds** ([`Record`]): first the plan ([`PlanRecord`]: the package's identity —
//!   the sha256 of every file the plan reads and of its steps — and the step count), then one
//!   record per event worth surviving: an attempt began, a step was started, a chunk of the
//!   running step was confirmed by the programmer (eMMC/UFS), a step finished (with the sha256
//!   of the bytes it wrote), the plan finished.
//! - **Durable, append-only JSONL**: one JSON object per line, each appended with one write and
//!   `fsync`'d before the engine goes on. A new journal is written to a temporary file and
//!   renamed into place. A torn last line (power lost mid-write) is ignored when reading, and
//!   cut off before the next append; a damaged line stops reading there. Reading never panics
//!   and is bounded in size ([`MAX_JOURNAL_BYTES`]).
//! - **A journal that does not match** the package (other files, other steps), or that belongs
//!   to another unit, is never used to skip anything: the flash starts over
//!   ([`Opening::Restarted`], the engine warns). A finished journal starts over silently.
//!
//! How a caller resumes: see [`crate::engine::resume`] (the driver that waits for the unit to
//! come back and runs attempts) and [`crate::engine::flash::run_journaled`] (one attempt).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::firehose::StorageKind;
use crate::engine::flash::{FlashPlan, FlashStep};
use crate::engine::outcome::{data_dir, unix_ms_now, utc_text, DATA_DIR_ENV};
use crate::protocol::sahara::DeviceInfo;
use crate::{Error, ErrorKind};

/// Journal format version.
pub const JOURNAL_VERSION: u32 = 1;
/// Largest journal read back (a plan of 65 536 steps with chunk records stays far below).
pub const MAX_JOURNAL_BYTES: u64 = 32 << 20;
/// Longest line accepted (a plan record with a few thousand files).
const MAX_LINE: usize = 4 << 20;

/// The identity of a unit that survives resets: `sn-0x1234abcd` (the Sahara serial) or
/// `hw-<hwid>-<first 16 hex of the PK hash>`. Only `[0-9a-z-]`, so it is a safe file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnitKey(String);

impl UnitKey {
    /// The key of the unit the boot ROM described: its serial, else HW ID + PK hash.
    pub fn from_device_info(info: &DeviceInfo) -> Option<UnitKey> {
        if let Some(sn) = info.serial {
            return Some(UnitKey(format!("sn-0x{sn:08x}")));
        }
        let hw = info.hw_id.as_ref().map(|h| h.hex.to_ascii_lowercase())?;
        let pk = info.pk_hash.as_deref()?.to_ascii_lowercase();
        let pk: String = pk
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(16)
            .collect();
        UnitKey::parse(&format!("hw-{hw}-{pk}"))
    }

    /// A key from its text (as stored); `None` unless it is `sn-…` or `hw-…` of `[0-9a-z-]`.
    pub fn parse(s: &str) -> Option<UnitKey> {
        let ok = (s.starts_with("sn-") || s.starts_with("hw-"))
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-');
        ok.then(|| UnitKey(s.to_string()))
    }

    /// The key of a unit known only by its Sahara serial.
    pub fn from_serial(serial: u32) -> UnitKey {
        UnitKey(format!("sn-0x{serial:08x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Sahara serial of a `sn-…` key.
    pub fn serial(&self) -> Option<u32> {
        let hex = self.0.strip_prefix("sn-0x")?;
        (hex.len() == 8)
            .then(|| u32::from_str_radix(hex, 16).ok())
            .flatten()
    }
}

impl std::fmt::Display for UnitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What makes two plans the same flash: the sha256 of every package file the plan reads and of
/// its steps (commands, ranges, sources), in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageIdentity {
    /// Package-relative path → hex sha256.
    pub files: BTreeMap<String, String>,
    /// Hex sha256 over the steps.
    pub steps_sha256: String,
    pub steps: usize,
}

impl PackageIdentity {
    /// Hash every file `plan` reads (streamed) and its steps.
    pub fn of_plan(plan: &FlashPlan) -> crate::Result<PackageIdentity> {
        let mut files = BTreeMap::new();
        for step in &plan.steps {
            let FlashStep::Program { source, .. } = step else {
                continue;
            };
            for path in source.files() {
                if files.contains_key(path) {
                    continue;
                }
                let mut h = Sha256::new();
                let mut r = plan.files().open(path, 0)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = match r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(Error::failure(
                                format!("Cannot read {path} to identify the package"),
                                e.to_string(),
                                "Check the package files",
                            ))
                        }
                    };
                    h.update(&buf[..n]);
                }
                files.insert(path.to_string(), hex::encode(h.finalize()));
            }
        }
        Ok(PackageIdentity {
            files,
            steps_sha256: steps_sha256(plan),
            steps: plan.steps.len(),
        })
    }

    /// Why `self` (the journal's) and `now` (the package's) are not the same flash, if not.
    pub fn differs(&self, now: &PackageIdentity) -> Option<String> {
        let changed: Vec<&str> = self
            .files
            .iter()
            .filter(|(p, h)| now.files.get(*p).is_some_and(|n| n != *h))
            .map(|(p, _)| p.as_str())
            .collect();
        if !changed.is_empty() {
            return Some(format!("changed files: {}", changed.join(", ")));
        }
        if self.files.keys().ne(now.files.keys()) {
            return Some("the plan reads other files".into());
        }
        if self.steps != now.steps || self.steps_sha256 != now.steps_sha256 {
            return Some(format!(
                "other steps ({} then, {} now)",
                self.steps, now.steps
            ));
        }
        None
    }
}

/// sha256 over every step as the engine would send it.
fn steps_sha256(plan: &FlashPlan) -> String {
    let mut h = Sha256::new();
    h.update(plan.storage.memory_name().as_bytes());
    for s in &plan.steps {
        h.update(format!("{s:?}\n").as_bytes());
    }
    hex::encode(h.finalize())
}

/// The first record of a journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub version: u32,
    pub unit: UnitKey,
    /// The package as people know it (folder or zip path).
    pub package: String,
    pub storage: StorageKind,
    pub identity: PackageIdentity,
    /// Step names, in plan order (for `qrescue status` and events).
    pub step_names: Vec<String>,
    pub bytes_total: u64,
    pub created_unix_ms: u64,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case")]
pub enum Record {
    Plan(PlanRecord),
    /// An attempt (a connection to the unit) began.
    Attempt {
        n: u32,
        unix_ms: u64,
    },
    /// Plan step `step` is about to be sent (NAND: from now on its pages are not trusted).
    Started {
        step: usize,
        unix_ms: u64,
    },
    /// The programmer confirmed the first `sectors_done` sectors of program step `step`
    /// (eMMC/UFS: a program split into chunks, each acknowledged).
    Chunk {
        step: usize,
        sectors_done: u64,
        unix_ms: u64,
    },
    /// Plan step `step` finished; for a program, the sha256 of the image bytes it wrote.
    StepDone {
        step: usize,
        bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        unix_ms: u64,
    },
    /// Every step ran.
    Finished {
        unix_ms: u64,
    },
}

/// A finished step as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoneStep {
    pub bytes: u64,
    pub sha256: Option<String>,
    pub unix_ms: u64,
}

/// What a journal says, read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalState {
    pub plan: PlanRecord,
    pub done: BTreeMap<usize, DoneStep>,
    /// Steps that were started (done or not).
    pub started: BTreeSet<usize>,
    /// The last confirmed chunk (sectors) of steps not done.
    pub chunks: BTreeMap<usize, u64>,
    pub attempts: u32,
    pub finished: bool,
    pub updated_unix_ms: u64,
    /// Bytes of the file that hold whole, readable records (what an append continues after).
    #[serde(skip)]
    pub valid_len: u64,
    /// A torn or damaged tail was ignored.
    pub ignored_tail: bool,
}

impl JournalState {
    fn new(plan: PlanRecord) -> JournalState {
        JournalState {
            updated_unix_ms: plan.created_unix_ms,
            plan,
            done: BTreeMap::new(),
            started: BTreeSet::new(),
            chunks: BTreeMap::new(),
            attempts: 0,
            finished: false,
            valid_len: 0,
            ignored_tail: false,
        }
    }

    fn steps_total(&self) -> usize {
        self.plan.step_names.len()
    }

    /// Take one record (after the plan). Records that name a step outside the plan are ignored.
    fn apply(&mut self, r: &Record) {
        let in_plan = |s: usize| s < self.steps_total();
        match r {
            Record::Plan(_) => {}
            Record::Attempt { n, unix_ms } => {
                self.attempts = self.attempts.max(*n);
                self.updated_unix_ms = *unix_ms;
            }
            Record::Started { step, unix_ms } if in_plan(*step) => {
                self.started.insert(*step);
                self.updated_unix_ms = *unix_ms;
            }
            Record::Chunk {
                step,
                sectors_done,
                unix_ms,
            } if in_plan(*step) && !self.done.contains_key(step) => {
                self.chunks.insert(*step, *sectors_done);
                self.updated_unix_ms = *unix_ms;
            }
            Record::StepDone {
                step,
                bytes,
                sha256,
                unix_ms,
            } if in_plan(*step) => {
                self.chunks.remove(step);
                self.started.insert(*step);
                self.done.insert(
                    *step,
                    DoneStep {
                        bytes: *bytes,
                        sha256: sha256.clone(),
                        unix_ms: *unix_ms,
                    },
                );
                self.updated_unix_ms = *unix_ms;
            }
            Record::Finished { unix_ms } => {
                self.finished = true;
                self.updated_unix_ms = *unix_ms;
            }
            _ => {}
        }
    }

    /// Steps done out of the plan's steps.
    pub fn progress(&self) -> (usize, usize) {
        (self.done.len(), self.steps_total())
    }

    /// A short line for `qrescue status`.
    pub fn summary(&self) -> JournalSummary {
        JournalSummary {
            unit: self.plan.unit.clone(),
            package: self.plan.package.clone(),
            storage: self.plan.storage,
            steps_done: self.done.len(),
            steps_total: self.steps_total(),
            bytes_done: self.done.values().map(|d| d.bytes).sum(),
            bytes_total: self.plan.bytes_total,
            attempts: self.attempts,
            finished: self.finished,
            updated_unix_ms: self.updated_unix_ms,
            updated: utc_text(self.updated_unix_ms),
            ignored_tail: self.ignored_tail,
        }
    }
}

/// Why a journal could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No whole first line.
    Empty,
    /// The first line is not a plan record of this format.
    NoPlan(String),
    TooLarge,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Empty => f.write_str("the journal holds no whole record"),
            ParseError::NoPlan(why) => write!(f, "the journal does not start with a plan: {why}"),
            ParseError::TooLarge => write!(
                f,
                "the journal is larger than {MAX_JOURNAL_BYTES} bytes, more than a flash writes"
            ),
        }
    }
}

/// Read a journal (any bytes; never panics). Only lines ending in `\n` count: a torn last line
/// is ignored; the first line that does not parse ends the reading (what follows a damaged
/// record is not trusted).
pub fn parse(bytes: &[u8]) -> Result<JournalState, ParseError> {
    if bytes.len() as u64 > MAX_JOURNAL_BYTES {
        return Err(ParseError::TooLarge);
    }
    let mut pos = 0usize;
    let mut state: Option<JournalState> = None;
    let mut ignored_tail = false;
    while pos < bytes.len() {
        let Some(nl) = bytes[pos..].iter().position(|b| *b == b'\n') else {
            ignored_tail = true;
            break;
        };
        let line = &bytes[pos..pos + nl];
        let next = pos + nl + 1;
        let record = if line.len() > MAX_LINE {
            None
        } else {
            serde_json::from_slice::<Record>(line).ok()
        };
        match (&mut state, record) {
            (None, Some(Record::Plan(p))) if p.version == JOURNAL_VERSION => {
                state = Some(JournalState::new(p));
            }
            (None, Some(Record::Plan(p))) => {
                return Err(ParseError::NoPlan(format!(
                    "format version {} (this qrescue writes {JOURNAL_VERSION})",
                    p.version
                )))
            }
            (None, Some(_)) => return Err(ParseError::NoPlan("another record comes first".into())),
            (None, None) => return Err(ParseError::NoPlan("the first line is unreadable".into())),
            (Some(_), Some(Record::Plan(_))) | (Some(_), None) => {
                ignored_tail = true;
                break;
            }
            (Some(s), Some(r)) => s.apply(&r),
        }
        if let Some(s) = &mut state {
            s.valid_len = next as u64;
        }
        pos = next;
    }
    let mut s = state.ok_or(ParseError::Empty)?;
    s.ignored_tail = ignored_tail;
    Ok(s)
}

/// One journal for `qrescue status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalSummary {
    pub unit: UnitKey,
    pub package: String,
    pub storage: StorageKind,
    pub steps_done: usize,
    pub steps_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub attempts: u32,
    pub finished: bool,
    pub updated_unix_ms: u64,
    pub updated: String,
    pub ignored_tail: bool,
}

/// How a journal was opened for a flash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "opening", rename_all = "snake_case")]
pub enum Opening {
    /// No journal of this unit (or a finished one, or `--fresh`): a new one, nothing skipped.
    New {
        replaced_finished: bool,
        fresh: bool,
    },
    /// The journal matches the package: finished steps are skipped.
    Resume {
        steps_done: usize,
        steps_total: usize,
        attempts: u32,
        ignored_tail: bool,
    },
    /// A journal was there but cannot be used (another package, another unit, unreadable): the
    /// flash starts over. `why` is for people.
    Restarted { why: String },
}

/// The folder of journals.
#[derive(Debug, Clone)]
pub struct JournalStore {
    dir: PathBuf,
}

fn store_error(what: String, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Failure,
        what,
        "qrescue keeps a journal of every flash there, so an interrupted flash continues where it stopped",
        format!("Check the folder's permissions or set {DATA_DIR_ENV} to a writable folder"),
    )
    .with_source(e)
}

/// Read a file, at most `limit` bytes (`Err` text when larger or unreadable).
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

impl JournalStore {
    /// The store in `dir` (the `journals` folder itself).
    pub fn at(dir: impl Into<PathBuf>) -> JournalStore {
        JournalStore { dir: dir.into() }
    }

    /// The store in [`data_dir`]`/journals`.
    pub fn default_location() -> crate::Result<JournalStore> {
        data_dir()
            .map(|d| JournalStore::at(d.join("journals")))
            .ok_or_else(|| {
                Error::usage(
                    "No folder for qrescue's journals: HOME, XDG_DATA_HOME and QRESCUE_DATA_DIR are all unset",
                    format!("Set {DATA_DIR_ENV} to a writable folder"),
                )
            })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `unit`'s journal lives.
    pub fn path_for(&self, unit: &UnitKey) -> PathBuf {
        self.dir.join(format!("{unit}.jsonl"))
    }

    /// `unit`'s journal as it is on disk: `Ok(None)` when there is none, `Err` text when it
    /// cannot be read or used.
    pub fn load(
        &self,
        unit: &UnitKey,
    ) -> std::io::Result<Option<Result<JournalState, ParseError>>> {
        Ok(read_bounded(&self.path_for(unit), MAX_JOURNAL_BYTES)?.map(|b| parse(&b)))
    }

    /// Every journal, most recently updated first; unreadable ones are skipped (and logged).
    pub fn list(&self) -> crate::Result<Vec<JournalSummary>> {
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
        let mut out = Vec::new();
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            let Some(key) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(UnitKey::parse)
            else {
                continue;
            };
            if !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            match self.load(&key) {
                Ok(Some(Ok(s))) => out.push(s.summary()),
                Ok(Some(Err(why))) => tracing::info!("skipping journal {}: {why}", p.display()),
                Ok(None) => {}
                Err(e) => tracing::info!("skipping journal {}: {e}", p.display()),
            }
        }
        out.sort_by(|a, b| {
            b.updated_unix_ms
                .cmp(&a.updated_unix_ms)
                .then(a.unit.cmp(&b.unit))
        });
        Ok(out)
    }

    /// Open `unit`'s journal for a flash of `plan` (identified by `identity`): continue it when
    /// it matches and is not finished (and `fresh` is false), otherwise start a new one.
    pub fn open(
        &self,
        unit: &UnitKey,
        package: &str,
        plan: &FlashPlan,
        identity: &PackageIdentity,
        fresh: bool,
    ) -> crate::Result<(Journal, Opening)> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| store_error(format!("Cannot create {}", self.dir.display()), e))?;
        let path = self.path_for(unit);
        let existing = self
            .load(unit)
            .map_err(|e| store_error(format!("Cannot read {}", path.display()), e))?;
        let restart_why = match existing {
            None => None,
            Some(_) if fresh => {
                return self.create(unit, package, plan, identity).map(|j| {
                    (
                        j,
                        Opening::New {
                            replaced_finished: false,
                            fresh: true,
                        },
                    )
                })
            }
            Some(Err(why)) => Some(format!("its journal cannot be used ({why})")),
            Some(Ok(s)) if s.plan.unit != *unit => {
                Some(format!("its journal names another unit ({})", s.plan.unit))
            }
            Some(Ok(s)) if s.finished => {
                return self.create(unit, package, plan, identity).map(|j| {
                    (
                        j,
                        Opening::New {
                            replaced_finished: true,
                            fresh: false,
                        },
                    )
                })
            }
            Some(Ok(s)) => match s.plan.identity.differs(identity) {
                Some(d) => Some(format!(
                    "the unfinished flash in its journal was of another package or plan ({d})"
                )),
                None if s.plan.storage != plan.storage => {
                    Some("the journal's plan was for another storage".into())
                }
                None => {
                    let opening = Opening::Resume {
                        steps_done: s.done.len(),
                        steps_total: s.steps_total(),
                        attempts: s.attempts,
                        ignored_tail: s.ignored_tail,
                    };
                    return Journal::continue_at(path, s).map(|j| (j, opening));
                }
            },
        };
        let j = self.create(unit, package, plan, identity)?;
        Ok(match restart_why {
            Some(why) => (j, Opening::Restarted { why }),
            None => (
                j,
                Opening::New {
                    replaced_finished: false,
                    fresh,
                },
            ),
        })
    }

    /// A new journal holding only the plan record (replacing any other atomically).
    fn create(
        &self,
        unit: &UnitKey,
        package: &str,
        plan: &FlashPlan,
        identity: &PackageIdentity,
    ) -> crate::Result<Journal> {
        let rec = PlanRecord {
            version: JOURNAL_VERSION,
            unit: unit.clone(),
            package: package.to_string(),
            storage: plan.storage,
            identity: identity.clone(),
            step_names: plan.steps.iter().map(FlashStep::name).collect(),
            bytes_total: plan.total_bytes(),
            created_unix_ms: unix_ms_now(),
        };
        let path = self.path_for(unit);
        let line = encode(&Record::Plan(rec.clone()))?;
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(".journal-")
                .suffix(".tmp")
                .tempfile_in(&self.dir)?;
            tmp.write_all(&line)?;
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| e.error)?;
            if let Ok(d) = std::fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| store_error(format!("Cannot write {}", path.display()), e))?;
        let mut state = JournalState::new(rec);
        state.valid_len = line.len() as u64;
        Journal::continue_at(path, state)
    }
}

fn encode(r: &Record) -> crate::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(r).map_err(|e| {
        Error::failure(
            "Cannot encode a journal record",
            e.to_string(),
            "This is a bug in qrescue; please report it",
        )
    })?;
    line.push(b'\n');
    Ok(line)
}

/// An open journal: appends records (each fsync'd) and keeps the state they add up to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    state: JournalState,
    /// An append failed: what the journal says is incomplete (never more than the truth).
    write_failed: bool,
}

impl Journal {
    /// Open `path` for appending after its `state.valid_len` bytes (a torn tail is cut off).
    fn continue_at(path: PathBuf, state: JournalState) -> crate::Result<Journal> {
        let open = || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            if file.metadata()?.len() != state.valid_len {
                file.set_len(state.valid_len)?;
                file.sync_all()?;
            }
            Ok(file)
        };
        let mut file =
            open().map_err(|e| store_error(format!("Cannot open {}", path.display()), e))?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(state.valid_len))
            .map_err(|e| store_error(format!("Cannot open {}", path.display()), e))?;
        Ok(Journal {
            path,
            file,
            state,
            write_failed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> &JournalState {
        &self.state
    }

    pub fn unit(&self) -> &UnitKey {
        &self.state.plan.unit
    }

    /// Whether an append failed (the journal then knows less than what happened).
    pub fn write_failed(&self) -> bool {
        self.write_failed
    }

    /// Append one record, fsync'd. The state follows the record even when the write fails (the
    /// flash goes on; what was lost is only resume information, and the engine treats a journal
    /// with failed writes conservatively).
    pub fn append(&mut self, r: Record) -> crate::Result<()> {
        self.state.apply(&r);
        let line = encode(&r)?;
        let result = self
            .file
            .write_all(&line)
            .and_then(|_| self.file.sync_data());
        match result {
            Ok(()) => {
                self.state.valid_len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.write_failed = true;
                // Cut off what part of the line may have landed, so the next record starts on
                // a line of its own.
                use std::io::Seek;
                let _ = self.file.set_len(self.state.valid_len);
                let _ = self
                    .file
                    .seek(std::io::SeekFrom::Start(self.state.valid_len));
                Err(store_error(
                    format!("Cannot write {}", self.path.display()),
                    e,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
