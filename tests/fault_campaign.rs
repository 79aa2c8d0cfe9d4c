//! The fault campaign ([`qrescue::sim::campaign`]): seeded whole flashes against the emulated
//! modem with random faults (link drops, NAKs, garbled XML, hangs, boot-loop windows, a slow
//! device, a killed qrescue process, a stale journal of another package, another unit
//! answering after a drop …), the real engine (prepare with the device-unique-data guard and a
//! backup ledger, then the resumable flash with a journal), and the invariants checked after
//! every run — among them the exact resume invariant from the unit's write log.
//!
//! The default is small enough for CI. A larger or replayed campaign:
//!
//! ```text
//! QRESCUE_CAMPAIGN_RUNS=500 QRESCUE_CAMPAIGN_SEED=7 cargo test --release --test fault_campaign
//! QRESCUE_CAMPAIGN_SEED=7 QRESCUE_CAMPAIGN_RUNS=500 QRESCUE_CAMPAIGN_ONLY=123 cargo test --test fault_campaign
//! ```
//!
//! `QRESCUE_CAMPAIGN_REPORT=FILE` writes the whole report as JSON.

use qrescue::sim::campaign::{run_campaign, AttemptResult, CampaignConfig, Injected, RunEnd};

/// Runs of the default campaign.
const DEFAULT_RUNS: u32 = 24;
/// Seed of the default campaign.
const DEFAULT_SEED: u64 = 0x5eed_0008;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn the_fault_campaign_keeps_every_invariant() {
    let cfg = CampaignConfig {
        runs: env_u64("QRESCUE_CAMPAIGN_RUNS").map_or(DEFAULT_RUNS, |n| n as u32),
        seed: env_u64("QRESCUE_CAMPAIGN_SEED").unwrap_or(DEFAULT_SEED),
        only: env_u64("QRESCUE_CAMPAIGN_ONLY").map(|n| n as u32),
        expect_resume: true,
        ..CampaignConfig::default()
    };
    let report = run_campaign(&cfg);
    if let Ok(path) = std::env::var("QRESCUE_CAMPAIGN_REPORT") {
        let json = serde_json::to_string_pretty(&report).expect("the report serialises");
        std::fs::write(&path, json).expect("write the campaign report");
    }
    eprintln!("{}", report.summary());
    assert!(
        report.passed(),
        "{}\nReplay one run with QRESCUE_CAMPAIGN_SEED={:#x} QRESCUE_CAMPAIGN_RUNS={} QRESCUE_CAMPAIGN_ONLY=<run> cargo test --test fault_campaign",
        report.summary(),
        cfg.seed,
        cfg.runs
    );

    let expected_runs = if cfg.only.is_some() {
        1
    } else {
        cfg.runs as usize
    };
    assert_eq!(report.runs.len(), expected_runs, "every run reported");
    for run in &report.runs {
        assert!(!run.faults.is_empty(), "run {} drew no fault", run.run);
        assert!(
            matches!(run.end, RunEnd::Verified | RunEnd::Refused),
            "run {} ended {:?} without a violation",
            run.run,
            run.end
        );
        if run.end == RunEnd::Verified {
            assert!(
                run.verified_partitions > 0,
                "run {} compared nothing",
                run.run
            );
            assert!(matches!(
                run.attempts.last().map(|a| &a.result),
                Some(AttemptResult::Flashed)
            ));
        }
    }
    // The default campaign really exercised what it is for: faults that made attempts fail
    // and runs that recovered from them, on both kinds of storage, and the guard's refusals.
    if cfg.only.is_none() && cfg.runs >= DEFAULT_RUNS {
        let recovered = report
            .runs
            .iter()
            .filter(|r| r.end == RunEnd::Verified && r.attempts.len() > 1)
            .count();
        assert!(
            recovered >= 3,
            "only {recovered} runs recovered from a failure"
        );
        for storage in ["nand", "emmc"] {
            assert!(
                report
                    .runs
                    .iter()
                    .any(|r| r.end == RunEnd::Verified && r.storage.starts_with(storage)),
                "no verified {storage} run"
            );
        }
        assert!(
            report.outcomes.get("refused").copied().unwrap_or(0) > 0,
            "no factory set was refused"
        );
        assert!(report.faults_drawn.len() >= 8, "{:?}", report.faults_drawn);
        // Interrupted flashes were resumed from their journals.
        assert!(report.resume.resumes >= 3, "{:?}", report.resume);
        assert!(report.resume.connections > report.resume.flashes);
    }
}

/// The faults about processes and journals, aimed at: the flash drops at 20 % and another unit
/// answers first (left alone, the flash goes on with the right one); the process is killed at
/// 50 % (the next flash continues the journal); a stale journal of another package is in the
/// store from the start (started over with a warning).
#[test]
fn killed_processes_stale_journals_and_other_units() {
    let cfg = CampaignConfig {
        runs: 4,
        seed: 0x5eed_0009,
        parallel: 2,
        faults: Some(vec![
            Injected::OtherUnit { at_percent: 20 },
            Injected::Killed { at_percent: 50 },
            Injected::ChangedPackage,
        ]),
        ..CampaignConfig::default()
    };
    let report = run_campaign(&cfg);
    eprintln!("{}", report.summary());
    assert!(report.passed(), "{}", report.summary());
    let flashed: Vec<_> = report
        .runs
        .iter()
        .filter(|r| r.end == RunEnd::Verified)
        .collect();
    for storage in ["nand", "emmc"] {
        assert!(
            flashed.iter().any(|r| r.storage.starts_with(storage)),
            "no verified {storage} run: {}",
            report.summary()
        );
    }
    for r in flashed {
        assert_eq!(r.restarted_with_warning, 1, "run {}", r.run);
        let other = r.other_unit.as_ref().expect("another unit answered");
        assert!(other.refused && other.commands == 0 && other.writes == 0);
        let killed = r
            .attempts
            .iter()
            .position(|a| a.killed)
            .unwrap_or_else(|| panic!("run {}: no process was killed", r.run));
        let next = r.attempts[killed + 1..]
            .iter()
            .find_map(|a| a.opening.as_deref())
            .unwrap_or_else(|| panic!("run {}: no flash after the kill", r.run));
        assert!(next.starts_with("resume"), "run {}: {next}", r.run);
        assert!(r.connections.iter().any(|c| c.resumed), "run {}", r.run);
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions the campaign found
// ---------------------------------------------------------------------------------------------

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use qrescue::engine::events::EngineEvent;
use qrescue::engine::flash::{self, FlashJob, FlashPlan};
use qrescue::engine::journal::{JournalStore, Opening};
use qrescue::engine::resume::{flash_resumable, Link, ResumeNotice, ResumeOptions};
use qrescue::sim::device::{self, DeviceConfig};
use qrescue::sim::firehose::{Programmer, ProgrammerOptions, Storage, StorageProfile};
use qrescue::sim::package_gen::{self, PackageOptions};
use qrescue::sim::profile::Profile;
use qrescue::transport::pipe::{self, Cutter, PipeEnd};
use qrescue::transport::{Framing, Transport, TransportError};

/// A handle on a port that stays open when the handle is dropped (a process that ends leaves
/// the modem's programmer running).
struct Port(Arc<Mutex<PipeEnd>>);

impl Transport for Port {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        self.0.lock().unwrap().read(buf, timeout)
    }
    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.0.lock().unwrap().write(data, timeout)
    }
    fn describe(&self) -> String {
        "pipe".into()
    }
}

/// One appearance of an emulated unit: its port, its cable, and its programmer when it ends.
struct Unit {
    port: Arc<Mutex<PipeEnd>>,
    cutter: Cutter,
    done: mpsc::Receiver<Programmer>,
}

fn plug_in(profile: &Profile, storage: Storage) -> Unit {
    let (mut dev, host) = pipe::pair(Framing::Stream);
    let cutter = host.cutter();
    let mut cfg = DeviceConfig::new(profile.clone());
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let mut programmer = Programmer::with_storage(storage, ProgrammerOptions::default());
        device::run(&mut dev, &mut cfg, &mut programmer, &AtomicBool::new(false));
        drop(dev);
        let _ = tx.send(programmer);
    });
    Unit {
        port: Arc::new(Mutex::new(host)),
        cutter,
        done,
    }
}

impl Unit {
    fn link(&self) -> Link {
        Link {
            transport: Box::new(Port(Arc::clone(&self.port))),
            appeared: Instant::now(),
            window: None,
            port: "pipe".into(),
        }
    }

    fn unplug(self) -> Programmer {
        self.cutter.cut();
        self.done
            .recv_timeout(Duration::from_secs(20))
            .expect("the unit stops once unplugged")
    }
}

fn bounded(body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(()) => h.join().expect("body finished"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!(),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test body hangs"),
    }
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

/// A NAND unit, a package for it, and the storage an uninterrupted flash leaves.
fn nand_setup(dir: &std::path::Path) -> (Profile, StorageProfile, FlashPlan, FlashJob, Storage) {
    let unit = Profile::by_name("ec25").unwrap().for_unit(77);
    let layout = StorageProfile::by_name("nand-ec25e").unwrap();
    let pkg = package_gen::emit(
        &dir.join("pkg"),
        &unit,
        &layout,
        PackageOptions {
            image_bytes: 512 * 1024,
            seed: 77,
        },
    )
    .unwrap();
    let plan = FlashPlan::from_xml(&pkg.rawprogram[0], Some(&pkg.patch[0]), None).unwrap();
    let job = FlashJob {
        programmer: Some(std::fs::read(&pkg.programmer).unwrap()),
        reset: None,
        ..FlashJob::default()
    };
    let clean = plug_in(&unit, Storage::new(&layout));
    let mut link = clean.link();
    flash::run(
        &mut link.transport,
        &plan,
        &job,
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .expect("a clean flash");
    drop(link);
    let reference = clean.unplug().storage().clone();
    (unit, layout, plan, job, reference)
}

/// A flash stopped with Ctrl-C leaves the unit running its programmer and its journal
/// unfinished. Running the flash again then finds a programmer that cannot tell its serial: a
/// flash without the journal used to run, rewrite what the journal had as done, and — cut off
/// — leave the journal claiming partitions the next (journaled) flash then skipped: success
/// reported over a broken partition. Now the flash without a journal is refused while an
/// unfinished journal of the same package exists; after a power-cycle the journal continues.
#[test]
fn a_flash_without_a_journal_does_not_run_over_an_unfinished_journal() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let (unit, layout, plan, job, reference) = nand_setup(dir.path());
        let store = JournalStore::at(dir.path().join("journals"));
        let opts = ResumeOptions {
            package: "generated".into(),
            return_wait: Duration::from_millis(200),
            ..ResumeOptions::default()
        };
        let programs: Vec<usize> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, flash::FlashStep::Program { .. }))
            .map(|(i, _)| i)
            .collect();
        assert!(programs.len() >= 3);
        // Flash 1: stopped on request after the second program finished.
        let running = plug_in(&unit, Storage::new(&layout));
        let mut first = Some(running.link());
        let cancel = AtomicBool::new(false);
        let mut finished = 0;
        let e = flash_resumable(
            &mut |_w: Duration| Ok(first.take()),
            &plan,
            &job,
            &store,
            &opts,
            &mut |e| {
                if let EngineEvent::StepFinished { bytes, .. } = e {
                    if bytes > 0 {
                        finished += 1;
                        if finished == 2 {
                            cancel.store(true, Ordering::SeqCst);
                        }
                    }
                }
            },
            &mut |_| {},
            &cancel,
        )
        .unwrap_err();
        assert_eq!(e.kind, qrescue::ErrorKind::Interrupted, "{e}");
        let journal = store.list().unwrap();
        assert!(journal[0].steps_done > 0 && !journal[0].finished);
        // Flash 2: the same port, the programmer still running; cut off once it programs.
        let mut again = Some(running.link());
        let cutter = running.cutter.clone();
        let mut notices = Vec::new();
        let second = flash_resumable(
            &mut |_w: Duration| Ok(again.take()),
            &plan,
            &job,
            &store,
            &opts,
            &mut |e| {
                if let EngineEvent::Progress { done, .. } = e {
                    if done > 0 {
                        cutter.cut();
                    }
                }
            },
            &mut |n| notices.push(n.clone()),
            &AtomicBool::new(false),
        );
        let e = second.expect_err("a flash without the journal does not run");
        assert!(
            e.what.contains("unfinished") && e.next.contains("download mode"),
            "{e}"
        );
        // Flash 3: power-cycled, the journal continues.
        let storage = running.unplug().storage().clone();
        let back = plug_in(&unit, storage);
        let mut link = Some(back.link());
        let r = flash_resumable(
            &mut |_w: Duration| Ok(link.take()),
            &plan,
            &job,
            &store,
            &opts,
            &mut |_| {},
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap_or_else(|e| panic!("the resumed flash: {e}"));
        assert!(
            matches!(r.opening, Opening::Resume { .. }),
            "{:?}",
            r.opening
        );
        assert_eq!(
            digests(back.unplug().storage()),
            digests(&reference),
            "the unit holds the package"
        );
        assert!(!notices
            .iter()
            .any(|n| matches!(n, ResumeNotice::Unjournaled { .. })));
    });
}

/// After a drop, another unit kept answering in the place of the one being flashed (a second
/// modem boot-looping on the bench): each answer started a new full wait for the right unit,
/// so the flash never ended. Now another unit does not extend the wait: once it is over, the
/// flash ends with the drop (its journal kept), and the other units got no command.
#[test]
fn another_unit_answering_does_not_extend_the_wait_for_the_right_one() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let (unit, layout, plan, job, _) = nand_setup(dir.path());
        let store = JournalStore::at(dir.path().join("journals"));
        let opts = ResumeOptions {
            package: "generated".into(),
            return_wait: Duration::from_millis(200),
            ..ResumeOptions::default()
        };
        let mut other = unit.clone();
        other.identity.serial = unit.identity.serial.wrapping_add(1).max(1);
        let ours = plug_in(&unit, Storage::new(&layout));
        let cutter = ours.cutter.clone();
        let mut first = Some(ours.link());
        let mut others: Vec<Unit> = Vec::new();
        let mut calls_after_drop = 0;
        let mut reconnect = |wait: Duration| -> qrescue::Result<Option<Link>> {
            if let Some(l) = first.take() {
                return Ok(Some(l));
            }
            calls_after_drop += 1;
            if calls_after_drop > 3 {
                return Ok(None);
            }
            // The right unit does not come back within the wait; another one answers.
            std::thread::sleep(wait);
            let u = plug_in(&other, Storage::new(&layout));
            let l = u.link();
            others.push(u);
            Ok(Some(l))
        };
        let mut refused = 0;
        let e = flash_resumable(
            &mut reconnect,
            &plan,
            &job,
            &store,
            &opts,
            &mut |e| {
                if let EngineEvent::Progress { done, .. } = e {
                    if done > 0 {
                        cutter.cut();
                    }
                }
            },
            &mut |n| {
                if matches!(n, ResumeNotice::OtherUnit { .. }) {
                    refused += 1;
                }
            },
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert_eq!(e.kind, qrescue::ErrorKind::DeviceLost, "{e}");
        assert!(e.next.contains("run the same flash again"), "{e}");
        assert_eq!(
            (calls_after_drop, refused),
            (1, 1),
            "one other unit answered and was refused; then the wait was over"
        );
        for u in others {
            assert!(
                u.unplug().commands().is_empty(),
                "the other unit got no command"
            );
        }
        drop(ours);
    });
}
