//! `qrescue sim --normal-for SECONDS` from a separate process: the unit shows up in normal mode
//! (its DM/NMEA/AT/modem ports served on ptys), vanishes, and re-enumerates as 05c6:9008 serving
//! Sahara on a pty. Only the order and content of the JSON lines are checked, never their timing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{code, describe, qrescue};

const LINE: Duration = Duration::from_secs(20);

#[test]
fn normal_mode_first_then_edl_on_another_bus_with_a_served_pty() {
    let dir = common::tempdir();
    let socket = dir.path().join("sim.sock");
    let (mut child, rx) = common::spawn_lines(
        Command::new(common::bin())
            .args(["sim", "--pty", "--profile", "rm502q", "--normal-for", "0.2"])
            .args(["--socket", common::s(&socket)]),
    );
    let next = || common::next_json(&rx, LINE);
    let ready = next();
    assert_eq!(ready["event"], "ready");
    assert!(ready["pty"].is_null(), "{ready}");
    assert_eq!(ready["normal_for_s"], 0.2);
    assert_eq!(ready["socket"], common::s(&socket));

    let normal = next();
    assert_eq!(normal["event"], "appear", "{normal}");
    assert_eq!(normal["mode"], "normal");
    assert_eq!(normal["usb_id"], "2c7c:0800");
    assert_eq!(normal["ports_served"], true);
    assert!(normal["pty"].is_null());
    for port in ["dm", "nmea", "at", "modem"] {
        assert!(normal["ports"][port].is_string(), "{normal}");
    }
    let gone = next();
    assert_eq!(gone["event"], "vanish", "{gone}");
    assert_eq!(gone["location"], normal["location"]);
    assert_eq!(gone["switching_to"], "edl");

    let edl = next();
    assert_eq!(edl["event"], "appear", "{edl}");
    assert_eq!(edl["usb_id"], "05c6:9008");
    assert_eq!(edl["mode"], "edl");
    assert_eq!(edl["ports_served"], true);
    assert_ne!(edl["location"], normal["location"]);
    // The same port on the companion (high-speed) bus: `100-7` → `99-7`.
    let port = |v: &serde_json::Value| {
        v["location"]
            .as_str()
            .unwrap()
            .split_once('-')
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(port(&edl), port(&normal));
    let pty = edl["pty"].as_str().expect("the EDL pty").to_string();
    let out = qrescue(&["info", "--port", &pty], LINE);
    assert_eq!(code(&out), 0, "{}", describe(&out));

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut last = serde_json::Value::Null;
    while last["event"] != "exit" {
        last = next();
    }
    assert_eq!(last["outcome"], "stopped");
    // Stopped by a signal: exit code 130 ("interrupted").
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

#[test]
fn normal_for_needs_a_positive_number_of_seconds() {
    for bad in ["0", "-1", "x", "NaN"] {
        let arg = format!("--normal-for={bad}");
        let out = qrescue(&["sim", "--pty", &arg], LINE);
        assert_eq!(code(&out), 2, "{bad}: {}", describe(&out));
        assert!(
            common::stderr(&out).contains("SECONDS"),
            "{}",
            describe(&out)
        );
    }
}
