//! `qrescue flash PACKAGE --all --sim …`: three `qrescue sim` processes (three emulated EC25s in
//! normal mode, one OEM key) flashed in parallel by the real binary: each is identified over AT,
//! switched to 9008 over DIAG, flashed, and verified after it came back. The `--json` lines carry
//! each modem's key; the summary has one verified row per unit with its own IMEI. Every wait is
//! bounded; nothing depends on timing.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

#[test]
fn three_emulators_are_flashed_in_parallel_and_each_row_is_its_own_unit() {
    let dir = common::tempdir();
    let pkg = dir.path().join("pkg");
    let o = common::qrescue(
        &[
            "sim",
            "--profile",
            "ec25",
            "--model-key",
            "--package-mib",
            "1",
            "--emit-package",
            common::s(&pkg),
        ],
        T,
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let mut sims = Vec::new();
    let mut serials = BTreeSet::new();
    for seed in 1..=3 {
        let socket = dir.path().join(format!("sim{seed}.sock"));
        let (child, rx) = common::spawn_lines(
            Command::new(common::bin())
                .args(["sim", "--pty", "--profile", "ec25", "--mode", "normal"])
                .args(["--model-key", "--seed", &seed.to_string()])
                .args(["--socket", common::s(&socket)]),
        );
        let ready = common::next_json(&rx, T);
        assert_eq!(ready["event"], "ready", "{ready}");
        serials.insert(ready["serial"].as_str().unwrap().to_string());
        let appear = common::next_json(&rx, T);
        assert_eq!(appear["mode"], "normal", "{appear}");
        sims.push((child, rx, socket));
    }
    assert_eq!(serials.len(), 3);

    let data = dir.path().join("data");
    let run = dir.path().join("run");
    let csv = dir.path().join("summary.csv");
    let mut cmd = Command::new(common::bin());
    cmd.env("QRESCUE_DATA_DIR", &data)
        .args(["--json", "flash", common::s(&pkg), "--all", "--no-usb"])
        .args(["--logs", common::s(&run), "--summary", common::s(&csv)]);
    for (_, _, socket) in &sims {
        cmd.args(["--sim", common::s(socket)]);
    }
    let (mut child, rx) = common::spawn_lines(&mut cmd);
    let mut lines = Vec::new();
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "the station run did not end: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        lines.push(l);
    }
    for (mut c, _, _) in sims {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = c.wait();
    }
    assert!(status.success(), "{lines:#?}");

    let json: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    // Every station event names its modem; the summary closes the run.
    let device_events: Vec<_> = json
        .iter()
        .filter(|j| j.get("t_ms").is_some() && j.get("device").is_some())
        .collect();
    let keys: BTreeSet<String> = device_events
        .iter()
        .map(|j| j["device"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for k in &keys {
        let states: Vec<&str> = device_events
            .iter()
            .filter(|j| j["device"] == k.as_str() && j["event"] == "state")
            .map(|j| j["state"].as_str().unwrap())
            .collect();
        assert_eq!(
            states.first().copied(),
            Some("identifying"),
            "{k}: {states:?}"
        );
        assert!(states.contains(&"switching") && states.contains(&"checking"));
    }
    let summary = json
        .iter()
        .find(|j| j["event"] == "station_summary")
        .expect("a summary line");
    let rows = summary["summary"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let mut imeis = BTreeSet::new();
    let mut sns = BTreeSet::new();
    for r in rows {
        assert_eq!(r["outcome"], "verified", "{r}");
        // The IMEI read before the flash is the one it came back with.
        let imei = r["imei"].as_str().unwrap();
        assert!(
            r["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("same IMEI {imei}")),
            "{r}"
        );
        imeis.insert(imei.to_string());
        let sn = format!(
            "0x{}",
            r["edl_serial"].as_str().unwrap().to_ascii_lowercase()
        );
        // Its flash was journaled by its serial, in the same store as `qrescue flash`.
        assert_eq!(r["journal"], format!("sn-{sn}").as_str(), "{r}");
        assert_eq!(r["resumed"], false, "{r}");
        assert!(data.join(format!("journals/sn-{sn}.jsonl")).is_file());
        sns.insert(sn);
    }
    assert_eq!(imeis.len(), 3);
    assert_eq!(sns, serials);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(run.join("summary.json").is_file());
}
