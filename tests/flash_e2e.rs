//! End to end: the flash engine ([`flash::run`], [`FirehoseSession`]) against the emulated modem
//! (boot ROM + emulated Firehose [`Programmer`] from [`device::run`], on its own thread) over the
//! in-process pipe.
//!
//! Covered:
//! 1. Generated packages (NAND Quectel layout on `nand-ec25e` and `nand-em12g`, ptool-style eMMC
//!    on `emmc-msm8916`, one rawprogramN/patchN pair per LUN on `ufs-qcs6490`): flash, then read
//!    every programmed partition back through the host and compare it with the image files and
//!    with the emulator's storage; the event stream obeys the documented order.
//! 2. The real rawprogram/patch XML of tests/data/realxml (EG25-G, EM12-G, MSM8916 ptool eMMC,
//!    QCS6490 UFS LUN 4) with images generated to fit their entries, verified the same way; on
//!    eMMC/UFS the real DISK patches (symbolic `NUM_DISK_SECTORS-…`, `CRC32(…)`) are checked by
//!    applying them to an expected model and by the emulator accepting the resulting GPT.
//!    A reset (`<power value="reset"/>`) brings the unit back to the boot ROM; a second flash
//!    uploads the programmer again and re-flashes the NAND over the first one.
//! 3. Every Firehose fault of the emulated programmer ends in a clear error (or, for
//!    payload-too-large, a renegotiated success), and the two NAND geometry mismatches of
//!    USERS.md are explained.
//!
//! Every test body runs under [`bounded`]: a hang fails the test instead of stalling the suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use qrescue::engine::events::{EngineEvent, StepKind};
use qrescue::engine::firehose::{
    FirehoseOptions, FirehoseSession, PowerMode, Read, StorageKind, Timeouts,
};
use qrescue::engine::flash::{self, FlashJob, FlashPlan, FlashReport, FlashStep};
use qrescue::package::expr::{self, PatchValue};
use qrescue::package::rawprogram::{parse_patch, parse_rawprogram, RawEntry};
use qrescue::sim::device::{self, DeviceConfig, RunOutcome};
use qrescue::sim::faults::{Fault, FaultPlan};
use qrescue::sim::firehose::{Programmer, ProgrammerOptions, Storage, StorageProfile};
use qrescue::sim::package_gen::{self, PackageOptions, PackageSummary};
use qrescue::sim::profile::Profile;
use qrescue::transport::pipe::{self, PipeEnd};
use qrescue::transport::Framing;
use qrescue::ErrorKind;

/// Upper bound for any single test body.
const BODY_LIMIT: Duration = Duration::from_secs(60);
/// Image bytes of a generated package.
const PACKAGE_BYTES: u64 = 3 << 20;
/// Largest image generated for an entry of a real XML file.
const REAL_IMAGE_CAP: u64 = 192 * 1024;

// ------------------------------------------------------------------------------------ harness

/// Run `body` on its own thread; fail if it panics or takes longer than [`BODY_LIMIT`].
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
            panic!("the test body did not finish within {BODY_LIMIT:?}: something hangs")
        }
    }
}

/// One emulated unit on a device thread, with the host end of the pipe.
struct Modem {
    link: PipeEnd,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<(RunOutcome, Programmer)>,
}

impl Modem {
    /// Start `unit` in EDL with the emulated programmer over `storage`, programmer faults given.
    fn start(unit: &Profile, storage: &StorageProfile, faults: Vec<Fault>) -> Modem {
        let (mut dev, host) = pipe::pair(Framing::Stream);
        let cutter = host.cutter();
        let mut cfg =
            DeviceConfig::new(unit.clone()).with_link_drop_hook(Box::new(move || cutter.cut()));
        let mut programmer = Programmer::new(
            storage,
            ProgrammerOptions {
                faults: FaultPlan::new(faults, 7),
                ..ProgrammerOptions::default()
            },
        );
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let outcome = device::run(&mut dev, &mut cfg, &mut programmer, &s2);
            // Close the device side at once so a host still waiting sees the link go.
            drop(dev);
            let _ = tx.send((outcome, programmer));
        });
        Modem {
            link: host,
            stop,
            done: rx,
        }
    }

    /// Close the host side, stop the unit and hand back its programmer (storage and record).
    fn finish(self) -> (RunOutcome, Programmer) {
        let Modem { link, stop, done } = self;
        drop(link);
        stop.store(true, Ordering::SeqCst);
        done.recv_timeout(Duration::from_secs(10))
            .expect("the device thread ends within 10 s of the host closing the link")
    }
}

/// What one `flash::run` returned and emitted.
struct Run {
    result: qrescue::Result<FlashReport>,
    events: Vec<EngineEvent>,
    elapsed: Duration,
}

fn flash_on(link: &mut PipeEnd, plan: &FlashPlan, job: &FlashJob) -> Run {
    let mut events = Vec::new();
    let cancel = AtomicBool::new(false);
    let t0 = Instant::now();
    let result = flash::run(&mut *link, plan, job, &mut |e| events.push(e), &cancel);
    Run {
        result,
        events,
        elapsed: t0.elapsed(),
    }
}

/// A job that uploads `programmer` (or finds one running) and leaves the modem in Firehose.
fn job(programmer: Option<Vec<u8>>, firehose: FirehoseOptions) -> FlashJob {
    FlashJob {
        programmer,
        reset: None,
        firehose,
        ..FlashJob::default()
    }
}

/// Options for a session on a programmer that already said its welcome: do not wait 3 s for
/// logs that will not come, probe with a nop at once.
fn running_programmer_opts() -> FirehoseOptions {
    FirehoseOptions {
        timeouts: Timeouts {
            welcome_first: Duration::from_millis(300),
            ..Timeouts::default()
        },
        ..FirehoseOptions::default()
    }
}

/// Short waits for fault tests: a stalled configure or program start is detected after 2 s;
/// data and erase waits keep a little more room for a loaded machine.
fn short_timeouts() -> Timeouts {
    let two = Duration::from_secs(2);
    let five = Duration::from_secs(5);
    Timeouts {
        configure: two,
        raw_setup: two,
        short_command: five,
        data_base: five,
        erase_base: two,
        read_idle: five,
        power_ack: Duration::from_secs(1),
        ..Timeouts::default()
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic bytes for a generated image: SHA-256 in counter mode over `name`.
fn pattern(name: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

// ------------------------------------------------------------------------------------ events

/// What the event stream said.
#[derive(Debug)]
struct EventSummary {
    kinds: Vec<StepKind>,
    finished: Vec<usize>,
    failed: Option<(usize, StepKind, String)>,
    logs: Vec<String>,
}

/// Check the documented order: one Plan first; per step in plan order StepStarted → Progress* →
/// StepFinished | StepFailed; nothing starts after a failure; one Done last with `ok`. Progress
/// never passes its total, `done` never goes back within a step, `overall` never goes back and
/// stays within 0..=1; a finished step with bytes ends with a 100 % progress event.
fn check_events(events: &[EngineEvent], ok: bool) -> EventSummary {
    let Some(EngineEvent::Plan { steps, total_bytes }) = events.first() else {
        panic!("the first event is not the plan: {:?}", events.first());
    };
    assert_eq!(*total_bytes, steps.iter().map(|s| s.bytes).sum::<u64>());
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s.index, i, "plan step indices are 0..n in order");
    }
    let Some(EngineEvent::Done {
        ok: done_ok,
        bytes: done_bytes,
        ..
    }) = events.last()
    else {
        panic!("the last event is not Done: {:?}", events.last());
    };
    assert_eq!(*done_ok, ok, "Done.ok");
    let mut next = 0usize;
    let mut open: Option<usize> = None;
    let mut last_done: Option<u64> = None;
    let mut overall = 0.0f64;
    let mut summary = EventSummary {
        kinds: steps.iter().map(|s| s.kind).collect(),
        finished: Vec::new(),
        failed: None,
        logs: Vec::new(),
    };
    let mut finished_bytes = 0u64;
    for e in &events[1..events.len() - 1] {
        match e {
            EngineEvent::Plan { .. } | EngineEvent::Done { .. } => {
                panic!("a second Plan or Done in the middle: {e:?}")
            }
            EngineEvent::StepStarted {
                index,
                kind,
                name,
                bytes,
            } => {
                assert!(
                    open.is_none(),
                    "step {index} started while {open:?} is open"
                );
                assert!(
                    summary.failed.is_none(),
                    "step {index} started after a failure"
                );
                assert_eq!(*index, next, "steps start in plan order");
                let s = &steps[*index];
                assert_eq!((s.kind, &s.name, s.bytes), (*kind, name, *bytes));
                open = Some(*index);
                last_done = None;
                next += 1;
            }
            EngineEvent::Progress {
                index,
                done,
                total,
                overall: o,
                ..
            } => {
                assert_eq!(Some(*index), open, "progress only inside its step");
                assert_eq!(
                    *total, steps[*index].bytes,
                    "progress total is the step's bytes"
                );
                assert!(done <= total, "progress {done} past total {total}");
                assert!(last_done.is_none_or(|d| d <= *done), "progress went back");
                last_done = Some(*done);
                assert!((0.0..=1.0).contains(o), "overall {o} outside 0..=1");
                assert!(*o + 1e-9 >= overall, "overall went back: {overall} -> {o}");
                overall = *o;
            }
            EngineEvent::StepFinished { index, bytes, .. } => {
                assert_eq!(Some(*index), open, "finished a step that was not open");
                let want = steps[*index].bytes;
                // The boot ROM asks only for the programmer's loadable segments, so the upload
                // may move fewer bytes than the file has; partitions move exactly theirs.
                if want > 0 {
                    assert!(*bytes <= want, "step {index} moved more than announced");
                }
                if want > 0 && steps[*index].kind != StepKind::SaharaUpload {
                    assert_eq!(*bytes, want, "step {index} finished with all its bytes");
                    assert_eq!(
                        last_done,
                        Some(want),
                        "step {index} ends with a 100 % event"
                    );
                }
                finished_bytes += bytes;
                summary.finished.push(*index);
                open = None;
            }
            EngineEvent::StepFailed {
                index,
                what,
                why,
                next: n,
            } => {
                assert_eq!(Some(*index), open, "failed a step that was not open");
                assert!(!what.is_empty() && !why.is_empty() && !n.is_empty());
                summary.failed = Some((*index, steps[*index].kind, what.clone()));
                open = None;
            }
            EngineEvent::Log { message } => summary.logs.push(message.clone()),
        }
    }
    assert!(open.is_none(), "step {open:?} never ended");
    assert_eq!(
        *done_bytes, finished_bytes,
        "Done.bytes = bytes of finished steps"
    );
    if ok {
        assert_eq!(summary.finished.len(), steps.len(), "every step finished");
    } else {
        assert!(
            summary.failed.is_some(),
            "a failed run names its failed step"
        );
    }
    summary
}

// ------------------------------------------------------------------------------------ expected contents

/// One program step as the device should hold it after the flash.
#[derive(Debug, Clone)]
struct Written {
    name: String,
    lun: u32,
    /// As sent (possibly symbolic) and resolved.
    start_expr: String,
    start: u64,
    sectors: u64,
    sector_size: u32,
    last_sector: Option<u64>,
    pages_per_block: Option<u32>,
    /// SHA-256 of the image bytes as streamed (the file, with host patches laid over it).
    image_sha: String,
    image_len: usize,
    /// Image + zero padding of the last sector, with DISK patches applied.
    data: Vec<u8>,
    patched: bool,
}

/// Replay `plan` on a model: programs write their image (zero padded to whole sectors), DISK
/// patches are evaluated against `factory` (its NUM_DISK_SECTORS) and applied to the programmed
/// bytes. Every DISK patch must land in (and CRC over) programmed sectors.
fn expected(plan: &FlashPlan, factory: &Storage) -> Vec<Written> {
    // Host-side patches (the MIBIB's NUM_DISK_BLOCKS, a GPT file's NUM_DISK_SECTORS) are
    // computed from the unit's geometry, as the engine does from getstorageinfo.
    let plan = &plan
        .resolve(&|lun| factory.expr_env(lun))
        .expect("host patches resolve for the factory geometry");
    let mut out: Vec<Written> = Vec::new();
    for step in &plan.steps {
        match step {
            FlashStep::Program { name, cmd, source } => {
                let env = factory
                    .expr_env(cmd.physical_partition)
                    .expect("LUN exists");
                let start = expr::eval(&cmd.start_sector, &env).expect("start sector");
                // The bytes the engine streams (host patches laid over the file).
                let streamed = plan.source_bytes(source, 1 << 30).expect("image source");
                let image = &streamed[..];
                let mut data = image.to_vec();
                data.resize((cmd.num_sectors * u64::from(cmd.sector_size)) as usize, 0);
                out.push(Written {
                    name: name.clone(),
                    lun: cmd.physical_partition,
                    start_expr: cmd.start_sector.clone(),
                    start,
                    sectors: cmd.num_sectors,
                    sector_size: cmd.sector_size,
                    last_sector: cmd.last_sector,
                    pages_per_block: cmd.pages_per_block,
                    image_sha: sha_hex(image),
                    image_len: image.len(),
                    data,
                    patched: false,
                });
            }
            FlashStep::Patch { cmd, name } => {
                let env = factory
                    .expr_env(cmd.physical_partition)
                    .expect("LUN exists");
                let ss = u64::from(cmd.sector_size);
                let start = expr::eval(&cmd.start_sector, &env).expect("patch start");
                let at = start * ss + cmd.byte_offset;
                let value = match expr::eval_patch_value(&cmd.value, &env).expect("patch value") {
                    PatchValue::Number(n) => n,
                    PatchValue::Crc32 {
                        start_sector,
                        len_bytes,
                    } => {
                        let (w, off) =
                            locate(&out, cmd.physical_partition, start_sector * ss, len_bytes)
                                .unwrap_or_else(|| {
                                    panic!("patch {name}: CRC range outside programmed sectors")
                                });
                        u64::from(crc32fast::hash(&out[w].data[off..off + len_bytes as usize]))
                    }
                };
                let size = cmd.size_in_bytes as usize;
                let (w, off) = locate(&out, cmd.physical_partition, at, size as u64)
                    .unwrap_or_else(|| panic!("patch {name} lands outside programmed sectors"));
                out[w].data[off..off + size].copy_from_slice(&value.to_le_bytes()[..size]);
                out[w].patched = true;
            }
            _ => {}
        }
    }
    out
}

/// The latest program region of `lun` holding bytes `[at, at + len)`, and the offset in it.
fn locate(out: &[Written], lun: u32, at: u64, len: u64) -> Option<(usize, usize)> {
    out.iter().enumerate().rev().find_map(|(i, w)| {
        let base = w.start * u64::from(w.sector_size);
        let end = base + w.data.len() as u64;
        (w.lun == lun && at >= base && at + len <= end).then(|| (i, (at - base) as usize))
    })
}

/// Read every written region back through the host (a new session on the same link, the
/// programmer still running) and compare: the image bytes with the file's SHA-256 (unless a DISK
/// patch changed them), the rest with zero padding, the whole with the model.
fn read_back(link: &mut PipeEnd, storage: StorageKind, written: &[Written]) {
    let mut fh = FirehoseSession::new(&mut *link, Vec::new(), running_programmer_opts());
    fh.configure(storage).expect("configure for the read-back");
    for w in written {
        let mut cmd = Read::new(w.sector_size, w.sectors, w.lun, w.start_expr.clone());
        cmd.last_sector = w.last_sector;
        cmd.pages_per_block = w.pages_per_block;
        let mut got = Vec::new();
        let mut last = 0;
        fh.read(&cmd, &mut got, &mut |n| last = n)
            .unwrap_or_else(|e| panic!("reading {} back: {e}", w.name));
        assert_eq!(got.len(), w.data.len(), "{}: read length", w.name);
        assert_eq!(
            last,
            got.len() as u64,
            "{}: read progress reached the end",
            w.name
        );
        if !w.patched {
            assert_eq!(
                sha_hex(&got[..w.image_len]),
                w.image_sha,
                "{} (LUN {} sector {}): the bytes read back differ from the image file",
                w.name,
                w.lun,
                w.start
            );
            assert!(
                got[w.image_len..].iter().all(|b| *b == 0),
                "{}: the last sector is zero padded",
                w.name
            );
        }
        assert!(
            got == w.data,
            "{} (LUN {} sector {}): read-back differs from the expected contents",
            w.name,
            w.lun,
            w.start
        );
    }
}

/// Compare the emulator's storage directly with the model.
fn check_storage(programmer: &Programmer, written: &[Written]) {
    for w in written {
        let direct = programmer
            .sha256_of(w.lun, w.start..w.start + w.sectors)
            .unwrap_or_else(|e| panic!("{}: emulator storage: {e}", w.name));
        assert_eq!(
            direct,
            sha_hex(&w.data),
            "{} (LUN {} sector {}): emulator storage differs from the expected contents",
            w.name,
            w.lun,
            w.start
        );
    }
}

// ------------------------------------------------------------------------------------ packages

fn generated(unit: &Profile, storage: &StorageProfile, dir: &Path) -> PackageSummary {
    package_gen::emit(
        dir,
        unit,
        storage,
        PackageOptions {
            image_bytes: PACKAGE_BYTES,
            seed: 11,
        },
    )
    .expect("package generated")
}

/// The partition table regions of the emulator, as (LUN, name, start, sectors, source).
fn table(storage: &Storage) -> Vec<(u32, String, u64, u64, String)> {
    storage
        .regions()
        .into_iter()
        .map(|r| (r.lun, r.name, r.start_sector, r.num_sectors, r.source))
        .collect()
}

/// Flash every rawprogramN/patchN pair of a generated package in turn (the programmer is
/// uploaded by the first run and stays in Firehose), then verify everything.
fn flash_generated(model: &str, storage_name: &str, expect_kind: StorageKind, luns: usize) {
    let unit = Profile::by_name(model).unwrap().for_unit(3);
    let storage = StorageProfile::by_name(storage_name).unwrap();
    let factory = Storage::new(&storage);
    let tmp = tempfile::tempdir().unwrap();
    let pkg = generated(&unit, &storage, &tmp.path().join("pkg"));
    assert_eq!(
        pkg.rawprogram.len(),
        luns,
        "one rawprogram per LUN with a table"
    );
    assert_eq!(pkg.patch.len(), luns);
    let programmer = std::fs::read(&pkg.programmer).unwrap();

    let mut modem = Modem::start(&unit, &storage, Vec::new());
    let mut written = Vec::new();
    let mut programs = 0;
    for (i, (raw, patch)) in pkg.rawprogram.iter().zip(&pkg.patch).enumerate() {
        let plan = FlashPlan::from_xml(raw, Some(patch), None).expect("plan");
        assert_eq!(plan.storage, expect_kind);
        programs += plan
            .steps
            .iter()
            .filter(|s| matches!(s, FlashStep::Program { .. }))
            .count();
        let j = if i == 0 {
            job(Some(programmer.clone()), FirehoseOptions::default())
        } else {
            job(None, running_programmer_opts())
        };
        let run = flash_on(&mut modem.link, &plan, &j);
        let report = run
            .result
            .unwrap_or_else(|e| panic!("flash of {} failed: {e}", raw.display()));
        assert_eq!(
            report.programmer_uploaded,
            i == 0,
            "uploaded only by the first run"
        );
        let ev = check_events(&run.events, true);
        assert_eq!(
            ev.kinds[0],
            if i == 0 {
                StepKind::SaharaUpload
            } else {
                StepKind::Configure
            }
        );
        assert_eq!(report.steps, ev.kinds.len());
        assert!(
            !ev.kinds.contains(&StepKind::Reset),
            "reset: None keeps the programmer running"
        );
        assert!(report.bytes >= plan.total_bytes());
        written.extend(expected(&plan, &factory));
    }
    assert_eq!(written.len(), programs);
    // Every partition image of the package was programmed.
    let images = pkg.files.iter().filter(|f| f.partition.is_some()).count();
    assert!(
        images > 0 && programs >= images,
        "{programs} programs for {images} images"
    );

    read_back(&mut modem.link, expect_kind, &written);
    let (outcome, prog) = modem.finish();
    assert_eq!(
        outcome,
        RunOutcome::LinkLost,
        "the unit served until the host closed"
    );
    check_storage(&prog, &written);
    // The partition tables the package wrote back are intact (same layout as the factory's).
    assert_eq!(table(prog.storage()), table(&factory));
    assert!(table(prog.storage()).iter().all(|r| r.4 == "gpt"
        || r.4 == "mibib"
        || (r.4 == "fixed" && expect_kind == StorageKind::Emmc)));
    // Nothing was NAKed on the way.
    assert!(
        prog.commands().iter().all(|c| c.outcome == "ACK"),
        "{:?}",
        prog.commands()
            .iter()
            .filter(|c| c.outcome != "ACK")
            .collect::<Vec<_>>()
    );
}

#[test]
fn generated_nand_ec25_package_flashes_and_reads_back() {
    bounded(|| flash_generated("ec25", "nand-ec25e", StorageKind::Nand, 1));
}

#[test]
fn generated_nand_rm502q_package_on_em12g_flashes_and_reads_back() {
    bounded(|| flash_generated("rm502q", "nand-em12g", StorageKind::Nand, 1));
}

#[test]
fn generated_emmc_package_flashes_and_reads_back() {
    bounded(|| flash_generated("ec25", "emmc-msm8916", StorageKind::Emmc, 1));
}

#[test]
fn generated_ufs_package_flashes_every_lun_and_reads_back() {
    bounded(|| flash_generated("rm520n", "ufs-qcs6490", StorageKind::Ufs, 6));
}

#[test]
fn reset_brings_the_unit_back_to_edl_and_a_second_flash_uploads_again() {
    bounded(|| {
        let unit = Profile::by_name("ec25").unwrap().for_unit(6);
        let storage = StorageProfile::by_name("nand-ec25e").unwrap();
        let factory = Storage::new(&storage);
        let tmp = tempfile::tempdir().unwrap();
        let pkg = package_gen::emit(
            &tmp.path().join("pkg"),
            &unit,
            &storage,
            PackageOptions {
                image_bytes: 512 * 1024,
                seed: 3,
            },
        )
        .unwrap();
        let plan = FlashPlan::from_xml(&pkg.rawprogram[0], Some(&pkg.patch[0]), None).unwrap();
        let programmer = std::fs::read(&pkg.programmer).unwrap();
        let mut modem = Modem::start(&unit, &storage, Vec::new());
        let first = FlashJob {
            reset: Some(PowerMode::Reset),
            ..job(Some(programmer.clone()), FirehoseOptions::default())
        };
        let run = flash_on(&mut modem.link, &plan, &first);
        run.result.expect("first flash");
        let ev = check_events(&run.events, true);
        assert_eq!(ev.kinds.last(), Some(&StepKind::Reset));
        // The unit reboots into the boot ROM (a fresh HELLO): the programmer is uploaded again,
        // and the NAND is flashed again over what the first run wrote (erase before program).
        let run = flash_on(
            &mut modem.link,
            &plan,
            &job(Some(programmer), FirehoseOptions::default()),
        );
        let report = run.result.expect("second flash after the reset");
        assert!(report.programmer_uploaded);
        check_events(&run.events, true);
        let written = expected(&plan, &factory);
        read_back(&mut modem.link, StorageKind::Nand, &written);
        let (_, prog) = modem.finish();
        check_storage(&prog, &written);
        assert_eq!(prog.report().sessions, 2, "two programmer sessions");
    });
}

// ------------------------------------------------------------------------------------ real XML

/// A real rawprogram/patch pair staged in a temp folder with generated images.
struct Staged {
    _tmp: tempfile::TempDir,
    rawprogram: PathBuf,
    patch: PathBuf,
}

/// Copy `tests/data/realxml/<raw>` and `<patch>` into a temp folder laid out as the files
/// expect (Quectel: XML in `update/firehose/`, `..\name` images in `update/`; ptool/UFS: one
/// folder) and create every image they name: GPT images from the emulator's factory tables
/// (so the real DISK patches produce a GPT the emulator can read), other images deterministic
/// and sized to fit every entry naming them (at most [`REAL_IMAGE_CAP`], never a whole number
/// of sectors, a few KiB for grow entries). Sparse-flagged entries get plain images.
///
/// Every byte a DISK patch of the patch file will write inside a GPT image is made stale (0xA5)
/// first, as in a ptool output made for another disk size: only if the device applies every
/// patch, in order, with the right NUM_DISK_SECTORS and CRCs, is the GPT valid afterwards.
fn stage_real(raw: &str, patch: &str, quectel: bool, factory: &Storage) -> Staged {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/realxml");
    let tmp = tempfile::tempdir().unwrap();
    let xml_dir = if quectel {
        tmp.path().join("update/firehose")
    } else {
        tmp.path().to_path_buf()
    };
    std::fs::create_dir_all(&xml_dir).unwrap();
    let strip = |n: &str| n.split_once("__").map(|(_, r)| r.to_string()).unwrap();
    let rawprogram = xml_dir.join(strip(raw));
    let patch_path = xml_dir.join(strip(patch));
    std::fs::copy(src.join(raw), &rawprogram).unwrap();
    std::fs::copy(src.join(patch), &patch_path).unwrap();

    // Per file: the smallest entry naming it (0 = grow) and a GPT role.
    let entries = parse_rawprogram(&std::fs::read(&rawprogram).unwrap()).unwrap();
    let mut files: BTreeMap<PathBuf, (u64, u32, u64, u32)> = BTreeMap::new();
    for e in &entries {
        let RawEntry::Program(p) = e else { continue };
        let Some(path) = &p.path else { continue };
        let target = xml_dir.join(path.to_path_buf());
        let bytes = p.num_partition_sectors * u64::from(p.sector_size);
        let slot = files.entry(target).or_insert((
            bytes,
            p.physical_partition_number,
            p.num_partition_sectors,
            p.sector_size,
        ));
        if bytes != 0 && (slot.0 == 0 || bytes < slot.0) {
            slot.0 = bytes;
        }
    }
    assert!(!files.is_empty());
    let disk_patches: Vec<_> = parse_patch(&std::fs::read(&patch_path).unwrap())
        .unwrap()
        .into_iter()
        .filter(|p| p.targets_disk())
        .collect();
    let stale = |data: &mut Vec<u8>, lun: u32, first_sector: u64, ss: u32| {
        let env = factory.expr_env(lun).unwrap();
        let base = first_sector * u64::from(ss);
        for p in disk_patches
            .iter()
            .filter(|p| p.physical_partition_number == lun)
        {
            let start = expr::eval(&p.start_sector.to_string(), &env).unwrap();
            let at = start * u64::from(p.sector_size) + p.byte_offset;
            let end = at + u64::from(p.size_in_bytes);
            if at >= base && end <= base + data.len() as u64 {
                data[(at - base) as usize..(end - base) as usize].fill(0xA5);
            }
        }
    };
    for (target, (declared, lun, sectors, ss)) in files {
        let name = target.file_name().unwrap().to_string_lossy().to_string();
        let data = if name.starts_with("gpt_main") {
            let mut d = factory.read_sectors(lun, 0, sectors).unwrap();
            stale(&mut d, lun, 0, ss);
            d
        } else if name.starts_with("gpt_backup") {
            let n = factory.num_sectors(lun).unwrap();
            let mut d = factory.read_sectors(lun, n - sectors, sectors).unwrap();
            stale(&mut d, lun, n - sectors, ss);
            d
        } else {
            let cap = if declared == 0 {
                3 * u64::from(ss) + 77
            } else {
                declared.min(REAL_IMAGE_CAP)
            };
            let len = if cap >= 15 { cap - cap / 5 + 3 } else { cap };
            assert!(len <= cap && len % u64::from(ss) != 0);
            pattern(&name, len as usize)
        };
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, data).unwrap();
    }
    Staged {
        _tmp: tmp,
        rawprogram,
        patch: patch_path,
    }
}

/// Flash a real XML pair and verify like the generated packages; returns the programmer.
fn flash_real(
    model: &str,
    storage_name: &str,
    raw: &str,
    patch: &str,
    quectel: bool,
    expect_kind: StorageKind,
) -> (Programmer, FlashPlan, Storage) {
    let unit = Profile::by_name(model).unwrap().for_unit(5);
    let storage = StorageProfile::by_name(storage_name).unwrap();
    let factory = Storage::new(&storage);
    let staged = stage_real(raw, patch, quectel, &factory);
    let plan = FlashPlan::from_xml(&staged.rawprogram, Some(&staged.patch), None).expect("plan");
    assert_eq!(plan.storage, expect_kind);
    let written = expected(&plan, &factory);
    assert!(!written.is_empty());

    let mut modem = Modem::start(&unit, &storage, Vec::new());
    let run = flash_on(
        &mut modem.link,
        &plan,
        &job(Some(unit.programmer(1)), FirehoseOptions::default()),
    );
    let report = run
        .result
        .unwrap_or_else(|e| panic!("flash of the real {raw} failed: {e}"));
    assert!(report.programmer_uploaded);
    check_events(&run.events, true);
    read_back(&mut modem.link, expect_kind, &written);
    let (_, prog) = modem.finish();
    check_storage(&prog, &written);
    // Host-side file patches (partition_complete_*.mbn, gpt_main0.bin …) never reach the
    // device; only DISK patches do.
    let patches_sent = prog.commands().iter().filter(|c| c.tag == "patch").count();
    let disk_patches = plan
        .steps
        .iter()
        .filter(|s| matches!(s, FlashStep::Patch { .. }))
        .count();
    assert_eq!(patches_sent, disk_patches);
    assert!(prog
        .commands()
        .iter()
        .filter(|c| c.tag == "patch")
        .all(|c| c.attrs.get("filename").map(String::as_str) == Some("DISK")));
    assert!(prog.commands().iter().all(|c| c.outcome == "ACK"));
    (prog, plan, factory)
}

/// The NAND vendor order (PROTOCOLS.md §8): SBL erase first, every erase before every program,
/// the SBL program last, identical erases once.
fn assert_nand_order(plan: &FlashPlan) {
    let kinds: Vec<StepKind> = plan.steps.iter().map(FlashStep::kind).collect();
    let first_program = kinds.iter().position(|k| *k == StepKind::Program).unwrap();
    assert!(kinds[..first_program].iter().all(|k| *k == StepKind::Erase));
    assert!(kinds[first_program..]
        .iter()
        .all(|k| *k == StepKind::Program));
    let start = |s: &FlashStep| match s {
        FlashStep::Erase { cmd, .. } => cmd.start_sector.clone().unwrap(),
        FlashStep::Program { cmd, .. } => cmd.start_sector.clone(),
        _ => unreachable!(),
    };
    assert_eq!(start(&plan.steps[0]), "0", "SBL erased first");
    assert_eq!(
        start(plan.steps.last().unwrap()),
        "0",
        "SBL programmed last"
    );
    let erases: Vec<String> = plan.steps[..first_program].iter().map(start).collect();
    let mut dedup = erases.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), erases.len(), "identical erases are sent once");
}

#[test]
fn real_eg25g_nand_xml_flashes_on_nand_eg25g() {
    bounded(|| {
        let (prog, plan, _) = flash_real(
            "ec25",
            "nand-eg25g",
            "quectel_eg25g_mdm9607__rawprogram_nand_p2K_b128K_update.xml",
            "quectel_eg25g_mdm9607__patch_p2K_b128K.xml",
            true,
            StorageKind::Nand,
        );
        assert_nand_order(&plan);
        // 11 program entries (boot.img twice), 11 distinct erases; no DISK patch on NAND.
        assert_eq!(plan.steps.len(), 22, "{:#?}", plan.steps);
        let erases = prog.commands().iter().filter(|c| c.tag == "erase").count();
        assert_eq!(erases, 11);
    });
}

#[test]
fn real_em12g_nand_xml_flashes_on_nand_em12g() {
    bounded(|| {
        let (prog, plan, _) = flash_real(
            "rm502q",
            "nand-em12g",
            "quectel_em12g_sdx20__rawprogram_nand_p4K_b256K_update.xml",
            "quectel_em12g_sdx20__patch_p4K_b256K.xml",
            true,
            StorageKind::Nand,
        );
        assert_nand_order(&plan);
        // last_sector is passed through on every program (bad-block mapping bound).
        assert!(prog
            .commands()
            .iter()
            .filter(|c| c.tag == "program")
            .all(|c| c.attrs.contains_key("last_sector")));
        assert_eq!(
            prog.commands()
                .iter()
                .filter(|c| c.tag == "program")
                .count(),
            12
        );
    });
}

#[test]
fn real_msm8916_ptool_emmc_xml_flashes_with_disk_patches() {
    bounded(|| {
        let (prog, plan, factory) = flash_real(
            "ec25",
            "emmc-msm8916",
            "qcom_emmc_msm8916_ptool__rawprogram0.xml",
            "qcom_emmc_msm8916_ptool__patch0.xml",
            false,
            StorageKind::Emmc,
        );
        // The symbolic backup GPT start went to the device verbatim and was evaluated there.
        assert!(prog.commands().iter().any(|c| c.tag == "program"
            && c.attrs.get("start_sector").map(String::as_str) == Some("NUM_DISK_SECTORS-33.")));
        assert!(plan
            .steps
            .iter()
            .any(|s| matches!(s, FlashStep::SetBootable { drive: 0 })));
        // The real DISK patches left a GPT the emulator reads, with userdata grown to
        // NUM_DISK_SECTORS-34 as the patch file says.
        let n = factory.num_sectors(0).unwrap();
        let regions = table(prog.storage());
        let userdata = regions
            .iter()
            .find(|r| r.0 == 0 && r.1 == "userdata")
            .expect("userdata in the GPT after the flash");
        assert_eq!(userdata.4, "gpt");
        assert_eq!(userdata.2 + userdata.3 - 1, n - 34);
        assert_eq!(regions.iter().filter(|r| r.0 == 0).count(), 29);
    });
}

#[test]
fn real_qcs6490_ufs_lun4_xml_flashes_with_disk_patches() {
    bounded(|| {
        let (prog, _, factory) = flash_real(
            "rm520n",
            "ufs-qcs6490",
            "qcom_ufs_qcs6490_rubikpi3__rawprogram4.xml",
            "qcom_ufs_qcs6490_rubikpi3__patch4.xml",
            false,
            StorageKind::Ufs,
        );
        assert!(prog.commands().iter().any(|c| c.tag == "program"
            && c.attrs.get("physical_partition_number").map(String::as_str) == Some("4")
            && c.attrs.get("start_sector").map(String::as_str) == Some("NUM_DISK_SECTORS-5.")));
        let n = factory.num_sectors(4).unwrap();
        let regions = table(prog.storage());
        let last = regions
            .iter()
            .find(|r| r.0 == 4 && r.1 == "last_parti")
            .expect("last_parti in the LUN 4 GPT after the flash");
        assert_eq!(last.4, "gpt");
        assert_eq!(last.2 + last.3 - 1, n - 6);
        assert_eq!(regions.iter().filter(|r| r.0 == 4).count(), 52);
    });
}

// ------------------------------------------------------------------------------------ faults

/// A generated ec25 NAND package, flashed once with `faults` and `firehose` options; returns the
/// plan, the run and the programmer.
fn nand_fault_run(faults: Vec<Fault>, firehose: FirehoseOptions) -> (FlashPlan, Run, Programmer) {
    let unit = Profile::by_name("ec25").unwrap().for_unit(9);
    let storage = StorageProfile::by_name("nand-ec25e").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package_gen::emit(
        &tmp.path().join("pkg"),
        &unit,
        &storage,
        PackageOptions {
            image_bytes: 512 * 1024,
            seed: 2,
        },
    )
    .unwrap();
    let plan = FlashPlan::from_xml(&pkg.rawprogram[0], Some(&pkg.patch[0]), None).unwrap();
    let mut modem = Modem::start(&unit, &storage, faults);
    let run = flash_on(
        &mut modem.link,
        &plan,
        &job(Some(std::fs::read(&pkg.programmer).unwrap()), firehose),
    );
    let (_, prog) = modem.finish();
    (plan, run, prog)
}

/// The Firehose document number (1 = configure) of the first program step.
fn first_program_doc(plan: &FlashPlan) -> u64 {
    let i = plan
        .steps
        .iter()
        .position(|s| matches!(s, FlashStep::Program { .. }))
        .unwrap();
    // Document 1 is configure, 2 getstorageinfo (the geometry check), then the plan's steps.
    i as u64 + 3
}

fn short_opts() -> FirehoseOptions {
    FirehoseOptions {
        timeouts: short_timeouts(),
        ..FirehoseOptions::default()
    }
}

fn ec25_plan() -> FlashPlan {
    // The plan of the generated package only depends on the layout: compute the document
    // number of the first program once, the same way the fault runs build theirs.
    let unit = Profile::by_name("ec25").unwrap().for_unit(9);
    let storage = StorageProfile::by_name("nand-ec25e").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package_gen::emit(
        &tmp.path().join("pkg"),
        &unit,
        &storage,
        PackageOptions {
            image_bytes: 512 * 1024,
            seed: 2,
        },
    )
    .unwrap();
    FlashPlan::from_xml(&pkg.rawprogram[0], Some(&pkg.patch[0]), None).unwrap()
}

#[test]
fn nak_on_a_program_is_a_failure_quoting_the_device_log() {
    bounded(|| {
        let n = first_program_doc(&ec25_plan());
        let (_, run, prog) = nand_fault_run(vec![Fault::Nak(Some(n))], short_opts());
        let err = run.result.expect_err("a NAK fails the flash");
        assert_eq!(err.kind, ErrorKind::Failure);
        assert_eq!(err.exit_code(), 1);
        assert!(err.what.contains("refused the program command"), "{err}");
        assert!(
            err.why.contains(&format!(
                "Failed to handle 'program' (emulated failure, fault nak:{n})"
            )),
            "the device's log is quoted: {err}"
        );
        assert!(err.next.contains("package and programmer match"), "{err}");
        let ev = check_events(&run.events, false);
        let (index, kind, what) = ev.failed.unwrap();
        assert_eq!(kind, StepKind::Program);
        assert_eq!(what, err.what);
        // Sahara upload, configure (+ getstorageinfo), the erases: then the failed program and
        // nothing after it. Step index = document number - 1 (upload is step 0; configure and
        // getstorageinfo are two documents of one step).
        assert_eq!(index as u64 + 1, n, "step index vs document number");
        assert_eq!(prog.commands().last().unwrap().outcome, "NAK");
        assert!(run.elapsed < Duration::from_secs(20));
    });
}

#[test]
fn payload_too_large_is_renegotiated_and_the_flash_succeeds() {
    bounded(|| {
        let unit = Profile::by_name("ec25").unwrap().for_unit(4);
        let storage = StorageProfile::by_name("nand-ec25e").unwrap();
        let factory = Storage::new(&storage);
        let tmp = tempfile::tempdir().unwrap();
        let pkg = package_gen::emit(
            &tmp.path().join("pkg"),
            &unit,
            &storage,
            PackageOptions {
                image_bytes: 1 << 20,
                seed: 5,
            },
        )
        .unwrap();
        let plan = FlashPlan::from_xml(&pkg.rawprogram[0], Some(&pkg.patch[0]), None).unwrap();
        let written = expected(&plan, &factory);
        let mut modem = Modem::start(&unit, &storage, vec![Fault::PayloadTooLarge]);
        let run = flash_on(
            &mut modem.link,
            &plan,
            &job(
                Some(std::fs::read(&pkg.programmer).unwrap()),
                FirehoseOptions::default(),
            ),
        );
        let report = run.result.expect("payload-too-large is not fatal");
        let ev = check_events(&run.events, true);
        // NAND asks for 8192 bytes; the programmer offers half.
        assert_eq!(report.max_payload, Some(4096));
        assert!(ev
            .logs
            .iter()
            .any(|l| l.contains("Configured nand: 4096 bytes per transfer")));
        read_back(&mut modem.link, StorageKind::Nand, &written);
        let (_, prog) = modem.finish();
        check_storage(&prog, &written);
        let configures: Vec<_> = prog
            .commands()
            .iter()
            .filter(|c| c.tag == "configure")
            .collect();
        assert_eq!(configures[0].outcome, "NAK");
        assert_eq!(
            configures[0].attrs["MaxPayloadSizeToTargetInBytes"], "8192",
            "first ask"
        );
        assert_eq!(configures[1].outcome, "ACK");
        assert_eq!(configures[1].attrs["MaxPayloadSizeToTargetInBytes"], "4096");
    });
}

#[test]
fn garbled_answer_is_a_clear_failure_not_a_retry() {
    bounded(|| {
        // Document 3 is the first erase (the SBL; 1 is configure, 2 getstorageinfo): its answer
        // arrives as broken XML. The
        // documented retry covers a NAK saying *our* XML was garbled; a garbled *answer* leaves
        // the outcome unknown, so the session waits out the erase's bound and says what it got.
        let (plan, run, prog) = nand_fault_run(vec![Fault::GarbledXml(Some(3))], short_opts());
        assert!(matches!(plan.steps[0], FlashStep::Erase { .. }));
        let err = run.result.expect_err("a garbled answer fails the step");
        assert_eq!(err.kind, ErrorKind::Failure);
        assert_eq!(err.exit_code(), 1);
        assert!(err.what.contains("answer to erase"), "{err}");
        assert!(err.what.contains("could not be read"), "{err}");
        assert!(err.why.contains("malformed"), "{err}");
        assert!(err.next.contains("run the flash again"), "{err}");
        let ev = check_events(&run.events, false);
        assert_eq!(ev.failed.as_ref().unwrap().1, StepKind::Erase);
        // No retry was sent: the erase reached the programmer once.
        assert_eq!(
            prog.commands().iter().filter(|c| c.tag == "erase").count(),
            1
        );
        assert_eq!(prog.commands().last().unwrap().outcome, "garbled");
        assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
    });
}

#[test]
fn drop_in_raw_data_is_device_lost() {
    bounded(|| {
        let (_, run, prog) = nand_fault_run(vec![Fault::DropInRaw(Some(6000))], short_opts());
        let err = run.result.expect_err("a link drop fails the flash");
        assert_eq!(err.kind, ErrorKind::DeviceLost);
        assert_eq!(err.exit_code(), 6);
        assert!(err.what.contains("dropped off the bus"), "{err}");
        assert!(err.next.contains("run the flash again"), "{err}");
        assert!(err.next.contains("power-cycle"), "{err}");
        let ev = check_events(&run.events, false);
        assert_eq!(ev.failed.unwrap().1, StepKind::Program);
        assert_eq!(prog.commands().last().unwrap().tag, "program");
        assert!(run.elapsed < Duration::from_secs(15));
    });
}

#[test]
fn hang_is_a_timeout_naming_what_was_awaited() {
    bounded(|| {
        let n = first_program_doc(&ec25_plan());
        let (_, run, prog) = nand_fault_run(vec![Fault::Hang(Some(n))], short_opts());
        let err = run.result.expect_err("a hung programmer fails the flash");
        assert_eq!(err.kind, ErrorKind::Failure);
        assert!(
            err.what
                .contains("stopped responding while waiting for the answer to program"),
            "{err}"
        );
        assert!(err.what.contains("gave up after 2.0 s"), "{err}");
        assert!(err.next.contains("power-cycle"), "{err}");
        let ev = check_events(&run.events, false);
        assert_eq!(ev.failed.unwrap().1, StepKind::Program);
        assert_eq!(prog.commands().last().unwrap().outcome, "hung");
        assert!(
            run.elapsed >= Duration::from_secs(2) && run.elapsed < Duration::from_secs(15),
            "{:?}",
            run.elapsed
        );
    });
}

#[test]
fn hang_on_configure_is_a_timeout_naming_configure() {
    bounded(|| {
        let (_, run, _) = nand_fault_run(vec![Fault::Hang(Some(1))], short_opts());
        let err = run.result.expect_err("a hung programmer fails the flash");
        assert_eq!(err.kind, ErrorKind::Failure);
        assert!(
            err.what
                .contains("stopped responding while waiting for the answer to configure"),
            "{err}"
        );
        let ev = check_events(&run.events, false);
        assert_eq!(ev.failed.unwrap().1, StepKind::Configure);
        assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
    });
}

#[test]
fn nand_write_failure_names_the_failure() {
    bounded(|| {
        let (plan, run, prog) = nand_fault_run(vec![Fault::NandWriteFail(Some(1))], short_opts());
        let err = run
            .result
            .expect_err("a NAND write failure fails the flash");
        assert_eq!(err.kind, ErrorKind::Failure);
        assert!(err.what.contains("NAND failed to write a page"), "{err}");
        assert!(err.why.contains("NAND write failure at page"), "{err}");
        assert!(err.next.contains("once more"), "{err}");
        let ev = check_events(&run.events, false);
        let (index, kind, _) = ev.failed.unwrap();
        assert_eq!(kind, StepKind::Program);
        // The first program of the plan (step index = its document number - 1).
        assert_eq!(index as u64 + 1, first_program_doc(&plan));
        assert_eq!(prog.commands().last().unwrap().outcome, "NAK");
    });
}

/// The real EG25-G p2K_b128K package on a NAND variant it was not made for.
fn eg25g_on(storage_name: &str) -> (Run, Programmer, FlashPlan) {
    let unit = Profile::by_name("ec25").unwrap().for_unit(8);
    let storage = StorageProfile::by_name(storage_name).unwrap();
    let factory = Storage::new(&storage);
    let staged = stage_real(
        "quectel_eg25g_mdm9607__rawprogram_nand_p2K_b128K_update.xml",
        "quectel_eg25g_mdm9607__patch_p2K_b128K.xml",
        true,
        &factory,
    );
    let plan = FlashPlan::from_xml(&staged.rawprogram, Some(&staged.patch), None).unwrap();
    let mut modem = Modem::start(&unit, &storage, Vec::new());
    let run = flash_on(
        &mut modem.link,
        &plan,
        &job(Some(unit.programmer(1)), short_opts()),
    );
    let (_, prog) = modem.finish();
    (run, prog, plan)
}

/// Nothing destructive may reach the device: not even the SBL erase the vendor order sends
/// first. (The emulator's own refusals — "start_sector unaligned", "Block erase request
/// exceeding total number of blocks" — are covered by its unit tests; here the host refuses
/// earlier, from the geometry getstorageinfo reports.)
fn assert_refused_before_any_erase(run: &Run, prog: &Programmer) {
    let ev = check_events(&run.events, false);
    assert_eq!(ev.failed.unwrap().1, StepKind::Configure);
    assert!(
        prog.commands()
            .iter()
            .all(|c| c.tag != "program" && c.tag != "erase" && c.tag != "patch"),
        "{:?}",
        prog.commands()
    );
}

#[test]
fn p2k_b128k_package_on_256k_blocks_is_refused_before_anything_is_erased() {
    bounded(|| {
        let (run, prog, _) = eg25g_on("nand-eg25g-256k-blocks");
        let err = run.result.as_ref().expect_err("wrong block size");
        assert_eq!(err.kind, ErrorKind::Failure);
        assert_eq!(err.exit_code(), 1);
        assert!(err.what.contains("64 pages per block"), "{err}");
        assert!(err.what.contains("has 128"), "{err}");
        assert!(err.why.contains("different block size"), "{err}");
        assert!(err.next.contains("Nothing was written"), "{err}");
        assert!(err.next.contains("exact variant"), "{err}");
        assert_refused_before_any_erase(&run, &prog);
    });
}

#[test]
fn eg25g_package_on_128m_part_is_refused_as_a_bigger_flash_variant() {
    bounded(|| {
        let (run, prog, _) = eg25g_on("nand-eg25g-128m");
        let err = run.result.as_ref().expect_err("package for a bigger flash");
        assert_eq!(err.kind, ErrorKind::Failure);
        assert!(
            err.what.contains("past the end of this modem's NAND"),
            "{err}"
        );
        assert!(err.why.contains("bigger flash variant"), "{err}");
        assert!(err.next.contains("flash size"), "{err}");
        assert_refused_before_any_erase(&run, &prog);
    });
}

// ------------------------------------------------------------------------------------ sparse

/// A sparse image of 4096-byte blocks: `(type, blocks, seed/value)` chunks, CRC32 chunks
/// computed; returns it and the expanded image (None where DONT_CARE).
fn sparse_image(chunks: &[(u16, u32, u32)]) -> (Vec<u8>, Vec<Option<u8>>) {
    const BLK: u32 = 4096;
    let mut body = Vec::new();
    let mut out: Vec<Option<u8>> = Vec::new();
    let mut blocks = 0;
    for (kind, n, v) in chunks {
        let payload = match *kind {
            0xCAC1 => {
                let d = pattern(&format!("raw{v}"), (n * BLK) as usize);
                out.extend(d.iter().map(|b| Some(*b)));
                d
            }
            0xCAC2 => {
                for _ in 0..n * BLK / 4 {
                    out.extend(v.to_le_bytes().map(Some));
                }
                v.to_le_bytes().to_vec()
            }
            0xCAC3 => {
                out.extend(std::iter::repeat_n(None, (n * BLK) as usize));
                Vec::new()
            }
            _ => {
                let zeroed: Vec<u8> = out.iter().map(|b| b.unwrap_or(0)).collect();
                crc32fast::hash(&zeroed).to_le_bytes().to_vec()
            }
        };
        let n = if *kind == 0xCAC4 { 0 } else { *n };
        blocks += n;
        body.extend(kind.to_le_bytes());
        body.extend(0u16.to_le_bytes());
        body.extend(n.to_le_bytes());
        body.extend((12 + payload.len() as u32).to_le_bytes());
        body.extend(payload);
    }
    let mut img = Vec::new();
    for (v, w) in [
        (0xED26_FF3A, 4),
        (1, 2),
        (0, 2),
        (28, 2),
        (12, 2),
        (u64::from(BLK), 4),
        (u64::from(blocks), 4),
        (chunks.len() as u64, 4),
        (0, 4),
    ] {
        img.extend(&u64::to_le_bytes(v)[..w]);
    }
    img.extend(body);
    (img, out)
}

/// A sparse image flashed on the emulated eMMC: RAW and FILL runs land where the expanded
/// image has them, DONT_CARE areas keep what the partition held before (written by a first,
/// plain flash), and nothing outside the image changes.
#[test]
fn sparse_image_flashes_into_the_emulated_emmc_as_its_expanded_bytes() {
    bounded(|| {
        let unit = Profile::by_name("ec25").unwrap().for_unit(12);
        let storage = StorageProfile::by_name("emmc-msm8916").unwrap();
        let factory = Storage::new(&storage);
        let region = table(&factory)
            .into_iter()
            .rfind(|r| r.0 == 0 && r.3 >= 256)
            .expect("a partition of at least 128 KiB");
        let start = region.2;
        let (img, expanded) = sparse_image(&[
            (0xCAC1, 2, 1),
            (0xCAC1, 1, 2),
            (0xCAC2, 2, 0x1234_5678),
            (0xCAC4, 0, 0),
            (0xCAC3, 3, 0),
            (0xCAC2, 1, 0),
            (0xCAC3, 2, 0),
            (0xCAC1, 1, 3),
            (0xCAC4, 0, 0),
        ]);
        let len = expanded.len() as u64;
        let sectors = len / 512;
        let tmp = tempfile::tempdir().unwrap();
        let old = vec![0x5Au8; len as usize];
        std::fs::write(tmp.path().join("old.img"), &old).unwrap();
        std::fs::write(tmp.path().join("userdata.img"), &img).unwrap();
        let entry = |file: &str, sparse: bool| {
            format!(
                "<?xml version=\"1.0\" ?>\n<data>\n  <program SECTOR_SIZE_IN_BYTES=\"512\" filename=\"{file}\" label=\"{}\" num_partition_sectors=\"{}\" physical_partition_number=\"0\" sparse=\"{sparse}\" start_sector=\"{start}\"/>\n</data>\n",
                region.1, region.3
            )
        };
        std::fs::write(
            tmp.path().join("rawprogram_old.xml"),
            entry("old.img", false),
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("rawprogram0.xml"),
            entry("userdata.img", true),
        )
        .unwrap();
        let first = FlashPlan::from_xml(&tmp.path().join("rawprogram_old.xml"), None, None)
            .expect("plain plan");
        let plan =
            FlashPlan::from_xml(&tmp.path().join("rawprogram0.xml"), None, None).expect("plan");
        // RAW, RAW, FILL merge (contiguous on the disk); the zero FILL; the last RAW.
        let programs: Vec<(u64, u64)> = plan
            .steps
            .iter()
            .map(|s| match s {
                FlashStep::Program { cmd, .. } => (
                    cmd.start_sector.parse::<u64>().unwrap() - start,
                    cmd.num_sectors,
                ),
                other => panic!("only programs: {other:?}"),
            })
            .collect();
        assert_eq!(programs, [(0, 40), (64, 8), (88, 8)]);

        let mut modem = Modem::start(&unit, &storage, Vec::new());
        flash_on(
            &mut modem.link,
            &first,
            &job(Some(unit.programmer(1)), FirehoseOptions::default()),
        )
        .result
        .expect("plain flash");
        let run = flash_on(
            &mut modem.link,
            &plan,
            &job(None, running_programmer_opts()),
        );
        run.result.expect("sparse flash");
        check_events(&run.events, true);
        // Read the image's extent and a sector either side back through the host.
        let mut fh = FirehoseSession::new(&mut modem.link, Vec::new(), running_programmer_opts());
        fh.configure(StorageKind::Emmc).unwrap();
        let mut got = Vec::new();
        fh.read(
            &Read::new(512, sectors + 2, 0, (start - 1).to_string()),
            &mut got,
            &mut |_| {},
        )
        .unwrap();
        drop(fh);
        let (_, prog) = modem.finish();
        let before = factory.read_sectors(0, start - 1, 1).unwrap();
        let after = factory.read_sectors(0, start + sectors, 1).unwrap();
        assert_eq!(
            got[..512],
            before[..],
            "the sector before the image is untouched"
        );
        assert_eq!(
            got[512 + len as usize..],
            after[..],
            "the sector after is untouched"
        );
        for (i, want) in expanded.iter().enumerate() {
            let have = got[512 + i];
            match want {
                Some(b) => assert_eq!(have, *b, "byte {i} of the expanded image"),
                None => assert_eq!(have, 0x5A, "byte {i} (DONT_CARE) kept the old data"),
            }
        }
        assert_eq!(
            prog.commands()
                .iter()
                .filter(|c| c.tag == "program")
                .count(),
            1 + 3
        );
    });
}
