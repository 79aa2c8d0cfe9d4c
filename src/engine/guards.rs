//! The backup gate: nothing that erases or overwrites device-unique data runs unless a verified
//! backup of exactly that data is on file.
//!
//! # Why
//!
//! "Erase all" and factory packages destroy data that exists only on this one unit: the RF
//! calibration (QCN/NV) and the IMEI. Without them the modem sits in `+CFUN: 5` (factory-test
//! mode) with no signal, and Quectel "cannot provide a generic" copy (USERS.md §1.1, §1.2,
//! §2.9). The EM20 *factory* run erases everything and programs `cefs.mbn` at sector 1280, the
//! EFS/NV area, while the EM12-G *update* XML leaves sectors 1280–8447 alone (PROTOCOLS.md
//! §7.3). So the plan is checked before the first byte is sent.
//!
//! # What
//!
//! - [`classify`] names the partitions holding device-unique data ([`DEVICE_UNIQUE`], each
//!   with the reason it is there).
//! - [`guard`] maps every step that erases, programs or patches ([`Touch`]) onto the partition
//!   table by sector range (by name when there is no table), detects erase-all, and asks the
//!   [`BackupLedger`] for a verified backup of exactly each device-unique partition touched.
//!   The result, [`GuardVerdict`], lists what is blocked and what is covered;
//!   [`GuardVerdict::into_error`] says in plain words what would be destroyed, why it is
//!   blocked, and what to do.
//! - [`Region`], [`VerifiedBackupRef`], [`BackupLedger`] and [`MemoryLedger`] (an in-memory
//!   ledger for tests, the emulator and dry runs) are the ledger side; the backup store
//!   implements [`BackupLedger`].
//!
//! The guard is pure: no I/O. The engine calls it after planning and before sending anything.

use std::fmt;

use crate::protocol::firehose::commands::StorageKind;
use crate::protocol::partitions::Partition;

/// A run of sectors on one physical partition (LUN).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Region {
    pub lun: u32,
    pub start_sector: u64,
    pub num_sectors: u64,
    /// Bytes per sector (NAND: the page size).
    pub sector_size: u32,
}

impl Region {
    /// `[start, end)` in bytes; `None` if it overflows.
    pub fn byte_range(&self) -> Option<(u64, u64)> {
        let ss = u64::from(self.sector_size);
        let start = self.start_sector.checked_mul(ss)?;
        let len = self.num_sectors.checked_mul(ss)?;
        Some((start, start.checked_add(len)?))
    }

    /// Whether both name exactly the same bytes of the same LUN (sector sizes may differ).
    pub fn same_bytes(&self, other: &Region) -> bool {
        self.lun == other.lun
            && self.byte_range().is_some()
            && self.byte_range() == other.byte_range()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LUN {} sectors {}..{} ({} × {} bytes)",
            self.lun,
            self.start_sector,
            self.start_sector.saturating_add(self.num_sectors),
            self.num_sectors,
            self.sector_size
        )
    }
}

/// Proof, handed out by a [`BackupLedger`], that a backup of one region of one unit was read
/// back and verified. It can only be made inside the crate (by a ledger), so front ends cannot
/// forge one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBackupRef {
    unit: String,
    label: String,
    region: Region,
    sha256: String,
}

impl VerifiedBackupRef {
    /// For ledger implementations only.
    pub(crate) fn new(
        unit: impl Into<String>,
        label: impl Into<String>,
        region: Region,
        sha256: impl Into<String>,
    ) -> Self {
        VerifiedBackupRef {
            unit: unit.into(),
            label: label.into(),
            region,
            sha256: sha256.into(),
        }
    }

    /// The unit (modem serial) the backup was taken from.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// The partition name the backup was taken of.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The SHA-256 of the verified copy (hex).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl fmt::Display for VerifiedBackupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.sha256.get(..12).unwrap_or(&self.sha256);
        write!(
            f,
            "backup of {} ({}) from unit {}, sha256 {}…",
            self.label, self.region, self.unit, short
        )
    }
}

/// Where verified backups are looked up. The backup store implements this; the guard only asks.
pub trait BackupLedger {
    /// A verified backup of exactly `region` (same LUN and bytes) taken from `unit`, if one is on
    /// file. A backup that was not read back and verified must not be returned.
    fn verified_backup(&self, unit: &str, region: &Region) -> Option<VerifiedBackupRef>;
}

/// A ledger in memory: for tests, the emulator and dry runs.
#[derive(Debug, Clone, Default)]
pub struct MemoryLedger {
    entries: Vec<(VerifiedBackupRef, bool)>,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a backup of `region` of `unit`; `verified` says whether it was read back and its
    /// hash matched. Unverified entries are kept but never count.
    pub fn record(
        &mut self,
        unit: &str,
        label: &str,
        region: Region,
        sha256: &str,
        verified: bool,
    ) -> &mut Self {
        self.entries.push((
            VerifiedBackupRef::new(unit, label, region, sha256),
            verified,
        ));
        self
    }
}

impl BackupLedger for MemoryLedger {
    fn verified_backup(&self, unit: &str, region: &Region) -> Option<VerifiedBackupRef> {
        self.entries
            .iter()
            .find(|(b, verified)| *verified && b.unit == unit && b.region.same_bytes(region))
            .map(|(b, _)| b.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Device-unique partitions
// ---------------------------------------------------------------------------------------------

/// On which storage a partition name means device-unique data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Any storage.
    Any,
    /// Only on NAND (the Quectel MIBIB layouts).
    Nand,
}

/// A partition name that holds device-unique data, and why qrescue thinks so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UniqueKind {
    /// Lower-case name as it appears in MIBIB/GPT tables (`0:` flash prefixes removed).
    pub name: &'static str,
    pub scope: Scope,
    /// Holds (a copy of) the modem's RF calibration.
    pub rf_calibration: bool,
    /// Holds (a copy of) the IMEI.
    pub imei: bool,
    /// What it holds, in plain words.
    pub holds: &'static str,
    /// Why it is on the list (sources).
    pub why: &'static str,
}

/// The device-unique partitions.
///
/// Considered and left off: `devinfo` (bootloader state that aboot recreates, not calibration),
/// `misc` (recovery messages; skipped by the EG25-G update XML but not unit data), `DDR` (DDR
/// training, regenerated at boot), `keystore`/`config`/`frp` (Android user data, not in modem
/// packages), `efs2apps` and `efs` (no source names them on a Quectel modem).
pub const DEVICE_UNIQUE: &[UniqueKind] = &[
    UniqueKind {
        name: "efs2",
        scope: Scope::Any,
        rf_calibration: true,
        imei: true,
        holds: "the modem's EFS with its NV items: RF calibration and IMEI",
        why: "The EM20 factory run programs cefs.mbn at sector 1280, the EFS/NV area \
              (PROTOCOLS.md §7.3); the EC25-E MIBIB puts efs2 at 0x500000, sector 1280 of 4 KiB \
              pages (realdata/logs/edl_ec25_mdm9207_sahara_nand_partitions.txt). Losing it \
              loses calibration (+CFUN: 5) and IMEI (USERS.md §1.1, §1.2). No image for it in \
              the EG25-G partition_nand.xml, and the real update XMLs skip it.",
    },
    UniqueKind {
        name: "sys_rev",
        scope: Scope::Any,
        rf_calibration: false,
        imei: false,
        holds: "unit data Quectel keeps beside the EFS, content not documented",
        why: "USERS.md §1.1 lists it with efs2/fsg/modemst/cust_info as data to back up; no \
              image for it in the EG25-G partition_nand.xml; the EG25-G update XML skips \
              sectors 1280–13183 (efs2, sys_rev, rawdata) and the EM12-G one 1280–8447.",
    },
    UniqueKind {
        name: "rawdata",
        scope: Scope::Any,
        rf_calibration: false,
        imei: false,
        holds: "unit data Quectel keeps beside the EFS, content not documented",
        why: "No image for it in the EG25-G partition_nand.xml, and it lies in the span both \
              real update XMLs leave alone (EG25-G 1280–13183; EC25-E MIBIB efs2, sys_rev, \
              rawdata = the EM12-G gap 1280–8447), so it is written on the unit, not shipped.",
    },
    UniqueKind {
        name: "cust_info",
        scope: Scope::Any,
        rf_calibration: false,
        imei: false,
        holds: "per-unit customer information, content not documented",
        why: "USERS.md §1.1 lists it as data to back up; no image for it in the EG25-G \
              partition_nand.xml, and the EG25-G update XML does not write it.",
    },
    UniqueKind {
        name: "sec",
        scope: Scope::Nand,
        rf_calibration: false,
        imei: false,
        holds: "security data written on the unit, content not documented",
        why: "On Quectel NAND it has no image in partition_nand.xml and the EG25-G update XML \
              does not write it. (On eMMC `sec` carries the package's sec.dat — ptool \
              rawprogram0.xml — so it is not guarded there.)",
    },
    UniqueKind {
        name: "modemst1",
        scope: Scope::Any,
        rf_calibration: true,
        imei: true,
        holds: "the modem's EFS, working copy 1: RF calibration and IMEI",
        why: "eMMC/UFS home of the modem EFS; ptool packages leave it empty (filename=\"\" in \
              the MSM8916 rawprogram0.xml). 'Contains your IMEI and modem calibration data' \
              (forum.openstick.de t=5, MSM8916); USERS.md §1.1 names modemst.",
    },
    UniqueKind {
        name: "modemst2",
        scope: Scope::Any,
        rf_calibration: true,
        imei: true,
        holds: "the modem's EFS, working copy 2: RF calibration and IMEI",
        why: "As modemst1 (the two alternate); empty in ptool packages.",
    },
    UniqueKind {
        name: "fsg",
        scope: Scope::Any,
        rf_calibration: true,
        imei: true,
        holds: "the golden copy of the modem EFS the modem restores from",
        why: "USERS.md §1.1 names fsg; ptool packages leave it empty; it holds the backup copy \
              of modemst1/2 (xda-developers thread p=49709560; forum.openstick.de t=5).",
    },
    UniqueKind {
        name: "fsc",
        scope: Scope::Any,
        rf_calibration: false,
        imei: false,
        holds: "the modem file system's cookie, which decides when EFS is restored from fsg",
        why: "Empty in ptool packages; 'Cookie partition to store Modem File System's cookies' \
              (alephgsm.com, Qualcomm partition list); listed with modemst1/2 and fsg as never \
              to erase (forum.openstick.de t=5).",
    },
    UniqueKind {
        name: "ssd",
        scope: Scope::Any,
        rf_calibration: false,
        imei: false,
        holds: "the secure-storage keys of the unit",
        why: "Empty in ptool packages (MSM8916 rawprogram0.xml); it stores encrypted RSA keys \
              for the ssd diag module (alephgsm.com, Qualcomm partition list).",
    },
    UniqueKind {
        name: "persist",
        scope: Scope::Any,
        rf_calibration: false,
        imei: false,
        holds: "per-unit calibration and identity files: Wi-Fi/BT calibration, MAC addresses",
        why: "Survives factory resets and is unique to the unit (alephgsm.com; on some phones \
              the IMEI is rebuilt from it, xda-developers t=3806064); ptool packages ship a \
              generic persist.img (MSM8916 rawprogram0.xml), exactly the overwrite to stop.",
    },
];

/// The device-unique kind for a partition name (case-insensitive, `0:` flash prefix ignored),
/// on `storage`.
pub fn classify(name: &str, storage: StorageKind) -> Option<&'static UniqueKind> {
    let name = name.trim();
    let name = match name.split_once(':') {
        Some((flash, rest)) if !flash.is_empty() && flash.bytes().all(|b| b.is_ascii_digit()) => {
            rest
        }
        _ => name,
    };
    DEVICE_UNIQUE.iter().find(|k| {
        k.name.eq_ignore_ascii_case(name) && (k.scope == Scope::Any || storage == StorageKind::Nand)
    })
}

// ---------------------------------------------------------------------------------------------
// The guard
// ---------------------------------------------------------------------------------------------

/// What a step does to the storage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TouchAction {
    Erase,
    Program { file: String },
    Patch,
}

/// One step of a plan that changes the storage, as the guard sees it (independent of the
/// planner's own types).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Touch {
    /// The plan step number (reported back).
    pub step: usize,
    pub action: TouchAction,
    pub lun: u32,
    pub start_sector: u64,
    /// `None` (or `Some(0)`): to the end of the LUN, or unknown — treated as reaching the end.
    pub sectors: Option<u64>,
    pub sector_size: u32,
    /// The label (or a display name) of the step.
    pub name: String,
}

impl Touch {
    /// `[start, end)`; `end == None` means "to the end".
    fn range(&self) -> (u64, Option<u64>) {
        let len = self.sectors.filter(|&n| n > 0);
        (
            self.start_sector,
            len.map(|n| self.start_sector.saturating_add(n)),
        )
    }

    fn overlaps(&self, p: &Partition) -> bool {
        let (start, end) = self.range();
        p.lun == self.lun
            && p.num_sectors > 0
            && start < p.end_sector()
            && end.is_none_or(|e| e > p.start_sector)
    }

    fn verb(&self) -> String {
        match &self.action {
            TouchAction::Erase => format!("erases {}", self.name),
            TouchAction::Program { file } => format!("writes {file} to {}", self.name),
            TouchAction::Patch => format!("patches {}", self.name),
        }
    }

    fn writes_cefs(&self) -> bool {
        match &self.action {
            TouchAction::Program { file } => {
                let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
                base.eq_ignore_ascii_case("cefs.mbn")
            }
            _ => false,
        }
    }
}

/// A device-unique partition a step would destroy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UniqueHit {
    /// The partition's name as the table (or the step) gives it.
    pub partition: String,
    pub kind: &'static UniqueKind,
    /// Where it lies; `None` when qrescue cannot tell (no table and no length).
    pub region: Option<Region>,
}

/// A step the guard refuses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blocked {
    pub step: usize,
    /// The device-unique partitions it would destroy without a verified backup.
    pub partitions: Vec<UniqueHit>,
    /// The step erases the whole storage (or every partition of its LUN).
    pub erase_all: bool,
    pub why: String,
    pub next: String,
}

/// A device-unique partition a step touches, with the verified backup that covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    pub step: usize,
    pub partition: String,
    pub backup: VerifiedBackupRef,
}

/// What the guard decided about a whole plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardVerdict {
    /// No step is blocked.
    pub allowed: bool,
    pub blocked: Vec<Blocked>,
    pub covered: Vec<Covered>,
}

/// The command that makes the backup the guard asks for.
/// (The command arrives with the backup work; the guard only names it.)
pub const BACKUP_COMMAND: &str = "qrescue backup";

/// Check every touch of a plan against the device-unique partitions of `table` (the device's
/// MIBIB/GPT, or the package's, in the same sector units as the touches) and the verified
/// backups of `unit` in `ledger`.
///
/// A touch is mapped onto the table by range on its LUN; on a LUN without a table, by its name.
/// A device-unique name on the touch itself always counts as well (belt and braces when the
/// table and the plan disagree). An erase without a length from sector 0, or one covering
/// every partition of its LUN, is an erase-all. Each device-unique partition hit needs a
/// verified backup of exactly its region; one whose extent is unknown can never be covered.
pub fn guard(
    touches: &[Touch],
    table: &[Partition],
    storage: StorageKind,
    unit: &str,
    ledger: &dyn BackupLedger,
) -> GuardVerdict {
    let mut blocked = Vec::new();
    let mut covered = Vec::new();
    for t in touches {
        let on_lun: Vec<&Partition> = table.iter().filter(|p| p.lun == t.lun).collect();
        let (start, end) = t.range();
        let erase_all = t.action == TouchAction::Erase
            && ((start == 0 && end.is_none()) || covers_all(t, &on_lun));
        let mut hits: Vec<UniqueHit> = Vec::new();
        for p in on_lun.iter().filter(|p| t.overlaps(p)) {
            if let Some(kind) = classify(&p.name, storage) {
                hits.push(UniqueHit {
                    partition: p.name.clone(),
                    kind,
                    region: Some(Region {
                        lun: p.lun,
                        start_sector: p.start_sector,
                        num_sectors: p.num_sectors,
                        sector_size: t.sector_size,
                    }),
                });
            }
        }
        if let Some(kind) = classify(&t.name, storage) {
            if !hits.iter().any(|h| std::ptr::eq(h.kind, kind)) {
                let named = on_lun
                    .iter()
                    .find(|p| classify(&p.name, storage).is_some_and(|k| std::ptr::eq(k, kind)));
                let region = match named {
                    Some(p) => Some(Region {
                        lun: p.lun,
                        start_sector: p.start_sector,
                        num_sectors: p.num_sectors,
                        sector_size: t.sector_size,
                    }),
                    None => end.map(|e| Region {
                        lun: t.lun,
                        start_sector: start,
                        num_sectors: e - start,
                        sector_size: t.sector_size,
                    }),
                };
                hits.push(UniqueHit {
                    partition: named.map_or_else(|| t.name.clone(), |p| p.name.clone()),
                    kind,
                    region,
                });
            }
        }
        let mut missing = Vec::new();
        for hit in hits {
            let backup = hit
                .region
                .as_ref()
                .and_then(|r| ledger.verified_backup(unit, r));
            match backup {
                Some(backup) => covered.push(Covered {
                    step: t.step,
                    partition: hit.partition,
                    backup,
                }),
                None => missing.push(hit),
            }
        }
        // An erase-all where qrescue cannot see what lies on the LUN is blocked even when no
        // device-unique partition is known: the EFS could be anywhere on it.
        let blind_erase_all = erase_all && on_lun.is_empty();
        if !missing.is_empty() || blind_erase_all {
            let (why, next) = explain(t, &missing, erase_all, on_lun.is_empty(), unit);
            blocked.push(Blocked {
                step: t.step,
                partitions: missing,
                erase_all,
                why,
                next,
            });
        }
    }
    GuardVerdict {
        allowed: blocked.is_empty(),
        blocked,
        covered,
    }
}

/// Whether the touch's range covers every (sized) partition of the LUN.
fn covers_all(t: &Touch, on_lun: &[&Partition]) -> bool {
    let sized: Vec<&&Partition> = on_lun.iter().filter(|p| p.num_sectors > 0).collect();
    let (start, end) = t.range();
    let lo = sized.iter().map(|p| p.start_sector).min();
    let hi = sized.iter().map(|p| p.end_sector()).max();
    match (lo, hi) {
        (Some(lo), Some(hi)) => sized.len() > 1 && start <= lo && end.is_none_or(|e| e >= hi),
        _ => false,
    }
}

fn names(hits: &[UniqueHit]) -> String {
    let mut v: Vec<&str> = Vec::new();
    for h in hits {
        if !v.contains(&h.partition.as_str()) {
            v.push(&h.partition);
        }
    }
    v.join(", ")
}

fn explain(
    t: &Touch,
    missing: &[UniqueHit],
    erase_all: bool,
    no_table: bool,
    unit: &str,
) -> (String, String) {
    let what = if erase_all {
        format!("step {} erases the whole flash (LUN {})", t.step, t.lun)
    } else if t.writes_cefs() {
        format!(
            "step {} writes cefs.mbn, the factory package's generic EFS image, to {}",
            t.step, t.name
        )
    } else {
        format!("step {} {}", t.step, t.verb())
    };
    let mut why = if missing.is_empty() {
        format!(
            "{what}, and without a partition table qrescue cannot see which of its parts hold \
             this modem's calibration and IMEI"
        )
    } else {
        let holds: Vec<String> = missing
            .iter()
            .map(|h| format!("{} ({})", h.partition, h.kind.holds))
            .collect();
        format!("{what}, destroying {}", holds.join("; "))
    };
    let unknown_extent = missing.iter().any(|h| h.region.is_none());
    if !missing.is_empty() {
        if unknown_extent {
            why.push_str(
                "; where these partitions lie is unknown (no partition table was read), so no \
                 backup can be matched to them",
            );
        } else {
            why.push_str(&format!(
                "; no verified backup of exactly {} of unit {unit} is on file",
                names(missing)
            ));
        }
    }
    let mut next = Vec::new();
    if erase_all || t.writes_cefs() {
        next.push(
            "Choose the package's _update XML instead of _factory (or of an erase-all): it \
             leaves the EFS area alone."
                .to_string(),
        );
    }
    if no_table || unknown_extent {
        next.push("Let qrescue read the partition table (MIBIB/GPT) of the modem first.".into());
    }
    let list = if missing.is_empty() {
        "the EFS partitions (efs2 on NAND; modemst1, modemst2, fsg on eMMC/UFS)".to_string()
    } else {
        names(missing)
    };
    let or = if next.is_empty() { "B" } else { "Or b" };
    next.push(format!(
        "{or}ack up {list} of this modem first ({BACKUP_COMMAND}); once the copy is verified \
         by read-back, run this again."
    ));
    (why, next.join(" "))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl GuardVerdict {
    /// The device-unique partitions (names, first-seen order) blocked steps would destroy.
    pub fn blocked_partitions(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for b in &self.blocked {
            for h in &b.partitions {
                if !v.contains(&h.partition) {
                    v.push(h.partition.clone());
                }
            }
        }
        v
    }

    /// `None` when allowed; otherwise an error (kind Failure) that says what would be
    /// destroyed, why it is blocked, and what to do.
    pub fn into_error(self) -> Option<crate::Error> {
        if self.allowed {
            return None;
        }
        let parts = self.blocked_partitions();
        let erase_all = self.blocked.iter().any(|b| b.erase_all);
        let hits = || self.blocked.iter().flat_map(|b| b.partitions.iter());
        let rf = hits().any(|h| h.kind.rf_calibration) || erase_all;
        let imei = hits().any(|h| h.kind.imei) || erase_all;
        let target = if parts.is_empty() {
            "data unique to this modem".to_string()
        } else {
            format!("data unique to this modem ({})", parts.join(", "))
        };
        let what = format!(
            "qrescue stopped before sending anything: {} of this plan would destroy {target}",
            if self.blocked.len() == 1 {
                format!("step {}", self.blocked[0].step)
            } else {
                format!("{} steps", self.blocked.len())
            }
        );
        let mut why: Vec<String> = self.blocked.iter().map(|b| capitalize(&b.why)).collect();
        let consequence = match (rf, imei) {
            (true, true) => {
                "Without its RF calibration and IMEI the modem would sit in +CFUN: 5 with no \
                 signal for good; they are made at the factory for each unit, and only a backup \
                 of this unit can bring them back."
            }
            (true, false) => {
                "Without its RF calibration the modem would sit in +CFUN: 5 with no signal for \
                 good; only a backup of this unit can bring it back."
            }
            (false, true) => "Its IMEI would be lost; only a backup of this unit restores it.",
            (false, false) => {
                "This data is written on the unit, not shipped in any package; only a backup \
                 of this unit restores it."
            }
        };
        why.push(consequence.to_string());
        let mut next: Vec<String> = Vec::new();
        for b in &self.blocked {
            if !next.contains(&b.next) {
                next.push(b.next.clone());
            }
        }
        Some(crate::Error::failure(what, why.join(". "), next.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::rawprogram::{parse_rawprogram, RawEntry};
    use crate::protocol::partitions::{parse_gpt, parse_mibib_table};
    use crate::sim::firehose::mibib;
    use crate::sim::firehose::storage::{Storage, StorageProfile};
    use proptest::prelude::*;

    const UNIT: &str = "0cf94c64";
    const SHA: &str = "5f1e0c3a5f1e0c3a5f1e0c3a5f1e0c3a5f1e0c3a5f1e0c3a5f1e0c3a5f1e0c3a";

    /// The EM12-G NAND table (4 KiB pages, 64 per block, 2048 blocks) as the host reads it: a
    /// MIBIB table page built by the emulator and parsed by the host parser.
    fn em12g_table() -> Vec<Partition> {
        let parts = mibib::resolve(&mibib::layout_em12g(), 256 * 1024, 2048);
        let page = mibib::table_page(4096, &parts);
        parse_mibib_table(&page, 64, Some(2048)).unwrap()
    }

    fn eg25g_table() -> Vec<Partition> {
        let parts = mibib::resolve(&mibib::layout_eg25g(), 128 * 1024, 2048);
        let page = mibib::table_page(2048, &parts);
        parse_mibib_table(&page, 64, Some(2048)).unwrap()
    }

    fn find<'a>(table: &'a [Partition], name: &str) -> &'a Partition {
        table
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .unwrap()
    }

    fn region_of(p: &Partition, sector_size: u32) -> Region {
        Region {
            lun: p.lun,
            start_sector: p.start_sector,
            num_sectors: p.num_sectors,
            sector_size,
        }
    }

    /// rawprogram entries as the engine would send them: programs without a file and entries
    /// with symbolic starts the test cannot resolve are left out (qdl skips the former).
    fn touches_from_xml(xml: &[u8]) -> Vec<Touch> {
        parse_rawprogram(xml)
            .unwrap()
            .iter()
            .enumerate()
            .filter_map(|(step, e)| match e {
                RawEntry::Program(p) => Some(Touch {
                    step,
                    action: TouchAction::Program {
                        file: p.path.as_ref()?.file_name().to_string(),
                    },
                    lun: p.physical_partition_number,
                    start_sector: p.start_sector.literal()?,
                    sectors: Some(p.num_partition_sectors),
                    sector_size: p.sector_size,
                    name: p.display_name.clone(),
                }),
                RawEntry::Erase(x) => Some(Touch {
                    step,
                    action: TouchAction::Erase,
                    lun: x.physical_partition_number.unwrap_or(0),
                    start_sector: match &x.start_sector {
                        Some(s) => s.literal()?,
                        None => 0,
                    },
                    sectors: x.num_partition_sectors,
                    sector_size: x.sector_size.unwrap_or(4096),
                    name: x.display_name.clone(),
                }),
                RawEntry::Other(_) => None,
            })
            .collect()
    }

    fn em12g_update() -> Vec<Touch> {
        let xml = include_bytes!(
            "../../tests/data/realxml/quectel_em12g_sdx20__rawprogram_nand_p4K_b256K_update.xml"
        );
        touches_from_xml(xml)
    }

    /// An EM20-style factory plan (PROTOCOLS.md §7.3): the update steps plus cefs.mbn
    /// programmed at sector 1280, the EFS/NV area.
    fn factory_plan() -> Vec<Touch> {
        let mut plan = em12g_update();
        plan.push(Touch {
            step: plan.len(),
            action: TouchAction::Program {
                file: "..\\cefs.mbn".into(),
            },
            lun: 0,
            start_sector: 1280,
            sectors: Some(2048),
            sector_size: 4096,
            name: "EFS2".into(),
        });
        plan
    }

    fn region(lun: u32, start: u64, n: u64, ss: u32) -> Region {
        Region {
            lun,
            start_sector: start,
            num_sectors: n,
            sector_size: ss,
        }
    }

    #[test]
    fn ledger_matches_exact_verified_regions_of_the_same_unit() {
        let efs = region(0, 1280, 5632, 4096);
        let mut l = MemoryLedger::new();
        l.record("0cf94c64", "efs2", efs.clone(), &"ab".repeat(32), true)
            .record("0cf94c64", "fsg", region(0, 100, 8, 512), "cd", false);
        let got = l.verified_backup("0cf94c64", &efs).unwrap();
        assert_eq!((got.unit(), got.label()), ("0cf94c64", "efs2"));
        assert!(got.to_string().contains("efs2"));
        // The same bytes in other units of sectors count.
        assert!(l
            .verified_backup("0cf94c64", &region(0, 1280 * 8, 5632 * 8, 512))
            .is_some());
        // Another unit, another range, another LUN, an unverified copy: none count.
        assert!(l.verified_backup("other", &efs).is_none());
        assert!(l
            .verified_backup("0cf94c64", &region(0, 1280, 5631, 4096))
            .is_none());
        assert!(l
            .verified_backup("0cf94c64", &region(1, 1280, 5632, 4096))
            .is_none());
        assert!(l
            .verified_backup("0cf94c64", &region(0, 100, 8, 512))
            .is_none());
        // Overflowing regions never match.
        let huge = region(0, u64::MAX, 2, 4096);
        assert!(!huge.same_bytes(&huge.clone()));
    }

    #[test]
    fn classification() {
        for (name, storage, want) in [
            ("0:EFS2", StorageKind::Nand, Some("efs2")),
            ("efs2", StorageKind::Emmc, Some("efs2")),
            ("MODEMST1", StorageKind::Ufs, Some("modemst1")),
            ("modemst2", StorageKind::Emmc, Some("modemst2")),
            (" fsg ", StorageKind::Emmc, Some("fsg")),
            ("fsc", StorageKind::Emmc, Some("fsc")),
            ("ssd", StorageKind::Ufs, Some("ssd")),
            ("persist", StorageKind::Emmc, Some("persist")),
            ("0:sys_rev", StorageKind::Nand, Some("sys_rev")),
            ("0:RAWDATA", StorageKind::Nand, Some("rawdata")),
            ("0:cust_info", StorageKind::Nand, Some("cust_info")),
            ("0:sec", StorageKind::Nand, Some("sec")),
            ("sec", StorageKind::Emmc, None),
            ("modem", StorageKind::Nand, None),
            ("system", StorageKind::Emmc, None),
            ("devinfo", StorageKind::Emmc, None),
            ("x:efs2", StorageKind::Nand, None),
            ("", StorageKind::Nand, None),
        ] {
            assert_eq!(classify(name, storage).map(|k| k.name), want, "{name}");
        }
        for k in DEVICE_UNIQUE {
            assert!(!k.holds.is_empty() && !k.why.is_empty(), "{}", k.name);
            assert_eq!(k.name, k.name.to_ascii_lowercase());
        }
        let calibration: Vec<&str> = DEVICE_UNIQUE
            .iter()
            .filter(|k| k.rf_calibration && k.imei)
            .map(|k| k.name)
            .collect();
        assert_eq!(calibration, ["efs2", "modemst1", "modemst2", "fsg"]);
    }

    #[test]
    fn em12g_update_xml_passes_on_a_realistic_table() {
        let table = em12g_table();
        // The layout really has EFS2 over 1280.., the span the update leaves alone.
        let efs = find(&table, "EFS2");
        assert_eq!(efs.start_sector, 1280);
        let plan = em12g_update();
        assert_eq!(plan.len(), 24);
        let v = guard(&plan, &table, StorageKind::Nand, UNIT, &MemoryLedger::new());
        assert!(v.allowed, "{:?}", v.blocked);
        assert!(v.blocked.is_empty() && v.covered.is_empty());
        assert!(v.into_error().is_none());
    }

    #[test]
    fn eg25g_update_xml_without_labels_passes() {
        let xml = include_bytes!(
            "../../tests/data/realxml/quectel_eg25g_mdm9607__rawprogram_nand_p2K_b128K_update.xml"
        );
        let plan = touches_from_xml(xml);
        assert!(plan.len() > 10);
        let v = guard(
            &plan,
            &eg25g_table(),
            StorageKind::Nand,
            UNIT,
            &MemoryLedger::new(),
        );
        assert!(v.allowed, "{:?}", v.blocked);
    }

    #[test]
    fn factory_cefs_over_efs2_is_blocked_before_anything_is_sent() {
        let table = em12g_table();
        let plan = factory_plan();
        let v = guard(&plan, &table, StorageKind::Nand, UNIT, &MemoryLedger::new());
        assert!(!v.allowed);
        assert_eq!(v.blocked.len(), 1);
        let b = &v.blocked[0];
        assert_eq!(b.step, plan.len() - 1);
        assert!(!b.erase_all);
        assert_eq!(b.partitions.len(), 1);
        assert_eq!(b.partitions[0].partition, "EFS2");
        assert_eq!(
            b.partitions[0].region,
            Some(region_of(find(&table, "EFS2"), 4096))
        );
        assert!(b.why.contains("cefs.mbn"), "{}", b.why);
        assert_eq!(v.blocked_partitions(), ["EFS2"]);
        let e = v.into_error().unwrap();
        assert_eq!(e.kind, crate::error::ErrorKind::Failure);
        let text = e.to_string();
        for needle in [
            "before sending anything",
            "EFS2",
            "RF calibration",
            "IMEI",
            "+CFUN: 5 with no signal for good",
            "_update XML instead of _factory",
            "qrescue backup",
            UNIT,
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn a_verified_backup_of_exactly_efs2_lets_the_factory_plan_pass() {
        let table = em12g_table();
        let efs = region_of(find(&table, "EFS2"), 4096);
        let mut ledger = MemoryLedger::new();
        ledger.record(UNIT, "EFS2", efs.clone(), SHA, true);
        let v = guard(&factory_plan(), &table, StorageKind::Nand, UNIT, &ledger);
        assert!(v.allowed, "{:?}", v.blocked);
        assert_eq!(v.covered.len(), 1);
        assert_eq!(v.covered[0].partition, "EFS2");
        assert_eq!(v.covered[0].backup.region(), &efs);
        assert!(v.into_error().is_none());
    }

    #[test]
    fn other_backups_do_not_count() {
        let table = em12g_table();
        let efs = region_of(find(&table, "EFS2"), 4096);
        let shorter = Region {
            num_sectors: efs.num_sectors - 64,
            ..efs.clone()
        };
        // Exactly the bytes cefs.mbn covers is not the partition either.
        let written = Region {
            num_sectors: 2048,
            ..efs.clone()
        };
        let sys_rev = region_of(find(&table, "sys_rev"), 4096);
        let ledgers: Vec<MemoryLedger> = vec![
            {
                let mut l = MemoryLedger::new();
                l.record(UNIT, "EFS2", shorter, SHA, true);
                l
            },
            {
                let mut l = MemoryLedger::new();
                l.record(UNIT, "EFS2", written, SHA, true);
                l
            },
            {
                let mut l = MemoryLedger::new();
                l.record(UNIT, "sys_rev", sys_rev, SHA, true);
                l
            },
            {
                let mut l = MemoryLedger::new();
                l.record("another-unit", "EFS2", efs.clone(), SHA, true);
                l
            },
            {
                let mut l = MemoryLedger::new();
                l.record(UNIT, "EFS2", efs.clone(), SHA, false);
                l
            },
        ];
        for (i, ledger) in ledgers.iter().enumerate() {
            let v = guard(&factory_plan(), &table, StorageKind::Nand, UNIT, ledger);
            assert!(!v.allowed, "ledger {i} should not count");
            assert!(v.covered.is_empty());
        }
    }

    #[test]
    fn erase_all_is_blocked() {
        let table = em12g_table();
        let unique: Vec<&str> = table
            .iter()
            .filter(|p| classify(&p.name, StorageKind::Nand).is_some())
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(unique, ["EFS2", "sys_rev", "RAWDATA", "cust_info", "sec"]);
        let erase = |start, sectors| Touch {
            step: 0,
            action: TouchAction::Erase,
            lun: 0,
            start_sector: start,
            sectors,
            sector_size: 4096,
            name: "all".into(),
        };
        // No range; the whole device by numbers; `firehose -e`-style with a table and without.
        for t in [erase(0, None), erase(0, Some(131_072)), erase(0, Some(0))] {
            let v = guard(
                std::slice::from_ref(&t),
                &table,
                StorageKind::Nand,
                UNIT,
                &MemoryLedger::new(),
            );
            assert!(!v.allowed);
            assert!(v.blocked[0].erase_all, "{t:?}");
            assert_eq!(v.blocked_partitions(), unique);
            let text = v.into_error().unwrap().to_string();
            assert!(text.contains("erases the whole flash"), "{text}");
            assert!(text.contains("+CFUN: 5"), "{text}");

            // Without a table only an erase without a length is known to reach everything; a
            // numbered range is judged by the names it carries (see `without_a_table_names_decide`).
            if t.sectors.is_some_and(|n| n > 0) {
                continue;
            }
            let v = guard(&[t], &[], StorageKind::Nand, UNIT, &MemoryLedger::new());
            assert!(!v.allowed);
            assert!(v.blocked[0].erase_all);
            let text = v.into_error().unwrap().to_string();
            assert!(text.contains("partition table"), "{text}");
            assert!(text.contains("IMEI"), "{text}");
        }
        // With every device-unique partition backed up and verified, even erase-all passes.
        let mut ledger = MemoryLedger::new();
        for name in &unique {
            ledger.record(UNIT, name, region_of(find(&table, name), 4096), SHA, true);
        }
        let v = guard(&[erase(0, None)], &table, StorageKind::Nand, UNIT, &ledger);
        assert!(v.allowed, "{:?}", v.blocked);
        assert_eq!(v.covered.len(), unique.len());
        // A plain partition erase is not erase-all.
        let tz = find(&table, "TZ");
        let v = guard(
            &[erase(tz.start_sector, Some(tz.num_sectors))],
            &table,
            StorageKind::Nand,
            UNIT,
            &MemoryLedger::new(),
        );
        assert!(v.allowed);
    }

    /// The MSM8916 ptool layout (modem … userdata) of the emulated eMMC, read back through the
    /// host GPT parser.
    fn msm8916_table() -> Vec<Partition> {
        let storage = Storage::new(&StorageProfile::emmc_msm8916());
        let head = storage.read_sectors(0, 0, 34).unwrap();
        parse_gpt(&head, 512).unwrap()
    }

    fn program(step: usize, lun: u32, start: u64, sectors: u64, ss: u32, name: &str) -> Touch {
        Touch {
            step,
            action: TouchAction::Program {
                file: format!("{name}.img"),
            },
            lun,
            start_sector: start,
            sectors: Some(sectors),
            sector_size: ss,
            name: name.into(),
        }
    }

    #[test]
    fn emmc_plan_leaving_modemst_and_fsg_alone_passes_and_a_write_over_fsg_is_blocked() {
        let table = msm8916_table();
        let mut plan: Vec<Touch> = ["modem", "sbl1", "rpm", "tz", "aboot", "boot", "system"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let p = find(&table, n);
                program(i, 0, p.start_sector, p.num_sectors, 512, n)
            })
            .collect();
        let v = guard(&plan, &table, StorageKind::Emmc, UNIT, &MemoryLedger::new());
        assert!(v.allowed, "{:?}", v.blocked);

        // An image that runs past the end of `modem`… no: one aimed at fsg.
        let fsg = find(&table, "fsg");
        plan.push(program(7, 0, fsg.start_sector, 16, 512, "oops"));
        let v = guard(&plan, &table, StorageKind::Emmc, UNIT, &MemoryLedger::new());
        assert!(!v.allowed);
        assert_eq!(v.blocked.len(), 1);
        assert_eq!(v.blocked[0].step, 7);
        assert_eq!(v.blocked_partitions(), ["fsg"]);
        let text = v.into_error().unwrap().to_string();
        assert!(text.contains("writes oops.img to oops"), "{text}");
        assert!(text.contains("golden copy"), "{text}");

        // The same sectors on another LUN are another place.
        let v = guard(
            &[program(0, 1, fsg.start_sector, 16, 512, "boot-area")],
            &table,
            StorageKind::Emmc,
            UNIT,
            &MemoryLedger::new(),
        );
        assert!(v.allowed);
    }

    #[test]
    fn real_ptool_package_is_blocked_only_for_its_generic_persist_image() {
        let xml =
            include_bytes!("../../tests/data/realxml/qcom_emmc_msm8916_ptool__rawprogram0.xml");
        let plan = touches_from_xml(xml);
        let v = guard(
            &plan,
            &msm8916_table(),
            StorageKind::Emmc,
            UNIT,
            &MemoryLedger::new(),
        );
        assert!(!v.allowed);
        assert_eq!(v.blocked_partitions(), ["persist"]);
    }

    #[test]
    fn without_a_table_names_decide() {
        let t = Touch {
            step: 3,
            action: TouchAction::Erase,
            lun: 0,
            start_sector: 1280,
            sectors: Some(5632),
            sector_size: 4096,
            name: "0:EFS2".into(),
        };
        let v = guard(
            std::slice::from_ref(&t),
            &[],
            StorageKind::Nand,
            UNIT,
            &MemoryLedger::new(),
        );
        assert!(!v.allowed);
        assert_eq!(
            v.blocked[0].partitions[0]
                .region
                .as_ref()
                .unwrap()
                .start_sector,
            1280
        );
        // A backup of exactly the touched range counts when there is no table to say more.
        let mut ledger = MemoryLedger::new();
        ledger.record(
            UNIT,
            "EFS2",
            Region {
                lun: 0,
                start_sector: 1280,
                num_sectors: 5632,
                sector_size: 4096,
            },
            SHA,
            true,
        );
        assert!(
            guard(
                std::slice::from_ref(&t),
                &[],
                StorageKind::Nand,
                UNIT,
                &ledger
            )
            .allowed
        );
        // Without a length the extent is unknown: never covered; the advice says read the table.
        let open = Touch {
            sectors: None,
            ..t.clone()
        };
        let v = guard(&[open], &[], StorageKind::Nand, UNIT, &ledger);
        assert!(!v.allowed);
        let text = v.into_error().unwrap().to_string();
        assert!(text.contains("read the partition table"), "{text}");
        // Unknown names without a table pass (nothing says they hold unit data).
        let modem = Touch {
            name: "modem".into(),
            start_sector: 21824,
            ..t
        };
        assert!(guard(&[modem], &[], StorageKind::Nand, UNIT, &MemoryLedger::new()).allowed);
    }

    #[test]
    fn a_unique_name_counts_even_when_the_table_disagrees() {
        let table = em12g_table();
        // A step labelled EFS2 aimed at the TZ sectors: blocked, and the backup it needs is the
        // table's EFS2.
        let tz = find(&table, "TZ");
        let t = program(0, 0, tz.start_sector, 16, 4096, "EFS2");
        let v = guard(&[t], &table, StorageKind::Nand, UNIT, &MemoryLedger::new());
        assert!(!v.allowed);
        assert_eq!(
            v.blocked[0].partitions[0].region,
            Some(region_of(find(&table, "EFS2"), 4096))
        );
    }

    fn arb_table() -> impl Strategy<Value = Vec<Partition>> {
        proptest::collection::vec(
            (
                0u32..2,
                proptest::sample::select(vec!["EFS2", "modem", "fsg", "sec", "boot", "persist"]),
                0u64..1000,
                0u64..300,
            ),
            0..8,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(lun, name, start, n)| Partition {
                    lun,
                    name: name.into(),
                    start_sector: start,
                    num_sectors: n,
                })
                .collect()
        })
    }

    fn arb_touch() -> impl Strategy<Value = Touch> {
        (
            0usize..50,
            0u8..3,
            0u32..2,
            prop_oneof![0u64..1200, Just(u64::MAX - 1), Just(u64::MAX)],
            proptest::option::of(prop_oneof![0u64..1500, Just(u64::MAX)]),
            prop_oneof![Just(512u32), Just(4096u32), Just(0u32), Just(u32::MAX)],
            proptest::sample::select(vec!["", "efs2", "boot", "0:sec", "x"]),
        )
            .prop_map(|(step, a, lun, start, sectors, ss, name)| Touch {
                step,
                action: match a {
                    0 => TouchAction::Erase,
                    1 => TouchAction::Program {
                        file: "f.bin".into(),
                    },
                    _ => TouchAction::Patch,
                },
                lun,
                start_sector: start,
                sectors,
                sector_size: ss,
                name: name.into(),
            })
    }

    proptest! {
        #[test]
        fn guard_never_panics_and_never_lets_an_unbacked_overlap_through(
            table in arb_table(),
            touches in proptest::collection::vec(arb_touch(), 0..6),
            storage in proptest::sample::select(vec![StorageKind::Nand, StorageKind::Emmc]),
        ) {
            let v = guard(&touches, &table, storage, UNIT, &MemoryLedger::new());
            let overlap = touches.iter().any(|t| {
                table.iter().any(|p| classify(&p.name, storage).is_some() && t.overlaps(p))
                    || classify(&t.name, storage).is_some()
            });
            if overlap {
                prop_assert!(!v.allowed);
            }
            prop_assert_eq!(v.allowed, v.blocked.is_empty());
            prop_assert!(v.covered.is_empty());
            let allowed = v.allowed;
            let e = v.into_error();
            prop_assert_eq!(e.is_none(), allowed);
        }
    }
}
