//! The real `qrescue` binary against `qrescue sim --pty`, through real ptys, the way a person
//! with two terminals uses it: `info`, `sahara-upload`, `ramdump`, every Sahara fault with its exit
//! code and message, a port held by another program, usage errors, `--help` and `--version`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    code, describe, json_lines, last_json, qrescue, s, sha256_file, stderr, stdout, tempdir, Sim,
};
use serde_json::Value;

/// Bound for one short command (identity, upload, small dump).
const QUICK: Duration = Duration::from_secs(20);

/// `qrescue sim --write-programmer FILE --profile PROFILE --seed SEED`: a programmer signed for
/// that emulated unit.
fn write_programmer(dir: &Path, profile: &str, seed: u64) -> std::path::PathBuf {
    let file = dir.join(format!("prog_{profile}_{seed}.mbn"));
    let seed = seed.to_string();
    let out = qrescue(
        &[
            "sim",
            "--profile",
            profile,
            "--seed",
            &seed,
            "--write-programmer",
            s(&file),
        ],
        QUICK,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("Wrote a fake Firehose programmer"),
        "{}",
        describe(&out)
    );
    assert!(file.metadata().unwrap().len() > 64 * 1024);
    file
}

/// The error object `--json` prints on stdout for a failed command.
fn json_error(out: &std::process::Output) -> Value {
    let v = last_json(out);
    assert!(v["error"].is_object(), "no error object: {}", describe(out));
    v["error"].clone()
}

fn assert_error_kind(out: &std::process::Output, kind: &str, exit: i32) {
    assert_eq!(code(out), exit, "{}", describe(out));
    let e = json_error(out);
    assert_eq!(e["kind"], kind, "{}", describe(out));
    assert_eq!(e["exit_code"], exit, "{}", describe(out));
    for field in ["what", "why", "next"] {
        assert!(
            e[field].as_str().is_some_and(|t| !t.is_empty()),
            "error object lacks {field}: {e}"
        );
    }
}

#[test]
fn info_names_the_ec25_identity_in_words_and_in_json() {
    let sim = Sim::start(&["--profile", "ec25"]);
    let serial = sim.ready["serial"].as_str().unwrap().to_string();
    let pk = sim.ready["pk_hash"].as_str().unwrap().to_string();

    let out = qrescue(&["info", "--port", sim.port()], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("Sahara v2"), "{text}");
    assert!(text.contains("mode: download"), "{text}");
    let serial_line = text.lines().find(|l| l.contains("serial")).unwrap();
    assert!(serial_line.contains(&serial), "{text}");
    let hw = text
        .lines()
        .find(|l| l.contains("HW ID"))
        .expect("HW ID line");
    assert!(hw.contains("MDM9207"), "EC25's MSM is named: {text}");
    let pk_line = text.lines().find(|l| l.contains("PK hash")).unwrap();
    assert!(pk_line.contains(&pk), "{text}");
    assert!(
        !text.trim_start().starts_with('{'),
        "human mode prints no JSON"
    );

    // The same modem asked again, this time for a script.
    let out = qrescue(&["--json", "info", "--port", sim.port()], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    let v = &lines[0];
    assert_eq!(v["event"], "info");
    assert_eq!(v["port"], sim.port());
    assert_eq!(v["info"]["serial_hex"], serial.as_str());
    assert_eq!(v["info"]["pk_hash"], pk.as_str());
    assert_eq!(v["info"]["hw_id"]["msm_id_hex"], "000480e1");
}

#[test]
fn info_on_a_sahara_v3_rm520n_shows_the_v3_chip_id() {
    let sim = Sim::start(&["--profile", "rm520n"]);
    let serial = sim.ready["serial"].as_str().unwrap().to_string();
    let pk = sim.ready["pk_hash"].as_str().unwrap().to_string();

    let out = qrescue(&["info", "--port", sim.port()], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("Sahara v3"), "{text}");
    assert!(text.contains("chip ID v3"), "{text}");
    assert!(text.contains(&serial), "{text}");
    assert!(text.contains(&pk), "{text}");
    drop(sim);

    let sim = Sim::start(&["--profile", "rm520n"]);
    let out = qrescue(&["info", "--json", "--port", sim.port()], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = last_json(&out);
    assert_eq!(v["info"]["sahara_version"], 3);
    assert_eq!(v["info"]["serial_hex"], serial.as_str());
    assert_eq!(v["info"]["pk_hash"], pk.as_str());
    assert!(
        v["info"]["chip_id_v3"]["msm_id_hex"].is_string(),
        "v3 chip id: {v}"
    );
}

#[test]
fn a_programmer_written_by_the_sim_uploads_and_the_modem_enters_firehose() {
    let dir = tempdir();
    let prog = write_programmer(dir.path(), "ec25", 1);
    let sim = Sim::start(&["--profile", "ec25"]);
    let out = qrescue(&["sahara-upload", "--port", sim.port(), s(&prog)], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("Programmer uploaded"), "{text}");
    assert!(text.contains("now in Firehose"), "{text}");
    let started = sim
        .wait_event("programmer_started", Duration::from_secs(10))
        .expect("the sim announces its programmer");
    assert_eq!(started["serial"], sim.ready["serial"]);

    // --json: one parsable object with the upload report.
    let sim = Sim::start(&["--profile", "ec25"]);
    let out = qrescue(
        &["sahara-upload", "--json", "--port", sim.port(), s(&prog)],
        QUICK,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = last_json(&out);
    assert_eq!(v["event"], "uploaded");
    assert_eq!(v["report"]["already_running"], false);
    assert!(
        v["report"]["bytes_sent"].as_u64().unwrap() > 64 * 1024,
        "{v}"
    );
    assert!(sim
        .wait_event("programmer_started", Duration::from_secs(10))
        .is_some());
}

/// Dump a crashed modem and check every region file against the manifest.
fn ramdump_checks(profile: &str, table: &str) {
    let dir = tempdir();
    let out_dir = dir.path().join("dump");
    let mut sim = Sim::start(&["--profile", profile, "--mode", "crash"]);
    assert_eq!(sim.ready["mode"], "crash");
    assert_eq!(sim.ready["usb_id"], "05c6:900e");
    let out = qrescue(
        &["ramdump", "--port", sim.port(), "--out", s(&out_dir)],
        Duration::from_secs(30),
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("Saved 4 regions"), "{text}");
    assert!(text.contains("manifest.json"), "{text}");
    assert!(text.contains("region 1/4"), "{text}");

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["table_format"], table, "{manifest}");
    let regions = manifest["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 4, "{manifest}");
    let mut names = Vec::new();
    for r in regions {
        assert_eq!(r["status"], "ok", "{r}");
        let file = out_dir.join(r["file"].as_str().unwrap());
        assert_eq!(
            file.metadata().unwrap().len(),
            r["length"].as_u64().unwrap(),
            "{r}"
        );
        assert_eq!(sha256_file(&file), r["sha256"].as_str().unwrap(), "{r}");
        names.push(r["file"].as_str().unwrap().to_string());
    }
    assert!(names.contains(&"DDRCS0.BIN".to_string()), "{names:?}");
    // After the dump the modem is told to reset and leaves crash-dump mode.
    assert!(sim
        .wait_event("rebooted", Duration::from_secs(10))
        .is_some());
    sim.stop();
}

#[test]
fn ramdump_of_a_crashed_ec25_uses_the_32_bit_table_and_matches_its_manifest() {
    ramdump_checks("ec25", "32-bit");
}

#[test]
fn ramdump_of_a_crashed_rm520n_uses_the_64_bit_table_and_matches_its_manifest() {
    ramdump_checks("rm520n", "64-bit");
}

#[test]
fn ramdump_json_reports_the_regions_on_stdout() {
    let dir = tempdir();
    let out_dir = dir.path().join("d");
    let sim = Sim::start(&["--profile", "ec25", "--mode", "crash"]);
    let out = qrescue(
        &[
            "--json",
            "ramdump",
            "--port",
            sim.port(),
            "--out",
            s(&out_dir),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = &json_lines(&out)[0];
    assert_eq!(v["event"], "ramdump");
    assert_eq!(v["report"]["table_format"], "32-bit");
    let regions = v["report"]["regions"].as_array().unwrap();
    let total: u64 = regions.iter().map(|r| r["length"].as_u64().unwrap()).sum();
    assert_eq!(v["report"]["bytes_written"], total);
}

#[test]
fn a_refused_programmer_exits_1_and_says_to_use_the_modems_own_package() {
    let dir = tempdir();
    let prog = write_programmer(dir.path(), "ec25", 1);
    let sim = Sim::start(&["--profile", "ec25", "--fault", "refuse-programmer"]);
    let out = qrescue(
        &["--json", "sahara-upload", "--port", sim.port(), s(&prog)],
        QUICK,
    );
    assert_error_kind(&out, "failure", 1);
    let err = stderr(&out);
    assert!(err.contains("refused the programmer"), "{err}");
    assert!(
        err.contains("Sahara status 0x"),
        "the status is named: {err}"
    );
    assert!(err.contains("own firmware package"), "{err}");
    assert!(
        sim.wait_event("programmer_started", Duration::from_millis(300))
            .is_none(),
        "a refused programmer never runs"
    );

    // Without --json the failure goes to stderr only; stdout carries no JSON.
    let sim = Sim::start(&["--profile", "ec25", "--fault", "refuse-programmer"]);
    let out = qrescue(&["sahara-upload", "--port", sim.port(), s(&prog)], QUICK);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(!stdout(&out).contains('{'), "{}", describe(&out));
    assert!(stderr(&out).contains("error: "), "{}", describe(&out));
}

#[test]
fn a_programmer_signed_for_another_unit_is_refused_with_exit_1() {
    let dir = tempdir();
    let other = write_programmer(dir.path(), "ec25", 2);
    let sim = Sim::start(&["--profile", "ec25", "--seed", "1"]);
    let out = qrescue(
        &["--json", "sahara-upload", "--port", sim.port(), s(&other)],
        QUICK,
    );
    assert_error_kind(&out, "failure", 1);
    let err = stderr(&out);
    assert!(err.contains("refused the programmer"), "{err}");
    assert!(err.contains("not signed for this device"), "{err}");
    assert!(err.contains("own firmware package"), "{err}");
}

#[test]
fn a_link_that_drops_during_the_upload_exits_6_device_lost() {
    let dir = tempdir();
    let prog = write_programmer(dir.path(), "ec25", 1);
    let sim = Sim::start(&["--profile", "ec25", "--fault", "drop-after:20000"]);
    let out = qrescue(
        &["--json", "sahara-upload", "--port", sim.port(), s(&prog)],
        QUICK,
    );
    assert_error_kind(&out, "device_lost", 6);
    let err = stderr(&out);
    assert!(err.contains("left the bus"), "{err}");
    assert!(err.to_lowercase().contains("power-cycle"), "{err}");
    assert!(sim
        .wait_event("link_dropped", Duration::from_secs(5))
        .is_some());
}

#[test]
fn a_consumed_hello_is_recovered_and_the_upload_succeeds_with_a_note() {
    let dir = tempdir();
    let prog = write_programmer(dir.path(), "ec25", 1);
    let sim = Sim::start(&["--profile", "ec25", "--fault", "consume-hello"]);
    let out = qrescue(&["sahara-upload", "--port", sim.port(), s(&prog)], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("now in Firehose"), "{text}");
    let note = text.lines().find(|l| l.contains("note:")).expect("a note");
    assert!(note.contains("HELLO was not seen"), "{text}");
    assert!(sim
        .wait_event("programmer_started", Duration::from_secs(10))
        .is_some());
}

#[test]
fn a_modem_left_mid_session_exits_1_and_says_to_power_cycle_or_replug() {
    let dir = tempdir();
    let prog = write_programmer(dir.path(), "ec25", 1);
    let sim = Sim::start(&["--profile", "ec25", "--fault", "mid-session:200"]);
    let out = qrescue(
        &["--json", "sahara-upload", "--port", sim.port(), s(&prog)],
        QUICK,
    );
    assert_error_kind(&out, "failure", 1);
    let err = stderr(&out).to_lowercase();
    assert!(
        err.contains("power-cycle") && err.contains("replug"),
        "the next step is power-cycling or replugging: {err}"
    );
}

#[test]
fn a_port_that_does_not_exist_exits_3_no_device() {
    let out = qrescue(&["info", "--port", "/dev/pts/qrescue-nonexistent"], QUICK);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("There is no port /dev/pts/qrescue-nonexistent"),
        "{err}"
    );
    assert!(
        err.contains("qrescue sim --pty"),
        "the hint names the pty: {err}"
    );

    let out = qrescue(
        &[
            "--json",
            "sahara-upload",
            "--port",
            "/dev/ttyUSB-qrescue-none",
            "/dev/null",
        ],
        QUICK,
    );
    // A programmer that cannot be read is a usage error found before the port is opened.
    assert_error_kind(&out, "usage", 2);

    let dir = tempdir();
    let out = qrescue(
        &[
            "--json",
            "ramdump",
            "--port",
            "/dev/ttyUSB-qrescue-none",
            "--out",
            s(dir.path()),
        ],
        QUICK,
    );
    assert_error_kind(&out, "no_device", 3);
}

#[test]
fn usage_errors_exit_2_and_name_what_is_missing() {
    // (`info` alone finds the modem by itself: see tests/cli_info.rs.)
    let out = qrescue(&["info", "--port"], QUICK);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("--port"), "{}", describe(&out));

    let out = qrescue(&["sahara-upload", "--port", "/dev/null"], QUICK);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("PROGRAMMER"), "{}", describe(&out));

    let out = qrescue(&["no-such-command"], QUICK);
    assert_eq!(code(&out), 2, "{}", describe(&out));

    let out = qrescue(&["sim", "--profile", "no-such-modem", "--pty"], QUICK);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains("ec25"),
        "the known profiles are listed"
    );
}

#[test]
fn a_port_held_by_another_program_is_refused_with_a_clear_message() {
    let sim = Sim::start(&["--profile", "ec25"]);
    let holder = qrescue::transport::serial::SerialTransport::open(&sim.pty)
        .expect("the test opens the pty first");
    let out = qrescue(&["--json", "info", "--port", sim.port()], QUICK);
    assert_error_kind(&out, "failure", 1);
    let err = stderr(&out);
    assert!(err.contains("held by another program"), "{err}");
    assert!(err.contains("fuser"), "the hint says how to find it: {err}");
    drop(holder);

    // Once the other program lets go, the modem answers normally.
    let out = qrescue(&["info", "--port", sim.port()], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains(sim.ready["serial"].as_str().unwrap()));
}

#[test]
fn a_second_qrescue_during_an_upload_is_told_the_port_is_held() {
    let dir = tempdir();
    let prog = write_programmer(dir.path(), "ec25", 1);
    // Every device write is delayed, so the first upload holds the port for seconds.
    let sim = Sim::start(&["--profile", "ec25", "--fault", "delay:300"]);
    let mut first = std::process::Command::new(common::bin())
        .args(["sahara-upload", "--port", sim.port(), s(&prog)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until the first qrescue has the pty open.
    let fds = format!("/proc/{}/fd", first.id());
    let holds = || {
        std::fs::read_dir(&fds)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == sim.pty))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !holds() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never opened the port"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = qrescue(&["info", "--port", sim.port()], QUICK);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        stderr(&out).contains("held by another program"),
        "{}",
        describe(&out)
    );
}

#[test]
fn help_and_version_exit_0() {
    let out = qrescue(&["--version"], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("qrescue {}", env!("CARGO_PKG_VERSION"))
    );

    let out = qrescue(&["--help"], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    for cmd in ["info", "ramdump", "sahara-upload", "flash", "sim"] {
        assert!(text.contains(cmd), "--help lists {cmd}: {text}");
    }
    assert!(text.contains("Exit codes"), "{text}");

    let out = qrescue(&["sahara-upload", "--help"], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains("--port"));
}
