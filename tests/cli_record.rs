//! `--record FILE` and `qrescue replay FILE` through the real binary: a recorded demo replays
//! as a timeline with streams and phases, in human and `--json` form; the errors people meet
//! (an existing file, a command with nothing to record, a recording from a newer qrescue, a
//! damaged line) say what to do.

mod common;

use std::time::Duration;

use common::{code, describe, json_lines, qrescue, s, stdout, tempdir};

const BOUND: Duration = Duration::from_secs(90);

#[test]
fn a_recorded_demo_replays_with_its_streams_and_phases() {
    let dir = tempdir();
    let file = dir.path().join("demo.jsonl");
    let out = qrescue(
        &[
            "--record",
            s(&file),
            "demo",
            "--fast",
            "--scenario",
            "crash",
        ],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));

    let out = qrescue(&["replay", s(&file), "--speed", "0"], BOUND);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("format qrescue-recording v1"), "{text}");
    assert!(text.contains("serial numbers and IMEIs replaced"), "{text}");
    // The demo finds its modem on the emulated bus and opens its pty like a real port.
    assert!(text.contains("appear  99-"), "{text}");
    assert!(text.contains("05c6:900e"), "{text}");
    assert!(text.contains("#1 serial /dev/pts/"), "{text}");
    assert!(text.contains("demo step 2/3: Save the RAM dump"), "{text}");
    assert!(text.contains("command finished"), "{text}");

    let out = qrescue(&["replay", s(&file), "--speed", "0", "--json"], BOUND);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["event"], "recording");
    assert_eq!(lines[0]["header"]["version"], 1);
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "stream"
                && l["stream"]["bytes_in"].as_u64().unwrap_or(0) > 1 << 20)
    );
    assert_eq!(lines.last().unwrap()["event"], "replayed");

    // A recording is never overwritten.
    let out = qrescue(&["--record", s(&file), "demo", "--fast"], BOUND);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        describe(&out).contains("never overwrites"),
        "{}",
        describe(&out)
    );
}

#[test]
fn replay_and_record_errors_say_what_to_do() {
    let dir = tempdir();
    let out = qrescue(
        &["--record", s(&dir.path().join("x.jsonl")), "sim", "--pty"],
        BOUND,
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(!dir.path().join("x.jsonl").exists());

    let newer = dir.path().join("newer.jsonl");
    std::fs::write(
        &newer,
        r#"{"format":"qrescue-recording","version":2,"tool_version":"9.0.0"}"#,
    )
    .unwrap();
    let out = qrescue(&["replay", s(&newer)], BOUND);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        describe(&out).contains("Update qrescue to 9.0.0"),
        "{}",
        describe(&out)
    );

    let broken = dir.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        concat!(
            r#"{"format":"qrescue-recording","version":1,"tool_version":"0.1.0","created":"x","redaction":{"enabled":true},"payloads":{"inline_max":1,"out_binary_max":1}}"#,
            "\n",
            r#"{"t_ms":0,"kind":"in","stream":3,"text":"x"}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = qrescue(&["replay", s(&broken)], BOUND);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(describe(&out).contains("line 2"), "{}", describe(&out));

    let out = qrescue(&["replay", s(&broken), "--speed", "nan"], BOUND);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        describe(&out).contains("not a playback speed"),
        "{}",
        describe(&out)
    );
}
