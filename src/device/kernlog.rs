//! Kernel log (dmesg) lines about USB devices, into a timeline of [`DeviceEvent`]s: connects,
//! disconnects, which driver bound which interface and which tty it made. People paste dmesg when
//! a modem drops off the bus; the timeline feeds the identity tracker and the boot-loop detector.
//!
//! Untrusted text: lines that are not understood are skipped, nothing panics, counts are bounded.

use std::collections::BTreeMap;

use super::lsusb::parse_location;
use super::snapshot::{DeviceSnapshot, InterfaceSnapshot, Speed};
use super::{DeviceChange, DeviceEvent};

/// At most this many events are read from one log.
pub const MAX_EVENTS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelUsb {
    /// `usb 3-1: new high-speed USB device number 4 using ehci-platform`
    Connect { speed: Option<Speed>, number: u8 },
    /// `usb 2-1: USB disconnect, device number 3`
    Disconnect,
    /// `usb 4-1: device descriptor read/64, error -62`
    DescriptorError { error: String },
    /// `usb 3-1: New USB device found, idVendor=2c7c, idProduct=0125, bcdDevice= 3.18`
    Ids { vid: u16, pid: u16, bcd: u16 },
    /// `usb 3-1: Product: EG25-G` (also Manufacturer, SerialNumber).
    Text { field: String, value: String },
    /// `option 2-1:1.0: GSM modem (1-port) converter detected`
    Bound { interface: u8, driver: String },
    /// `usb 2-1: GSM modem (1-port) converter now attached to ttyUSB1`
    Tty { tty: String },
}

/// One understood kernel line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLine {
    pub t_ms: u64,
    pub location: String,
    pub what: KernelUsb,
}

/// `[ 3756.220927] rest` → (3756220, rest).
fn timestamp(line: &str) -> Option<(u64, &str)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let end = rest.find(']')?;
    let t = rest[..end].trim();
    let (s, frac) = t.split_once('.').unwrap_or((t, "0"));
    let secs: u64 = s.parse().ok()?;
    let ms_digits: String = frac.chars().chain("000".chars()).take(3).collect();
    let ms: u64 = ms_digits.parse().ok()?;
    Some((secs.checked_mul(1000)?.checked_add(ms)?, &rest[end + 1..]))
}

fn speed_word(w: &str) -> Option<Speed> {
    match w {
        "low-speed" => Some(Speed::Low),
        "full-speed" => Some(Speed::Full),
        "high-speed" => Some(Speed::High),
        "SuperSpeed" => Some(Speed::Super),
        "SuperSpeed+" => Some(Speed::SuperPlus),
        _ => None,
    }
}

fn kv_hex(msg: &str, key: &str) -> Option<u16> {
    let at = msg.find(key)?;
    let v = msg[at + key.len()..].trim_start();
    let end = v.find([',', ' ']).unwrap_or(v.len());
    u16::from_str_radix(&v[..end], 16).ok()
}

/// Read the USB lines of a kernel log.
pub fn parse_kernel_log(text: &str) -> Vec<KernelLine> {
    let mut out = Vec::new();
    for raw in text.lines() {
        if out.len() >= MAX_EVENTS {
            break;
        }
        let Some((t_ms, rest)) = timestamp(raw) else {
            continue;
        };
        let rest = rest.trim();
        let mut words = rest.splitn(3, ' ');
        let (Some(driver), Some(dev), Some(msg)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Some(dev) = dev.strip_suffix(':') else {
            continue;
        };
        let (loc, iface) = match dev.split_once(':') {
            Some((loc, cfg_if)) => {
                let n = cfg_if
                    .split_once('.')
                    .and_then(|(_, i)| i.parse::<u8>().ok());
                match n {
                    Some(n) => (loc, Some(n)),
                    None => continue,
                }
            }
            None => (dev, None),
        };
        if parse_location(loc).is_none() {
            continue;
        }
        let what = match (driver, iface) {
            ("usb", None) => {
                if let Some(m) = msg.strip_prefix("new ") {
                    let speed = if m.starts_with("SuperSpeed Plus") {
                        Some(Speed::SuperPlus)
                    } else {
                        m.split(' ').next().and_then(speed_word)
                    };
                    let number = m
                        .split("device number ")
                        .nth(1)
                        .and_then(|n| n.split(' ').next())
                        .and_then(|n| n.parse::<u8>().ok());
                    match number {
                        Some(number) => KernelUsb::Connect { speed, number },
                        None => continue,
                    }
                } else if msg.starts_with("USB disconnect") {
                    KernelUsb::Disconnect
                } else if msg.starts_with("device descriptor read")
                    || msg.starts_with("device not accepting address")
                {
                    KernelUsb::DescriptorError {
                        error: msg.chars().take(120).collect(),
                    }
                } else if msg.starts_with("New USB device found") {
                    match (kv_hex(msg, "idVendor="), kv_hex(msg, "idProduct=")) {
                        (Some(vid), Some(pid)) => {
                            let bcd = msg
                                .split("bcdDevice=")
                                .nth(1)
                                .and_then(|v| {
                                    let v = v.trim();
                                    let (a, b) = v.split_once('.')?;
                                    let b: String = b.chars().take(2).collect();
                                    Some(
                                        (u16::from_str_radix(a, 16).ok()? << 8)
                                            | u16::from_str_radix(&b, 16).ok()?,
                                    )
                                })
                                .unwrap_or(0);
                            KernelUsb::Ids { vid, pid, bcd }
                        }
                        _ => continue,
                    }
                } else if let Some((field, value)) =
                    ["Product: ", "Manufacturer: ", "SerialNumber: "]
                        .iter()
                        .find_map(|f| msg.strip_prefix(f).map(|v| (f.trim_end_matches(": "), v)))
                {
                    KernelUsb::Text {
                        field: field.to_string(),
                        value: value.chars().take(128).collect(),
                    }
                } else if let Some(at) = msg.find("now attached to ") {
                    let tty: String = msg[at + "now attached to ".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect();
                    if tty.is_empty() {
                        continue;
                    }
                    KernelUsb::Tty { tty }
                } else {
                    continue;
                }
            }
            (d, Some(interface)) => {
                if msg.contains("disconnected") || msg.contains("unregister") {
                    continue;
                }
                if d.is_empty()
                    || d.len() > 32
                    || !d
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    continue;
                }
                KernelUsb::Bound {
                    interface,
                    driver: d.to_string(),
                }
            }
            _ => continue,
        };
        out.push(KernelLine {
            t_ms,
            location: loc.to_string(),
            what,
        });
    }
    out
}

/// A device being described by the log, not yet emitted.
struct Pending {
    t_ms: u64,
    snap: DeviceSnapshot,
    failed: bool,
    ok_lines: usize,
    last_if: Option<u8>,
}

/// Fold kernel lines into appear/vanish events. A device appears at its `new … USB device` line
/// (or at the first driver binding for a location that is not present); what follows for that
/// location (IDs, strings, drivers, ttys) fills its snapshot. A connect followed only by
/// descriptor errors never appears. `fallback_id` fills in vid:pid when the log does not say
/// (many excerpts start after the `New USB device found` line).
pub fn timeline(lines: &[KernelLine], fallback_id: Option<(u16, u16)>) -> Vec<DeviceEvent> {
    let mut events: Vec<DeviceEvent> = Vec::new();
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut present: BTreeMap<String, DeviceSnapshot> = BTreeMap::new();

    fn flush(
        p: Pending,
        events: &mut Vec<DeviceEvent>,
        present: &mut BTreeMap<String, DeviceSnapshot>,
    ) {
        if p.failed && p.ok_lines == 0 {
            return;
        }
        present.insert(p.snap.location(), p.snap.clone());
        events.push(DeviceEvent {
            t_ms: p.t_ms,
            change: DeviceChange::Appear { device: p.snap },
        });
    }

    let fresh = |t_ms: u64, loc: &str| -> Option<Pending> {
        let (bus, ports) = parse_location(loc)?;
        let (vid, pid) = fallback_id.unwrap_or((0, 0));
        Some(Pending {
            t_ms,
            snap: DeviceSnapshot {
                bus,
                ports,
                address: 0,
                vid,
                pid,
                bcd_device: 0,
                manufacturer: None,
                product: None,
                serial: None,
                speed: None,
                interfaces: Vec::new(),
                origin: Some("kernel log".into()),
            },
            failed: false,
            ok_lines: 0,
            last_if: None,
        })
    };

    for l in lines {
        match &l.what {
            KernelUsb::Connect { speed, number } => {
                if let Some(p) = pending.remove(&l.location) {
                    flush(p, &mut events, &mut present);
                }
                if let Some(mut p) = fresh(l.t_ms, &l.location) {
                    p.snap.speed = *speed;
                    p.snap.address = *number;
                    pending.insert(l.location.clone(), p);
                }
            }
            KernelUsb::Disconnect => {
                if let Some(p) = pending.remove(&l.location) {
                    flush(p, &mut events, &mut present);
                }
                let last = present.remove(&l.location);
                events.push(DeviceEvent {
                    t_ms: l.t_ms,
                    change: DeviceChange::Vanish {
                        location: l.location.clone(),
                        last,
                    },
                });
            }
            other => {
                if !pending.contains_key(&l.location) {
                    if present.contains_key(&l.location) {
                        // Late detail about a device already emitted: not part of the timeline.
                        continue;
                    }
                    if matches!(other, KernelUsb::DescriptorError { .. }) {
                        continue;
                    }
                    match fresh(l.t_ms, &l.location) {
                        Some(p) => {
                            pending.insert(l.location.clone(), p);
                        }
                        None => continue,
                    }
                }
                let Some(p) = pending.get_mut(&l.location) else {
                    continue;
                };
                match other {
                    KernelUsb::DescriptorError { .. } => p.failed = true,
                    KernelUsb::Ids { vid, pid, bcd } => {
                        p.ok_lines += 1;
                        p.snap.vid = *vid;
                        p.snap.pid = *pid;
                        p.snap.bcd_device = *bcd;
                    }
                    KernelUsb::Text { field, value } => {
                        p.ok_lines += 1;
                        let v = Some(value.clone());
                        match field.as_str() {
                            "Product" => p.snap.product = v,
                            "Manufacturer" => p.snap.manufacturer = v,
                            _ => p.snap.serial = v,
                        }
                    }
                    KernelUsb::Bound { interface, driver } => {
                        p.ok_lines += 1;
                        p.last_if = Some(*interface);
                        if p.snap.interface(*interface).is_none() && p.snap.interfaces.len() < 64 {
                            p.snap.interfaces.push(InterfaceSnapshot {
                                number: *interface,
                                alt: 0,
                                class: 0,
                                subclass: 0,
                                protocol: 0,
                                endpoints: Vec::new(),
                                driver: Some(driver.clone()),
                                tty: None,
                            });
                        }
                    }
                    KernelUsb::Tty { tty } => {
                        p.ok_lines += 1;
                        if let Some(n) = p.last_if {
                            if let Some(i) = p.snap.interfaces.iter_mut().find(|i| i.number == n) {
                                i.tty = Some(format!("/dev/{tty}"));
                            }
                        }
                    }
                    KernelUsb::Connect { .. } | KernelUsb::Disconnect => {}
                }
            }
        }
    }
    for (_, p) in std::mem::take(&mut pending) {
        flush(p, &mut events, &mut present);
    }
    events.sort_by_key(|e| e.t_ms);
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_enumeration_with_ids_strings_drivers_and_ttys() {
        let log = "\
[   10.100000] usb 1-1.3: new high-speed USB device number 5 using xhci_hcd
[   10.300000] usb 1-1.3: New USB device found, idVendor=2c7c, idProduct=0125, bcdDevice= 3.18
[   10.300100] usb 1-1.3: Product: EG25-G
[   10.300200] usb 1-1.3: Manufacturer: Quectel
[   10.400000] option 1-1.3:1.0: GSM modem (1-port) converter detected
[   10.400100] usb 1-1.3: GSM modem (1-port) converter now attached to ttyUSB0
[   10.400200] option 1-1.3:1.2: GSM modem (1-port) converter detected
[   10.400300] usb 1-1.3: GSM modem (1-port) converter now attached to ttyUSB2
[   12.000000] usb 1-1.3: USB disconnect, device number 5
";
        let lines = parse_kernel_log(log);
        assert_eq!(lines.len(), 9);
        let ev = timeline(&lines, None);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].t_ms, 10_100);
        let DeviceChange::Appear { device } = &ev[0].change else {
            panic!("{ev:?}")
        };
        assert_eq!(device.id(), "2c7c:0125");
        assert_eq!(device.bcd_text(), "3.18");
        assert_eq!(device.speed, Some(Speed::High));
        assert_eq!(device.product.as_deref(), Some("EG25-G"));
        assert_eq!(
            device.interface(2).unwrap().tty.as_deref(),
            Some("/dev/ttyUSB2")
        );
        assert_eq!(
            device.interface(0).unwrap().driver.as_deref(),
            Some("option")
        );
        let DeviceChange::Vanish { location, last } = &ev[1].change else {
            panic!()
        };
        assert_eq!(location, "1-1.3");
        assert_eq!(last.as_ref(), Some(device));
    }

    #[test]
    fn a_connect_with_only_descriptor_errors_never_appears() {
        let log = "\
[ 1.000] usb 4-1: new full-speed USB device number 2 using ohci-platform
[ 1.200] usb 4-1: device descriptor read/64, error -62
[ 1.500] usb 4-1: new full-speed USB device number 3 using ohci-platform
[ 1.700] usb 4-1: device descriptor read/64, error -62
";
        assert!(timeline(&parse_kernel_log(log), Some((0x2c7c, 0x0125))).is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_logs_never_panic(lines in proptest::collection::vec(
            prop_oneof![
                "\\[ ?[0-9]{1,6}(\\.[0-9]{0,7})?\\] usb [0-9]{1,3}-[0-9.]{1,8}: [ -~]{0,60}",
                "\\[ ?[0-9]{1,6}\\.[0-9]{6}\\] [a-z_]{1,8} [0-9]-[0-9](:1\\.[0-9]{1,3})?: [ -~]{0,40}",
                "\\PC{0,60}",
            ],
            0..40,
        )) {
            let text = lines.join("\n");
            let parsed = parse_kernel_log(&text);
            let _ = timeline(&parsed, None);
        }
    }
}
