//! GPT for the emulated eMMC/UFS: creation (protective MBR, primary header at LBA 1, entry
//! array, backup array and header at the end, all CRCs valid), parsing and validation.
//!
//! The entry array is reserved as 16 KiB (32 sectors of 512 bytes, 4 of 4096) like Qualcomm's
//! ptool, so the first usable LBA is 34 (eMMC) or 6 (UFS) and the backup array starts at
//! `NUM_DISK_SECTORS-33` or `NUM_DISK_SECTORS-5`. The entry *count* follows ptool too: 32 entries
//! on eMMC and 64 on UFS, which is why the real patch files compute the array CRC as
//! `CRC32(2,4096)` and `CRC32(2,8192)`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sparse::SparseStore;

pub const ENTRY_SIZE: u32 = 128;
pub const HEADER_SIZE: u32 = 92;
const ARRAY_RESERVED_BYTES: u64 = 16 * 1024;
/// Microsoft basic data (used as a neutral type for every emulated partition).
const BASIC_DATA: [u8; 16] = guid_bytes(
    0xEBD0A0A2,
    0xB9E5,
    0x4433,
    [0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7],
);

const fn guid_bytes(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// A partition to create: `sectors == 0` grows to the last usable LBA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptPartSpec {
    pub name: String,
    pub start: u64,
    pub sectors: u64,
}

pub fn spec(list: &[(&str, u64, u64)]) -> Vec<GptPartSpec> {
    list.iter()
        .map(|(n, s, c)| GptPartSpec {
            name: (*n).to_string(),
            start: *s,
            sectors: *c,
        })
        .collect()
}

/// A partition as found in a GPT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptEntry {
    pub name: String,
    pub first_lba: u64,
    pub last_lba: u64,
}

/// What a valid GPT says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptInfo {
    pub first_usable: u64,
    pub last_usable: u64,
    pub entries: Vec<GptEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    #[error("{which} GPT header: no 'EFI PART' signature")]
    NoSignature { which: &'static str },
    #[error("{which} GPT header: header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderCrc {
        which: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("{which} GPT header: entry array CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ArrayCrc {
        which: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("{which} GPT header: field {field} is {value}, expected {expected}")]
    Field {
        which: &'static str,
        field: &'static str,
        value: u64,
        expected: u64,
    },
    #[error("GPT header geometry is not sane ({0})")]
    Geometry(&'static str),
}

fn array_sectors(sector_size: u32) -> u64 {
    ARRAY_RESERVED_BYTES.div_ceil(u64::from(sector_size))
}

/// Write a fresh GPT for `parts` onto `store` (`entries` slots of 128 bytes). `seed` makes the
/// disk and partition GUIDs deterministic per unit/LUN.
pub fn create(
    store: &mut SparseStore,
    sector_size: u32,
    entries: u32,
    parts: &[GptPartSpec],
    seed: &str,
) {
    let ss = u64::from(sector_size);
    let n = store.len() / ss;
    let arr = array_sectors(sector_size);
    let first_usable = 2 + arr;
    let last_usable = n - 2 - arr;
    // Protective MBR.
    let mut mbr = vec![0u8; sector_size as usize];
    let pe = 446;
    mbr[pe + 1] = 0x00;
    mbr[pe + 2] = 0x02;
    mbr[pe + 4] = 0xEE;
    mbr[pe + 5..pe + 8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    mbr[pe + 8..pe + 12].copy_from_slice(&1u32.to_le_bytes());
    mbr[pe + 12..pe + 16]
        .copy_from_slice(&(u32::try_from(n - 1).unwrap_or(u32::MAX)).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    store.write(0, &mbr);
    // Entry array.
    let mut array = vec![0u8; (entries * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().take(entries as usize).enumerate() {
        let e = &mut array[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&BASIC_DATA);
        e[16..32].copy_from_slice(&guid(seed, &p.name, i));
        let last = if p.sectors == 0 {
            last_usable
        } else {
            p.start + p.sectors - 1
        };
        e[32..40].copy_from_slice(&p.start.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        for (j, u) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let array_crc = crc32fast::hash(&array);
    let disk_guid = guid(seed, "disk", usize::MAX);
    let header = |current: u64, backup: u64, array_lba: u64| {
        let mut h = vec![0u8; sector_size as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&entries.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    store.write(ss, &header(1, n - 1, 2));
    store.write(2 * ss, &array);
    store.write((n - 1 - arr) * ss, &array);
    store.write((n - 1) * ss, &header(n - 1, 1, n - 1 - arr));
}

fn guid(seed: &str, name: &str, i: usize) -> [u8; 16] {
    let d = Sha256::new()
        .chain_update(seed.as_bytes())
        .chain_update([0])
        .chain_update(name.as_bytes())
        .chain_update(i.to_le_bytes())
        .finalize();
    let mut g = [0u8; 16];
    g.copy_from_slice(&d[..16]);
    g[7] = (g[7] & 0x0F) | 0x40; // version 4 (bytes 6..8 are little-endian)
    g[8] = (g[8] & 0x3F) | 0x80; // variant
    g
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// Read and check one header and its array. Returns the parsed table.
fn check_one(
    store: &SparseStore,
    sector_size: u32,
    lba: u64,
    which: &'static str,
) -> Result<GptInfo, GptError> {
    let ss = u64::from(sector_size);
    let n = store.len() / ss;
    let mut h = vec![0u8; sector_size as usize];
    store.read(lba * ss, &mut h);
    if &h[0..8] != b"EFI PART" {
        return Err(GptError::NoSignature { which });
    }
    let hsize = u32_at(&h, 12);
    if !(HEADER_SIZE..=sector_size).contains(&hsize) {
        return Err(GptError::Geometry("header size"));
    }
    let stored = u32_at(&h, 16);
    let mut hc = h[..hsize as usize].to_vec();
    hc[16..20].fill(0);
    let computed = crc32fast::hash(&hc);
    if stored != computed {
        return Err(GptError::HeaderCrc {
            which,
            stored,
            computed,
        });
    }
    let (expected_current, expected_backup) = if lba == 1 { (1, n - 1) } else { (n - 1, 1) };
    for (field, at, expected) in [
        ("MyLBA", 24, expected_current),
        ("AlternateLBA", 32, expected_backup),
    ] {
        let value = u64_at(&h, at);
        if value != expected {
            return Err(GptError::Field {
                which,
                field,
                value,
                expected,
            });
        }
    }
    let first_usable = u64_at(&h, 40);
    let last_usable = u64_at(&h, 48);
    let array_lba = u64_at(&h, 72);
    let count = u32_at(&h, 80);
    let esize = u32_at(&h, 84);
    if !(128..=4096).contains(&esize) || count == 0 || count > 4096 {
        return Err(GptError::Geometry("entry count or size"));
    }
    let array_bytes = u64::from(count) * u64::from(esize);
    if array_lba
        .checked_mul(ss)
        .and_then(|o| o.checked_add(array_bytes))
        .is_none_or(|e| e > store.len())
        || last_usable >= n
        || first_usable > last_usable
    {
        return Err(GptError::Geometry("array or usable range outside the disk"));
    }
    let mut array = vec![0u8; array_bytes as usize];
    store.read(array_lba * ss, &mut array);
    let stored = u32_at(&h, 88);
    let computed = crc32fast::hash(&array);
    if stored != computed {
        return Err(GptError::ArrayCrc {
            which,
            stored,
            computed,
        });
    }
    let mut entries = Vec::new();
    for e in array.chunks(esize as usize) {
        if e[0..16].iter().all(|b| *b == 0) {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        entries.push(GptEntry {
            name: String::from_utf16_lossy(&units),
            first_lba: u64_at(e, 32),
            last_lba: u64_at(e, 40),
        });
    }
    Ok(GptInfo {
        first_usable,
        last_usable,
        entries,
    })
}

/// Validate both GPT copies (CRCs, locations) and return the primary table.
pub fn validate(store: &SparseStore, sector_size: u32) -> Result<GptInfo, GptError> {
    let n = store.len() / u64::from(sector_size);
    if n < 2 * (2 + array_sectors(sector_size)) {
        return Err(GptError::Geometry("disk too small for a GPT"));
    }
    let primary = check_one(store, sector_size, 1, "primary")?;
    let backup = check_one(store, sector_size, n - 1, "backup")?;
    if backup.entries != primary.entries {
        return Err(GptError::Geometry("backup entries differ from primary"));
    }
    Ok(primary)
}

/// The primary table if it is valid, else the backup; for reports.
pub fn read_any(store: &SparseStore, sector_size: u32) -> Result<GptInfo, GptError> {
    let n = store.len() / u64::from(sector_size);
    check_one(store, sector_size, 1, "primary").or_else(|e| {
        if n >= 2 {
            check_one(store, sector_size, n - 1, "backup").map_err(|_| e)
        } else {
            Err(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_gpt_is_valid_for_both_sector_sizes() {
        for (ss, entries, n) in [(512u32, 32u32, 1u64 << 21), (4096, 64, 1 << 16)] {
            let mut s = SparseStore::new(n * u64::from(ss), 0);
            let parts = spec(&[("a", 2 + array_sectors(ss), 100), ("b", 200, 0)]);
            create(&mut s, ss, entries, &parts, "t");
            let info = validate(&s, ss).unwrap();
            assert_eq!(info.entries.len(), 2);
            assert_eq!(info.entries[1].last_lba, n - 2 - array_sectors(ss));
            assert_eq!(info.first_usable, 2 + array_sectors(ss));
            // Corrupting one byte of the array breaks the array CRC.
            s.write(2 * u64::from(ss) + 60, &[0x41]);
            assert!(matches!(
                validate(&s, ss),
                Err(GptError::ArrayCrc {
                    which: "primary",
                    ..
                })
            ));
            assert!(read_any(&s, ss).is_ok(), "the backup still reads");
        }
    }
}
