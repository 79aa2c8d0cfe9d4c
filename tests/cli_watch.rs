//! `qrescue watch` against `qrescue sim --boot-loop` from separate processes, as a new user would
//! run them: the loop is reported within three cycles with the right period and the next window
//! predicted. The only figures checked are the detector's (period, prediction), never how long
//! anything took.

mod common;

use std::time::Duration;

use common::{code, describe, json_lines, qrescue, Sim};

#[test]
fn watch_reports_a_14_second_9008_boot_loop_within_three_cycles_and_predicts_the_next_window() {
    let sim = Sim::start(&["--profile", "rm502q", "--boot-loop", "14:10"]);
    let socket = sim.ready["socket"].as_str().expect("socket").to_string();
    // The first appearance is already there when watch starts (its start time unknown), so
    // three more appearances (at ~14, 28 and 42 s) are the three cycles.
    let out = qrescue(
        &[
            "--json", "watch", "--no-usb", "--sim", &socket, "--for", "46",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let lines = json_lines(&out);
    let appears: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["event"] == "appear" || v["event"] == "present")
        .collect();
    assert!(appears.len() >= 3, "{}", describe(&out));
    assert!(appears
        .iter()
        .all(|v| v["mode"] == "edl" && v["device"] == 1));
    let serial = sim.ready["serial"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x");
    assert!(appears[0]["serial"]
        .as_str()
        .unwrap()
        .eq_ignore_ascii_case(serial));

    let looped = lines
        .iter()
        .find(|v| v["event"] == "loop")
        .unwrap_or_else(|| panic!("no loop reported: {}", describe(&out)));
    // Reported at the latest on the third live appearance.
    let live: Vec<u64> = lines
        .iter()
        .filter(|v| v["event"] == "appear")
        .map(|v| v["t_ms"].as_u64().unwrap())
        .collect();
    assert!(live.len() >= 3);
    assert!(looped["t_ms"].as_u64().unwrap() <= live[2], "{looped}");
    let period = looped["period_ms"].as_u64().unwrap();
    assert!((13_500..=14_500).contains(&period), "period {period}");
    let window = looped["window_ms"].as_u64().unwrap();
    assert!((9_000..=11_000).contains(&window), "window {window}");
    assert_eq!(looped["triage"], "download-mode-loop");
    // The next window: one period after the appearance that completed the detection.
    let at = looped["t_ms"].as_u64().unwrap();
    let next = looped["next_appear_ms"].as_u64().unwrap();
    assert!(
        next.abs_diff(at + period) <= 500,
        "next {next} vs {at} + {period}"
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["devices"][0]["loop"]["status"], "looping");
}

#[test]
fn watch_without_any_source_is_a_usage_error() {
    let out = qrescue(&["watch", "--no-usb"], Duration::from_secs(20));
    assert_eq!(code(&out), 2, "{}", describe(&out));
}
