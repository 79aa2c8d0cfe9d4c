//! The console's runtime against a real in-process emulated modem: an EC25 on the emulated USB
//! bus (its boot ROM served on a pty, as `qrescue sim` does), a generated package, and the
//! executor running the console's effects through the real engine — identify over Sahara, check
//! the package, flash it — answering with the messages the model gets, and recording the run.
//! Then the loop itself takes those messages on a TestBackend. No assertion depends on timing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

use qrescue::device::identity::DeviceId;
use qrescue::device::{DeviceChange, DeviceSnapshot, DeviceSource};
use qrescue::engine::events::EngineEvent;
use qrescue::engine::outcome::{RunState, RunStore};
use qrescue::sim::device::DeviceConfig;
use qrescue::sim::enumerate::{run_on_usb, Schedule};
use qrescue::sim::firehose::programmer::{Programmer, ProgrammerOptions};
use qrescue::sim::firehose::storage::StorageProfile;
use qrescue::sim::hub::UsbHub;
use qrescue::sim::package_gen::{self, PackageOptions};
use qrescue::sim::profile::Profile;
use qrescue::transport::open::OpenOptions;
use qrescue::tui::exec::{Clock, ExecOptions, Executor};
use qrescue::tui::model::{Config, Model, Outcome};
use qrescue::tui::msg::{Effect, JobId, Msg};
use qrescue::tui::runtime::{drive, outcome_text, EndReason};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// Bound for one answer (a flash of a small package through the emulator takes well under it).
const ANSWER: Duration = Duration::from_secs(60);

fn next(rx: &Receiver<Msg>) -> Msg {
    rx.recv_timeout(ANSWER).expect("an answer within the bound")
}

struct Unit {
    hub: UsbHub,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Unit {
    /// An EC25 in download mode on the emulated bus until dropped.
    fn start(profile: &Profile, storage: &StorageProfile) -> Unit {
        let hub = UsbHub::new();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, p, st) = (hub.clone(), stop.clone(), profile.clone(), storage.clone());
        let thread = std::thread::spawn(move || {
            let mut cfg = DeviceConfig::new(p);
            let mut programmer = Programmer::new(&st, ProgrammerOptions::default());
            let _ = run_on_usb(
                &mut cfg,
                &mut programmer,
                &h,
                Schedule::default(),
                &s,
                &mut |_| {},
            );
        });
        Unit {
            hub,
            stop,
            thread: Some(thread),
        }
    }

    /// Its first appearance.
    fn appeared(&self) -> DeviceSnapshot {
        let mut src = self.hub.source();
        loop {
            let e = src
                .next_event(ANSWER)
                .unwrap()
                .expect("the unit appears on the emulated bus");
            if let DeviceChange::Appear { device } = e.change {
                return device;
            }
        }
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.hub.close();
    }
}

#[test]
fn the_executor_identifies_checks_and_flashes_an_emulated_modem_and_records_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = Profile::by_name("ec25").unwrap().for_unit(11);
    let storage = StorageProfile::by_name("nand-ec25e").unwrap();
    let pkg = package_gen::emit(
        &tmp.path().join("pkg"),
        &profile,
        &storage,
        PackageOptions {
            image_bytes: 512 * 1024,
            seed: 3,
        },
    )
    .unwrap();
    let unit = Unit::start(&profile, &storage);
    let snapshot = unit.appeared();
    assert!(
        snapshot.interface(0).and_then(|i| i.tty.clone()).is_some(),
        "the emulated boot ROM is served on a pty"
    );

    let runs = RunStore::at(tmp.path().join("runs"));
    let (tx, rx) = mpsc::channel();
    let exec = Executor::new(
        tx,
        Clock::start(),
        ExecOptions {
            open: OpenOptions {
                lock_dir: Some(tmp.path().to_path_buf()),
                ..OpenOptions::default()
            },
            runs: Some(runs.clone()),
            ..ExecOptions::default()
        },
    );
    let device = DeviceId(1);
    let mut answers = Vec::new();

    // Identify.
    exec.execute(Effect::Identify {
        device,
        snapshot: snapshot.clone(),
    });
    let m = next(&rx);
    match &m {
        Msg::Identified {
            device: d,
            result: Ok(info),
            ..
        } => {
            assert_eq!(*d, device);
            let sn = info.serial_hex.as_deref().expect("the serial");
            assert_eq!(
                u32::from_str_radix(sn.trim_start_matches("0x"), 16).unwrap(),
                profile.identity.serial
            );
        }
        other => panic!("expected the identity, got {other:?}"),
    }
    answers.push(m);

    // Check the package.
    exec.execute(Effect::CheckPackage {
        token: 1,
        device: Some(device),
        package: pkg.root.clone(),
        modem_revision: None,
        override_phrase: None,
    });
    let m = next(&rx);
    let plan = match &m {
        Msg::Checked {
            token: 1,
            result: Ok(review),
            ..
        } => {
            assert!(review.verdict.flashable, "{:?}", review.verdict);
            assert_eq!(review.package, pkg.root);
            assert!(review.summary.as_ref().is_some_and(|s| s.total_bytes > 0));
            assert!(review.programmer.is_some());
            review.plan
        }
        other => panic!("expected the review, got {other:?}"),
    };
    answers.push(m);

    // Flash it.
    exec.execute(Effect::StartFlash {
        job: JobId(1),
        plan,
        device,
        snapshot: snapshot.clone(),
    });
    assert_eq!(exec.running(), [JobId(1)]);
    let mut events = Vec::new();
    let ended = loop {
        let m = next(&rx);
        match &m {
            Msg::Engine { job, event, .. } => {
                assert_eq!(*job, JobId(1));
                events.push(event.clone());
            }
            Msg::JobEnded { job, result, .. } => {
                assert_eq!(*job, JobId(1));
                break (result.clone(), m);
            }
            other => panic!("unexpected {other:?}"),
        }
        answers.push(m);
    };
    assert_eq!(ended.0, Ok(()), "{events:?}");
    answers.push(ended.1);
    assert!(matches!(events.first(), Some(EngineEvent::Plan { .. })));
    let Some(EngineEvent::Done {
        ok: true, bytes, ..
    }) = events.last()
    else {
        panic!("the engine's Done comes last: {events:?}")
    };
    assert!(*bytes > 0);
    let times: Vec<u64> = answers
        .iter()
        .filter_map(|m| match m {
            Msg::Engine { t_ms, .. } => Some(*t_ms),
            _ => None,
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "one clock, in order"
    );
    assert!(exec.running().is_empty());

    // The run is on file.
    let list = runs.list(10).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let r = &list[0];
    assert_eq!(r.state, RunState::Finished);
    assert!(r.steps_total > 0 && r.steps_done == r.steps_total, "{r:?}");
    assert_eq!(r.bytes_done, *bytes);
    assert_eq!(r.device.usb_id.as_deref(), Some("05c6:9008"));
    assert!(r.device.serial.is_some());
    assert!(r
        .device
        .port
        .as_deref()
        .is_some_and(|p| p.contains("/dev/pts")));
    assert_eq!(r.package.as_deref(), Some(pkg.root.to_str().unwrap()));
    // The model's last word (here: the modem did not come back) goes into the record.
    exec.note_outcome(
        JobId(1),
        outcome_text(&Outcome::NotVerified {
            what_failed: "the modem did not come back in normal mode".into(),
            next: "power-cycle it and watch".into(),
        }),
    );
    let r = &runs.list(10).unwrap()[0];
    assert!(
        r.verification
            .as_deref()
            .is_some_and(|v| v.starts_with("flashed, NOT verified")),
        "{r:?}"
    );

    // The loop takes every answer (and the device's appearance) on a TestBackend, draws only
    // when something changed, and ends on SIGTERM's message with nothing running.
    let (tx, inbox) = mpsc::channel();
    tx.send(Msg::Device {
        event: qrescue::device::DeviceEvent {
            t_ms: 0,
            change: DeviceChange::Appear {
                device: snapshot.clone(),
            },
        },
        initial: true,
    })
    .unwrap();
    let n = answers.len() as u64;
    for m in answers {
        tx.send(m).unwrap();
    }
    tx.send(Msg::Terminate).unwrap();
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let mut model = Model::new(Config::default());
    let s = drive(&mut terminal, &mut model, &inbox, &exec, &mut || {}).unwrap();
    assert_eq!(s.end, EndReason::Terminated);
    assert_eq!(s.messages, n + 2);
    assert!(s.frames >= 1 && s.frames <= 1 + (n + 2).div_ceil(256));
    assert!(!model.dirty);
    assert_eq!(model.devices().len(), 1);
}

#[test]
fn the_executor_asks_a_running_modem_over_at_and_switches_it_over_diag() {
    use qrescue::sim::world::{DemoWorld, Scenario, Timing, WorldOptions};
    let world = DemoWorld::start(
        Scenario::Update,
        WorldOptions {
            throttle: None,
            timing: Timing::real().scaled(0.1),
            package_bytes: 1 << 20,
            ..WorldOptions::default()
        },
    )
    .unwrap();
    let mut src = world.source();
    let normal = loop {
        let e = src.next_event(ANSWER).unwrap().expect("the unit appears");
        if let DeviceChange::Appear { device } = e.change {
            break device;
        }
    };
    let (tx, rx) = mpsc::channel();
    let ex = Executor::new(tx, Clock::start(), ExecOptions::default());
    ex.execute(Effect::IdentifyNormal {
        device: DeviceId(1),
        snapshot: normal.clone(),
    });
    match next(&rx) {
        Msg::NormalIdentified {
            device,
            result: Ok(id),
            ..
        } => {
            assert_eq!(device, DeviceId(1));
            assert_eq!(id.cfun.map(|c| c.level), Some(1), "{id:?}");
            assert_eq!(
                id.revision.map(|r| r.text).as_deref(),
                Some(world.modem_revision())
            );
            assert!(id.imei.is_some_and(|i| i.luhn_ok));
        }
        other => panic!("{other:?}"),
    }
    ex.execute(Effect::SwitchToEdl {
        device: DeviceId(1),
        snapshot: normal,
    });
    assert!(
        matches!(next(&rx), Msg::Switched { result: Ok(()), .. }),
        "the switch was sent"
    );
    let edl = loop {
        let e = src.next_event(ANSWER).unwrap().expect("9008 appears");
        if let DeviceChange::Appear { device } = e.change {
            break device;
        }
    };
    assert_eq!(edl.id(), "05c6:9008");
}

/// `A` from the console: the executor checks the package once and runs the station on fresh
/// buses of an emulated bench (two modems in 9008); every event comes back as `Msg::Station`,
/// then one `Msg::StationEnded` with the summary, and the model counts both modems verified.
#[test]
fn the_executor_runs_a_station_on_an_emulated_bench_and_the_model_follows_it() {
    use qrescue::device::DeviceSource;
    use qrescue::engine::station::{Bus, Note, Waits};
    use qrescue::sim::fleet::{Fleet, FleetOptions};
    use qrescue::tui::exec::StationSetup;
    use qrescue::tui::update::update;

    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(&FleetOptions {
        units: 2,
        per_hub: 2,
        ..FleetOptions::default()
    })
    .unwrap();
    let pkg = fleet
        .emit_package(
            &tmp.path().join("pkg"),
            PackageOptions {
                image_bytes: 512 * 1024,
                seed: 4,
            },
        )
        .unwrap();
    let hubs = fleet.hubs().to_vec();
    let folder = tmp.path().join("station-1");
    let f2 = folder.clone();
    let (tx, rx) = mpsc::channel();
    let exec = Executor::new(
        tx,
        Clock::start(),
        ExecOptions {
            station: Some(StationSetup {
                buses: Box::new(move || {
                    Ok(hubs
                        .iter()
                        .map(|h| Bus {
                            name: "emulated hub".into(),
                            source: Box::new(h.source()) as Box<dyn DeviceSource>,
                            sim: true,
                        })
                        .collect())
                }),
                folder: Box::new(move || Ok(f2.clone())),
                waits: Waits::default(),
            }),
            ..ExecOptions::default()
        },
    );
    // The console's model sees the bench through its own source.
    let mut model = Model::new(Config {
        package: Some(pkg.root.clone()),
        ..Config::default()
    });
    let mut src = fleet.hubs()[0].source();
    while model.edl_present().len() < 2 {
        let e = src.next_event(ANSWER).unwrap().expect("the units appear");
        update(
            &mut model,
            Msg::Device {
                event: e,
                initial: true,
            },
        );
    }
    update(&mut model, Msg::Key(key('A')));
    let fx = update(&mut model, Msg::Key(key('y')));
    assert_eq!(fx.len(), 1, "{fx:?}");
    let run = match &fx[0] {
        Effect::StartStation { run, .. } => *run,
        other => panic!("{other:?}"),
    };
    exec.execute(fx.into_iter().next().unwrap());
    let mut selected = 0;
    let summary = loop {
        let m = next(&rx);
        match &m {
            Msg::Station { run: r, event, .. } => {
                assert_eq!(*r, run);
                if matches!(event.note, Note::Selected { .. }) {
                    selected += 1;
                }
            }
            Msg::StationEnded { result, .. } => {
                let done = result.as_ref().expect("the run ran").clone();
                update(&mut model, m);
                break done;
            }
            other => panic!("unexpected {other:?}"),
        }
        update(&mut model, m);
    };
    fleet.stop();
    assert_eq!(selected, 2);
    assert_eq!((summary.summary.devices, summary.summary.verified), (2, 2));
    assert!(folder.join("summary.json").is_file() && folder.join("summary.csv").is_file());
    assert!(exec.running().is_empty());
    let st = model.station.as_ref().unwrap();
    assert!(!st.running());
    let c = st.counts();
    assert_eq!((c.verified, c.failed, c.waiting, c.flashing), (2, 0, 0, 0));
    assert!(st
        .rows
        .iter()
        .all(|r| r.attempts == 1 && !r.lines.is_empty()));
}

fn key(c: char) -> crossterm::event::KeyEvent {
    crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Char(c),
        crossterm::event::KeyModifiers::NONE,
    )
}
