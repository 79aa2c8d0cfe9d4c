//! The backup gate: nothing that erases or overwrites device-unique data runs unless a verified
//! backup of exactly that data is on file.
//!
//! This file holds the ledger side: [`Region`], [`VerifiedBackupRef`], the [`BackupLedger`]
//! trait the backup store implements, and [`MemoryLedger`], an in-memory ledger for tests and
//! the emulator.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
