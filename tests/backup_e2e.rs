//! End to end: `backup::run` against the emulated modem (boot ROM + emulated Firehose
//! programmer on a thread, over the in-process pipe), on the EC25-E NAND and the MSM8916 eMMC.
//!
//! Covered:
//! 1. identify (Sahara command mode) → upload → the unit's own data written into its
//!    device-unique partitions → `take_backup` → the store holds one verified backup whose
//!    files equal the emulator's storage; the event stream obeys the documented order.
//! 2. The guard of `engine::prepare`: a factory plan (cefs.mbn over EFS2 / an image over
//!    modemst1) is refused with the store's ledger before the backup and allowed after it —
//!    for this unit only.
//! 3. The unit data is destroyed, then `restore` writes the backup back and reads it back; the
//!    emulator's storage holds the unit's data again. A backup of another unit is refused
//!    before anything is sent.
//! 4. The link dropping in the middle of a backup leaves nothing in the store.
//!
//! Every test body runs under [`bounded`].

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use qrescue::backup::run::{self, BackupOptions};
use qrescue::backup::store::{BackupKind, Store, StoreLedger};
use qrescue::backup::Identity;
use qrescue::engine::connect::attach_or_upload;
use qrescue::engine::events::{EngineEvent, StepKind};
use qrescue::engine::firehose::{Erase, FirehoseOptions, FirehoseSession, Program, StorageKind};
use qrescue::engine::guards::classify;
use qrescue::engine::prepare::{prepare, PrepareRequest, Stage};
use qrescue::engine::sahara::SaharaConfig;
use qrescue::sim::device::DeviceConfig;
use qrescue::sim::faults::{Fault, FaultPlan};
use qrescue::sim::firehose::{Programmer, ProgrammerOptions, StorageProfile};
use qrescue::sim::inproc::InProcessModem;
use qrescue::sim::package_gen::{self, PackageOptions};
use qrescue::sim::profile::Profile;
use qrescue::transport::pipe::{self, PipeEnd};
use qrescue::transport::{Framing, Transport};
use qrescue::ErrorKind;

const BODY_LIMIT: Duration = Duration::from_secs(90);

fn bounded(body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(BODY_LIMIT) {
        Ok(()) => h.join().expect("body finished"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body ends by sending or by panicking"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test body did not finish within {BODY_LIMIT:?}")
        }
    }
}

struct Case {
    unit: Profile,
    storage: StorageProfile,
    kind: StorageKind,
}

fn nand() -> Case {
    Case {
        unit: Profile::by_name("ec25").unwrap(),
        storage: StorageProfile::by_name("nand-ec25e").unwrap(),
        kind: StorageKind::Nand,
    }
}

fn emmc() -> Case {
    Case {
        unit: Profile::by_name("rm520n").unwrap(),
        storage: StorageProfile::by_name("emmc-msm8916").unwrap(),
        kind: StorageKind::Emmc,
    }
}

fn start(case: &Case, faults: Vec<Fault>) -> (PipeEnd, InProcessModem) {
    let (host, dev) = pipe::pair(Framing::Stream);
    let cutter = host.cutter();
    let cfg =
        DeviceConfig::new(case.unit.clone()).with_link_drop_hook(Box::new(move || cutter.cut()));
    let programmer = Programmer::new(
        &case.storage,
        ProgrammerOptions {
            faults: FaultPlan::new(faults, 7),
            ..ProgrammerOptions::default()
        },
    );
    (host, InProcessModem::start(dev, cfg, programmer))
}

type Session<'a> =
    FirehoseSession<qrescue::transport::Pushback<qrescue::transport::Pushback<&'a mut PipeEnd>>>;

/// Identify over Sahara, upload the programmer, configure.
fn connect<'a>(link: &'a mut PipeEnd, case: &Case) -> (Session<'a>, Identity) {
    let (t, info) = run::identify(link, &SaharaConfig::default()).unwrap();
    let info = info.expect("the boot ROM greets with HELLO");
    let identity = Identity::from_device_info(&info);
    assert_eq!(
        identity.unit_key().unwrap(),
        format!("0x{:08x}", case.unit.identity.serial)
    );
    let programmer = case.unit.programmer(1);
    let (mut fh, _) = attach_or_upload(
        t,
        Some(&programmer),
        &SaharaConfig::default(),
        FirehoseOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    fh.configure(case.kind).unwrap();
    (fh, identity)
}

/// The first block (NAND) / 64 sectors (eMMC) of every device-unique partition, filled with
/// `fill`-derived bytes: the unit's "calibration".
fn write_unit_data<T: Transport>(fh: &mut FirehoseSession<T>, case: &Case, fill: u8) {
    let mut notes = Vec::new();
    let layouts = run::read_layouts(fh, case.kind, &mut notes).unwrap();
    for l in &layouts {
        for p in l
            .table
            .iter()
            .filter(|p| classify(&p.name, case.kind).is_some())
        {
            let n = 64.min(p.num_sectors);
            let bytes: Vec<u8> = (0..n * u64::from(l.sector_size))
                .map(|i| (i as u8).wrapping_mul(7) ^ fill ^ p.name.len() as u8)
                .collect();
            let mut cmd = Program::new(l.sector_size, n, l.lun, p.start_sector.to_string());
            if case.kind == StorageKind::Nand {
                let last = p.end_sector() - 1;
                let mut e = Erase::new(
                    l.sector_size,
                    p.num_sectors,
                    l.lun,
                    p.start_sector.to_string(),
                );
                e.last_sector = Some(last);
                e.pages_per_block = l.pages_per_block;
                fh.erase(&e).unwrap();
                cmd.last_sector = Some(last);
                cmd.pages_per_block = l.pages_per_block;
            }
            fh.program(&cmd, &mut bytes.as_slice(), bytes.len() as u64, &mut |_| {})
                .unwrap();
        }
    }
}

/// The documented order: one plan, then per step started / progress / finished|failed, one
/// done last.
fn check_order(events: &[EngineEvent], ok: bool) {
    let EngineEvent::Plan { steps, .. } = &events[0] else {
        panic!("plan first: {:?}", events[0])
    };
    let Some(EngineEvent::Done { ok: done_ok, .. }) = events.last() else {
        panic!("done last")
    };
    assert_eq!(*done_ok, ok);
    let mut open: Option<usize> = None;
    let mut next = 0;
    for e in &events[1..events.len() - 1] {
        match e {
            EngineEvent::StepStarted { index, .. } => {
                assert!(open.is_none());
                assert_eq!(*index, next);
                open = Some(*index);
                next += 1;
            }
            EngineEvent::Progress { index, .. } => assert_eq!(Some(*index), open),
            EngineEvent::StepFinished { index, .. } | EngineEvent::StepFailed { index, .. } => {
                assert_eq!(Some(*index), open);
                open = None;
            }
            EngineEvent::Log { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(open.is_none());
    if ok {
        assert_eq!(next, steps.len());
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A package for the unit plus a set that overwrites its device-unique data.
fn factory_package(case: &Case, dir: &std::path::Path) -> PrepareRequest {
    let root = dir.join("pkg");
    let summary = package_gen::emit(
        &root,
        &case.unit,
        &case.storage,
        PackageOptions {
            image_bytes: 1 << 20,
            seed: 1,
        },
    )
    .unwrap();
    let xml = &summary.rawprogram[0];
    let text = std::fs::read_to_string(xml).unwrap();
    let entry = if case.kind == StorageKind::Nand {
        std::fs::write(root.join("update/cefs.mbn"), vec![0x5a; 16 << 10]).unwrap();
        "  <program PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" filename=\"..\\cefs.mbn\" label=\"EFS2\" last_sector=\"6911\" num_partition_sectors=\"5632\" physical_partition_number=\"0\" start_sector=\"1280\"/>\n".to_string()
    } else {
        std::fs::write(
            xml.parent().unwrap().join("modemst1.bin"),
            vec![0x5a; 16 << 10],
        )
        .unwrap();
        "  <program SECTOR_SIZE_IN_BYTES=\"512\" filename=\"modemst1.bin\" label=\"modemst1\" num_partition_sectors=\"3072\" physical_partition_number=\"0\" start_sector=\"270354\"/>\n".to_string()
    };
    let factory = xml.with_file_name(
        xml.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace("update", "factory")
            .replace("rawprogram0", "rawprogram0_factory"),
    );
    assert_ne!(&factory, xml);
    std::fs::write(
        &factory,
        text.replace("</data>", &format!("{entry}</data>")),
    )
    .unwrap();
    PrepareRequest {
        package: root,
        set: Some("factory".into()),
        storage: Some(case.kind),
        ..PrepareRequest::default()
    }
}

fn guard_allows(req: &PrepareRequest, store: &Store, unit: &str) -> bool {
    let ledger = StoreLedger::new(store).unwrap();
    let p = prepare(req, &ledger, Some(unit)).unwrap();
    let guard = p.guard.as_ref().expect("a plan and its guard");
    let refused_by_guard = p.refusals.iter().any(|r| r.stage == Stage::Guard);
    assert_eq!(guard.allowed, !refused_by_guard);
    assert!(
        !guard.touched.is_empty(),
        "the factory set touches unit data: {:?}",
        guard
    );
    guard.allowed
}

fn backup_and_restore(case: Case) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("backups"));
    let factory = factory_package(&case, dir.path());
    let unit = format!("0x{:08x}", case.unit.identity.serial);
    assert!(
        !guard_allows(&factory, &store, &unit),
        "blocked without a backup"
    );

    let (mut link, modem) = start(&case, Vec::new());
    let (mut fh, identity) = connect(&mut link, &case);
    write_unit_data(&mut fh, &case, 0x11);

    let mut events = Vec::new();
    let cancel = AtomicBool::new(false);
    let b = run::take_backup(
        &mut fh,
        &identity,
        &store,
        &BackupOptions {
            kind: BackupKind::DeviceUnique,
            storage: case.kind,
        },
        &mut |e| events.push(e),
        &cancel,
    )
    .unwrap();
    check_order(&events, true);
    let names: Vec<&str> = b
        .manifest
        .files
        .iter()
        .map(|f| f.partition.as_deref().unwrap())
        .collect();
    let want: Vec<&str> = b
        .manifest
        .table
        .iter()
        .filter(|p| classify(&p.name, case.kind).is_some())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, want);
    assert!(b.manifest.files.iter().all(|f| f.device_unique));
    assert_eq!(b.manifest.identity, identity);
    b.verify().unwrap();
    let kinds: Vec<StepKind> = match &events[0] {
        EngineEvent::Plan { steps, .. } => steps.iter().map(|s| s.kind).collect(),
        _ => unreachable!(),
    };
    assert_eq!(kinds.len(), 2 * names.len() + 1);
    assert!(kinds
        .iter()
        .all(|k| matches!(k, StepKind::Read | StepKind::Verify)));

    // The guard: allowed for this unit now, still blocked for another one.
    assert!(
        guard_allows(&factory, &store, &unit),
        "allowed after the backup"
    );
    assert!(!guard_allows(&factory, &store, "0x00000001"));

    // Destroy the unit data, then restore it.
    write_unit_data(&mut fh, &case, 0xEE);
    let plan = run::plan_restore(&b, &[]).unwrap();
    assert_eq!(plan.steps.len(), names.len());
    assert_eq!(
        plan.steps.iter().all(|s| s.erase),
        case.kind == StorageKind::Nand
    );

    // Another unit's backup is refused before anything is sent.
    let mut other = identity.clone();
    other.edl.as_mut().unwrap().serial ^= 1;
    other.edl.as_mut().unwrap().serial_hex =
        format!("0x{:08x}", other.edl.as_ref().unwrap().serial);
    let mut ev = Vec::new();
    let e = run::restore(&mut fh, &b, &plan, &other, &mut |e| ev.push(e), &cancel).unwrap_err();
    assert!(e.what.contains("is not from this modem"), "{e}");
    assert!(ev.is_empty(), "nothing planned or sent: {ev:?}");

    let mut ev = Vec::new();
    let report = run::restore(&mut fh, &b, &plan, &identity, &mut |e| ev.push(e), &cancel).unwrap();
    check_order(&ev, true);
    assert_eq!(report.regions, names.len());
    drop(fh);
    drop(link);
    let (_, programmer) = modem.finish().expect("the modem thread ends");
    for f in &b.manifest.files {
        let data = programmer
            .storage()
            .read_sectors_in(f.lun, f.start_sector, f.sectors, f.last_sector)
            .unwrap();
        assert_eq!(sha(&data), f.sha256, "{} holds the backup again", f.name);
        let on_disk = std::fs::read(b.file_path(f)).unwrap();
        assert_eq!(on_disk, data);
    }
}

#[test]
fn nand_backup_guard_and_restore() {
    bounded(|| backup_and_restore(nand()));
}

#[test]
fn emmc_backup_guard_and_restore() {
    bounded(|| backup_and_restore(emmc()));
}

#[test]
fn a_link_drop_mid_backup_leaves_nothing_in_the_store() {
    bounded(|| {
        let case = nand();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        // The table reads move a few pages; the drop hits the EFS2 read.
        let (mut link, _modem) = start(&case, vec![Fault::DropInRaw(Some(300_000))]);
        let (mut fh, identity) = connect(&mut link, &case);
        let mut events = Vec::new();
        let e = run::take_backup(
            &mut fh,
            &identity,
            &store,
            &BackupOptions {
                kind: BackupKind::DeviceUnique,
                storage: case.kind,
            },
            &mut |e| events.push(e),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeviceLost, "{e}");
        let l = store.list().unwrap();
        assert!(l.backups.is_empty() && l.damaged.is_empty() && l.incomplete.is_empty());
        if !events.is_empty() {
            check_order(&events, false);
        }
    });
}

/// A running programmer is not asked who it is: the nop probe finds it, no identity comes back,
/// and a session can attach to it afterwards on the same link.
#[test]
fn identify_leaves_a_running_programmer_alone() {
    bounded(|| {
        let case = emmc();
        let (mut link, _modem) = start(&case, Vec::new());
        {
            let (mut fh, _) = connect(&mut link, &case);
            fh.nop().unwrap();
        }
        let (t, info) = run::identify(&mut link, &SaharaConfig::default()).unwrap();
        assert!(info.is_none());
        let (mut fh, attach) = attach_or_upload(
            t,
            None,
            &SaharaConfig::default(),
            FirehoseOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(attach, qrescue::engine::connect::Attach::AlreadyRunning);
        fh.nop().unwrap();
    });
}

#[test]
fn without_an_identity_nothing_is_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let case = nand();
    bounded(move || {
        let (mut link, _modem) = start(&case, Vec::new());
        let (mut fh, _) = connect(&mut link, &case);
        let e = run::take_backup(
            &mut fh,
            &Identity::default(),
            &store,
            &BackupOptions {
                kind: BackupKind::Full,
                storage: case.kind,
            },
            &mut |_| panic!("no event without an identity"),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(e.what.contains("without knowing which modem"), "{e}");
        assert!(store.list().unwrap().incomplete.is_empty());
    });
}
