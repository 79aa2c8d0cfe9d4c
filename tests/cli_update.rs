//! `qrescue update PACKAGE` and `qrescue edl` against `qrescue sim --mode normal` (another
//! process, found through its announcement socket with `--sim SOCKET --no-usb`).

mod common;
mod workflow_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use workflow_support::*;

const T: Duration = Duration::from_secs(120);

/// `qrescue sim --mode normal` (the EC25 of seed 1) and its socket.
fn sim_normal(dir: &Path) -> (std::process::Child, std::path::PathBuf) {
    let socket = dir.join("sim.sock");
    let (child, rx) = common::spawn_lines(
        Command::new(common::bin())
            .args(["sim", "--pty", "--profile", "ec25", "--mode", "normal"])
            .args(["--socket", common::s(&socket)]),
    );
    let ready = common::next_json(&rx, Duration::from_secs(30));
    assert_eq!(ready["event"], "ready", "{ready}");
    // Keep reading its lines so its stdout never blocks.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    (child, socket)
}

fn stop(mut child: std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `qrescue ARGS` with its data folder (flash journals, run records) in `data`, bounded by `T`.
fn qrescue_in(data: &Path, args: &[&str]) -> std::process::Output {
    use std::process::Stdio;
    let mut child = Command::new(common::bin())
        .env("QRESCUE_DATA_DIR", data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qrescue");
    let end = std::time::Instant::now() + T;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("qrescue {args:?} did not finish within {T:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn update_flashes_a_normal_mode_modem_and_ends_flashed_and_verified() {
    let dir = common::tempdir();
    let p = profile(1);
    let pkg = package(dir.path(), &p, NEW_REV);
    let (sim, socket) = sim_normal(dir.path());
    let backups = dir.path().join("backups");
    let dumps = dir.path().join("dumps");
    let data = dir.path().join("data");
    let out = qrescue_in(
        &data,
        &[
            "update",
            common::s(&pkg),
            "--sim",
            common::s(&socket),
            "--no-usb",
            "--yes",
            "--backup-dir",
            common::s(&backups),
            "--dump-dir",
            common::s(&dumps),
            "--json",
        ],
    );
    stop(sim);
    assert_eq!(common::code(&out), 0, "{}", common::describe(&out));
    let lines = json_lines(&out);
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l["event"], "workflow", "one workflow event per line: {l}");
    }
    let end = &lines.last().unwrap()["workflow"];
    assert_eq!(end["event"], "finished", "{end}");
    let f = &end["finished"];
    assert_eq!(f["workflow"], "update");
    assert_eq!(f["end"]["verdict"]["verdict"], "verified", "{f}");
    let checks = f["end"]["verdict"]["checks"].to_string();
    let imei = qrescue::sim::normal::unit::unit_imei(&p);
    assert!(checks.contains(&format!("same IMEI {imei}")), "{checks}");
    assert!(checks.contains("+CFUN: 1"), "{checks}");
    // The backup is on file.
    assert!(f["backup"].is_string());
    assert!(backups.read_dir().unwrap().count() >= 1);
    // The flash was journaled and recorded: `qrescue status` lists the update's run (written,
    // then verified) and the unit's finished journal.
    let out = qrescue_in(&data, &["status", "--json"]);
    assert_eq!(common::code(&out), 0, "{}", common::describe(&out));
    let status = json_lines(&out);
    let run = status
        .iter()
        .find(|l| l["tool"] == "update")
        .unwrap_or_else(|| panic!("{}", common::describe(&out)));
    assert_eq!(run["state"], "finished", "{run}");
    assert!(run["verification"].as_str().unwrap().contains("verified"));
    let unit = format!("sn-0x{:08x}", p.identity.serial);
    let journal = status
        .iter()
        .find(|l| l["journal"]["unit"] == unit.as_str())
        .unwrap_or_else(|| panic!("{}", common::describe(&out)));
    assert_eq!(journal["journal"]["finished"], true, "{journal}");
}

#[test]
fn a_wrong_variant_is_refused_in_normal_mode_and_edl_then_switches_by_software() {
    let dir = common::tempdir();
    let p = profile(1);
    let pkg = package(dir.path(), &p, OTHER_VARIANT_REV);
    let (sim, socket) = sim_normal(dir.path());
    let backups = dir.path().join("backups");
    let out = common::qrescue(
        &[
            "update",
            common::s(&pkg),
            "--sim",
            common::s(&socket),
            "--no-usb",
            "--yes",
            "--backup-dir",
            common::s(&backups),
            "--dump-dir",
            common::s(&dir.path().join("dumps")),
        ],
        T,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(common::code(&out), 1, "{}", common::describe(&out));
    assert!(
        text.contains("── Step 1: Ask the modem who it is over its AT port"),
        "{text}"
    );
    assert!(text.contains("Stopped:"), "{text}");
    assert!(text.contains("Nothing was changed on the modem."), "{text}");
    assert!(
        !text.contains("Switch the modem to download mode"),
        "{text}"
    );

    // The modem is still in normal mode: `qrescue edl` finds it there and switches it.
    let out = common::qrescue(
        &["edl", "--sim", common::s(&socket), "--no-usb", "--json"],
        T,
    );
    stop(sim);
    assert_eq!(common::code(&out), 0, "{}", common::describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["event"], "edl_warning");
    let edl = lines
        .iter()
        .find(|l| l["event"] == "edl")
        .unwrap_or_else(|| panic!("{}", common::describe(&out)));
    assert_eq!(edl["usb_id"], "05c6:9008");
    assert!(edl["port"].as_str().is_some_and(|p| p.starts_with("/dev/")));
}

#[test]
fn update_and_edl_explain_usage_mistakes_before_looking_for_a_modem() {
    let dir = common::tempdir();
    let out = common::qrescue(
        &["update", common::s(&dir.path().join("missing")), "--no-usb"],
        T,
    );
    assert_eq!(common::code(&out), 2, "{}", common::describe(&out));
    let out = common::qrescue(&["edl", "--no-usb"], T);
    assert_eq!(common::code(&out), 2, "{}", common::describe(&out));
    assert!(common::stderr(&out).contains("--sim SOCKET"));
}
