//! `qrescue preflight` against a fake sys/proc/dev tree: who holds the modem's ports, how to free
//! them, the free space, and the exit code.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// An EG25-G on 1-4 (device 9, ttys on interfaces 0-3) with ModemManager holding its AT port
/// and usbfs node, and a terminal on an unrelated tty.
fn fake_root(root: &Path) {
    fake_eg25g_sysfs(root);
    let dev = root.join("dev");
    fs::create_dir_all(dev.join("bus/usb/001")).unwrap();
    for n in [0, 1, 2, 3, 7] {
        fs::write(dev.join(format!("ttyUSB{n}")), "").unwrap();
    }
    fs::write(dev.join("bus/usb/001/009"), "").unwrap();
    let proc_ = |pid: u32, comm: &str, argv: &str, fds: &[&str]| {
        let d = root.join(format!("proc/{pid}"));
        fs::create_dir_all(d.join("fd")).unwrap();
        fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        fs::write(d.join("cmdline"), argv.replace(' ', "\0")).unwrap();
        for (i, f) in fds.iter().enumerate() {
            symlink(dev.join(f), d.join(format!("fd/{}", i + 3))).unwrap();
        }
    };
    proc_(
        812,
        "ModemManager",
        "/usr/sbin/ModemManager",
        &["ttyUSB2", "bus/usb/001/009"],
    );
    proc_(900, "picocom", "picocom /dev/ttyUSB7", &["ttyUSB7"]);
}

#[test]
fn preflight_names_modemmanager_and_how_to_free_the_port() {
    let tmp = tempdir();
    fake_root(tmp.path());
    let root = s(tmp.path());
    let out = qrescue(&["preflight", "--root", root, "--backup-dir", root], T);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("PROBLEM ModemManager (pid 812) holds"),
        "{text}"
    );
    assert!(
        text.contains("AT port (if2)") && text.contains("(USB device)"),
        "{text}"
    );
    assert!(
        text.contains("fix: Stop it for the job: sudo systemctl stop ModemManager"),
        "{text}"
    );
    assert!(text.contains("or:  Or keep it running"), "{text}");
    assert!(
        !text.contains("picocom"),
        "an unrelated port is not reported: {text}"
    );
    assert!(text.contains("ok      Backup folder"), "{text}");
    assert!(
        stderr(&out).contains("preflight found 1 problem(s)"),
        "{}",
        describe(&out)
    );

    let out = qrescue(
        &["preflight", "--json", "--root", root, "--backup-dir", root],
        T,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let lines = json_lines(&out);
    let holder = lines.iter().find(|j| j["check"] == "holder").unwrap();
    assert_eq!(holder["severity"], "error");
    assert_eq!(holder["holder"]["kind"], "modem-manager");
    assert_eq!(holder["holder"]["pid"], 812);
    assert!(lines.iter().any(|j| j["check"] == "space"));
    assert_eq!(lines.last().unwrap()["error"]["exit_code"], 1);
}

#[test]
fn preflight_on_a_free_port_passes_and_checks_the_space_asked_for() {
    let tmp = tempdir();
    fake_root(tmp.path());
    let root = s(tmp.path());
    let port = tmp.path().join("dev/ttyUSB3");
    let out = qrescue(
        &[
            "preflight",
            "--root",
            root,
            "--port",
            s(&port),
            "--backup-dir",
            root,
            "--need",
            "1M",
        ],
        T,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "ok      No other program holds {}",
            port.display()
        )),
        "{text}"
    );
    assert!(text.contains("1 MiB needed"), "{text}");
    assert!(text.contains("Preflight: nothing in the way."), "{text}");

    // A picocom on the named port, and a backup that cannot fit.
    let busy = tmp.path().join("dev/ttyUSB7");
    let out = qrescue(
        &[
            "preflight",
            "--root",
            root,
            "--port",
            s(&busy),
            "--backup-dir",
            root,
            "--need",
            "1000000T",
        ],
        T,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("PROBLEM The terminal program picocom (pid 900) holds"),
        "{text}"
    );
    assert!(
        text.contains("PROBLEM Not enough room for the backup"),
        "{text}"
    );
    assert!(stderr(&out).contains("preflight found 2 problem(s)"));

    let out = qrescue(&["preflight", "--need", "12X"], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
}

#[test]
fn preflight_without_a_modem_says_so() {
    let tmp = tempdir();
    fs::create_dir_all(tmp.path().join("sys/bus/usb/devices")).unwrap();
    let root = s(tmp.path());
    let out = qrescue(&["preflight", "--root", root, "--backup-dir", root], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("No modem plugged in"),
        "{}",
        describe(&out)
    );
}
