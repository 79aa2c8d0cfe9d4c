//! End to end through a real terminal: the real `qrescue demo` binary runs in a detached tmux
//! session at 80×24; the test presses keys with `send-keys` and reads the screen with
//! `capture-pane`, the way a person over SSH would see it.
//!
//! Without tmux the test is skipped with a message, unless `QRESCUE_REQUIRE_TMUX=1` (set by
//! `.ci/run`, which installs tmux) makes that a failure.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Tmux {
    session: String,
    socket: tempfile::TempDir,
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(self.socket.path().join("sock"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Start `command` (a shell line) in a detached 80×24 session.
    fn start(name: &str, command: &str, data_dir: &Path) -> Tmux {
        let t = Tmux {
            session: format!("{name}-{}", std::process::id()),
            socket: tempfile::tempdir().expect("tempdir"),
        };
        let out = t
            .cmd()
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "80",
                "-y",
                "24",
            ])
            .args(["-s", &t.session])
            .args(["-e", "TERM=xterm-256color"])
            .args(["-e", &format!("QRESCUE_DATA_DIR={}", data_dir.display())])
            .arg(command)
            .output()
            .expect("start tmux");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Keep the pane after the program exits so its last screen can still be read.
        t.run(&["set-option", "-t", &t.session, "remain-on-exit", "on"]);
        t
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.session.as_str()];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Wait (bounded) until the screen satisfies `pred`; panics with the last screen otherwise.
    fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if start.elapsed() > limit {
                panic!("timed out after {limit:?} waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pane_dead(&self) -> bool {
        let out = self.run(&["display-message", "-p", "-t", &self.session, "#{pane_dead}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().args(["kill-server"]).output();
    }
}

fn skip_without_tmux() -> bool {
    if tmux_available() {
        return false;
    }
    if std::env::var("QRESCUE_REQUIRE_TMUX").as_deref() == Ok("1") {
        panic!("tmux is required (QRESCUE_REQUIRE_TMUX=1) but is not installed");
    }
    eprintln!("skipping: tmux is not installed (apt-get install tmux; .ci/run does)");
    true
}

#[test]
fn the_demo_console_unbricks_a_boot_looping_modem_by_keys() {
    if skip_without_tmux() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_qrescue");
    let t = Tmux::start("qrescue-demo", &format!("{bin} demo --fast"), data.path());

    // The emulated modem shows up in EDL, and its boot loop is recognised.
    let s = t.wait_for(
        "the 9008 modem in the device list",
        Duration::from_secs(30),
        |s| s.contains("9008") && s.contains("EDL"),
    );
    assert!(s.contains("qrescue"), "{s}");

    // Start the guided flow; the package is checked and the plan offered.
    t.keys(&["Enter"]);
    t.wait_for("the plan to be ready", Duration::from_secs(60), |s| {
        s.to_lowercase().contains("press f")
    });
    t.keys(&["f"]);
    let s = t.wait_for("the confirmation", Duration::from_secs(10), |s| {
        s.to_lowercase().contains("press y")
    });
    assert!(
        s.contains("MiB") || s.contains("KiB"),
        "plan summary with sizes:\n{s}"
    );
    t.keys(&["y"]);

    // The catch: the flash starts in the next window and every partition is written; then the
    // modem comes back in normal mode and the verdict says verified.
    let s = t.wait_for("the verdict", Duration::from_secs(120), |s| {
        let l = s.to_lowercase();
        l.contains("verified") || l.contains("failed")
    });
    assert!(s.to_lowercase().contains("verified"), "{s}");
    assert!(!s.to_lowercase().contains("not verified"), "{s}");

    // Quit restores the terminal (the shell's screen, not the console's, is visible again).
    t.keys(&["q"]);
    let s = t.wait_for("the console to exit", Duration::from_secs(15), |_| {
        t.pane_dead()
    });
    assert!(
        !s.contains("Devices"),
        "the alternate screen was left:\n{s}"
    );
}

#[test]
fn the_demo_console_updates_a_running_modem_over_at_and_diag_and_verifies_it() {
    if skip_without_tmux() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_qrescue");
    let t = Tmux::start(
        "qrescue-update",
        &format!("{bin} demo --fast --scenario update"),
        data.path(),
    );
    t.wait_for("the modem in normal mode", Duration::from_secs(30), |s| {
        s.contains("2c7c:0800") && s.contains("normal")
    });
    // Identified over AT, then checked against the revision it reported.
    t.keys(&["Enter"]);
    let s = t.wait_for("the plan to be ready", Duration::from_secs(60), |s| {
        s.to_lowercase().contains("press f")
    });
    assert!(s.contains("+CFUN: 1"), "{s}");
    t.keys(&["f"]);
    t.wait_for("the plan confirmation", Duration::from_secs(10), |s| {
        s.to_lowercase().contains("press y")
    });
    t.keys(&["y"]);
    // The software switch is explained and confirmed on its own.
    t.wait_for("the switch confirmation", Duration::from_secs(10), |s| {
        s.contains("Switch to download mode?")
    });
    t.keys(&["y"]);
    let s = t.wait_for("the verdict", Duration::from_secs(120), |s| {
        let l = s.to_lowercase();
        l.contains("verified") || l.contains("failed")
    });
    let l = s.to_lowercase();
    assert!(l.contains("verified") && !l.contains("not verified"), "{s}");
    assert!(s.contains("same IMEI"), "{s}");
    t.keys(&["q"]);
    t.wait_for("the console to exit", Duration::from_secs(15), |_| {
        t.pane_dead()
    });
}

#[test]
fn the_station_demo_flashes_every_modem_at_once_by_keys_and_shows_the_summary() {
    if skip_without_tmux() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_qrescue");
    let t = Tmux::start(
        "qrescue-station",
        &format!("{bin} demo --fast --scenario station --units 4"),
        data.path(),
    );
    let s = t.wait_for("the bench in 9008", Duration::from_secs(30), |s| {
        s.contains("4 present") && s.contains("flash all")
    });
    assert!(s.contains("EDL"), "{s}");
    // A key sent before the console reads its input can be lost: press until it is asked.
    let start = Instant::now();
    loop {
        t.keys(&["A"]);
        std::thread::sleep(Duration::from_millis(500));
        if t.screen().contains("Flash 4 modems at once?") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no confirmation:\n{}",
            t.screen()
        );
    }
    t.keys(&["y"]);
    let s = t.wait_for("the station's summary", Duration::from_secs(120), |s| {
        s.contains("summary.json")
    });
    assert!(
        s.contains("ALL VERIFIED") && s.contains("4 of 4 verified"),
        "{s}"
    );
    assert!(!s.contains("NOT ALL VERIFIED"), "{s}");
    assert!(
        s.contains("Station · rm502q-bench-package · 4 modems"),
        "{s}"
    );
    t.keys(&["q"]);
    let s = t.wait_for("the console to exit", Duration::from_secs(15), |_| {
        t.pane_dead()
    });
    assert!(
        s.contains("station run: 4 of 4 modem(s) flashed and verified"),
        "{s}"
    );
}
