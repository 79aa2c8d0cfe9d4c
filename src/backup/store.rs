//! The backup store: one folder per backup, written so that a backup is either complete and
//! verified or absent — never a partial one that looks complete.
//!
//! # Layout
//!
//! ```text
//! $QRESCUE_DATA_DIR/backups/            (else $XDG_DATA_HOME/qrescue/backups,
//!                                        else ~/.local/share/qrescue/backups)
//!   0cf94c64-20250301T101530Z/           <serial>-<UTC time>[-full][-N]
//!     manifest.json                      format, tool version, time, identity, table, files
//!     000_lun0_EFS2.bin                  one file per partition (names sanitised)
//!   .incomplete-4242-0cf94c64-5be0c1aa/  a backup being written (or a dead one)
//! ```
//!
//! # How a backup is written ([`Store::begin`] → [`PendingBackup::create_file`] →
//! [`PendingBackup::commit`])
//!
//! 1. A hidden folder `.incomplete-<pid>-<unit>-<random>` is made in the store root (same file
//!    system, so the final rename is atomic).
//! 2. Every file is written there, hashed while written (sha256), `fsync`ed.
//! 3. On commit every file is read back from disk and its sha256 and size compared with what
//!    was written.
//! 4. `manifest.json` is written last (sealed: it carries the sha256 of its own content, so a
//!    hand-edited or cut manifest is refused), `fsync`ed, then the folder is `fsync`ed.
//! 5. The folder is renamed to its final name without replacing anything
//!    (`renameat2(RENAME_NOREPLACE)`; elsewhere: an exclusive `mkdir` claims the name and the
//!    rename replaces that empty folder), and the store root is `fsync`ed.
//!
//! A crash before step 5 leaves only a hidden `.incomplete-*` folder, which [`Store::list`]
//! ignores and [`Store::cleanup_incomplete`] removes once its process is gone. A visible folder
//! without a readable, sealed manifest is listed as damaged, never as a backup. Nothing is ever
//! overwritten: a name that exists gets `-2`, `-3`, … instead.
//!
//! # Trusting what is on disk
//!
//! Partition labels come from the device: file names are made by [`file_name`] from a fixed
//! alphabet, and every name read back from a manifest is checked by [`is_safe_name`], so no
//! path leaves the backup folder. [`Manifest::parse`] never panics on any input (proptest).
//! [`StoredBackup::verify`] re-reads every file and compares its sha256 with the manifest.
//!
//! # The guard's ledger
//!
//! [`StoreLedger`] implements [`BackupLedger`] over the store: a region counts as backed up only
//! by a file of a complete backup of the same unit (by its Sahara serial, and by HW ID / PK hash
//! / IMEI when the ledger knows the connected modem's identity) that holds exactly that partition
//! (same LUN and bytes), and only after that file was re-read and matched its sha256.
//!
//! Fault injection ([`FaultHook`]) lets tests fail or "kill" the writer at every step.
//!
//! # Normal-mode (NV/EFS over DIAG) backups
//!
//! A backup of kind [`BackupKind::NvEfs`] holds no partitions: its files are NV items and EFS2
//! files read over DIAG ([`crate::backup::diag`]), listed in the manifest's `items` with where
//! each came from ([`ItemOrigin`]). It is written, sealed, verified and listed exactly like a
//! partition backup ([`Store::begin_nv_efs`], [`PendingBackup::create_item`]); it is filed under
//! the Sahara serial when known, else under [`Identity::normal_key`] (`imei-…`); it records no
//! storage kind. The guard's ledger never counts it (it holds no partition), and a restore
//! refuses it: qrescue does not write NV items or EFS files back.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backup::identity::Identity;
use crate::engine::guards::{BackupLedger, Region, VerifiedBackupRef};
use crate::protocol::firehose::commands::StorageKind;
use crate::protocol::partitions::Partition;
use crate::{Error, ErrorKind};

/// The manifest's file name inside a backup folder.
pub const MANIFEST: &str = "manifest.json";
/// `format` of a manifest.
pub const FORMAT: &str = "qrescue-backup";
/// The manifest format version this qrescue writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of a backup being written.
pub const INCOMPLETE_PREFIX: &str = ".incomplete-";
/// The environment variable that overrides the data folder (tests, portable installs).
pub const DATA_DIR_ENV: &str = "QRESCUE_DATA_DIR";

/// Largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Most files / table entries / notes a manifest may list.
const MAX_ENTRIES: usize = 4096;
/// Longest file name in a backup folder.
const MAX_NAME: usize = 100;
/// Longest label part of a file name.
const MAX_LABEL: usize = 48;
/// Longest text field (labels, notes, times) in a manifest.
const MAX_TEXT: usize = 4096;
/// Hashing buffer.
const BUF: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Where the store lives
// ---------------------------------------------------------------------------------------------

/// qrescue's data folder: `$QRESCUE_DATA_DIR`, else `$XDG_DATA_HOME/qrescue`, else
/// `~/.local/share/qrescue`.
pub fn data_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var(DATA_DIR_ENV) {
        return Some(d);
    }
    if let Some(d) = var("XDG_DATA_HOME").filter(|d| d.is_absolute()) {
        return Some(d.join("qrescue"));
    }
    var("HOME").map(|h| h.join(".local/share/qrescue"))
}

/// The default store root: `<data dir>/backups`.
pub fn default_root() -> crate::Result<PathBuf> {
    data_dir().map(|d| d.join("backups")).ok_or_else(|| {
        Error::usage(
            "qrescue cannot tell where to keep backups: neither QRESCUE_DATA_DIR, XDG_DATA_HOME nor HOME is set",
            "Set QRESCUE_DATA_DIR to a folder, or give one with --out DIR",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

/// A label from the device made safe for a file name: ASCII letters, digits, `_`, `-`, `.`
/// only (anything else becomes `_`), no leading dot, at most 48 characters, never empty.
pub fn sanitize_label(label: &str) -> String {
    let mut s: String = label
        .trim()
        .chars()
        .take(MAX_LABEL)
        .map(|c| if safe_char(c) { c } else { '_' })
        .collect();
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    if s.is_empty() {
        s.push_str("unnamed");
    }
    s
}

/// The file name for the `index`-th file of a backup: `000_lun0_EFS2.bin`, or
/// `003_lun0_sectors_0-34.bin` for a region without a label.
pub fn file_name(index: usize, lun: u32, label: Option<&str>, start: u64, sectors: u64) -> String {
    let what = match label {
        Some(l) => sanitize_label(l),
        None => format!("sectors_{start}-{}", start.saturating_add(sectors)),
    };
    let name = format!("{index:03}_lun{lun}_{what}.bin");
    // Numbers can make it long only in theory; keep the promise of is_safe_name.
    name.chars().take(MAX_NAME).collect()
}

/// Whether `name` is a plain file name inside a backup folder: 1–100 characters of
/// `[A-Za-z0-9._-]`, not starting with a dot, not the manifest.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(safe_char)
        && !name.starts_with('.')
        && name != MANIFEST
}

// ---------------------------------------------------------------------------------------------
// The manifest
// ---------------------------------------------------------------------------------------------

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// The device-unique partitions (`guards::DEVICE_UNIQUE`).
    DeviceUnique,
    /// Every partition and the partition table areas.
    Full,
    /// NV items and EFS2 files read over DIAG in normal mode (for reference and manual recovery;
    /// not restored by qrescue).
    NvEfs,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::DeviceUnique => "device-unique",
            BackupKind::Full => "full",
            BackupKind::NvEfs => "nv-efs",
        }
    }
}

/// One file of a backup: which sectors of which LUN it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// File name inside the backup folder ([`is_safe_name`]).
    pub name: String,
    /// The partition's label as the device's table gives it; `None` for a region outside every
    /// partition (the partition table's own sectors in a full backup).
    pub partition: Option<String>,
    pub lun: u32,
    pub start_sector: u64,
    pub sectors: u64,
    /// Bytes per sector (NAND: the page).
    pub sector_size: u32,
    /// NAND: the last page of the partition, bounding the programmer's bad-block mapping (read
    /// and written with it, like a package XML does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sector: Option<u64>,
    /// `sectors × sector_size`.
    pub bytes: u64,
    /// 64 lower-case hex digits.
    pub sha256: String,
    /// The partition holds device-unique data (calibration, IMEI …).
    pub device_unique: bool,
}

impl FileEntry {
    /// The sectors this file holds, for the guard.
    pub fn region(&self) -> Region {
        Region {
            lun: self.lun,
            start_sector: self.start_sector,
            num_sectors: self.sectors,
            sector_size: self.sector_size,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !is_safe_name(&self.name) {
            return Err(format!(
                "file name {:?} is not a plain file name",
                self.name
            ));
        }
        if let Some(p) = &self.partition {
            if p.is_empty() || p.len() > MAX_TEXT || p.chars().any(char::is_control) {
                return Err(format!(
                    "{}: the partition label is not printable",
                    self.name
                ));
            }
        }
        if !(512..=65536).contains(&self.sector_size) || !self.sector_size.is_power_of_two() {
            return Err(format!(
                "{}: sector size {} is impossible",
                self.name, self.sector_size
            ));
        }
        if self.sectors == 0 {
            return Err(format!("{}: holds no sectors", self.name));
        }
        if self.sectors.checked_mul(u64::from(self.sector_size)) != Some(self.bytes) {
            return Err(format!(
                "{}: {} bytes is not {} sectors of {}",
                self.name, self.bytes, self.sectors, self.sector_size
            ));
        }
        if self.region().byte_range().is_none()
            || self.start_sector.checked_add(self.sectors).is_none()
        {
            return Err(format!("{}: the sector range overflows", self.name));
        }
        if let Some(l) = self.last_sector {
            if l < self.start_sector {
                return Err(format!("{}: last_sector lies before the start", self.name));
            }
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "{}: sha256 is not 64 lower-case hex digits",
                self.name
            ));
        }
        Ok(())
    }
}

/// Where an item of a normal-mode (DIAG) backup came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ItemOrigin {
    /// A legacy NV item (DIAG NV_READ 0x26): the file holds its 128 data bytes.
    NvItem {
        item: u16,
        /// What it is, e.g. `IMEI (NV_UE_IMEI_I)`.
        what: String,
    },
    /// An EFS2 file: the file holds its content as read.
    EfsFile {
        /// Its path on the modem, as the modem named it (recorded only; never a path here).
        path: String,
    },
}

impl ItemOrigin {
    /// `NV 550 IMEI (NV_UE_IMEI_I)` or `EFS /nv/item_files/rfnv/00020000`.
    pub fn describe(&self) -> String {
        match self {
            ItemOrigin::NvItem { item, what } => format!("NV {item} {what}"),
            ItemOrigin::EfsFile { path } => format!("EFS {path}"),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let printable =
            |t: &str| !t.is_empty() && t.len() <= MAX_TEXT && !t.chars().any(char::is_control);
        match self {
            ItemOrigin::NvItem { item, what } if !printable(what) => {
                Err(format!("NV item {item}: its description is not printable"))
            }
            ItemOrigin::EfsFile { path } if !printable(path) || !path.starts_with('/') => {
                Err("an EFS path is not a printable absolute path".into())
            }
            _ => Ok(()),
        }
    }
}

/// One file of a normal-mode (DIAG) backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemEntry {
    /// File name inside the backup folder ([`is_safe_name`]).
    pub name: String,
    pub origin: ItemOrigin,
    pub bytes: u64,
    /// 64 lower-case hex digits.
    pub sha256: String,
}

impl ItemEntry {
    fn validate(&self) -> Result<(), String> {
        if !is_safe_name(&self.name) {
            return Err(format!(
                "file name {:?} is not a plain file name",
                self.name
            ));
        }
        self.origin
            .validate()
            .map_err(|e| format!("{}: {e}", self.name))?;
        if !is_sha256_hex(&self.sha256) {
            return Err(format!(
                "{}: sha256 is not 64 lower-case hex digits",
                self.name
            ));
        }
        Ok(())
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The file name for the `index`-th file of a normal-mode backup: `nv_00550.bin` for an NV
/// item, `efs_003_nv_item_files_rfnv_00020000.bin` for an EFS file (the device's path made safe
/// by [`sanitize_label`]; the index keeps names unique).
pub fn item_file_name(index: usize, origin: &ItemOrigin) -> String {
    let name = match origin {
        ItemOrigin::NvItem { item, .. } => format!("nv_{item:05}.bin"),
        ItemOrigin::EfsFile { path } => {
            // The end of a long path says most about the file.
            let tail: Vec<char> = path.trim_start_matches('/').chars().collect();
            let keep = tail.len().saturating_sub(MAX_LABEL);
            let tail: String = tail[keep..].iter().collect();
            format!("efs_{index:03}_{}.bin", sanitize_label(&tail))
        }
    };
    name.chars().take(MAX_NAME).collect()
}

/// `manifest.json` of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub format_version: u32,
    /// The qrescue version that wrote it.
    pub tool_version: String,
    pub created_unix: u64,
    /// `2025-03-01T10:15:30Z`.
    pub created_utc: String,
    pub kind: BackupKind,
    /// The storage the partitions were read from; none for an NV/EFS backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageKind>,
    pub identity: Identity,
    /// The device's partition table(s) when the backup was taken.
    pub table: Vec<Partition>,
    pub files: Vec<FileEntry>,
    /// NV/EFS backups: the NV items and EFS files (no partitions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemEntry>,
    /// How the data was checked before the backup was recorded.
    pub verification: String,
    #[serde(default)]
    pub notes: Vec<String>,
    /// sha256 of this manifest serialised with an empty `seal`.
    pub seal: String,
}

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

impl Manifest {
    fn seal_of(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.seal = String::new();
        let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Serialise (pretty JSON) with a fresh seal.
    pub fn to_sealed_json(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.seal = m.seal_of();
        let mut v = serde_json::to_vec_pretty(&m).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parse and check a manifest: JSON of the known format and version, the seal matches the
    /// content, every field is plausible, file names are plain and unique. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let bad = |s: String| Err(ManifestError(s));
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return bad(format!(
                "it is {} bytes, more than any backup manifest",
                bytes.len()
            ));
        }
        // The format and version first, so a newer manifest is told apart from a broken one.
        let head: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => return bad(format!("it is not valid JSON ({e})")),
        };
        if head.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return bad(format!("it is not a {FORMAT} manifest"));
        }
        match head.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) if v > u64::from(FORMAT_VERSION) => {
                return bad(format!(
                    "it has format version {v}, made by a newer qrescue (this one reads {FORMAT_VERSION})"
                ))
            }
            _ => return bad("its format version is missing or unknown".into()),
        }
        let m: Manifest = match serde_json::from_value(head) {
            Ok(m) => m,
            Err(e) => return bad(format!("a field is missing or has the wrong type ({e})")),
        };
        if m.seal != m.seal_of() {
            return bad("its seal does not match its content: it was edited or damaged after the backup was made".into());
        }
        m.validate().map_err(ManifestError)?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), String> {
        if self.files.is_empty() && self.items.is_empty() {
            return Err("it lists no files".into());
        }
        if self.files.len() > MAX_ENTRIES
            || self.items.len() > MAX_ENTRIES
            || self.table.len() > MAX_ENTRIES
            || self.notes.len() > MAX_ENTRIES
        {
            return Err("it lists more entries than any device has".into());
        }
        for t in [&self.tool_version, &self.created_utc, &self.verification]
            .into_iter()
            .chain(self.notes.iter())
        {
            if t.len() > MAX_TEXT {
                return Err("a text field is too long".into());
            }
        }
        self.identity
            .validate()
            .map_err(|e| format!("its identity is not plausible: {e}"))?;
        if self.kind == BackupKind::NvEfs {
            if !self.files.is_empty() || !self.table.is_empty() || self.storage.is_some() {
                return Err("an NV/EFS backup lists partitions".into());
            }
            if self.identity.unit_key().is_none() && self.identity.normal_key().is_none() {
                return Err("it records neither the modem's serial number nor its IMEI".into());
            }
        } else {
            if !self.items.is_empty() {
                return Err("a partition backup lists NV/EFS items".into());
            }
            if self.storage.is_none() {
                return Err("it does not say which storage the partitions were read from".into());
            }
            if self.identity.unit_key().is_none() {
                return Err("it does not record the modem's serial number".into());
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &self.files {
            f.validate()?;
            if !names.insert(f.name.to_ascii_lowercase()) {
                return Err(format!("the file {} is listed twice", f.name));
            }
        }
        for i in &self.items {
            i.validate()?;
            if !names.insert(i.name.to_ascii_lowercase()) {
                return Err(format!("the file {} is listed twice", i.name));
            }
        }
        Ok(())
    }

    /// The unit key of the modem the backup was taken from: its Sahara serial, or for an
    /// NV/EFS backup without one, `imei-` + its IMEI.
    pub fn unit(&self) -> String {
        self.identity
            .unit_key()
            .or_else(|| {
                (self.kind == BackupKind::NvEfs)
                    .then(|| self.identity.normal_key())
                    .flatten()
            })
            .unwrap_or_default()
    }

    /// Total bytes of the files (and items).
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.bytes)
            .chain(self.items.iter().map(|i| i.bytes))
            .fold(0, u64::saturating_add)
    }
}

// ---------------------------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------------------------

/// A point in writing a backup where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Making the hidden folder.
    CreateDir,
    /// Before `len` bytes are written to file `file` at `offset`.
    Write {
        file: usize,
        offset: u64,
        len: usize,
    },
    /// `fsync` of file `file`.
    FileSync { file: usize },
    /// Reading file `file` back before the commit.
    ReadBack { file: usize },
    /// Writing `manifest.json`.
    ManifestWrite,
    /// `fsync` of `manifest.json`.
    ManifestSync,
    /// `fsync` of the backup folder.
    DirSync,
    /// The rename into place.
    Rename,
    /// `fsync` of the store root after the rename.
    RootSync,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails with an I/O error; the writer cleans up as it would on a full disk.
    Fail,
    /// The process "dies" here: the operation does not happen, an error comes back, and
    /// nothing is cleaned up (the disk stays as a killed process would leave it).
    Kill,
}

/// Decides, at every [`Step`], whether a fault happens. For tests.
pub trait FaultHook: Send + Sync {
    fn at(&self, step: Step) -> Option<Fault>;
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

/// A backup store rooted at a folder.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    hook: Option<Arc<dyn FaultHook>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("faults", &self.hook.is_some())
            .finish()
    }
}

/// A complete backup on disk (its manifest parsed and checked; its files not yet re-read:
/// see [`StoredBackup::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBackup {
    /// The folder name.
    pub name: String,
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// A visible folder in the store that is not a usable backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damaged {
    pub name: String,
    pub why: String,
}

/// What [`Store::list`] found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Complete backups, oldest first.
    pub backups: Vec<StoredBackup>,
    /// Folders that are not usable backups.
    pub damaged: Vec<Damaged>,
    /// Hidden `.incomplete-*` folders (being written, or left by a crash).
    pub incomplete: Vec<String>,
}

/// What [`StoredBackup::verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub backup: String,
    pub files: usize,
    pub bytes: u64,
}

fn io_error(what: String, e: io::Error) -> Error {
    Error::failure(
        what,
        "the backup could not be written completely, so it was not recorded",
        "Check free space and permissions of the backup folder (or choose another with --out) and run the backup again",
    )
    .with_source(e)
}

fn now() -> (u64, String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, mo, d, h, mi, s) = civil(secs);
    (
        secs,
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
    )
}

/// UTC calendar fields of a Unix time (days-from-civil inverted, proleptic Gregorian).
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, (rem / 60) % 60, rem % 60)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Rename `from` to `to` without ever replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // The file system does not support the flag: fall through.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    // Claim the name with an exclusive mkdir, then replace that (empty) folder of ours.
    fs::create_dir(to)?;
    fs::rename(from, to).inspect_err(|_| {
        let _ = fs::remove_dir(to);
    })
}

/// Whether the process that wrote `.incomplete-<pid>-…` may still be running.
fn writer_alive(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(INCOMPLETE_PREFIX)
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p > 0)
    else {
        return false;
    };
    if pid == std::process::id() as i32 {
        return true;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// sha256 and length of a regular file (symlinks and other kinds are refused).
fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        let k = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

impl Store {
    /// A store rooted at `root` (created when the first backup is written).
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store {
            root: root.into(),
            hook: None,
        }
    }

    /// The store at [`default_root`].
    pub fn open_default() -> crate::Result<Store> {
        Ok(Store::new(default_root()?))
    }

    /// The same store with faults injected while writing (tests).
    pub fn with_faults(mut self, hook: Arc<dyn FaultHook>) -> Store {
        self.hook = Some(hook);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every complete backup (oldest first), the damaged folders and the hidden incomplete
    /// ones. A store folder that does not exist yet is empty.
    pub fn list(&self) -> crate::Result<Listing> {
        let mut out = Listing::default();
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(Error::failure(
                    format!("Cannot read the backup folder {}", self.root.display()),
                    "the list of backups is kept there",
                    "Check its permissions, or point QRESCUE_DATA_DIR elsewhere",
                )
                .with_source(e))
            }
        };
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(ft) = entry.file_type() else { continue };
            if name.starts_with(INCOMPLETE_PREFIX) {
                out.incomplete.push(name);
                continue;
            }
            if name.starts_with('.') || !ft.is_dir() {
                continue;
            }
            match StoredBackup::load(&entry.path()) {
                Ok(b) => out.backups.push(b),
                Err(e) => out.damaged.push(Damaged { name, why: e.why }),
            }
        }
        out.backups.sort_by(|a, b| {
            (a.manifest.created_unix, &a.name).cmp(&(b.manifest.created_unix, &b.name))
        });
        out.damaged.sort_by(|a, b| a.name.cmp(&b.name));
        out.incomplete.sort();
        Ok(out)
    }

    /// A backup by folder name in this store, or by path to its folder.
    pub fn get(&self, which: &str) -> crate::Result<StoredBackup> {
        let as_path = Path::new(which);
        let path = if which.contains('/') || as_path.join(MANIFEST).is_file() {
            as_path.to_path_buf()
        } else {
            self.root.join(which)
        };
        if !path.is_dir() {
            return Err(Error::usage(
                format!("There is no backup {which} in {}", self.root.display()),
                "See `qrescue backup list` for the backups on file, or give the path of a backup folder",
            ));
        }
        StoredBackup::load(&path)
    }

    /// Remove hidden `.incomplete-*` folders whose writing process is gone. Returns what was
    /// removed.
    pub fn cleanup_incomplete(&self) -> crate::Result<Vec<String>> {
        let mut removed = Vec::new();
        for name in self.list()?.incomplete {
            if writer_alive(&name) {
                continue;
            }
            let p = self.root.join(&name);
            let r = match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => removed.push(name),
                Err(e) => {
                    tracing::warn!(target: "qrescue::backup", "cannot remove {}: {e}", p.display())
                }
            }
        }
        Ok(removed)
    }

    fn fault(&self, step: Step) -> Option<Fault> {
        self.hook.as_ref().and_then(|h| h.at(step))
    }

    /// Start writing a backup of the unit `identity` (which must know its serial).
    pub fn begin(
        &self,
        identity: &Identity,
        kind: BackupKind,
        storage: StorageKind,
    ) -> crate::Result<PendingBackup> {
        let unit = identity.unit_key().ok_or_else(|| {
            Error::failure(
                "qrescue will not make a backup without knowing which modem it is from",
                "the modem did not tell its serial number over Sahara, and a backup that cannot be matched to its unit could be restored onto another one, destroying that unit's calibration",
                "Power-cycle the modem into download mode (9008) so qrescue talks to its boot ROM first, and run the backup again",
            )
        })?;
        self.begin_as(identity, kind, Some(storage), &unit)
    }

    /// Start writing an NV/EFS backup (over DIAG in normal mode) of `identity`, filed under its
    /// Sahara serial when known, else under its IMEI ([`Identity::normal_key`]); add its files
    /// with [`PendingBackup::create_item`].
    pub fn begin_nv_efs(&self, identity: &Identity) -> crate::Result<PendingBackup> {
        let unit = identity
            .unit_key()
            .or_else(|| identity.normal_key())
            .ok_or_else(|| {
                Error::failure(
                    "qrescue will not make a backup without knowing which modem it is from",
                    "the modem told neither its IMEI (AT+CGSN, NV item 550) nor its serial number, and a backup that cannot be matched to its unit is of no use for it",
                    "Give the AT port (--at) so the IMEI can be read, or back up the EFS partitions in download mode (qrescue backup --port …)",
                )
            })?;
        self.begin_as(identity, BackupKind::NvEfs, None, &unit)
    }

    fn begin_as(
        &self,
        identity: &Identity,
        kind: BackupKind,
        storage: Option<StorageKind>,
        unit: &str,
    ) -> crate::Result<PendingBackup> {
        identity.validate().map_err(|e| {
            Error::failure(
                "the modem's identity is not plausible",
                e,
                "Run the backup again; if it repeats, report it",
            )
        })?;
        fs::create_dir_all(&self.root).map_err(|e| {
            io_error(
                format!("Cannot create the backup folder {}", self.root.display()),
                e,
            )
        })?;
        let unit_part = sanitize_label(unit.trim_start_matches("0x"));
        let random: u32 = rand::random();
        let tmp = self.root.join(format!(
            "{INCOMPLETE_PREFIX}{}-{unit_part}-{random:08x}",
            std::process::id()
        ));
        let (created_unix, created_utc, stamp) = now();
        let suffix = match kind {
            BackupKind::DeviceUnique => "",
            BackupKind::Full => "-full",
            BackupKind::NvEfs => "-nvefs",
        };
        let mut pending = PendingBackup {
            store: self.clone(),
            dir: tmp,
            base_name: format!("{unit_part}-{stamp}{suffix}"),
            manifest: Manifest {
                format: FORMAT.into(),
                format_version: FORMAT_VERSION,
                tool_version: env!("CARGO_PKG_VERSION").into(),
                created_unix,
                created_utc,
                kind,
                storage,
                identity: identity.clone(),
                table: Vec::new(),
                files: Vec::new(),
                items: Vec::new(),
                verification: String::new(),
                notes: Vec::new(),
                seal: String::new(),
            },
            started_files: 0,
            created: false,
            killed: false,
            committed: false,
        };
        pending.check(Step::CreateDir)?;
        fs::create_dir(&pending.dir)
            .map_err(|e| io_error(format!("Cannot create {}", pending.dir.display()), e))?;
        pending.created = true;
        Ok(pending)
    }
}

impl StoredBackup {
    /// Load the backup in folder `path`: its manifest must exist, be sealed and plausible.
    pub fn load(path: &Path) -> crate::Result<StoredBackup> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let mpath = path.join(MANIFEST);
        let damaged = |why: String| {
            Error::new(
                ErrorKind::VerifyMismatch,
                format!("{} is not a usable backup", path.display()),
                why,
                "Use another backup (see `qrescue backup list`); never edit a backup's files by hand",
            )
        };
        let meta = fs::symlink_metadata(&mpath)
            .map_err(|_| damaged(format!("it has no {MANIFEST}: it is not a complete backup")))?;
        if !meta.file_type().is_file() || meta.len() > MAX_MANIFEST_BYTES {
            return Err(damaged(format!(
                "its {MANIFEST} is not a plain file of sensible size"
            )));
        }
        let bytes = fs::read(&mpath)
            .map_err(|e| damaged(format!("its {MANIFEST} cannot be read ({e})")))?;
        let manifest = Manifest::parse(&bytes)
            .map_err(|e| damaged(format!("its {MANIFEST} cannot be used: {e}")))?;
        Ok(StoredBackup {
            name,
            path: path.to_path_buf(),
            manifest,
        })
    }

    /// The path of one of its files (its name was checked when the manifest was parsed).
    pub fn file_path(&self, entry: &FileEntry) -> PathBuf {
        self.path.join(&entry.name)
    }

    /// Re-read one file and compare its size and sha256 with the manifest.
    pub fn verify_file(&self, entry: &FileEntry) -> crate::Result<()> {
        let p = self.file_path(entry);
        match hash_file(&p) {
            Ok((sha, n)) if n == entry.bytes && sha == entry.sha256 => Ok(()),
            Ok((sha, n)) => Err(Error::new(
                ErrorKind::VerifyMismatch,
                format!("{} of backup {} is damaged", entry.name, self.name),
                format!(
                    "the manifest says {} bytes with sha256 {}, the file has {n} bytes with sha256 {sha}",
                    entry.bytes, entry.sha256
                ),
                "Do not restore this backup; use another one (see `qrescue backup list`) or make a new one",
            )),
            Err(e) => Err(Error::new(
                ErrorKind::VerifyMismatch,
                format!("{} of backup {} cannot be read", entry.name, self.name),
                format!("{e}"),
                "Do not restore this backup; use another one (see `qrescue backup list`) or make a new one",
            )),
        }
    }

    /// Re-read every file (and item) and compare with the manifest.
    pub fn verify(&self) -> crate::Result<VerifyReport> {
        for f in &self.manifest.files {
            self.verify_file(f)?;
        }
        for i in &self.manifest.items {
            self.verify_item(i)?;
        }
        Ok(VerifyReport {
            backup: self.name.clone(),
            files: self.manifest.files.len() + self.manifest.items.len(),
            bytes: self.manifest.total_bytes(),
        })
    }

    /// Re-read one item of an NV/EFS backup and compare its size and sha256 with the manifest.
    pub fn verify_item(&self, item: &ItemEntry) -> crate::Result<()> {
        // The same check as for a partition file: name, size, sha256.
        let (p, bytes, sha256) = (self.path.join(&item.name), item.bytes, &item.sha256);
        let damaged = |why: String| {
            Error::new(
                ErrorKind::VerifyMismatch,
                format!("{} of backup {} is damaged", item.name, self.name),
                why,
                "Do not rely on this backup; use another one (see `qrescue backup list`) or make a new one",
            )
        };
        match hash_file(&p) {
            Ok((sha, n)) if n == bytes && sha == *sha256 => Ok(()),
            Ok((sha, n)) => Err(damaged(format!(
                "the manifest says {bytes} bytes with sha256 {sha256}, the file has {n} bytes with sha256 {sha}"
            ))),
            Err(e) => Err(damaged(format!("it cannot be read: {e}"))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing a backup
// ---------------------------------------------------------------------------------------------

/// What a new file of a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub partition: Option<String>,
    pub lun: u32,
    pub start_sector: u64,
    pub sectors: u64,
    pub sector_size: u32,
    pub last_sector: Option<u64>,
    pub device_unique: bool,
}

/// A backup being written in its hidden folder. Dropped without [`PendingBackup::commit`], it
/// removes its folder (unless a [`Fault::Kill`] "killed" it).
pub struct PendingBackup {
    store: Store,
    dir: PathBuf,
    base_name: String,
    manifest: Manifest,
    /// Files started (finished or not): numbers every new file uniquely.
    started_files: usize,
    created: bool,
    killed: bool,
    committed: bool,
}

impl std::fmt::Debug for PendingBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingBackup")
            .field("dir", &self.dir)
            .field("files", &self.manifest.files.len())
            .finish()
    }
}

fn injected(step: Step, fault: Fault) -> io::Error {
    io::Error::other(format!("injected {fault:?} at {step:?}"))
}

impl PendingBackup {
    /// Apply the fault hook at `step`.
    fn check(&mut self, step: Step) -> crate::Result<()> {
        self.check_io(step)
            .map_err(|e| io_error(format!("Writing the backup stopped ({step:?})"), e))
    }

    fn check_io(&mut self, step: Step) -> io::Result<()> {
        match self.store.fault(step) {
            None => Ok(()),
            Some(f) => {
                if f == Fault::Kill {
                    self.killed = true;
                }
                Err(injected(step, f))
            }
        }
    }

    /// The hidden folder being written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Record the device's partition table(s).
    pub fn set_table(&mut self, table: Vec<Partition>) {
        self.manifest.table = table;
    }

    /// Add a note to the manifest.
    pub fn note(&mut self, n: impl Into<String>) {
        self.manifest.notes.push(n.into());
    }

    /// The files recorded so far.
    pub fn files(&self) -> &[FileEntry] {
        &self.manifest.files
    }

    /// Start the next file; write its bytes to the returned writer, then
    /// [`FileWriter::finish`].
    pub fn create_file(&mut self, mut spec: FileSpec) -> crate::Result<FileWriter<'_>> {
        let index = self.started_files;
        self.started_files += 1;
        // The label is kept for people and for matching the device's table; one that is empty
        // or not printable is no use for either.
        spec.partition = spec
            .partition
            .filter(|p| !p.is_empty() && p.len() <= MAX_TEXT && !p.chars().any(char::is_control));
        let bytes = spec
            .sectors
            .checked_mul(u64::from(spec.sector_size))
            .ok_or_else(|| {
                Error::failure(
                    "a partition of impossible size was to be backed up",
                    format!("{} sectors of {} bytes", spec.sectors, spec.sector_size),
                    "Report this with the partition table (qrescue -vv)",
                )
            })?;
        let name = file_name(
            index,
            spec.lun,
            spec.partition.as_deref(),
            spec.start_sector,
            spec.sectors,
        );
        debug_assert!(is_safe_name(&name));
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error(format!("Cannot create {}", path.display()), e))?;
        Ok(FileWriter {
            pending: self,
            file: Some(file),
            path,
            hasher: Sha256::new(),
            written: 0,
            index,
            name: name.clone(),
            bytes,
            target: Target::Partition(FileEntry {
                name,
                partition: spec.partition,
                lun: spec.lun,
                start_sector: spec.start_sector,
                sectors: spec.sectors,
                sector_size: spec.sector_size,
                last_sector: spec.last_sector,
                bytes,
                sha256: String::new(),
                device_unique: spec.device_unique,
            }),
        })
    }

    /// Start the next item of an NV/EFS backup ([`Store::begin_nv_efs`]): `bytes` long, from
    /// `origin`; write its bytes to the returned writer, then [`FileWriter::finish`]. Its file
    /// name is made by [`item_file_name`] (never from device text alone).
    pub fn create_item(&mut self, origin: ItemOrigin, bytes: u64) -> crate::Result<FileWriter<'_>> {
        if self.manifest.kind != BackupKind::NvEfs {
            return Err(Error::failure(
                "an NV/EFS item was to be added to a partition backup",
                "items belong only in an NV/EFS backup",
                "Report this (qrescue -vv)",
            ));
        }
        origin.validate().map_err(|why| {
            Error::failure(
                "an NV/EFS item cannot be recorded",
                why,
                "Report this with the modem's model and firmware (qrescue -vv)",
            )
        })?;
        let index = self.started_files;
        self.started_files += 1;
        let name = item_file_name(index, &origin);
        debug_assert!(is_safe_name(&name));
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error(format!("Cannot create {}", path.display()), e))?;
        Ok(FileWriter {
            pending: self,
            file: Some(file),
            path,
            hasher: Sha256::new(),
            written: 0,
            index,
            name,
            bytes,
            target: Target::Item(origin),
        })
    }

    /// Read every file back, write the sealed manifest, sync, and rename the folder into place
    /// (never replacing anything). `verification` says how the data was checked against the
    /// device. Returns the backup as loaded back from its final folder.
    pub fn commit(mut self, verification: &str) -> crate::Result<StoredBackup> {
        if self.manifest.files.is_empty() && self.manifest.items.is_empty() {
            return Err(Error::failure(
                "the backup holds no files, so it was not recorded",
                "there was nothing to back up",
                "Check the partition table the modem reports (qrescue -v)",
            ));
        }
        // 1. Read back what the disk holds.
        let written: Vec<(String, String, u64)> = self
            .manifest
            .files
            .iter()
            .map(|f| (f.name.clone(), f.sha256.clone(), f.bytes))
            .chain(
                self.manifest
                    .items
                    .iter()
                    .map(|i| (i.name.clone(), i.sha256.clone(), i.bytes)),
            )
            .collect();
        for (i, (name, sha256, bytes)) in written.into_iter().enumerate() {
            self.check(Step::ReadBack { file: i })?;
            let e = ReadBackEntry {
                name,
                sha256,
                bytes,
            };
            let p = self.dir.join(&e.name);
            let (sha, n) = hash_file(&p)
                .map_err(|err| io_error(format!("Cannot read back {}", p.display()), err))?;
            if sha != e.sha256 || n != e.bytes {
                return Err(Error::new(
                    ErrorKind::VerifyMismatch,
                    format!("{} reads back differently from what was written", e.name),
                    format!(
                        "written: {} bytes, sha256 {}; read back: {n} bytes, sha256 {sha}; the disk holding the backups is unreliable",
                        e.bytes, e.sha256
                    ),
                    "Make the backup on another disk (--out DIR); this one was not recorded",
                ));
            }
        }
        // 2. The manifest, sealed.
        self.manifest.verification = verification.to_string();
        let json = self.manifest.to_sealed_json();
        // What is renamed into place must load: check it as a reader will.
        if let Err(e) = Manifest::parse(&json) {
            return Err(Error::failure(
                "the backup's manifest would not be readable, so the backup was not recorded",
                e.0,
                "Report this (qrescue -vv) with the modem's partition table",
            ));
        }
        let mpath = self.dir.join(MANIFEST);
        self.check(Step::ManifestWrite)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&mpath)
            .map_err(|e| io_error(format!("Cannot create {}", mpath.display()), e))?;
        f.write_all(&json)
            .map_err(|e| io_error(format!("Cannot write {}", mpath.display()), e))?;
        self.check(Step::ManifestSync)?;
        f.sync_all()
            .map_err(|e| io_error(format!("Cannot sync {}", mpath.display()), e))?;
        drop(f);
        self.check(Step::DirSync)?;
        sync_dir(&self.dir)
            .map_err(|e| io_error(format!("Cannot sync {}", self.dir.display()), e))?;
        // 3. Into place, never over anything.
        self.check(Step::Rename)?;
        let mut last_err = None;
        let mut final_path = None;
        for n in 1..=100 {
            let name = if n == 1 {
                self.base_name.clone()
            } else {
                format!("{}-{n}", self.base_name)
            };
            let to = self.store.root.join(&name);
            match rename_noreplace(&self.dir, &to) {
                Ok(()) => {
                    final_path = Some(to);
                    break;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        || e.raw_os_error() == Some(libc::ENOTEMPTY) =>
                {
                    last_err = Some(e);
                }
                Err(e) => {
                    return Err(io_error(
                        format!("Cannot move the backup into place as {}", to.display()),
                        e,
                    ))
                }
            }
        }
        let Some(final_path) = final_path else {
            return Err(io_error(
                format!("Every name for the backup {} is taken", self.base_name),
                last_err.unwrap_or_else(|| io::Error::other("names taken")),
            ));
        };
        self.committed = true;
        // A crash from here on leaves a complete backup: the root's sync only makes the rename
        // durable sooner.
        self.check(Step::RootSync)?;
        if let Err(e) = sync_dir(&self.store.root) {
            tracing::warn!(target: "qrescue::backup", "cannot sync {}: {e}", self.store.root.display());
        }
        StoredBackup::load(&final_path)
    }
}

impl Drop for PendingBackup {
    fn drop(&mut self) {
        if self.created && !self.committed && !self.killed {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                tracing::warn!(target: "qrescue::backup", "cannot remove {}: {e}", self.dir.display());
            }
        }
    }
}

/// What a file was read back against.
struct ReadBackEntry {
    name: String,
    sha256: String,
    bytes: u64,
}

/// What a [`FileWriter`] records when it finishes.
enum Target {
    Partition(FileEntry),
    Item(ItemOrigin),
}

/// Writes one file of a [`PendingBackup`], hashing on the way.
pub struct FileWriter<'a> {
    pending: &'a mut PendingBackup,
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
    index: usize,
    name: String,
    bytes: u64,
    target: Target,
}

impl Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let room = self.bytes - self.written;
        if buf.len() as u64 > room {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more data than the {} bytes of {}", self.bytes, self.name),
            ));
        }
        self.pending.check_io(Step::Write {
            file: self.index,
            offset: self.written,
            len: buf.len(),
        })?;
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("file closed"))?;
        f.write_all(buf)?;
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl FileWriter<'_> {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Check the length, `fsync`, and record the file in the manifest.
    pub fn finish(self) -> crate::Result<FileEntry> {
        match self.finish_any()? {
            Finished::Partition(e) => Ok(e),
            Finished::Item(i) => Err(Error::failure(
                format!("{} is an NV/EFS item, not a partition file", i.name),
                "finish_item records items",
                "Report this (qrescue -vv)",
            )),
        }
    }

    /// [`FileWriter::finish`] for an item of an NV/EFS backup.
    pub fn finish_item(self) -> crate::Result<ItemEntry> {
        match self.finish_any()? {
            Finished::Item(i) => Ok(i),
            Finished::Partition(e) => Err(Error::failure(
                format!("{} is a partition file, not an NV/EFS item", e.name),
                "finish records partition files",
                "Report this (qrescue -vv)",
            )),
        }
    }

    fn finish_any(mut self) -> crate::Result<Finished> {
        if self.written != self.bytes {
            return Err(Error::failure(
                format!(
                    "{} got {} of its {} bytes",
                    self.name, self.written, self.bytes
                ),
                "the read from the modem ended early",
                "Run the backup again",
            ));
        }
        self.pending.check(Step::FileSync { file: self.index })?;
        let f = self.file.take().expect("finish runs once");
        f.sync_all()
            .map_err(|e| io_error(format!("Cannot sync {}", self.path.display()), e))?;
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Ok(match &self.target {
            Target::Partition(e) => {
                let mut entry = e.clone();
                entry.sha256 = sha256;
                self.pending.manifest.files.push(entry.clone());
                Finished::Partition(entry)
            }
            Target::Item(origin) => {
                let item = ItemEntry {
                    name: self.name.clone(),
                    origin: origin.clone(),
                    bytes: self.bytes,
                    sha256,
                };
                self.pending.manifest.items.push(item.clone());
                Finished::Item(item)
            }
        })
    }
}

enum Finished {
    Partition(FileEntry),
    Item(ItemEntry),
}

// ---------------------------------------------------------------------------------------------
// The ledger
// ---------------------------------------------------------------------------------------------

/// The guard's [`BackupLedger`] over a [`Store`]: see the module notes for what counts.
#[derive(Debug)]
pub struct StoreLedger {
    backups: Vec<StoredBackup>,
    device: Option<Identity>,
    /// (backup, file) → re-read and matched.
    checked: Mutex<HashMap<(usize, usize), bool>>,
}

impl StoreLedger {
    /// The complete backups of `store` (read once, now). Files are re-read when asked about.
    pub fn new(store: &Store) -> crate::Result<StoreLedger> {
        Ok(StoreLedger {
            backups: store.list()?.backups,
            device: None,
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// A ledger that holds nothing (no store, or one that cannot be read).
    pub fn empty() -> StoreLedger {
        StoreLedger {
            backups: Vec::new(),
            device: None,
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// Also require the backup's identity to match `device` (the modem connected now) in HW
    /// ID, PK hash and IMEI where both know them — not only the serial the guard asks by.
    pub fn for_device(mut self, device: &Identity) -> StoreLedger {
        self.device = Some(device.clone());
        self
    }

    /// Whether any complete backup is on file (of any unit).
    pub fn is_empty(&self) -> bool {
        self.backups.is_empty()
    }

    /// The complete backups of `unit`.
    pub fn backups_of(&self, unit: &str) -> Vec<&StoredBackup> {
        self.backups
            .iter()
            .filter(|b| b.manifest.unit() == unit)
            .collect()
    }

    fn file_ok(&self, bi: usize, fi: usize) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        *checked.entry((bi, fi)).or_insert_with(|| {
            let b = &self.backups[bi];
            match b.verify_file(&b.manifest.files[fi]) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(target: "qrescue::backup", "{}: {}", e.what, e.why);
                    false
                }
            }
        })
    }
}

impl BackupLedger for StoreLedger {
    fn verified_backup(&self, unit: &str, region: &Region) -> Option<VerifiedBackupRef> {
        // Newest first: the most recent copy of the unit's data.
        for (bi, b) in self.backups.iter().enumerate().rev() {
            if b.manifest.unit() != unit {
                continue;
            }
            if let Some(dev) = &self.device {
                if b.manifest.identity.same_unit(dev).is_err() {
                    continue;
                }
            }
            for (fi, f) in b.manifest.files.iter().enumerate() {
                let Some(label) = &f.partition else { continue };
                if f.region().same_bytes(region) && self.file_ok(bi, fi) {
                    return Some(VerifiedBackupRef::new(
                        unit,
                        label.clone(),
                        f.region(),
                        f.sha256.clone(),
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
