//! `qrescue demo` (the README's first command) runs the real engine against the built-in
//! emulated modem and ends with a verified flash (or a saved RAM dump).

mod common;

use std::time::Duration;

use common::{qrescue, stderr, stdout};

fn demo(args: &[&str]) -> String {
    let mut all = vec!["demo", "--fast"];
    all.extend_from_slice(args);
    let out = qrescue(&all, Duration::from_secs(90));
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "demo {args:?} failed\nstdout: {text}\nstderr: {}",
        stderr(&out)
    );
    text
}

#[test]
fn the_default_demo_flashes_and_verifies_every_partition() {
    let text = demo(&[]);
    assert!(text.contains("Step 1/6: Identify the modem"), "{text}");
    assert!(text.contains("serial"), "{text}");
    assert!(text.contains("Plan: "), "{text}");
    let verified = text.matches("read back, sha256 matches").count();
    assert!(verified >= 5, "{text}");
    assert!(!text.contains("MISMATCH"), "{text}");
    assert!(text.contains(&format!(
        "Flashed and verified by read-back ({verified} partitions)"
    )));
    // The identify step's HELLO is handed on: the upload does not wait for a recovery.
    assert!(!text.contains("HELLO was not seen"), "{text}");
}

#[test]
fn the_demo_runs_on_emmc_too() {
    let text = demo(&["--storage", "emmc", "--profile", "ec25"]);
    assert!(text.contains("emmc"), "{text}");
    assert!(text.contains("read back, sha256 matches"), "{text}");
    assert!(text.contains("Flashed and verified"), "{text}");
}

#[test]
fn the_crash_scenario_saves_a_ram_dump() {
    let text = demo(&["--scenario", "crash"]);
    assert!(text.contains("900e"), "{text}");
    assert!(text.contains("saved with a manifest"), "{text}");
    assert!(text.contains("sha256"), "{text}");
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
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(figures
        .iter()
        .all(|f| f["value"].as_f64().unwrap_or(0.0) > 0.0));
}
