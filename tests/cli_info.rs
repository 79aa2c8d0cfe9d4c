//! `qrescue info` in every mode against the emulator in separate processes: normal mode found
//! through `--sim` (AT identity, DIAG revision, composition) and through explicit `--at`/`--dm`
//! ptys, EDL found through `--sim` (Sahara), `--port` as before; no modem and several modems.
//! And `qrescue backup` of a normal-mode modem: an NV/EFS backup over DIAG, listed, verified,
//! refused by `restore`. Every wait is bounded; nothing depends on timing.

mod common;

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::{code, describe, qrescue, s, stdout, tempdir};
use qrescue::sim::normal::unit;
use qrescue::sim::profile::Profile;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// `qrescue sim --pty --socket S ARGS…`, waiting (bounded) for its first device to appear.
struct Emulator {
    child: std::process::Child,
    _rx: mpsc::Receiver<String>,
    socket: std::path::PathBuf,
    appear: Value,
    _dir: tempfile::TempDir,
}

impl Emulator {
    fn start(args: &[&str]) -> Emulator {
        let dir = tempdir();
        let socket = dir.path().join("sim.sock");
        let (child, rx) = common::spawn_lines(
            Command::new(common::bin())
                .args(["sim", "--pty", "--socket", s(&socket)])
                .args(args),
        );
        let ready = common::next_json(&rx, T);
        assert_eq!(ready["event"], "ready", "{ready}");
        let appear = loop {
            let v = common::next_json(&rx, T);
            if v["event"] == "appear" {
                break v;
            }
        };
        Emulator {
            child,
            _rx: rx,
            socket,
            appear,
            _dir: dir,
        }
    }

    fn sock(&self) -> &str {
        s(&self.socket)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn one_json(out: &std::process::Output) -> Value {
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one JSON object: {}", describe(out));
    serde_json::from_str(lines[0]).unwrap()
}

fn ec25_imei() -> String {
    unit::unit_imei(&Profile::by_name("ec25").unwrap().for_unit(1))
}

#[test]
fn normal_mode_found_through_the_emulator_answers_over_at_and_diag() {
    let sim = Emulator::start(&["--profile", "ec25", "--mode", "normal"]);
    let out = qrescue(&["info", "--sim", sim.sock(), "--json"], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = one_json(&out);
    assert_eq!(v["event"], "info");
    assert_eq!(v["mode"], "normal");
    assert_eq!(v["device"]["usb_id"], "2c7c:0125");
    assert_eq!(v["at"]["imei"]["digits"], ec25_imei());
    assert_eq!(v["at"]["cfun"]["level"], 1);
    assert_eq!(v["identity"]["imei"], ec25_imei());
    assert!(v["identity"]["iccid"].as_str().unwrap().starts_with("89"));
    let rev = v["identity"]["revision"].as_str().unwrap();
    assert!(rev.starts_with("EC25"), "{rev}");
    // The revision over DIAG agrees with AT+QGMR.
    assert_eq!(v["diag"]["build_id"]["sw_revision"], rev);
    // The composition by interface number, without tty names.
    let ports = v["identity"]["usb"]["ports"].as_array().unwrap();
    let roles: Vec<(u64, &str)> = ports
        .iter()
        .map(|p| {
            (
                p["interface"].as_u64().unwrap(),
                p["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        &roles[..4],
        &[(0, "DM"), (1, "NMEA"), (2, "AT"), (3, "modem")]
    );
    assert!(ports.iter().all(|p| p.get("tty").is_none()));
    // The emulator does not model AT+QSECBOOT: not offered, not a failure.
    assert_eq!(v["secboot"]["state"], "not_supported");
    assert_eq!(v["advice"].as_array().unwrap().len(), 0, "{v}");

    // The same for people.
    let out = qrescue(&["info", "--sim", sim.sock()], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("IMEI      {}", ec25_imei())),
        "{text}"
    );
    assert!(text.contains("CFUN      1 (full functionality)"), "{text}");
    assert!(text.contains("if2 AT"), "{text}");

    // Explicit ports: the AT and DM ptys the emulator printed.
    let at = sim.appear["ports"]["at"].as_str().unwrap();
    let dm = sim.appear["ports"]["dm"].as_str().unwrap();
    let out = qrescue(&["info", "--at", at, "--dm", dm, "--json"], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = one_json(&out);
    assert_eq!(v["mode"], "normal");
    assert_eq!(v["identity"]["imei"], ec25_imei());
    assert!(v["device"].is_null());
    assert!(v["diag"]["build_id"]["sw_revision"].is_string());
    // Only the DM port: the revision still comes, and the missing AT port is said.
    let out = qrescue(&["info", "--dm", dm, "--json"], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = one_json(&out);
    assert!(v["identity"]["revision"].is_string(), "{v}");
    assert!(v["identity"].get("imei").is_none(), "{v}");
    assert!(
        v["advice"].as_array().unwrap()[0]
            .as_str()
            .unwrap()
            .contains("No AT port"),
        "{v}"
    );
}

#[test]
fn edl_found_through_the_emulator_answers_over_sahara_and_port_works_as_before() {
    let sim = Emulator::start(&["--profile", "ec25"]);
    let out = qrescue(&["info", "--sim", sim.sock(), "--json"], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = one_json(&out);
    assert_eq!(v["mode"], "edl");
    assert_eq!(v["device"]["usb_id"], "05c6:9008");
    let serial = v["identity"]["edl"]["serial_hex"].as_str().unwrap();
    assert!(serial.starts_with("0x") && serial.len() == 10, "{v}");
    assert_eq!(v["info"]["serial_hex"].as_str(), Some(serial));
    // --port keeps working as it did (the same Sahara identity).
    let pty = sim.appear["pty"].as_str().unwrap();
    let out = qrescue(&["info", "--port", pty, "--json"], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = one_json(&out);
    assert_eq!(v["info"]["serial_hex"].as_str(), Some(serial));
    assert_eq!(v["port"], pty);
}

#[test]
fn no_modem_and_several_modems_are_said_plainly() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("sys/bus/usb/devices")).unwrap();
    let out = qrescue(&["info", "--sysfs-root", s(dir.path())], T);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("No modem found"),
        "{}",
        describe(&out)
    );

    let two = tempdir();
    let devs = common::fake_eg25g_sysfs(two.path());
    // A second EG25-G on 1-5: qrescue will not guess.
    copy_dir(&devs.join("1-4"), &devs.join("1-5"));
    for n in 0..5 {
        copy_dir(
            &devs.join(format!("1-4:1.{n}")),
            &devs.join(format!("1-5:1.{n}")),
        );
    }
    let out = qrescue(&["info", "--sysfs-root", s(two.path())], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(err.contains("2 modems found"), "{err}");
    assert!(err.contains("--at TTY"), "{err}");
    // --port and --at exclude each other.
    let out = qrescue(&["info", "--port", "/dev/null", "--at", "/dev/null"], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_normal_mode_modem_gets_an_nv_efs_backup_that_is_listed_verified_and_never_restored() {
    let sim = Emulator::start(&["--profile", "ec25", "--mode", "normal"]);
    let dir = tempdir();
    let store = dir.path().join("store");
    let out = qrescue(
        &["backup", "--sim", sim.sock(), "--out", s(&store), "--json"],
        T,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let done = common::last_json(&out);
    assert_eq!(done["event"], "backup", "{done}");
    let name = done["name"].as_str().unwrap().to_string();
    let m = &done["manifest"];
    assert_eq!(m["kind"], "nv-efs");
    assert_eq!(m["identity"]["imei"], ec25_imei());
    assert_eq!(m["identity"]["usb"]["usb_id"], "2c7c:0125");
    let items: Vec<String> = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["origin"].to_string())
        .collect();
    assert!(
        items.iter().any(|i| i.contains("\"item\":550")),
        "{items:?}"
    );
    assert!(
        items
            .iter()
            .any(|i| i.contains("/nv/item_files/rfnv/00020000")),
        "{items:?}"
    );
    assert!(common::json_lines(&out)
        .iter()
        .any(|l| l["event"] == "diag_backup_progress"));

    // Listed and verified like any backup.
    let out = qrescue(&["backup", "list", "--store", s(&store)], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains(&name) && text.contains("nv-efs"), "{text}");
    assert!(text.contains("NV items 550"), "{text}");
    let out = qrescue(&["backup", "verify", &name, "--store", s(&store)], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));

    // Never restored: plain words, exit 1, nothing opened.
    let out = qrescue(
        &[
            "restore",
            &name,
            "--store",
            s(&store),
            "--port",
            "/dev/null",
            "--yes",
        ],
        T,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("reference and manual recovery"),
        "{}",
        describe(&out)
    );

    // Explicit ports work too (a second backup: a new folder, nothing overwritten).
    let at = sim.appear["ports"]["at"].as_str().unwrap();
    let dm = sim.appear["ports"]["dm"].as_str().unwrap();
    let out = qrescue(
        &[
            "backup",
            "--diag",
            "--at",
            at,
            "--dm",
            dm,
            "--out",
            s(&store),
        ],
        T,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 2);
    // --diag and --port exclude each other.
    let out = qrescue(&["backup", "--diag", "--port", "/dev/null"], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
}
