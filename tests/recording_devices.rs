//! The committed device-timeline recordings, replayed through the same [`Monitor`] `qrescue
//! watch` uses: the 14 s 9008 boot loop is detected with its period, window and next window;
//! the normal-mode → EDL switch stays one device. Both files are made by `recordings/make.sh`
//! (`bootloop rm502q`, `switch rm502q`) from `qrescue watch --sim` against `qrescue sim`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use qrescue::device::bootloop::{LoopStatus, ModeClass};
use qrescue::device::identity::MatchRule;
use qrescue::device::monitor::{Monitor, Update};
use qrescue::device::DeviceSource;
use qrescue::record::{Recording, ReplaySource};

/// Like `qrescue watch`: events this soon after watching began describe devices already there.
const INITIAL_MS: u64 = 300;

fn recording(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recordings")
        .join(name)
}

/// Every hotplug event of the recording, at once, through a fresh monitor.
fn replay(name: &str) -> (Monitor, Vec<Update>) {
    let rec = Recording::open(&recording(name)).unwrap();
    let mut source = ReplaySource::new(&rec, 0.0);
    let mut monitor = Monitor::default();
    let mut updates = Vec::new();
    // Bounded: a replay at speed 0 never waits, and a recording holds few events.
    for _ in 0..10_000 {
        let Some(e) = source.next_event(Duration::ZERO).unwrap() else {
            break;
        };
        updates.push(if e.t_ms < INITIAL_MS {
            monitor.observe_initial(&e)
        } else {
            monitor.observe(&e)
        });
    }
    assert!(source.next_event(Duration::ZERO).unwrap().is_none());
    (monitor, updates)
}

#[test]
fn the_recorded_14_s_9008_boot_loop_is_detected_with_its_period_window_and_next_window() {
    let (monitor, ups) = replay("bootloop-9008-rm502q.jsonl");
    let appears: Vec<&Update> = ups.iter().filter(|u| u.event != "vanish").collect();
    assert!(appears.len() >= 4, "{} appearances", appears.len());
    let id = ups[0].id.expect("tracked");
    assert!(
        ups.iter().all(|u| u.id == Some(id)),
        "one device throughout"
    );
    assert!(appears
        .iter()
        .all(|u| u.class.as_ref().unwrap().tag() == "edl"));
    let detected = ups.iter().position(|u| u.loop_detected).expect("detected");
    // Within three cycles of the first live appearance (the first one was already there).
    assert!(
        ups[..=detected]
            .iter()
            .filter(|u| u.event == "appear")
            .count()
            <= 3
    );

    let last = ups.last().unwrap();
    let LoopStatus::Looping(r) = monitor.loop_status(id, last.t_ms) else {
        panic!("{:?}", monitor.loop_status(id, last.t_ms))
    };
    assert!(
        r.period_ms.abs_diff(14_000) <= 500,
        "period {}",
        r.period_ms
    );
    assert!(
        r.window_ms.abs_diff(10_000) <= 1_000,
        "window {}",
        r.window_ms
    );
    assert_eq!(r.appearances_per_period, 1);
    assert_eq!(r.mode_sequence.len(), 1);
    assert_eq!(r.mode_sequence[0].label, "05c6:9008");
    assert_eq!(r.mode_sequence[0].mode, ModeClass::Edl);
    let last_appear = appears.last().unwrap().t_ms;
    assert_eq!(r.next_appear_ms, last_appear + r.period_ms);
    assert_eq!(r.next_window_closes_ms, r.next_appear_ms + r.window_ms);
}

#[test]
fn the_recorded_normal_to_edl_switch_is_one_device_linked_by_the_companion_port() {
    let (monitor, ups) = replay("switch-normal-to-edl-rm502q.jsonl");
    let kinds: Vec<&str> = ups.iter().map(|u| u.event).collect();
    assert_eq!(kinds, ["present", "vanish", "appear"]);
    let id = ups[0].id.expect("tracked");
    assert!(
        ups.iter().all(|u| u.id == Some(id)),
        "one device throughout"
    );
    let modes: Vec<String> = ups
        .iter()
        .filter(|u| u.event != "vanish")
        .map(|u| u.class.as_ref().unwrap().tag().to_string())
        .collect();
    assert_eq!(modes, ["normal", "edl"]);
    let (normal, edl) = (
        ups[0].device.as_ref().unwrap(),
        ups[2].device.as_ref().unwrap(),
    );
    assert_eq!(normal.id(), "2c7c:0800");
    assert_eq!(edl.id(), "05c6:9008");
    // The USB 3 module comes back as USB 2 on the companion bus: another location, same port.
    match &ups[2].matched.rule {
        MatchRule::CompanionPort { from, to, gap_ms } => {
            assert_eq!(from, &normal.location());
            assert_eq!(to, &edl.location());
            assert_ne!(from, to);
            assert!((1_500..=3_000).contains(gap_ms), "gap {gap_ms}");
        }
        other => panic!("linked by {other:?}"),
    }
    // Not by a serial: the normal-mode iSerial is not the EDL `_SN:` serial.
    let sn = edl
        .product
        .as_deref()
        .unwrap()
        .split("_SN:")
        .nth(1)
        .unwrap();
    assert!(!normal.serial.as_deref().unwrap().eq_ignore_ascii_case(sn));
    let views = monitor.devices(ups[2].t_ms);
    assert_eq!(views.len(), 1);
    assert!(views[0].present);
    assert_eq!(views[0].class.tag(), "edl");
    assert!(!monitor.loop_status(id, ups[2].t_ms).is_looping());
}

#[test]
fn replay_prints_the_boot_loop_timeline() {
    let file = recording("bootloop-9008-rm502q.jsonl");
    let out = common::qrescue(
        &["replay", file.to_str().unwrap(), "--speed", "0"],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(text.contains("Device timeline (9 events):"), "{text}");
    let appear_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("  appear  99-7") && l.contains("05c6:9008"))
        .collect();
    assert_eq!(appear_lines.len(), 5, "{text}");
    // Redacted: the unit's serial is a pseudonym.
    assert!(appear_lines
        .iter()
        .all(|l| l.contains("QUSB__BULK_CID:0410_SN:00000001")));
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("  vanish  99-7"))
            .count(),
        4,
        "{text}"
    );
    // Run through the monitor like `qrescue watch`: the mode and the detected loop.
    assert!(text.contains("#1 EDL (emergency download, 9008)"), "{text}");
    assert!(text.contains("BOOT LOOP #1: 05c6:9008 every "), "{text}");
    assert!(text.contains("(modes seen: edl): boot loop: "), "{text}");
}

/// The `device` summary line of `qrescue replay FILE --speed 0 --json`.
fn replay_device_json(name: &str) -> Vec<serde_json::Value> {
    let file = recording(name);
    let out = common::qrescue(
        &["replay", file.to_str().unwrap(), "--speed", "0", "--json"],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    common::stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "device")
        .collect()
}

#[test]
fn replay_json_reports_the_loop_and_the_modes_of_the_switch() {
    let loops = replay_device_json("bootloop-9008-rm502q.jsonl");
    assert_eq!(loops.len(), 1, "{loops:?}");
    let l = &loops[0]["loop"];
    assert_eq!(l["status"], "looping", "{l}");
    let period = l["period_ms"].as_u64().unwrap();
    assert!(period.abs_diff(14_000) <= 500, "{l}");
    assert_eq!(loops[0]["modes"], serde_json::json!(["edl"]));

    let switch = replay_device_json("switch-normal-to-edl-rm502q.jsonl");
    assert_eq!(switch.len(), 1, "one device across the switch: {switch:?}");
    assert_eq!(switch[0]["modes"], serde_json::json!(["normal", "edl"]));
    assert_eq!(switch[0]["usb_id"], "05c6:9008");
}
