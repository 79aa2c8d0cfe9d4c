//! What Sahara command mode tells about a device (PROTOCOLS.md §1.4): decoders for the EXECUTE
//! payloads and the serialisable [`DeviceInfo`] the CLI prints. Pure functions, no I/O.
//!
//! Every decoder accepts any byte slice the device sends: short or odd-sized payloads give `None`
//! (plus a note from the caller), never a panic.

use serde::Serialize;

use super::packet::mode;

/// MSM hardware ID (EXECUTE 0x02): a u64 whose bits 63..32 are the MSM id, 31..16 the OEM id and
/// 15..0 the model id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HwId {
    pub raw: u64,
    /// `raw` as 16 hex digits, e.g. `000480e100000000`.
    pub hex: String,
    pub msm_id: u32,
    pub msm_id_hex: String,
    pub oem_id: u16,
    pub model_id: u16,
}

impl HwId {
    pub fn from_raw(raw: u64) -> HwId {
        let msm_id = (raw >> 32) as u32;
        HwId {
            raw,
            hex: format!("{raw:016x}"),
            msm_id,
            msm_id_hex: format!("{msm_id:08x}"),
            oem_id: ((raw >> 16) & 0xFFFF) as u16,
            model_id: (raw & 0xFFFF) as u16,
        }
    }
}

/// Chip ID v3 (EXECUTE 0x0A), offered by Sahara v3 devices instead of the HW ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChipIdV3 {
    pub msm_id: u32,
    pub msm_id_hex: String,
    /// Absent when the payload was too short to hold it.
    pub oem_id: Option<u16>,
    pub model_id: Option<u16>,
    /// True when `oem_id` came from the alternate field at offset 44 (offset 40 was zero).
    pub oem_id_from_alternate: bool,
    /// Length of the payload the device sent.
    pub payload_len: usize,
}

/// Everything qrescue learned about a device in Sahara: the HELLO fields and, when command mode
/// was available, the identity items. Every identity field is optional: devices answer some
/// commands and not others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    pub sahara_version: Option<u32>,
    pub sahara_version_supported: Option<u32>,
    pub max_cmd_len: Option<u32>,
    /// The mode the device offered in its HELLO.
    pub mode: Option<u32>,
    /// A word for `mode`, e.g. "crash-dump" for mode 2.
    pub mode_name: Option<String>,
    pub serial: Option<u32>,
    /// `serial` as `0x` + 8 hex digits.
    pub serial_hex: Option<String>,
    pub hw_id: Option<HwId>,
    pub chip_id_v3: Option<ChipIdV3>,
    /// OEM public-key hash, hex, trimmed to one copy (see [`trim_pk_hash`]).
    pub pk_hash: Option<String>,
    pub sbl_version: Option<u32>,
    pub sbl_version_hex: Option<String>,
    /// Plain-words remarks: recoveries, items the device did not answer.
    pub notes: Vec<String>,
}

impl DeviceInfo {
    /// Record the HELLO fields.
    pub fn set_hello(&mut self, version: u32, version_supported: u32, max_cmd_len: u32, m: u32) {
        self.sahara_version = Some(version);
        self.sahara_version_supported = Some(version_supported);
        self.max_cmd_len = Some(max_cmd_len);
        self.mode = Some(m);
        self.mode_name = Some(offered_mode_word(m).to_string());
    }

    pub fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        if !self.notes.contains(&s) {
            self.notes.push(s);
        }
    }
}

/// A short word for the mode a device offers in HELLO, for people.
pub fn offered_mode_word(m: u32) -> &'static str {
    match m {
        mode::IMAGE_TX_PENDING => "download",
        mode::IMAGE_TX_COMPLETE => "transfer-complete",
        mode::MEMORY_DEBUG => "crash-dump",
        mode::COMMAND => "command",
        _ => "unknown",
    }
}

fn le_u32(d: &[u8], off: usize) -> Option<u32> {
    let b = d.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le_u16(d: &[u8], off: usize) -> Option<u16> {
    let b = d.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// Serial number (EXECUTE 0x01): a u32 LE in the first four bytes.
pub fn decode_serial(d: &[u8]) -> Option<u32> {
    le_u32(d, 0)
}

/// MSM HW ID (EXECUTE 0x02): a u64 LE in the first eight bytes.
pub fn decode_hw_id(d: &[u8]) -> Option<HwId> {
    let b = d.get(0..8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(HwId::from_raw(u64::from_le_bytes(a)))
}

/// SBL software version (EXECUTE 0x07): a u32 LE in the first four bytes.
pub fn decode_sbl_version(d: &[u8]) -> Option<u32> {
    le_u32(d, 0)
}

/// Chip ID v3 (EXECUTE 0x0A): MSM id u32 at 36, OEM id u16 at 40, model id u16 at 42, and an
/// alternate OEM id u16 at 44 used when the one at 40 is zero. `None` when even the MSM id is
/// missing; a payload cut short after it gives the fields it holds.
pub fn decode_chip_id_v3(d: &[u8]) -> Option<ChipIdV3> {
    let msm_id = le_u32(d, 36)?;
    let mut oem_id = le_u16(d, 40);
    let model_id = le_u16(d, 42);
    let mut alt = false;
    if oem_id == Some(0) {
        if let Some(a) = le_u16(d, 44) {
            if a != 0 {
                oem_id = Some(a);
                alt = true;
            }
        }
    }
    Some(ChipIdV3 {
        msm_id,
        msm_id_hex: format!("{msm_id:08x}"),
        oem_id,
        model_id,
        oem_id_from_alternate: alt,
        payload_len: d.len(),
    })
}

/// Trim an OEM PK-hash payload to one copy of the hash.
///
/// Devices send the hash once per root certificate (so 32-, 48- or 64-byte hashes repeated) or
/// zero-padded. For the hash sizes 32, 48 and 64 (smallest first), when everything after the
/// first `n` bytes is either all zero or a repetition of those `n` bytes (the final copy may be
/// cut short), the first `n` bytes are the hash. Anything else is returned unchanged.
pub fn trim_pk_hash(d: &[u8]) -> &[u8] {
    for n in [32usize, 48, 64] {
        if d.len() < n {
            break;
        }
        let (head, rest) = d.split_at(n);
        let zeros = rest.iter().all(|&b| b == 0);
        let repeats = rest.chunks(n).all(|c| c == &head[..c.len()]);
        if zeros || repeats {
            return head;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H32: &str = "cc3153a80293939b90d02d3bf8b23e0292e452fef662c74998421adad42a380f";

    #[test]
    fn hw_id_fields_are_decoded() {
        // Quectel EC25-E (PROTOCOLS.md §1.4): 0x000480e100000000 = MDM9207.
        let raw = 0x0004_80e1_0000_0000u64;
        let h = decode_hw_id(&raw.to_le_bytes()).unwrap();
        assert_eq!(h.msm_id, 0x0004_80e1);
        assert_eq!(h.oem_id, 0);
        assert_eq!(h.model_id, 0);
        assert_eq!(h.hex, "000480e100000000");
        let h = HwId::from_raw(0x1122_3344_5566_7788);
        assert_eq!(h.msm_id, 0x1122_3344);
        assert_eq!(h.oem_id, 0x5566);
        assert_eq!(h.model_id, 0x7788);
        assert!(decode_hw_id(&[1, 2, 3]).is_none());
    }

    #[test]
    fn serial_from_the_capture() {
        assert_eq!(
            decode_serial(&hex::decode("644cf90c").unwrap()),
            Some(0x0cf9_4c64)
        );
        assert_eq!(decode_serial(&[1, 2]), None);
    }

    #[test]
    fn pk_hash_repeated_three_times_is_trimmed() {
        let one = hex::decode(H32).unwrap();
        let three: Vec<u8> = one.iter().chain(&one).chain(&one).copied().collect();
        assert_eq!(three.len(), 96);
        assert_eq!(trim_pk_hash(&three), &one[..]);
    }

    #[test]
    fn pk_hash_zero_padded_and_sha384_cases() {
        let one = hex::decode(H32).unwrap();
        let mut padded = one.clone();
        padded.resize(64, 0);
        assert_eq!(trim_pk_hash(&padded), &one[..]);

        let h48: Vec<u8> = (1..=48).collect();
        let mut p = h48.clone();
        p.resize(64, 0);
        assert_eq!(trim_pk_hash(&p), &h48[..]);
        let twice: Vec<u8> = h48.iter().chain(&h48).copied().collect();
        assert_eq!(trim_pk_hash(&twice), &h48[..]);

        let h64: Vec<u8> = (100..164).collect();
        assert_eq!(trim_pk_hash(&h64), &h64[..]);
        let short = [1u8, 2, 3];
        assert_eq!(trim_pk_hash(&short), &short[..]);
    }

    #[test]
    fn chip_id_v3_with_alternate_oem_and_short_payloads() {
        let mut d = vec![0u8; 48];
        d[36..40].copy_from_slice(&0x0013_70e1u32.to_le_bytes());
        d[42..44].copy_from_slice(&0x0042u16.to_le_bytes());
        d[44..46].copy_from_slice(&0x0051u16.to_le_bytes());
        let c = decode_chip_id_v3(&d).unwrap();
        assert_eq!(c.msm_id, 0x0013_70e1);
        assert_eq!(c.oem_id, Some(0x51));
        assert!(c.oem_id_from_alternate);
        assert_eq!(c.model_id, Some(0x42));

        d[40..42].copy_from_slice(&0x0007u16.to_le_bytes());
        let c = decode_chip_id_v3(&d).unwrap();
        assert_eq!(c.oem_id, Some(7));
        assert!(!c.oem_id_from_alternate);

        // Exactly 44 bytes: no alternate field to look at.
        let c = decode_chip_id_v3(&d[..44]).unwrap();
        assert_eq!(c.oem_id, Some(7));
        // Cut after the MSM id.
        let c = decode_chip_id_v3(&d[..41]).unwrap();
        assert_eq!(c.oem_id, None);
        assert_eq!(c.model_id, None);
        assert!(decode_chip_id_v3(&d[..39]).is_none());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(d in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_serial(&d);
            let _ = decode_hw_id(&d);
            let _ = decode_sbl_version(&d);
            let _ = decode_chip_id_v3(&d);
            let t = trim_pk_hash(&d);
            prop_assert!(t.len() <= d.len());
            prop_assert_eq!(t, &d[..t.len()]);
        }
    }
}
