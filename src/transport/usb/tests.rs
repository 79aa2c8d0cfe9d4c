//! The USB transport's rules, without hardware: the OUT write plan (chunking, ZLP), the IN ZLP
//! rule against a simulated host controller, device selection and error mapping.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

// ------------------------------------------------------------------ write plan

fn chunk_lens(p: &WritePlan) -> Vec<usize> {
    p.chunks().map(|r| r.len()).collect()
}

#[test]
fn writes_are_chunked_at_one_mib_by_default_and_end_with_a_zlp_on_a_packet_multiple() {
    let o = UsbOptions::default();
    assert!(o.zlp);
    assert_eq!(o.out_chunk, 1 << 20);

    // A 48-byte Sahara packet: one short transfer, no ZLP.
    let p = WritePlan::new(48, 512, o.out_chunk, o.zlp);
    assert_eq!(chunk_lens(&p), vec![48]);
    assert!(!p.trailing_zlp());
    assert_eq!(p.transfers(), 1);

    // Exactly one packet: the device cannot tell the transfer ended without a ZLP.
    let p = WritePlan::new(512, 512, o.out_chunk, o.zlp);
    assert_eq!(chunk_lens(&p), vec![512]);
    assert!(p.trailing_zlp());
    assert_eq!(p.transfers(), 2);

    // 3 MiB of programmer image: three chunks and a ZLP.
    let p = WritePlan::new(3 << 20, 512, o.out_chunk, o.zlp);
    assert_eq!(chunk_lens(&p), vec![1 << 20; 3]);
    assert!(p.trailing_zlp());

    // 1 MiB + 100: a full chunk and a short tail, no ZLP.
    let p = WritePlan::new((1 << 20) + 100, 512, o.out_chunk, o.zlp);
    assert_eq!(chunk_lens(&p), vec![1 << 20, 100]);
    assert!(!p.trailing_zlp());

    // Firehose NAND payload 8192 on a SuperSpeed (1024) and a full-speed (64) link.
    assert!(WritePlan::new(8192, 1024, o.out_chunk, true).trailing_zlp());
    assert!(WritePlan::new(8192, 64, o.out_chunk, true).trailing_zlp());
    assert!(!WritePlan::new(8192 + 64, 1024, o.out_chunk, true).trailing_zlp());
}

#[test]
fn zlp_off_never_sends_one() {
    // MT7621 hosts and SDX20 (QFirehose -z 0).
    for total in [0, 512, 1024, 3 << 20] {
        let p = WritePlan::new(total, 512, 1 << 20, false);
        assert!(!p.trailing_zlp(), "{total}");
        assert_eq!(p.transfers(), total.div_ceil(1 << 20));
    }
}

#[test]
fn an_empty_write_is_a_lone_zlp_only_when_zlps_are_on() {
    let on = WritePlan::new(0, 512, 1 << 20, true);
    assert_eq!(chunk_lens(&on), Vec::<usize>::new());
    assert!(on.trailing_zlp());
    assert_eq!(on.transfers(), 1);
    let off = WritePlan::new(0, 512, 1 << 20, false);
    assert_eq!(off.transfers(), 0);
}

#[test]
fn chunk_sizes_are_whole_packets() {
    assert_eq!(effective_chunk(1 << 20, 512), 1 << 20);
    assert_eq!(effective_chunk(1000, 512), 512);
    assert_eq!(effective_chunk(100, 512), 512);
    assert_eq!(effective_chunk(0, 512), 512);
    assert_eq!(effective_chunk(16384, 1024), 16384);
    assert_eq!(effective_chunk(16383, 1024), 15360);
    // A broken descriptor (wMaxPacketSize 0) must not divide by zero.
    assert_eq!(effective_chunk(4096, 0), 4096);
    let p = WritePlan::new(10, 0, 4, true);
    assert_eq!(chunk_lens(&p), vec![4, 4, 2]);
    assert!(p.trailing_zlp());
}

/// The packets a device receives for a plan: each transfer is cut into wMaxPacketSize packets
/// (the last possibly short); a ZLP is one empty packet.
fn wire_packets(p: &WritePlan, mps: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for r in p.chunks() {
        let mut left = r.len();
        while left > 0 {
            let n = left.min(mps);
            out.push(n);
            left -= n;
        }
    }
    if p.trailing_zlp() {
        out.push(0);
    }
    out
}

fn any_mps() -> impl Strategy<Value = usize> {
    prop_oneof![Just(64usize), Just(512), Just(1024), 1usize..2048]
}

proptest! {
    #[test]
    fn the_plan_covers_the_data_in_order_with_whole_packet_chunks(
        total in 0usize..(6 << 20),
        mps in any_mps(),
        chunk in 0usize..(3 << 20),
        zlp in any::<bool>(),
    ) {
        let p = WritePlan::new(total, mps, chunk, zlp);
        let c = p.chunk_size();
        prop_assert!(c >= mps && c % mps == 0);
        prop_assert!(c <= chunk.max(mps));
        let mut next = 0;
        let ranges: Vec<_> = p.chunks().collect();
        for (i, r) in ranges.iter().enumerate() {
            prop_assert_eq!(r.start, next);
            prop_assert!(!r.is_empty());
            if i + 1 < ranges.len() {
                prop_assert_eq!(r.len(), c);
            } else {
                prop_assert!(r.len() <= c);
            }
            next = r.end;
        }
        prop_assert_eq!(next, total);
        prop_assert_eq!(p.trailing_zlp(), zlp && total % mps == 0);
        prop_assert_eq!(p.transfers(), ranges.len() + usize::from(p.trailing_zlp()));
    }

    /// With ZLPs on, the device sees the end of every logical write: the last packet is short
    /// (or empty) and no earlier packet is, so chunking never ends a transfer early.
    #[test]
    fn with_zlps_on_only_the_last_packet_is_short(
        total in 0usize..(3 << 20),
        mps in any_mps(),
        chunk in 0usize..(2 << 20),
    ) {
        let p = WritePlan::new(total, mps, chunk, true);
        let packets = wire_packets(&p, mps);
        let (last, rest) = packets.split_last().expect("at least one packet");
        prop_assert!(*last < mps);
        prop_assert!(rest.iter().all(|&n| n == mps));
        prop_assert_eq!(packets.iter().sum::<usize>(), total);
    }

    /// With ZLPs off nothing extra goes out, and still no packet but the last is short.
    #[test]
    fn with_zlps_off_the_wire_carries_exactly_the_data(
        total in 1usize..(3 << 20),
        mps in any_mps(),
        chunk in 0usize..(2 << 20),
    ) {
        let p = WritePlan::new(total, mps, chunk, false);
        let packets = wire_packets(&p, mps);
        prop_assert!(packets.iter().all(|&n| n > 0));
        prop_assert!(packets[..packets.len() - 1].iter().all(|&n| n == mps));
        prop_assert_eq!(packets.iter().sum::<usize>(), total);
    }
}

// ------------------------------------------------------------------ IN rules

#[test]
fn in_requests_are_whole_packets_within_the_cap() {
    assert_eq!(in_request_len(48, 512, MAX_IN_TRANSFER), 512);
    assert_eq!(in_request_len(1, 64, MAX_IN_TRANSFER), 64);
    assert_eq!(in_request_len(0, 512, MAX_IN_TRANSFER), 512);
    assert_eq!(in_request_len(4096, 512, MAX_IN_TRANSFER), 4096);
    assert_eq!(in_request_len(4097, 512, MAX_IN_TRANSFER), 4608);
    assert_eq!(in_request_len(8 << 20, 512, MAX_IN_TRANSFER), 1 << 20);
    assert_eq!(in_request_len(5000, 1024, 3000), 2048);
    assert_eq!(in_request_len(100, 0, 4096), 100);
    assert_eq!(in_request_len(usize::MAX, 512, MAX_IN_TRANSFER), 1 << 20);
}

#[test]
fn the_zlp_after_a_full_transfer_is_consumed_once() {
    let mut z = InZlp::default();
    assert_eq!(z.on_transfer(512, 512, 512), InStep::Deliver);
    assert!(z.expecting());
    assert_eq!(z.on_transfer(0, 512, 512), InStep::ConsumeZlp);
    // A second ZLP is a message of its own.
    assert_eq!(z.on_transfer(0, 512, 512), InStep::Deliver);
    assert!(!z.expecting());
}

#[test]
fn only_an_exactly_full_packet_multiple_arms_the_rule() {
    let mut z = InZlp::default();
    // Short transfer: the short packet already ended it.
    assert_eq!(z.on_transfer(48, 512, 512), InStep::Deliver);
    assert!(!z.expecting());
    assert_eq!(z.on_transfer(0, 512, 512), InStep::Deliver);
    // A full multiple but not the whole buffer: it ended with a ZLP the kernel consumed.
    assert_eq!(z.on_transfer(1024, 4096, 512), InStep::Deliver);
    assert!(!z.expecting());
    // Full buffer: armed; data instead of a ZLP disarms (the device is ZLP-unaware).
    assert_eq!(z.on_transfer(4096, 4096, 512), InStep::Deliver);
    assert!(z.expecting());
    assert_eq!(z.on_transfer(100, 4096, 512), InStep::Deliver);
    assert!(!z.expecting());
}

/// A simulated host controller: an IN transfer of `requested` bytes (a multiple of `mps`)
/// takes packets until a short one or until it is full, without touching a ZLP that follows;
/// when the wire runs dry mid-transfer, the transport's cancel returns the partial data.
fn host_transfer(wire: &mut VecDeque<usize>, requested: usize, mps: usize) -> Option<usize> {
    let mut got = 0;
    loop {
        // Nothing more on the wire: the read times out and the cancel hands back what arrived.
        let Some(p) = wire.pop_front() else {
            return (got > 0).then_some(got);
        };
        got += p;
        if p < mps || got == requested {
            return Some(got);
        }
    }
}

proptest! {
    /// A ZLP-aware device (a ZLP after every message that is a packet multiple), read with any
    /// buffer sizes: every byte arrives, in order, and no framing ZLP leaks out as `Ok(0)`.
    #[test]
    fn in_zlps_are_consumed_and_nothing_is_lost(
        messages in proptest::collection::vec(
            prop_oneof![1usize..3000, (1usize..6).prop_map(|k| k * 512)], 1..20),
        reads in proptest::collection::vec(1usize..9000, 1..10),
        zlp_aware in any::<bool>(),
    ) {
        let mps = 512;
        let mut wire = VecDeque::new();
        for &m in &messages {
            let mut left = m;
            while left > 0 {
                let n = left.min(mps);
                wire.push_back(n);
                left -= n;
            }
            if zlp_aware && m % mps == 0 {
                wire.push_back(0);
            }
        }
        let mut rule = InZlp::default();
        let mut delivered = 0usize;
        let mut empty_reads = 0usize;
        for i in 0.. {
            let requested = in_request_len(reads[i % reads.len()], mps, MAX_IN_TRANSFER);
            let Some(actual) = host_transfer(&mut wire, requested, mps) else { break };
            if rule.on_transfer(actual, requested, mps) == InStep::Deliver {
                delivered += actual;
                if actual == 0 {
                    empty_reads += 1;
                }
            }
        }
        prop_assert_eq!(delivered, messages.iter().sum::<usize>());
        prop_assert_eq!(empty_reads, 0);
    }

    #[test]
    fn in_request_len_is_whole_packets_and_bounded(
        wanted in 0usize..(4 << 20),
        mps in any_mps(),
        cap in 0usize..(2 << 20),
    ) {
        let n = in_request_len(wanted, mps, cap);
        prop_assert!(n >= mps && n % mps == 0);
        prop_assert!(n <= effective_chunk(cap, mps));
        prop_assert!(n >= wanted.max(1).min(effective_chunk(cap, mps)));
    }
}

// ------------------------------------------------------------------ selectors

#[test]
fn port_values_that_name_usb() {
    assert_eq!(UsbSelector::parse_port("usb"), Some(Ok(UsbSelector::Only)));
    assert_eq!(UsbSelector::parse_port("USB"), Some(Ok(UsbSelector::Only)));
    assert_eq!(
        UsbSelector::parse_port("usb:3-1.2"),
        Some(Ok(UsbSelector::Location("3-1.2".into())))
    );
    assert_eq!(
        UsbSelector::parse_port("usb:serial=49CBD7EF"),
        Some(Ok(UsbSelector::Serial("49CBD7EF".into())))
    );
    assert_eq!(
        UsbSelector::parse_port("usb:serial=0x49cbd7ef"),
        Some(Ok(UsbSelector::Serial("49cbd7ef".into())))
    );
    assert_eq!(
        UsbSelector::parse_port("usb:bus=3,addr=5"),
        Some(Ok(UsbSelector::BusAddress { bus: 3, address: 5 }))
    );
    assert_eq!(
        UsbSelector::parse_port("usb:bus=3, address=17"),
        Some(Ok(UsbSelector::BusAddress {
            bus: 3,
            address: 17
        }))
    );
    // Not USB: ttys, ptys, relative paths.
    for p in ["/dev/ttyUSB0", "/dev/pts/3", "usb0", "./usb", "usbx:1"] {
        assert_eq!(UsbSelector::parse_port(p), None, "{p}");
    }
    for bad in [
        "usb:",
        "usb:3",
        "usb:3-",
        "usb:3-1..2",
        "usb:serial=",
        "usb:bus=3",
        "usb:bus=300,addr=1",
        "usb:bus=3,addr=x",
        "usb:bus=3,port=1",
        "usb:/dev/bus/usb/003/005",
    ] {
        assert!(
            matches!(UsbSelector::parse_port(bad), Some(Err(_))),
            "{bad}"
        );
    }
}

#[test]
fn selectors_print_as_they_are_typed() {
    for s in [
        "usb",
        "usb:3-1.2",
        "usb:serial=49CBD7EF",
        "usb:bus=3,addr=5",
    ] {
        let parsed = UsbSelector::parse_port(s).unwrap().unwrap();
        assert_eq!(parsed.to_string(), s);
    }
}

#[test]
fn locations_read_like_sysfs() {
    for ok in ["3-1", "3-1.2", "1-10.4.2", "255-255"] {
        assert!(is_location(ok), "{ok}");
    }
    for bad in [
        "3", "3-", "-1", "3-1.", "a-1", "3-1.x", "3-1-2", "3-256", "1234-1", "",
    ] {
        assert!(!is_location(bad), "{bad}");
    }
}

#[test]
fn the_edl_serial_is_read_from_the_product_string() {
    assert_eq!(
        edl_serial_from_product("QUSB_BULK_CID:0410_SN:49CBD7EF").as_deref(),
        Some("49CBD7EF")
    );
    assert_eq!(
        edl_serial_from_product("QUSB__BULK_SN:1A2B_x").as_deref(),
        Some("1A2B")
    );
    assert_eq!(edl_serial_from_product("QUSB__BULK"), None);
    assert_eq!(edl_serial_from_product("x_SN:"), None);
    assert_eq!(edl_serial_from_product("_SN:é"), None);
}

proptest! {
    #[test]
    fn parsing_any_port_text_never_panics(s in "\\PC{0,40}") {
        let _ = UsbSelector::parse_port(&s);
        let _ = edl_serial_from_product(&s);
        let _ = is_location(&s);
        let _ = lock::sanitize_key(&s);
    }

    #[test]
    fn generated_selectors_round_trip(
        bus in 1u8..=255,
        ports in proptest::collection::vec(1u8..=255, 1..6),
        address in 0u8..=255,
        serial in "[0-9A-Fa-f]{1,16}",
    ) {
        let loc = format!("{bus}-{}", ports.iter().map(u8::to_string).collect::<Vec<_>>().join("."));
        for sel in [
            UsbSelector::Location(loc),
            UsbSelector::Serial(serial.clone()),
            UsbSelector::BusAddress { bus, address },
        ] {
            let back = UsbSelector::parse_port(&sel.to_string());
            prop_assert_eq!(back, Some(Ok(sel)));
        }
    }
}

// ------------------------------------------------------------------ selection

fn iface(number: u8, class: u8, subclass: u8, protocol: u8) -> IfaceId {
    IfaceId {
        number,
        class,
        subclass,
        protocol,
    }
}

fn edl(bus: u8, ports: &[u8], address: u8, sn: &str) -> UsbCandidate {
    UsbCandidate {
        bus,
        ports: ports.to_vec(),
        address,
        vid: 0x05c6,
        pid: 0x9008,
        product: Some(format!("QUSB_BULK_CID:0410_SN:{sn}")),
        serial: None,
        interfaces: vec![iface(0, 0xff, 0xff, 0x10)],
    }
}

/// RM500Q in normal mode: DM ff/ff/30, AT ff/00/00, QMI ff/ff/ff.
fn rm500q_normal() -> UsbCandidate {
    UsbCandidate {
        bus: 2,
        ports: vec![1],
        address: 3,
        vid: 0x2c7c,
        pid: 0x0800,
        product: Some("RM500Q-GL".into()),
        serial: Some("abc".into()),
        interfaces: vec![
            iface(0, 0xff, 0xff, 0x30),
            iface(1, 0xff, 0, 0),
            iface(2, 0xff, 0, 0),
            iface(3, 0xff, 0, 0),
            iface(4, 0xff, 0xff, 0xff),
        ],
    }
}

fn hub() -> UsbCandidate {
    UsbCandidate {
        bus: 1,
        ports: vec![1],
        address: 2,
        vid: 0x8087,
        pid: 0x0024,
        product: None,
        serial: None,
        interfaces: vec![iface(0, 9, 0, 0)],
    }
}

#[test]
fn the_edl_interface_is_found_by_class_not_number() {
    // Normal mode: ff/ff/ff is QMI, not EDL, unless the VID:PID is a Sahara one.
    assert_eq!(pick_edl_interface(&rm500q_normal().interfaces, false), None);
    let old = [iface(0, 0xff, 0xff, 0xff)];
    assert_eq!(pick_edl_interface(&old, true), Some(old[0]));
    assert_eq!(pick_edl_interface(&old, false), None);
    // Modern protocols win over legacy and sit at any number.
    let mixed = [iface(0, 0xff, 0xff, 0xff), iface(3, 0xff, 0xff, 0x11)];
    assert_eq!(pick_edl_interface(&mixed, true).map(|i| i.number), Some(3));
    for p in [0x10, 0x11, 0x13] {
        assert!(pick_edl_interface(&[iface(2, 0xff, 0xff, p)], false).is_some());
    }
    assert_eq!(
        pick_edl_interface(&[iface(0, 0xff, 0x00, 0x10)], true),
        None
    );
}

#[test]
fn plain_usb_picks_the_only_download_mode_modem() {
    let cands = [hub(), rm500q_normal(), edl(3, &[1, 2], 7, "49CBD7EF")];
    let c = select(&cands, &UsbSelector::Only).unwrap();
    assert_eq!(c.location(), "3-1.2");
    assert_eq!(c.edl_serial().as_deref(), Some("49CBD7EF"));
    assert_eq!(
        c.summary(),
        "3-1.2 05c6:9008 \"QUSB_BULK_CID:0410_SN:49CBD7EF\" serial 49CBD7EF"
    );
}

#[test]
fn a_crash_dump_modem_and_an_old_boot_rom_count_too() {
    let mut crash = edl(1, &[4], 9, "1");
    crash.pid = 0x900e;
    crash.interfaces = vec![iface(0, 0xff, 0xff, 0x13)];
    assert!(crash.is_download_mode());
    let mut old = edl(1, &[5], 10, "2");
    old.interfaces = vec![iface(0, 0xff, 0xff, 0xff)];
    assert!(old.is_download_mode());
    // Windows may list no interfaces for a single-driver device: the VID:PID still counts.
    let mut bare = edl(1, &[6], 11, "3");
    bare.interfaces.clear();
    assert!(bare.is_download_mode());
    assert!(!rm500q_normal().is_download_mode());
}

#[test]
fn no_modem_lists_what_is_present() {
    let cands = [hub(), rm500q_normal()];
    match select(&cands, &UsbSelector::Only).unwrap_err() {
        UsbOpenError::NotFound {
            wanted, present, ..
        } => {
            assert_eq!(wanted, "usb");
            assert_eq!(present.len(), 2);
            assert!(present[1].contains("2c7c:0800"), "{present:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn several_modems_say_how_to_choose() {
    let cands = [
        edl(3, &[1, 2], 7, "49CBD7EF"),
        edl(3, &[1, 3], 8, "0000BEEF"),
    ];
    match select(&cands, &UsbSelector::Only).unwrap_err() {
        UsbOpenError::Ambiguous { candidates } => {
            assert_eq!(candidates.len(), 2);
            assert!(
                candidates[0].1.contains("--port usb:3-1.2"),
                "{candidates:?}"
            );
            assert!(
                candidates[1].1.contains("usb:serial=0000BEEF"),
                "{candidates:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let by_loc = select(&cands, &UsbSelector::Location("3-1.3".into())).unwrap();
    assert_eq!(by_loc.address, 8);
    let by_sn = select(&cands, &UsbSelector::Serial("49cbd7ef".into())).unwrap();
    assert_eq!(by_sn.location(), "3-1.2");
    let by_addr = select(&cands, &UsbSelector::BusAddress { bus: 3, address: 8 }).unwrap();
    assert_eq!(by_addr.location(), "3-1.3");
}

#[test]
fn naming_a_normal_mode_modem_says_it_is_not_in_download_mode() {
    let cands = [rm500q_normal()];
    assert!(matches!(
        select(&cands, &UsbSelector::Location("2-1".into())),
        Err(UsbOpenError::NotDownloadMode { device }) if device.contains("2c7c:0800")
    ));
    // The USB serial matches too.
    assert!(matches!(
        select(&cands, &UsbSelector::Serial("ABC".into())),
        Err(UsbOpenError::NotDownloadMode { .. })
    ));
    assert!(matches!(
        select(&cands, &UsbSelector::Location("9-9".into())),
        Err(UsbOpenError::NotFound { .. })
    ));
}

#[test]
fn untrusted_strings_are_tamed_in_summaries() {
    let mut c = edl(3, &[1], 2, "AB");
    c.product = Some(format!("evil\x1b[2J{}", "x".repeat(200)));
    let s = c.summary();
    assert!(!s.contains('\x1b'));
    assert!(s.len() < 120, "{s}");
}

// ------------------------------------------------------------------ error mapping

#[test]
fn open_errors_map_to_actionable_variants() {
    let w = "USB 3-1.2 05c6:9008";
    let e = open_error(
        nusb::ErrorKind::PermissionDenied,
        Some(libc::EACCES),
        "permission denied",
        w,
        "open the device",
    );
    assert!(
        matches!(&e, TransportError::Permission(m) if m.contains("qrescue udev-rules | sudo tee /etc/udev/rules.d/51-qrescue.rules") && m.contains(w)),
        "{e:?}"
    );
    let e = open_error(nusb::ErrorKind::Other, Some(libc::EACCES), "x", w, "claim");
    assert!(matches!(e, TransportError::Permission(_)));
    let e = open_error(
        nusb::ErrorKind::Busy,
        Some(libc::EBUSY),
        "interface is busy",
        w,
        "claim the download interface",
    );
    assert!(
        matches!(&e, TransportError::Busy(m) if m.contains("ModemManager") && m.contains("qcserial") && m.contains("systemctl stop ModemManager")),
        "{e:?}"
    );
    let e = open_error(
        nusb::ErrorKind::Disconnected,
        Some(libc::ENODEV),
        "gone",
        w,
        "open the device",
    );
    assert!(matches!(e, TransportError::Disconnected(_)));
    let e = open_error(
        nusb::ErrorKind::Other,
        Some(libc::ENODEV),
        "gone",
        w,
        "open",
    );
    assert!(matches!(e, TransportError::Disconnected(_)));
    let e = open_error(
        nusb::ErrorKind::NotFound,
        None,
        "interface not found",
        w,
        "claim",
    );
    assert!(matches!(e, TransportError::Io(io) if io.kind() == io::ErrorKind::NotFound));
    let e = open_error(nusb::ErrorKind::Other, Some(libc::EIO), "io", w, "open");
    assert!(matches!(e, TransportError::Io(_)));
}

#[test]
fn transfer_errors_map_to_actionable_variants() {
    let d = "USB 3-1.2 05c6:9008";
    assert!(
        matches!(transfer_error(TransferError::Disconnected, d, 0x81), TransportError::Disconnected(m) if m.contains(d))
    );
    assert!(
        matches!(transfer_error(TransferError::Stall, d, 0x01), TransportError::Io(e) if e.to_string().contains("0x01"))
    );
    assert!(
        matches!(transfer_error(TransferError::Fault, d, 0x81), TransportError::Io(e) if e.to_string().contains("cable"))
    );
    assert!(matches!(
        transfer_error(TransferError::Unknown(5), d, 0x81),
        TransportError::Io(_)
    ));
    assert!(matches!(
        transfer_error(TransferError::Cancelled, d, 0x81),
        TransportError::Io(_)
    ));
}

#[test]
fn opening_with_no_usb_bus_or_no_modem_is_not_found() {
    // Whatever this machine has, a location that cannot exist is never found.
    match UsbTransport::open(
        &UsbSelector::Location("255-255.255".into()),
        UsbOptions::default(),
    ) {
        Err(UsbOpenError::NotFound { wanted, .. }) => assert_eq!(wanted, "usb:255-255.255"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}
