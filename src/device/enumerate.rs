//! What is plugged in right now, on a real host: nusb's device list turned into
//! [`DeviceSnapshot`]s, completed from sysfs with what nusb does not give without opening the
//! device — each interface's endpoints, its kernel driver and the tty the kernel made for it
//! (`/sys/bus/usb/devices/<loc>:<cfg>.<if>/{ep_*,driver,ttyUSB*,tty/ttyACM*}`).
//!
//! [`Sysfs`] takes a root path so the reading is tested against a fake tree in a temporary
//! folder. Nothing here opens a device (opening one twice can wedge a boot ROM).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::lsusb::parse_location;
use super::snapshot::{DeviceSnapshot, EndpointSnapshot, InterfaceSnapshot, Speed, TransferType};
use crate::Error;

/// Longest sysfs attribute we read (they are a few bytes; this bounds a hostile tree).
const MAX_ATTR: u64 = 4096;
/// Most directory entries looked at in one folder.
const MAX_ENTRIES: usize = 4096;

/// A sysfs tree: `/` on a real host, a temporary folder in tests.
#[derive(Debug, Clone)]
pub struct Sysfs {
    devices: PathBuf,
}

impl Sysfs {
    /// The tree under `root` (`root/sys/bus/usb/devices`).
    pub fn new(root: impl AsRef<Path>) -> Self {
        Sysfs {
            devices: root.as_ref().join("sys/bus/usb/devices"),
        }
    }

    /// The host's own `/sys`.
    pub fn host() -> Self {
        Self::new("/")
    }

    fn attr(dir: &Path, name: &str) -> Option<String> {
        let f = std::fs::File::open(dir.join(name)).ok()?;
        let mut s = String::new();
        f.take(MAX_ATTR).read_to_string(&mut s).ok()?;
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    }

    fn hex8(dir: &Path, name: &str) -> Option<u8> {
        u8::from_str_radix(&Self::attr(dir, name)?, 16).ok()
    }

    fn hex16(dir: &Path, name: &str) -> Option<u16> {
        u16::from_str_radix(&Self::attr(dir, name)?, 16).ok()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .take(MAX_ENTRIES)
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// The active configuration (`bConfigurationValue`; 1 when not readable).
    pub fn active_config(&self, location: &str) -> u8 {
        Self::attr(&self.devices.join(location), "bConfigurationValue")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }

    fn interface_dir(&self, location: &str, config: u8, number: u8) -> PathBuf {
        self.devices.join(format!("{location}:{config}.{number}"))
    }

    /// The kernel driver bound to an interface directory.
    fn driver(dir: &Path) -> Option<String> {
        let target = std::fs::read_link(dir.join("driver")).ok()?;
        target.file_name()?.to_str().map(str::to_string)
    }

    /// The tty made for an interface: `ttyUSB*` (usb-serial drivers such as option and
    /// qcserial) directly in the interface folder, or `tty/ttyACM*` (cdc-acm).
    fn tty(dir: &Path) -> Option<String> {
        let is_tty = |n: &str| {
            (n.starts_with("ttyUSB") || n.starts_with("ttyACM"))
                && n.len() <= 16
                && n[6..].chars().all(|c| c.is_ascii_digit())
                && n.len() > 6
        };
        let direct = Self::entries(dir).into_iter().find(|n| is_tty(n));
        let name = direct.or_else(|| {
            Self::entries(&dir.join("tty"))
                .into_iter()
                .find(|n| is_tty(n))
        })?;
        Some(format!("/dev/{name}"))
    }

    fn endpoints(dir: &Path) -> Vec<EndpointSnapshot> {
        let mut eps = Vec::new();
        for name in Self::entries(dir) {
            if !name.starts_with("ep_") {
                continue;
            }
            let ep = dir.join(&name);
            let Some(address) = Self::hex8(&ep, "bEndpointAddress") else {
                continue;
            };
            let transfer = match Self::attr(&ep, "type").as_deref() {
                Some("Bulk") => TransferType::Bulk,
                Some("Interrupt") => TransferType::Interrupt,
                Some("Isoc") | Some("Isochronous") => TransferType::Isochronous,
                Some("Control") => TransferType::Control,
                _ => continue,
            };
            let max_packet_size = Self::hex16(&ep, "wMaxPacketSize").unwrap_or(0) & 0x7ff;
            eps.push(EndpointSnapshot {
                address,
                transfer,
                max_packet_size,
            });
            if eps.len() >= 32 {
                break;
            }
        }
        eps
    }

    /// Fill in each interface's driver, tty and (when missing) endpoints, and the interfaces
    /// themselves when the snapshot has none.
    pub fn enrich(&self, snap: &mut DeviceSnapshot) {
        let location = snap.location();
        if snap.ports.is_empty() {
            // Root hubs: nothing of interest.
            return;
        }
        let config = self.active_config(&location);
        if snap.interfaces.is_empty() {
            snap.interfaces = self.interfaces(&location, config);
            return;
        }
        for i in &mut snap.interfaces {
            let dir = self.interface_dir(&location, config, i.number);
            if i.endpoints.is_empty() {
                i.endpoints = Self::endpoints(&dir);
            }
            if i.driver.is_none() {
                i.driver = Self::driver(&dir);
            }
            if i.tty.is_none() {
                i.tty = Self::tty(&dir);
            }
        }
    }

    fn interfaces(&self, location: &str, config: u8) -> Vec<InterfaceSnapshot> {
        let prefix = format!("{location}:{config}.");
        let mut out: Vec<InterfaceSnapshot> = Self::entries(&self.devices)
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .filter_map(|n| {
                let dir = self.devices.join(&n);
                Some(InterfaceSnapshot {
                    number: Self::hex8(&dir, "bInterfaceNumber")?,
                    alt: Self::attr(&dir, "bAlternateSetting")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    class: Self::hex8(&dir, "bInterfaceClass")?,
                    subclass: Self::hex8(&dir, "bInterfaceSubClass")?,
                    protocol: Self::hex8(&dir, "bInterfaceProtocol")?,
                    endpoints: Self::endpoints(&dir),
                    driver: Self::driver(&dir),
                    tty: Self::tty(&dir),
                })
            })
            .take(64)
            .collect();
        out.sort_by_key(|i| (i.number, i.alt));
        out
    }

    /// One device entirely from sysfs (`None` when the folder is not a readable device).
    pub fn device(&self, location: &str) -> Option<DeviceSnapshot> {
        let (bus, ports) = parse_location(location)?;
        let dir = self.devices.join(location);
        let speed = match Self::attr(&dir, "speed").as_deref() {
            Some("1.5") => Some(Speed::Low),
            Some("12") => Some(Speed::Full),
            Some("480") => Some(Speed::High),
            Some("5000") => Some(Speed::Super),
            Some("10000") | Some("20000") => Some(Speed::SuperPlus),
            _ => None,
        };
        let mut snap = DeviceSnapshot {
            bus,
            ports,
            address: Self::attr(&dir, "devnum")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            vid: Self::hex16(&dir, "idVendor")?,
            pid: Self::hex16(&dir, "idProduct")?,
            bcd_device: Self::hex16(&dir, "bcdDevice").unwrap_or(0),
            manufacturer: Self::attr(&dir, "manufacturer"),
            product: Self::attr(&dir, "product"),
            serial: Self::attr(&dir, "serial"),
            speed,
            interfaces: Vec::new(),
            origin: None,
        };
        self.enrich(&mut snap);
        Some(snap)
    }

    /// Every device in the tree (not root hubs), by location.
    pub fn devices(&self) -> Vec<DeviceSnapshot> {
        Self::entries(&self.devices)
            .into_iter()
            .filter(|n| !n.contains(':'))
            .filter_map(|n| self.device(&n))
            .collect()
    }
}

/// nusb's view of a device (no I/O: what the OS has cached).
fn from_nusb(info: &nusb::DeviceInfo) -> DeviceSnapshot {
    #[cfg(target_os = "linux")]
    let bus = info.busnum();
    #[cfg(not(target_os = "linux"))]
    let bus = info.bus_id().parse::<u8>().unwrap_or(0);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
    let (ports, speed) = (
        info.port_chain().to_vec(),
        info.speed().and_then(|s| match s {
            nusb::Speed::Low => Some(Speed::Low),
            nusb::Speed::Full => Some(Speed::Full),
            nusb::Speed::High => Some(Speed::High),
            nusb::Speed::Super => Some(Speed::Super),
            nusb::Speed::SuperPlus => Some(Speed::SuperPlus),
            _ => None,
        }),
    );
    #[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
    let (ports, speed) = (Vec::new(), None);
    DeviceSnapshot {
        bus,
        ports,
        address: info.device_address(),
        vid: info.vendor_id(),
        pid: info.product_id(),
        bcd_device: info.device_version(),
        manufacturer: info.manufacturer_string().map(str::to_string),
        product: info.product_string().map(str::to_string),
        serial: info.serial_number().map(str::to_string),
        speed,
        interfaces: info
            .interfaces()
            .map(|i| InterfaceSnapshot {
                number: i.interface_number(),
                alt: 0,
                class: i.class(),
                subclass: i.subclass(),
                protocol: i.protocol(),
                endpoints: Vec::new(),
                driver: None,
                tty: None,
            })
            .collect(),
        origin: None,
    }
}

/// Every USB device on this host, with endpoints, drivers and ttys from `sysfs` (pass
/// [`Sysfs::host`]). Root hubs are left out.
pub fn list_devices(sysfs: &Sysfs) -> crate::Result<Vec<DeviceSnapshot>> {
    use nusb::MaybeFuture;
    let list = nusb::list_devices().wait().map_err(|e| {
        Error::failure(
            "could not list the USB devices",
            "without the list qrescue cannot see any modem",
            "check that /sys/bus/usb (Linux) is readable, or run `lsusb -v` and pass its \
             output with `qrescue list --from-text FILE`",
        )
        .with_source(e)
    })?;
    let mut out: Vec<DeviceSnapshot> = list
        .map(|info| from_nusb(&info))
        .filter(|s| !s.ports.is_empty())
        .map(|mut s| {
            sysfs.enrich(&mut s);
            s
        })
        .collect();
    out.sort_by(|a, b| (a.bus, &a.ports).cmp(&(b.bus, &b.ports)));
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// Build a fake sysfs device folder.
    pub(crate) struct FakeSysfs {
        pub dir: tempfile::TempDir,
    }

    impl FakeSysfs {
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("sys/bus/usb/devices")).unwrap();
            fs::create_dir_all(dir.path().join("sys/bus/usb/drivers")).unwrap();
            FakeSysfs { dir }
        }

        fn devices(&self) -> PathBuf {
            self.dir.path().join("sys/bus/usb/devices")
        }

        pub(crate) fn sysfs(&self) -> Sysfs {
            Sysfs::new(self.dir.path())
        }

        fn write(dir: &Path, attrs: &[(&str, &str)]) {
            fs::create_dir_all(dir).unwrap();
            for (k, v) in attrs {
                fs::write(dir.join(k), format!("{v}\n")).unwrap();
            }
        }

        pub(crate) fn device(&self, loc: &str, attrs: &[(&str, &str)]) {
            Self::write(&self.devices().join(loc), attrs);
        }

        /// An interface with a driver, optional tty (`ttyUSB2` or `tty/ttyACM0`) and endpoints
        /// (address, type, wMaxPacketSize hex).
        pub(crate) fn interface(
            &self,
            name: &str,
            class: (u8, u8, u8),
            driver: Option<&str>,
            tty: Option<&str>,
            eps: &[(u8, &str, &str)],
        ) {
            let dir = self.devices().join(name);
            let number = name.rsplit('.').next().unwrap().parse::<u8>().unwrap();
            Self::write(
                &dir,
                &[
                    ("bInterfaceNumber", &format!("{number:02x}")),
                    ("bAlternateSetting", " 0"),
                    ("bInterfaceClass", &format!("{:02x}", class.0)),
                    ("bInterfaceSubClass", &format!("{:02x}", class.1)),
                    ("bInterfaceProtocol", &format!("{:02x}", class.2)),
                ],
            );
            if let Some(d) = driver {
                let target = self.dir.path().join("sys/bus/usb/drivers").join(d);
                fs::create_dir_all(&target).unwrap();
                std::os::unix::fs::symlink(&target, dir.join("driver")).unwrap();
            }
            if let Some(t) = tty {
                fs::create_dir_all(dir.join(t)).unwrap();
            }
            for (addr, ty, mps) in eps {
                Self::write(
                    &dir.join(format!("ep_{addr:02x}")),
                    &[
                        ("bEndpointAddress", &format!("{addr:02x}")),
                        ("type", ty),
                        ("wMaxPacketSize", mps),
                    ],
                );
            }
        }
    }

    /// An EG25-G in normal mode at 3-1.2 and a 9008 at 4-1, like a real host shows them.
    pub(crate) fn sample() -> FakeSysfs {
        let f = FakeSysfs::new();
        f.device(
            "3-1.2",
            &[
                ("busnum", "3"),
                ("devnum", "7"),
                ("devpath", "1.2"),
                ("idVendor", "2c7c"),
                ("idProduct", "0125"),
                ("bcdDevice", "0318"),
                ("manufacturer", "Quectel"),
                ("product", "EG25-G"),
                ("speed", "480"),
                ("bConfigurationValue", "1"),
            ],
        );
        let bulk = |a: u8| (a, "Bulk", "0200");
        f.interface(
            "3-1.2:1.0",
            (0xff, 0xff, 0xff),
            Some("option"),
            Some("ttyUSB0"),
            &[bulk(0x81), bulk(0x01)],
        );
        f.interface(
            "3-1.2:1.1",
            (0xff, 0, 0),
            Some("option"),
            Some("ttyUSB1"),
            &[(0x83, "Interrupt", "000a"), bulk(0x82), bulk(0x02)],
        );
        f.interface(
            "3-1.2:1.2",
            (0xff, 0, 0),
            Some("option"),
            Some("ttyUSB2"),
            &[bulk(0x84), bulk(0x03)],
        );
        f.interface(
            "3-1.2:1.3",
            (0xff, 0, 0),
            Some("option"),
            Some("ttyUSB3"),
            &[bulk(0x86), bulk(0x04)],
        );
        f.interface(
            "3-1.2:1.4",
            (0xff, 0xff, 0xff),
            Some("qmi_wwan"),
            None,
            &[bulk(0x88), bulk(0x05)],
        );
        f.device(
            "4-1",
            &[
                ("busnum", "4"),
                ("devnum", "2"),
                ("idVendor", "05c6"),
                ("idProduct", "9008"),
                ("bcdDevice", "0000"),
                ("product", "QUSB_BULK_CID:0410_SN:49CBD7EF"),
                ("speed", "480"),
            ],
        );
        f.interface(
            "4-1:1.0",
            (0xff, 0xff, 0x10),
            Some("qcserial"),
            Some("ttyUSB4"),
            &[bulk(0x81), bulk(0x01)],
        );
        // A root hub and an interface folder of another device: not devices.
        f.device("usb3", &[("idVendor", "1d6b"), ("idProduct", "0002")]);
        f
    }

    #[test]
    fn a_fake_tree_reads_like_a_real_host() {
        let f = sample();
        let devs = f.sysfs().devices();
        assert_eq!(devs.len(), 2);
        let eg = &devs[0];
        assert_eq!(eg.location(), "3-1.2");
        assert_eq!(eg.id(), "2c7c:0125");
        assert_eq!(eg.bcd_text(), "3.18");
        assert_eq!(eg.address, 7);
        assert_eq!(eg.speed, Some(Speed::High));
        assert_eq!(eg.interfaces.len(), 5);
        let at = eg.interface(2).unwrap();
        assert_eq!(at.tty.as_deref(), Some("/dev/ttyUSB2"));
        assert_eq!(at.driver.as_deref(), Some("option"));
        assert_eq!(at.endpoints.len(), 2);
        assert_eq!(at.endpoints[0].max_packet_size, 512);
        let int_ep = eg
            .interface(1)
            .unwrap()
            .endpoints
            .iter()
            .find(|e| e.address == 0x83);
        assert_eq!(int_ep.map(|e| e.transfer), Some(TransferType::Interrupt));
        assert_eq!(eg.interface(4).unwrap().tty, None);
        let edl = &devs[1];
        assert_eq!(edl.location(), "4-1");
        let i = edl.interface(0).unwrap();
        assert_eq!((i.protocol, i.driver.as_deref()), (0x10, Some("qcserial")));
        assert_eq!(i.tty.as_deref(), Some("/dev/ttyUSB4"));
    }

    #[test]
    fn cdc_acm_ttys_live_in_a_tty_folder() {
        let f = FakeSysfs::new();
        f.device(
            "1-2",
            &[
                ("idVendor", "2c7c"),
                ("idProduct", "0900"),
                ("speed", "5000"),
            ],
        );
        f.interface(
            "1-2:1.2",
            (0x02, 0x02, 0x01),
            Some("cdc_acm"),
            Some("tty/ttyACM0"),
            &[],
        );
        let d = f.sysfs().device("1-2").unwrap();
        assert_eq!(d.speed, Some(Speed::Super));
        assert_eq!(d.interface(2).unwrap().tty.as_deref(), Some("/dev/ttyACM0"));
    }

    #[test]
    fn enrich_fills_what_nusb_does_not_know() {
        let f = sample();
        let mut s = f.sysfs().device("4-1").unwrap();
        for i in &mut s.interfaces {
            i.endpoints.clear();
            i.driver = None;
            i.tty = None;
        }
        f.sysfs().enrich(&mut s);
        let i = s.interface(0).unwrap();
        assert_eq!(i.endpoints.len(), 2);
        assert_eq!(i.driver.as_deref(), Some("qcserial"));
        assert_eq!(i.tty.as_deref(), Some("/dev/ttyUSB4"));
    }

    #[test]
    fn junk_in_the_tree_is_skipped() {
        let f = FakeSysfs::new();
        f.device("2-1", &[("idVendor", "zzzz"), ("idProduct", "0125")]);
        f.device(
            "not-a-device",
            &[("idVendor", "2c7c"), ("idProduct", "0125")],
        );
        f.device("5-3", &[("idVendor", "2c7c"), ("idProduct", "0125")]);
        f.interface(
            "5-3:1.0",
            (0xff, 0xff, 0x30),
            None,
            Some("ttyUSBx"),
            &[(0x81, "Weird", "0200")],
        );
        let devs = f.sysfs().devices();
        assert_eq!(devs.len(), 1);
        let i = devs[0].interface(0).unwrap();
        assert_eq!(i.tty, None);
        assert!(i.endpoints.is_empty());
        // A tree that does not exist is simply empty.
        assert!(Sysfs::new("/nonexistent-qrescue-root").devices().is_empty());
    }
}
