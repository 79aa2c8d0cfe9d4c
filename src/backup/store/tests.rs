use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;
use crate::backup::identity::EdlIdentity;

fn unit(serial: u32) -> Identity {
    Identity {
        edl: Some(EdlIdentity {
            serial,
            serial_hex: format!("0x{serial:08x}"),
            hw_id: Some("000480e100000000".into()),
            msm_id: Some("000480e1".into()),
            pk_hash: Some("ab".repeat(32)),
        }),
        ..Identity::default()
    }
}

const UNIT: u32 = 0x0cf9_4c64;

/// Three files: EFS2 (NAND pages), sys_rev, and a region without a label.
fn specs() -> Vec<(FileSpec, Vec<u8>)> {
    let data = |n: usize, seed: u8| -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    };
    vec![
        (
            FileSpec {
                partition: Some("EFS2".into()),
                lun: 0,
                start_sector: 1280,
                sectors: 3,
                sector_size: 4096,
                last_sector: Some(1282),
                device_unique: true,
            },
            data(3 * 4096, 1),
        ),
        (
            FileSpec {
                partition: Some("sys_rev".into()),
                lun: 0,
                start_sector: 6912,
                sectors: 2,
                sector_size: 4096,
                last_sector: None,
                device_unique: true,
            },
            data(2 * 4096, 2),
        ),
        (
            FileSpec {
                partition: None,
                lun: 0,
                start_sector: 0,
                sectors: 2,
                sector_size: 512,
                last_sector: None,
                device_unique: false,
            },
            data(1024, 3),
        ),
    ]
}

/// Write the three files in 1000-byte pieces and commit.
fn write_backup(store: &Store, serial: u32) -> crate::Result<StoredBackup> {
    let mut p = store.begin(&unit(serial), BackupKind::DeviceUnique, StorageKind::Nand)?;
    p.set_table(vec![Partition {
        lun: 0,
        name: "EFS2".into(),
        start_sector: 1280,
        num_sectors: 3,
    }]);
    for (spec, bytes) in specs() {
        let mut w = p.create_file(spec)?;
        for piece in bytes.chunks(1000) {
            w.write_all(piece)
                .map_err(|e| Error::failure("write", e.to_string(), "-"))?;
        }
        w.finish()?;
    }
    p.commit("test data")
}

#[derive(Default)]
struct Counter {
    calls: AtomicUsize,
    fire_at: Option<(usize, Fault)>,
    steps: Mutex<Vec<Step>>,
}

impl FaultHook for Counter {
    fn at(&self, step: Step) -> Option<Fault> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.steps.lock().unwrap().push(step);
        match self.fire_at {
            Some((k, f)) if k == n => Some(f),
            _ => None,
        }
    }
}

/// A pid that is certainly not running (a child that has exited and was reaped).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn a_backup_round_trips_and_verifies() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::new(d.path().join("backups"));
    assert!(
        store.list().unwrap().backups.is_empty(),
        "a missing root is an empty store"
    );
    let b = write_backup(&store, UNIT).unwrap();
    assert!(b.name.starts_with("0cf94c64-"), "{}", b.name);
    assert!(b.name.ends_with('Z'), "{}", b.name);
    let m = &b.manifest;
    assert_eq!(m.format, FORMAT);
    assert_eq!(m.tool_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.unit(), "0x0cf94c64");
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.files[0].name, "000_lun0_EFS2.bin");
    assert_eq!(m.files[2].name, "002_lun0_sectors_0-2.bin");
    assert_eq!(m.verification, "test data");
    for (f, (_, bytes)) in m.files.iter().zip(specs()) {
        assert_eq!(f.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(std::fs::read(b.file_path(f)).unwrap(), bytes);
    }
    let listing = store.list().unwrap();
    assert_eq!(listing.backups, vec![b.clone()]);
    assert!(listing.damaged.is_empty() && listing.incomplete.is_empty());
    let r = b.verify().unwrap();
    assert_eq!((r.files, r.bytes), (3, 3 * 4096 + 2 * 4096 + 1024));
    assert_eq!(store.get(&b.name).unwrap(), b);
    assert_eq!(store.get(b.path.to_str().unwrap()).unwrap(), b);
    assert_eq!(store.get("nope").unwrap_err().kind, ErrorKind::Usage);
}

#[test]
fn a_backup_needs_a_serial_and_the_right_length() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::new(d.path());
    let e = store
        .begin(&Identity::default(), BackupKind::Full, StorageKind::Emmc)
        .unwrap_err();
    assert!(e.why.contains("serial"), "{e}");
    let mut p = store
        .begin(&unit(1), BackupKind::Full, StorageKind::Emmc)
        .unwrap();
    let (spec, bytes) = specs().remove(0);
    let mut w = p.create_file(spec.clone()).unwrap();
    w.write_all(&bytes[..100]).unwrap();
    assert!(w
        .finish()
        .unwrap_err()
        .what
        .contains("100 of its 12288 bytes"));
    let mut w = p.create_file(spec).unwrap();
    let mut more = bytes.clone();
    more.push(0);
    assert!(w.write_all(&more).is_err(), "more than the partition");
    let dir = p.dir().to_path_buf();
    assert!(dir.is_dir());
    assert!(p.commit("x").unwrap_err().what.contains("no files"));
    assert!(!dir.exists(), "a failed backup leaves nothing behind");
    assert!(store.list().unwrap().incomplete.is_empty());
}

/// Kill or fail the writer at every single step it takes; afterwards the store holds either
/// nothing or one complete backup that verifies — never anything that looks like a backup and
/// is not one.
#[test]
fn a_fault_at_any_step_leaves_a_complete_backup_or_none() {
    let count = Arc::new(Counter::default());
    let d = tempfile::tempdir().unwrap();
    write_backup(&Store::new(d.path()).with_faults(count.clone()), UNIT).unwrap();
    let steps = count.steps.lock().unwrap().clone();
    // Create, 3 files in 1000-byte pieces (13 + 9 + 2 writes) and their syncs, three read-backs,
    // manifest write and sync, folder sync, rename, root sync.
    assert_eq!(steps.len(), 1 + 24 + 3 + 3 + 5, "{steps:?}");
    assert!(matches!(
        steps[5],
        Step::Write {
            file: 0,
            offset: 4000,
            len: 1000
        }
    ));

    for fault in [Fault::Fail, Fault::Kill] {
        for (k, step) in steps.iter().enumerate() {
            let d = tempfile::tempdir().unwrap();
            let hook = Arc::new(Counter {
                fire_at: Some((k, fault)),
                ..Counter::default()
            });
            let store = Store::new(d.path()).with_faults(hook);
            let result = write_backup(&store, UNIT);
            let plain = Store::new(d.path());
            let listing = plain.list().unwrap();
            let what = format!("{fault:?} at step {k} ({step:?})");
            assert!(listing.damaged.is_empty(), "{what}: {:?}", listing.damaged);
            match step {
                // After the rename the backup is complete, whatever happens next.
                Step::RootSync => {
                    assert!(result.is_err(), "{what}");
                    assert_eq!(listing.backups.len(), 1, "{what}");
                    listing.backups[0].verify().unwrap();
                    assert_eq!(listing.backups[0].manifest.files.len(), 3);
                    assert!(listing.incomplete.is_empty(), "{what}");
                }
                _ => {
                    assert!(result.is_err(), "{what}");
                    assert!(listing.backups.is_empty(), "{what}: {:?}", listing.backups);
                    match fault {
                        Fault::Fail => assert!(listing.incomplete.is_empty(), "{what}: cleaned up"),
                        Fault::Kill if k == 0 => assert!(listing.incomplete.is_empty()),
                        Fault::Kill => {
                            assert_eq!(
                                listing.incomplete.len(),
                                1,
                                "{what}: left as a crash would"
                            );
                            // Its writer is gone: cleanup removes it. (Ours is alive: kept.)
                            assert!(plain.cleanup_incomplete().unwrap().is_empty());
                            let old = d.path().join(&listing.incomplete[0]);
                            let rest = listing.incomplete[0]
                                .strip_prefix(INCOMPLETE_PREFIX)
                                .unwrap()
                                .split_once('-')
                                .unwrap()
                                .1
                                .to_string();
                            let dead = d
                                .path()
                                .join(format!("{INCOMPLETE_PREFIX}{}-{rest}", dead_pid()));
                            std::fs::rename(&old, &dead).unwrap();
                            assert_eq!(plain.cleanup_incomplete().unwrap().len(), 1);
                            assert!(!dead.exists());
                        }
                    }
                }
            }
            // The store still works after the fault.
            let again = write_backup(&plain, UNIT).unwrap();
            again.verify().unwrap();
        }
    }
}

#[test]
fn nothing_is_ever_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::new(d.path());
    // An existing backup-like folder with a file, and an empty folder, under the names to come.
    std::fs::create_dir(d.path().join("fixed")).unwrap();
    std::fs::write(d.path().join("fixed/keep.bin"), b"keep").unwrap();
    std::fs::create_dir(d.path().join("fixed-2")).unwrap();
    let mut p = store
        .begin(&unit(5), BackupKind::DeviceUnique, StorageKind::Nand)
        .unwrap();
    p.base_name = "fixed".into();
    let (spec, bytes) = specs().remove(1);
    let mut w = p.create_file(spec).unwrap();
    w.write_all(&bytes).unwrap();
    w.finish().unwrap();
    let b = p.commit("t").unwrap();
    assert_eq!(b.name, "fixed-3");
    assert_eq!(
        std::fs::read(d.path().join("fixed/keep.bin")).unwrap(),
        b"keep"
    );
    assert_eq!(
        std::fs::read_dir(d.path().join("fixed-2")).unwrap().count(),
        0
    );
    // rename_noreplace itself.
    let a = d.path().join("a");
    std::fs::create_dir(&a).unwrap();
    let e = rename_noreplace(&a, &d.path().join("fixed-2")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert!(a.is_dir());
    // The listing: fixed and fixed-2 have no manifest and are damaged, never backups.
    let l = store.list().unwrap();
    assert_eq!(l.backups.len(), 1);
    assert_eq!(
        l.damaged
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "fixed", "fixed-2"]
    );
    assert!(
        l.damaged[0].why.contains("no manifest.json"),
        "{:?}",
        l.damaged
    );
}

#[test]
fn verify_finds_every_kind_of_damage() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::new(d.path());
    let fresh = || write_backup(&store, UNIT).unwrap();

    let b = fresh();
    let p = b.file_path(&b.manifest.files[1]);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[77] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let e = b.verify().unwrap_err();
    assert_eq!(e.kind, ErrorKind::VerifyMismatch);
    assert!(e.what.contains("001_lun0_sys_rev.bin"), "{e}");

    let b = fresh();
    std::fs::remove_file(b.file_path(&b.manifest.files[0])).unwrap();
    assert_eq!(b.verify().unwrap_err().kind, ErrorKind::VerifyMismatch);

    let b = fresh();
    let p = b.file_path(&b.manifest.files[2]);
    let copy = d.path().join("copy.bin");
    std::fs::rename(&p, &copy).unwrap();
    std::os::unix::fs::symlink(&copy, &p).unwrap();
    assert!(b.verify().unwrap_err().why.contains("not a regular file"));

    let b = fresh();
    let f = b.file_path(&b.manifest.files[0]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    assert!(b.verify().is_err(), "a grown file");
}

#[test]
fn hostile_labels_stay_inside_the_backup_folder() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::new(d.path().join("store"));
    let mut p = store
        .begin(&unit(9), BackupKind::Full, StorageKind::Emmc)
        .unwrap();
    let dir = p.dir().to_path_buf();
    for label in [
        "../../escape",
        "/etc/passwd",
        "a/b",
        "..",
        ".",
        "",
        "con\\x",
        "manifest.json",
        "\u{0}x",
        ".hidden",
        "ünï",
    ] {
        let mut w = p
            .create_file(FileSpec {
                partition: Some(label.into()),
                lun: 0,
                start_sector: 0,
                sectors: 1,
                sector_size: 512,
                last_sector: None,
                device_unique: false,
            })
            .unwrap();
        w.write_all(&[0u8; 512]).unwrap();
        let e = w.finish().unwrap();
        assert!(is_safe_name(&e.name), "{label:?} -> {}", e.name);
        // Kept for people and table matching, unless empty or unprintable.
        let printable = !label.is_empty() && !label.chars().any(char::is_control);
        assert_eq!(e.partition.as_deref(), printable.then_some(label));
    }
    let b = p.commit("t").unwrap();
    let names: Vec<String> = std::fs::read_dir(&b.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 12, "{names:?}");
    assert!(!dir.exists());
    // Nothing outside the store root but the store itself.
    let top: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["store"]);
    let l = store.list().unwrap();
    assert_eq!(l.backups, vec![b]);
    assert!(l.damaged.is_empty());
}

#[test]
fn the_utc_calendar() {
    assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
    assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    assert_eq!(civil(1_709_164_800 + 3661), (2024, 2, 29, 1, 1, 1));
    assert_eq!(civil(4_102_444_799), (2099, 12, 31, 23, 59, 59));
}

fn sealed(m: &Manifest) -> Vec<u8> {
    m.to_sealed_json()
}

#[test]
fn edited_manifests_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::new(d.path());
    let b = write_backup(&store, UNIT).unwrap();
    let m = b.manifest.clone();
    let raw = std::fs::read(b.path.join(MANIFEST)).unwrap();
    assert_eq!(Manifest::parse(&raw).unwrap(), m);

    // A value edited by hand: the seal no longer matches.
    let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    v["files"][0]["start_sector"] = 2048.into();
    let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(e.0.contains("seal"), "{e}");

    // Re-sealed but implausible: each is refused by the checks.
    type Edit = Box<dyn Fn(&mut Manifest)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "plain file name",
            Box::new(|m| m.files[0].name = "../x.bin".into()),
        ),
        (
            "plain file name",
            Box::new(|m| m.files[0].name = MANIFEST.into()),
        ),
        (
            "listed twice",
            Box::new(|m| m.files[1].name = m.files[0].name.to_uppercase()),
        ),
        ("sha256", Box::new(|m| m.files[0].sha256 = "AB".repeat(32))),
        ("sector size", Box::new(|m| m.files[0].sector_size = 3000)),
        ("bytes is not", Box::new(|m| m.files[0].bytes += 1)),
        (
            "overflows",
            Box::new(|m| {
                m.files[0].start_sector = u64::MAX - 1;
            }),
        ),
        ("serial", Box::new(|m| m.identity.edl = None)),
        (
            "identity",
            Box::new(|m| m.identity.edl.as_mut().unwrap().serial_hex = "0x1".into()),
        ),
        ("no files", Box::new(|m| m.files.clear())),
    ];
    for (needle, edit) in cases {
        let mut x = m.clone();
        edit(&mut x);
        let e = Manifest::parse(&sealed(&x)).unwrap_err();
        assert!(e.0.contains(needle), "{needle}: {e}");
    }
    let mut newer = serde_json::to_value(&m).unwrap();
    newer["format_version"] = 2.into();
    assert!(Manifest::parse(&serde_json::to_vec(&newer).unwrap())
        .unwrap_err()
        .0
        .contains("newer qrescue"));
    let mut extra = serde_json::to_value(&m).unwrap();
    extra["surprise"] = 1.into();
    assert!(Manifest::parse(&serde_json::to_vec(&extra).unwrap()).is_err());
}

proptest! {
    #[test]
    fn manifest_parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Manifest::parse(&bytes);
    }

    /// Any one-byte change or cut of a real manifest is refused, unless it leaves the content
    /// exactly as it was (white space).
    #[test]
    fn a_damaged_manifest_is_an_error_never_another_backup(
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let m = example_manifest();
        let mut raw = m.to_sealed_json();
        let i = pos.index(raw.len());
        if cut { raw.truncate(i) } else { raw[i] = byte }
        if let Ok(parsed) = Manifest::parse(&raw) {
            let mut want = m.clone();
            want.seal = parsed.seal.clone();
            prop_assert_eq!(parsed, want);
        }
    }

    #[test]
    fn sanitized_names_are_always_plain(label in ".{0,80}", index in 0usize..100_000, lun in any::<u32>(),
                                        start in any::<u64>(), sectors in any::<u64>(), labelled in any::<bool>()) {
        let name = file_name(index, lun, labelled.then_some(label.as_str()), start, sectors);
        prop_assert!(is_safe_name(&name), "{:?}", name);
        let dir = Path::new("/store/backup");
        let joined = dir.join(&name);
        prop_assert_eq!(joined.parent(), Some(dir));
        let s = sanitize_label(&label);
        prop_assert!(!s.is_empty() && !s.starts_with('.') && s.chars().all(safe_char));
    }
}

fn example_manifest() -> Manifest {
    let mut m = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        tool_version: "0.1.0".into(),
        created_unix: 1_700_000_000,
        created_utc: "2023-11-14T22:13:20Z".into(),
        kind: BackupKind::DeviceUnique,
        storage: Some(StorageKind::Nand),
        identity: unit(UNIT),
        table: vec![Partition {
            lun: 0,
            name: "EFS2".into(),
            start_sector: 1280,
            num_sectors: 5632,
        }],
        files: vec![FileEntry {
            name: "000_lun0_EFS2.bin".into(),
            partition: Some("EFS2".into()),
            lun: 0,
            start_sector: 1280,
            sectors: 5632,
            sector_size: 4096,
            last_sector: Some(6911),
            bytes: 5632 * 4096,
            sha256: "0".repeat(64),
            device_unique: true,
        }],
        items: Vec::new(),
        verification: "read twice".into(),
        notes: vec!["n".into()],
        seal: String::new(),
    };
    m.seal = m.seal_of();
    m
}

// ------------------------------------------------------------------------------------ ledger

fn region(start: u64, n: u64, ss: u32) -> Region {
    Region {
        lun: 0,
        start_sector: start,
        num_sectors: n,
        sector_size: ss,
    }
}

#[test]
fn the_ledger_counts_only_a_verified_copy_of_exactly_that_partition_of_that_unit() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::new(d.path());
    let b = write_backup(&store, UNIT).unwrap();
    write_backup(&store, 0x1111).unwrap();
    let ledger = StoreLedger::new(&store).unwrap();
    assert!(!ledger.is_empty());
    assert_eq!(ledger.backups_of("0x0cf94c64").len(), 1);
    let key = "0x0cf94c64";
    let efs = region(1280, 3, 4096);

    let got = ledger.verified_backup(key, &efs).unwrap();
    assert_eq!(got.unit(), key);
    assert_eq!(got.label(), "EFS2");
    assert_eq!(got.sha256(), b.manifest.files[0].sha256);
    // The same bytes in 512-byte sectors are the same partition.
    assert!(ledger
        .verified_backup(key, &region(1280 * 8, 24, 512))
        .is_some());
    // Not: another size, another LUN, another unit, a region without a partition label.
    assert!(ledger
        .verified_backup(key, &region(1280, 2, 4096))
        .is_none());
    assert!(ledger
        .verified_backup(
            key,
            &Region {
                lun: 1,
                ..efs.clone()
            }
        )
        .is_none());
    assert!(ledger.verified_backup("0x00000002", &efs).is_none());
    assert!(ledger.verified_backup(key, &region(0, 2, 512)).is_none());

    // The connected modem's identity must match beyond the serial.
    let mut other_key = unit(UNIT);
    other_key.edl.as_mut().unwrap().pk_hash = Some("cd".repeat(32));
    let strict = StoreLedger::new(&store).unwrap().for_device(&other_key);
    assert!(strict.verified_backup(key, &efs).is_none());
    let same = StoreLedger::new(&store).unwrap().for_device(&unit(UNIT));
    assert!(same.verified_backup(key, &efs).is_some());

    // A damaged file does not count (and the ledger re-reads it before saying yes).
    let p = b.file_path(&b.manifest.files[0]);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let fresh = StoreLedger::new(&store).unwrap();
    assert!(fresh.verified_backup(key, &efs).is_none());
    // sys_rev of the same backup is still fine.
    assert!(fresh.verified_backup(key, &region(6912, 2, 4096)).is_some());
    // A newer good backup of the unit covers it again.
    write_backup(&store, UNIT).unwrap();
    assert!(StoreLedger::new(&store)
        .unwrap()
        .verified_backup(key, &efs)
        .is_some());
}

#[test]
fn the_guard_passes_with_the_store_ledger() {
    use crate::engine::guards::{guard, Touch, TouchAction};
    let d = tempfile::tempdir().unwrap();
    let store = Store::new(d.path());
    let table = vec![Partition {
        lun: 0,
        name: "EFS2".into(),
        start_sector: 1280,
        num_sectors: 3,
    }];
    let plan = vec![Touch {
        step: 0,
        action: TouchAction::Program {
            file: "cefs.mbn".into(),
        },
        lun: 0,
        start_sector: 1280,
        sectors: Some(2),
        sector_size: 4096,
        name: "EFS2".into(),
    }];
    let key = "0x0cf94c64";
    let before = guard(
        &plan,
        &table,
        StorageKind::Nand,
        key,
        &StoreLedger::new(&store).unwrap(),
    );
    assert!(!before.allowed);
    write_backup(&store, UNIT).unwrap();
    let after = guard(
        &plan,
        &table,
        StorageKind::Nand,
        key,
        &StoreLedger::new(&store).unwrap(),
    );
    assert!(after.allowed, "{:?}", after.blocked);
    assert_eq!(after.covered[0].backup.label(), "EFS2");
}

#[test]
fn nv_efs_manifests_hold_items_only_and_partition_manifests_partitions_only() {
    let good = example_manifest();
    assert!(Manifest::parse(&good.to_sealed_json()).is_ok());
    // A partition backup without its storage, or with items, is refused.
    let mut m = good.clone();
    m.storage = None;
    assert!(Manifest::parse(&m.to_sealed_json()).is_err());
    let item = ItemEntry {
        name: "nv_00550.bin".into(),
        origin: ItemOrigin::NvItem {
            item: 550,
            what: "IMEI".into(),
        },
        bytes: 128,
        sha256: "0".repeat(64),
    };
    let mut m = good.clone();
    m.items.push(item.clone());
    assert!(Manifest::parse(&m.to_sealed_json()).is_err());
    // An NV/EFS backup: items, no partitions, no storage, filed by IMEI.
    let nv = Manifest {
        kind: BackupKind::NvEfs,
        storage: None,
        identity: Identity {
            imei: Some("490154203237518".into()),
            ..Identity::default()
        },
        table: Vec::new(),
        files: Vec::new(),
        items: vec![
            item.clone(),
            ItemEntry {
                name: "efs_001_nvm_num_550.bin".into(),
                origin: ItemOrigin::EfsFile {
                    path: "/nvm/num/550".into(),
                },
                bytes: 9,
                sha256: "1".repeat(64),
            },
        ],
        ..good.clone()
    };
    let parsed = Manifest::parse(&nv.to_sealed_json()).unwrap();
    assert_eq!(parsed.unit(), "imei-490154203237518");
    assert_eq!(parsed.total_bytes(), 137);
    for bad in [
        // Partitions in an NV/EFS backup.
        Manifest {
            files: good.files.clone(),
            ..nv.clone()
        },
        // No IMEI and no serial.
        Manifest {
            identity: Identity::default(),
            ..nv.clone()
        },
        // A name that is not plain, a path that is not absolute, the same name twice.
        Manifest {
            items: vec![ItemEntry {
                name: "../x.bin".into(),
                ..item.clone()
            }],
            ..nv.clone()
        },
        Manifest {
            items: vec![ItemEntry {
                origin: ItemOrigin::EfsFile {
                    path: "nvm/x".into(),
                },
                ..item.clone()
            }],
            ..nv.clone()
        },
        Manifest {
            items: vec![item.clone(), item.clone()],
            ..nv.clone()
        },
    ] {
        assert!(Manifest::parse(&bad.to_sealed_json()).is_err(), "{bad:?}");
    }
}
