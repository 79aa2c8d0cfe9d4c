//! An NV/EFS backup over DIAG, for a modem in normal mode: a documented set of NV items and the
//! EFS2 files of the NV and calibration trees, read over the DM port and kept in the backup store
//! ([`Store::begin_nv_efs`]: atomic, sealed sha256 manifest, never overwritten, every file read
//! back from disk) with the normal-mode identity.
//!
//! # What is read
//!
//! - NV items ([`NV_ITEMS`]), each with why it is kept:
//!   - 550 `NV_UE_IMEI_I`: the IMEI (PROTOCOLS.md §6; USERS.md §1.2: an IMEI comes back only
//!     from this unit's own backup or its label);
//!   - 2285 `NV_UE_IMEISV_I`: the IMEI software-version number kept beside it;
//!   - 1943 `NV_MEID_I`: the MEID, the per-unit identity of CDMA-capable units;
//!   - 453 `NV_FTM_MODE_I`: the factory-test-mode flag, to tell afterwards whether the unit was
//!     in FTM (`+CFUN: 5`) when the backup was taken.
//!
//!   The numbers are the public `nv_items` enumeration values Qualcomm host tools use. The
//!   service-programming and lock codes (NV 85, 82) are deliberately not read: they are secrets,
//!   not data a rescue needs. Items the modem reports inactive or unknown are listed in the
//!   manifest's notes, not stored. A full 0–65535 sweep (what edl's `backup_nvitems` does) is not
//!   made: on real modules it takes minutes and mostly returns inactive items; the EFS trees below
//!   hold the items that matter.
//! - EFS2 files under [`EFS_ROOTS`]: `/nv/item_files` (EFS-backed NV items, including the RF
//!   calibration under `rfnv/`) and `/nvm` (the legacy NV item store, `/nvm/num/<item>`). Roots a
//!   firmware does not have are noted and skipped.
//!
//! # Untrusted device names
//!
//! Directory entries come from the device: a name that is empty, `.`/`..`, or holds `/`, `\`
//! or control characters is skipped (noted); symlinks are never followed; the walk is bounded in
//! depth, directories, files and bytes ([`EfsLimits`]). The device's path is only recorded as
//! text in the manifest; the file name on disk is made by
//! [`crate::backup::store::item_file_name`] from a fixed
//! alphabet, so nothing is ever written outside the backup folder.
//!
//! # Checks and failures
//!
//! Every NV item and EFS file is read twice and must give the same bytes (a flaky link is caught
//! before anything is recorded). Everything is read into memory first (bounded by
//! [`EfsLimits::max_total_bytes`]), then written through the store, so a backup is either complete
//! and verified or absent. A lost port, a cancel, or repeated silence from the modem abort the
//! whole backup; a refused or missing file is a note.
//!
//! Restoring over DIAG (EFS2 writes) is not offered: [`crate::backup::run::plan_restore`] refuses
//! NV/EFS backups with plain words.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::backup::identity::Identity;
use crate::backup::store::{ItemOrigin, Store, StoredBackup};
use crate::engine::diag::DiagSession;
use crate::protocol::diag::efs::{self, EfsDirEntry};
use crate::protocol::diag::packet::NV_DATA_LEN;
use crate::transport::Transport;
use crate::{Error, ErrorKind};

/// NV items read by default: (item, name, why).
pub const NV_ITEMS: &[(u16, &str)] = &[
    (550, "IMEI (NV_UE_IMEI_I)"),
    (2285, "IMEI software version (NV_UE_IMEISV_I)"),
    (1943, "MEID (NV_MEID_I)"),
    (453, "factory-test-mode flag (NV_FTM_MODE_I)"),
];

/// EFS2 trees read by default.
pub const EFS_ROOTS: &[&str] = &["/nv/item_files", "/nvm"];

/// The NV item holding the IMEI.
pub const NV_IMEI: u16 = 550;

/// Bounds of the EFS walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EfsLimits {
    /// Directory levels below a root.
    pub max_depth: usize,
    /// Directories listed in all.
    pub max_dirs: usize,
    /// Files read in all.
    pub max_files: usize,
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Bytes read in all (NV items included).
    pub max_total_bytes: u64,
}

impl Default for EfsLimits {
    fn default() -> Self {
        EfsLimits {
            max_depth: 8,
            max_dirs: 512,
            max_files: 2048,
            max_file_bytes: 1 << 20,
            max_total_bytes: 32 << 20,
        }
    }
}

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagBackupOptions {
    pub nv_items: Vec<(u16, String)>,
    pub efs_roots: Vec<String>,
    pub limits: EfsLimits,
}

impl Default for DiagBackupOptions {
    fn default() -> Self {
        DiagBackupOptions {
            nv_items: NV_ITEMS.iter().map(|(i, w)| (*i, w.to_string())).collect(),
            efs_roots: EFS_ROOTS.iter().map(|r| r.to_string()).collect(),
            limits: EfsLimits::default(),
        }
    }
}

/// Progress of a DIAG backup, for a front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "progress", rename_all = "snake_case")]
pub enum DiagProgress {
    /// An NV item was read (twice, equal) and will be kept.
    NvItem { item: u16, what: String },
    /// An EFS directory is being listed.
    Listing { path: String },
    /// An EFS file was read (twice, equal) and will be kept.
    EfsFile { path: String, bytes: u64 },
    /// Something was skipped (also a note in the manifest).
    Skipped { what: String },
    /// Writing the backup folder.
    Writing { files: usize, bytes: u64 },
}

/// The IMEI in an NV 550 value: 9 bytes, a length byte 0x08, then the 3GPP mobile-identity
/// layout (TS 24.008 §10.5.1.4): digit 1 in the high nibble of the first octet (low nibble
/// `0xA`: IMEI, odd number of digits), then two digits per octet, low nibble first. `None` unless
/// it is that layout with 15 decimal digits.
pub fn imei_from_nv550(nv: &[u8]) -> Option<String> {
    if nv.len() < 9 || nv[0] != 0x08 || nv[1] & 0x0F != 0x0A {
        return None;
    }
    let mut digits = vec![nv[1] >> 4];
    for b in &nv[2..9] {
        digits.push(b & 0x0F);
        digits.push(b >> 4);
    }
    if digits.iter().any(|d| *d > 9) {
        return None;
    }
    Some(digits.iter().map(|d| char::from(b'0' + d)).collect())
}

/// Whether a directory entry name from the device may be followed or read: not empty, not `.`
/// or `..`, no `/`, `\`, NUL or control characters, at most [`efs::MAX_NAME`] bytes.
pub fn entry_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= efs::MAX_NAME
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// One thing read, in memory until it is written.
struct Read {
    origin: ItemOrigin,
    data: Vec<u8>,
}

/// Reading state: bounds, notes, consecutive failures.
struct Walk<'a> {
    limits: EfsLimits,
    cancel: &'a AtomicBool,
    progress: &'a mut dyn FnMut(DiagProgress),
    notes: Vec<String>,
    total: u64,
    files: usize,
    dirs: usize,
    /// Failures in a row that were not the device answering (timeouts): a silent modem ends the
    /// backup instead of costing a timeout per file.
    silent: usize,
}

/// Most failures in a row without any answer before the backup gives up.
const MAX_SILENT: usize = 3;

impl Walk<'_> {
    fn skip(&mut self, what: String) {
        tracing::info!(target: "qrescue::backup", "{what}");
        (self.progress)(DiagProgress::Skipped { what: what.clone() });
        self.notes.push(what);
    }

    fn check_cancel(&self) -> crate::Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Interrupted,
                "The NV/EFS backup was cancelled; nothing was recorded",
                "it stopped before every item was read",
                "Run the backup again",
            ));
        }
        Ok(())
    }

    /// A failed read: fatal when the port is gone or the modem keeps silent, else a note.
    fn failed(&mut self, what: &str, e: Error) -> crate::Result<()> {
        if e.kind == ErrorKind::DeviceLost || e.kind == ErrorKind::Permission {
            return Err(e);
        }
        // The session words a request nobody answered as "No DIAG answer while …".
        let silent = e.what.starts_with("No DIAG answer");
        if silent {
            self.silent += 1;
            if self.silent >= MAX_SILENT {
                return Err(Error::failure(
                    "The modem stopped answering DIAG during the NV/EFS backup; nothing was recorded",
                    format!("{MAX_SILENT} requests in a row went unanswered (last: {what}: {})", e.why),
                    "Check that nothing else uses the DM port (qrescue preflight), then run the backup again",
                ));
            }
        } else {
            self.silent = 0;
        }
        self.skip(format!("{what}: not read ({}; {})", e.what, e.why));
        Ok(())
    }

    fn room(&self, bytes: u64) -> bool {
        self.total.saturating_add(bytes) <= self.limits.max_total_bytes
    }
}

/// Read the NV items.
fn read_nv<T: Transport>(
    diag: &mut DiagSession<T>,
    items: &[(u16, String)],
    walk: &mut Walk<'_>,
    out: &mut Vec<Read>,
) -> crate::Result<()> {
    for (item, what) in items {
        walk.check_cancel()?;
        let first = match diag.nv_read(*item) {
            Ok(nv) => nv,
            Err(e) => {
                walk.failed(&format!("NV {item} {what}"), e)?;
                continue;
            }
        };
        walk.silent = 0;
        if !first.is_ok() {
            walk.skip(format!(
                "NV {item} {what}: not stored, {}",
                first.status.describe()
            ));
            continue;
        }
        let second = match diag.nv_read(*item) {
            Ok(nv) => nv,
            Err(e) => {
                walk.failed(&format!("NV {item} {what}, second read"), e)?;
                continue;
            }
        };
        if second.data != first.data || second.status != first.status {
            return Err(two_reads_differ(&format!("NV item {item}")));
        }
        let mut data = first.data;
        data.truncate(NV_DATA_LEN);
        walk.total += data.len() as u64;
        (walk.progress)(DiagProgress::NvItem {
            item: *item,
            what: what.clone(),
        });
        out.push(Read {
            origin: ItemOrigin::NvItem {
                item: *item,
                what: what.clone(),
            },
            data,
        });
    }
    Ok(())
}

fn two_reads_differ(what: &str) -> Error {
    Error::new(
        ErrorKind::VerifyMismatch,
        format!("{what} read differently twice; nothing was recorded"),
        "two reads of the same data over DIAG must agree; the link (or the modem) is unreliable",
        "Check the cable and that nothing else uses the DM port, then run the backup again",
    )
}

/// Walk one EFS root (breadth-first, bounded).
fn read_tree<T: Transport>(
    diag: &mut DiagSession<T>,
    root: &str,
    walk: &mut Walk<'_>,
    out: &mut Vec<Read>,
) -> crate::Result<()> {
    let mut queue: std::collections::VecDeque<(String, usize)> = [(root.to_string(), 0)].into();
    while let Some((dir, depth)) = queue.pop_front() {
        walk.check_cancel()?;
        if walk.dirs >= walk.limits.max_dirs {
            walk.skip(format!(
                "EFS {dir}: not listed (more than {} directories)",
                walk.limits.max_dirs
            ));
            continue;
        }
        walk.dirs += 1;
        (walk.progress)(DiagProgress::Listing { path: dir.clone() });
        let entries = match diag.efs_list_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                walk.failed(&format!("EFS {dir}"), e)?;
                continue;
            }
        };
        walk.silent = 0;
        for entry in entries {
            read_entry(diag, &dir, depth, &entry, walk, out, &mut queue)?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn read_entry<T: Transport>(
    diag: &mut DiagSession<T>,
    dir: &str,
    depth: usize,
    entry: &EfsDirEntry,
    walk: &mut Walk<'_>,
    out: &mut Vec<Read>,
    queue: &mut std::collections::VecDeque<(String, usize)>,
) -> crate::Result<()> {
    walk.check_cancel()?;
    if !entry_name_ok(&entry.name) {
        let shown: String = entry.name.chars().take(40).collect();
        walk.skip(format!(
            "EFS {dir}: an entry named {shown:?} was skipped (not a plain name)"
        ));
        return Ok(());
    }
    let path = efs::join(dir, &entry.name);
    if efs::check_path(&path).is_err() {
        walk.skip(format!(
            "EFS {dir}/…: a path longer than EFS allows was skipped"
        ));
        return Ok(());
    }
    let kind = entry.mode & efs::mode::S_IFMT;
    if entry.is_dir() {
        if depth + 1 > walk.limits.max_depth {
            walk.skip(format!(
                "EFS {path}: not listed (deeper than {} levels)",
                walk.limits.max_depth
            ));
        } else {
            queue.push_back((path, depth + 1));
        }
        return Ok(());
    }
    if kind == efs::mode::S_IFLNK {
        walk.skip(format!("EFS {path}: a link, not followed"));
        return Ok(());
    }
    if walk.files >= walk.limits.max_files {
        walk.skip(format!(
            "EFS {path}: not read (more than {} files)",
            walk.limits.max_files
        ));
        return Ok(());
    }
    let size = u64::try_from(entry.size).unwrap_or(0);
    if size > walk.limits.max_file_bytes || !walk.room(size) {
        walk.skip(format!(
            "EFS {path}: not read ({size} bytes is over the backup's limits)"
        ));
        return Ok(());
    }
    walk.files += 1;
    let max = walk
        .limits
        .max_file_bytes
        .min(walk.limits.max_total_bytes - walk.total);
    let first = match diag.efs_read_file(&path, max) {
        Ok(d) => d,
        Err(e) => return walk.failed(&format!("EFS {path}"), e),
    };
    walk.silent = 0;
    let second = match diag.efs_read_file(&path, max) {
        Ok(d) => d,
        Err(e) => return walk.failed(&format!("EFS {path}, second read"), e),
    };
    if first != second {
        return Err(two_reads_differ(&format!("The EFS file {path}")));
    }
    walk.total += first.len() as u64;
    (walk.progress)(DiagProgress::EfsFile {
        path: path.clone(),
        bytes: first.len() as u64,
    });
    out.push(Read {
        origin: ItemOrigin::EfsFile { path },
        data: first,
    });
    Ok(())
}

/// Take an NV/EFS backup of the modem on `diag` into `store`, filed with `identity` (its
/// normal-mode identity: revision, IMEI, ICCID, USB composition). When `identity` has no IMEI,
/// the IMEI read from NV 550 is recorded (and a different one is noted). Returns the backup as
/// loaded back from its folder.
pub fn take_diag_backup<T: Transport>(
    diag: &mut DiagSession<T>,
    identity: &Identity,
    store: &Store,
    opts: &DiagBackupOptions,
    progress: &mut dyn FnMut(DiagProgress),
    cancel: &AtomicBool,
) -> crate::Result<StoredBackup> {
    let mut walk = Walk {
        limits: opts.limits,
        cancel,
        progress,
        notes: Vec::new(),
        total: 0,
        files: 0,
        dirs: 0,
        silent: 0,
    };
    let mut reads = Vec::new();
    read_nv(diag, &opts.nv_items, &mut walk, &mut reads)?;
    match diag.efs_subsystem() {
        Ok(_) => {
            for root in &opts.efs_roots {
                read_tree(diag, root, &mut walk, &mut reads)?;
            }
        }
        Err(e) => walk.failed("EFS2 over DIAG", e)?,
    }
    walk.check_cancel()?;
    if reads.is_empty() {
        return Err(Error::failure(
            "The modem gave no NV item or EFS file over DIAG; nothing was recorded",
            format!(
                "every read was refused or empty: {}",
                walk.notes
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "Back up the EFS partitions in download mode instead (qrescue backup --port …)",
        ));
    }

    // The identity: the IMEI from NV 550 when AT did not give one.
    let mut identity = identity.clone();
    let nv_imei = reads.iter().find_map(|r| match &r.origin {
        ItemOrigin::NvItem { item, .. } if *item == NV_IMEI => imei_from_nv550(&r.data),
        _ => None,
    });
    let mut id_notes = Vec::new();
    match (&identity.imei, nv_imei) {
        (None, Some(nv)) => {
            id_notes.push(format!("IMEI {nv} taken from NV item 550 (AT gave none)"));
            identity.imei = Some(nv);
        }
        (Some(at), Some(nv)) if *at != nv => id_notes.push(format!(
            "AT+CGSN says IMEI {at} but NV item 550 holds {nv}: the IMEI was changed or the item is damaged"
        )),
        _ => {}
    }

    let bytes: u64 = reads.iter().map(|r| r.data.len() as u64).sum();
    (walk.progress)(DiagProgress::Writing {
        files: reads.len(),
        bytes,
    });
    let mut pending = store.begin_nv_efs(&identity)?;
    for n in id_notes.into_iter().chain(walk.notes.iter().cloned()) {
        pending.note(n);
    }
    for r in reads {
        let len = r.data.len() as u64;
        let mut w = pending.create_item(r.origin, len)?;
        w.write_all(&r.data).map_err(|e| {
            Error::failure(
                "The NV/EFS backup could not be written completely, so it was not recorded",
                "a write to the backup folder failed",
                "Check free space and permissions of the backup folder (or choose another with --out) and run the backup again",
            )
            .with_source(e)
        })?;
        w.finish_item()?;
    }
    pending.commit(
        "every NV item and EFS file read twice over DIAG with the same bytes; every file read back from disk",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::store::{is_safe_name, item_file_name, Fault, FaultHook, Step};
    use crate::engine::diag::DiagTimeouts;
    use crate::engine::guards::{BackupLedger, Region};
    use crate::sim::normal::efs::EfsImage;
    use crate::sim::normal::ports::{HostPorts, InProcessNormal, ServeOptions};
    use crate::sim::normal::{state, unit};
    use crate::sim::profile::Profile;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    fn quick() -> DiagTimeouts {
        DiagTimeouts {
            write: Duration::from_secs(5),
            response: Duration::from_secs(5),
            drain_quiet: Duration::from_millis(30),
            drain_max: Duration::from_secs(2),
            edl_echo: Duration::from_secs(5),
        }
    }

    fn profile() -> Profile {
        Profile::by_name("ec25").unwrap().for_unit(4)
    }

    /// The unit in normal mode with `efs` (default: as it left the factory).
    fn start(efs: Option<EfsImage>) -> (InProcessNormal, HostPorts) {
        let p = profile();
        let mut boot = state::factory_boot(&p).unwrap();
        if let Some(e) = efs {
            boot.efs = Some(e);
        }
        let opts = ServeOptions {
            boot_urcs: false,
            ..ServeOptions::default()
        };
        InProcessNormal::start(&p, boot, 0, opts)
    }

    fn normal_identity() -> Identity {
        Identity {
            revision: Some("EC25EFAR06A17M4G_20.200.20.200".into()),
            imei: Some(unit::unit_imei(&profile())),
            ..Identity::default()
        }
    }

    fn backup(
        host: &mut HostPorts,
        id: &Identity,
        store: &Store,
        opts: &DiagBackupOptions,
    ) -> crate::Result<StoredBackup> {
        let mut s = DiagSession::with_timeouts(&mut host.dm, quick());
        take_diag_backup(
            &mut s,
            id,
            store,
            opts,
            &mut |_| {},
            &AtomicBool::new(false),
        )
    }

    #[test]
    fn the_emulated_units_imei_and_calibration_are_kept_verified_and_never_restored() {
        let (modem, mut host) = start(None);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("store"));
        let mut seen = Vec::new();
        let b = {
            let mut s = DiagSession::with_timeouts(&mut host.dm, quick());
            take_diag_backup(
                &mut s,
                &normal_identity(),
                &store,
                &DiagBackupOptions::default(),
                &mut |p| seen.push(p),
                &AtomicBool::new(false),
            )
            .unwrap()
        };
        let m = &b.manifest;
        assert_eq!(m.kind, crate::backup::BackupKind::NvEfs);
        assert!(m.files.is_empty() && m.storage.is_none());
        let imei = unit::unit_imei(&profile());
        assert_eq!(m.unit(), format!("imei-{imei}"));
        assert!(b.name.starts_with(&format!("imei-{imei}-")) && b.name.ends_with("-nvefs"));
        // NV 550 holds the IMEI; the others are not active on the emulator (noted, not stored).
        let nv = m
            .items
            .iter()
            .find(|i| matches!(i.origin, ItemOrigin::NvItem { item: 550, .. }))
            .unwrap();
        let data = std::fs::read(b.path.join(&nv.name)).unwrap();
        assert_eq!(imei_from_nv550(&data).as_deref(), Some(imei.as_str()));
        assert!(
            m.notes.iter().any(|n| n.contains("NV 453")),
            "{:?}",
            m.notes
        );
        // The EFS trees: the legacy item file and the RF calibration, byte for byte.
        let efs = |path: &str| {
            m.items
                .iter()
                .find(|i| i.origin == ItemOrigin::EfsFile { path: path.into() })
                .unwrap_or_else(|| panic!("{path} in {:?}", m.items))
        };
        let cal = efs("/nv/item_files/rfnv/00020000");
        assert_eq!(
            std::fs::read(b.path.join(&cal.name)).unwrap(),
            unit::calibration_blob(&profile())
        );
        efs("/nvm/num/550");
        assert!(seen
            .iter()
            .any(|p| matches!(p, DiagProgress::EfsFile { .. })));
        // Listed, verified, never counted by the guard, never restored.
        let listing = store.list().unwrap();
        assert_eq!(listing.backups.len(), 1);
        assert!(listing.incomplete.is_empty() && listing.damaged.is_empty());
        let r = listing.backups[0].verify().unwrap();
        assert_eq!(r.files, m.items.len());
        let ledger = crate::backup::StoreLedger::new(&store).unwrap();
        let any = Region {
            lun: 0,
            start_sector: 0,
            num_sectors: 1,
            sector_size: 4096,
        };
        assert!(ledger.verified_backup(&m.unit(), &any).is_none());
        let e = crate::backup::run::plan_restore(&b, &[]).unwrap_err();
        assert!(e.why.contains("reference and manual recovery"), "{e}");
        // A second backup gets its own folder; nothing is overwritten.
        let b2 = backup(
            &mut host,
            &normal_identity(),
            &store,
            &DiagBackupOptions::default(),
        )
        .unwrap();
        assert_ne!(b2.path, b.path);
        assert!(b.verify().is_ok());
        drop(modem);
    }

    #[test]
    fn without_an_at_imei_the_imei_comes_from_nv_550() {
        let (modem, mut host) = start(None);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let id = Identity {
            revision: Some("EC25EFAR06A17M4G".into()),
            ..Identity::default()
        };
        let b = backup(&mut host, &id, &store, &DiagBackupOptions::default()).unwrap();
        let imei = unit::unit_imei(&profile());
        assert_eq!(b.manifest.identity.imei.as_deref(), Some(imei.as_str()));
        assert!(b
            .manifest
            .notes
            .iter()
            .any(|n| n.contains("from NV item 550")));
        // A different AT IMEI is kept, and the difference noted.
        let other = Identity {
            imei: Some("490154203237518".into()),
            ..id
        };
        let b = backup(&mut host, &other, &store, &DiagBackupOptions::default()).unwrap();
        assert_eq!(b.manifest.identity.imei.as_deref(), Some("490154203237518"));
        assert!(b
            .manifest
            .notes
            .iter()
            .any(|n| n.contains("NV item 550 holds")));
        drop(modem);
    }

    #[test]
    fn a_unit_with_no_imei_anywhere_is_refused_and_nothing_is_recorded() {
        let mut efs = EfsImage::default();
        efs.put("/nv/item_files/rfnv/00020000", vec![1, 2, 3]);
        let (modem, mut host) = start(Some(efs));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let e = backup(
            &mut host,
            &Identity::default(),
            &store,
            &DiagBackupOptions::default(),
        )
        .unwrap_err();
        assert!(e.what.contains("without knowing which modem"), "{e}");
        let l = store.list().unwrap();
        assert!(l.backups.is_empty() && l.incomplete.is_empty());
        drop(modem);
    }

    /// Fails or "kills" the writer at its `at`-th step; counts steps.
    struct At {
        at: usize,
        fault: Fault,
        seen: AtomicUsize,
    }

    impl FaultHook for At {
        fn at(&self, _step: Step) -> Option<Fault> {
            let n = self.seen.fetch_add(1, Ordering::SeqCst);
            (n == self.at).then_some(self.fault)
        }
    }

    #[test]
    fn killed_or_failing_at_any_step_the_backup_is_complete_and_verified_or_absent() {
        let (modem, mut host) = start(None);
        let dir = tempfile::tempdir().unwrap();
        // How many steps a backup takes.
        let counter = Arc::new(At {
            at: usize::MAX,
            fault: Fault::Fail,
            seen: AtomicUsize::new(0),
        });
        let probe = Store::new(dir.path().join("probe")).with_faults(counter.clone());
        backup(
            &mut host,
            &normal_identity(),
            &probe,
            &DiagBackupOptions::default(),
        )
        .unwrap();
        let steps = counter.seen.load(Ordering::SeqCst);
        assert!(steps >= 8, "{steps}");
        for fault in [Fault::Kill, Fault::Fail] {
            for at in 0..steps {
                let root = dir.path().join(format!("{fault:?}-{at}"));
                let hook = Arc::new(At {
                    at,
                    fault,
                    seen: AtomicUsize::new(0),
                });
                let store = Store::new(&root).with_faults(hook);
                let r = backup(
                    &mut host,
                    &normal_identity(),
                    &store,
                    &DiagBackupOptions::default(),
                );
                assert!(r.is_err(), "{fault:?} at step {at} was not reported");
                let l = Store::new(&root).list().unwrap();
                assert!(l.damaged.is_empty(), "{fault:?} at {at}: {:?}", l.damaged);
                match l.backups.as_slice() {
                    // Only a fault after the rename (at the root's sync, the last step) leaves
                    // a backup, and it is complete.
                    [b] => {
                        assert_eq!(at, steps - 1, "{fault:?}");
                        assert!(b.verify().is_ok());
                        assert!(!b.manifest.items.is_empty());
                    }
                    [] => {
                        if fault == Fault::Fail {
                            assert!(l.incomplete.is_empty(), "a failure cleans up (at {at})");
                        }
                    }
                    more => panic!("{} backups at {at}", more.len()),
                }
            }
        }
        drop(modem);
    }

    #[test]
    fn hostile_and_huge_trees_are_bounded_and_stay_inside_the_folder() {
        let mut efs = EfsImage::default();
        efs.put(
            "/nvm/num/550",
            crate::sim::normal::efs::encode_imei("490154203237518")
                .unwrap()
                .to_vec(),
        );
        efs.put("/nvm/../../../etc/passwd", b"root".to_vec());
        efs.put("/nvm/a\\b", b"x".to_vec());
        efs.put("/nvm/.hidden", b"h".to_vec());
        efs.put("/nv/item_files/d1/d2/d3/d4/deep", b"deep".to_vec());
        for i in 0..12 {
            efs.put(&format!("/nv/item_files/many/{i:02}"), vec![i as u8; 100]);
        }
        efs.put("/nv/item_files/big", vec![7; 5000]);
        let (modem, mut host) = start(Some(efs));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("store"));
        let opts = DiagBackupOptions {
            limits: EfsLimits {
                max_depth: 3,
                max_dirs: 64,
                max_files: 10,
                max_file_bytes: 4096,
                max_total_bytes: 1 << 20,
            },
            ..DiagBackupOptions::default()
        };
        let b = backup(&mut host, &normal_identity(), &store, &opts).unwrap();
        let m = &b.manifest;
        let paths: Vec<&str> = m
            .items
            .iter()
            .filter_map(|i| match &i.origin {
                ItemOrigin::EfsFile { path } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        // ".." and a name with a backslash are never followed or read.
        assert!(
            paths.iter().all(|p| !p.contains("..") && !p.contains('\\')),
            "{paths:?}"
        );
        assert!(
            m.notes.iter().any(|n| n.contains("not a plain name")),
            "{:?}",
            m.notes
        );
        // Bounds: depth, files, file size.
        assert!(!paths.iter().any(|p| p.ends_with("/deep")), "{paths:?}");
        assert!(
            m.notes.iter().any(|n| n.contains("deeper than 3")),
            "{:?}",
            m.notes
        );
        assert!(paths.len() <= 10, "{paths:?}");
        assert!(m.notes.iter().any(|n| n.contains("more than 10 files")));
        assert!(!paths.contains(&"/nv/item_files/big"));
        // Every file is a plain name inside the backup folder; nothing else was written.
        for e in std::fs::read_dir(&b.path).unwrap() {
            let n = e.unwrap().file_name().into_string().unwrap();
            assert!(n == "manifest.json" || is_safe_name(&n), "{n}");
        }
        let top: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(top, ["store"]);
        assert!(!dir.path().join("etc").exists());
        assert!(b.verify().is_ok());
        drop(modem);
    }

    #[test]
    fn nv_550_decoding_matches_the_real_dump_and_rejects_others() {
        let real = [0x08, 0x9A, 0x09, 0x10, 0x86, 0x87, 0x75, 0x93, 0x78];
        assert_eq!(imei_from_nv550(&real).as_deref(), Some("990016878573987"));
        assert_eq!(imei_from_nv550(&[0; 128]), None);
        assert_eq!(imei_from_nv550(&[0xFF; 128]), None);
        assert_eq!(imei_from_nv550(&real[..8]), None);
    }

    proptest! {
        #[test]
        fn device_paths_never_make_a_file_name_that_leaves_the_folder(
            path in "\\PC{0,300}",
            index in 0usize..100_000,
            item in any::<u16>(),
        ) {
            let dir = std::path::Path::new("/store/backup");
            for origin in [
                ItemOrigin::EfsFile { path: path.clone() },
                ItemOrigin::NvItem { item, what: "x".into() },
            ] {
                let name = item_file_name(index, &origin);
                prop_assert!(is_safe_name(&name), "{:?}", name);
                let joined = dir.join(&name);
                prop_assert_eq!(joined.parent(), Some(dir));
            }
        }

        #[test]
        fn entry_names_that_could_escape_are_refused(name in "\\PC{0,300}") {
            if entry_name_ok(&name) {
                prop_assert!(!name.contains('/') && !name.contains('\\'));
                prop_assert!(name != ".." && name != "." && !name.is_empty());
                // Joined under a root it stays one level below it.
                let joined = efs::join("/nvm", &name);
                prop_assert_eq!(joined.matches('/').count(), 2);
            }
        }

        #[test]
        fn nv_550_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(imei) = imei_from_nv550(&bytes) {
                prop_assert_eq!(imei.len(), 15);
                prop_assert!(imei.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}
