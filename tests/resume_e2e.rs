//! Resume: a flash interrupted anywhere continues to a verified end without rewriting what was
//! finished.
//!
//! 1. Drops at many points, on NAND (`nand-ec25e`) and eMMC (`emmc-msm8916`): the programmer
//!    drops the link after N raw bytes (`DropInRaw`), the unit drops it after N bytes of the
//!    whole session (`DropAfter`, Sahara included), or the host's cable is cut (the pipe
//!    [`Cutter`]) in the middle of a step. Each interruption is a new "appearance": a fresh boot
//!    ROM over the same storage. [`flash_resumable`] reconnects, identifies the unit by its EDL
//!    serial, uploads the programmer again and continues from the journal. Then:
//!    - the storage equals the storage of an uninterrupted flash of the same package
//!      (every partition's sha256), and every program region reads back over the wire equal
//!      to its image;
//!    - every sector of every program step was written by exactly one acknowledged program
//!      command (so finished partitions were written once), and at most one program per drop
//!      was cut off; on eMMC the bytes sent twice are at most one chunk per drop.
//! 2. A boot-looping unit on the emulated USB bus (14 s / 10 s scaled by 0.1, raw data
//!    throttled so the package needs several windows) is flashed through its windows.
//!
//! No assertion depends on timing; every test body is bounded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use qrescue::engine::connect::attach_or_upload;
use qrescue::engine::events::EngineEvent;
use qrescue::engine::firehose::{FirehoseOptions, Read, StorageKind};
use qrescue::engine::flash::{self, FlashJob, FlashPlan, FlashStep};
use qrescue::engine::journal::{JournalStore, Opening};
use qrescue::engine::resume::{
    flash_resumable, Link, ResumeNotice, ResumeOptions, ResumeReport, SourceReconnect,
};
use qrescue::engine::sahara::SaharaConfig;
use qrescue::package::expr;
use qrescue::sim::device::{self, DeviceConfig};
use qrescue::sim::enumerate::{run_on_usb, BootLoop, Schedule};
use qrescue::sim::faults::{Fault, FaultPlan};
use qrescue::sim::firehose::{
    CommandRecord, Programmer, ProgrammerOptions, Storage, StorageProfile,
};
use qrescue::sim::hub::UsbHub;
use qrescue::sim::package_gen::{self, PackageOptions};
use qrescue::sim::profile::Profile;
use qrescue::transport::open::{open_device, OpenOptions};
use qrescue::transport::pipe::{self, Cutter};
use qrescue::transport::{Framing, Transport};

const BODY_LIMIT: Duration = Duration::from_secs(90);
/// eMMC chunk size in these tests (small, so partitions span several chunks).
const CHUNK: u64 = 64 * 1024;

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
            Ok(()) => unreachable!(),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test body hangs"),
    }
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A generated package and its plan.
struct Pkg {
    _dir: tempfile::TempDir,
    plan: FlashPlan,
    programmer: Vec<u8>,
    unit: Profile,
    storage: StorageProfile,
}

fn package(model: &str, storage_name: &str, image_bytes: u64) -> Pkg {
    let unit = Profile::by_name(model).unwrap().for_unit(5);
    let storage = StorageProfile::by_name(storage_name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pkg = package_gen::emit(
        &dir.path().join("pkg"),
        &unit,
        &storage,
        PackageOptions {
            image_bytes,
            seed: 21,
        },
    )
    .unwrap();
    let plan = FlashPlan::from_xml(&pkg.rawprogram[0], Some(&pkg.patch[0]), None).unwrap();
    Pkg {
        programmer: std::fs::read(&pkg.programmer).unwrap(),
        _dir: dir,
        plan,
        unit,
        storage,
    }
}

fn job(p: &Pkg) -> FlashJob {
    FlashJob {
        programmer: Some(p.programmer.clone()),
        reset: None,
        ..FlashJob::default()
    }
}

/// One appearance of the unit: its boot ROM and programmer on a thread, the host end returned.
struct Appearance {
    done: mpsc::Receiver<Programmer>,
}

fn appear(
    unit: &Profile,
    programmer: Programmer,
    device_faults: Vec<Fault>,
) -> (pipe::PipeEnd, Cutter, Appearance) {
    let (mut dev, host) = pipe::pair(Framing::Stream);
    let cutter = host.cutter();
    let c2 = host.cutter();
    let mut cfg = DeviceConfig::new(unit.clone())
        .with_faults(FaultPlan::new(device_faults, 3))
        .with_link_drop_hook(Box::new(move || c2.cut()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut programmer = programmer;
        let stop = AtomicBool::new(false);
        device::run(&mut dev, &mut cfg, &mut programmer, &stop);
        drop(dev);
        let _ = tx.send(programmer);
    });
    (host, cutter, Appearance { done: rx })
}

fn programmer_on(storage: Storage, faults: Vec<Fault>) -> Programmer {
    Programmer::with_storage(
        storage,
        ProgrammerOptions {
            faults: FaultPlan::new(faults, 9),
            welcome_delay: Duration::from_millis(5),
            ..ProgrammerOptions::default()
        },
    )
}

/// What one interruption does.
#[derive(Debug, Clone)]
enum Cut {
    /// The programmer drops the link after this many raw bytes.
    InRaw(u64),
    /// The unit drops the link after this many bytes of the session (Sahara included).
    After(u64),
    /// The host's cable is cut at the Nth progress event.
    AtProgress(usize),
}

/// Everything a resumed flash left behind.
struct Outcome {
    report: ResumeReport,
    storage: Storage,
    commands: Vec<CommandRecord>,
    events: Vec<EngineEvent>,
    notices: Vec<ResumeNotice>,
}

/// Flash `p` with one interruption per entry of `drops` (attempt k gets `drops[k]`), resuming
/// after each, on a unit whose storage starts as the factory's.
fn flash_with_drops(p: &Pkg, drops: &[Cut], data: &Path) -> Outcome {
    let store = JournalStore::at(data.join("journals"));
    let storage = Arc::new(Mutex::new(Some(Storage::new(&p.storage))));
    let commands = Arc::new(Mutex::new(Vec::<CommandRecord>::new()));
    let current: Arc<Mutex<Option<(Appearance, Cutter)>>> = Arc::new(Mutex::new(None));
    let attempt = Arc::new(Mutex::new(0usize));
    let (st, cm, cur, at) = (
        storage.clone(),
        commands.clone(),
        current.clone(),
        attempt.clone(),
    );
    let unit = p.unit.clone();
    let drops_c = drops.to_vec();
    // Collect the previous appearance's programmer (its storage carries over, like flash does).
    let collect = move |cur: &Mutex<Option<(Appearance, Cutter)>>,
                        st: &Mutex<Option<Storage>>,
                        cm: &Mutex<Vec<CommandRecord>>| {
        if let Some((a, _)) = cur.lock().unwrap().take() {
            let prog = a
                .done
                .recv_timeout(Duration::from_secs(20))
                .expect("the previous appearance ends once its link is gone");
            cm.lock().unwrap().extend(prog.commands().iter().cloned());
            *st.lock().unwrap() = Some(prog.storage().clone());
        }
    };
    let collect2 = collect;
    let mut reconnect = move |_wait: Duration| -> qrescue::Result<Option<Link>> {
        collect(&cur, &st, &cm);
        let mut n = at.lock().unwrap();
        let (raw, after) = match drops_c.get(*n) {
            Some(Cut::InRaw(k)) => (vec![Fault::DropInRaw(Some(*k))], vec![]),
            Some(Cut::After(k)) => (vec![], vec![Fault::DropAfter(Some(*k))]),
            _ => (vec![], vec![]),
        };
        *n += 1;
        let s = st.lock().unwrap().take().expect("storage");
        let (host, cutter, a) = appear(&unit, programmer_on(s, raw), after);
        *cur.lock().unwrap() = Some((a, cutter));
        Ok(Some(Link {
            transport: Box::new(host),
            appeared: Instant::now(),
            window: None,
            port: "pipe".into(),
        }))
    };
    let mut events = Vec::new();
    let mut notices = Vec::new();
    let mut progress_seen = 0usize;
    let cancel = AtomicBool::new(false);
    let opts = ResumeOptions {
        package: "generated".into(),
        return_wait: Duration::from_secs(5),
        chunk_bytes: CHUNK,
        ..ResumeOptions::default()
    };
    let report = {
        let current = current.clone();
        let attempt = attempt.clone();
        let drops = drops.to_vec();
        flash_resumable(
            &mut reconnect,
            &p.plan,
            &job(p),
            &store,
            &opts,
            &mut |e| {
                if matches!(e, EngineEvent::Progress { .. }) {
                    progress_seen += 1;
                    let n = *attempt.lock().unwrap();
                    if let Some(Cut::AtProgress(k)) = drops.get(n.wrapping_sub(1)) {
                        if progress_seen == *k {
                            if let Some((_, c)) = current.lock().unwrap().as_ref() {
                                c.cut();
                            }
                        }
                    }
                }
                if matches!(e, EngineEvent::Plan { .. }) {
                    progress_seen = 0;
                }
                events.push(e);
            },
            &mut |n| notices.push(n.clone()),
            &cancel,
        )
        .unwrap_or_else(|e| panic!("the resumed flash failed: {e}"))
    };
    collect2(&current, &storage, &commands);
    let storage = storage.lock().unwrap().take().unwrap();
    let commands = commands.lock().unwrap().clone();
    Outcome {
        report,
        storage,
        commands,
        events,
        notices,
    }
}

/// The storage after an uninterrupted flash of `p`.
fn reference(p: &Pkg) -> Storage {
    let (mut host, _c, a) = appear(
        &p.unit,
        programmer_on(Storage::new(&p.storage), vec![]),
        vec![],
    );
    let cancel = AtomicBool::new(false);
    flash::run(&mut host, &p.plan, &job(p), &mut |_| {}, &cancel).expect("clean flash");
    drop(host);
    a.done
        .recv_timeout(Duration::from_secs(20))
        .unwrap()
        .storage()
        .clone()
}

fn digests(s: &Storage) -> Vec<(String, Option<String>)> {
    s.regions()
        .into_iter()
        .map(|r| {
            let d = s.physical_sha256(r.lun, r.start_sector, r.num_sectors);
            (r.name, d)
        })
        .collect()
}

/// Sectors `[start, end)` of LUN `lun` for each program step, with its expected bytes (image,
/// zero padded), skipping steps a DISK patch edits afterwards.
type Region = (String, Read, Vec<u8>);

fn program_regions(p: &Pkg, factory: &Storage) -> Vec<Region> {
    let plan = p
        .plan
        .resolve(&|lun| factory.expr_env(lun))
        .expect("host patches resolve");
    let patched: Vec<(u32, u64)> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            FlashStep::Patch { cmd, .. } => {
                let env = factory.expr_env(cmd.physical_partition)?;
                let st = expr::eval(&cmd.start_sector, &env).ok()?;
                Some((cmd.physical_partition, st))
            }
            _ => None,
        })
        .collect();
    plan.steps
        .iter()
        .filter_map(|s| match s {
            FlashStep::Program { name, cmd, source } => {
                let env = factory.expr_env(cmd.physical_partition)?;
                let start = expr::eval(&cmd.start_sector, &env).ok()?;
                let end = start + cmd.num_sectors;
                if patched
                    .iter()
                    .any(|(l, st)| *l == cmd.physical_partition && (start..end).contains(st))
                {
                    return None;
                }
                let mut data = plan.source_bytes(source, 1 << 30).unwrap();
                data.resize((cmd.num_sectors * u64::from(cmd.sector_size)) as usize, 0);
                let mut read = Read::new(
                    cmd.sector_size,
                    cmd.num_sectors,
                    cmd.physical_partition,
                    start.to_string(),
                );
                read.last_sector = cmd.last_sector;
                read.pages_per_block = cmd.pages_per_block;
                Some((name.clone(), read, data))
            }
            _ => None,
        })
        .collect()
}

/// Read every program region back over the wire (a fresh appearance: upload, configure, read).
fn read_back(p: &Pkg, storage: Storage) {
    let regions = program_regions(p, &Storage::new(&p.storage));
    assert!(!regions.is_empty());
    let (host, _c, a) = appear(&p.unit, programmer_on(storage, vec![]), vec![]);
    let (mut fh, _) = attach_or_upload(
        host,
        Some(&p.programmer),
        &SaharaConfig::default(),
        FirehoseOptions::default(),
        &mut |_| {},
    )
    .expect("upload for the read-back");
    fh.configure(p.plan.storage).expect("configure");
    for (name, cmd, want) in regions {
        let mut got = Vec::new();
        fh.read(&cmd, &mut got, &mut |_| {})
            .unwrap_or_else(|e| panic!("reading {name} back: {e}"));
        assert_eq!(
            sha_hex(&got),
            sha_hex(&want),
            "{name} reads back as its image"
        );
    }
    drop(fh);
    let _ = a.done.recv_timeout(Duration::from_secs(20));
}

/// `(lun, start, count, acked)` of every program command the unit saw.
fn programs(commands: &[CommandRecord], factory: &Storage) -> Vec<(u32, u64, u64, bool)> {
    commands
        .iter()
        .filter(|c| c.tag == "program")
        .map(|c| {
            let n = |k: &str| c.attrs.get(k).map(|v| v.trim_end_matches('.').to_string());
            let lun: u32 = n("physical_partition_number").map_or(0, |v| v.parse().unwrap());
            let env = factory.expr_env(lun).unwrap();
            (
                lun,
                expr::eval(&n("start_sector").unwrap(), &env).unwrap(),
                n("num_partition_sectors").unwrap().parse().unwrap(),
                c.outcome == "ACK",
            )
        })
        .collect()
}

/// The plan steps (names) that were running when an attempt failed.
fn interrupted(events: &[EngineEvent]) -> Vec<String> {
    let mut names = BTreeMap::new();
    let mut out = Vec::new();
    for e in events {
        match e {
            EngineEvent::Plan { steps, .. } => {
                names = steps.iter().map(|s| (s.index, s.name.clone())).collect()
            }
            EngineEvent::StepFailed { index, .. } => out.extend(names.get(index).cloned()),
            _ => {}
        }
    }
    out
}

/// The resume invariant: every sector of every program step that was not running at a drop
/// was written by exactly one acknowledged program (finished partitions are never written
/// again); a step running at a drop (its acknowledgement may have been lost with the link) at
/// most once more per drop; at most one program per drop cut off.
fn check_written_once(p: &Pkg, o: &Outcome, drops: usize, chunk: u64) {
    let factory = Storage::new(&p.storage);
    let progs = programs(&o.commands, &factory);
    let cut_steps = interrupted(&o.events);
    for s in &p.plan.steps {
        let FlashStep::Program { name, cmd, .. } = s else {
            continue;
        };
        let env = factory.expr_env(cmd.physical_partition).unwrap();
        let start = expr::eval(&cmd.start_sector, &env).unwrap();
        for sector in [
            start,
            start + cmd.num_sectors / 2,
            start + cmd.num_sectors - 1,
        ] {
            let acked = progs
                .iter()
                .filter(|(l, st, n, ok)| {
                    *ok && *l == cmd.physical_partition && (*st..*st + *n).contains(&sector)
                })
                .count();
            if cut_steps.contains(name) {
                assert!(
                    (1..=1 + drops).contains(&acked),
                    "{name} (interrupted): sector {sector} written by {acked} acknowledged programs"
                );
            } else {
                assert_eq!(
                    acked, 1,
                    "{name}: sector {sector} written by {acked} acknowledged programs"
                );
            }
        }
    }
    let cut = progs.iter().filter(|p| !p.3).count();
    assert!(cut <= drops, "{cut} programs cut off for {drops} drops");
    if p.plan.storage != StorageKind::Nand {
        let ss = 512;
        let resent: u64 = progs.iter().filter(|p| !p.3).map(|p| p.2 * ss).sum();
        assert!(
            resent <= chunk * drops as u64,
            "eMMC re-sends at most a chunk per drop"
        );
    }
}

fn check(p: &Pkg, o: Outcome, reference: &[(String, Option<String>)], drops: usize) {
    assert_eq!(
        digests(&o.storage),
        reference,
        "the same storage as a clean flash"
    );
    check_written_once(p, &o, drops, CHUNK);
    assert_eq!(
        o.report.attempts as usize,
        drops + 1,
        "one attempt per drop, plus the last"
    );
    assert!(matches!(o.report.opening, Opening::New { .. }));
    // Each attempt is a whole Plan … Done sequence; the last ends ok.
    let dones: Vec<bool> = o
        .events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Done { ok, .. } => Some(*ok),
            _ => None,
        })
        .collect();
    assert_eq!(dones.len(), drops + 1);
    assert_eq!(dones.last(), Some(&true));
    assert!(o
        .notices
        .iter()
        .any(|n| matches!(n, ResumeNotice::Journal { .. })));
    read_back(p, o.storage);
}

fn drops_at_many_points(model: &str, storage: &str) {
    let p = package(model, storage, 640 * 1024);
    let reference = digests(&reference(&p));
    let total = p.plan.total_bytes();
    let mut cases: Vec<Vec<Cut>> = (1..=5)
        .map(|k| vec![Cut::InRaw(total * k / 6 + 777)])
        .collect();
    cases.push(vec![Cut::After(5_000)]); // during the Sahara upload
    cases.push(vec![Cut::After(p.programmer.len() as u64 + total / 2)]);
    cases.push(vec![Cut::AtProgress(3)]);
    cases.push(vec![
        Cut::InRaw(total / 5),
        Cut::InRaw(total / 4),
        Cut::AtProgress(2),
    ]);
    for drops in cases {
        let data = tempfile::tempdir().unwrap();
        let o = flash_with_drops(&p, &drops, data.path());
        let resumed = o.events.iter().any(|e| matches!(e, EngineEvent::Log { message } if message.starts_with("Continuing an interrupted flash") || message.starts_with("Skipping step")));
        let skipped_any = o.events.iter().any(
            |e| matches!(e, EngineEvent::Log { message } if message.starts_with("Skipping step")),
        );
        // Drops after a sixth of the image bytes leave finished steps to skip (a drop in the
        // upload or at an early progress event may leave none; the invariants below hold
        // either way).
        if matches!(drops[0], Cut::InRaw(_)) {
            assert!(
                resumed && skipped_any,
                "{drops:?}: the resumed attempt skipped finished steps"
            );
            // A drop in raw data cuts a program: on NAND it is erased again and rewritten.
            if p.plan.storage == StorageKind::Nand {
                assert!(
                    o.events.iter().any(|e| matches!(e, EngineEvent::Log { message } if message.contains("erasing it again"))),
                    "{drops:?}: the cut NAND partition is erased again"
                );
            }
        }
        check(&p, o, &reference, drops.len());
    }
}

#[test]
fn nand_flash_resumes_after_drops_at_many_points() {
    bounded(|| drops_at_many_points("ec25", "nand-ec25e"));
}

#[test]
fn emmc_flash_resumes_after_drops_at_many_points() {
    bounded(|| drops_at_many_points("ec25", "emmc-msm8916"));
}

#[test]
fn a_journal_left_by_a_dead_process_is_continued_and_fresh_ignores_it() {
    bounded(|| {
        let p = package("ec25", "emmc-msm8916", 512 * 1024);
        let data = tempfile::tempdir().unwrap();
        // First process: the programmer drops mid-flash and the process "dies" (gives up
        // waiting at once).
        let store = JournalStore::at(data.path().join("journals"));
        let total = p.plan.total_bytes();
        let (host, _c, a) = appear(
            &p.unit,
            programmer_on(
                Storage::new(&p.storage),
                vec![Fault::DropInRaw(Some(total / 2))],
            ),
            vec![],
        );
        let mut link = Some(host);
        let mut once = move |_w: Duration| -> qrescue::Result<Option<Link>> {
            Ok(link.take().map(|h| Link {
                transport: Box::new(h) as Box<dyn Transport>,
                appeared: Instant::now(),
                window: None,
                port: "pipe".into(),
            }))
        };
        let opts = ResumeOptions {
            return_wait: Duration::from_millis(10),
            chunk_bytes: CHUNK,
            ..ResumeOptions::default()
        };
        let e = flash_resumable(
            &mut once,
            &p.plan,
            &job(&p),
            &store,
            &opts,
            &mut |_| {},
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(e.next.contains("run the same flash again"), "{e}");
        let storage = a
            .done
            .recv_timeout(Duration::from_secs(20))
            .unwrap()
            .storage()
            .clone();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert!(!list[0].finished && list[0].steps_done < list[0].steps_total);
        // Second process: continues the journal.
        let (host, _c, a) = appear(&p.unit, programmer_on(storage, vec![]), vec![]);
        let mut link = Some(host);
        let mut once = move |_w: Duration| -> qrescue::Result<Option<Link>> {
            Ok(link.take().map(|h| Link {
                transport: Box::new(h) as Box<dyn Transport>,
                appeared: Instant::now(),
                window: None,
                port: "pipe".into(),
            }))
        };
        let r = flash_resumable(
            &mut once,
            &p.plan,
            &job(&p),
            &store,
            &opts,
            &mut |_| {},
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(
            matches!(r.opening, Opening::Resume { steps_done, .. } if steps_done > 0),
            "{:?}",
            r.opening
        );
        assert!(!r.last.skipped.is_empty());
        let prog = a.done.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(digests(prog.storage()), digests(&reference(&p)));
        assert!(store.list().unwrap()[0].finished);
        // --fresh: the journal is ignored (here: a finished one is replaced anyway).
        let (host, _c, _a) = appear(
            &p.unit,
            programmer_on(prog.storage().clone(), vec![]),
            vec![],
        );
        let mut link = Some(host);
        let mut once = move |_w: Duration| -> qrescue::Result<Option<Link>> {
            Ok(link.take().map(|h| Link {
                transport: Box::new(h) as Box<dyn Transport>,
                appeared: Instant::now(),
                window: None,
                port: "pipe".into(),
            }))
        };
        let r = flash_resumable(
            &mut once,
            &p.plan,
            &job(&p),
            &store,
            &ResumeOptions {
                fresh: true,
                ..opts
            },
            &mut |_| {},
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(
            r.opening,
            Opening::New {
                replaced_finished: false,
                fresh: true
            }
        );
        assert!(r.last.skipped.is_empty());
    });
}

#[test]
fn a_boot_looping_unit_is_flashed_through_its_windows() {
    bounded(|| {
        // 14 s period, 10 s window (USERS.md §4.2), scaled by 0.1; raw data at 1 MB/s, so the
        // ~2.3 MB of images need at least three windows (a lower bound the throttle enforces).
        let p = package("ec25", "emmc-msm8916", 2304 * 1024);
        let reference = digests(&reference(&p));
        let hub = UsbHub::new();
        let source = hub.source();
        let stop = Arc::new(AtomicBool::new(false));
        let unit = p.unit.clone();
        let storage = p.storage.clone();
        let (s2, h2) = (stop.clone(), hub.clone());
        let device = std::thread::spawn(move || {
            let mut cfg = DeviceConfig::new(unit);
            let mut programmer = Programmer::new(
                &storage,
                ProgrammerOptions {
                    throughput_limit: Some(1_000_000),
                    welcome_delay: Duration::from_millis(5),
                    ..ProgrammerOptions::default()
                },
            );
            let schedule = Schedule {
                boot_loop: Some(BootLoop {
                    period: Duration::from_millis(1400),
                    window: Duration::from_millis(1000),
                }),
                ..Schedule::default()
            };
            run_on_usb(&mut cfg, &mut programmer, &h2, schedule, &s2, &mut |_| {}).unwrap();
            programmer
        });
        let locks = tempfile::tempdir().unwrap();
        let lock_dir = locks.path().to_path_buf();
        let mut reconnect = SourceReconnect::new(
            Box::new(source),
            Box::new(move |snap| {
                open_device(
                    snap,
                    &OpenOptions {
                        lock_dir: Some(lock_dir.clone()),
                        ..OpenOptions::default()
                    },
                )
            }),
        );
        let data = tempfile::tempdir().unwrap();
        let store = JournalStore::at(data.path().join("journals"));
        let opts = ResumeOptions {
            package: "generated".into(),
            return_wait: Duration::from_secs(10),
            chunk_bytes: 256 * 1024,
            max_stalls: 10,
            ..ResumeOptions::default()
        };
        let mut notices = Vec::new();
        let mut dones = Vec::new();
        let mut events = Vec::new();
        let report = flash_resumable(
            &mut reconnect,
            &p.plan,
            &job(&p),
            &store,
            &opts,
            &mut |e| {
                if let EngineEvent::Done { ok, .. } = e {
                    dones.push(ok);
                }
                if matches!(e, EngineEvent::Plan { .. } | EngineEvent::StepFailed { .. }) {
                    events.push(e);
                }
            },
            &mut |n| notices.push(n.clone()),
            &AtomicBool::new(false),
        )
        .unwrap_or_else(|e| panic!("flash through the boot loop: {e}"));
        stop.store(true, Ordering::SeqCst);
        let programmer = device.join().unwrap();
        hub.close();
        assert!(report.attempts >= 3, "{} attempts", report.attempts);
        assert_eq!(dones.last(), Some(&true));
        assert!(dones[..dones.len() - 1].iter().all(|ok| !ok));
        assert_eq!(digests(programmer.storage()), reference);
        let o = Outcome {
            report,
            storage: programmer.storage().clone(),
            commands: programmer.commands().to_vec(),
            events,
            notices,
        };
        // Drops happen at window ends only while the loop is not yet known; once it is, the
        // engine pauses at chunk boundaries. Either way nothing finished is written twice.
        check_written_once(&p, &o, o.report.attempts as usize, 256 * 1024);
    });
}

/// A window that is already closing: every attempt does one step (or one eMMC chunk) and then
/// pauses at that safe point; the next "window" continues. Deterministic: the engine always
/// makes one piece of progress per window and never starts a second one.
fn one_piece_per_window(model: &str, storage: &str) {
    let p = package(model, storage, 384 * 1024);
    let reference = digests(&reference(&p));
    let data = tempfile::tempdir().unwrap();
    let store = JournalStore::at(data.path().join("journals"));
    let st = Arc::new(Mutex::new(Some(Storage::new(&p.storage))));
    let commands = Arc::new(Mutex::new(Vec::<CommandRecord>::new()));
    let current: Arc<Mutex<Option<Appearance>>> = Arc::new(Mutex::new(None));
    let collect = |cur: &Mutex<Option<Appearance>>,
                   st: &Mutex<Option<Storage>>,
                   cm: &Mutex<Vec<CommandRecord>>| {
        if let Some(a) = cur.lock().unwrap().take() {
            let prog = a.done.recv_timeout(Duration::from_secs(20)).unwrap();
            cm.lock().unwrap().extend(prog.commands().iter().cloned());
            *st.lock().unwrap() = Some(prog.storage().clone());
        }
    };
    let (st2, cm2, cur2) = (st.clone(), commands.clone(), current.clone());
    let unit = p.unit.clone();
    let mut reconnect = move |_w: Duration| -> qrescue::Result<Option<Link>> {
        collect(&cur2, &st2, &cm2);
        let s = st2.lock().unwrap().take().unwrap();
        let (host, _c, a) = appear(&unit, programmer_on(s, vec![]), vec![]);
        *cur2.lock().unwrap() = Some(a);
        Ok(Some(Link {
            transport: Box::new(host),
            appeared: Instant::now(),
            window: Some(Duration::ZERO),
            port: "pipe".into(),
        }))
    };
    let mut events = Vec::new();
    let opts = ResumeOptions {
        return_wait: Duration::from_secs(5),
        chunk_bytes: CHUNK,
        ..ResumeOptions::default()
    };
    let report = flash_resumable(
        &mut reconnect,
        &p.plan,
        &job(&p),
        &store,
        &opts,
        &mut |e| events.push(e),
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    collect(&current, &st, &commands);
    let storage = st.lock().unwrap().take().unwrap();
    assert_eq!(digests(&storage), reference);
    assert!(report.attempts > 3, "{} windows", report.attempts);
    let pauses = events
        .iter()
        .filter(|e| {
            matches!(e, EngineEvent::Log { message } if message.starts_with("Pausing"))
                || matches!(e, EngineEvent::StepFailed { what, .. } if what.starts_with("Paused"))
        })
        .count();
    assert_eq!(
        pauses as u32,
        report.attempts - 1,
        "every window but the last pauses"
    );
    assert!(!events.iter().any(
        |e| matches!(e, EngineEvent::Log { message } if message.contains("erasing it again"))
    ));
    // Nothing was cut: every sector of every program written by exactly one program.
    let o = Outcome {
        report,
        storage,
        commands: commands.lock().unwrap().clone(),
        events: Vec::new(),
        notices: Vec::new(),
    };
    check_written_once(&p, &o, 0, CHUNK);
}

#[test]
fn nand_windows_end_at_step_boundaries() {
    bounded(|| one_piece_per_window("ec25", "nand-ec25e"));
}

#[test]
fn emmc_windows_end_at_confirmed_chunks() {
    bounded(|| one_piece_per_window("ec25", "emmc-msm8916"));
}

#[test]
fn a_nand_partition_longer_than_the_boot_loop_window_stops_the_flash_with_the_reason() {
    bounded(|| {
        // NAND partitions are written whole, so one that takes longer than a window can never
        // be written while the unit loops. Once the loop is known and the partition was cut off
        // by a window's end, the flash stops and says which partition, how long it takes and how
        // long a window is — instead of erasing it again in every window until the stall limit.
        // A 0.9 s / 0.5 s loop, raw data at most 500 KB/s: the small first partitions fit a
        // window, the biggest (> 400 KiB, > 0.8 s) never does.
        let p = package("ec25", "nand-ec25e", 2304 * 1024);
        let biggest = p.plan.steps.iter().map(|s| s.bytes()).max().unwrap();
        assert!(biggest > 400 * 1024, "the package needs one big partition");
        let hub = UsbHub::new();
        let source = hub.source();
        let stop = Arc::new(AtomicBool::new(false));
        let (unit, storage) = (p.unit.clone(), p.storage.clone());
        let (s2, h2) = (stop.clone(), hub.clone());
        let device = std::thread::spawn(move || {
            let mut cfg = DeviceConfig::new(unit);
            let mut programmer = Programmer::new(
                &storage,
                ProgrammerOptions {
                    throughput_limit: Some(500_000),
                    welcome_delay: Duration::from_millis(5),
                    ..ProgrammerOptions::default()
                },
            );
            let schedule = Schedule {
                boot_loop: Some(BootLoop {
                    period: Duration::from_millis(900),
                    window: Duration::from_millis(500),
                }),
                ..Schedule::default()
            };
            run_on_usb(&mut cfg, &mut programmer, &h2, schedule, &s2, &mut |_| {}).unwrap();
        });
        let locks = tempfile::tempdir().unwrap();
        let lock_dir = locks.path().to_path_buf();
        let mut reconnect = SourceReconnect::new(
            Box::new(source),
            Box::new(move |snap| {
                open_device(
                    snap,
                    &OpenOptions {
                        lock_dir: Some(lock_dir.clone()),
                        ..OpenOptions::default()
                    },
                )
            }),
        );
        let data = tempfile::tempdir().unwrap();
        let store = JournalStore::at(data.path().join("journals"));
        let opts = ResumeOptions {
            package: "generated".into(),
            return_wait: Duration::from_secs(10),
            // Far more than the loop needs to be known: only the new check can end it early.
            max_stalls: 30,
            max_attempts: 40,
            ..ResumeOptions::default()
        };
        let result = flash_resumable(
            &mut reconnect,
            &p.plan,
            &job(&p),
            &store,
            &opts,
            &mut |_| {},
            &mut |_| {},
            &AtomicBool::new(false),
        );
        stop.store(true, Ordering::SeqCst);
        device.join().unwrap();
        hub.close();
        let err = result.expect_err("the plan cannot finish inside the loop");
        assert!(
            err.what
                .contains("cannot be written inside this modem's boot loop"),
            "{}: {}",
            err.what,
            err.why
        );
        assert!(err.why.contains("window"), "{}", err.why);
        assert!(
            err.next.contains("run the same flash again"),
            "{}",
            err.next
        );
        // What the windows wrote stays journaled for the run after the loop is stopped.
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].steps_done > 0 && !list[0].finished, "{:?}", list[0]);
    });
}
