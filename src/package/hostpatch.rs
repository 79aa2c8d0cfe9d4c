//! Host-side file patches: `<patch>` entries whose `filename` is a package file
//! (`gpt_main0.bin`, the Quectel MIBIB `partition_complete_p4K_b256K.mbn`) rather than `DISK`.
//!
//! They edit the host copy of a file before it is programmed. qrescue never writes the package
//! folder: [`compute_overlays`] turns the patches of one file into byte [`Overlay`]s that the flash
//! engine lays over the file's bytes while streaming them to the device.
//!
//! Rules (PROTOCOLS.md §2.8, §3):
//! - Positions are file-relative: `start_sector × SECTOR_SIZE_IN_BYTES + byte_offset`, and
//!   `CRC32(start, len)` covers `len` bytes from sector `start` *of the file*.
//! - Patches apply in file order to a working copy, so a CRC32 covers the bytes earlier patches
//!   wrote (the MIBIB patch sets the last partition's length, then the CRC over the header and
//!   table pages).
//! - Values are little-endian, `size_in_bytes` wide; a value that does not fit is refused
//!   (truncating a sector count would corrupt the table).
//! - `NUM_DISK_SECTORS` / `NUM_DISK_BLOCKS` are the device's, known only once the programmer
//!   described its storage (getstorageinfo). Without them such a patch is
//!   [`HostPatchError::NeedsDevice`]; the plan resolves it at configure time or refuses.
//! - A patch (or a CRC range) reaching past the end of the file is refused.
//!
//! Pure code: bytes in, overlays out; no file access.

use serde::Serialize;

use crate::package::expr::{self, ExprEnv, ExprError, PatchValue};
use crate::package::rawprogram::SectorExpr;

/// One host patch, with its file resolved to a package-relative path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPatch {
    /// Entry index in its patch file (0-based).
    pub index: usize,
    /// The patch XML it came from (package-relative).
    pub xml: String,
    /// The patched file (package-relative).
    pub file: String,
    pub lun: u32,
    pub sector_size: u32,
    #[serde(serialize_with = "ser_sector")]
    pub start_sector: SectorExpr,
    pub byte_offset: u64,
    pub size_in_bytes: u32,
    pub value: String,
    pub what: Option<String>,
}

fn ser_sector<S: serde::Serializer>(s: &SectorExpr, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&s.to_string())
}

impl HostPatch {
    /// Whether the patch needs the device's size (`NUM_DISK_SECTORS` / `NUM_DISK_BLOCKS`).
    pub fn needs_device(&self) -> bool {
        mentions_disk(&self.value) || mentions_disk(&self.start_sector.to_string())
    }

    /// For messages: `patch 2 of update/firehose/patch_p4K_b256K.xml (Update MIBIB …)`.
    pub fn describe(&self) -> String {
        match &self.what {
            Some(w) => format!("patch {} of {} ({w})", self.index + 1, self.xml),
            None => format!("patch {} of {}", self.index + 1, self.xml),
        }
    }
}

fn mentions_disk(text: &str) -> bool {
    text.to_ascii_uppercase().contains("NUM_DISK_")
}

/// Bytes laid over a file while it is streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlay {
    /// Byte offset in the file.
    pub at: u64,
    pub bytes: Vec<u8>,
}

/// Why a host patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatchError {
    #[error(
        "{patch}: the value {value} depends on the modem's storage size, which is not known yet"
    )]
    NeedsDevice { patch: String, value: String },
    #[error("{patch}: {value} cannot be evaluated: {error}")]
    Expr {
        patch: String,
        value: String,
        error: ExprError,
    },
    #[error("{patch}: it writes bytes {at}..{end} of {file}, which has only {len} bytes")]
    OutsideFile {
        patch: String,
        file: String,
        at: u64,
        end: u64,
        len: u64,
    },
    #[error("{patch}: CRC32 over bytes {at}..{end} of {file}, which has only {len} bytes")]
    CrcOutsideFile {
        patch: String,
        file: String,
        at: u64,
        end: u64,
        len: u64,
    },
    #[error("{patch}: the value {value} ({number}) does not fit in {size} bytes")]
    TooWide {
        patch: String,
        value: String,
        number: u64,
        size: u32,
    },
}

/// Apply `patches` (all for the same file, in file order) to `bytes` and return the overlays
/// that turn the original file into the patched one. `env` is the device's geometry for the
/// patch's LUN, when known.
pub fn compute_overlays(
    bytes: &mut [u8],
    patches: &[HostPatch],
    env: &dyn Fn(u32) -> Option<ExprEnv>,
) -> Result<Vec<Overlay>, HostPatchError> {
    let len = bytes.len() as u64;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for p in patches {
        let env = env(p.lun);
        let eval_env = match (&env, p.needs_device()) {
            (Some(e), _) => *e,
            (None, true) => {
                return Err(HostPatchError::NeedsDevice {
                    patch: p.describe(),
                    value: if mentions_disk(&p.value) {
                        p.value.clone()
                    } else {
                        p.start_sector.to_string()
                    },
                })
            }
            // Nothing in the expression reads the environment.
            (None, false) => ExprEnv {
                num_disk_sectors: 0,
                num_disk_blocks: None,
            },
        };
        let expr_err = |value: &str, error| HostPatchError::Expr {
            patch: p.describe(),
            value: value.to_string(),
            error,
        };
        let ss = u64::from(p.sector_size);
        let start = match &p.start_sector {
            SectorExpr::Literal(n) => *n,
            SectorExpr::Symbolic(s) => expr::eval(s, &eval_env).map_err(|e| expr_err(s, e))?,
        };
        let size = u64::from(p.size_in_bytes);
        let at = start
            .checked_mul(ss)
            .and_then(|b| b.checked_add(p.byte_offset));
        let end = at.and_then(|a| a.checked_add(size));
        let (at, end) = match (at, end) {
            (Some(a), Some(e)) if e <= len => (a, e),
            _ => {
                return Err(HostPatchError::OutsideFile {
                    patch: p.describe(),
                    file: p.file.clone(),
                    at: at.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len,
                })
            }
        };
        let number =
            match expr::eval_patch_value(&p.value, &eval_env).map_err(|e| expr_err(&p.value, e))? {
                PatchValue::Number(n) => n,
                PatchValue::Crc32 {
                    start_sector,
                    len_bytes,
                } => {
                    let from = start_sector.checked_mul(ss);
                    let to = from.and_then(|f| f.checked_add(len_bytes));
                    match (from, to) {
                        (Some(f), Some(t)) if t <= len => {
                            u64::from(crc32fast::hash(&bytes[f as usize..t as usize]))
                        }
                        _ => {
                            return Err(HostPatchError::CrcOutsideFile {
                                patch: p.describe(),
                                file: p.file.clone(),
                                at: from.unwrap_or(u64::MAX),
                                end: to.unwrap_or(u64::MAX),
                                len,
                            })
                        }
                    }
                }
            };
        if size < 8 && number >> (8 * size) != 0 {
            return Err(HostPatchError::TooWide {
                patch: p.describe(),
                value: p.value.clone(),
                number,
                size: p.size_in_bytes,
            });
        }
        bytes[at as usize..end as usize].copy_from_slice(&number.to_le_bytes()[..size as usize]);
        ranges.push((at, end));
    }
    // Merge touching ranges and take their final bytes from the patched copy.
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, e) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((a, e)),
        }
    }
    Ok(merged
        .into_iter()
        .map(|(a, e)| Overlay {
            at: a,
            bytes: bytes[a as usize..e as usize].to_vec(),
        })
        .collect())
}

/// Lay the overlays over `buf`, which holds the file's bytes from `file_offset` on.
pub fn apply_overlays(buf: &mut [u8], file_offset: u64, overlays: &[Overlay]) {
    let end = file_offset.saturating_add(buf.len() as u64);
    for o in overlays {
        let o_end = o.at.saturating_add(o.bytes.len() as u64);
        let from = o.at.max(file_offset);
        let to = o_end.min(end);
        if from >= to {
            continue;
        }
        let dst = (from - file_offset) as usize..(to - file_offset) as usize;
        let src = (from - o.at) as usize..(to - o.at) as usize;
        buf[dst].copy_from_slice(&o.bytes[src]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::rawprogram::parse_patch;
    use proptest::prelude::*;

    fn hp(entries: &[crate::package::rawprogram::PatchEntry], file: &str) -> Vec<HostPatch> {
        entries
            .iter()
            .filter(|p| p.filename == file)
            .map(|p| HostPatch {
                index: p.index,
                xml: "patch.xml".into(),
                file: file.into(),
                lun: p.physical_partition_number,
                sector_size: p.sector_size,
                start_sector: p.start_sector.clone(),
                byte_offset: p.byte_offset,
                size_in_bytes: p.size_in_bytes,
                value: p.value.clone(),
                what: p.what.clone(),
            })
            .collect()
    }

    fn no_device(_: u32) -> Option<ExprEnv> {
        None
    }

    #[test]
    fn mibib_patch_sets_the_length_then_the_crc_over_the_patched_pages() {
        let xml =
            include_bytes!("../../tests/data/realxml/quectel_em12g_sdx20__patch_p4K_b256K.xml");
        let patches = hp(
            &parse_patch(xml).unwrap(),
            "partition_complete_p4K_b256K.mbn",
        );
        assert_eq!(patches.len(), 2);
        assert!(patches[0].needs_device());
        assert!(!patches[1].needs_device());
        let original: Vec<u8> = (0..4 * 4096).map(|i| (i * 7 % 251) as u8).collect();
        let mut bytes = original.clone();
        let e = compute_overlays(&mut bytes, &patches, &no_device).unwrap_err();
        assert!(matches!(e, HostPatchError::NeedsDevice { .. }), "{e}");
        assert!(e.to_string().contains("NUM_DISK_BLOCKS-1904."), "{e}");
        let env = |_| {
            Some(ExprEnv {
                num_disk_sectors: 2048 * 64,
                num_disk_blocks: Some(2048),
            })
        };
        let mut bytes = original.clone();
        let overlays = compute_overlays(&mut bytes, &patches, &env).unwrap();
        // Length at page 1 + 568, CRC at page 3 + 12.
        assert_eq!(&bytes[4096 + 568..4096 + 572], &144u32.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..8192]);
        assert_eq!(&bytes[3 * 4096 + 12..3 * 4096 + 16], &crc.to_le_bytes());
        // The CRC covers the patched length, not the original bytes.
        assert_ne!(crc, crc32fast::hash(&original[..8192]));
        assert_eq!(overlays.len(), 2);
        let mut streamed = original.clone();
        apply_overlays(&mut streamed, 0, &overlays);
        assert_eq!(streamed, bytes);
        // Streaming a window of the file applies only what falls inside it.
        let mut window = original[4000..5000].to_vec();
        apply_overlays(&mut window, 4000, &overlays);
        assert_eq!(window, bytes[4000..5000]);
    }

    #[test]
    fn gpt_file_patches_match_their_disk_twins() {
        let xml = include_bytes!("../../tests/data/realxml/qcom_emmc_msm8916_ptool__patch0.xml");
        let entries = parse_patch(xml).unwrap();
        let main = hp(&entries, "gpt_main0.bin");
        let backup = hp(&entries, "gpt_backup0.bin");
        assert!(!main.is_empty() && !backup.is_empty());
        let env = |_| {
            Some(ExprEnv {
                num_disk_sectors: 7_634_944,
                num_disk_blocks: None,
            })
        };
        let mut m = vec![0u8; 34 * 512];
        compute_overlays(&mut m, &main, &env).unwrap();
        // Last usable LBA (+48 of the header at sector 1) and the header CRC (+16).
        assert_eq!(&m[512 + 48..512 + 56], &(7_634_944u64 - 34).to_le_bytes());
        let mut header = m[512..512 + 92].to_vec();
        let crc = u32::from_le_bytes(header[16..20].try_into().unwrap());
        header[16..20].fill(0);
        assert_eq!(crc, crc32fast::hash(&header));
        let mut b = vec![0u8; 33 * 512];
        compute_overlays(&mut b, &backup, &env).unwrap();
        assert_eq!(
            &b[32 * 512 + 24..32 * 512 + 32],
            &(7_634_944u64 - 1).to_le_bytes()
        );
    }

    #[test]
    fn patches_outside_the_file_or_too_wide_are_refused() {
        let p = |start: u64, offset: u64, size: u32, value: &str| HostPatch {
            index: 0,
            xml: "patch.xml".into(),
            file: "f.bin".into(),
            lun: 0,
            sector_size: 512,
            start_sector: SectorExpr::Literal(start),
            byte_offset: offset,
            size_in_bytes: size,
            value: value.into(),
            what: None,
        };
        let mut b = vec![0u8; 1024];
        let e = compute_overlays(&mut b, &[p(2, 0, 4, "1")], &no_device).unwrap_err();
        assert!(matches!(e, HostPatchError::OutsideFile { .. }), "{e}");
        let e = compute_overlays(&mut b, &[p(1, 510, 4, "1")], &no_device).unwrap_err();
        assert!(e.to_string().contains("bytes 1022..1026"), "{e}");
        let e = compute_overlays(&mut b, &[p(0, 0, 4, "CRC32(1,1024)")], &no_device).unwrap_err();
        assert!(matches!(e, HostPatchError::CrcOutsideFile { .. }), "{e}");
        let e = compute_overlays(&mut b, &[p(0, 0, 2, "0x10000")], &no_device).unwrap_err();
        assert!(matches!(e, HostPatchError::TooWide { .. }), "{e}");
        let e = compute_overlays(&mut b, &[p(u64::MAX, 0, 2, "1")], &no_device).unwrap_err();
        assert!(matches!(e, HostPatchError::OutsideFile { .. }), "{e}");
        let e = compute_overlays(&mut b, &[p(0, 0, 4, "5-6")], &no_device).unwrap_err();
        assert!(matches!(e, HostPatchError::Expr { .. }), "{e}");
        // Overlapping patches: the later one wins, one overlay.
        let o = compute_overlays(
            &mut b,
            &[p(0, 0, 4, "0"), p(0, 2, 4, "0x0a0b0c0d")],
            &no_device,
        )
        .unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].bytes, vec![0, 0, 0x0d, 0x0c, 0x0b, 0x0a]);
    }

    proptest! {
        #[test]
        fn random_patches_never_panic_and_overlays_reproduce_the_patched_file(
            len in 0usize..4096,
            specs in proptest::collection::vec(
                (0u64..12, 0u64..600, 1u32..=8, "[0-9]{1,6}|CRC32\\([0-9],[0-9]{1,4}\\)|NUM_DISK_SECTORS-[0-9]{1,3}\\.|0x[0-9a-f]{1,17}"),
                0..6),
            sectors in proptest::option::of(0u64..1_000_000),
        ) {
            let patches: Vec<HostPatch> = specs.iter().enumerate().map(|(i, (s, o, size, v))| HostPatch {
                index: i,
                xml: "p.xml".into(),
                file: "f".into(),
                lun: 0,
                sector_size: 512,
                start_sector: SectorExpr::Literal(*s),
                byte_offset: *o,
                size_in_bytes: *size,
                value: v.clone(),
                what: None,
            }).collect();
            let original: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut bytes = original.clone();
            let env = move |_| sectors.map(|n| ExprEnv { num_disk_sectors: n, num_disk_blocks: None });
            if let Ok(overlays) = compute_overlays(&mut bytes, &patches, &env) {
                let mut streamed = original.clone();
                apply_overlays(&mut streamed, 0, &overlays);
                prop_assert_eq!(streamed, bytes);
            }
        }
    }
}
