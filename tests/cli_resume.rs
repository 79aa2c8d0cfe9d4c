//! `qrescue flash PACKAGE --sim SOCKET` against a boot-looping emulated modem (14 s / 10 s
//! scaled by 0.1, raw data throttled to 1 MB/s, so the 2 MiB package cannot fit one window):
//! the flash starts at each appearance, continues from the journal, and finishes; `qrescue
//! status` then lists the unit's journal as finished. Nothing here depends on timing: the
//! throttle guarantees more than one window, whatever the machine's speed.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{code, describe, s, Sim};

const BOUND: Duration = Duration::from_secs(90);

fn q(data: &std::path::Path, args: &[&str]) -> Output {
    let mut child = Command::new(common::bin())
        .args(args)
        .env("QRESCUE_DATA_DIR", data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOUND;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("qrescue {args:?} hangs: {}", describe(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_boot_looping_emulated_modem_is_flashed_across_windows_and_the_journal_is_listed() {
    let dir = common::tempdir();
    let data = dir.path().join("data");
    let pkg = dir.path().join("pkg");
    let out = q(
        &data,
        &[
            "sim",
            "--profile",
            "ec25",
            "--storage-profile",
            "emmc-msm8916",
            "--emit-package",
            s(&pkg),
            "--package-mib",
            "2",
        ],
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let sim = Sim::start(&[
        "--profile",
        "ec25",
        "--storage-profile",
        "emmc-msm8916",
        "--boot-loop",
        "1.4:1.0",
        "--throttle",
        "1000000",
    ]);
    let socket = sim.ready["socket"].as_str().unwrap().to_string();
    let out = q(
        &data,
        &["--json", "flash", s(&pkg), "--sim", &socket, "--no-reset"],
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let lines = common::json_lines(&out);
    let flashed = lines.iter().find(|l| l["event"] == "flashed").unwrap();
    let attempts = flashed["resume"]["attempts"].as_u64().unwrap();
    assert!(attempts >= 2, "more than one window: {flashed}");
    assert!(flashed["resume"]["unit"]
        .as_str()
        .unwrap()
        .starts_with("sn-0x"));
    assert!(lines
        .iter()
        .any(|l| l["notice"] == "journal" && l["opening"]["opening"] == "new"));
    // Every attempt after the first skipped what the earlier ones wrote.
    assert!(lines.iter().any(|l| l["event"] == "log"
        && l["message"]
            .as_str()
            .unwrap()
            .starts_with("Continuing an interrupted flash")));
    let done: Vec<bool> = lines
        .iter()
        .filter(|l| l["event"] == "done")
        .map(|l| l["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(done.len() as u64, attempts);
    assert_eq!(done.last(), Some(&true));

    let out = q(&data, &["--json", "status"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let journals: Vec<serde_json::Value> = common::json_lines(&out)
        .into_iter()
        .filter_map(|l| l.get("journal").cloned())
        .collect();
    assert_eq!(journals.len(), 1, "{}", describe(&out));
    assert_eq!(journals[0]["finished"], true);
    assert_eq!(journals[0]["steps_done"], journals[0]["steps_total"]);
    // And one run record per attempt: the last finished, the ones the windows cut off not.
    let runs: Vec<serde_json::Value> = common::json_lines(&out)
        .into_iter()
        .filter(|l| l["tool"] == "flash")
        .collect();
    assert_eq!(runs.len() as u64, attempts, "{}", describe(&out));
    // Newest first.
    assert_eq!(runs[0]["state"], "finished", "{}", runs[0]);
    assert!(runs[1..].iter().all(|r| r["state"] != "finished"));
    assert!(runs.iter().all(|r| r["package"].as_str() == Some(s(&pkg))));
    let out = q(&data, &["status"]);
    assert!(
        common::stdout(&out).contains("FINISHED"),
        "{}",
        describe(&out)
    );

    // --sim and --fresh belong to a PACKAGE flash; --sim replaces --port.
    for bad in [
        vec!["flash", "--rawprogram", "x.xml", "--sim", "/tmp/x.sock"],
        vec!["flash", s(&pkg), "--sim", "/tmp/x.sock", "--port", "/dev/x"],
        vec!["flash", s(&pkg), "--dry-run", "--fresh"],
    ] {
        let out = q(&data, &bad);
        assert_eq!(code(&out), 2, "{bad:?}: {}", describe(&out));
    }
}
