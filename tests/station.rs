//! Station: eight emulated modems on one emulated hub, flashed in parallel by
//! `engine::station::run`, each followed by its identity through its own device job. Every unit
//! must end verified (back in normal mode, same IMEI, full function), with its own log, run
//! record and summary row, matched to the right unit; one unit whose link drops during its
//! first flash comes back (power-cycled) and is flashed again as itself. No assertion depends
//! on timing; every body is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use qrescue::device::DeviceSource;
use qrescue::engine::guards::MemoryLedger;
use qrescue::engine::outcome::RunStore;
use qrescue::engine::prepare::{prepare, PrepareRequest};
use qrescue::engine::station::{self, Bus, Note, Outcome, Selection, Selector, StationConfig};
use qrescue::sim::device::RunOutcome;
use qrescue::sim::faults::Fault;
use qrescue::sim::fleet::{Fleet, FleetOptions};
use qrescue::sim::normal::unit::unit_imei;
use qrescue::sim::package_gen::PackageOptions;
use qrescue::workflow::verdict::Expectation;

fn bounded(body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(()) => h.join().expect("body finished"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!(),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test body hangs"),
    }
}

#[test]
fn eight_modems_on_one_hub_are_flashed_in_parallel_and_each_is_verified_as_itself() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        // Unit 5 drops its link during its first programmer upload (about 100 kB in), then is
        // power-cycled: it must be found again as itself and flashed again.
        let fleet = Fleet::start(&FleetOptions {
            units: 8,
            per_hub: 8,
            first_run_faults: vec![(5, vec![Fault::DropAfter(Some(100_000))])],
            ..FleetOptions::default()
        })
        .unwrap();
        let pkg = fleet
            .emit_package(
                &dir.path().join("pkg"),
                PackageOptions {
                    image_bytes: 1 << 20,
                    seed: 3,
                },
            )
            .unwrap();
        let p = prepare(
            &PrepareRequest {
                package: pkg.root.clone(),
                ..PrepareRequest::default()
            },
            &MemoryLedger::new(),
            None,
        )
        .unwrap();
        assert!(p.verdict().flashable, "{:?}", p.verdict());
        let plan = p.plan.clone().unwrap();
        let logs = dir.path().join("run");
        let mut cfg = StationConfig::new(
            pkg.root.display().to_string(),
            plan,
            p.programmer_image().unwrap(),
            logs.clone(),
        );
        // The production record knows each unit's IMEI: the verdict compares it.
        let mut imei_of = BTreeMap::new();
        for u in fleet.units() {
            let sn = format!("{:08X}", u.identity.serial);
            imei_of.insert(sn.clone(), unit_imei(u));
            cfg.expectations.insert(
                sn,
                Expectation {
                    imei: Some(unit_imei(u)),
                    calibrated_before: Some(true),
                    ..Expectation::default()
                },
            );
        }
        cfg.runs = Some(RunStore::at(dir.path().join("runs")));
        cfg.record = true;
        let buses = fleet
            .hubs()
            .iter()
            .map(|h| Bus {
                name: "emulated hub".into(),
                source: Box::new(h.source()) as Box<dyn DeviceSource>,
                sim: true,
            })
            .collect();
        let mut events = Vec::new();
        let cancel = AtomicBool::new(false);
        let summary = station::run(
            buses,
            &Selection::All,
            &cfg,
            &mut |e| events.push(e.clone()),
            &cancel,
        )
        .unwrap();
        let dropped = format!("{:08X}", fleet.units()[5].identity.serial);
        let ends = fleet.stop();

        // Eight rows, each verified, each a different unit with its own IMEI.
        assert_eq!(summary.devices, 8, "{summary:#?}");
        assert_eq!(summary.verified, 8, "{:#?}", summary.rows);
        let mut serials = BTreeSet::new();
        let mut logs_seen = BTreeSet::new();
        for r in &summary.rows {
            assert_eq!(r.outcome, Outcome::Verified, "{r:#?}");
            let sn = r.edl_serial.clone().unwrap();
            assert_eq!(r.device, format!("SN:{sn}"));
            assert_eq!(r.imei.as_deref(), Some(imei_of[&sn].as_str()), "{r:#?}");
            assert!(
                r.detail.contains(&format!("same IMEI {}", imei_of[&sn])),
                "{r:#?}"
            );
            assert!(serials.insert(sn.clone()));
            assert!(logs_seen.insert(r.log.clone()));
            // Its log holds only its own events, ending with its own row.
            let text = std::fs::read_to_string(&r.log).unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(lines.iter().all(|l| l["device"] == r.device.as_str()));
            assert_eq!(lines.last().unwrap()["event"], "finished");
            assert!(lines.iter().any(|l| l["event"] == "engine"
                && l["engine"]["event"] == "done"
                && l["engine"]["ok"] == true));
            let rec = r.recording.as_ref().unwrap();
            assert!(std::fs::metadata(rec).unwrap().len() > 0);
            assert!(r.bytes > 0);
        }
        assert_eq!(serials.len(), 8);
        assert_eq!(serials, imei_of.keys().cloned().collect());

        // The unit that dropped: two attempts, two runs of the emulated unit.
        let row = summary
            .rows
            .iter()
            .find(|r| r.edl_serial.as_deref() == Some(dropped.as_str()))
            .unwrap();
        assert_eq!(row.attempts, 2, "{row:#?}");
        let end = ends
            .iter()
            .find(|e| format!("{:08X}", e.serial) == dropped)
            .unwrap();
        assert_eq!(end.runs.first(), Some(&RunOutcome::LinkDropped), "{end:?}");
        assert!(summary
            .rows
            .iter()
            .filter(|r| r.device != row.device)
            .all(|r| r.attempts == 1));
        // Every unit's storage boots now.
        assert_eq!(ends.len(), 8);
        assert!(ends.iter().all(|e| e.boots_normal), "{ends:?}");

        // Events carry their device; each device's events end with its row.
        for r in &summary.rows {
            let mine: Vec<_> = events.iter().filter(|e| e.device == r.device).collect();
            assert!(matches!(mine.first().unwrap().note, Note::Selected { .. }));
            assert!(matches!(mine.last().unwrap().note, Note::Finished { .. }));
        }
        // The summary files: one row per unit.
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(logs.join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), 8);
        let csv = std::fs::read_to_string(logs.join("summary.csv")).unwrap();
        assert_eq!(csv.lines().count(), 9);
        for sn in &serials {
            assert_eq!(csv.lines().filter(|l| l.contains(sn.as_str())).count(), 1);
        }
        // A run record per flash attempt (nine), each naming its unit.
        let records = RunStore::at(dir.path().join("runs")).list(100).unwrap();
        assert_eq!(records.len(), 9);
        let per_unit: BTreeSet<_> = records
            .iter()
            .filter_map(|r| r.device.serial.clone())
            .collect();
        assert_eq!(per_unit, serials);
    });
}

#[test]
fn a_selector_that_names_no_modem_is_refused_before_anything_starts() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::start(&FleetOptions {
            units: 2,
            per_hub: 2,
            ..FleetOptions::default()
        })
        .unwrap();
        let pkg = fleet
            .emit_package(
                &dir.path().join("pkg"),
                PackageOptions {
                    image_bytes: 1 << 20,
                    seed: 3,
                },
            )
            .unwrap();
        let p = prepare(
            &PrepareRequest {
                package: pkg.root.clone(),
                ..PrepareRequest::default()
            },
            &MemoryLedger::new(),
            None,
        )
        .unwrap();
        let cfg = StationConfig::new(
            "pkg".into(),
            p.plan.clone().unwrap(),
            p.programmer_image().unwrap(),
            dir.path().join("run"),
        );
        let bus = Bus {
            name: "emulated hub".into(),
            source: Box::new(fleet.hubs()[0].source()),
            sim: true,
        };
        let sel = Selection::Only(vec!["usb:serial=DEADBEEF".parse::<Selector>().unwrap()]);
        let mut n = 0;
        let e = station::run(
            vec![bus],
            &sel,
            &cfg,
            &mut |_| n += 1,
            &AtomicBool::new(false),
        )
        .unwrap_err();
        fleet.stop();
        assert_eq!(e.kind, qrescue::ErrorKind::NoDevice);
        assert!(e.what.contains("usb:serial=DEADBEEF"), "{e}");
        assert!(e.why.contains("05c6:9008"), "{e}");
        assert_eq!(n, 0);
    });
}
