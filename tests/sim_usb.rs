//! Emulated enumeration end to end, from separate processes as a new user would run it:
//! `qrescue sim --pty [--boot-loop P:W]` announces appear/vanish on the socket named in its first
//! JSON line, a `SimSource` in this process follows it, and `qrescue info` talks to the pty of an
//! appearance. No assertion depends on timing: order, counts, monotonic times, new ptys.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{code, describe, qrescue, stderr, Sim};
use qrescue::device::sim_source::SimSource;
use qrescue::device::{DeviceChange, DeviceEvent, DeviceSnapshot, DeviceSource};
use qrescue::ErrorKind;

/// Bound for waiting on one event (a boot-loop period is 1.2 s).
const EVENT: Duration = Duration::from_secs(20);

fn next(src: &mut SimSource) -> DeviceEvent {
    src.next_event(EVENT)
        .unwrap_or_else(|e| panic!("the source failed: {e}"))
        .expect("an event within the bound")
}

fn appeared(e: &DeviceEvent) -> &DeviceSnapshot {
    match &e.change {
        DeviceChange::Appear { device } => device,
        c => panic!("expected an appear, got {c:?}"),
    }
}

fn tty(d: &DeviceSnapshot) -> String {
    d.interface(0)
        .and_then(|i| i.tty.clone())
        .expect("the EDL interface names its pty")
}

/// Drain after the sim was stopped: whatever vanishes, then a clean end.
fn drain_to_end(src: &mut SimSource) -> Vec<DeviceEvent> {
    let mut rest = Vec::new();
    while let Some(e) = src.next_event(EVENT).expect("a clean goodbye") {
        rest.push(e);
    }
    assert!(src.finished());
    rest
}

#[test]
fn a_boot_loop_comes_and_goes_on_new_ptys_and_info_works_within_a_window() {
    let mut sim = Sim::start(&["--profile", "ec25", "--boot-loop", "1.2:0.8"]);
    let socket = sim.ready["socket"]
        .as_str()
        .expect("socket in the first line")
        .to_string();
    assert_eq!(sim.ready["boot_loop"]["period_s"], 1.2);
    assert_eq!(sim.ready["boot_loop"]["window_s"], 0.8);
    let serial = sim.ready["serial"].as_str().unwrap().to_string();

    let mut src = SimSource::connect(&socket).unwrap();
    let h = src.header().clone();
    assert_eq!(h.profile, "ec25");
    assert_eq!(
        h.boot_loop.map(|b| (b.period_ms, b.window_ms)),
        Some((1200, 800))
    );
    assert!(src.describe().contains(&socket));

    let mut events = Vec::new();
    let mut info_ok = None;
    let mut appearances = 0;
    while appearances < 3 || (info_ok.is_none() && appearances < 8) {
        let e = next(&mut src);
        if let DeviceChange::Appear { device } = &e.change {
            appearances += 1;
            if info_ok.is_none() {
                // The unit serves Sahara during its window; if the window closes under a
                // loaded machine, the next appearance is tried.
                let out = qrescue(&["--json", "info", "--port", &tty(device)], EVENT);
                if code(&out) == 0 {
                    info_ok = Some(common::last_json(&out));
                }
            }
        }
        events.push(e);
    }
    let info = info_ok.expect("qrescue info succeeded within one of the windows");
    assert_eq!(info["info"]["serial_hex"], serial.as_str());

    // The loop ended on an appear: take its vanish too.
    events.push(next(&mut src));
    // Appear and vanish alternate, at one location, in time order.
    let location = events[0].location();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            matches!(e.change, DeviceChange::Appear { .. }),
            i % 2 == 0,
            "event {i} breaks the alternation: {events:?}"
        );
        assert_eq!(e.location(), location);
    }
    assert!(
        events.windows(2).all(|w| w[0].t_ms <= w[1].t_ms),
        "{events:?}"
    );
    // Each appearance has its own pty, gone once the unit vanished.
    let apps: Vec<&DeviceSnapshot> = events.iter().step_by(2).map(appeared).collect();
    assert!(apps.len() >= 3);
    for w in apps.windows(2) {
        assert_ne!(tty(w[0]), tty(w[1]), "consecutive appearances share a pty");
        assert_ne!(
            w[0].address, w[1].address,
            "a re-enumeration gets a new address"
        );
    }
    for (pair, d) in events.chunks(2).zip(&apps) {
        if let [a, v] = pair {
            assert!(matches!(v.change, DeviceChange::Vanish { .. }));
            assert!(v.t_ms >= a.t_ms);
            assert!(
                !Path::new(&tty(d)).exists(),
                "the pty of a vanished unit is gone"
            );
        }
        assert_eq!(d.id(), "05c6:9008");
        assert_eq!(d.origin.as_deref(), Some("sim"));
    }

    // A second watcher joining later gets the header and the same stream from there on.
    let mut late = SimSource::connect(&socket).unwrap();
    let e = next(&mut late);
    assert_eq!(e.location(), location);

    // The stdout lines tell the same story.
    let a = sim
        .wait_event("appear", EVENT)
        .expect("appear lines on stdout");
    assert!(a["pty"].as_str().unwrap().starts_with("/dev/"));
    assert!(a["t_ms"].is_u64());
    assert_eq!(a["location"], location.as_str());
    assert!(sim.wait_event("vanish", EVENT).is_some());

    let status = sim.stop().expect("the sim exits");
    assert_eq!(status.code(), Some(130));
    for s in [&mut src, &mut late] {
        let rest = drain_to_end(s);
        assert!(rest.iter().all(|e| e.location() == location));
    }
    assert!(
        !Path::new(&socket).exists(),
        "the socket is removed on exit"
    );
}

#[test]
fn one_appearance_without_a_boot_loop_is_announced_and_vanishes_on_exit() {
    let dir = common::tempdir();
    let socket = dir.path().join("sim.sock");
    let mut sim = Sim::start(&["--profile", "rm502q", "--socket", common::s(&socket)]);
    assert_eq!(sim.ready["socket"], common::s(&socket));
    assert!(sim.ready["boot_loop"].is_null());
    let mut src = SimSource::connect(&socket).unwrap();
    assert_eq!(src.header().boot_loop, None);
    let e = next(&mut src);
    let d = appeared(&e);
    assert_eq!(d.id(), "05c6:9008");
    assert_eq!(tty(d), sim.port());
    let sn = d.product.as_deref().unwrap().rsplit("_SN:").next().unwrap();
    let serial = sim.ready["serial"].as_str().unwrap();
    assert_eq!(
        u32::from_str_radix(sn, 16).unwrap(),
        u32::from_str_radix(serial.trim_start_matches("0x"), 16).unwrap()
    );
    // Still usable as before.
    let out = qrescue(&["info", "--port", sim.port()], EVENT);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(src.next_event(Duration::from_millis(200)).unwrap(), None);

    sim.stop();
    let rest = drain_to_end(&mut src);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(matches!(rest[0].change, DeviceChange::Vanish { .. }));
    assert!(!socket.exists());
}

#[test]
fn a_killed_sim_is_reported_after_its_device_vanishes() {
    let mut sim = Sim::start(&["--mode", "crash", "--profile", "ec25"]);
    let socket = sim.ready["socket"].as_str().unwrap().to_string();
    let mut src = SimSource::connect(&socket).unwrap();
    assert_eq!(appeared(&next(&mut src)).id(), "05c6:900e");
    sim.child.kill().unwrap();
    sim.child.wait().unwrap();
    let e = next(&mut src);
    assert!(matches!(e.change, DeviceChange::Vanish { .. }));
    let err = src.next_event(EVENT).unwrap_err();
    assert_eq!(err.kind, ErrorKind::DeviceLost);
    assert!(src.finished());
    let _ = std::fs::remove_file(&socket);
}

#[test]
fn boot_loop_and_socket_mistakes_are_usage_errors() {
    for (spec, says) in [
        ("4:10", "shorter than PERIOD"),
        ("4", "PERIOD:WINDOW"),
        ("x:1", "not a number"),
    ] {
        let out = qrescue(&["sim", "--pty", "--boot-loop", spec], EVENT);
        assert_eq!(code(&out), 2, "{}", describe(&out));
        assert!(stderr(&out).contains(says), "{}", describe(&out));
    }
    let dir = common::tempdir();
    let taken = dir.path().join("taken");
    std::fs::write(&taken, b"not a socket").unwrap();
    let out = qrescue(&["sim", "--pty", "--socket", common::s(&taken)], EVENT);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains("already exists"),
        "{}",
        describe(&out)
    );
    assert_eq!(std::fs::read(&taken).unwrap(), b"not a socket");
}
