//! What an emulated unit's application firmware knows about itself: model name and factory
//! firmware revision per profile, and the per-unit IMEI, ICCID and RF calibration blob derived
//! from the unit's Sahara serial (so two units of one model differ, and the same unit is the same
//! across runs).

use sha2::{Digest, Sha256};

use crate::package::revision::Revision;
use crate::sim::profile::Profile;

/// The application firmware a model leaves the factory with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFirmware {
    /// What `ATI` / `AT+GMM` print as the model (`EC25`, `RM502Q-AE`).
    pub model: &'static str,
    /// The full revision `AT+QGMR` prints (with its `_NN.NNN.NN.NNN` sub-version).
    pub revision: &'static str,
}

/// The factory firmware of a profile's model, or `None` for a model without a normal-mode
/// emulation.
///
/// - ec25: `EC25EFAR06A17M4G_20.200.20.200`, a real EC25-E revision (USERS.md §1.3, forum thread
///   44652).
/// - rm502q: `RM502QAEAAR13A02M4G` is a real RM502Q-AE revision (wirelessjoint.com,
///   PROTOCOLS.md §7.5); the `_01.001.01.001` sub-version is emulated.
/// - rm520n: `RM520NGLAAR01A07M4G_01.200.01.200`: emulated, in the shape of the RM520N
///   revisions in USERS.md §1.3 (`…_01.200.01.200`).
pub fn model_firmware(profile: &Profile) -> Option<ModelFirmware> {
    let model = profile.name.split('-').next().unwrap_or("");
    Some(match model {
        "ec25" => ModelFirmware {
            model: "EC25",
            revision: "EC25EFAR06A17M4G_20.200.20.200",
        },
        "rm502q" => ModelFirmware {
            model: "RM502Q-AE",
            revision: "RM502QAEAAR13A02M4G_01.001.01.001",
        },
        "rm520n" => ModelFirmware {
            model: "RM520N-GL",
            revision: "RM520NGLAAR01A07M4G_01.200.01.200",
        },
        _ => return None,
    })
}

/// The revision without its sub-version or tags: what `ATI` prints after `Revision:` and what
/// `AT+GMR`/`AT+CGMR` print (`EC25EFAR06A17M4G`).
pub fn short_revision(full: &str) -> &str {
    full.split('_').next().unwrap_or(full)
}

/// Model and variant of a revision (`("EC25", "EFA")`), upper case; `None` when the string is
/// not a Quectel revision.
pub fn model_variant(revision: &str) -> Option<(String, String)> {
    let r = Revision::parse(revision).ok()?;
    Some((r.model, r.variant))
}

fn digest(profile: &Profile, what: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"qrescue emulated unit data");
    // The model, so a unit and its -crash variant are the same unit.
    h.update(profile.name.split('-').next().unwrap_or("").as_bytes());
    h.update(profile.identity.serial.to_le_bytes());
    h.update(what);
    h.finalize().into()
}

/// The Luhn check digit for `digits` (ASCII decimal digits), as IMEIs (3GPP TS 23.003 Annex B)
/// and ICCIDs (ITU-T E.118) use it.
pub fn luhn_digit(digits: &str) -> u8 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0') % 10);
            if i % 2 == 0 {
                let x = d * 2;
                x / 10 + x % 10
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// True when `s` is 15 decimal digits with a valid Luhn check digit.
pub fn is_valid_imei(s: &str) -> bool {
    s.len() == 15
        && s.bytes().all(|b| b.is_ascii_digit())
        && luhn_digit(&s[..14]) == s.as_bytes()[14] - b'0'
}

fn decimal(d: &[u8], n: usize) -> String {
    let mut v = u128::from_le_bytes(d[..16].try_into().expect("16 bytes"));
    let mut s = String::with_capacity(n);
    for _ in 0..n {
        s.push(char::from(b'0' + (v % 10) as u8));
        v /= 10;
    }
    s
}

/// The unit's IMEI: an emulated 8-digit TAC (`86123405`, in the 86 range Quectel modules'
/// IMEIs commonly start with; not a registered TAC), six serial digits derived from the Sahara
/// serial, and the Luhn check digit: 15 digits.
pub fn unit_imei(profile: &Profile) -> String {
    let body = format!("86123405{}", decimal(&digest(profile, b"imei"), 6));
    let check = luhn_digit(&body);
    format!("{body}{check}")
}

/// The ICCID of the SIM in the emulated unit: `8949` (telecom, Germany), 15 digits derived from
/// the unit, the Luhn check digit: 20 digits.
pub fn unit_iccid(profile: &Profile) -> String {
    let body = format!("8949{}", decimal(&digest(profile, b"iccid"), 15));
    let check = luhn_digit(&body);
    format!("{body}{check}")
}

/// Length of the emulated RF calibration blob.
pub const CALIBRATION_LEN: usize = 2048;

/// The unit's RF calibration: [`CALIBRATION_LEN`] bytes unique to the unit (emulated content:
/// real calibration is a set of RF NV items written at the factory).
pub fn calibration_blob(profile: &Profile) -> Vec<u8> {
    let mut out = Vec::with_capacity(CALIBRATION_LEN);
    let mut counter = 0u32;
    while out.len() < CALIBRATION_LEN {
        let mut h = Sha256::new();
        h.update(digest(profile, b"rf calibration"));
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(CALIBRATION_LEN);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_matches_known_numbers() {
        // The IMEI example of 3GPP TS 23.003 Annex B: 35 209900 176148 check digit 1.
        assert_eq!(luhn_digit("35209900176148"), 1);
        assert!(is_valid_imei("352099001761481"));
        assert!(!is_valid_imei("352099001761482"));
        assert!(!is_valid_imei("35209900176148"));
        assert!(!is_valid_imei("35209900176148a"));
        // ICCID-style check: 8949 ... from a Luhn calculator: 7992739871 -> 3.
        assert_eq!(luhn_digit("7992739871"), 3);
    }

    #[test]
    fn identities_are_per_unit_valid_and_stable() {
        let a = Profile::by_name("ec25").unwrap().for_unit(1);
        let b = Profile::by_name("ec25").unwrap().for_unit(2);
        let a_crash = Profile::by_name("ec25-crash").unwrap().for_unit(1);
        assert!(is_valid_imei(&unit_imei(&a)), "{}", unit_imei(&a));
        assert_ne!(unit_imei(&a), unit_imei(&b));
        assert_eq!(unit_imei(&a), unit_imei(&a_crash));
        let iccid = unit_iccid(&a);
        assert_eq!(iccid.len(), 20);
        assert_eq!(luhn_digit(&iccid[..19]), iccid.as_bytes()[19] - b'0');
        assert_ne!(iccid, unit_iccid(&b));
        assert_eq!(calibration_blob(&a).len(), CALIBRATION_LEN);
        assert_ne!(calibration_blob(&a), calibration_blob(&b));
        assert_eq!(calibration_blob(&a), calibration_blob(&a_crash));
    }

    #[test]
    fn firmware_revisions_parse_and_give_model_and_variant() {
        for (name, model, variant) in [
            ("ec25", "EC25", "EFA"),
            ("rm502q", "RM502Q", "AEAA"),
            ("rm520n", "RM520N", "GLAA"),
        ] {
            let fw = model_firmware(&Profile::by_name(name).unwrap()).unwrap();
            assert_eq!(
                model_variant(fw.revision),
                Some((model.to_string(), variant.to_string()))
            );
            assert!(!short_revision(fw.revision).contains('_'));
        }
        assert_eq!(
            short_revision("EC25EFAR06A17M4G_20.200.20.200"),
            "EC25EFAR06A17M4G"
        );
        assert_eq!(model_variant("not a revision"), None);
    }
}
