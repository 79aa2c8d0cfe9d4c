//! `update` on the model: device events (through the real monitor), engine events and keys.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::device::bootloop::LoopStatus;
use crate::device::classify::Mode;
use crate::device::identity::DeviceId;
use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot};
use crate::engine::at::NormalIdentity;
use crate::engine::events::{EngineEvent, StepInfo, StepKind};
use crate::engine::prepare::{CompatReport, Reason, Stage as CheckStage, Verdict};
use crate::protocol::at::info::{Cfun, FirmwareRevision, Imei};
use crate::protocol::sahara::info::DeviceInfo;
use crate::sim::profile::Profile;
use crate::sim::usb_ids::{boot_rom_snapshot, normal_mode_snapshot};
use crate::tui::model::{
    Config, DemoInfo, Focus, Model, Outcome, Overlay, PinPhase, RowState, Stage, TICK_COUNTDOWN_MS,
    TICK_FAST_MS, TICK_SLOW_MS,
};
use crate::tui::msg::{BenchAction, Effect, JobId, Msg, PlanReview, Problem};

use super::flash::DEVICE_LOG_LIMIT;
use super::update;

const PHRASE: &str = "I have a verified backup and accept a cross-baseline flash";

fn config() -> Config {
    Config {
        package: Some(PathBuf::from("/pkgs/RM502QAEAAR13A02M4G.zip")),
        modem_revision: Some("RM502QAEAAR11A03M4G".into()),
        ..Config::default()
    }
}

fn model() -> Model {
    Model::new(config())
}

/// An EC25 unit in EDL, on its own root-hub port.
fn edl(port: u8) -> DeviceSnapshot {
    let p = Profile::by_name("ec25").unwrap().for_unit(u64::from(port));
    let mut s = boot_rom_snapshot(&p, None, 2);
    s.ports = vec![port];
    s
}

fn crash(port: u8) -> DeviceSnapshot {
    let p = Profile::by_name("ec25-crash").unwrap();
    let mut s = boot_rom_snapshot(&p, None, 2);
    s.ports = vec![port];
    s
}

/// The same EC25 unit in normal mode (same port, so the tracker links the two).
fn normal(port: u8) -> DeviceSnapshot {
    let p = Profile::by_name("ec25").unwrap().for_unit(u64::from(port));
    let mut s = normal_mode_snapshot(&p, 3).unwrap();
    s.ports = vec![port];
    s
}

/// The same unit in normal mode with its DM, NMEA, AT and modem ports bound to ttys.
fn normal_ported(port: u8) -> DeviceSnapshot {
    let mut s = normal(port);
    for i in s.interfaces.iter_mut().filter(|i| i.number < 4) {
        i.tty = Some(format!("/dev/ttyUSB{}", i.number));
    }
    s
}

/// What the EC25 says over AT.
fn at_id(imei: &str, cfun: u8, revision: &str) -> NormalIdentity {
    NormalIdentity {
        revision: Some(FirmwareRevision {
            text: revision.into(),
        }),
        imei: Some(Imei {
            digits: imei.into(),
            luhn_ok: crate::sim::normal::unit::is_valid_imei(imei),
        }),
        cfun: Some(Cfun::new(cfun)),
        ..NormalIdentity::default()
    }
}

const IMEI: &str = "867962041234561";

fn identified(device: DeviceId, id: NormalIdentity, t_ms: u64) -> Msg {
    Msg::NormalIdentified {
        device,
        result: Ok(id),
        t_ms,
    }
}

fn keyboard(port: u8) -> DeviceSnapshot {
    let mut s = edl(port);
    s.vid = 0x046d;
    s.pid = 0xc31c;
    s.product = Some("USB Keyboard".into());
    s.manufacturer = Some("Logitech".into());
    s.interfaces.clear();
    s
}

fn appear(t_ms: u64, device: &DeviceSnapshot) -> Msg {
    Msg::Device {
        event: DeviceEvent {
            t_ms,
            change: DeviceChange::Appear {
                device: device.clone(),
            },
        },
        initial: false,
    }
}

fn vanish(t_ms: u64, device: &DeviceSnapshot) -> Msg {
    Msg::Device {
        event: DeviceEvent {
            t_ms,
            change: DeviceChange::Vanish {
                location: device.location(),
                last: Some(device.clone()),
            },
        },
        initial: false,
    }
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ch(c: char) -> Msg {
    key(KeyCode::Char(c))
}

fn ctrl_c() -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))
}

fn tick(now_ms: u64) -> Msg {
    Msg::Tick { now_ms }
}

fn review(flashable: bool, compat: CompatReport) -> PlanReview {
    let reasons = if flashable {
        Vec::new()
    } else {
        vec![Reason {
            stage: CheckStage::Compatibility,
            what: "The package is for another baseline (R13 over R11)".into(),
            why: "Crossing baselines can leave the modem without calibration.".into(),
            next: "Use an R11 package.".into(),
        }]
    };
    PlanReview {
        plan: 7,
        package: PathBuf::from("/pkgs/RM502QAEAAR13A02M4G.zip"),
        package_revision: Some("RM502QAEAAR13A02M4G".into()),
        verdict: Verdict {
            flashable,
            summary: if flashable {
                "flashable".into()
            } else {
                "refused: another baseline".into()
            },
            reasons,
        },
        compat,
        guard: None,
        summary: None,
        programmer: Some("update/prog_firehose_sdx55.mbn".into()),
        warnings: Vec::new(),
    }
}

fn not_checked() -> CompatReport {
    CompatReport::NotChecked {
        package: None,
        reason: "the modem's revision is not known".into(),
        next: "pass --modem-revision".into(),
    }
}

fn refused(phrase: Option<&str>) -> CompatReport {
    CompatReport::Refused {
        modem: "RM502QAEAAR11A03M4G".into(),
        package: Some("RM502QAEAAR13A02M4G".into()),
        rule: None,
        title: "another baseline".into(),
        why: "calibration".into(),
        next: "use R11".into(),
        override_phrase: phrase.map(str::to_string),
    }
}

/// The answer to the check the flow waits for.
fn check_answer(m: &mut Model, r: PlanReview, t_ms: u64) -> Vec<Effect> {
    let token = m.flow.check_token;
    update(
        m,
        Msg::Checked {
            token,
            result: Ok(Box::new(r)),
            t_ms,
        },
    )
}

fn engine(job: JobId, t_ms: u64, event: EngineEvent) -> Msg {
    Msg::Engine { job, event, t_ms }
}

fn step(index: usize, kind: StepKind, name: &str, bytes: u64) -> StepInfo {
    StepInfo {
        index,
        kind,
        name: name.into(),
        bytes,
        lun: None,
        start_sector: None,
        sectors: None,
    }
}

fn plan_event() -> EngineEvent {
    let steps = vec![
        step(0, StepKind::SaharaUpload, "programmer", 600_000),
        step(1, StepKind::Program, "sbl", 1 << 20),
        step(2, StepKind::Program, "system", 40 << 20),
        step(3, StepKind::Reset, "reset", 0),
    ];
    let total_bytes = steps.iter().map(|s| s.bytes).sum();
    EngineEvent::Plan { steps, total_bytes }
}

fn id_of(m: &Model, port: u8) -> DeviceId {
    m.devices()
        .into_iter()
        .find(|d| d.device.ports == vec![port])
        .map(|d| d.id)
        .expect("device tracked")
}

fn has_bell(fx: &[Effect]) -> bool {
    fx.contains(&Effect::Bell)
}

/// An EDL modem present, selected, checked and flashable.
fn ready_with_present_edl() -> (Model, DeviceId, DeviceSnapshot) {
    let mut m = model();
    let d = edl(3);
    update(&mut m, appear(1_000, &d));
    let id = id_of(&m, 3);
    update(&mut m, key(KeyCode::Enter));
    check_answer(&mut m, review(true, not_checked()), 1_500);
    assert_eq!(m.flow.stage, Stage::Ready);
    (m, id, d)
}

/// Drive a 9008 loop: present 10 s every 14 s, three appearances; the device is absent after
/// the last vanish at `t = 38 s`.
fn looping_edl(m: &mut Model, d: &DeviceSnapshot) {
    for k in 0..3u64 {
        update(m, appear(k * 14_000, d));
        update(m, vanish(k * 14_000 + 10_000, d));
    }
}

/// A flash started on the present EDL modem; returns its job.
fn flashing() -> (Model, DeviceId, JobId) {
    let (mut m, id, _) = ready_with_present_edl();
    update(&mut m, ch('f'));
    let fx = update(&mut m, ch('y'));
    let job = match fx.as_slice() {
        [Effect::StartFlash { job, .. }] => *job,
        other => panic!("expected StartFlash, got {other:?}"),
    };
    (m, id, job)
}

#[test]
fn idle_console_runs_no_timer_and_ticks_do_not_dirty() {
    let mut m = model();
    assert_eq!(m.tick_interval_ms(), None);
    assert!(!m.animating());
    m.dirty = false;
    let fx = update(&mut m, tick(5_000));
    assert!(fx.is_empty());
    assert!(!m.dirty, "an idle tick must not cause a repaint");
    assert_eq!(m.now_ms, 5_000);
    // A plain EDL modem sitting there is not animated either.
    update(&mut m, appear(6_000, &edl(3)));
    assert!(m.dirty);
    assert_eq!(m.tick_interval_ms(), None);
    m.dirty = false;
    update(&mut m, tick(7_000));
    assert!(!m.dirty);
}

#[test]
fn first_modem_is_selected_and_arrows_move_over_the_device_list() {
    let mut m = model();
    update(&mut m, appear(0, &keyboard(1)));
    assert_eq!(m.selected, None, "a keyboard is not a modem");
    update(&mut m, appear(10, &edl(3)));
    let a = id_of(&m, 3);
    assert_eq!(m.selected, Some(a));
    update(&mut m, appear(20, &normal(5)));
    let b = id_of(&m, 5);
    let order: Vec<DeviceId> = m.devices().iter().map(|d| d.id).collect();
    assert_eq!(order, vec![a, b], "the keyboard is not listed");
    update(&mut m, key(KeyCode::Down));
    assert_eq!(m.selected, Some(b));
    update(&mut m, ch('j'));
    assert_eq!(m.selected, Some(b), "stays on the last");
    update(&mut m, ch('k'));
    assert_eq!(m.selected, Some(a));
    update(&mut m, key(KeyCode::Up));
    assert_eq!(m.selected, Some(a));
    // With the log focused the arrows scroll the log instead.
    update(&mut m, key(KeyCode::Tab));
    assert_eq!(m.focus, Focus::Log);
    update(&mut m, key(KeyCode::Up));
    assert_eq!(m.selected, Some(a));
    assert_eq!(m.log_scroll, 1);
}

#[test]
fn boot_loop_is_detected_through_the_monitor_and_shows_a_countdown() {
    let mut m = model();
    let d = edl(3);
    looping_edl(&mut m, &d);
    let id = id_of(&m, 3);
    let status = m.loop_status(id);
    let report = status.report().expect("a loop");
    assert!(status.is_looping());
    assert!(report.period_ms.abs_diff(14_000) <= 500, "{report:?}");
    assert!(report.window_ms.abs_diff(10_000) <= 500, "{report:?}");
    assert_eq!(report.next_appear_ms, 42_000);
    // The devices pane shows "next window in …": the console ticks for it.
    assert_eq!(m.tick_interval_ms(), Some(TICK_SLOW_MS));
    m.dirty = false;
    update(&mut m, tick(39_000));
    assert!(m.dirty);
    let text = m.workflow_text();
    assert!(text.title.contains("boot loop"), "{text:?}");
}

#[test]
fn enter_on_a_present_edl_modem_checks_the_package_and_identifies_it() {
    let mut m = model();
    let d = edl(3);
    update(&mut m, appear(1_000, &d));
    let id = id_of(&m, 3);
    let fx = update(&mut m, key(KeyCode::Enter));
    assert_eq!(
        fx,
        vec![
            Effect::CheckPackage {
                token: 1,
                device: Some(id),
                package: PathBuf::from("/pkgs/RM502QAEAAR13A02M4G.zip"),
                modem_revision: Some("RM502QAEAAR11A03M4G".into()),
                override_phrase: None,
            },
            Effect::Identify {
                device: id,
                snapshot: d.clone(),
            },
        ]
    );
    assert_eq!(m.flow.stage, Stage::Checking);
    assert_eq!(m.flow.device, Some(id));
    assert_eq!(m.tick_interval_ms(), Some(TICK_SLOW_MS));
    // The identity arrives and is kept.
    let info = DeviceInfo {
        serial: Some(0x0cf9_4c64),
        ..DeviceInfo::default()
    };
    update(
        &mut m,
        Msg::Identified {
            device: id,
            result: Ok(info.clone()),
            t_ms: 1_200,
        },
    );
    assert_eq!(m.identities[&id].info, info);
    assert_eq!(m.identities[&id].t_ms, 1_200);
    // A failed check returns to Idle with its problem; an answer to another check (a stale
    // token) changes nothing.
    let p = Problem {
        what: "The package is damaged".into(),
        why: "md5 mismatch".into(),
        next: "download it again".into(),
    };
    assert_eq!(m.flow.check_token, 1);
    update(
        &mut m,
        Msg::Checked {
            token: 8,
            result: Err(p.clone()),
            t_ms: 1_250,
        },
    );
    assert_eq!(m.flow.stage, Stage::Checking);
    assert_eq!(m.flow.problem, None);
    update(
        &mut m,
        Msg::Checked {
            token: 1,
            result: Err(p.clone()),
            t_ms: 1_300,
        },
    );
    assert_eq!(m.flow.stage, Stage::Idle);
    assert_eq!(m.flow.problem, Some(p));
}

#[test]
fn enter_without_a_package_explains_what_to_do() {
    let mut m = Model::new(Config::default());
    update(&mut m, appear(0, &edl(3)));
    let fx = update(&mut m, key(KeyCode::Enter));
    assert!(fx.is_empty());
    assert_eq!(m.flow.stage, Stage::Idle);
    let p = m.flow.problem.clone().unwrap();
    assert_eq!(p.what, "No firmware package chosen");
    assert_eq!(
        p.next,
        "Start the console with --package PATH (folder or .zip)"
    );
    assert_eq!(m.workflow_text().title, "No firmware package chosen");
}

#[test]
fn a_crashed_modem_is_explained_and_not_flashed() {
    let mut m = model();
    update(&mut m, appear(0, &crash(4)));
    let fx = update(&mut m, key(KeyCode::Enter));
    assert!(
        fx.is_empty(),
        "nothing is checked or flashed for 900e: {fx:?}"
    );
    assert_eq!(m.flow.stage, Stage::Idle);
    let p = m.flow.problem.clone().unwrap();
    assert!(p.what.contains("900e"), "{p:?}");
    assert!(p.next.contains("qrescue ramdump"), "{p:?}");
    assert!(p.next.contains("9008"), "{p:?}");
}

#[test]
fn a_normal_mode_modem_without_ports_is_checked_and_confirming_opens_the_pin_screen() {
    let mut m = model();
    update(&mut m, appear(0, &normal(5)));
    let id = id_of(&m, 5);
    let fx = update(&mut m, key(KeyCode::Enter));
    assert!(
        matches!(fx.as_slice(), [Effect::CheckPackage { .. }]),
        "{fx:?}"
    );
    let p = m.flow.problem.clone().unwrap();
    assert!(p.next.contains("bridge USB_BOOT (press p"), "{p:?}");
    assert!(p.why.contains("no DM port"), "{p:?}");
    check_answer(&mut m, review(true, not_checked()), 500);
    assert_eq!(m.flow.stage, Stage::Ready);
    update(&mut m, ch('f'));
    assert_eq!(m.overlay, Overlay::ConfirmFlash);
    let fx = update(&mut m, ch('y'));
    assert!(fx.is_empty());
    assert_eq!(
        m.flow.stage,
        Stage::Armed {
            since_ms: 500,
            pins: true
        }
    );
    assert_eq!(m.pin_phase(), Some(PinPhase::Waiting));
    assert_eq!(m.tick_interval_ms(), Some(TICK_FAST_MS));
    // The person bridges USB_BOOT: normal mode leaves, 9008 appears at the same port.
    update(&mut m, vanish(3_000, &normal(5)));
    let fx = update(&mut m, appear(5_000, &edl(5)));
    assert_eq!(m.flow.device, Some(id), "linked by port history");
    assert!(
        matches!(fx.as_slice(), [Effect::StartFlash { device, plan: 7, .. }, Effect::Bell] if *device == id),
        "{fx:?}"
    );
    assert_eq!(m.pin_phase(), Some(PinPhase::SeenReleaseNow));
    assert_eq!(m.flow.seen_ms, Some(5_000));
    assert_eq!(m.workflow_text().title, "9008 SEEN — RELEASE NOW");
}

#[test]
fn a_bridged_modem_that_comes_back_unlinked_is_adopted_only_when_it_is_the_one_edl_device() {
    let mut m = model();
    update(&mut m, appear(0, &normal(5)));
    let old = id_of(&m, 5);
    update(&mut m, key(KeyCode::Enter));
    check_answer(&mut m, review(true, not_checked()), 100);
    update(&mut m, ch('p'));
    assert_eq!(
        m.overlay,
        Overlay::ConfirmFlash,
        "p asks for the confirmation first"
    );
    update(&mut m, ch('y'));
    assert_eq!(m.pin_phase(), Some(PinPhase::Waiting));
    // Normal mode leaves; 9008 comes much later at another port: a new id for the tracker.
    update(&mut m, vanish(1_000, &normal(5)));
    let fx = update(&mut m, appear(60_000, &edl(9)));
    let new = id_of(&m, 9);
    assert_ne!(new, old);
    assert!(
        matches!(fx.as_slice(), [Effect::StartFlash { device, .. }, Effect::Bell] if *device == new)
    );
    assert_eq!(m.flow.device, Some(new));
    assert_eq!(m.selected, Some(new));

    // With a second EDL modem on the bus, an unlinked appearance is not taken.
    let mut m = model();
    update(&mut m, appear(0, &normal(5)));
    update(&mut m, key(KeyCode::Enter));
    check_answer(&mut m, review(true, not_checked()), 100);
    update(&mut m, ch('f'));
    update(&mut m, ch('y'));
    update(&mut m, appear(200, &edl(11)));
    update(&mut m, vanish(1_000, &normal(5)));
    let fx = update(&mut m, appear(60_000, &edl(9)));
    assert!(fx.is_empty(), "{fx:?}");
    assert!(matches!(m.flow.stage, Stage::Armed { pins: true, .. }));
}

#[test]
fn refused_package_override_must_be_typed_exactly() {
    let (mut m, id, _) = {
        let mut m = model();
        let d = edl(3);
        update(&mut m, appear(0, &d));
        let id = id_of(&m, 3);
        update(&mut m, key(KeyCode::Enter));
        (m, id, d)
    };
    check_answer(&mut m, review(false, refused(Some(PHRASE))), 300);
    assert_eq!(m.flow.stage, Stage::Refused);
    let p = m.flow.problem.clone().unwrap();
    assert_eq!(p.what, "The package is for another baseline (R13 over R11)");
    assert!(p.next.contains(PHRASE), "{p:?}");
    // f does nothing at Refused.
    update(&mut m, ch('f'));
    assert_eq!(m.overlay, Overlay::None);
    update(&mut m, ch('o'));
    assert_eq!(
        m.overlay,
        Overlay::OverrideInput {
            typed: String::new()
        }
    );
    for c in "I have a backup".chars() {
        update(&mut m, ch(c));
    }
    // q while typing is a letter, not quit.
    let fx = update(&mut m, ch('q'));
    assert!(fx.is_empty());
    update(&mut m, key(KeyCode::Backspace));
    assert_eq!(
        m.overlay,
        Overlay::OverrideInput {
            typed: "I have a backup".into()
        }
    );
    let fx = update(&mut m, key(KeyCode::Enter));
    assert!(fx.is_empty());
    assert_eq!(m.flow.stage, Stage::Refused);
    let p = m.flow.problem.clone().unwrap();
    assert_eq!(p.what, "The override text did not match");
    assert_eq!(p.next, format!("Type exactly: {PHRASE}"));
    // Esc closes; o again, type it right.
    update(&mut m, key(KeyCode::Esc));
    assert_eq!(m.overlay, Overlay::None);
    update(&mut m, ch('o'));
    for c in PHRASE.chars() {
        update(&mut m, ch(c));
    }
    let fx = update(&mut m, key(KeyCode::Enter));
    assert_eq!(
        fx,
        vec![Effect::CheckPackage {
            token: 2,
            device: Some(id),
            package: PathBuf::from("/pkgs/RM502QAEAAR13A02M4G.zip"),
            modem_revision: Some("RM502QAEAAR11A03M4G".into()),
            override_phrase: Some(PHRASE.into()),
        }]
    );
    assert_eq!(m.flow.stage, Stage::Checking);
    assert_eq!(m.overlay, Overlay::None);
    check_answer(&mut m, review(true, not_checked()), 900);
    assert_eq!(m.flow.stage, Stage::Ready);
}

#[test]
fn a_refusal_without_an_override_offers_no_input() {
    let mut m = model();
    update(&mut m, appear(0, &edl(3)));
    update(&mut m, key(KeyCode::Enter));
    check_answer(&mut m, review(false, refused(None)), 300);
    assert_eq!(m.flow.stage, Stage::Refused);
    update(&mut m, ch('o'));
    assert_eq!(m.overlay, Overlay::None);
    assert!(m.notice.is_some());
    assert!(!m.flow.problem.clone().unwrap().next.contains("press o"));
}

#[test]
fn confirm_flashes_at_once_when_the_modem_is_present_in_edl() {
    let (mut m, id, d) = ready_with_present_edl();
    update(&mut m, ch('f'));
    assert_eq!(m.overlay, Overlay::ConfirmFlash);
    // Esc goes back without flashing.
    let fx = update(&mut m, key(KeyCode::Esc));
    assert!(fx.is_empty());
    assert_eq!(m.overlay, Overlay::None);
    assert_eq!(m.flow.stage, Stage::Ready);
    update(&mut m, ch('f'));
    let fx = update(&mut m, ch('y'));
    assert_eq!(
        fx,
        vec![Effect::StartFlash {
            job: JobId(1),
            plan: 7,
            device: id,
            snapshot: d,
        }]
    );
    assert_eq!(
        m.flow.stage,
        Stage::Flashing {
            job: JobId(1),
            pins: false
        }
    );
    assert_eq!(m.next_job, 2);
    assert_eq!(m.flash.as_ref().unwrap().job, JobId(1));
    assert_eq!(m.tick_interval_ms(), Some(TICK_FAST_MS));
}

#[test]
fn confirm_arms_the_catch_and_the_next_window_starts_the_flash_in_the_same_update() {
    let mut m = model();
    let d = edl(3);
    looping_edl(&mut m, &d);
    let id = id_of(&m, 3);
    // Absent (between windows): identify on the next appearance.
    let fx = update(&mut m, key(KeyCode::Enter));
    assert!(
        matches!(fx.as_slice(), [Effect::CheckPackage { .. }]),
        "{fx:?}"
    );
    assert!(m.flow.identify_pending);
    assert_eq!(m.flow.problem, None, "a 9008 loop is the EDL path");
    check_answer(&mut m, review(true, not_checked()), 38_500);
    update(&mut m, ch('f'));
    let fx = update(&mut m, ch('y'));
    assert!(fx.is_empty());
    assert_eq!(
        m.flow.stage,
        Stage::Armed {
            since_ms: 38_500,
            pins: false
        }
    );
    assert_eq!(m.tick_interval_ms(), Some(TICK_COUNTDOWN_MS));
    update(&mut m, tick(38_500));
    let text = m.workflow_text();
    assert_eq!(text.title, "Waiting for the next window");
    assert_eq!(
        text.next,
        "Expected in 3.5 s; the upload starts the moment it appears."
    );
    let fx = update(&mut m, tick(41_000));
    assert!(fx.is_empty());
    // The window opens: the flash starts in the same update, no identify competes for it.
    let fx = update(&mut m, appear(42_100, &d));
    assert_eq!(
        fx,
        vec![Effect::StartFlash {
            job: JobId(1),
            plan: 7,
            device: id,
            snapshot: d.clone(),
        }]
    );
    assert_eq!(m.flow.seen_ms, Some(42_100));
    assert!(!m.flow.identify_pending);
}

#[test]
fn a_window_closing_soon_is_not_used_the_next_one_is() {
    let mut m = model();
    let d = edl(3);
    looping_edl(&mut m, &d);
    update(&mut m, appear(42_000, &d));
    let id = id_of(&m, 3);
    let fx = update(&mut m, key(KeyCode::Enter));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Identify { device, .. } if *device == id)),
        "{fx:?}"
    );
    check_answer(&mut m, review(true, not_checked()), 49_500);
    // The window opened at 42 s closes at about 52 s: 2.5 s left is too short.
    update(&mut m, ch('f'));
    let fx = update(&mut m, ch('y'));
    assert!(fx.is_empty(), "{fx:?}");
    assert!(matches!(m.flow.stage, Stage::Armed { pins: false, .. }));
    assert!(
        m.workflow_text().next.contains("too short"),
        "{:?}",
        m.workflow_text()
    );
    let fx = update(&mut m, tick(50_000));
    assert!(fx.is_empty(), "a looping modem is not taken on a tick");
    update(&mut m, vanish(52_000, &d));
    let fx = update(&mut m, appear(56_000, &d));
    assert!(matches!(fx.as_slice(), [Effect::StartFlash { device, .. }] if *device == id));
}

#[test]
fn esc_disarms_and_enter_on_another_modem_does_not_restart_while_armed() {
    let mut m = model();
    let d = edl(3);
    looping_edl(&mut m, &d);
    update(&mut m, appear(38_100, &edl(7)));
    let first = id_of(&m, 3);
    let other = id_of(&m, 7);
    m.selected = Some(first);
    update(&mut m, key(KeyCode::Enter));
    check_answer(&mut m, review(true, not_checked()), 38_200);
    update(&mut m, ch('f'));
    update(&mut m, ch('y'));
    assert!(matches!(m.flow.stage, Stage::Armed { .. }));
    m.selected = Some(other);
    let fx = update(&mut m, key(KeyCode::Enter));
    assert!(fx.is_empty());
    assert_eq!(m.flow.device, Some(first), "the flow keeps its device");
    assert!(m.notice.as_deref().unwrap().contains("#"), "{:?}", m.notice);
    update(&mut m, key(KeyCode::Esc));
    assert_eq!(m.flow.stage, Stage::Ready);
    // Disarmed: the next window passes without a flash (the pending identify runs).
    let fx = update(&mut m, appear(42_000, &d));
    assert!(
        matches!(fx.as_slice(), [Effect::Identify { device, .. }] if *device == first),
        "{fx:?}"
    );
    // Ready is not destructive: Enter on the other modem restarts the flow for it.
    let fx = update(&mut m, key(KeyCode::Enter));
    assert!(
        matches!(fx.first(), Some(Effect::CheckPackage { device: Some(d), .. }) if *d == other)
    );
    assert_eq!(m.flow.device, Some(other));
    assert_eq!(m.flow.stage, Stage::Checking);
}

#[test]
fn pin_screen_bells_on_9008_seen_and_on_the_programmer_upload() {
    let mut m = model();
    let d = edl(3);
    looping_edl(&mut m, &d);
    update(&mut m, key(KeyCode::Enter));
    check_answer(&mut m, review(true, not_checked()), 38_500);
    update(&mut m, ch('f'));
    update(&mut m, ch('y'));
    update(&mut m, ch('p'));
    assert!(matches!(
        m.flow.stage,
        Stage::Armed {
            pins: true,
            since_ms: 38_500
        }
    ));
    let fx = update(&mut m, appear(42_000, &d));
    let job = match fx.as_slice() {
        [Effect::StartFlash { job, .. }, Effect::Bell] => *job,
        other => panic!("{other:?}"),
    };
    assert_eq!(m.flow.stage, Stage::Flashing { job, pins: true });
    update(&mut m, engine(job, 42_010, plan_event()));
    let fx = update(
        &mut m,
        engine(
            job,
            42_020,
            EngineEvent::StepStarted {
                index: 0,
                kind: StepKind::SaharaUpload,
                name: "programmer".into(),
                bytes: 600_000,
            },
        ),
    );
    assert!(fx.is_empty());
    let fx = update(
        &mut m,
        engine(
            job,
            42_400,
            EngineEvent::StepFinished {
                index: 0,
                bytes: 600_000,
                elapsed_ms: 380,
                bytes_per_s: 1.5e6,
            },
        ),
    );
    assert_eq!(fx, vec![Effect::Bell]);
    assert_eq!(m.flow.uploaded_ms, Some(42_400));
    assert_eq!(m.pin_phase(), Some(PinPhase::Uploaded));

    // Without the bell configured, the same moments are silent.
    let mut m = Model::new(Config {
        bell: false,
        ..config()
    });
    looping_edl(&mut m, &d);
    update(&mut m, key(KeyCode::Enter));
    check_answer(&mut m, review(true, not_checked()), 38_500);
    update(&mut m, ch('p'));
    update(&mut m, ch('y'));
    let fx = update(&mut m, appear(42_000, &d));
    assert!(
        matches!(fx.as_slice(), [Effect::StartFlash { .. }]),
        "{fx:?}"
    );
    assert!(!has_bell(&fx));
}

#[test]
fn engine_events_fill_rows_progress_and_skip_after_a_failure() {
    let (mut m, _, job) = flashing();
    update(&mut m, engine(job, 2_000, plan_event()));
    let f = m.flash.as_ref().unwrap();
    assert_eq!(f.rows.len(), 4);
    assert!(f.rows.iter().all(|r| r.state == RowState::Pending));
    assert_eq!(f.total_bytes, 600_000 + (1 << 20) + (40 << 20));
    // Events of another job are not ours.
    update(
        &mut m,
        engine(
            JobId(99),
            2_001,
            EngineEvent::StepStarted {
                index: 0,
                kind: StepKind::SaharaUpload,
                name: "programmer".into(),
                bytes: 600_000,
            },
        ),
    );
    assert_eq!(m.flash.as_ref().unwrap().rows[0].state, RowState::Pending);
    update(
        &mut m,
        engine(
            job,
            2_010,
            EngineEvent::StepStarted {
                index: 0,
                kind: StepKind::SaharaUpload,
                name: "programmer".into(),
                bytes: 600_000,
            },
        ),
    );
    assert_eq!(m.flash.as_ref().unwrap().active().unwrap().index, 0);
    update(
        &mut m,
        engine(
            job,
            2_400,
            EngineEvent::StepFinished {
                index: 0,
                bytes: 600_000,
                elapsed_ms: 390,
                bytes_per_s: 1.5e6,
            },
        ),
    );
    let f = m.flash.as_ref().unwrap();
    assert_eq!(
        f.rows[0].state,
        RowState::Done {
            elapsed_ms: 390,
            bytes_per_s: 1.5e6
        }
    );
    let after_upload = f.overall;
    let expected = 600_000.0 / (600_000.0 + f64::from(1 << 20) + f64::from(40 << 20) + 65_536.0);
    assert!(
        (after_upload - expected).abs() < 1e-9,
        "{after_upload} vs {expected}"
    );
    assert_eq!(m.flow.uploaded_ms, Some(2_400));
    update(
        &mut m,
        engine(
            job,
            2_410,
            EngineEvent::StepStarted {
                index: 1,
                kind: StepKind::Program,
                name: "sbl".into(),
                bytes: 1 << 20,
            },
        ),
    );
    update(
        &mut m,
        engine(
            job,
            2_500,
            EngineEvent::Progress {
                index: 1,
                done: 1 << 19,
                total: 1 << 20,
                bytes_per_s: 5.0e6,
                eta_s: Some(0.1),
                overall: 0.025,
            },
        ),
    );
    let f = m.flash.as_ref().unwrap();
    assert_eq!(f.rows[1].done, 1 << 19);
    assert_eq!(f.rows[1].bytes_per_s, 5.0e6);
    assert_eq!(f.rows[1].eta_s, Some(0.1));
    assert_eq!(f.overall, 0.025);
    for i in 0..(DEVICE_LOG_LIMIT + 5) {
        update(
            &mut m,
            engine(
                job,
                2_600,
                EngineEvent::Log {
                    message: format!("line {i}"),
                },
            ),
        );
    }
    let log = &m.flash.as_ref().unwrap().device_log;
    assert_eq!(log.len(), DEVICE_LOG_LIMIT);
    assert_eq!(log.first().unwrap(), "line 5");
    assert_eq!(
        log.last().unwrap(),
        &format!("line {}", DEVICE_LOG_LIMIT + 4)
    );
    update(
        &mut m,
        engine(
            job,
            2_700,
            EngineEvent::StepFailed {
                index: 1,
                what: "The programmer answered NAK to program sbl".into(),
                why: "the write was refused".into(),
                next: "power-cycle and flash again".into(),
            },
        ),
    );
    let f = m.flash.as_ref().unwrap();
    assert!(
        matches!(&f.rows[1].state, RowState::Failed { problem } if problem.what.contains("NAK"))
    );
    assert_eq!(f.rows[2].state, RowState::Skipped);
    assert_eq!(f.rows[3].state, RowState::Skipped);
    assert!(matches!(f.rows[0].state, RowState::Done { .. }));
    update(
        &mut m,
        engine(
            job,
            2_710,
            EngineEvent::Done {
                ok: false,
                bytes: 600_000 + (1 << 19),
                elapsed_ms: 700,
            },
        ),
    );
    assert_eq!(m.flash.as_ref().unwrap().ok, Some(false));
    assert!(
        matches!(m.flow.stage, Stage::Flashing { .. }),
        "the job has not ended yet"
    );
    let problem = Problem {
        what: "Flashing sbl failed".into(),
        why: "NAK".into(),
        next: "power-cycle and flash again".into(),
    };
    let fx = update(
        &mut m,
        Msg::JobEnded {
            job,
            result: Err(problem.clone()),
            t_ms: 2_720,
        },
    );
    assert_eq!(fx, vec![Effect::Bell]);
    assert_eq!(
        m.flow.stage,
        Stage::Finished(Outcome::Failed {
            problem: problem.clone()
        })
    );
    assert_eq!(m.flow.problem, Some(problem));
    assert_eq!(m.tick_interval_ms(), None);
    assert_eq!(m.workflow_text().title, "Flash failed: Flashing sbl failed");
}

/// Run the plan through to `Done { ok: true }` at `t_ms`.
fn flash_through(m: &mut Model, job: JobId, t_ms: u64) {
    update(m, engine(job, t_ms - 100, plan_event()));
    for (i, bytes) in [(0usize, 600_000u64), (1, 1 << 20), (2, 40 << 20), (3, 0)] {
        update(
            m,
            engine(
                job,
                t_ms - 50,
                EngineEvent::StepStarted {
                    index: i,
                    kind: StepKind::Program,
                    name: String::new(),
                    bytes,
                },
            ),
        );
        update(
            m,
            engine(
                job,
                t_ms - 40,
                EngineEvent::StepFinished {
                    index: i,
                    bytes,
                    elapsed_ms: 10,
                    bytes_per_s: 1.0,
                },
            ),
        );
    }
    update(
        m,
        engine(
            job,
            t_ms,
            EngineEvent::Done {
                ok: true,
                bytes: 600_000 + (1 << 20) + (40 << 20),
                elapsed_ms: 5_000,
            },
        ),
    );
}

#[test]
fn verified_only_when_the_modem_comes_back_in_normal_mode() {
    let (mut m, id, job) = flashing();
    flash_through(&mut m, job, 10_000);
    assert_eq!(m.flow.stage, Stage::Verifying { since_ms: 10_000 });
    assert_eq!(m.flash.as_ref().unwrap().overall, 1.0);
    let fx = update(
        &mut m,
        Msg::JobEnded {
            job,
            result: Ok(()),
            t_ms: 10_010,
        },
    );
    assert!(fx.is_empty());
    assert_eq!(m.flow.stage, Stage::Verifying { since_ms: 10_000 });
    assert_eq!(m.tick_interval_ms(), Some(TICK_SLOW_MS));
    // The reset: 9008 leaves, the modem boots into normal mode at the same port; it is asked
    // over AT before anything is decided.
    update(&mut m, vanish(10_200, &edl(3)));
    let fx = update(&mut m, appear(22_000, &normal_ported(3)));
    assert!(
        matches!(fx.as_slice(), [Effect::IdentifyNormal { device, .. }] if *device == id),
        "{fx:?}"
    );
    assert!(matches!(m.flow.stage, Stage::Verifying { .. }));
    assert!(m.flow.at_pending);
    assert_eq!(m.workflow_text().title, "Verifying: asking it over AT");
    // The verification deadline does not cut the answer off.
    assert!(update(&mut m, tick(500_000)).is_empty());
    let fx = update(
        &mut m,
        identified(
            id,
            at_id(IMEI, 1, "RM502QAEAAR13A02M4G_01.001.01.001"),
            22_500,
        ),
    );
    assert_eq!(fx, vec![Effect::Bell]);
    match &m.flow.stage {
        Stage::Finished(Outcome::Verified { detail }) => {
            assert!(detail.contains("back in normal mode"), "{detail}");
            assert!(detail.contains("+CFUN: 1"), "{detail}");
            assert!(detail.contains("runs RM502QAEAAR13A02M4G"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(m.flow.verdict.as_ref().unwrap().is_verified());
    assert_eq!(m.flow.device, Some(id));
    assert_eq!(m.tick_interval_ms(), None);
}

#[test]
fn a_modem_that_comes_back_without_calibration_is_not_verified_with_what_to_do() {
    let (mut m, id, job) = flashing();
    flash_through(&mut m, job, 10_000);
    update(&mut m, vanish(10_200, &edl(3)));
    update(&mut m, appear(12_000, &normal_ported(3)));
    let mut after = at_id(IMEI, 5, "RM502QAEAAR13A02M4G_01.001.01.001");
    after.imei = None;
    update(&mut m, identified(id, after, 12_500));
    match &m.flow.stage {
        Stage::Finished(Outcome::NotVerified { what_failed, next }) => {
            assert!(what_failed.contains("+CFUN: 5"), "{what_failed}");
            assert!(what_failed.contains("IMEI"), "{what_failed}");
            assert!(next.contains("restore"), "{next}");
        }
        other => panic!("{other:?}"),
    }
    // An AT port that does not answer is not verified either.
    let (mut m, id, job) = flashing();
    flash_through(&mut m, job, 10_000);
    update(&mut m, appear(12_000, &normal_ported(3)));
    update(
        &mut m,
        Msg::NormalIdentified {
            device: id,
            result: Err(Problem {
                what: "The AT port did not answer".into(),
                why: String::new(),
                next: String::new(),
            }),
            t_ms: 12_500,
        },
    );
    assert!(
        matches!(&m.flow.stage, Stage::Finished(Outcome::NotVerified { what_failed, .. }) if what_failed.contains("did not answer")),
        "{:?}",
        m.flow.stage
    );
}

#[test]
fn a_running_modem_is_identified_over_at_checked_against_its_revision_and_switched_over_diag() {
    let mut m = Model::new(Config {
        modem_revision: None,
        ..config()
    });
    update(&mut m, appear(0, &normal_ported(5)));
    let id = id_of(&m, 5);
    let fx = update(&mut m, key(KeyCode::Enter));
    // Who it is first; the check waits for the revision.
    assert!(
        matches!(fx.as_slice(), [Effect::IdentifyNormal { device, .. }] if *device == id),
        "{fx:?}"
    );
    assert_eq!(m.flow.stage, Stage::Checking);
    assert_eq!(m.flow.problem, None);
    let fx = update(
        &mut m,
        identified(id, at_id(IMEI, 1, "RM502QAEAAR13A01M4G_01.001.01.001"), 300),
    );
    match fx.as_slice() {
        [Effect::CheckPackage { modem_revision, .. }] => assert_eq!(
            modem_revision.as_deref(),
            Some("RM502QAEAAR13A01M4G_01.001.01.001")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.at_identities[&id].id.imei.as_ref().unwrap().digits, IMEI);
    check_answer(&mut m, review(true, not_checked()), 500);
    assert_eq!(m.flow.stage, Stage::Ready);
    update(&mut m, ch('f'));
    // The plan first, then the switch, each confirmed.
    assert!(update(&mut m, ch('y')).is_empty());
    assert_eq!(m.overlay, Overlay::ConfirmSwitch);
    assert_eq!(m.flow.stage, Stage::Ready);
    assert!(m.key_hints().iter().any(|h| h.key == "p"));
    let fx = update(&mut m, ch('y'));
    assert!(
        matches!(fx.as_slice(), [Effect::SwitchToEdl { device, .. }] if *device == id),
        "{fx:?}"
    );
    assert_eq!(
        m.flow.stage,
        Stage::Armed {
            since_ms: 500,
            pins: false
        }
    );
    assert_eq!(
        m.workflow_text().title,
        "Switching to EDL over DIAG: waiting for 9008"
    );
    update(
        &mut m,
        Msg::Switched {
            device: id,
            result: Ok(()),
            t_ms: 600,
        },
    );
    // It re-enumerates as 9008: the confirmed flash starts.
    update(&mut m, vanish(1_500, &normal_ported(5)));
    let fx = update(&mut m, appear(2_600, &edl(5)));
    assert!(
        fx.iter().any(|e| matches!(e, Effect::StartFlash { .. })),
        "{fx:?}"
    );
    let job = m.running_job().unwrap();
    flash_through(&mut m, job, 10_000);
    let back = m.flow.device.unwrap();
    update(&mut m, vanish(10_100, &edl(5)));
    update(&mut m, appear(12_000, &normal_ported(5)));
    // Same IMEI as before, full function, the package's revision: verified.
    update(
        &mut m,
        identified(
            back,
            at_id(IMEI, 1, "RM502QAEAAR13A02M4G_01.001.01.001"),
            12_400,
        ),
    );
    match &m.flow.stage {
        Stage::Finished(Outcome::Verified { detail }) => {
            assert!(detail.contains(&format!("same IMEI {IMEI}")), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_diag_switch_says_so_and_offers_the_pins() {
    let mut m = model();
    update(&mut m, appear(0, &normal_ported(5)));
    let id = id_of(&m, 5);
    let fx = update(&mut m, key(KeyCode::Enter));
    // A revision given on the command line: checked at once, identified as well.
    assert_eq!(fx.len(), 2, "{fx:?}");
    update(
        &mut m,
        identified(id, at_id(IMEI, 1, "RM502QAEAAR13A01M4G"), 100),
    );
    check_answer(&mut m, review(true, not_checked()), 500);
    update(&mut m, ch('f'));
    update(&mut m, ch('y'));
    // `p` in the switch question: the pin screen instead.
    update(&mut m, ch('p'));
    assert_eq!(m.pin_phase(), Some(PinPhase::Waiting));
    update(&mut m, key(KeyCode::Esc));
    assert_eq!(m.flow.stage, Stage::Ready);
    update(&mut m, ch('f'));
    update(&mut m, ch('y'));
    update(&mut m, ch('y'));
    update(
        &mut m,
        Msg::Switched {
            device: id,
            result: Err(Problem {
                what: "The modem did not answer on its DM port".into(),
                why: "no DIAG".into(),
                next: "Retry.".into(),
            }),
            t_ms: 900,
        },
    );
    let p = m.flow.problem.clone().unwrap();
    assert!(p.next.contains("press p for the pin screen"), "{p:?}");
    assert!(!m.flow.switching);
}

#[test]
fn not_verified_when_it_comes_back_in_edl_or_not_at_all() {
    let (mut m, _, job) = flashing();
    flash_through(&mut m, job, 10_000);
    update(&mut m, vanish(10_200, &edl(3)));
    let fx = update(&mut m, appear(14_000, &edl(3)));
    assert_eq!(fx, vec![Effect::Bell]);
    match &m.flow.stage {
        Stage::Finished(Outcome::NotVerified { what_failed, next }) => {
            assert!(
                what_failed.contains("did not come back in normal mode")
                    && what_failed.contains("last seen: EDL"),
                "{what_failed}"
            );
            assert!(next.contains("flash again"), "{next}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.workflow_text().title, "Flashed, NOT verified");

    let (mut m, _, job) = flashing();
    flash_through(&mut m, job, 10_000);
    update(&mut m, vanish(10_200, &edl(3)));
    let fx = update(&mut m, tick(129_999));
    assert!(fx.is_empty());
    assert!(matches!(m.flow.stage, Stage::Verifying { .. }));
    assert!(
        m.workflow_text().next.contains("119 s of 2 min"),
        "{:?}",
        m.workflow_text()
    );
    let fx = update(&mut m, tick(130_000));
    assert_eq!(fx, vec![Effect::Bell]);
    match &m.flow.stage {
        Stage::Finished(Outcome::NotVerified { what_failed, next }) => {
            assert_eq!(
                what_failed,
                "the modem did not come back in normal mode within 120 s (not seen at all)"
            );
            assert!(next.contains("power-cycle"), "{next}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn quitting_during_a_flash_asks_first() {
    let (mut m, _, job) = flashing();
    let fx = update(&mut m, ch('q'));
    assert!(fx.is_empty());
    assert_eq!(m.overlay, Overlay::ConfirmQuit);
    let fx = update(&mut m, key(KeyCode::Esc));
    assert!(fx.is_empty());
    assert_eq!(m.overlay, Overlay::None);
    assert!(matches!(m.flow.stage, Stage::Flashing { .. }));
    // Ctrl-C behaves like q; a second Ctrl-C does not confirm.
    update(&mut m, ctrl_c());
    assert_eq!(m.overlay, Overlay::ConfirmQuit);
    let fx = update(&mut m, ctrl_c());
    assert!(fx.is_empty());
    let fx = update(&mut m, ch('y'));
    assert_eq!(
        fx,
        vec![Effect::Cancel { job }, Effect::Quit { cancel_jobs: true }]
    );
    assert!(m.quit_sent);
}

#[test]
fn c_stops_the_flash_after_confirmation_and_the_end_reads_cancelled() {
    let (mut m, _, job) = flashing();
    update(&mut m, engine(job, 2_000, plan_event()));
    update(
        &mut m,
        engine(
            job,
            2_010,
            EngineEvent::StepStarted {
                index: 0,
                kind: StepKind::SaharaUpload,
                name: "programmer".into(),
                bytes: 600_000,
            },
        ),
    );
    update(
        &mut m,
        engine(
            job,
            2_300,
            EngineEvent::StepFinished {
                index: 0,
                bytes: 600_000,
                elapsed_ms: 290,
                bytes_per_s: 2.0e6,
            },
        ),
    );
    let fx = update(&mut m, ch('c'));
    assert!(fx.is_empty());
    assert_eq!(m.overlay, Overlay::ConfirmCancel);
    let fx = update(&mut m, ch('y'));
    assert_eq!(fx, vec![Effect::Cancel { job }]);
    assert!(!m.quit_sent);
    let fx = update(
        &mut m,
        Msg::JobEnded {
            job,
            result: Err(Problem {
                what: "Cancelled".into(),
                why: "the person stopped it".into(),
                next: "flash again".into(),
            }),
            t_ms: 2_500,
        },
    );
    assert_eq!(fx, vec![Effect::Bell]);
    match &m.flow.stage {
        Stage::Finished(Outcome::Cancelled { detail }) => {
            assert!(detail.contains("after programmer"), "{detail}");
            assert!(detail.contains("half-written"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let rows = &m.flash.as_ref().unwrap().rows;
    assert!(rows[1..].iter().all(|r| r.state == RowState::Skipped));
}

#[test]
fn q_quits_at_once_when_nothing_runs_and_help_takes_any_key() {
    let mut m = model();
    update(&mut m, ch('?'));
    assert_eq!(m.overlay, Overlay::Help);
    let fx = update(&mut m, ch('q'));
    assert!(fx.is_empty(), "the key only closes help");
    assert_eq!(m.overlay, Overlay::None);
    update(&mut m, key(KeyCode::F(1)));
    assert_eq!(m.overlay, Overlay::Help);
    update(&mut m, key(KeyCode::Esc));
    assert_eq!(m.overlay, Overlay::None);
    let fx = update(&mut m, ch('q'));
    assert_eq!(fx, vec![Effect::Quit { cancel_jobs: false }]);
    let fx = update(&mut m, ch('q'));
    assert!(fx.is_empty(), "Quit is asked once");
}

#[test]
fn hangup_quits_when_idle_and_waits_for_the_verdict_during_a_flash() {
    let mut m = model();
    let fx = update(&mut m, Msg::Hangup);
    assert!(m.headless);
    assert_eq!(fx, vec![Effect::Quit { cancel_jobs: false }]);

    let (mut m, _, job) = flashing();
    let fx = update(&mut m, Msg::Hangup);
    assert!(fx.is_empty());
    assert!(m.headless);
    flash_through(&mut m, job, 10_000);
    let fx = update(
        &mut m,
        Msg::JobEnded {
            job,
            result: Ok(()),
            t_ms: 10_010,
        },
    );
    assert!(fx.is_empty(), "still verifying");
    update(&mut m, vanish(10_200, &edl(3)));
    let fx = update(&mut m, appear(20_000, &normal_ported(3)));
    assert!(
        matches!(fx.as_slice(), [Effect::IdentifyNormal { .. }]),
        "still verifying: {fx:?}"
    );
    let id = m.flow.device.unwrap();
    let fx = update(
        &mut m,
        identified(id, at_id(IMEI, 1, "RM502QAEAAR13A02M4G"), 20_400),
    );
    assert_eq!(fx, vec![Effect::Bell, Effect::Quit { cancel_jobs: false }]);
    assert!(matches!(
        m.flow.stage,
        Stage::Finished(Outcome::Verified { .. })
    ));
}

#[test]
fn terminate_cancels_a_running_flash() {
    let (mut m, _, job) = flashing();
    let fx = update(&mut m, Msg::Terminate);
    assert_eq!(
        fx,
        vec![Effect::Cancel { job }, Effect::Quit { cancel_jobs: true }]
    );
    let mut m = model();
    let fx = update(&mut m, Msg::Terminate);
    assert_eq!(fx, vec![Effect::Quit { cancel_jobs: false }]);
}

#[test]
fn identify_waits_for_the_next_appearance_of_an_absent_modem() {
    let mut m = model();
    let d = edl(3);
    looping_edl(&mut m, &d);
    let id = id_of(&m, 3);
    update(&mut m, key(KeyCode::Enter));
    assert!(m.flow.identify_pending);
    let fx = update(&mut m, appear(42_000, &d));
    assert_eq!(
        fx,
        vec![Effect::Identify {
            device: id,
            snapshot: d.clone()
        }]
    );
    assert!(!m.flow.identify_pending);
    update(&mut m, vanish(52_000, &d));
    let fx = update(&mut m, appear(56_000, &d));
    assert!(fx.is_empty(), "identified once");
}

#[test]
fn a_finished_flow_restarts_on_enter_and_demo_keys_reach_the_bench() {
    let (mut m, id, job) = flashing();
    update(
        &mut m,
        Msg::JobEnded {
            job,
            result: Err(Problem {
                what: "The port could not be opened".into(),
                why: "busy".into(),
                next: "stop ModemManager".into(),
            }),
            t_ms: 3_000,
        },
    );
    assert!(matches!(
        m.flow.stage,
        Stage::Finished(Outcome::Failed { .. })
    ));
    let fx = update(&mut m, key(KeyCode::Enter));
    assert!(matches!(fx.first(), Some(Effect::CheckPackage { device: Some(d), .. }) if *d == id));
    assert_eq!(m.flow.stage, Stage::Checking);
    assert!(m.flash.is_none());
    // Outside the demo b and r do nothing.
    assert!(update(&mut m, ch('b')).is_empty());
    let mut m = Model::new(Config {
        demo: Some(DemoInfo {
            scenario: "unbrick".into(),
            about: "a 9008 loop".into(),
        }),
        ..config()
    });
    assert_eq!(
        update(&mut m, ch('b')),
        vec![Effect::Bench(BenchAction::BridgePinsAndPowerCycle)]
    );
    assert_eq!(
        update(&mut m, ch('r')),
        vec![Effect::Bench(BenchAction::ReleasePins)]
    );
}

#[test]
fn log_scrolling_keys_act_only_with_the_log_focused() {
    let mut m = model();
    m.height = 30;
    update(&mut m, key(KeyCode::PageUp));
    assert_eq!(m.log_scroll, 0);
    update(&mut m, key(KeyCode::Tab));
    update(&mut m, key(KeyCode::PageUp));
    assert_eq!(m.log_scroll, 15);
    update(&mut m, key(KeyCode::PageDown));
    assert_eq!(m.log_scroll, 0);
    update(&mut m, key(KeyCode::Home));
    assert_eq!(m.log_scroll, u16::MAX);
    update(&mut m, key(KeyCode::End));
    assert_eq!(m.log_scroll, 0);
    update(&mut m, key(KeyCode::BackTab));
    assert_eq!(m.focus, Focus::Devices);
}

#[test]
fn crash_dump_while_armed_is_explained_and_the_catch_stays() {
    let mut m = model();
    let d = edl(3);
    looping_edl(&mut m, &d);
    update(&mut m, key(KeyCode::Enter));
    check_answer(&mut m, review(true, not_checked()), 38_500);
    update(&mut m, ch('f'));
    update(&mut m, ch('y'));
    let c = {
        let mut c = crash(3);
        c.product = d.product.clone();
        c
    };
    let fx = update(&mut m, appear(42_000, &c));
    assert!(fx.is_empty());
    assert!(matches!(m.flow.stage, Stage::Armed { .. }));
    assert!(m.flow.problem.as_ref().unwrap().what.contains("900e"));
    assert_eq!(
        m.present(id_of(&m, 3)).map(|(_, c)| c.mode),
        Some(Mode::CrashDump)
    );
}

mod props {
    use proptest::prelude::*;

    use super::*;

    /// One step of a random session.
    #[derive(Debug, Clone)]
    enum Op {
        Appear(u8, u8),
        Vanish(u8, u8),
        Key(char),
        Special(u8),
        Tick(u16),
        Checked(bool, bool),
        Engine(u8, u8, u32),
        Ended(bool),
        Identified(u8),
        Hangup,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Weighted towards the rescue's path (modems, Enter, f/y, engine events), with quits
        // and hangups rare so that sessions get far.
        prop_oneof![
            4 => (0u8..3, 0u8..3).prop_map(|(p, m)| Op::Appear(p, m)),
            2 => (0u8..3, 0u8..3).prop_map(|(p, m)| Op::Vanish(p, m)),
            6 => prop::sample::select(vec!['y', 'f', 'p', 'y', 'f', 'n', 'o', 'c', 'j', 'k', 'b', 'r'])
                .prop_map(Op::Key),
            1 => Just(Op::Key('q')),
            4 => (0u8..8).prop_map(Op::Special),
            3 => any::<u16>().prop_map(Op::Tick),
            3 => (prop::bool::weighted(0.8), prop::bool::weighted(0.7))
                .prop_map(|(a, b)| Op::Checked(a, b)),
            6 => (0u8..8, 0u8..6, any::<u32>()).prop_map(|(k, i, n)| Op::Engine(k, i, n)),
            1 => any::<bool>().prop_map(Op::Ended),
            1 => (0u8..4).prop_map(Op::Identified),
            1 => Just(Op::Hangup),
        ]
    }

    fn snapshot(port: u8, mode: u8) -> DeviceSnapshot {
        let port = 3 + port;
        match mode {
            0 => edl(port),
            1 => normal(port),
            _ => crash(port),
        }
    }

    fn engine_event(kind: u8, index: u8, n: u32) -> EngineEvent {
        let index = usize::from(index);
        let n = u64::from(n);
        match kind {
            0 => plan_event(),
            1 => EngineEvent::StepStarted {
                index,
                kind: StepKind::Program,
                name: "x".into(),
                bytes: n,
            },
            2 => EngineEvent::Progress {
                index,
                done: n,
                total: n / 2,
                bytes_per_s: f64::NAN,
                eta_s: None,
                overall: n as f64,
            },
            3 => EngineEvent::StepFinished {
                index,
                bytes: n,
                elapsed_ms: n,
                bytes_per_s: 1.0,
            },
            4 => EngineEvent::StepFailed {
                index,
                what: "w".into(),
                why: "y".into(),
                next: "n".into(),
            },
            5 => EngineEvent::Log {
                message: n.to_string(),
            },
            _ => EngineEvent::Done {
                ok: n % 2 == 0,
                bytes: n,
                elapsed_ms: n,
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any session: no panic, Quit at most once, nothing flashed without `y` on the plan
        /// confirmation and a flashable review, no bench action outside the demo, and a tick
        /// never repaints a screen with nothing time-dependent on it.
        #[test]
        fn any_session_keeps_the_safety_rules(ops in prop::collection::vec(op(), 1..120)) {
            let mut m = model();
            let mut t = 0u64;
            let mut quits = 0;
            let mut confirmed = false;
            for op in ops {
                t += 50;
                let confirm_key = m.overlay == Overlay::ConfirmFlash && matches!(op, Op::Key('y'));
                let flashable = m.flow.review.as_ref().is_some_and(|r| r.verdict.flashable);
                let job = m.flash.as_ref().map(|f| f.job).unwrap_or(JobId(1));
                let msg = match op {
                    Op::Appear(p, k) => appear(t, &snapshot(p, k)),
                    Op::Vanish(p, k) => vanish(t, &snapshot(p, k)),
                    Op::Key(c) => ch(c),
                    Op::Special(k) => key(match k {
                        0..=2 => KeyCode::Enter,
                        3 => KeyCode::Esc,
                        4 => KeyCode::Tab,
                        5 => KeyCode::Backspace,
                        6 => KeyCode::Up,
                        _ => KeyCode::F(1),
                    }),
                    Op::Tick(d) => {
                        t += u64::from(d) * 10;
                        tick(t)
                    }
                    Op::Checked(ok, flash) => {
                        let compat = if flash { not_checked() } else { refused(Some(PHRASE)) };
                        Msg::Checked {
                            token: m.flow.check_token,
                            result: if ok {
                                Ok(Box::new(review(flash, compat)))
                            } else {
                                Err(no_problem())
                            },
                            t_ms: t,
                        }
                    }
                    Op::Engine(k, i, n) => engine(job, t, engine_event(k, i, n)),
                    Op::Ended(ok) => Msg::JobEnded {
                        job,
                        result: if ok { Ok(()) } else { Err(no_problem()) },
                        t_ms: t,
                    },
                    Op::Identified(d) => Msg::Identified {
                        device: DeviceId(u32::from(d)),
                        result: Ok(DeviceInfo::default()),
                        t_ms: t,
                    },
                    Op::Hangup => Msg::Hangup,
                };
                let is_tick = matches!(msg, Msg::Tick { .. });
                let idle = !m.animating();
                m.dirty = false;
                let fx = update(&mut m, msg);
                if is_tick && idle && fx.is_empty() {
                    prop_assert!(!m.dirty, "an idle tick repainted");
                }
                if confirm_key && flashable {
                    confirmed = true;
                }
                for e in &fx {
                    match e {
                        Effect::Quit { .. } => quits += 1,
                        Effect::StartFlash { plan, .. } => {
                            prop_assert!(confirmed, "a flash without confirmation");
                            prop_assert_eq!(*plan, 7);
                        }
                        Effect::Bench(_) => prop_assert!(false, "bench outside the demo"),
                        _ => {}
                    }
                }
                if let Some(f) = &m.flash {
                    prop_assert!((0.0..=1.0).contains(&f.overall));
                    prop_assert!(f.device_log.len() <= DEVICE_LOG_LIMIT);
                }
                // Disarming, a refusal or a finished flow needs a fresh confirmation.
                if !matches!(m.flow.stage, Stage::Armed { .. } | Stage::Flashing { .. }) {
                    confirmed = false;
                }
            }
            prop_assert!(quits <= 1);
        }
    }

    fn no_problem() -> Problem {
        Problem {
            what: "w".into(),
            why: "y".into(),
            next: "n".into(),
        }
    }
}

#[test]
fn a_single_mode_switch_is_no_suspected_loop_but_a_repeat_is() {
    let mut m = model();
    update(&mut m, appear(0, &normal_ported(5)));
    let id = id_of(&m, 5);
    update(&mut m, vanish(1_000, &normal_ported(5)));
    update(&mut m, appear(2_000, &edl(5)));
    assert_eq!(id_of(&m, 5), id, "one unit across the switch");
    let raw = m.loop_status(id);
    assert!(m.mode_switches_only(id));
    assert_eq!(m.shown_loop_status(id, &raw), LoopStatus::None, "{raw:?}");
    // Back in EDL once more the same way: that is how a loop starts.
    update(&mut m, vanish(3_000, &edl(5)));
    update(&mut m, appear(4_000, &edl(5)));
    assert!(!m.mode_switches_only(id));
    let raw = m.loop_status(id);
    assert_eq!(m.shown_loop_status(id, &raw), raw);
}

#[test]
fn the_headline_says_uploading_while_the_programmer_goes_up() {
    let (mut m, _, job) = flashing();
    update(&mut m, engine(job, 1_000, plan_event()));
    update(
        &mut m,
        engine(
            job,
            1_010,
            EngineEvent::StepStarted {
                index: 0,
                kind: StepKind::SaharaUpload,
                name: "programmer".into(),
                bytes: 600_000,
            },
        ),
    );
    assert!(m.uploading());
    assert_eq!(m.workflow_text().title, "Uploading the programmer");
    update(
        &mut m,
        engine(
            job,
            1_500,
            EngineEvent::StepFinished {
                index: 0,
                bytes: 600_000,
                elapsed_ms: 490,
                bytes_per_s: 1.2e6,
            },
        ),
    );
    update(
        &mut m,
        engine(
            job,
            1_510,
            EngineEvent::StepStarted {
                index: 1,
                kind: StepKind::Program,
                name: "sbl".into(),
                bytes: 1 << 20,
            },
        ),
    );
    assert!(!m.uploading());
    assert_eq!(m.workflow_text().title, "Flashing: sbl");
}

#[test]
fn esc_leaves_a_check_and_its_late_answer_is_ignored() {
    let mut m = model();
    update(&mut m, appear(0, &edl(3)));
    update(&mut m, key(KeyCode::Enter));
    assert_eq!(m.flow.stage, Stage::Checking);
    update(&mut m, key(KeyCode::Esc));
    assert_eq!(m.flow.stage, Stage::Idle);
    let fx = update(
        &mut m,
        Msg::Checked {
            token: 1,
            result: Ok(Box::new(review(true, not_checked()))),
            t_ms: 900,
        },
    );
    assert!(fx.is_empty());
    assert_eq!(m.flow.stage, Stage::Idle);
    assert_eq!(m.flow.review, None);
}
