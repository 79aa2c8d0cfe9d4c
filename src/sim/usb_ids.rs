//! What the emulated modem looks like on USB: [`DeviceSnapshot`]s shaped like the descriptors
//! real units report (docs/PROTOCOLS.md §5, docs/USERS.md §5, ../realdata/logs), so the classifier,
//! the boot-loop detector and the console see an emulated unit the way they see a real one.
//!
//! - EDL (05c6:9008): one interface ff/ff/0x11 with bulk 0x81/0x01, wMaxPacketSize 512 at high
//!   speed (QFirehose log of an RG500Q/SDX55 in EDL), bcdDevice 0.00, manufacturer
//!   `Qualcomm CDMA Technologies MSM`, product `QUSB__BULK_CID:0410_SN:<SERIAL>` carrying the unit's
//!   Sahara serial (the `_SN:` field qdl and qdlrs read).
//! - Crash dump (05c6:900e): the same shape with interface protocol 0x10, which a QCS6490 in
//!   crash-dump mode reported (linux-msm/qdl PR #286); qdl read its serial from the same `_SN:`.
//! - Normal mode, per model: EC25 (2c7c:0125, high speed, from a `usb-devices` dump of an EC25-AF
//!   in Bjørn Mork's option/qmi_wwan patch), RM502Q (2c7c:0800, SuperSpeed, the RM500Q `lsusb -v`
//!   from the linux-usb option patch of 2020-01-13) and RM520N (2c7c:0801, the RM500Q's interface
//!   layout without ADB; bcdDevice and strings in the shape of an RM530N-GL transcript).
//!
//! Emulated units live on buses no ordinary host has ([`SIM_BUS`] for high speed,
//! [`SIM_BUS_SUPER`] for SuperSpeed: a USB3 modem moves to the other root hub in EDL, as real ones
//! do), on a port derived from the unit's serial, with `origin: Some("sim")`. The tty of the EDL
//! interface is the pty a host opens.

use std::path::Path;

use crate::device::{DeviceSnapshot, EndpointSnapshot, InterfaceSnapshot, Speed, TransferType};

use super::profile::{Personality, Profile};

/// Bus number of emulated high-speed devices (EDL, 900e, EC25 in normal mode).
pub const SIM_BUS: u8 = 99;
/// Bus number of emulated SuperSpeed devices (RM5xx in normal mode).
pub const SIM_BUS_SUPER: u8 = 100;
/// `DeviceSnapshot::origin` of every emulated device.
pub const ORIGIN: &str = "sim";

/// Qualcomm's vendor id (EDL and crash dump).
pub const QUALCOMM_VID: u16 = 0x05c6;
/// Quectel's vendor id (normal mode).
pub const QUECTEL_VID: u16 = 0x2c7c;
/// EDL interface protocol (RM500Q/RG500Q in EDL: ff/ff/0x11).
pub const EDL_PROTOCOL: u8 = 0x11;
/// Crash-dump interface protocol (QCS6490 in crash dump: ff/ff/0x10).
pub const CRASH_PROTOCOL: u8 = 0x10;

/// The root-hub port of an emulated unit: stable per unit (derived from its serial), 1..=15.
pub fn sim_port(profile: &Profile) -> u8 {
    1 + (profile.identity.serial % 15) as u8
}

/// The iProduct string of a unit in EDL or crash dump: `QUSB__BULK_CID:0410_SN:0CF94C64`.
pub fn edl_product_string(serial: u32) -> String {
    format!("QUSB__BULK_CID:0410_SN:{serial:08X}")
}

fn bulk(address: u8, max_packet_size: u16) -> EndpointSnapshot {
    EndpointSnapshot {
        address,
        transfer: TransferType::Bulk,
        max_packet_size,
    }
}

fn interrupt(address: u8, max_packet_size: u16) -> EndpointSnapshot {
    EndpointSnapshot {
        address,
        transfer: TransferType::Interrupt,
        max_packet_size,
    }
}

fn vendor_interface(
    number: u8,
    (subclass, protocol): (u8, u8),
    endpoints: Vec<EndpointSnapshot>,
    driver: &str,
) -> InterfaceSnapshot {
    InterfaceSnapshot {
        number,
        alt: 0,
        class: 0xff,
        subclass,
        protocol,
        endpoints,
        driver: Some(driver.into()),
        tty: None,
    }
}

/// The unit in its boot ROM: 05c6:9008 (EDL) or 05c6:900e (crash dump), after the profile's
/// personality. `tty` is the pty hosts open (the emulated `qcserial` port); `address` the device
/// number of this enumeration (it changes at every appearance on a real bus).
pub fn boot_rom_snapshot(profile: &Profile, tty: Option<&Path>, address: u8) -> DeviceSnapshot {
    let protocol = match profile.personality {
        Personality::Edl => EDL_PROTOCOL,
        Personality::CrashDump => CRASH_PROTOCOL,
    };
    let mut edl = vendor_interface(
        0,
        (0xff, protocol),
        vec![bulk(0x81, 512), bulk(0x01, 512)],
        "qcserial",
    );
    edl.tty = tty.map(|p| p.display().to_string());
    DeviceSnapshot {
        bus: SIM_BUS,
        ports: vec![sim_port(profile)],
        address,
        vid: QUALCOMM_VID,
        pid: profile.usb_pid,
        bcd_device: 0x0000,
        manufacturer: Some("Qualcomm CDMA Technologies MSM".into()),
        product: Some(edl_product_string(profile.identity.serial)),
        serial: None,
        speed: Some(Speed::High),
        interfaces: vec![edl],
        origin: Some(ORIGIN.into()),
    }
}

/// The iSerial of a unit in normal mode: eight lowercase hex digits, the shape real Quectel
/// modules report (RM500Q `40046d60`, RM530N-GL `5335c4cc`, BG96 `d1098243` in
/// ../realdata/logs), stable per unit.
///
/// Deliberately *not* the Sahara serial that EDL shows after `_SN:`: docs/PROTOCOLS.md §5.2 and
/// docs/USERS.md document the `_SN:` in EDL but nothing pairs one unit's normal-mode iSerial with
/// its EDL serial, so the emulator does not claim they are equal. A normal-mode → EDL switch is
/// therefore linked by port history (the same port chain on the companion bus, as QFirehose
/// re-finds a switched module by scanning, PROTOCOLS.md §5.2), not by a serial match.
pub fn normal_mode_iserial(profile: &Profile) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"qrescue emulated normal-mode iSerial");
    h.update(profile.identity.serial.to_le_bytes());
    let d = h.finalize();
    let mut v = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
    if v == profile.identity.serial {
        v = v.wrapping_add(1);
    }
    format!("{v:08x}")
}

/// DM/DIAG, NMEA, AT and modem ports (option) of the RM5xx composite, then rmnet (qmi_wwan).
fn rm5xx_interfaces(with_adb: bool) -> Vec<InterfaceSnapshot> {
    let mut v = vec![
        vendor_interface(
            0,
            (0xff, 0x30),
            vec![bulk(0x81, 1024), bulk(0x01, 1024)],
            "option",
        ),
        vendor_interface(
            1,
            (0x00, 0x00),
            vec![interrupt(0x83, 10), bulk(0x82, 1024), bulk(0x02, 1024)],
            "option",
        ),
        vendor_interface(
            2,
            (0x00, 0x00),
            vec![interrupt(0x85, 10), bulk(0x84, 1024), bulk(0x03, 1024)],
            "option",
        ),
        vendor_interface(
            3,
            (0x00, 0x00),
            vec![interrupt(0x87, 10), bulk(0x86, 1024), bulk(0x04, 1024)],
            "option",
        ),
        vendor_interface(
            4,
            (0xff, 0xff),
            vec![interrupt(0x88, 8), bulk(0x8e, 1024), bulk(0x0f, 1024)],
            "qmi_wwan",
        ),
    ];
    if with_adb {
        // ADB (ff/42/01) has no kernel driver; adbd on the host claims it through usbfs.
        v.push(InterfaceSnapshot {
            number: 5,
            alt: 0,
            class: 0xff,
            subclass: 0x42,
            protocol: 0x01,
            endpoints: vec![bulk(0x05, 1024), bulk(0x89, 1024)],
            driver: None,
            tty: None,
        });
    }
    v
}

/// The unit in normal (application) mode: the Quectel composite of its model, with the DM port
/// on interface 0, NMEA on 1, AT on 2, the PPP modem on 3 and rmnet on 4. No ttys are filled in;
/// a normal-mode emulator sets [`InterfaceSnapshot::tty`] of the ports it serves. `None` for a
/// profile whose model has no normal-mode description here.
pub fn normal_mode_snapshot(profile: &Profile, address: u8) -> Option<DeviceSnapshot> {
    let model = profile.name.split('-').next().unwrap_or("");
    let serial = Some(normal_mode_iserial(profile));
    let port = vec![sim_port(profile)];
    let s = match model {
        "ec25" => {
            let hs = |n, sp, eps| vendor_interface(n, sp, eps, "option");
            DeviceSnapshot {
                bus: SIM_BUS,
                ports: port,
                address,
                vid: QUECTEL_VID,
                pid: 0x0125,
                bcd_device: 0x0318,
                manufacturer: Some("Quectel".into()),
                product: Some("EC25-E".into()),
                serial,
                speed: Some(Speed::High),
                interfaces: vec![
                    hs(0, (0xff, 0xff), vec![bulk(0x81, 512), bulk(0x01, 512)]),
                    hs(
                        1,
                        (0x00, 0x00),
                        vec![interrupt(0x83, 10), bulk(0x82, 512), bulk(0x02, 512)],
                    ),
                    hs(
                        2,
                        (0x00, 0x00),
                        vec![interrupt(0x85, 10), bulk(0x84, 512), bulk(0x03, 512)],
                    ),
                    hs(
                        3,
                        (0x00, 0x00),
                        vec![interrupt(0x87, 10), bulk(0x86, 512), bulk(0x04, 512)],
                    ),
                    vendor_interface(
                        4,
                        (0xff, 0xff),
                        vec![interrupt(0x89, 8), bulk(0x88, 512), bulk(0x05, 512)],
                        "qmi_wwan",
                    ),
                ],
                origin: Some(ORIGIN.into()),
            }
        }
        "rm502q" => DeviceSnapshot {
            bus: SIM_BUS_SUPER,
            ports: port,
            address,
            vid: QUECTEL_VID,
            pid: 0x0800,
            bcd_device: 0x0414,
            manufacturer: Some("Quectel".into()),
            product: Some("LTE-A Module".into()),
            serial,
            speed: Some(Speed::Super),
            interfaces: rm5xx_interfaces(true),
            origin: Some(ORIGIN.into()),
        },
        "rm520n" => DeviceSnapshot {
            bus: SIM_BUS_SUPER,
            ports: port,
            address,
            vid: QUECTEL_VID,
            pid: 0x0801,
            bcd_device: 0x0504,
            manufacturer: Some("Quectel".into()),
            product: Some("RM520N-GL".into()),
            serial,
            speed: Some(Speed::Super),
            interfaces: rm5xx_interfaces(false),
            origin: Some(ORIGIN.into()),
        },
        _ => return None,
    };
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edl_interface(s: &DeviceSnapshot) -> &InterfaceSnapshot {
        assert_eq!(s.interfaces.len(), 1, "EDL has exactly one interface");
        s.interface(0).unwrap()
    }

    #[test]
    fn edl_looks_like_a_real_9008_and_carries_the_sahara_serial() {
        let p = Profile::by_name("rm502q").unwrap().for_unit(3);
        let s = boot_rom_snapshot(&p, Some(Path::new("/dev/pts/7")), 5);
        assert_eq!(s.id(), "05c6:9008");
        assert_eq!(s.bcd_device, 0);
        assert_eq!(s.speed, Some(Speed::High));
        assert_eq!(
            s.manufacturer.as_deref(),
            Some("Qualcomm CDMA Technologies MSM")
        );
        let product = s.product.clone().unwrap();
        let sn = product.split("_SN:").nth(1).unwrap();
        assert_eq!(u32::from_str_radix(sn, 16).unwrap(), p.identity.serial);
        assert!(product.starts_with("QUSB__BULK"));
        let i = edl_interface(&s);
        assert_eq!((i.class, i.subclass, i.protocol), (0xff, 0xff, 0x11));
        let (inp, out) = i.bulk_pair().unwrap();
        assert_eq!((inp.address, out.address), (0x81, 0x01));
        assert_eq!((inp.max_packet_size, out.max_packet_size), (512, 512));
        assert_eq!(i.tty.as_deref(), Some("/dev/pts/7"));
        assert_eq!(s.origin.as_deref(), Some("sim"));
        assert_eq!(s.bus, SIM_BUS);
        assert_eq!(s.address, 5);
        // Stable per unit: the same unit lands on the same port, so the location is its identity
        // between appearances.
        let again = boot_rom_snapshot(&p, None, 6);
        assert_eq!(again.location(), s.location());
        assert_eq!(again.interface(0).unwrap().tty, None);
    }

    #[test]
    fn crash_personality_is_900e_with_protocol_0x10() {
        let p = Profile::by_name("ec25-crash").unwrap();
        let s = boot_rom_snapshot(&p, None, 2);
        assert_eq!(s.id(), "05c6:900e");
        let i = edl_interface(&s);
        assert_eq!((i.class, i.subclass, i.protocol), (0xff, 0xff, 0x10));
        assert_eq!(
            s.product.as_deref(),
            Some("QUSB__BULK_CID:0410_SN:0CF94C64"),
            "the real EC25 serial"
        );
    }

    #[test]
    fn normal_mode_composites_per_model() {
        for (name, id, speed, mps, ifaces) in [
            ("ec25", "2c7c:0125", Speed::High, 512, 5),
            ("rm502q", "2c7c:0800", Speed::Super, 1024, 6),
            ("rm520n", "2c7c:0801", Speed::Super, 1024, 5),
        ] {
            let p = Profile::by_name(name).unwrap();
            let s = normal_mode_snapshot(&p, 3).unwrap();
            assert_eq!(s.id(), id, "{name}");
            assert_eq!(s.speed, Some(speed), "{name}");
            assert_eq!(s.interfaces.len(), ifaces, "{name}");
            assert_eq!(s.origin.as_deref(), Some("sim"));
            assert_eq!(s.manufacturer.as_deref(), Some("Quectel"));
            // DM on interface 0: vendor class, two bulk endpoints, option driver.
            let dm = s.interface(0).unwrap();
            assert_eq!(dm.class, 0xff);
            assert_eq!(dm.endpoints.len(), 2);
            assert_eq!(dm.bulk_pair().unwrap().0.max_packet_size, mps);
            assert_eq!(dm.driver.as_deref(), Some("option"));
            // NMEA, AT, modem: ff/00/00 with an interrupt endpoint and a bulk pair.
            for n in 1..=3 {
                let i = s.interface(n).unwrap();
                assert_eq!(
                    (i.class, i.subclass, i.protocol),
                    (0xff, 0, 0),
                    "{name} if{n}"
                );
                assert_eq!(i.endpoints.len(), 3);
                assert!(i.bulk_pair().is_some());
            }
            let rmnet = s.interface(4).unwrap();
            assert_eq!(rmnet.driver.as_deref(), Some("qmi_wwan"));
            assert_eq!(
                (rmnet.class, rmnet.subclass, rmnet.protocol),
                (0xff, 0xff, 0xff)
            );
            // The same unit in EDL sits on the high-speed bus.
            let edl = boot_rom_snapshot(&p, None, 4);
            assert_eq!(edl.bus, SIM_BUS);
            assert_eq!(edl.ports, s.ports);
        }
        // The normal-mode iSerial is per unit, hex like the real ones, and not the `_SN:` serial.
        for seed in [1, 2, 3] {
            let p = Profile::by_name("rm502q").unwrap().for_unit(seed);
            let iserial = normal_mode_snapshot(&p, 2).unwrap().serial.unwrap();
            assert_eq!(iserial.len(), 8);
            assert!(iserial.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_ne!(
                u32::from_str_radix(&iserial, 16).unwrap(),
                p.identity.serial
            );
            assert_eq!(iserial, normal_mode_iserial(&p), "stable");
        }
        // RM5xx DM is ff/ff/0x30; the EC25's is ff/ff/ff.
        let rm = normal_mode_snapshot(&Profile::by_name("rm520n").unwrap(), 1).unwrap();
        assert_eq!(rm.interface(0).unwrap().protocol, 0x30);
        let ec = normal_mode_snapshot(&Profile::by_name("ec25").unwrap(), 1).unwrap();
        assert_eq!(ec.interface(0).unwrap().protocol, 0xff);
        assert_eq!(ec.bcd_text(), "3.18");
    }

    #[test]
    fn snapshots_survive_serde() {
        let p = Profile::by_name("rm502q").unwrap();
        for s in [
            boot_rom_snapshot(&p, Some(Path::new("/dev/pts/1")), 9),
            normal_mode_snapshot(&p, 9).unwrap(),
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<DeviceSnapshot>(&json).unwrap(), s);
        }
    }
}
