//! `qrescue` without a subcommand when stdout is not a terminal (or with `--no-tui`): plain
//! device lines or `--json` events like `qrescue watch`; and `qrescue status` over the run
//! store. No assertion depends on timing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{bin, code, describe, Sim};
use qrescue::engine::outcome::{RunDevice, RunStart, RunStore};

const BOUND: Duration = Duration::from_secs(30);

/// Run the console in line mode against `sim`, until a line satisfies `seen`; then stop the
/// emulator (the console's only source), and return every line and the exit code.
fn console_until(
    sim: &mut Sim,
    extra: &[&str],
    seen: impl Fn(&str) -> bool,
) -> (Vec<String>, Option<i32>) {
    let socket = sim.ready["socket"].as_str().unwrap().to_string();
    let mut child = Command::new(bin())
        .args(["--no-usb", "--sim", &socket])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let l = rx
            .recv_timeout(BOUND)
            .expect("the console prints the device within the bound");
        let hit = seen(&l);
        lines.push(l);
        if hit {
            break;
        }
    }
    sim.stop();
    // The emulator said goodbye: the console's only source is finished, so it ends.
    while let Ok(l) = rx.recv_timeout(BOUND) {
        lines.push(l);
    }
    let status = child.wait().unwrap();
    (lines, status.code())
}

#[test]
fn without_a_terminal_the_console_prints_device_lines() {
    let mut sim = Sim::start(&["--profile", "ec25"]);
    let (lines, code) = console_until(&mut sim, &[], |l| l.contains("05c6:9008"));
    assert!(lines[0].starts_with("watching "), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("05c6:9008") && l.contains("EDL")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("stopped after")),
        "{lines:?}"
    );
    assert_eq!(code, Some(0), "{lines:?}");
}

#[test]
fn with_json_the_console_prints_one_event_per_line() {
    let mut sim = Sim::start(&["--profile", "ec25"]);
    let (lines, code) = console_until(&mut sim, &["--json", "--no-tui"], |l| {
        l.contains("\"appear\"") || l.contains("\"present\"")
    });
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(events[0]["event"], "watching");
    assert!(
        events
            .iter()
            .any(|e| e["usb_id"] == "05c6:9008" && e["mode"] == "edl"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["event"], "summary");
    assert_eq!(code, Some(0));
}

#[test]
fn the_console_without_any_source_is_a_usage_error() {
    let out = common::qrescue(&["--no-usb", "--no-tui"], BOUND);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(common::stderr(&out).contains("--no-usb without --sim"));
}

fn status(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("status")
        .args(args)
        .env("QRESCUE_DATA_DIR", data)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn status_lists_a_finished_and_an_interrupted_run() {
    let tmp = common::tempdir();
    let out = status(tmp.path(), &[]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(common::stdout(&out).contains("No flashes recorded yet"));

    let store = RunStore::at(tmp.path().join("runs"));
    let mut done = store
        .begin(RunStart {
            tool: "console".into(),
            device: RunDevice {
                usb_id: Some("05c6:9008".into()),
                serial: Some("0x0a1b2c3d".into()),
                ..RunDevice::default()
            },
            package: Some("/srv/fw/RM502QAEAAR13A02M4G".into()),
            ..RunStart::default()
        })
        .unwrap();
    done.on_event(&qrescue::engine::events::EngineEvent::Plan {
        steps: vec![],
        total_bytes: 0,
    });
    done.finish(Ok(0));
    // An interrupted run: a record that still says running, left by a process that is gone.
    let mut gone = done.record().clone();
    gone.id = "19990101T000000Z-1-1".into();
    gone.state = qrescue::engine::outcome::RunState::Running;
    gone.pid = i32::MAX as u32;
    gone.ended = None;
    gone.ended_unix_ms = None;
    gone.verdict = None;
    std::fs::write(
        tmp.path().join("runs").join(format!("{}.json", gone.id)),
        serde_json::to_vec(&gone).unwrap(),
    )
    .unwrap();
    let out = status(tmp.path(), &[]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = common::stdout(&out);
    assert!(text.contains("FINISHED"), "{text}");
    assert!(text.contains("INTERRUPTED"), "{text}");
    assert!(text.contains("SN 0x0a1b2c3d"), "{text}");

    let out = status(tmp.path(), &["--json"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let runs = common::json_lines(&out);
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    // Newest first: the 1999 record comes last.
    assert_eq!(states, ["finished", "interrupted"]);
    let limited = common::json_lines(&status(tmp.path(), &["--json", "--limit", "1"]));
    assert_eq!(limited.len(), 1);
}
