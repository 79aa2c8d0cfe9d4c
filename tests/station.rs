//! Station: eight emulated modems on one emulated hub, flashed in parallel by
//! `engine::station::run`, each followed by its identity through its own device job. Every unit
//! must end verified (back in normal mode, same IMEI, full function), with its own log, run
//! record and summary row, matched to the right unit; one unit whose link drops during its
//! first flash comes back (power-cycled) and is flashed again as itself. Units whose link drops
//! in the middle of their flash (NAND and eMMC fleets) continue from their own journal: the
//! partitions finished before the drop are written once. No assertion depends on timing; every
//! body is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use qrescue::device::DeviceSource;
use qrescue::engine::guards::MemoryLedger;
use qrescue::engine::journal::{JournalStore, Opening};
use qrescue::engine::outcome::RunStore;
use qrescue::engine::prepare::{prepare, PrepareRequest};
use qrescue::engine::resume::ResumeNotice;
use qrescue::engine::station::{self, Bus, Note, Outcome, Selection, Selector, StationConfig};
use qrescue::sim::device::RunOutcome;
use qrescue::sim::faults::Fault;
use qrescue::sim::firehose::programmer::WriteKind;
use qrescue::sim::fleet::{Fleet, FleetOptions, UnitEnd};
use qrescue::sim::normal::unit::unit_imei;
use qrescue::sim::package_gen::PackageOptions;
use qrescue::sim::profile::Storage;
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
        cfg.journals = Some(JournalStore::at(dir.path().join("journals")));
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
        // A journal per unit, each finished, each named in its unit's row.
        let journals = JournalStore::at(dir.path().join("journals"))
            .list()
            .unwrap();
        assert_eq!(journals.len(), 8, "{journals:#?}");
        assert!(journals.iter().all(|j| j.finished));
        let keys: BTreeSet<String> = journals.iter().map(|j| j.unit.to_string()).collect();
        let named: BTreeSet<String> = summary
            .rows
            .iter()
            .map(|r| r.journal.clone().unwrap())
            .collect();
        assert_eq!(keys, named);
        for r in &summary.rows {
            let sn = r.edl_serial.as_deref().unwrap().to_ascii_lowercase();
            assert_eq!(r.journal.as_deref(), Some(format!("sn-0x{sn}").as_str()));
        }
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

/// eMMC chunk size in the drop tests (small, so a partition spans several chunks).
const CHUNK: u64 = 64 * 1024;

/// Raw data bytes programmed into each partition, per `serve` session of the unit's programmer.
fn programs_by_session(end: &UnitEnd, name: &str) -> BTreeMap<u32, u64> {
    let r = end
        .region_writes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no partition {name}"));
    let mut by = BTreeMap::new();
    for w in &end.writes {
        let touches = w.lun == r.lun
            && w.start_sector < r.start_sector + r.num_sectors
            && w.start_sector + w.num_sectors.max(1) > r.start_sector;
        if touches && w.kind == WriteKind::Program {
            *by.entry(w.session).or_insert(0) += w.bytes;
        }
    }
    by
}

/// Four units of `storage`; units 1 and 2 drop their link after `drops` raw bytes of their
/// first flash, are power-cycled with their boot pin held (back in 9008) and must continue from
/// their own journal. Units 0 and 3 flash once and are the reference.
fn drops_mid_flash(storage: Storage, drops: [u64; 2], finished_before: [usize; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(&FleetOptions {
        units: 4,
        per_hub: 4,
        first_serial: 0x6B00_0010,
        storage: Some(storage),
        edl_after_drop: true,
        first_run_faults: vec![
            (1, vec![Fault::DropInRaw(Some(drops[0]))]),
            (2, vec![Fault::DropInRaw(Some(drops[1]))]),
        ],
        ..FleetOptions::default()
    })
    .unwrap();
    let pkg = fleet
        .emit_package(
            &dir.path().join("pkg"),
            PackageOptions {
                image_bytes: 1 << 20,
                seed: 5,
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
    let total = plan.total_bytes();
    let mut cfg = StationConfig::new(
        "pkg".into(),
        plan,
        p.programmer_image().unwrap(),
        dir.path().join("run"),
    );
    cfg.journals = Some(JournalStore::at(dir.path().join("journals")));
    cfg.runs = Some(RunStore::at(dir.path().join("runs")));
    cfg.chunk_bytes = CHUNK;
    let buses = vec![Bus {
        name: "emulated hub".into(),
        source: Box::new(fleet.hubs()[0].source()) as Box<dyn DeviceSource>,
        sim: true,
    }];
    let serials: Vec<String> = fleet
        .units()
        .iter()
        .map(|u| format!("{:08X}", u.identity.serial))
        .collect();
    let dropped = [serials[1].clone(), serials[2].clone()];
    let summary = station::run(
        buses,
        &Selection::All,
        &cfg,
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let ends = fleet.stop();
    let end_of = |sn: &str| {
        ends.iter()
            .find(|e| format!("{:08X}", e.serial) == sn)
            .unwrap()
    };

    // Every unit verified, each with its own row and its own finished journal.
    assert_eq!(summary.devices, 4, "{summary:#?}");
    assert_eq!(summary.verified, 4, "{:#?}", summary.rows);
    assert!(ends.iter().all(|e| e.boots_normal), "{ends:?}");
    let journals = JournalStore::at(dir.path().join("journals"))
        .list()
        .unwrap();
    assert_eq!(journals.len(), 4, "{journals:#?}");
    assert!(journals
        .iter()
        .all(|j| j.finished && j.steps_done == j.steps_total));
    let keys: BTreeSet<String> = journals.iter().map(|j| j.unit.to_string()).collect();
    let rows: BTreeSet<String> = summary
        .rows
        .iter()
        .map(|r| r.journal.clone().unwrap())
        .collect();
    assert_eq!(keys, rows);
    assert_eq!(keys.len(), 4);

    let reference = end_of(&serials[0]);
    assert_eq!(reference.runs, [RunOutcome::Stopped]);
    for (k, sn) in dropped.iter().enumerate() {
        let row = summary
            .rows
            .iter()
            .find(|r| r.edl_serial.as_deref() == Some(sn.as_str()))
            .unwrap();
        assert_eq!(row.attempts, 2, "{row:#?}");
        assert!(row.resumed, "{row:#?}");
        let end = end_of(sn);
        assert!(
            matches!(
                end.runs.first(),
                Some(RunOutcome::LinkLost | RunOutcome::LinkDropped)
            ),
            "{:?}",
            end.runs
        );
        // Each partition holds what the reference unit got; all but the interrupted one were
        // programmed exactly as often as there (so never twice).
        let mut differing = Vec::new();
        let mut finished_in_first = 0;
        for (mine, theirs) in end.region_writes.iter().zip(&reference.region_writes) {
            assert_eq!(mine.name, theirs.name);
            assert!(mine.bytes >= theirs.bytes, "{mine:?} vs {theirs:?}");
            if (mine.programs, mine.erases, mine.bytes)
                != (theirs.programs, theirs.erases, theirs.bytes)
            {
                differing.push((mine.clone(), theirs.clone()));
                continue;
            }
            let sessions = programs_by_session(end, &mine.name);
            if theirs.bytes > 0 && sessions.keys().eq([1u32].iter()) {
                finished_in_first += 1;
            }
        }
        assert_eq!(differing.len(), 1, "unit {sn}: {differing:#?}");
        let (mine, theirs) = &differing[0];
        // The interrupted partition: on NAND erased again and rewritten whole, on eMMC
        // continued after its last confirmed chunk; the flash
        // sent again at most that partition (NAND) or one chunk (eMMC).
        let resend_bound = match storage {
            Storage::Nand => {
                assert!(mine.erases > theirs.erases, "{mine:?} vs {theirs:?}");
                assert!(mine.bytes < 2 * theirs.bytes, "{mine:?} vs {theirs:?}");
                theirs.bytes
            }
            _ => {
                assert!(mine.bytes <= theirs.bytes + CHUNK, "{mine:?} vs {theirs:?}");
                CHUNK
            }
        };
        assert!(
            finished_in_first >= finished_before[k],
            "unit {sn}: {finished_in_first} partitions finished before the drop"
        );
        // What resuming cost, in the production record (zero when the drop fell between two
        // confirmed chunks).
        assert!(row.bytes_resent <= resend_bound, "{row:#?}");
        assert_eq!(row.bytes, total + row.bytes_resent, "{row:#?}");
    }
    for r in summary
        .rows
        .iter()
        .filter(|r| !dropped.contains(r.edl_serial.as_ref().unwrap()))
    {
        assert_eq!(
            (r.attempts, r.resumed, r.bytes_resent),
            (1, false, 0),
            "{r:#?}"
        );
        assert_eq!(r.bytes, total);
    }
    // The CSV names each unit's journal once, with the resumed column.
    let csv = std::fs::read_to_string(dir.path().join("run/summary.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(
        header[header.len() - 3..],
        ["journal", "resumed", "bytes_resent"]
    );
    for key in &keys {
        assert_eq!(csv.lines().filter(|l| l.contains(key.as_str())).count(), 1);
    }
    assert_eq!(csv.lines().filter(|l| l.contains(",yes,")).count(), 2);
    // A run record per attempt: six.
    assert_eq!(
        RunStore::at(dir.path().join("runs"))
            .list(100)
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn nand_units_that_drop_mid_flash_continue_from_the_interrupted_partition() {
    // Raw bytes into the first flash: inside `boot` (4 partitions done before), inside
    // `qdsp6sw_b` (10 done, the modem image among them).
    bounded(|| drops_mid_flash(Storage::Nand, [30_000, 400_000], [4, 10]));
}

#[test]
fn emmc_units_that_drop_mid_flash_continue_after_the_last_confirmed_chunk() {
    // Inside the modem image (only the GPT, no partition, done before), inside `rpmbak`
    // (modem, sbl1, sbl1bak and rpm done).
    bounded(|| drops_mid_flash(Storage::Emmc, [300_000, 1_000_000], [0, 4]));
}

#[test]
fn a_finished_journal_is_not_a_reason_to_skip_the_next_flash() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::start(&FleetOptions {
            units: 1,
            per_hub: 1,
            first_serial: 0x6C00_0001,
            ..FleetOptions::default()
        })
        .unwrap();
        let pkg = fleet
            .emit_package(
                &dir.path().join("pkg"),
                PackageOptions {
                    image_bytes: 1 << 20,
                    seed: 9,
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
        let plan = p.plan.clone().unwrap();
        let total = plan.total_bytes();
        let mut cfg = StationConfig::new(
            "pkg".into(),
            plan,
            p.programmer_image().unwrap(),
            dir.path().join("run"),
        );
        cfg.journals = Some(JournalStore::at(dir.path().join("journals")));
        let bus = || {
            vec![Bus {
                name: "emulated hub".into(),
                source: Box::new(fleet.hubs()[0].source()) as Box<dyn DeviceSource>,
                sim: true,
            }]
        };
        let cancel = AtomicBool::new(false);
        // First from 9008; then again from normal mode (identify, DIAG switch) with the same
        // package: its finished journal is replaced and the whole plan written again.
        let first = station::run(bus(), &Selection::All, &cfg, &mut |_| {}, &cancel).unwrap();
        assert_eq!(first.verified, 1, "{:#?}", first.rows);
        let mut events = Vec::new();
        let again = station::run(
            bus(),
            &Selection::All,
            &cfg,
            &mut |e| events.push(e.clone()),
            &cancel,
        )
        .unwrap();
        fleet.stop();
        assert_eq!(again.verified, 1, "{:#?}", again.rows);
        let row = &again.rows[0];
        assert_eq!((row.attempts, row.resumed, row.bytes), (1, false, total));
        assert_eq!(row.journal, first.rows[0].journal);
        let replaced = events.iter().any(|e| {
            matches!(
                &e.note,
                Note::Resume {
                    notice: ResumeNotice::Journal {
                        opening: Opening::New {
                            replaced_finished: true,
                            ..
                        },
                        ..
                    }
                }
            )
        });
        assert!(replaced, "{events:#?}");
        let journals = JournalStore::at(dir.path().join("journals"))
            .list()
            .unwrap();
        assert_eq!(journals.len(), 1);
        assert!(journals[0].finished);
    });
}
