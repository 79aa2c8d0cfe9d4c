//! `qrescue demo` (the README's first command) in line mode: every scenario runs the real engine
//! against the demo world's emulated modem, found on its emulated USB bus, and ends in an
//! honest verdict — back in normal mode after the flash and asked over AT (same IMEI,
//! `+CFUN: 1`, the package's revision), a saved RAM dump, or a refusal with its reasons and
//! nothing sent. `--fast` keeps the suite quick (no flash speed limit, quick
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
        "Step 6/6: Restart the modem and check it over AT",
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
        text.contains("Back as 2c7c:0800 in normal mode (RM500Q/RM5xx (SDX55)) — the same unit"),
        "{text}"
    );
    // The verdict comes from what the modem says over AT.
    let verdict = at(&text, "Flashed and verified:");
    assert!(back < verdict, "{text}");
    for check in [
        "✓ back in normal mode",
        "(none on record to compare)",
        "✓ +CFUN: 1 (calibrated, full function)",
        "✓ runs RM502QAEAAR13A03M4G_01.200.01.200",
    ] {
        assert!(text[verdict..].contains(check), "{check}: {text}");
    }
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
    assert!(text.contains("Back as 2c7c:0125 in normal mode"), "{text}");
    assert!(text.contains("Flashed and verified:"), "{text}");
    assert!(text.contains("✓ runs EC25EFAR06A09M4G"), "{text}");
}

#[test]
fn the_update_demo_identifies_over_at_switches_over_diag_and_verifies_the_identity() {
    let text = demo_ok(&["--scenario", "update"]);
    let normal = at(&text, "2c7c:0800 appeared in normal mode");
    let ident = at(&text, "Step 2/8: Identify it over AT");
    let check = at(&text, "Step 3/8: Check the firmware package");
    let switch = at(&text, "Step 4/8: Switch it to download mode over DIAG");
    let echoed = at(&text, "DIAG 4B 65 01 00 sent; the modem echoed it");
    let edl = at(&text, "05c6:9008 appeared in download mode");
    let flash = at(&text, "Step 6/8: Upload the programmer and flash");
    let last = at(&text, "Step 8/8: Restart the modem and check it over AT");
    let back = text
        .rfind("2c7c:0800 appeared in normal mode")
        .expect("back in normal mode");
    assert!(
        normal < ident
            && ident < check
            && check < switch
            && switch < echoed
            && echoed < edl
            && edl < flash
            && flash < last
            && last < back,
        "{text}"
    );
    // No pins: the software switch did it.
    assert!(!text.contains("USB_BOOT"), "{text}");
    // The identity before: the revision read over AT is what the package is checked against.
    let before = &text[ident..check];
    assert!(
        before.contains("Revision    RM502QAEAAR13A02M4G_01.200.01.200 (AT+QGMR)"),
        "{text}"
    );
    assert!(before.contains("+CFUN: 1 (full function"), "{text}");
    let imei = before
        .lines()
        .find_map(|l| l.trim().strip_prefix("IMEI        "))
        .expect("an IMEI before")
        .to_string();
    assert!(text[check..switch].contains("allowed for RM502QAEAAR13A02M4G_01.200.01.200"));
    // And after: the same IMEI, the new revision, full function.
    let after = &text[back..];
    assert!(
        after.contains("Revision    RM502QAEAAR13A03M4G_01.200.01.200 (AT+QGMR)"),
        "{text}"
    );
    assert!(after.contains("Flashed and verified:"), "{text}");
    assert!(after.contains(&format!("✓ same IMEI {imei}")), "{text}");
    assert!(after.contains("✓ +CFUN: 1"), "{text}");
    assert!(!text.contains("NOT verified"), "{text}");
}

#[test]
fn the_crash_scenario_saves_a_ram_dump_and_reaches_edl_over_diag() {
    let dir = tempdir();
    let keep = dir.path().join("dump");
    let text = demo_ok(&["--scenario", "crash", "--out", s(&keep)]);
    let crashed = at(&text, "05c6:900e appeared in crash-dump mode");
    assert!(text.contains("saved with a manifest"), "{text}");
    assert!(text.contains(&format!("to {}", keep.display())), "{text}");
    assert!(keep.join("manifest.json").is_file());
    assert!(text.contains("sha256"), "{text}");
    // After the dump's reset it runs for a moment in normal mode: the DIAG switch gets it
    // into 9008 before it crashes again.
    let running = text
        .rfind("2c7c:0800 appeared in normal mode")
        .expect("running again after the dump");
    let echoed = at(&text, "DIAG 4B 65 01 00 sent");
    let edl = at(&text, "05c6:9008 appeared in download mode");
    assert!(
        crashed < running && running < echoed && echoed < edl,
        "{text}"
    );
    assert!(
        text.contains("It is in download mode and stays there. Its modem image is damaged"),
        "{text}"
    );
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
fn a_factory_package_is_refused_until_a_backup_then_the_loss_shows_and_the_restore_fixes_it() {
    let dir = tempdir();
    let store = dir.path().join("backups");
    let text = demo_ok(&["--scenario", "factory", "--out", s(&store)]);
    let order = [
        "Step 2/10: Identify it over AT",
        "BLOCKED     step",
        "Refused: nothing was sent to the modem.",
        "Step 4/10: Switch it to download mode over DIAG",
        "Step 5/10: Back up its own data",
        "Step 6/10: Check the package again",
        "Covered     step",
        "Step 7/10: Flash the factory package",
        "Step 8/10: Restart the modem and check it over AT",
        "Function    +CFUN: 5 (factory-test mode)",
        "Flashed, NOT verified:",
        "✗ +CFUN: 5 — the RF calibration is gone",
        "→ restore the backup with `qrescue restore",
        "Step 9/10: Restore the backup",
        "read each back: all match the backup",
        "Step 10/10: Check it over AT again",
        "Function    +CFUN: 1 (full function",
        "Flashed and verified:",
        "Restored and verified",
    ];
    // Each after the one before.
    let mut pos: Vec<usize> = Vec::new();
    for n in order {
        let from = pos.last().map_or(0, |p| p + order[pos.len() - 1].len());
        let p = text[from..]
            .find(n)
            .unwrap_or_else(|| panic!("{n:?} missing after byte {from} of:\n{text}"));
        pos.push(from + p);
    }
    assert!(text.contains("_factory (folder name)"), "{text}");
    assert!(text.contains("BLOCKED     step 10 writes EFS2"), "{text}");
    // Nothing was flashed before the backup existed.
    assert!(!text[..pos[4]].contains("Plan: "), "{text}");
    let imei = text[pos[0]..pos[1]]
        .lines()
        .find_map(|l| l.trim().strip_prefix("IMEI        "))
        .expect("an IMEI before")
        .to_string();
    assert!(text[pos[7]..pos[13]].contains("IMEI        none"), "{text}");
    assert!(
        text[pos[16]..].contains(&format!("✓ same IMEI {imei}")),
        "{text}"
    );
    // The backup is a real one, in the folder given.
    let backups: Vec<_> = std::fs::read_dir(&store).unwrap().flatten().collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(backups[0].path().join("manifest.json").is_file());
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
    assert_eq!(verdict["verdict"]["verdict"], "verified");
    assert_eq!(verdict["back_as"], "2c7c:0800");
    let identity = lines
        .iter()
        .find(|l| l["event"] == "identity")
        .expect("the identity read over AT");
    assert_eq!(identity["identity"]["cfun"]["level"], 1);
    assert!(lines
        .iter()
        .any(|l| l["event"] == "read_back" && l["matches"] == true));
}

#[test]
fn the_station_demo_flashes_every_modem_of_the_bench_at_once_and_writes_the_summary() {
    let dir = tempdir();
    let out_dir = dir.path().join("runs");
    let text = demo_ok(&[
        "--scenario",
        "station",
        "--units",
        "4",
        "--out",
        s(&out_dir),
    ]);
    assert!(text.contains("qrescue demo (station)"), "{text}");
    assert!(
        text.contains("4 emulated RM502Q modems in download mode"),
        "{text}"
    );
    assert!(text.contains("checked once for every modem"), "{text}");
    let keys: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('[') && l.contains(" found "))
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(keys.len(), 4, "four different modems: {text}");
    // Each modem: found, written, restarted, then verified over AT, in that order.
    for k in &keys {
        let mine: Vec<&str> = text.lines().filter(|l| l.contains(k)).collect();
        let pos = |w: &str| {
            mine.iter()
                .position(|l| l.contains(w))
                .unwrap_or_else(|| panic!("{k}: {w} missing from {mine:#?}"))
        };
        assert!(pos(" found ") < pos(" written ") && pos(" written ") < pos(" VERIFIED "));
    }
    assert_eq!(text.matches(" VERIFIED ").count(), 4, "{text}");
    assert!(
        text.contains("Station: 4 of 4 modem(s) flashed and verified"),
        "{text}"
    );
    let folder = out_dir.join("station-1");
    assert!(
        text.contains(&format!("Summary: {}", s(&folder.join("summary.json")))),
        "{text}"
    );
    let csv = std::fs::read_to_string(folder.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert_eq!(csv.matches(",verified,").count(), 4, "{csv}");
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
        "flash 16 MiB NAND image, in-process, SHA-256 on",
        "flash 16 MiB NAND image, over a pty, SHA-256 on",
        "flash 16 MiB NAND image, in-process, bare engine",
        "peak RSS of qrescue flash, 64 MiB package",
        "appearance -> first Sahara answer, median",
        "appearance -> first Sahara answer, p99",
        "console: time to first frame (demo, 80x24 pty)",
        "console: terminal bytes/s while idle",
        "console: terminal bytes/s during a flash",
        "console: terminal bytes/s during a 16-device station run",
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
