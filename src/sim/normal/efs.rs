//! The emulated modem EFS: a small file system image the emulator keeps in the unit's EFS
//! partitions (`EFS2` on NAND; `modemst1`, `modemst2` and the golden copy `fsg` on eMMC/UFS), with
//! the per-unit IMEI (as NV item 550) and the RF calibration.
//!
//! # Image layout (an emulation: real EFS2 is a flash file system, and modemst/fsg hold Qualcomm's
//! own encoded images; nothing here reproduces them)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `QRSIMEFS` |
//! | 8 | 4 | version 1 (LE) |
//! | 12 | 4 | number of files (LE), at most [`MAX_FILES`] |
//! | 16 | 4 | total image length in bytes, header and CRC included (LE), at most [`MAX_IMAGE`] |
//! | 20 | … | files: path length u16 LE, path (ASCII, starts with `/`), data length u32 LE, data |
//! | end−4 | 4 | CRC-32 (IEEE) of every byte before it (LE) |
//!
//! Legacy NV items live as files `/nvm/num/<item>` (the place EFS keeps them on Qualcomm modems,
//! as EFS listings from edl's `efs` commands and DIAG EFS dumps show); the calibration is the file
//! [`CALIBRATION_PATH`], an RF NV item file under `/nv/item_files/rfnv/` as Qualcomm modems keep
//! them (emulated content).

/// Magic at the start of an emulated EFS image.
pub const MAGIC: &[u8; 8] = b"QRSIMEFS";
/// Largest image accepted.
pub const MAX_IMAGE: usize = 256 * 1024;
/// Most files accepted.
pub const MAX_FILES: usize = 256;
/// Longest path accepted.
pub const MAX_PATH: usize = 128;
/// NV item 550: the IMEI (NV_UE_IMEI_I).
pub const NV_IMEI: u16 = 550;
/// The emulated RF calibration file.
pub const CALIBRATION_PATH: &str = "/nv/item_files/rfnv/00020000";

/// EFS path of a legacy NV item.
pub fn nv_path(item: u16) -> String {
    format!("/nvm/num/{item}")
}

/// A parsed image: files in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EfsImage {
    pub files: Vec<(String, Vec<u8>)>,
}

impl EfsImage {
    /// The data of the file at `path`.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, d)| d.as_slice())
    }

    /// Add or replace a file.
    pub fn put(&mut self, path: &str, data: Vec<u8>) {
        match self.files.iter_mut().find(|(p, _)| p == path) {
            Some((_, d)) => *d = data,
            None => self.files.push((path.to_string(), data)),
        }
    }

    /// The IMEI from NV item 550, when present and well formed.
    pub fn imei(&self) -> Option<String> {
        decode_imei(self.file(&nv_path(NV_IMEI))?)
    }

    /// The image's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for (path, data) in &self.files {
            out.extend_from_slice(&(path.len() as u16).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        let total = (out.len() + 4) as u32;
        out[16..20].copy_from_slice(&total.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parse an image from the start of `bytes` (trailing bytes are ignored). `None` for
    /// anything that is not a complete, consistent image: erased or zeroed flash, a torn write,
    /// a bad CRC.
    pub fn parse(bytes: &[u8]) -> Option<EfsImage> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        if bytes.get(..8)? != MAGIC || u32_at(8)? != 1 {
            return None;
        }
        let count = u32_at(12)? as usize;
        let total = u32_at(16)? as usize;
        if count > MAX_FILES || !(24..=MAX_IMAGE).contains(&total) || total > bytes.len() {
            return None;
        }
        let body = &bytes[..total - 4];
        if crc32fast::hash(body) != u32_at(total - 4)? {
            return None;
        }
        let mut files = Vec::with_capacity(count);
        let mut at = 20usize;
        for _ in 0..count {
            let plen = usize::from(u16::from_le_bytes(body.get(at..at + 2)?.try_into().ok()?));
            at += 2;
            if plen == 0 || plen > MAX_PATH {
                return None;
            }
            let path = std::str::from_utf8(body.get(at..at + plen)?).ok()?;
            if !path.starts_with('/') || !path.is_ascii() {
                return None;
            }
            at += plen;
            let dlen = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
            at += 4;
            let data = body.get(at..at.checked_add(dlen)?)?;
            at += dlen;
            files.push((path.to_string(), data.to_vec()));
        }
        (at == body.len()).then_some(EfsImage { files })
    }
}

/// NV item 550 as Qualcomm modems store it: 9 bytes, a length byte 0x08, then the IMEI in the
/// 3GPP mobile-identity layout (TS 24.008 §10.5.1.4): the first octet carries digit 1 in its high
/// nibble and `0xA` in its low nibble (identity type 2 = IMEI, odd number of digits), then two
/// digits per octet, low nibble first. Checked against a real dump: `08 9A 09 10 86 87 75 93 78`
/// is IMEI 990016878573987 (phawd/007smsdev docs/NV_EFS_EXPLORATION.md, NV 550 of an SDX20 MiFi).
pub fn encode_imei(imei: &str) -> Option<[u8; 9]> {
    let d: Vec<u8> = imei.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    if d.len() != 15 || d.iter().any(|x| *x > 9) {
        return None;
    }
    let mut out = [0u8; 9];
    out[0] = 0x08;
    out[1] = (d[0] << 4) | 0x0A;
    for i in 0..7 {
        out[2 + i] = d[1 + 2 * i] | (d[2 + 2 * i] << 4);
    }
    Some(out)
}

/// The IMEI in an NV 550 value (see [`encode_imei`]); `None` unless it is the 15-digit IMEI
/// layout (unwritten items read as zeros or 0xFF).
pub fn decode_imei(nv: &[u8]) -> Option<String> {
    if nv.len() < 9 || nv[0] != 0x08 || nv[1] & 0x0F != 0x0A {
        return None;
    }
    let mut digits = vec![nv[1] >> 4];
    for b in &nv[2..9] {
        digits.push(b & 0x0F);
        digits.push(b >> 4);
    }
    if digits.iter().any(|d| *d > 9) {
        return None;
    }
    Some(digits.iter().map(|d| char::from(b'0' + d)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn imei_encoding_matches_the_real_dump() {
        let real = [0x08, 0x9A, 0x09, 0x10, 0x86, 0x87, 0x75, 0x93, 0x78];
        assert_eq!(decode_imei(&real).as_deref(), Some("990016878573987"));
        assert_eq!(encode_imei("990016878573987"), Some(real));
        assert_eq!(encode_imei("99001687857398"), None);
        assert_eq!(encode_imei("99001687857398x"), None);
        assert_eq!(decode_imei(&[0xFF; 9]), None);
        assert_eq!(decode_imei(&[0; 128]), None);
    }

    #[test]
    fn images_round_trip_and_damage_is_refused() {
        let mut img = EfsImage::default();
        img.put(
            &nv_path(NV_IMEI),
            encode_imei("990016878573987").unwrap().to_vec(),
        );
        img.put(CALIBRATION_PATH, vec![7; 100]);
        img.put(CALIBRATION_PATH, vec![9; 50]);
        let mut bytes = img.encode();
        assert_eq!(EfsImage::parse(&bytes), Some(img.clone()));
        assert_eq!(
            EfsImage::parse(&bytes).unwrap().imei().as_deref(),
            Some("990016878573987")
        );
        assert_eq!(img.file(CALIBRATION_PATH), Some(&[9u8; 50][..]));
        // Trailing flash contents do not matter.
        bytes.extend_from_slice(&[0xFF; 4096]);
        assert!(EfsImage::parse(&bytes).is_some());
        let mut torn = bytes.clone();
        torn[40] ^= 1;
        assert_eq!(EfsImage::parse(&torn), None);
        assert_eq!(EfsImage::parse(&bytes[..30]), None);
        assert_eq!(EfsImage::parse(&[0xFF; 4096]), None);
        assert_eq!(EfsImage::parse(&[0; 4096]), None);
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..600),
            magic in any::<bool>(),
        ) {
            if magic && bytes.len() >= 20 {
                bytes[..8].copy_from_slice(MAGIC);
                bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
            }
            let _ = EfsImage::parse(&bytes);
            let _ = decode_imei(&bytes);
        }
    }
}
