//! Free space for backups: statvfs at the backup folder against the bytes needed.

use std::path::Path;

use serde::Serialize;

use super::Finding;
use crate::explain::Severity;

/// `512 MiB`, `1.5 GiB`, `800 B` (binary units, as backups are sized in flash blocks).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A size as people type it: `536870912`, `512M`, `512MiB`, `1.5G`, `2GB`, `64k` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512M, 2G or a number of bytes)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} (use K, M, G or T)")),
    };
    let total = value * mult as f64;
    if !total.is_finite() || total < 0.0 || total > u64::MAX as f64 / 2.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(total as u64)
}

/// Space on the filesystem holding a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Space {
    /// Bytes an unprivileged user can still write.
    pub available: u64,
    /// Size of the filesystem.
    pub total: u64,
}

/// Read the free space at `dir` (statvfs).
pub fn free_space(dir: &Path) -> std::io::Result<Space> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let frag = s.fragment_size() as u64;
    Ok(Space {
        available: (s.blocks_available() as u64).saturating_mul(frag),
        total: (s.blocks() as u64).saturating_mul(frag),
    })
}

/// Headroom asked for on top of the backup itself (manifests, a second copy of a partition
/// while it is verified): 10 %.
fn with_margin(needed: u64) -> u64 {
    needed.saturating_add(needed / 10)
}

/// The finding for `space` at `dir` given `needed` bytes (None: unknown, only reported).
pub fn finding(dir: &Path, space: &Space, needed: Option<u64>) -> Finding {
    let free = bytes(space.available);
    let mut f = Finding::new("space", Severity::Info, String::new());
    match needed {
        None => {
            f.title = format!("Backup folder {}: {free} free", dir.display());
            f.detail = "A full backup of a NAND LTE module is at most its flash size (128–512 MiB for EC25/EG25-class modules); pass --need SIZE to check against a known size".into();
        }
        Some(n) if space.available < n => {
            f.severity = Severity::Error;
            f.title = format!(
                "Not enough room for the backup at {}: {free} free, {} needed",
                dir.display(),
                bytes(n)
            );
            f.detail = "A backup that cannot be completed leaves nothing to restore from; routers often lack the space (USERS.md §1 problem 10)".into();
            f.fixes = vec![
                "Choose a folder on a bigger disk or a USB stick: --backup-dir DIR".into(),
                "Or free space there first".into(),
            ];
        }
        Some(n) if space.available < with_margin(n) => {
            f.severity = Severity::Warning;
            f.title = format!(
                "Tight on room for the backup at {}: {free} free, {} needed",
                dir.display(),
                bytes(n)
            );
            f.detail = "Less than 10 % to spare for manifests and verification".into();
            f.fixes = vec!["Prefer a folder with more room: --backup-dir DIR".into()];
        }
        Some(n) => {
            f.title = format!(
                "Room for the backup at {}: {free} free, {} needed",
                dir.display(),
                bytes(n)
            );
        }
    }
    f
}
