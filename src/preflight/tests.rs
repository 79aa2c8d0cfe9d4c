use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use proptest::prelude::*;

use super::space::{bytes, finding, parse_size};
use super::*;
use crate::device::InterfaceSnapshot;

/// An EG25-G in normal mode on 1-4 (device 9): DM, NMEA, AT, modem ttys on interfaces 0-3.
fn eg25() -> DeviceSnapshot {
    DeviceSnapshot {
        bus: 1,
        ports: vec![4],
        address: 9,
        vid: 0x2c7c,
        pid: 0x0125,
        bcd_device: 0x0318,
        manufacturer: None,
        product: Some("EG25-G".into()),
        serial: None,
        speed: None,
        interfaces: (0..5u8)
            .map(|n| InterfaceSnapshot {
                number: n,
                alt: 0,
                class: 0xff,
                subclass: if n == 0 || n == 4 { 0xff } else { 0 },
                protocol: if n == 0 || n == 4 { 0xff } else { 0 },
                endpoints: Vec::new(),
                driver: Some(if n == 4 { "qmi_wwan" } else { "option" }.into()),
                tty: (n < 4).then(|| format!("/dev/ttyUSB{n}")),
            })
            .collect(),
        origin: None,
    }
}

/// A process in the fake /proc holding `fds` (paths under the fake root, or absolute).
fn process(root: &Path, pid: u32, comm: &str, argv: &[&str], fds: &[&Path]) {
    let dir = root.join("proc").join(pid.to_string());
    fs::create_dir_all(dir.join("fd")).unwrap();
    fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
    fs::write(dir.join("cmdline"), argv.join("\0") + "\0").unwrap();
    for (i, target) in fds.iter().enumerate() {
        symlink(target, dir.join("fd").join((i + 3).to_string())).unwrap();
    }
}

/// /dev with the EG25's ttys and usbfs node, plus an unrelated tty.
fn fake_dev(root: &Path) {
    fs::create_dir_all(root.join("dev/bus/usb/001")).unwrap();
    for n in 0..4 {
        fs::write(root.join(format!("dev/ttyUSB{n}")), "").unwrap();
    }
    fs::write(root.join("dev/ttyUSB9"), "").unwrap();
    fs::write(root.join("dev/bus/usb/001/009"), "").unwrap();
    fs::write(root.join("dev/null"), "").unwrap();
}

#[test]
fn holders_are_found_named_and_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fake_dev(root);
    let dev = root.join("dev");
    process(
        root,
        101,
        "ModemManager",
        &["/usr/sbin/ModemManager"],
        &[
            &dev.join("null"),
            &dev.join("ttyUSB2"),
            &dev.join("ttyUSB0"),
        ],
    );
    process(
        root,
        202,
        "gpsd",
        &["/usr/sbin/gpsd", "-N", "/dev/ttyUSB1"],
        &[&dev.join("ttyUSB1")],
    );
    process(
        root,
        303,
        "minicom",
        &["minicom", "-D", "/dev/ttyUSB9"],
        &[&dev.join("ttyUSB9")],
    );
    process(
        root,
        404,
        "qrescue",
        &["qrescue", "flash"],
        &[&dev.join("bus/usb/001/009")],
    );
    process(
        root,
        505,
        "bash",
        &["-bash"],
        &[Path::new("/nonexistent/pts/0")],
    );
    // Not processes: ignored.
    fs::create_dir_all(root.join("proc/self/fd")).unwrap();
    fs::create_dir_all(root.join("proc/sys")).unwrap();
    // A process without an fd folder (a zombie): skipped.
    fs::create_dir_all(root.join("proc/606")).unwrap();

    let roots = Roots::under(root);
    let nodes = modem_nodes(&eg25(), &roots);
    let paths: Vec<String> = nodes.iter().map(|n| n.path.display().to_string()).collect();
    assert_eq!(nodes.len(), 5, "{paths:?}");
    assert!(nodes[2].what.starts_with("AT port (if2)"), "{:?}", nodes[2]);
    assert!(
        !nodes[1].matters,
        "the NMEA port does not matter for flashing"
    );
    assert_eq!(nodes[4].path, dev.join("bus/usb/001/009"));

    let scan = scan_holders(
        &roots,
        &nodes.iter().map(|n| n.path.clone()).collect::<Vec<_>>(),
    );
    let who: Vec<(u32, HolderKind)> = scan.holders.iter().map(|h| (h.pid, h.kind)).collect();
    assert_eq!(
        who,
        [
            (101, HolderKind::ModemManager),
            (202, HolderKind::Gpsd),
            (404, HolderKind::Qrescue)
        ]
    );
    assert_eq!(scan.scanned, 5);
    assert_eq!(scan.unreadable, 0);
    let mm = &scan.holders[0];
    assert_eq!(mm.nodes.len(), 2);
    assert_eq!(mm.cmdline, "/usr/sbin/ModemManager");

    let findings = check_holders(&roots, "the EG25-G at 1-4", &nodes);
    assert_eq!(findings.len(), 3);
    let f = &findings[0];
    assert_eq!(f.severity, Severity::Error);
    assert!(
        f.title.starts_with("ModemManager (pid 101) holds"),
        "{}",
        f.title
    );
    assert!(
        f.title.contains("AT port (if2)") && f.title.contains("DM port (if0)"),
        "{}",
        f.title
    );
    let fixes = f.fixes.join("\n");
    assert!(fixes.contains("systemctl stop ModemManager"), "{fixes}");
    assert!(fixes.contains("mmcli -m N --inhibit"), "{fixes}");
    assert!(fixes.contains("ID_MM_DEVICE_IGNORE"), "{fixes}");
    // gpsd holds only the NMEA port: worth knowing, not in the way of a flash.
    assert_eq!(findings[1].severity, Severity::Warning);
    assert!(findings[1].fixes[0].contains("systemctl stop gpsd"));
    assert!(
        findings[2]
            .title
            .starts_with("Another qrescue (pid 404) holds"),
        "{}",
        findings[2].title
    );
    assert!(findings[2].title.contains("USB device"));
    assert_eq!(worst(&findings), Some(Severity::Error));
    let j = serde_json::to_value(f).unwrap();
    assert_eq!(j["check"], "holder");
    assert_eq!(j["holder"]["kind"], "modem-manager");
    assert_eq!(j["holder"]["pid"], 101);

    // Leaving a process out (qrescue itself on a real host).
    let mut own = Roots::under(root);
    own.exclude_pid = Some(404);
    let scan = scan_holders(&own, &[dev.join("bus/usb/001/009")]);
    assert!(scan.holders.is_empty());

    // A port nobody holds.
    let free = vec![Node {
        path: dev.join("ttyUSB3"),
        what: "modem port (if3)".into(),
        matters: true,
    }];
    let f = check_holders(&roots, "/dev/ttyUSB3", &free);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].severity, Severity::Info);
    assert!(f[0].title.contains("No other program holds /dev/ttyUSB3"));
}

#[test]
fn a_missing_proc_or_no_nodes_find_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = Roots::under(tmp.path());
    assert_eq!(
        scan_holders(&roots, &[tmp.path().join("dev/ttyUSB0")]),
        Scan::default()
    );
    assert_eq!(scan_holders(&Roots::host(), &[]), Scan::default());
    assert_eq!(
        roots.dev_path("/dev/ttyUSB2"),
        tmp.path().join("dev/ttyUSB2")
    );
    assert_eq!(roots.dev_path("/tmp/pty3"), Path::new("/tmp/pty3"));
}

#[test]
fn holder_kinds_by_name() {
    let cases = [
        (
            "ModemManager",
            "/usr/sbin/ModemManager --debug",
            HolderKind::ModemManager,
        ),
        ("qmi-proxy", "/usr/libexec/qmi-proxy", HolderKind::QmiProxy),
        (
            "mbim-proxy",
            "/usr/libexec/mbim-proxy",
            HolderKind::MbimProxy,
        ),
        ("gpsd", "gpsd -N", HolderKind::Gpsd),
        ("gsmd", "/usr/sbin/gsmd", HolderKind::RouterDaemon),
        ("mobifd", "/usr/bin/mobifd", HolderKind::RouterDaemon),
        (
            "quectel-CM",
            "quectel-CM -s internet",
            HolderKind::ConnectionTool,
        ),
        ("uqmi", "uqmi -d /dev/cdc-wdm0", HolderKind::ConnectionTool),
        (
            "python3",
            "python3 /opt/edl/edl printgpt",
            HolderKind::Flasher,
        ),
        ("QFirehose", "./QFirehose -f pkg", HolderKind::Flasher),
        ("qrescue", "qrescue watch", HolderKind::Qrescue),
        ("minicom", "minicom -D /dev/ttyUSB2", HolderKind::Terminal),
        ("screen", "SCREEN /dev/ttyUSB2 115200", HolderKind::Terminal),
        ("cat", "cat /dev/ttyUSB2", HolderKind::Other),
        ("", "", HolderKind::Other),
    ];
    for (comm, cmd, kind) in cases {
        assert_eq!(HolderKind::of(comm, cmd), kind, "{comm} {cmd}");
        let h = Holder {
            pid: 7,
            name: comm.into(),
            cmdline: cmd.into(),
            kind,
            nodes: vec![],
        };
        let fixes = holders::how_to_free(&h);
        assert!(
            !fixes.is_empty() && fixes.iter().all(|f| !f.is_empty()),
            "{kind:?}"
        );
        assert!(!kind.why().is_empty());
    }
}

#[test]
fn space_findings() {
    let dir = Path::new("/backups");
    let s = Space {
        available: 1000 << 20,
        total: 4000 << 20,
    };
    let f = finding(dir, &s, Some(2000 << 20));
    assert_eq!(f.severity, Severity::Error);
    assert!(
        f.title.contains("1000 MiB free, 2.0 GiB needed"),
        "{}",
        f.title
    );
    assert!(f.fixes[0].contains("--backup-dir"));
    assert_eq!(
        finding(dir, &s, Some(950 << 20)).severity,
        Severity::Warning
    );
    let ok = finding(dir, &s, Some(512 << 20));
    assert_eq!(ok.severity, Severity::Info);
    assert!(ok.title.contains("512 MiB needed"), "{}", ok.title);
    let unknown = finding(dir, &s, None);
    assert_eq!(unknown.severity, Severity::Info);
    assert!(unknown.detail.contains("--need"));

    let tmp = tempfile::tempdir().unwrap();
    let real = free_space(tmp.path()).unwrap();
    assert!(real.total > 0 && real.available <= real.total);
    assert_eq!(check_space(tmp.path(), Some(1)).severity, Severity::Info);
    assert_eq!(
        check_space(tmp.path(), Some(u64::MAX / 4)).severity,
        Severity::Error
    );
    let missing = check_space(&tmp.path().join("nope"), Some(1));
    assert_eq!(missing.severity, Severity::Error);
    assert!(missing.title.contains("Cannot read the free space"));
}

#[test]
fn sizes_parse_and_print() {
    assert_eq!(parse_size("536870912"), Ok(512 << 20));
    assert_eq!(parse_size("512M"), Ok(512 << 20));
    assert_eq!(parse_size("512MiB"), Ok(512 << 20));
    assert_eq!(parse_size("1.5G"), Ok(3 << 29));
    assert_eq!(parse_size("64k"), Ok(64 << 10));
    assert_eq!(parse_size(" 2 GB "), Ok(2 << 30));
    for bad in ["", "M", "12X", "1.2.3G", "-5", "99999999999999999999T"] {
        assert!(parse_size(bad).is_err(), "{bad:?}");
    }
    assert_eq!(bytes(800), "800 B");
    assert_eq!(bytes(512 << 20), "512 MiB");
    assert_eq!(bytes(3 << 29), "1.5 GiB");
}

proptest! {
    #[test]
    fn size_parser_never_panics(s in ".{0,40}") {
        let _ = parse_size(&s);
    }

    #[test]
    fn sizes_round_trip(n in 0u64..(1u64 << 50)) {
        prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
    }

    #[test]
    fn holder_kind_never_panics(comm in ".{0,32}", cmd in ".{0,200}") {
        let k = HolderKind::of(&comm, &cmd);
        prop_assert!(!k.label(&comm).is_empty());
    }
}
