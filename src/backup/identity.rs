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
//! - [`Identity`]: the EDL part plus what normal mode tells (revision, IMEI, ICCID, USB
//!   composition). The normal-mode fields are filled by callers that talk AT; in EDL they stay
//!   `None`.
//! - [`Identity::unit_key`] is the key the guard and the ledger use (the Sahara serial as
//!   `0x` + 8 hex digits, as `qrescue info` prints it); [`Identity::same_unit`] is the stricter
//!   check restore uses: serial equal, and HW ID / PK hash / IMEI equal wherever both sides know
//!   them.
//!
//! Pure: no I/O.

use serde::{Deserialize, Serialize};

use crate::protocol::sahara::info::DeviceInfo;

/// Longest text accepted in any identity field of a manifest.
const MAX_FIELD: usize = 256;

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
        ] {
            if let Some(v) = v {
                if !text_ok(v) {
                    return Err(format!(
                        "{what} is empty, too long or holds control characters"
                    ));
                }
            }
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
            None => v.push("serial   unknown".into()),
        }
        for (what, x) in [
            ("revision", &self.revision),
            ("IMEI    ", &self.imei),
            ("ICCID   ", &self.iccid),
            ("usbnet  ", &self.usbnet),
        ] {
            if let Some(x) = x {
                v.push(format!("{what} {x}"));
            }
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
