//! `qrescue backup`, `backup list`, `backup verify`, `restore` and the backup gate of
//! `flash PACKAGE` (real binary) against `qrescue sim` (EC25-E NAND) on a pty, with the store
//! in a temporary `QRESCUE_DATA_DIR`:
//! a factory package is refused with no backup on file and allowed once a verified backup of
//! this unit exists; the backup is listed, verified, restored (only EFS2) after the factory
//! flash overwrote it and read back equal; restore refuses without a terminal or --yes, refuses
//! another unit, and `backup verify` finds a damaged file.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, code, describe, json_lines, s, sha256_file, stderr, stdout, tempdir, Sim};
use serde_json::Value;

const BOUND: Duration = Duration::from_secs(60);
const UPDATE_XML: &str = "update/firehose/rawprogram_nand_p4K_b256K_update.xml";

/// `qrescue ARGS…` with `QRESCUE_DATA_DIR=data`, bounded.
fn q(data: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("QRESCUE_DATA_DIR", data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qrescue");
    let deadline = Instant::now() + BOUND;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "qrescue {args:?} did not finish within {BOUND:?}: {}",
                describe(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An EC25 package with a `_factory` set that erases EFS2 and writes cefs.mbn there.
fn factory_package(data: &Path, root: &Path) {
    let out = q(
        data,
        &[
            "--json",
            "sim",
            "--profile",
            "ec25",
            "--package-mib",
            "1",
            "--emit-package",
            s(root),
        ],
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let update = std::fs::read_to_string(root.join(UPDATE_XML)).unwrap();
    let efs2 = |kind: &str, file: &str| {
        format!(
            "  <{kind} PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\"{file} label=\"EFS2\" last_sector=\"6911\" num_partition_sectors=\"5632\" physical_partition_number=\"0\" start_sector=\"1280\"/>\n"
        )
    };
    let extra = efs2("erase", "") + &efs2("program", " filename=\"..\\cefs.mbn\"");
    std::fs::write(
        root.join("update/firehose/rawprogram_nand_p4K_b256K_factory.xml"),
        update.replace("</data>", &format!("{extra}</data>")),
    )
    .unwrap();
    std::fs::write(root.join("update/cefs.mbn"), vec![0x5a; 16 << 10]).unwrap();
}

/// Wait until the unit reset by the last command is back in its boot ROM: the sim announces the
/// programmer's exit, then `qrescue info` gets the boot ROM's answer (which leaves it at a fresh
/// HELLO for the next command).
fn back_in_boot_rom(sim: &Sim, data: &Path) {
    assert!(
        sim.wait_event("programmer_exit", BOUND).is_some(),
        "the programmer exits on reset"
    );
    let out = q(data, &["info", "--port", sim.port()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
}

fn list(data: &Path) -> Value {
    let out = q(data, &["--json", "backup", "list"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    json_lines(&out).remove(0)
}

#[test]
fn backup_gate_list_verify_and_restore_through_the_cli() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let prog = dir.path().join("prog.mbn");
    let pkg = dir.path().join("pkg");
    factory_package(&data, &pkg);
    let out = q(
        &data,
        &["sim", "--profile", "ec25", "--write-programmer", s(&prog)],
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));

    let sim = Sim::start(&["--profile", "ec25"]);
    let unit = sim.ready["serial"].as_str().unwrap().to_string();
    let port = sim.port().to_string();
    let flash_factory = || {
        q(
            &data,
            &[
                "flash",
                s(&pkg),
                "--set",
                "factory",
                "--port",
                &port,
                "--programmer",
                s(&prog),
            ],
        )
    };

    // No backup on file: refused before the port is opened, and the way out is named.
    let out = flash_factory();
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("stopped before sending anything"), "{err}");
    assert!(err.contains("No backup is on file"), "{err}");
    assert!(err.contains("qrescue backup --port PORT"), "{err}");

    // Without a port qrescue looks for the modem; with none there it says how to name one
    // (exit 3); the list is empty.
    let empty = data.join("empty-usb");
    std::fs::create_dir_all(empty.join("sys/bus/usb/devices")).unwrap();
    let out = q(&data, &["backup", "--sysfs-root", s(&empty)]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(stderr(&out).contains("--port"), "{}", describe(&out));
    assert_eq!(list(&data)["backups"].as_array().unwrap().len(), 0);

    // The backup.
    let out = q(
        &data,
        &["backup", "--port", &port, "--programmer", s(&prog)],
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("serial   {unit}")), "{text}");
    assert!(text.contains("read EFS2"), "{text}");
    assert!(text.contains("verify EFS2 (second read)"), "{text}");
    assert!(
        text.contains("partitions: EFS2, sys_rev, RAWDATA"),
        "{text}"
    );
    assert!(text.contains("The modem was reset."), "{text}");
    back_in_boot_rom(&sim, &data);
    let l = list(&data);
    let backups = l["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{l}");
    let b = &backups[0];
    assert_eq!(b["unit"], unit.as_str());
    assert_eq!(b["kind"], "device-unique");
    let name = b["name"].as_str().unwrap().to_string();
    assert!(name.starts_with(unit.trim_start_matches("0x")), "{name}");
    let out = q(&data, &["backup", "list"]);
    assert!(stdout(&out).contains(&name), "{}", describe(&out));
    let out = q(&data, &["backup", "verify", &name]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("is intact: 3 file(s)"),
        "{}",
        describe(&out)
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(Path::new(b["path"].as_str().unwrap()).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let efs2 = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["partition"] == "EFS2")
        .unwrap()
        .clone();

    // With the verified backup on file the factory set passes the gate for this unit.
    let out = flash_factory();
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("Modem: unit {unit} (1 backup(s) of it on file")),
        "{text}"
    );
    assert!(text.contains("covered by backup of EFS2"), "{text}");
    back_in_boot_rom(&sim, &data);

    // Restore asks first: no terminal and no --yes is a refusal.
    let out = q(
        &data,
        &["restore", &name, "--port", &port, "--programmer", s(&prog)],
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("no terminal"), "{}", describe(&out));
    assert!(
        stdout(&out).contains("Restore backup"),
        "the plan is shown first"
    );

    let out = q(
        &data,
        &[
            "restore",
            &name,
            "--only",
            "efs2",
            "--yes",
            "--port",
            &port,
            "--programmer",
            s(&prog),
        ],
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("Restored 1 region(s)"),
        "{}",
        describe(&out)
    );

    // EFS2 holds the backup again (not the factory's cefs.mbn).
    let back = dir.path().join("efs2.bin");
    let out = q(
        &data,
        &[
            "read",
            "--port",
            &port,
            "--programmer",
            s(&prog),
            "--label",
            "EFS2",
            "--out",
            s(&back),
        ],
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(sha256_file(&back), efs2["sha256"].as_str().unwrap());
    drop(sim);

    // Another unit: refused before anything is uploaded or written.
    let other = Sim::start(&["--profile", "ec25", "--seed", "2"]);
    assert_ne!(other.ready["serial"].as_str().unwrap(), unit);
    let out = q(
        &data,
        &[
            "restore",
            &name,
            "--yes",
            "--port",
            other.port(),
            "--programmer",
            s(&prog),
        ],
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        stderr(&out).contains("is not from this modem"),
        "{}",
        describe(&out)
    );
    assert!(
        !stdout(&out).contains("Uploaded programmer"),
        "{}",
        describe(&out)
    );
    drop(other);

    // A damaged file is found (exit 5).
    let f = Path::new(b["path"].as_str().unwrap()).join(efs2["name"].as_str().unwrap());
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[4096] ^= 0x01;
    std::fs::write(&f, &bytes).unwrap();
    let out = q(&data, &["backup", "verify", &name]);
    assert_eq!(code(&out), 5, "{}", describe(&out));
    assert!(stderr(&out).contains("is damaged"), "{}", describe(&out));
}

#[test]
fn backup_command_line_shapes() {
    use clap::Parser;
    let parse = |v: &[&str]| qrescue::cli::Cli::try_parse_from(v);
    assert!(parse(&["qrescue", "backup", "--port", "/dev/x", "--full", "--out", "d"]).is_ok());
    assert!(parse(&["qrescue", "backup", "list"]).is_ok());
    assert!(parse(&["qrescue", "backup", "list", "--store", "d"]).is_ok());
    assert!(parse(&["qrescue", "backup", "verify", "b"]).is_ok());
    assert!(parse(&["qrescue", "backup", "--port", "/dev/x", "list"]).is_err());
    assert!(
        parse(&["qrescue", "restore", "b"]).is_err(),
        "restore needs a port"
    );
    assert!(
        parse(&["qrescue", "restore", "b", "--port", "/dev/x", "--only", "efs2,fsg", "--yes"])
            .is_ok()
    );
}
