//! The guided workflows end to end, in this process, against the emulated EC25 on the emulated
//! bus: the same driver, engine and protocols a real modem gets.

mod workflow_support;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use qrescue::backup::Store;
use qrescue::engine::prepare::PrepareRequest;
use qrescue::engine::workflow::{Driver, Finished, Kind, Setup, Timings, WorkflowEvent};
use qrescue::transport::open::OpenOptions;
use qrescue::workflow::restore::RestoreTarget;
use qrescue::workflow::verdict::Failure;
use qrescue::workflow::{Action, Question, StopKind, Verdict};
use workflow_support::*;

fn setup(tmp: &Path, package: Option<&Path>) -> Setup {
    let mut s = Setup::new(Store::new(tmp.join("backups")), tmp.join("dumps"));
    s.request = package.map(|p| PrepareRequest {
        package: p.to_path_buf(),
        ..PrepareRequest::default()
    });
    std::fs::create_dir_all(tmp.join("locks")).unwrap();
    s.open = OpenOptions {
        lock_dir: Some(tmp.join("locks")),
        ..OpenOptions::default()
    };
    s.find_within = Duration::from_secs(30);
    s.identify_pause = Duration::from_millis(200);
    s
}

/// The events in short, to read when an assertion fails.
fn story(events: &[WorkflowEvent]) -> String {
    let mut s = String::new();
    for e in events {
        let line = match e {
            WorkflowEvent::Device {
                t_ms,
                change,
                usb_id,
                tty,
                this_unit,
                ..
            } => format!("[{t_ms}] {change} {usb_id:?} {tty:?} this={this_unit}"),
            WorkflowEvent::StepStarted { step, what, .. } => format!("step {step}: {what}"),
            WorkflowEvent::StepFinished {
                lines, observed, ..
            } => format!("  {lines:?} -> {observed:?}"),
            WorkflowEvent::Engine { .. } => continue,
            other => format!("{other:?}"),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

/// Run `kind` on the unit; every question is answered yes. Returns the end and the events.
fn run(unit: &Unit, setup: &Setup, kind: Kind) -> (Finished, Vec<WorkflowEvent>) {
    let mut src = unit.hub.source();
    let mut events = Vec::new();
    let cancel = AtomicBool::new(false);
    let finished = {
        let mut emit = |e: &WorkflowEvent| events.push(e.clone());
        let mut ask = |_: &Question| true;
        let mut d = Driver::new(&mut src, setup, &mut emit, &mut ask, &cancel);
        d.run_kind(&kind, &Timings::default()).unwrap()
    };
    if std::env::var_os("QRESCUE_TEST_STORY").is_some() {
        eprintln!("{}", story(&events));
    }
    (finished, events)
}

fn steps(events: &[WorkflowEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            WorkflowEvent::StepStarted { action, .. } => Some(action.name().to_string()),
            _ => None,
        })
        .collect()
}

fn saw_9008(events: &[WorkflowEvent]) -> bool {
    events.iter().any(|e| {
        matches!(e, WorkflowEvent::Device { usb_id: Some(id), change, .. }
            if id == "05c6:9008" && change == "appear")
    })
}

fn headline(f: &Finished) -> String {
    match &f.end {
        Action::Done { verdict } => verdict.headline(),
        Action::Stop { stop } => format!("stopped: {} — {} — {}", stop.what, stop.why, stop.next),
        other => format!("{other:?}"),
    }
}

#[test]
fn an_update_of_a_normal_mode_modem_ends_flashed_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let p = profile(21);
    let pkg = package(tmp.path(), &p, NEW_REV);
    let unit = Unit::start(&p, factory_programmer(&p), None);
    let s = setup(tmp.path(), Some(&pkg));
    let (f, events) = run(&unit, &s, Kind::Auto);
    assert_eq!(f.workflow, "update");
    assert!(f.verified(), "{}", headline(&f));
    let Some(Verdict::Verified { checks }) = f.verdict() else {
        unreachable!()
    };
    let imei = qrescue::sim::normal::unit::unit_imei(&p);
    assert!(checks.contains(&format!("same IMEI {imei}")), "{checks:?}");
    assert!(checks.iter().any(|c| c.contains("+CFUN: 1")), "{checks:?}");
    assert!(checks.iter().any(|c| c.contains(NEW_REV)), "{checks:?}");
    assert_eq!(
        steps(&events),
        [
            "identify",
            "check_package",
            "ask",
            "switch_to_edl",
            "wait",
            "identify",
            "check_package",
            "upload",
            "backup",
            "flash",
            "reset",
            "wait",
            "verify"
        ]
    );
    // The backup it took is in the store, verified, with the IMEI read over AT.
    let b = s.store.get(f.backup.as_deref().unwrap()).unwrap();
    b.verify().unwrap();
    assert_eq!(b.manifest.identity.imei.as_deref(), Some(imei.as_str()));
    assert!(saw_9008(&events));
}

#[test]
fn a_factory_package_is_refused_until_a_backup_exists_and_restore_repairs_its_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let p = profile(22);
    let update = package(tmp.path(), &p, NEW_REV);
    let factory = factory_package(tmp.path(), &p, NEW_REV);
    let unit = Unit::start(&p, factory_programmer(&p), None);

    // 1. No backup of this unit: refused before anything touches the modem.
    let (f, events) = run(&unit, &setup(tmp.path(), Some(&factory)), Kind::Auto);
    let stop = f.stop().unwrap_or_else(|| panic!("{}", headline(&f)));
    assert_eq!(stop.kind, StopKind::Refused, "{}", headline(&f));
    assert!(!stop.device_changed);
    assert!(
        stop.what.contains("EFS2") || stop.what.contains("efs2"),
        "{}",
        stop.what
    );
    assert!(!steps(&events).contains(&"switch_to_edl".to_string()));
    assert!(!saw_9008(&events));
    assert!(unit.present().contains(&"2c7c:0125".to_string()));

    // 2. An update takes the backup on its way.
    let (f, _) = run(&unit, &setup(tmp.path(), Some(&update)), Kind::Auto);
    assert!(f.verified(), "{}", headline(&f));
    let backup = f.backup.clone().expect("the update backed the unit up");

    // 3. Now the factory package passes the guard; its EFS wipes the calibration, and the
    //    verify step says so.
    let (f, events) = run(&unit, &setup(tmp.path(), Some(&factory)), Kind::Auto);
    assert!(!steps(&events).contains(&"backup".to_string()));
    let Some(Verdict::NotVerified { failures, next }) = f.verdict() else {
        panic!("{}", headline(&f))
    };
    assert!(failures.contains(&Failure::CalibrationLost), "{failures:?}");
    assert!(
        next.iter()
            .any(|n| n.contains(&format!("qrescue restore {backup}"))),
        "{next:?}"
    );
    assert!(f.to_error().is_some());

    // 4. Restore brings +CFUN: 1 (and the IMEI) back.
    let s = setup(tmp.path(), Some(&update));
    let stored = s.store.get(&backup).unwrap();
    let target = RestoreTarget {
        backup: backup.clone(),
        unit: stored.manifest.unit(),
        imei: stored.manifest.identity.imei.clone(),
    };
    let (f, events) = run(&unit, &s, Kind::Restore(target));
    assert_eq!(f.workflow, "restore");
    assert!(f.verified(), "{}", headline(&f));
    let Some(Verdict::Verified { checks }) = f.verdict() else {
        unreachable!()
    };
    assert!(checks.iter().any(|c| c.contains("+CFUN: 1")), "{checks:?}");
    assert!(steps(&events).contains(&"restore".to_string()));
}

#[test]
fn a_crash_dump_modem_gets_its_ram_dump_and_reaches_edl_and_is_unbricked() {
    let tmp = tempfile::tempdir().unwrap();
    let p = profile(23);
    let pkg = package(tmp.path(), &p, NEW_REV);
    // Its firmware crashes a while after each boot unless switched to EDL first. Should the
    // switch after the dump's reset lose that race on a loaded machine, the workflow takes
    // another dump (whose reset gives it another chance): nothing here depends on the timing.
    let unit = Unit::start(
        &p,
        factory_programmer(&p),
        Some(Duration::from_millis(1500)),
    );
    let s = setup(tmp.path(), Some(&pkg));
    let (f, events) = run(&unit, &s, Kind::Crash);
    assert_eq!(f.workflow, "crash");
    assert!(!f.dumps.is_empty());
    let dump = Path::new(&f.dumps[0]);
    assert!(dump.join("manifest.json").is_file(), "{}", dump.display());
    assert!(saw_9008(&events), "it reached EDL");
    let names = steps(&events);
    let dump_at = names.iter().position(|n| n == "ramdump").unwrap();
    let switch_at = names.iter().position(|n| n == "switch_to_edl").unwrap();
    assert!(dump_at < switch_at, "{names:?}");
    // Then the unbrick flashed a firmware that does not crash, and it came back verified.
    assert!(f.verified(), "{}", headline(&f));
}

#[test]
fn a_wrong_variant_package_is_refused_before_the_switch_to_edl() {
    let tmp = tempfile::tempdir().unwrap();
    let p = profile(24);
    let pkg = package(tmp.path(), &p, OTHER_VARIANT_REV);
    let unit = Unit::start(&p, factory_programmer(&p), None);
    let (f, events) = run(&unit, &setup(tmp.path(), Some(&pkg)), Kind::Auto);
    let stop = f.stop().unwrap_or_else(|| panic!("{}", headline(&f)));
    assert_eq!(stop.kind, StopKind::Refused);
    assert!(!stop.device_changed);
    assert!(stop.next.contains("stays in normal mode"), "{}", stop.next);
    assert_eq!(steps(&events), ["identify", "check_package"]);
    assert!(!saw_9008(&events));
    // The unit never left normal mode.
    assert_eq!(unit.present(), ["2c7c:0125"]);
}

#[test]
fn an_update_whose_link_drops_mid_flash_continues_from_its_journal_and_ends_verified() {
    use qrescue::engine::journal::JournalStore;
    use qrescue::engine::outcome::RunStore;
    use qrescue::engine::resume::ResumeNotice;
    use qrescue::sim::firehose::programmer::{writes_per_region, WriteKind};
    use qrescue::workflow::{Channel, Mode, Observation, Want};

    let tmp = tempfile::tempdir().unwrap();
    let p = profile(25);
    let pkg = package(tmp.path(), &p, NEW_REV);

    // 1. A backup of this unit goes on file first (identify, switch, upload, back up), so the
    //    update below sends only its flash over the link.
    {
        let unit = Unit::start(&p, factory_programmer(&p), None);
        let s = setup(tmp.path(), Some(&pkg));
        let mut src = unit.hub.source();
        let cancel = AtomicBool::new(false);
        let mut emit = |_: &WorkflowEvent| {};
        let mut ask = |_: &Question| true;
        let mut d = Driver::new(&mut src, &s, &mut emit, &mut ask, &cancel);
        d.find(Some(Mode::Normal)).unwrap();
        for a in [
            Action::Identify { over: Channel::At },
            Action::SwitchToEdl,
            Action::WaitFor {
                want: Want::Mode(Mode::Edl),
                within_ms: 30_000,
            },
            Action::Identify {
                over: Channel::Sahara,
            },
            Action::Upload,
            Action::Backup,
        ] {
            let o = d.perform(&a);
            assert!(!matches!(o, Observation::Failed { .. }), "{a:?}: {o:?}");
        }
    }

    // 2. The same unit (same serial, a fresh storage) whose link drops 300 kB into the flash;
    //    the bench power-cycles it with its boot pin held, so it is back in 9008.
    let unit = CyclingUnit::start(&p, dropping_programmer(&p, 300_000));
    let mut s = setup(tmp.path(), Some(&pkg));
    s.journals = Some(JournalStore::at(tmp.path().join("journals")));
    s.runs = Some(RunStore::at(tmp.path().join("runs")));
    s.flash_return = Duration::from_secs(30);
    let mut src = unit.hub.source();
    let mut events = Vec::new();
    let cancel = AtomicBool::new(false);
    let f = {
        let mut emit = |e: &WorkflowEvent| events.push(e.clone());
        let mut ask = |_: &Question| true;
        let mut d = Driver::new(&mut src, &s, &mut emit, &mut ask, &cancel);
        d.run_kind(&Kind::Auto, &Timings::default()).unwrap()
    };
    let prog = unit.stop();
    assert_eq!(f.workflow, "update");
    assert!(f.verified(), "{}\n{}", headline(&f), story(&events));
    let names = steps(&events);
    assert!(!names.contains(&"backup".to_string()), "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "flash").count(), 1);
    // The flash waited for the unit and went on in a second attempt.
    assert!(events.iter().any(|e| matches!(
        e,
        WorkflowEvent::Resume {
            notice: ResumeNotice::Connected { attempt: 2, .. },
            ..
        }
    )));

    // Its write log: one partition (the interrupted one) erased and programmed twice; every
    // other one programmed once, several of them before the drop and never again.
    let regions = prog.storage().regions();
    let per = writes_per_region(prog.writes(), &regions);
    let twice: Vec<_> = per.iter().filter(|w| w.programs > 1).collect();
    assert_eq!(twice.len(), 1, "{per:#?}");
    assert_eq!(twice[0].erases, 2, "{:?}", twice[0]);
    assert!(per
        .iter()
        .all(|w| w.programs <= 1 || w.name == twice[0].name));
    let only_first: Vec<&str> = regions
        .iter()
        .filter(|r| {
            let mut sessions = prog
                .writes()
                .iter()
                .filter(|w| w.kind == WriteKind::Program && w.touches(r))
                .map(|w| w.session);
            sessions.next() == Some(1) && sessions.all(|s| s == 1)
        })
        .map(|r| r.name.as_str())
        .collect();
    assert!(only_first.len() >= 3, "{only_first:?}\n{per:#?}");

    // Its journal is finished; `qrescue status` sees both attempts, the last one verified.
    let journals = JournalStore::at(tmp.path().join("journals"))
        .list()
        .unwrap();
    assert_eq!(journals.len(), 1);
    assert!(journals[0].finished);
    assert_eq!(
        journals[0].unit.to_string(),
        format!("sn-0x{:08x}", p.identity.serial)
    );
    let records = RunStore::at(tmp.path().join("runs")).list(10).unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(records.iter().all(|r| r.tool == "update"));
    let words: Vec<&str> = records.iter().map(|r| r.state.word()).collect();
    assert!(
        words.contains(&"failed") && words.contains(&"finished"),
        "{words:?}"
    );
    let last = records
        .iter()
        .find(|r| r.state.word() == "finished")
        .unwrap();
    assert!(last.verification.as_deref().unwrap().contains("verified"));
}
