//! The classifier and the dump parser against real descriptors (byte-identical copies of
//! ../shared/realdata/logs in tests/data/reallogs; sources are named in each file's header).

use qrescue::device::classify::{classify, Mode, PortRole};
use qrescue::device::identity::{DeviceTracker, MatchRule};
use qrescue::device::kernlog::{parse_kernel_log, timeline};
use qrescue::device::lsusb::{parse_dump, ParsedDevice};
use qrescue::device::{DeviceChange, DeviceEvent, DeviceSnapshot, Speed};

fn real(name: &str) -> String {
    let path = format!("{}/tests/data/reallogs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn devices(name: &str) -> Vec<ParsedDevice> {
    let d = parse_dump(&real(name)).unwrap();
    assert!(d.warnings.is_empty(), "{name}: {:?}", d.warnings);
    d.devices
}

#[test]
fn rm500q_normal_mode_lsusb_v() {
    let d = devices("lsusb_v_quectel_rm500q_2c7c_0800_normal_mode.txt");
    assert_eq!(d.len(), 1);
    let s = &d[0].snapshot;
    assert_eq!((s.bus, s.address), (4, 7));
    assert_eq!(s.id(), "2c7c:0800");
    assert_eq!(s.bcd_text(), "4.14");
    assert_eq!(s.manufacturer.as_deref(), Some("Quectel"));
    assert_eq!(s.product.as_deref(), Some("LTE-A Module"));
    assert_eq!(s.serial.as_deref(), Some("40046d60"));
    assert_eq!(s.interfaces.len(), 6);
    assert_eq!(d[0].declared_interfaces, Some(6));
    // SuperSpeed: 1024-byte bulk packets (the dump states no negotiated speed).
    assert_eq!(s.speed, Some(Speed::Super));
    assert!(d[0].speed_inferred);
    let dm = s.interface(0).unwrap();
    assert_eq!((dm.class, dm.subclass, dm.protocol), (0xff, 0xff, 0x30));
    assert_eq!(
        dm.bulk_pair().map(|(i, o)| (i.address, o.address)),
        Some((0x81, 0x01))
    );
    assert_eq!(s.interface(4).unwrap().endpoints[1].max_packet_size, 1024);

    let c = classify(s);
    assert_eq!(
        c.mode,
        Mode::QuectelNormal {
            model: "RM500Q/RM5xx (SDX55)".into()
        }
    );
    let roles: Vec<(u8, PortRole)> = c.ports.iter().map(|p| (p.interface, p.role)).collect();
    // The author's note: "order is diag, nmea, at_port, modem, rmnet and adb".
    assert_eq!(
        roles,
        vec![
            (0, PortRole::Dm),
            (1, PortRole::Nmea),
            (2, PortRole::At),
            (3, PortRole::Modem),
            (4, PortRole::Net),
            (5, PortRole::Adb),
        ]
    );
    assert_eq!(
        c.port(PortRole::Dm).unwrap().class.as_deref(),
        Some("ff/ff/30")
    );
    assert!(c.ports.iter().all(|p| p.seen));
}

#[test]
fn qfirehose_switch_log_shows_edl_with_protocol_0x11_on_qcserial() {
    let d = devices("qfirehose_rg500q_sdx55_switch_to_edl_and_sahara.txt");
    assert_eq!(d.len(), 1);
    let s = &d[0].snapshot;
    assert_eq!(s.location(), "3-1");
    assert_eq!((s.bus, s.address), (3, 2));
    assert_eq!(s.id(), "05c6:9008");
    assert_eq!(d[0].declared_interfaces, Some(1));
    // USB 2.0 after the switch: 512-byte bulk packets.
    assert_eq!(s.speed, Some(Speed::High));
    let c = classify(s);
    assert_eq!(c.mode, Mode::Edl);
    let p = c.port(PortRole::Sahara).unwrap();
    assert_eq!(p.interface, 0);
    assert_eq!(p.class.as_deref(), Some("ff/ff/11"));
    assert_eq!(p.driver.as_deref(), Some("qcserial"));
    assert!(
        c.notes.iter().any(|n| n.contains("qcserial")),
        "{:?}",
        c.notes
    );
}

#[test]
fn descriptor_snippets_classify_as_the_sources_say() {
    let d = devices("usb_ids_edl_900e_and_descriptor_snippets.txt");
    let got: Vec<(String, &str)> = d
        .iter()
        .map(|p| (p.snapshot.id(), classify(&p.snapshot).tag()))
        .collect();
    let want = [
        ("05c6:9008", "edl"),    // lsusb one-liner (EG25-G README)
        ("05c6:9008", "edl"),    // QFirehose: 3-1, ff/ff/11
        ("05c6:9008", "edl"),    // Windows device path, bus name QHSUSB__BULK
        ("2c7c:0125", "normal"), // lsusb one-liner
        ("2c7c:0125", "normal"), // trimmed lsusb -v, EG25-G
        ("2c7c:0296", "normal"), // BG96: bcdDevice 0.00 and Qualcomm strings, still normal
        ("2c7c:0801", "normal"), // RM530N-GL, excerpt cut after interface 0
    ];
    let want: Vec<(String, &str)> = want.iter().map(|(a, b)| (a.to_string(), *b)).collect();
    assert_eq!(got, want);

    // The Windows bus name is the product string.
    assert_eq!(d[2].snapshot.product.as_deref(), Some("QHSUSB__BULK"));
    // The trimmed EG25-G dump: five interfaces, DM on 0, AT on 2.
    let eg25 = classify(&d[4].snapshot);
    assert_eq!(d[4].snapshot.product.as_deref(), Some("EG25-G"));
    assert_eq!(eg25.port(PortRole::Dm).unwrap().interface, 0);
    assert_eq!(eg25.port(PortRole::At).unwrap().interface, 2);
    // BG96: bcdDevice 0.00 is its normal state.
    assert_eq!(d[5].snapshot.bcd_device, 0);
    assert_eq!(
        d[5].snapshot.product.as_deref(),
        Some("Qualcomm CDMA Technologies MSM")
    );
    // RM530N-GL: stated SuperSpeed, bcdDevice 5.04, only interface 0 (DIAG) before the cut.
    let rm = &d[6];
    assert_eq!(rm.snapshot.speed, Some(Speed::Super));
    assert!(!rm.speed_inferred);
    assert_eq!(rm.snapshot.bcd_text(), "5.04");
    assert!(rm.dump_notes().iter().any(|n| n.contains("1 of the 5")));
    let c = classify(&rm.snapshot);
    assert_eq!(
        c.port(PortRole::Dm).unwrap().class.as_deref(),
        Some("ff/ff/30")
    );
}

#[test]
fn crash_dump_900e_reports_interface_protocol_0x10() {
    // The file quotes `sudo lsusb -d 05c6: -v | grep bInterfaceProtocol` from a device that
    // qdl reports as PID 0x900e; grep removed lsusb's `Bus … ID` header, which is put back here.
    let text = real("usb_ids_edl_900e_and_descriptor_snippets.txt");
    let grep: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("$ sudo lsusb -d 05c6:"))
        .take(2)
        .collect();
    assert!(grep[1].contains("bInterfaceProtocol"), "{grep:?}");
    let dump = format!(
        "Bus 001 Device 004: ID 05c6:900e Qualcomm, Inc.\n{}\n",
        grep.join("\n")
    );
    let d = parse_dump(&dump).unwrap();
    let s = &d.devices[0].snapshot;
    assert_eq!(s.interfaces.len(), 1);
    assert_eq!(s.interfaces[0].protocol, 0x10);
    let c = classify(s);
    assert_eq!(c.mode, Mode::CrashDump);
    assert_eq!(c.port(PortRole::Sahara).unwrap().interface, 0);
}

/// One `## SOURCE X` section of the kernel-log file.
fn dmesg_section(letter: char) -> String {
    let text = real("dmesg_eg25_crash_reenumeration.txt");
    let head = format!("{letter}:");
    text.split("\n## SOURCE ")
        .find(|s| s.starts_with(&head))
        .unwrap_or_else(|| panic!("no SOURCE {head}"))
        .to_string()
}

/// The file's header: every log is of a Quectel EG25-G, 2c7c:0125.
const EG25: (u16, u16) = (0x2c7c, 0x0125);

fn eg25_at(bus: u8, port: u8) -> DeviceSnapshot {
    DeviceSnapshot {
        bus,
        ports: vec![port],
        address: 3,
        vid: EG25.0,
        pid: EG25.1,
        bcd_device: 0x0318,
        manufacturer: Some("Quectel".into()),
        product: Some("EG25-G".into()),
        serial: None,
        speed: Some(Speed::High),
        interfaces: vec![],
        origin: None,
    }
}

fn appear_at(t_ms: u64, device: DeviceSnapshot) -> DeviceEvent {
    DeviceEvent {
        t_ms,
        change: DeviceChange::Appear { device },
    }
}

#[test]
fn kernel_log_attach_maps_ttys_to_interfaces() {
    // SOURCE B: option binds interfaces 1-3 (ttyUSB1-3), qmi_wwan interface 4.
    let lines = parse_kernel_log(&dmesg_section('B'));
    let ev = timeline(&lines, Some(EG25));
    let DeviceChange::Appear { device } = &ev[0].change else {
        panic!("{ev:?}")
    };
    assert_eq!(device.location(), "2-1");
    assert_eq!(ev[0].t_ms, 33_232_936);
    let c = classify(device);
    assert_eq!(c.tag(), "normal");
    let tty = |r: PortRole| c.port(r).and_then(|p| p.tty.clone());
    assert_eq!(tty(PortRole::Nmea).as_deref(), Some("/dev/ttyUSB1"));
    assert_eq!(tty(PortRole::At).as_deref(), Some("/dev/ttyUSB2"));
    assert_eq!(tty(PortRole::Modem).as_deref(), Some("/dev/ttyUSB3"));
    assert_eq!(
        device.interface(4).unwrap().driver.as_deref(),
        Some("qmi_wwan")
    );
}

#[test]
fn kernel_log_crash_then_reenumeration_on_the_companion_bus_keeps_the_identity() {
    // SOURCE A: the modem leaves 2-1 (EHCI); after failed descriptor reads it enumerates again
    // on 4-1 (OHCI, full speed) — same port, other bus.
    let lines = parse_kernel_log(&dmesg_section('A'));
    let ev = timeline(&lines, Some(EG25));
    let mut t = DeviceTracker::new();
    let first = t.observe(&appear_at(3_000_000, eg25_at(2, 1)));
    let obs: Vec<_> = ev.iter().map(|e| t.observe(e)).collect();
    assert_eq!(obs.len(), 2, "{ev:?}");
    assert_eq!(obs[0].rule, MatchRule::Vanished);
    assert_eq!(obs[1].id, first.id);
    assert_eq!(
        obs[1].rule,
        MatchRule::CompanionPort {
            from: "2-1".into(),
            to: "4-1".into(),
            gap_ms: 3_758_640 - 3_756_220
        }
    );
    let DeviceChange::Appear { device } = &ev[1].change else {
        panic!()
    };
    assert_eq!(device.speed, Some(Speed::Full));
}

#[test]
fn kernel_log_reset_comes_back_at_the_same_port() {
    // SOURCE C: `service eg25-manager restart`: 3-1 leaves and is back 3.8 s later.
    let lines = parse_kernel_log(&dmesg_section('C'));
    let ev = timeline(&lines, Some(EG25));
    let mut t = DeviceTracker::new();
    let first = t.observe(&appear_at(18_000_000, eg25_at(3, 1)));
    let obs: Vec<_> = ev.iter().map(|e| t.observe(e)).collect();
    assert_eq!(obs.len(), 2, "{ev:?}");
    assert_eq!(obs[1].id, first.id);
    assert_eq!(
        obs[1].rule,
        MatchRule::PortHistory {
            location: "3-1".into(),
            gap_ms: 18_527_625 - 18_523_793
        }
    );
}

#[test]
fn qfirehose_switch_to_edl_moves_from_4_1_to_3_1_and_keeps_the_identity() {
    // The RG500Q was in normal mode at 4-1 (SuperSpeed); `[003.272]` its sysfs node is gone;
    // `[004.273]` 05c6:9008 is found at 3-1.
    let text = real("qfirehose_rg500q_sdx55_switch_to_edl_and_sahara.txt");
    assert!(text.contains("[003.272]: fail to fopen /sys/bus/usb/devices/4-1/uevent"));
    let edl = parse_dump(&text).unwrap().devices.remove(0).snapshot;
    let mut normal = eg25_at(4, 1);
    normal.pid = 0x0800;
    normal.product = None;
    normal.speed = Some(Speed::Super);
    let mut t = DeviceTracker::new();
    let a = t.observe(&appear_at(0, normal));
    t.observe(&DeviceEvent {
        t_ms: 3_272,
        change: DeviceChange::Vanish {
            location: "4-1".into(),
            last: None,
        },
    });
    let b = t.observe(&appear_at(4_273, edl));
    assert_eq!(b.id, a.id);
    assert_eq!(
        b.rule,
        MatchRule::CompanionPort {
            from: "4-1".into(),
            to: "3-1".into(),
            gap_ms: 1_001
        }
    );
    let d = t.get(a.id.unwrap()).unwrap();
    let modes: Vec<&str> = d.history.iter().map(|s| s.mode.as_str()).collect();
    assert_eq!(modes, ["normal", "edl"]);
}
