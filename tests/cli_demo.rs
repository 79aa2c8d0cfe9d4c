//! `qrescue demo` (the README's first command) in line mode: every scenario runs the real engine
//! against the demo world's emulated modem, found on its emulated USB bus, and ends in an
//! honest verdict — back in normal mode after the flash, a saved RAM dump, or a refusal with its
//! reasons and nothing sent. `--fast` keeps the suite quick (no flash speed limit, quick
//! reboots; the boot loop keeps its real 10 s window, which the flash fits in).

mod common;

use std::time::Duration;

use common::{code, describe, json_lines, qrescue, s, stderr, stdout, tempdir};

const BOUND: Duration = Duration::from_secs(120);

fn demo(args: &[&str]) -> std::process::Output {
    let mut all = vec!["demo", "--fast"];
    all.extend_from_slice(args);
    qrescue(&all, BOUND)
}

fn demo_ok(args: &[&str]) -> String {
    let out = demo(args);
    assert_eq!(code(&out), 0, "demo {args:?}: {}", describe(&out));
    stdout(&out)
}

/// Position of `needle` in `text` (panics with the text when missing).
fn at(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} missing from:\n{text}"))
}

#[test]
fn the_default_demo_catches_the_loop_flashes_reads_back_and_sees_normal_mode() {
    let text = demo_ok(&[]);
    let found = at(
        &text,
        "05c6:9008 appeared in download mode (EDL, Sahara) on /dev/",
    );
    let steps: Vec<usize> = [
        "Step 1/6: Find the modem",
        "Step 2/6: Check the firmware package",
        "Step 3/6: Identify the modem",
        "Step 4/6: Upload the programmer and flash",
        "Step 5/6: Verify by reading back",
        "Step 6/6: Restart the modem and wait for it",
    ]
    .iter()
    .map(|s| at(&text, s))
    .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(found > steps[0] && found < steps[1]);
    assert!(text.contains("a boot loop in download mode"), "{text}");
    assert!(text.contains("Package     RM502QAEAAR13A03M4G_01.200.01.200"));
    assert!(text.contains("upgrade from release A02 to A03"), "{text}");
    assert!(text.contains("Left alone  EFS2"), "{text}");
    assert!(text.contains("serial"), "{text}");
    assert!(text.contains("Plan: "), "{text}");
    let verified = text.matches("read back, sha256 matches").count();
    assert!(verified >= 5, "{text}");
    assert!(!text.contains("MISMATCH"), "{text}");
    // The verdict comes from the modem: it left 9008 and came back in normal mode.
    let left = at(&text, "05c6:9008 left the bus");
    let back = at(&text, "2c7c:0800 appeared in normal mode");
    assert!(steps[5] < left && left < back, "{text}");
    assert!(
        text.contains("Flashed and verified: came back as 2c7c:0800 in normal mode"),
        "{text}"
    );
    assert!(text.contains(&format!("{verified} partitions read back identical")));
    // The identify step's HELLO is handed on: the upload does not wait for a recovery.
    assert!(!text.contains("HELLO was not seen"), "{text}");
    assert!(!text.contains("NOT verified"), "{text}");
}

#[test]
fn the_demo_runs_on_emmc_too() {
    let text = demo_ok(&["--storage", "emmc", "--profile", "ec25"]);
    assert!(text.contains("on emmc"), "{text}");
    assert!(text.contains("Package     EC25EFAR06A09M4G"), "{text}");
    assert!(text.contains("read back, sha256 matches"), "{text}");
    assert!(
        text.contains("Flashed and verified: came back as 2c7c:0125 in normal mode"),
        "{text}"
    );
}

#[test]
fn the_update_demo_bridges_the_pins_flashes_and_comes_back() {
    let text = demo_ok(&["--scenario", "update"]);
    let normal = at(&text, "2c7c:0800 appeared in normal mode");
    let pins = at(&text, "Step 3/7: Get it into download mode");
    let edl = at(&text, "05c6:9008 appeared in download mode");
    let flash = at(&text, "Step 5/7: Upload the programmer and flash");
    let back = text
        .rfind("2c7c:0800 appeared in normal mode")
        .expect("back in normal mode");
    assert!(
        normal < pins && pins < edl && edl < flash && flash < back,
        "{text}"
    );
    assert!(text.contains("It runs firmware RM502QAEAAR13A02M4G_01.200.01.200"));
    assert!(text.contains("Flashed and verified"), "{text}");
}

#[test]
fn the_crash_scenario_saves_a_ram_dump_and_the_unit_crashes_again() {
    let dir = tempdir();
    let keep = dir.path().join("dump");
    let text = demo_ok(&["--scenario", "crash", "--out", s(&keep)]);
    assert!(
        text.contains("05c6:900e appeared in crash-dump mode"),
        "{text}"
    );
    assert!(text.contains("saved with a manifest"), "{text}");
    assert!(text.contains(&format!("to {}", keep.display())), "{text}");
    assert!(keep.join("manifest.json").is_file());
    assert!(text.contains("sha256"), "{text}");
    // After the dump's reset it boots and crashes again, for the reason in its flash.
    assert_eq!(text.matches("05c6:900e appeared").count(), 2, "{text}");
    assert!(
        text.contains("It crashed again: its modem image is damaged"),
        "{text}"
    );
    assert!(text.contains("bridge its test pins"), "{text}");
}

#[test]
fn a_wrong_variant_package_is_refused_before_anything_is_sent() {
    let out = demo(&["--scenario", "wrong-variant"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("05c6:9008 appeared"), "{text}");
    assert!(text.contains("RM502QGLAAR13A03M4G"), "{text}");
    assert!(
        text.contains(
            "REFUSED for RM502QAEAAR13A02M4G_01.200.01.200: firmware for another variant"
        ),
        "{text}"
    );
    assert!(text.contains("Refused: nothing was sent to the modem."));
    // The engine never ran: no identify, no plan, no flash.
    assert!(!text.contains("Identify the modem"), "{text}");
    assert!(!text.contains("Plan: "), "{text}");
    let err = stderr(&out);
    assert!(err.contains("variant-mismatch"), "{err}");
    assert!(err.contains("RM502QAEAA"), "{err}");
}

#[test]
fn a_factory_package_is_blocked_by_the_guard() {
    let out = demo(&["--scenario", "factory"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("_factory (folder name)"), "{text}");
    assert!(text.contains("BLOCKED     step"), "{text}");
    assert!(text.contains("EFS2"), "{text}");
    assert!(!text.contains("Plan: "), "{text}");
    let err = stderr(&out);
    assert!(
        err.contains("would destroy data unique to this modem"),
        "{err}"
    );
    assert!(
        err.contains("there is no backup of the emulated modem"),
        "{err}"
    );
}

#[test]
fn json_mode_reports_the_devices_and_the_verdict() {
    let out = demo(&["--json"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["event"], "demo");
    assert_eq!(lines[0]["scenario"], "unbrick");
    let modes: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "device" && l["update"]["event"] == "appear")
        .filter_map(|l| l["update"]["class"]["mode"].as_str())
        .collect();
    assert_eq!(modes, ["edl", "normal"], "{}", describe(&out));
    let verdict = lines
        .iter()
        .find(|l| l["event"] == "verdict")
        .expect("a verdict");
    assert_eq!(verdict["verified"], true);
    assert_eq!(verdict["back_as"], "2c7c:0800");
    assert!(lines
        .iter()
        .any(|l| l["event"] == "read_back" && l["matches"] == true));
}

#[test]
fn bench_quick_reports_every_figure() {
    // The benchmark's figures are for people (README, closing notes); this only checks that the
    // command keeps working and reports what it claims, never how fast anything is.
    let out = qrescue(&["bench", "--quick", "--json"], Duration::from_secs(180));
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let j = common::last_json(&out);
    let figures = j["figures"].as_array().expect("figures");
    let names: Vec<&str> = figures.iter().filter_map(|f| f["name"].as_str()).collect();
    for want in [
        "sahara upload 600 KiB, in-process",
        "sahara upload 600 KiB, over a pty",
        "flash 16 MiB NAND image, in-process",
        "flash 16 MiB NAND image, over a pty",
        "peak RSS of qrescue flash, 64 MiB package",
        "appearance -> first Sahara answer, median",
        "appearance -> first Sahara answer, p99",
        "console: time to first frame (demo, 80x24 pty)",
        "console: terminal bytes/s while idle",
        "console: terminal bytes/s during a flash",
        "console: frame render time, median",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for f in figures {
        let v = f["value"].as_f64().expect("a number");
        // An idle console writes nothing at all: zero is the good value there.
        if f["name"] == "console: terminal bytes/s while idle" {
            assert!(v >= 0.0, "{f}");
        } else {
            assert!(v > 0.0, "{f}");
        }
    }
}
