//! The demo world against the real engine, over its ptys, with a fast clock (a 1.4 s / 1.0 s
//! loop where the loop matters, a long window where a flash must not be cut) and 1 MiB packages.
//! Nothing asserts how long anything took except lower bounds that sleeping guarantees.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::*;
use crate::device::classify::Mode;
use crate::device::classify::PortRole;
use crate::device::monitor::Monitor;
use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot};
use crate::engine::at::{AtSession, NormalIdentity};
use crate::engine::diag::DiagSession;
use crate::engine::events::EngineEvent;
use crate::engine::firehose::PowerMode;
use crate::engine::flash::{self, FlashJob, FlashReport};
use crate::engine::guards::MemoryLedger;
use crate::engine::prepare::{prepare, CompatReport, PrepareRequest, Stage};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::package::compat::Rule;
use crate::transport::serial::SerialTransport;
use crate::workflow::verdict::{judge, Expectation, Return};

/// Bound for one event (generous: a loaded machine).
const EVENT: Duration = Duration::from_secs(30);

fn fast() -> Timing {
    Timing::real().scaled(0.1)
}

/// A fast clock, but a window no flash in a test outlasts.
fn long_window() -> Timing {
    let mut t = fast();
    t.boot_loop = BootLoop {
        period: Duration::from_secs(121),
        window: Duration::from_secs(120),
    };
    t
}

fn start(scenario: Scenario, timing: Timing, throttle: Option<u64>) -> DemoWorld {
    DemoWorld::start(
        scenario,
        WorldOptions {
            throttle,
            timing,
            package_bytes: 1 << 20,
            ..WorldOptions::default()
        },
    )
    .unwrap()
}

fn next(src: &mut Box<dyn DeviceSource>) -> DeviceEvent {
    src.next_event(EVENT)
        .unwrap()
        .expect("an event within the bound")
}

fn appeared(e: &DeviceEvent) -> Option<&DeviceSnapshot> {
    match &e.change {
        DeviceChange::Appear { device } => Some(device),
        DeviceChange::Vanish { .. } => None,
    }
}

/// The next appearance (vanishes before it are skipped).
fn next_appear(src: &mut Box<dyn DeviceSource>) -> DeviceSnapshot {
    loop {
        if let Some(d) = appeared(&next(src)) {
            return d.clone();
        }
    }
}

fn tty(d: &DeviceSnapshot) -> String {
    d.interface(0)
        .and_then(|i| i.tty.clone())
        .expect("a boot-ROM appearance names its pty")
}

/// Prepare the world's package for its modem revision and flash it over `tty`.
fn flash(world: &DemoWorld, tty: &str, reset: bool) -> crate::Result<FlashReport> {
    let p = prepare(
        &PrepareRequest {
            package: world.package(),
            modem_revision: Some(world.modem_revision().into()),
            ..PrepareRequest::default()
        },
        &MemoryLedger::new(),
        None,
    )?;
    assert!(p.verdict().flashable, "{:?}", p.verdict());
    p.reverify()?;
    let job = FlashJob {
        programmer: Some(p.programmer_image()?),
        reset: reset.then_some(PowerMode::Reset),
        ..FlashJob::default()
    };
    let t = SerialTransport::open(Path::new(tty)).unwrap();
    let cancel = AtomicBool::new(false);
    flash::run(t, p.plan.as_ref().unwrap(), &job, &mut |_| {}, &cancel)
}

#[test]
fn scenarios_parse_by_name() {
    for s in Scenario::ALL {
        assert_eq!(s.name().parse::<Scenario>().unwrap(), s);
    }
    assert!("nope"
        .parse::<Scenario>()
        .unwrap_err()
        .contains("wrong-variant"));
}

#[test]
fn the_unbrick_unit_loops_in_9008_until_it_is_flashed_and_the_folder_goes_with_the_world() {
    let world = start(Scenario::Unbrick, fast(), None);
    let package = world.package();
    assert!(package.join("md5.txt").is_file());
    assert!(package.ends_with("RM502QAEAAR13A03M4G_01.200.01.200"));
    let check = world.boot_check();
    assert!(!check.chain_ok() && check.firmware_ok(), "{check:?}");
    let mut src = world.source();
    let mut events = Vec::new();
    while events.len() < 5 {
        events.push(next(&mut src));
    }
    let lp = world.timing().boot_loop;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(appeared(e).is_some(), i % 2 == 0, "{events:?}");
        assert_eq!(e.location(), events[0].location());
        if let Some(d) = appeared(e) {
            assert_eq!(d.id(), "05c6:9008");
            assert!(d
                .product
                .as_deref()
                .unwrap()
                .contains(&format!("_SN:{:08X}", world.unit().identity.serial)));
        }
    }
    let ttys: Vec<String> = events.iter().filter_map(appeared).map(tty).collect();
    assert!(ttys.windows(2).all(|w| w[0] != w[1]), "{ttys:?}");
    // Sleeping guarantees the lower bounds: each window lasts at least WINDOW, the next one
    // comes at least PERIOD after the previous one.
    let ms = |d: Duration| d.as_millis() as u64;
    for pair in events.chunks_exact(2) {
        assert!(
            pair[1].t_ms - pair[0].t_ms >= ms(lp.window) - 50,
            "{events:?}"
        );
    }
    assert!(events[2].t_ms - events[0].t_ms >= ms(lp.period) - 50);
    assert!(events[4].t_ms - events[2].t_ms >= ms(lp.period) - 50);

    // The monitor sees one device.
    let mut m = Monitor::default();
    let ids: Vec<_> = events.iter().map(|e| m.observe(e).id).collect();
    assert!(ids.iter().all(|id| id.is_some() && *id == ids[0]));

    drop(world);
    assert!(!package.exists(), "the world removes its folder");
    // The bus closed: the source ends after what was left.
    while src.next_event(EVENT).unwrap().is_some() {}
    assert!(src.finished());
}

#[test]
fn a_flash_in_the_window_brings_the_unit_back_in_normal_mode_with_its_efs_intact() {
    let world = start(Scenario::Unbrick, long_window(), None);
    let efs = world.unique_digests();
    assert!(efs.iter().any(|(n, _)| n == "EFS2"), "{efs:?}");
    let mut src = world.source();
    let edl = next_appear(&mut src);
    assert_eq!(
        world.state(),
        UnitState::Edl {
            looping: true,
            pty: tty(&edl).into()
        }
    );
    let report = flash(&world, &tty(&edl), true).unwrap();
    assert!(report.programmer_uploaded);
    // The EDL appearance ends with the reset; the unit boots its new firmware.
    let mut m = Monitor::default();
    m.observe(&DeviceEvent {
        t_ms: 0,
        change: DeviceChange::Appear {
            device: edl.clone(),
        },
    });
    let vanish = next(&mut src);
    assert!(matches!(vanish.change, DeviceChange::Vanish { .. }));
    let back = next(&mut src);
    let normal = appeared(&back).expect("an appearance after the reset");
    assert_eq!(normal.id(), "2c7c:0800");
    assert!(back.t_ms - vanish.t_ms >= world.timing().normal_boot.as_millis() as u64 - 50);
    m.observe(&vanish);
    let u = m.observe(&back);
    assert!(matches!(
        u.class.as_ref().unwrap().mode,
        Mode::QuectelNormal { .. }
    ));
    assert_eq!(u.id, m.devices(back.t_ms).last().map(|d| d.id), "one unit");
    assert_eq!(world.state(), UnitState::Normal);
    assert!(world.boot_check().boots());
    assert_eq!(world.unique_digests(), efs, "the update left the EFS alone");
    // It stays: nothing more happens on the bus.
    assert!(src
        .next_event(world.timing().normal_boot * 4)
        .unwrap()
        .is_none());
}

#[test]
fn a_flash_cut_off_by_the_window_leaves_the_unit_looping() {
    // 10 kB/s: the boot chain's images cannot all be written in a 2 s window, however fast
    // the host is.
    let mut t = fast();
    t.boot_loop = BootLoop {
        period: Duration::from_millis(2500),
        window: Duration::from_secs(2),
    };
    let world = start(Scenario::Unbrick, t, Some(10_000));
    let mut src = world.source();
    let edl = next_appear(&mut src);
    let err = flash(&world, &tty(&edl), true).unwrap_err();
    assert_eq!(err.kind, crate::ErrorKind::DeviceLost, "{err:?}");
    let again = next_appear(&mut src);
    assert_eq!(again.id(), "05c6:9008");
    assert_ne!(tty(&again), tty(&edl));
    let check = world.boot_check();
    assert!(!check.chain_ok(), "{check:?}");
}

#[test]
fn update_bridging_the_pins_gives_9008_that_stays_and_release_lets_it_boot() {
    let world = start(Scenario::Update, fast(), None);
    assert!(world.boot_check().boots());
    let mut src = world.source();
    let normal = next_appear(&mut src);
    assert_eq!(normal.id(), "2c7c:0800");
    // Its DM, NMEA, AT and modem ports are served.
    assert_eq!(
        normal.interfaces.iter().filter(|i| i.tty.is_some()).count(),
        4
    );

    world.bench(BenchAction::BridgePinsAndPowerCycle);
    let gone = next(&mut src);
    assert!(matches!(gone.change, DeviceChange::Vanish { .. }));
    let edl_event = next(&mut src);
    let edl = appeared(&edl_event).unwrap().clone();
    assert_eq!(edl.id(), "05c6:9008");
    assert!(edl_event.t_ms - gone.t_ms >= world.timing().edl_boot.as_millis() as u64 - 50);
    assert!(matches!(
        world.state(),
        UnitState::Edl { looping: false, .. }
    ));
    // No watchdog while the pins are held: the window does not close.
    assert!(src
        .next_event(world.timing().boot_loop.period)
        .unwrap()
        .is_none());

    // A flash and reset with the pins still held: back to 9008.
    flash(&world, &tty(&edl), true).unwrap();
    let again = next_appear(&mut src);
    assert_eq!(again.id(), "05c6:9008");
    // Released: the next reset boots the (new) firmware.
    world.bench(BenchAction::ReleasePins);
    flash(&world, &tty(&again), true).unwrap();
    let back = next_appear(&mut src);
    assert_eq!(back.id(), "2c7c:0800");
}

#[test]
fn the_crash_unit_gives_its_ram_dump_crashes_again_and_the_pins_get_it_to_9008() {
    let world = start(Scenario::Crash, fast(), None);
    let check = world.boot_check();
    assert!(check.chain_ok() && !check.firmware_ok(), "{check:?}");
    let mut src = world.source();
    // It boots and runs in normal mode for a moment, then its modem image takes it down.
    let running = next_appear(&mut src);
    assert_eq!(running.id(), "2c7c:0800");
    let crashed = next_appear(&mut src);
    assert_eq!(crashed.id(), "05c6:900e");
    let dir = tempfile::tempdir().unwrap();
    let t = SerialTransport::open(Path::new(&tty(&crashed))).unwrap();
    let report = SaharaSession::new(t, SaharaConfig::default())
        .ramdump(dir.path(), &mut |_| {})
        .unwrap();
    assert!(report.bytes_written > 0);
    // The dump ends with a reset: it boots, crashes again.
    assert_eq!(next_appear(&mut src).id(), "2c7c:0800");
    let again = next_appear(&mut src);
    assert_eq!(again.id(), "05c6:900e");
    world.bench(BenchAction::BridgePinsAndPowerCycle);
    let edl = next_appear(&mut src);
    assert_eq!(edl.id(), "05c6:9008");
    assert_eq!(edl.location(), crashed.location());
}

#[test]
fn wrong_variant_and_factory_packages_are_refused_for_the_reasons_the_scenarios_name() {
    let world = start(Scenario::WrongVariant, fast(), None);
    assert!(world.package_revision().starts_with("RM502QGLAA"));
    let (info, rev) = world.config_hint();
    assert_eq!(info.scenario, "wrong-variant");
    assert!(info.about.contains("RM502Q-GL"), "{}", info.about);
    let p = prepare(
        &PrepareRequest {
            package: world.package(),
            modem_revision: rev,
            ..PrepareRequest::default()
        },
        &MemoryLedger::new(),
        None,
    )
    .unwrap();
    assert!(!p.verdict().flashable);
    match &p.compat {
        CompatReport::Refused { rule, .. } => assert_eq!(*rule, Some(Rule::VariantMismatch)),
        c => panic!("{c:?}"),
    }
    drop(world);

    let world = start(Scenario::Factory, fast(), None);
    let (_, rev) = world.config_hint();
    assert_eq!(rev, None, "a normal-mode unit tells its revision over AT");
    let p = prepare(
        &PrepareRequest {
            package: world.package(),
            modem_revision: Some(world.modem_revision().into()),
            ..PrepareRequest::default()
        },
        &MemoryLedger::new(),
        None,
    )
    .unwrap();
    let v = p.verdict();
    assert!(!v.flashable);
    assert!(v.reasons.iter().all(|r| r.stage == Stage::Guard), "{v:?}");
    assert!(
        p.guard
            .as_ref()
            .unwrap()
            .touched
            .iter()
            .any(|t| t.partition == "EFS2"),
        "{:?}",
        p.guard
    );
    assert!(
        p.warnings.iter().all(|w| !w.contains("md5")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn block_storage_units_have_a_boot_chain_and_device_unique_data_too() {
    for kind in [profile::Storage::Emmc, profile::Storage::Ufs] {
        let world = DemoWorld::start(
            Scenario::Unbrick,
            WorldOptions {
                storage: Some(kind),
                throttle: None,
                timing: fast(),
                package_bytes: 1 << 20,
                ..WorldOptions::default()
            },
        )
        .unwrap();
        let check = world.boot_check();
        assert!(
            !check.chain_ok() && check.firmware_ok(),
            "{kind:?}: {check:?}"
        );
        assert!(!world.unique_digests().is_empty(), "{kind:?}");
    }
}

#[test]
fn a_powered_off_unit_waits_for_a_power_cycle() {
    let world = start(Scenario::Update, fast(), None);
    let mut src = world.source();
    next_appear(&mut src);
    world.bench(BenchAction::BridgePinsAndPowerCycle);
    let edl = next_appear(&mut src);
    world.bench(BenchAction::ReleasePins);
    // Power off through Firehose (no plan steps: a reset of None, then an explicit off).
    let p = prepare(
        &PrepareRequest {
            package: world.package(),
            ..PrepareRequest::default()
        },
        &MemoryLedger::new(),
        None,
    )
    .unwrap();
    let t = SerialTransport::open(Path::new(&tty(&edl))).unwrap();
    let stop = AtomicBool::new(false);
    let mut events = Vec::new();
    let mut plan = p.plan.clone().unwrap();
    plan.steps.clear();
    flash::run(
        t,
        &plan,
        &FlashJob {
            programmer: Some(p.programmer_image().unwrap()),
            reset: Some(PowerMode::Off),
            ..FlashJob::default()
        },
        &mut |e: EngineEvent| events.push(e),
        &stop,
    )
    .unwrap();
    let gone = next(&mut src);
    assert!(matches!(gone.change, DeviceChange::Vanish { .. }));
    assert!(src
        .next_event(world.timing().normal_boot * 3)
        .unwrap()
        .is_none());
    assert_eq!(world.state(), UnitState::PoweredOff);
    world.bench(BenchAction::BridgePinsAndPowerCycle);
    assert_eq!(next_appear(&mut src).id(), "05c6:9008");
}

#[test]
fn the_world_and_the_bench_can_be_handed_to_the_console_runtime() {
    // The runtime keeps the world alive in a `Vec<Box<dyn Any + Send>>` and calls the bench
    // from a `Box<dyn Fn(BenchAction) + Send + Sync>`.
    fn keep<T: std::any::Any + Send>(_: &T) {}
    fn call<F: Fn(BenchAction) + Send + Sync>(_: &F) {}
    let world = start(Scenario::Update, fast(), None);
    let bench = world.bench_handle();
    let f = move |a| bench.act(a);
    call(&f);
    keep(&world);
    let base = Config::default();
    let c = world.console_config(base.clone());
    assert_eq!(c.package, Some(world.package()));
    // Read over AT from the modem itself, not given.
    assert_eq!(c.modem_revision, None);
    assert_eq!(c.demo.as_ref().unwrap().scenario, "update");
    assert_eq!(c.source, "emulated modem");
    assert_eq!(
        (c.color, c.bell, c.log_file),
        (base.color, base.bell, base.log_file)
    );
    // A unit nobody can ask over AT: the demo names its revision.
    let world = start(Scenario::Unbrick, fast(), None);
    assert_eq!(
        world
            .console_config(Config::default())
            .modem_revision
            .as_deref(),
        Some("RM502QAEAAR13A02M4G_01.200.01.200")
    );
}

/// The port of `role` named in a normal-mode snapshot.
fn port_of(d: &DeviceSnapshot, role: PortRole) -> SerialTransport {
    let c = crate::device::classify::classify(d);
    let tty = c
        .port(role)
        .and_then(|p| p.tty.clone())
        .unwrap_or_else(|| panic!("no {role:?} port in {d:?}"));
    SerialTransport::open(Path::new(&tty)).unwrap()
}

fn identify_at(d: &DeviceSnapshot) -> NormalIdentity {
    AtSession::new(port_of(d, PortRole::At)).identify()
}

fn switch_to_edl(d: &DeviceSnapshot) {
    let r = DiagSession::new(port_of(d, PortRole::Dm)).switch_to_edl();
    assert!(r.is_ok(), "{r:?}");
}

fn expectation(world: &DemoWorld, before: &NormalIdentity) -> Expectation {
    Expectation {
        imei: before.imei.as_ref().map(|i| i.digits.clone()),
        revision: Some(world.package_revision().into()),
        calibrated_before: before.cfun.map(|c| c.level == 1),
        backup: None,
    }
}

#[test]
fn update_over_at_and_diag_ends_verified_with_the_same_imei_and_calibration() {
    let world = start(Scenario::Update, fast(), None);
    let mut src = world.source();
    let normal = next_appear(&mut src);
    let before = identify_at(&normal);
    assert_eq!(before.cfun.map(|c| c.level), Some(1), "{before:?}");
    assert_eq!(
        before.revision.as_ref().map(|r| r.text.as_str()),
        Some(world.modem_revision())
    );
    let imei = before.imei.clone().expect("an IMEI");
    assert!(imei.luhn_ok);
    let efs = world.unique_digests();

    // DIAG: it leaves the bus and comes back in its boot ROM, where it stays.
    switch_to_edl(&normal);
    let gone = next(&mut src);
    assert!(
        matches!(gone.change, DeviceChange::Vanish { .. }),
        "{gone:?}"
    );
    let edl = next_appear(&mut src);
    assert_eq!(edl.id(), "05c6:9008");
    assert!(matches!(
        world.state(),
        UnitState::Edl { looping: false, .. }
    ));
    flash(&world, &tty(&edl), true).unwrap();
    let back = next_appear(&mut src);
    assert_eq!(back.id(), "2c7c:0800");
    let after = identify_at(&back);
    assert_eq!(
        after.revision.as_ref().map(|r| r.text.as_str()),
        Some(world.package_revision()),
        "it runs the package's firmware"
    );
    let v = judge(
        &expectation(&world, &before),
        &Return::Normal(Box::new(after)),
    );
    assert!(v.is_verified(), "{v:?}");
    assert!(v.headline().contains(&format!("same IMEI {}", imei.digits)));
    assert_eq!(world.unique_digests(), efs);
}

#[test]
fn at_reset_reboots_and_qpowd_powers_off_until_a_power_cycle() {
    let world = start(Scenario::Update, fast(), None);
    let mut src = world.source();
    let normal = next_appear(&mut src);
    let mut at = AtSession::new(port_of(&normal, PortRole::At)).allow_usb_change(true);
    at.run("AT+CFUN=1,1").unwrap();
    drop(at);
    let gone = next(&mut src);
    assert!(matches!(gone.change, DeviceChange::Vanish { .. }));
    let again = next_appear(&mut src);
    assert_eq!(again.id(), "2c7c:0800");
    assert_ne!(tty(&again), tty(&normal), "fresh ptys");
    let mut at = AtSession::new(port_of(&again, PortRole::At)).allow_usb_change(true);
    at.run("AT+QPOWD").unwrap();
    drop(at);
    let gone = next(&mut src);
    assert!(matches!(gone.change, DeviceChange::Vanish { .. }));
    assert!(src
        .next_event(world.timing().normal_boot * 3)
        .unwrap()
        .is_none());
    assert_eq!(world.state(), UnitState::PoweredOff);
    world.bench(BenchAction::BridgePinsAndPowerCycle);
    assert_eq!(next_appear(&mut src).id(), "05c6:9008");
}

#[test]
fn a_diag_switch_while_the_crashing_unit_runs_reaches_9008() {
    let mut t = fast();
    // A window no loaded machine misses; the scenario's own is short.
    t.crash_normal = Duration::from_secs(60);
    let world = start(Scenario::Crash, t, None);
    let mut src = world.source();
    let running = next_appear(&mut src);
    assert_eq!(running.id(), "2c7c:0800");
    assert_eq!(identify_at(&running).cfun.map(|c| c.level), Some(1));
    switch_to_edl(&running);
    let edl = next_appear(&mut src);
    assert_eq!(edl.id(), "05c6:9008");
    assert!(matches!(
        world.state(),
        UnitState::Edl { looping: false, .. }
    ));
}

#[test]
fn another_variants_firmware_boots_to_cfun_7() {
    let world = start(Scenario::WrongVariant, long_window(), None);
    let mut src = world.source();
    let edl = next_appear(&mut src);
    let p = prepare(
        &PrepareRequest {
            package: world.package(),
            modem_revision: Some(world.modem_revision().into()),
            ..PrepareRequest::default()
        },
        &MemoryLedger::new(),
        None,
    )
    .unwrap();
    assert!(!p.verdict().flashable);
    // qrescue refuses it; another tool (as users did with QFlash) writes it anyway.
    let plan = p
        .plan
        .as_ref()
        .expect("the plan is built before it is judged");
    let job = FlashJob {
        programmer: Some(p.programmer_image().unwrap()),
        ..FlashJob::default()
    };
    let t = SerialTransport::open(Path::new(&tty(&edl))).unwrap();
    flash::run(t, plan, &job, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    let back = next_appear(&mut src);
    assert_eq!(back.id(), "2c7c:0800");
    let id = identify_at(&back);
    assert_eq!(id.cfun.map(|c| c.level), Some(7), "{id:?}");
    let v = judge(
        &Expectation {
            imei: id.imei.as_ref().map(|i| i.digits.clone()),
            ..Expectation::default()
        },
        &Return::Normal(Box::new(id)),
    );
    assert!(v.headline().contains("+CFUN: 7"), "{}", v.headline());
}

/// Sahara identity of the unit in 9008 on `edl` and a Firehose session with `programmer`
/// running.
fn programmer_session(
    edl: &DeviceSnapshot,
    programmer: &[u8],
) -> (
    crate::backup::Identity,
    crate::engine::firehose::FirehoseSession<
        crate::transport::Pushback<crate::transport::Pushback<SerialTransport>>,
    >,
) {
    let t = SerialTransport::open(Path::new(&tty(edl))).unwrap();
    let (link, info) = crate::backup::run::identify(t, &SaharaConfig::default()).unwrap();
    let identity = crate::backup::Identity::from_device_info(&info.expect("the boot ROM answers"));
    let (fh, _) = crate::engine::connect::attach_or_upload(
        link,
        Some(programmer),
        &SaharaConfig::default(),
        crate::engine::firehose::FirehoseOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    (identity, fh)
}

#[test]
fn a_factory_flash_loses_the_calibration_and_the_backup_brings_it_back() {
    use crate::backup::run::{self, BackupOptions};
    use crate::backup::{BackupKind, Store, StoreLedger};
    use crate::protocol::firehose::commands::StorageKind;

    let world = start(Scenario::Factory, fast(), None);
    let mut src = world.source();
    let normal = next_appear(&mut src);
    let before = identify_at(&normal);
    assert_eq!(before.cfun.map(|c| c.level), Some(1));
    let req = PrepareRequest {
        package: world.package(),
        modem_revision: before.revision.as_ref().map(|r| r.text.clone()),
        ..PrepareRequest::default()
    };
    let blocked = prepare(&req, &MemoryLedger::new(), None).unwrap();
    assert!(!blocked.verdict().flashable);
    let programmer = blocked.programmer_image().unwrap();

    // Back up its own data in 9008 (over DIAG there), then the guard lets the package through.
    switch_to_edl(&normal);
    let edl = next_appear(&mut src);
    let (mut identity, mut fh) = programmer_session(&edl, &programmer);
    identity.imei = before.imei.as_ref().map(|i| i.digits.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let backup = run::take_backup(
        &mut fh,
        &identity,
        &store,
        &BackupOptions {
            kind: BackupKind::DeviceUnique,
            storage: StorageKind::Nand,
        },
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let ledger = StoreLedger::new(&store).unwrap().for_device(&identity);
    let unit = identity.unit_key().unwrap();
    let p = prepare(&req, &ledger, Some(&unit)).unwrap();
    assert!(p.verdict().flashable, "{:?}", p.verdict());
    let (mut link, rest) = fh.into_parts();
    link.unread(&rest);
    flash::run(
        &mut link,
        p.plan.as_ref().unwrap(),
        &FlashJob::default(),
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();

    // Flashed: it boots, but its EFS is the factory image's, without this unit's data.
    let back = next_appear(&mut src);
    let after = identify_at(&back);
    assert_eq!(after.cfun.map(|c| c.level), Some(5), "{after:?}");
    let mut expect = expectation(&world, &before);
    expect.backup = Some(backup.name.clone());
    let v = judge(&expect, &Return::Normal(Box::new(after)));
    let crate::workflow::verdict::Verdict::NotVerified { failures, next } = &v else {
        panic!("{v:?}")
    };
    assert!(failures.contains(&crate::workflow::verdict::Failure::CalibrationLost));
    assert!(next[0].contains(&backup.name), "{next:?}");

    // Restore the backup in 9008: +CFUN: 1 and the same IMEI again.
    switch_to_edl(&back);
    let edl = next_appear(&mut src);
    let (mut identity, mut fh) = programmer_session(&edl, &programmer);
    identity.imei = expect.imei.clone();
    let plan = run::plan_restore(&backup, &[]).unwrap();
    run::restore(
        &mut fh,
        &backup,
        &plan,
        &identity,
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    fh.power(PowerMode::Reset, 1).unwrap();
    let restored = next_appear(&mut src);
    let v = judge(&expect, &Return::Normal(Box::new(identify_at(&restored))));
    assert!(v.is_verified(), "{v:?}");
}
