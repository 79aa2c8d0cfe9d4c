//! The identity snapshot kept with every backup: who the modem is, so a backup is only ever
//! matched to (and restored onto) the unit it was taken from.
//!
//! # Why
//!
//! RF calibration and the IMEI are made per unit at the factory; "restoring another unit's QCN
//! killed the AT port" (USERS.md §2.x, RM550V) and "IMEI restore only from this unit's own
//! backup or label" (USERS.md §1.2). So a backup carries the unit's identity and every use of it
//! checks the identity first.
//!
//! # What
//!
//! - [`EdlIdentity`]: what the boot ROM says over Sahara command mode (serial, HW ID or chip
//!   ID v3 MSM id, OEM PK hash), taken from [`DeviceInfo`].
//! - [`Identity`]: the EDL part plus what normal mode tells (model, revision, IMEI, ICCID, the
//!   `usbnet` setting and the USB composition: ID and interface roles). The normal-mode fields
//!   are filled from the AT identity record ([`Identity::add_normal`], [`Identity::from_normal`])
//!   and the device's USB snapshot ([`UsbComposition::from_device`]); in EDL they stay `None`
//!   unless a caller identified the modem over AT before switching it (the update workflow
//!   does), which it records with [`Identity::add_normal`] before the backup is taken.
//! - [`Identity::normal_key`]: what a normal-mode backup (NV/EFS over DIAG) is filed under when
//!   no Sahara serial is known: `imei-` + the 15 IMEI digits.
//! - [`Identity::unit_key`] is the key the guard and the ledger use (the Sahara serial as
//!   `0x` + 8 hex digits, as `qrescue info` prints it); [`Identity::same_unit`] is the stricter
//!   check restore uses: serial equal, and HW ID / PK hash / IMEI equal wherever both sides know
//!   them.
//!
//! Pure: no I/O.

use serde::{Deserialize, Serialize};

use crate::device::classify::Classification;
use crate::device::DeviceSnapshot;
use crate::engine::at::NormalIdentity;
use crate::protocol::sahara::info::DeviceInfo;

/// Longest text accepted in any identity field of a manifest.
const MAX_FIELD: usize = 256;
/// Most interfaces a recorded USB composition lists.
const MAX_PORTS: usize = 32;
/// Prefix of [`Identity::normal_key`].
pub const NORMAL_KEY_PREFIX: &str = "imei-";

/// One interface of a USB composition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbPortEntry {
    /// bInterfaceNumber.
    pub interface: u8,
    /// What it is (`DM`, `NMEA`, `AT`, `modem`, `net`, `adb`, `sahara`, `other`).
    pub role: String,
    /// `ff/ff/30` when the descriptor is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The kernel driver bound to it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

/// The USB composition a modem showed: its ID and its interfaces by number (tty names are left
/// out: they change with every plug).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbComposition {
    /// `2c7c:0125`.
    pub usb_id: String,
    pub ports: Vec<UsbPortEntry>,
}

impl UsbComposition {
    /// The composition of `snap` as `class` reads it (at most 32 interfaces).
    pub fn from_device(snap: &DeviceSnapshot, class: &Classification) -> UsbComposition {
        UsbComposition {
            usb_id: snap.id(),
            ports: class
                .ports
                .iter()
                .take(MAX_PORTS)
                .map(|p| UsbPortEntry {
                    interface: p.interface,
                    role: p.role.label().to_string(),
                    class: p.class.clone().filter(|c| text_ok(c)),
                    driver: p.driver.clone().filter(|d| text_ok(d)),
                })
                .collect(),
        }
    }

    /// `2c7c:0125 if0 DM, if1 NMEA, if2 AT, if3 modem, if4 net`.
    pub fn describe(&self) -> String {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("if{} {}", p.interface, p.role))
            .collect();
        if ports.is_empty() {
            self.usb_id.clone()
        } else {
            format!("{} {}", self.usb_id, ports.join(", "))
        }
    }

    fn validate(&self) -> Result<(), String> {
        let id_ok = self.usb_id.len() == 9
            && self.usb_id.as_bytes()[4] == b':'
            && self
                .usb_id
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 4 || b.is_ascii_hexdigit());
        if !id_ok {
            return Err(format!("usb_id {:?} is not vid:pid", self.usb_id));
        }
        if self.ports.len() > MAX_PORTS {
            return Err("the USB composition lists more interfaces than a device has".into());
        }
        for p in &self.ports {
            let texts = [Some(&p.role), p.class.as_ref(), p.driver.as_ref()];
            if texts.into_iter().flatten().any(|t| !text_ok(t)) {
                return Err(format!(
                    "interface {} of the USB composition has an unprintable field",
                    p.interface
                ));
            }
        }
        Ok(())
    }
}

/// What the boot ROM tells about the unit (Sahara command mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdlIdentity {
    /// The Sahara serial number (EXECUTE 0x01).
    pub serial: u32,
    /// `serial` as `0x` + 8 lower-case hex digits.
    pub serial_hex: String,
    /// The HW ID as 16 hex digits (Sahara v2), when the boot ROM answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw_id: Option<String>,
    /// The MSM id (8 hex digits), from the HW ID or from chip ID v3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msm_id: Option<String>,
    /// The OEM public-key hash (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pk_hash: Option<String>,
}

/// Who the unit is: the EDL identity and, when known, what normal mode reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edl: Option<EdlIdentity>,
    /// Firmware revision (`AT+QGMR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// IMEI (`AT+CGSN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    /// ICCID of the SIM (`AT+QCCID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    /// USB composition (`AT+QCFG="usbnet"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usbnet: Option<String>,
    /// Model (`ATI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The USB composition in normal mode (ID and interface roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb: Option<UsbComposition>,
}

fn hex_ok(s: &str, len: Option<usize>) -> bool {
    !s.is_empty()
        && s.len() <= MAX_FIELD
        && len.is_none_or(|l| s.len() == l)
        && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn text_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_FIELD && s.chars().all(|c| !c.is_control())
}

impl EdlIdentity {
    /// The EDL identity in `info`, when the boot ROM told its serial (without it there is
    /// nothing to tell units apart by).
    pub fn from_device_info(info: &DeviceInfo) -> Option<EdlIdentity> {
        let serial = info.serial?;
        let msm_id = info
            .hw_id
            .as_ref()
            .map(|h| h.msm_id_hex.clone())
            .or_else(|| info.chip_id_v3.as_ref().map(|c| c.msm_id_hex.clone()));
        Some(EdlIdentity {
            serial,
            serial_hex: format!("0x{serial:08x}"),
            hw_id: info.hw_id.as_ref().map(|h| h.hex.clone()),
            msm_id,
            pk_hash: info
                .pk_hash
                .as_ref()
                .filter(|p| hex_ok(p, None))
                .map(|p| p.to_ascii_lowercase()),
        })
    }

    fn validate(&self) -> Result<(), String> {
        if self.serial_hex != format!("0x{:08x}", self.serial) {
            return Err(format!(
                "serial_hex {:?} does not match serial {}",
                self.serial_hex, self.serial
            ));
        }
        if let Some(h) = &self.hw_id {
            if !hex_ok(h, Some(16)) {
                return Err(format!("hw_id {h:?} is not 16 hex digits"));
            }
        }
        if let Some(m) = &self.msm_id {
            if !hex_ok(m, Some(8)) {
                return Err(format!("msm_id {m:?} is not 8 hex digits"));
            }
        }
        if let Some(p) = &self.pk_hash {
            if !hex_ok(p, None) {
                return Err("pk_hash is not hex".into());
            }
        }
        Ok(())
    }
}

impl Identity {
    /// An identity with only the EDL part, from what Sahara command mode told.
    pub fn from_device_info(info: &DeviceInfo) -> Identity {
        Identity {
            edl: EdlIdentity::from_device_info(info),
            ..Identity::default()
        }
    }

    /// The identity of a modem in normal mode from its AT identity record (no EDL part).
    pub fn from_normal(n: &NormalIdentity) -> Identity {
        let mut id = Identity::default();
        id.add_normal(n);
        id
    }

    /// Fill the normal-mode fields from an AT identity record, e.g. taken before the modem was
    /// switched to EDL, so an EDL backup also records revision, IMEI, ICCID and `usbnet`.
    /// Fields the record lacks (or holds unprintable text in) are left as they are.
    pub fn add_normal(&mut self, n: &NormalIdentity) {
        let keep = |v: Option<String>| v.filter(|t| text_ok(t));
        if let Some(v) = keep(n.revision.as_ref().map(|r| r.text.clone())) {
            self.revision = Some(v);
        }
        if let Some(v) = keep(n.imei.as_ref().map(|i| i.digits.clone())) {
            self.imei = Some(v);
        }
        if let Some(v) = keep(n.iccid.as_ref().map(|i| i.value.clone())) {
            self.iccid = Some(v);
        }
        if let Some(u) = n.usbnet {
            self.usbnet = Some(format!("{} ({})", u.mode, u.name()));
        }
        if let Some(v) = keep(n.model.clone()) {
            self.model = Some(v);
        }
    }

    /// Record the USB composition the modem showed in normal mode.
    pub fn with_usb(mut self, usb: Option<UsbComposition>) -> Identity {
        if usb.is_some() {
            self.usb = usb;
        }
        self
    }

    /// The key a normal-mode backup is filed under when the Sahara serial is not known:
    /// `imei-` + the IMEI's 15 digits. `None` without a 15-digit IMEI.
    pub fn normal_key(&self) -> Option<String> {
        self.imei
            .as_ref()
            .filter(|i| i.len() == 15 && i.bytes().all(|b| b.is_ascii_digit()))
            .map(|i| format!("{NORMAL_KEY_PREFIX}{i}"))
    }

    /// The key backups are filed and looked up under: the Sahara serial as `0x` + 8 hex
    /// digits. `None` when the serial is not known.
    pub fn unit_key(&self) -> Option<String> {
        self.edl.as_ref().map(|e| e.serial_hex.clone())
    }

    /// Whether `self` (a backup's identity) and `device` (the modem connected now) are the same
    /// unit: both know their Sahara serial and it is equal, and HW ID, MSM id, PK hash and IMEI
    /// agree wherever both sides know them. `Err` says in plain words why not.
    pub fn same_unit(&self, device: &Identity) -> Result<(), String> {
        let (Some(a), Some(b)) = (&self.edl, &device.edl) else {
            return Err(match (&self.edl, &device.edl) {
                (None, _) => "the backup does not record the modem's serial number".into(),
                _ => {
                    "the modem's serial number is not known (it did not answer Sahara command mode)"
                        .into()
                }
            });
        };
        if a.serial != b.serial {
            return Err(format!(
                "the backup is of unit {}, the modem connected is unit {}",
                a.serial_hex, b.serial_hex
            ));
        }
        let pairs = [
            ("HW ID", &a.hw_id, &b.hw_id),
            ("MSM id", &a.msm_id, &b.msm_id),
            ("PK hash", &a.pk_hash, &b.pk_hash),
            ("IMEI", &self.imei, &device.imei),
        ];
        for (what, x, y) in pairs {
            if let (Some(x), Some(y)) = (x, y) {
                if !x.eq_ignore_ascii_case(y) {
                    return Err(format!(
                        "the serial numbers match ({}) but the {what} differs: backup {x}, modem {y}",
                        a.serial_hex
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check a parsed identity (from a manifest a person may have edited).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(e) = &self.edl {
            e.validate()?;
        }
        for (what, v) in [
            ("revision", &self.revision),
            ("imei", &self.imei),
            ("iccid", &self.iccid),
            ("usbnet", &self.usbnet),
            ("model", &self.model),
        ] {
            if let Some(v) = v {
                if !text_ok(v) {
                    return Err(format!(
                        "{what} is empty, too long or holds control characters"
                    ));
                }
            }
        }
        if let Some(u) = &self.usb {
            u.validate()?;
        }
        Ok(())
    }

    /// Lines for people, e.g. `serial 0x0cf94c64`.
    pub fn describe(&self) -> Vec<String> {
        let mut v = Vec::new();
        match &self.edl {
            Some(e) => {
                v.push(format!("serial   {}", e.serial_hex));
                if let Some(h) = &e.hw_id {
                    v.push(format!("HW ID    0x{h}"));
                } else if let Some(m) = &e.msm_id {
                    v.push(format!("MSM id   0x{m}"));
                }
                if let Some(p) = &e.pk_hash {
                    v.push(format!("PK hash  {}", p.get(..16).unwrap_or(p)));
                }
            }
            None if self.imei.is_some() || self.revision.is_some() => {
                v.push("serial   not read (identified in normal mode)".into())
            }
            None => v.push("serial   unknown".into()),
        }
        for (what, x) in [
            ("model   ", &self.model),
            ("revision", &self.revision),
            ("IMEI    ", &self.imei),
            ("ICCID   ", &self.iccid),
            ("usbnet  ", &self.usbnet),
        ] {
            if let Some(x) = x {
                v.push(format!("{what} {x}"));
            }
        }
        if let Some(u) = &self.usb {
            v.push(format!("USB      {}", u.describe()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sahara::info::HwId;

    fn info(serial: Option<u32>) -> DeviceInfo {
        DeviceInfo {
            serial,
            hw_id: Some(HwId::from_raw(0x0004_80e1_0000_0000)),
            pk_hash: Some("ABCDEF0123".into()),
            ..DeviceInfo::default()
        }
    }

    #[test]
    fn from_sahara_info() {
        let id = Identity::from_device_info(&info(Some(0x0cf9_4c64)));
        let e = id.edl.as_ref().unwrap();
        assert_eq!(e.serial_hex, "0x0cf94c64");
        assert_eq!(e.hw_id.as_deref(), Some("000480e100000000"));
        assert_eq!(e.msm_id.as_deref(), Some("000480e1"));
        assert_eq!(e.pk_hash.as_deref(), Some("abcdef0123"));
        assert_eq!(id.unit_key().as_deref(), Some("0x0cf94c64"));
        assert!(id.validate().is_ok());
        // No serial: no EDL identity, no key.
        let none = Identity::from_device_info(&info(None));
        assert!(none.edl.is_none() && none.unit_key().is_none());
    }

    #[test]
    fn same_unit_rules() {
        let a = Identity::from_device_info(&info(Some(7)));
        assert!(a.same_unit(&a).is_ok());
        let other = Identity::from_device_info(&info(Some(8)));
        assert!(a.same_unit(&other).unwrap_err().contains("unit 0x00000008"));
        let mut pk = a.clone();
        pk.edl.as_mut().unwrap().pk_hash = Some("00".into());
        assert!(a.same_unit(&pk).unwrap_err().contains("PK hash"));
        // Unknown on one side is not a difference.
        let mut bare = a.clone();
        bare.edl.as_mut().unwrap().hw_id = None;
        bare.edl.as_mut().unwrap().pk_hash = None;
        assert!(a.same_unit(&bare).is_ok());
        let mut imei = a.clone();
        imei.imei = Some("1".into());
        let mut imei2 = a.clone();
        imei2.imei = Some("2".into());
        assert!(imei.same_unit(&imei2).unwrap_err().contains("IMEI"));
        assert!(Identity::default().same_unit(&a).is_err());
        assert!(a.same_unit(&Identity::default()).is_err());
    }

    fn normal_record() -> NormalIdentity {
        use crate::protocol::at::{FirmwareRevision, Iccid, Imei, UsbNet};
        NormalIdentity {
            manufacturer: Some("Quectel".into()),
            model: Some("EC25".into()),
            revision: Some(FirmwareRevision {
                text: "EC25EFAR06A17M4G_20.200.20.200".into(),
            }),
            imei: Some(Imei {
                digits: "490154203237518".into(),
                luhn_ok: true,
            }),
            iccid: Some(Iccid {
                value: "89860318740210183215".into(),
                luhn_ok: Some(true),
            }),
            usbnet: Some(UsbNet { mode: 0 }),
            ..NormalIdentity::default()
        }
    }

    #[test]
    fn normal_mode_fields_come_from_the_at_record_and_the_usb_snapshot() {
        let n = normal_record();
        let id = Identity::from_normal(&n);
        assert_eq!(
            id.revision.as_deref(),
            Some("EC25EFAR06A17M4G_20.200.20.200")
        );
        assert_eq!(id.imei.as_deref(), Some("490154203237518"));
        assert_eq!(id.iccid.as_deref(), Some("89860318740210183215"));
        assert_eq!(id.usbnet.as_deref(), Some("0 (RmNet (QMI/PPP))"));
        assert_eq!(id.model.as_deref(), Some("EC25"));
        assert_eq!(id.unit_key(), None);
        assert_eq!(id.normal_key().as_deref(), Some("imei-490154203237518"));
        assert!(id.validate().is_ok());
        assert!(id.describe()[0].contains("normal mode"));
        // An EDL identity gains the normal fields; what the record lacks is left alone.
        let mut edl = Identity::from_device_info(&info(Some(7)));
        edl.iccid = Some("1111".into());
        let partial = NormalIdentity {
            imei: n.imei.clone(),
            ..NormalIdentity::default()
        };
        edl.add_normal(&partial);
        assert_eq!(edl.unit_key().as_deref(), Some("0x00000007"));
        assert_eq!(edl.imei.as_deref(), Some("490154203237518"));
        assert_eq!(edl.iccid.as_deref(), Some("1111"));
        // The composition of the emulated EC25 in normal mode.
        let profile = crate::sim::profile::Profile::by_name("ec25").unwrap();
        let snap = crate::sim::normal::ports::normal_snapshot(&profile, 5, 0).unwrap();
        let class = crate::device::classify::classify(&snap);
        let usb = UsbComposition::from_device(&snap, &class);
        assert_eq!(usb.usb_id, "2c7c:0125");
        assert!(usb.describe().contains("if0 DM"), "{}", usb.describe());
        assert!(usb.describe().contains("if2 AT"), "{}", usb.describe());
        let id = id.with_usb(Some(usb.clone()));
        assert!(id.validate().is_ok());
        assert!(id.describe().iter().any(|l| l.starts_with("USB")));
        let back: Identity = serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
        assert_eq!(back, id);
        // Edited compositions are refused.
        let mut bad = id.clone();
        bad.usb.as_mut().unwrap().usb_id = "2c7c-0125".into();
        assert!(bad.validate().is_err());
        let mut bad = id;
        bad.usb.as_mut().unwrap().ports[0].role = "D\u{7}M".into();
        assert!(bad.validate().is_err());
        // No IMEI (or not 15 digits): no normal key.
        let mut short = Identity::from_normal(&n);
        short.imei = Some("12345".into());
        assert_eq!(short.normal_key(), None);
    }

    #[test]
    fn validation_catches_edits() {
        let mut a = Identity::from_device_info(&info(Some(7)));
        a.edl.as_mut().unwrap().serial_hex = "0x00000008".into();
        assert!(a.validate().is_err());
        let mut b = Identity::from_device_info(&info(Some(7)));
        b.edl.as_mut().unwrap().hw_id = Some("xyz".into());
        assert!(b.validate().is_err());
        let c = Identity {
            imei: Some("12\n3".into()),
            ..Identity::default()
        };
        assert!(c.validate().is_err());
    }
}
