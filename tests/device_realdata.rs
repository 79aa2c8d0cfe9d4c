//! The classifier and the dump parser against real descriptors (byte-identical copies of
//! ../shared/realdata/logs in tests/data/reallogs; sources are named in each file's header).

use qrescue::device::classify::{classify, Mode, PortRole};
use qrescue::device::lsusb::{parse_dump, ParsedDevice};
use qrescue::device::Speed;

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
