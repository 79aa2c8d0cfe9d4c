//! Partition tables as a host reads them from a device: the GPT of eMMC/UFS storage and the
//! MIBIB partition table of Quectel NAND. Pure parsers of untrusted device bytes, no I/O; the
//! reads that fetch the bytes are `crate::engine::partitions`.
//!
//! # GPT (eMMC, UFS, NVMe)
//!
//! The UEFI layout: LBA 0 protective MBR (not checked), LBA 1 the primary header, the entry
//! array where the header says (LBA 2 in every Qualcomm ptool layout), the backup array and
//! header at the end of the disk. Header fields used (little endian): +0 signature `EFI PART`,
//! +8 revision, +12 header size, +16 header CRC32 (computed with the field zeroed), +24 MyLBA,
//! +32 AlternateLBA, +40 FirstUsableLBA, +48 LastUsableLBA, +72 entry-array LBA, +80 entry count,
//! +84 entry size, +88 entry-array CRC32 (PROTOCOLS.md §3 lists the same offsets as the patch
//! files use them). Entries: +0 type GUID (all zero = unused slot), +32 first LBA, +40 last LBA
//! (inclusive), +56 name, 36 UTF-16LE code units.
//!
//! Everything is checked before it is believed: signature, revision 1.x, header size within the
//! sector, header CRC, MyLBA, usable range (and, when the disk size is known, that every LBA lies
//! on the disk), entry size (a multiple of 128, at most 4 KiB), entry count (array at most
//! [`MAX_GPT_ARRAY_BYTES`]), that the array overlaps neither the header nor the usable range,
//! the array CRC, and that every used entry lies inside the usable range without overlapping
//! another. Names are decoded so they are safe to print (see [`sanitize_name`]).
//!
//! # MIBIB (NAND)
//!
//! Sector (= NAND page) 0 carries the SBL header with the codeword 0x844BDCD1; the MIBIB block
//! (at sector 640 on the Quectel layouts, PROTOCOLS.md §9.8) holds in its page 0 a header with
//! magics 0xFE569FAC 0xCD7F127A and in its page 1 the partition table: magics 0x55EE73AA
//! 0xE35EBDDB, version, entry count (four LE u32), then 28-byte entries: 16-byte NUL-padded ASCII
//! name (`0:SBL`, the `0:` being the flash number), first block (u32), block count (u32), three
//! attribute bytes and the flash number. Offsets are in erase blocks; [`parse_mibib_table`]
//! turns them into sectors (pages) with the pages-per-block of the chip, so partitions come out
//! in the same units a `<read>` or `<program>` uses.

use serde::{Deserialize, Serialize};

/// `EFI PART`.
pub const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// The size of the defined part of a GPT header (revision 1.0).
pub const GPT_MIN_HEADER_SIZE: u32 = 92;
/// Smallest (and usual) entry size; the UEFI spec allows 128 × 2^n.
pub const GPT_MIN_ENTRY_SIZE: u32 = 128;
/// Largest entry size accepted.
pub const GPT_MAX_ENTRY_SIZE: u32 = 4096;
/// Largest entry array accepted (ptool reserves 16 KiB; nothing real comes close to this).
pub const MAX_GPT_ARRAY_BYTES: u64 = 1 << 20;
/// Sector sizes accepted for a GPT: powers of two in this range.
pub const GPT_SECTOR_SIZES: std::ops::RangeInclusive<u32> = 512..=65536;

/// The SBL codeword at the start of NAND sector 0 (edl looks for it, PROTOCOLS.md §9.8).
pub const SBL_CODEWORD: u32 = 0x844B_DCD1;
/// MIBIB header page magics.
pub const MIBIB_MAGIC1: u32 = 0xFE56_9FAC;
pub const MIBIB_MAGIC2: u32 = 0xCD7F_127A;
/// Partition-table page magics.
pub const PTABLE_MAGIC1: u32 = 0x55EE_73AA;
pub const PTABLE_MAGIC2: u32 = 0xE35E_BDDB;
/// Partition-table versions accepted.
pub const PTABLE_VERSIONS: std::ops::RangeInclusive<u32> = 1..=4;
/// Where the MIBIB block starts on the Quectel NAND layouts (block 10 with 64 pages per block).
pub const MIBIB_SECTOR: u64 = 640;
/// A block count meaning "to the end of the device" in an unpatched table.
pub const MIBIB_GROW: u32 = 0xFFFF_FFFF;
const PTABLE_HEADER: usize = 16;
const PTABLE_ENTRY: usize = 28;

/// One partition as a table on the device describes it, in sectors of the storage (NAND:
/// pages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// Physical partition (LUN) the table was read from.
    pub lun: u32,
    /// The label, safe to print (NAND: without the `0:` flash prefix).
    pub name: String,
    pub start_sector: u64,
    pub num_sectors: u64,
}

impl Partition {
    /// One past the last sector (saturating).
    pub fn end_sector(&self) -> u64 {
        self.start_sector.saturating_add(self.num_sectors)
    }
}

/// Why device bytes are not a usable partition table. The texts are plain words; the engine
/// wraps them into an error that also says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("a sector size of {0} bytes is not possible for a partition table")]
    SectorSize(u32),
    #[error("only {have} bytes of {what} were given, {need} are needed")]
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    #[error("there is no GPT header ('EFI PART' signature) at LBA {lba}")]
    NoGptSignature { lba: u64 },
    #[error("the GPT header has an unknown revision {0:#010x}")]
    GptRevision(u32),
    #[error("the GPT header claims a size of {size} bytes (must be 92..={sector_size})")]
    GptHeaderSize { size: u32, sector_size: u32 },
    #[error("the GPT header checksum is wrong (stored {stored:#010x}, computed {computed:#010x})")]
    GptHeaderCrc { stored: u32, computed: u32 },
    #[error("the GPT header read at LBA {expected} says it belongs at LBA {stored}")]
    GptWrongLba { stored: u64, expected: u64 },
    #[error("the GPT usable range {first}..={last} is impossible for this disk{}", disk_text(*.disk))]
    GptUsableRange {
        first: u64,
        last: u64,
        disk: Option<u64>,
    },
    #[error("the GPT's other header is said to be at LBA {lba}, which is not on this disk{}", disk_text(*.disk))]
    GptAlternateLba { lba: u64, disk: Option<u64> },
    #[error("the GPT entry size {0} is not a multiple of 128 between 128 and 4096 bytes")]
    GptEntrySize(u32),
    #[error("the GPT claims {count} entries of {entry_size} bytes (at most 1 MiB of entries is accepted)")]
    GptEntryCount { count: u32, entry_size: u32 },
    #[error("the GPT entry array at LBA {lba} ({sectors} sectors) overlaps the header or the partitions, or lies off the disk")]
    GptArrayPlacement { lba: u64, sectors: u64 },
    #[error(
        "the GPT entry array checksum is wrong (stored {stored:#010x}, computed {computed:#010x})"
    )]
    GptArrayCrc { stored: u32, computed: u32 },
    #[error("partition entry {index} ('{name}') spans sectors {first}..={last}, outside the usable range {usable_first}..={usable_last}")]
    GptEntryRange {
        index: usize,
        name: String,
        first: u64,
        last: u64,
        usable_first: u64,
        usable_last: u64,
    },
    #[error("partitions '{first}' and '{second}' overlap")]
    Overlap { first: String, second: String },
    #[error("there is no NAND partition table (magic 0x55EE73AA 0xE35EBDDB) in this page")]
    NoMibibTable,
    #[error("the NAND partition table has an unknown version {0}")]
    MibibVersion(u32),
    #[error("the NAND partition table claims {count} entries, but the page holds at most {fits}")]
    MibibCount { count: u32, fits: usize },
    #[error("{0} pages per block is not a NAND geometry")]
    PagesPerBlock(u32),
    #[error("NAND partition entry {index} ('{name}') spans blocks {first_block}+{num_blocks}, past the end of the device{}", blocks_text(*.total_blocks))]
    MibibEntryRange {
        index: usize,
        name: String,
        first_block: u32,
        num_blocks: u32,
        total_blocks: Option<u64>,
    },
}

fn disk_text(disk: Option<u64>) -> String {
    disk.map(|n| format!(" ({n} sectors)")).unwrap_or_default()
}

fn blocks_text(total: Option<u64>) -> String {
    total.map(|n| format!(" ({n} blocks)")).unwrap_or_default()
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Make a name from a device safe to print on a terminal: control characters (C0, C1, DEL),
/// bidirectional overrides/isolates, zero-width and byte-order marks are dropped, and
/// surrounding white space is trimmed. Undecodable input has already become U+FFFD.
pub fn sanitize_name(chars: impl IntoIterator<Item = char>) -> String {
    let s: String = chars
        .into_iter()
        .filter(|c| {
            !c.is_control()
                && !matches!(
                    *c,
                    '\u{200B}'..='\u{200F}'
                        | '\u{202A}'..='\u{202E}'
                        | '\u{2060}'..='\u{2069}'
                        | '\u{FEFF}'
                )
        })
        .collect();
    s.trim().to_string()
}

/// Decode a GPT entry name: UTF-16LE up to the first NUL, unpaired surrogates replaced, then
/// [`sanitize_name`]. An odd trailing byte is ignored.
pub fn decode_gpt_name(raw: &[u8]) -> String {
    let units = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0);
    sanitize_name(char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)))
}

/// Decode a NAND table name: ASCII up to the first NUL (non-ASCII bytes become U+FFFD), then
/// [`sanitize_name`], then the `N:` flash prefix is removed (`0:SBL` → `SBL`).
pub fn decode_mibib_name(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let name = sanitize_name(raw[..end].iter().map(|b| {
        if b.is_ascii() {
            char::from(*b)
        } else {
            char::REPLACEMENT_CHARACTER
        }
    }));
    match name.split_once(':') {
        Some((flash, label)) if !flash.is_empty() && flash.bytes().all(|b| b.is_ascii_digit()) => {
            label.trim().to_string()
        }
        _ => name,
    }
}

fn check_sector_size(sector_size: u32) -> Result<(), PartitionError> {
    if GPT_SECTOR_SIZES.contains(&sector_size) && sector_size.is_power_of_two() {
        Ok(())
    } else {
        Err(PartitionError::SectorSize(sector_size))
    }
}

/// A GPT header that passed every check of [`parse_gpt_header`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GptHeader {
    pub sector_size: u32,
    pub revision: u32,
    pub header_size: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl GptHeader {
    /// Bytes of the entry array (bounded by [`MAX_GPT_ARRAY_BYTES`] once parsed).
    pub fn array_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }

    /// Sectors the entry array occupies.
    pub fn array_sectors(&self) -> u64 {
        self.array_bytes()
            .div_ceil(u64::from(self.sector_size.max(1)))
    }

    /// Check the entry array (`array` holds at least [`GptHeader::array_bytes`] bytes, read from
    /// [`GptHeader::entries_lba`]) and return the used entries of physical partition `lun`, in
    /// table order.
    pub fn parse_entries(&self, array: &[u8], lun: u32) -> Result<Vec<Partition>, PartitionError> {
        // The fields are public: re-check what the header parser guarantees before slicing.
        if self.entry_size % GPT_MIN_ENTRY_SIZE != 0
            || !(GPT_MIN_ENTRY_SIZE..=GPT_MAX_ENTRY_SIZE).contains(&self.entry_size)
        {
            return Err(PartitionError::GptEntrySize(self.entry_size));
        }
        let len = self.array_bytes();
        if len > MAX_GPT_ARRAY_BYTES {
            return Err(PartitionError::GptEntryCount {
                count: self.num_entries,
                entry_size: self.entry_size,
            });
        }
        let have = array.len() as u64;
        if have < len {
            return Err(PartitionError::Truncated {
                what: "the GPT entry array",
                need: len,
                have,
            });
        }
        // len <= MAX_GPT_ARRAY_BYTES, checked by the header parser.
        let array = &array[..len as usize];
        let computed = crc32fast::hash(array);
        if computed != self.entries_crc {
            return Err(PartitionError::GptArrayCrc {
                stored: self.entries_crc,
                computed,
            });
        }
        let mut out = Vec::new();
        for (index, e) in array.chunks_exact(self.entry_size as usize).enumerate() {
            if e[..16].iter().all(|b| *b == 0) {
                continue;
            }
            let name = decode_gpt_name(&e[56..128]);
            let first = u64_at(e, 32).unwrap_or(0);
            let last = u64_at(e, 40).unwrap_or(0);
            if first > last || first < self.first_usable || last > self.last_usable {
                return Err(PartitionError::GptEntryRange {
                    index,
                    name,
                    first,
                    last,
                    usable_first: self.first_usable,
                    usable_last: self.last_usable,
                });
            }
            out.push(Partition {
                lun,
                name,
                start_sector: first,
                // last <= last_usable < u64::MAX, so this cannot overflow.
                num_sectors: last - first + 1,
            });
        }
        check_overlaps(&out)?;
        Ok(out)
    }
}

fn check_overlaps(parts: &[Partition]) -> Result<(), PartitionError> {
    let mut sorted: Vec<&Partition> = parts.iter().filter(|p| p.num_sectors > 0).collect();
    sorted.sort_by_key(|p| (p.start_sector, p.num_sectors));
    for w in sorted.windows(2) {
        if w[1].start_sector < w[0].end_sector() {
            return Err(PartitionError::Overlap {
                first: w[0].name.clone(),
                second: w[1].name.clone(),
            });
        }
    }
    Ok(())
}

/// Whether the sector ranges `[a, a+n)` and `[b, b+m)` intersect.
fn intersects(a: u64, n: u64, b: u64, m: u64) -> bool {
    n > 0 && m > 0 && a < b.saturating_add(m) && b < a.saturating_add(n)
}

/// Parse and check a GPT header read from LBA `at_lba` (1 for the primary, the last LBA for the
/// backup). `sector` holds at least the header sector. `disk_sectors` (from getstorageinfo),
/// when known, bounds every LBA.
pub fn parse_gpt_header(
    sector: &[u8],
    sector_size: u32,
    at_lba: u64,
    disk_sectors: Option<u64>,
) -> Result<GptHeader, PartitionError> {
    check_sector_size(sector_size)?;
    let ss = sector_size as usize;
    if sector.len() < ss {
        return Err(PartitionError::Truncated {
            what: "the GPT header sector",
            need: ss as u64,
            have: sector.len() as u64,
        });
    }
    let h = &sector[..ss];
    if &h[..8] != GPT_SIGNATURE {
        return Err(PartitionError::NoGptSignature { lba: at_lba });
    }
    let get32 = |at| u32_at(h, at).unwrap_or(0);
    let get64 = |at| u64_at(h, at).unwrap_or(0);
    let revision = get32(8);
    if revision >> 16 != 1 {
        return Err(PartitionError::GptRevision(revision));
    }
    let header_size = get32(12);
    if !(GPT_MIN_HEADER_SIZE..=sector_size).contains(&header_size) {
        return Err(PartitionError::GptHeaderSize {
            size: header_size,
            sector_size,
        });
    }
    let stored = get32(16);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[..16]);
    hasher.update(&[0; 4]);
    hasher.update(&h[20..header_size as usize]);
    let computed = hasher.finalize();
    if stored != computed {
        return Err(PartitionError::GptHeaderCrc { stored, computed });
    }
    let hdr = GptHeader {
        sector_size,
        revision,
        header_size,
        my_lba: get64(24),
        alternate_lba: get64(32),
        first_usable: get64(40),
        last_usable: get64(48),
        entries_lba: get64(72),
        num_entries: get32(80),
        entry_size: get32(84),
        entries_crc: get32(88),
    };
    if hdr.my_lba != at_lba {
        return Err(PartitionError::GptWrongLba {
            stored: hdr.my_lba,
            expected: at_lba,
        });
    }
    let on_disk = |lba: u64| disk_sectors.is_none_or(|n| lba < n);
    if hdr.alternate_lba == 0 || hdr.alternate_lba == hdr.my_lba || !on_disk(hdr.alternate_lba) {
        return Err(PartitionError::GptAlternateLba {
            lba: hdr.alternate_lba,
            disk: disk_sectors,
        });
    }
    let usable_bad = hdr.first_usable < 2
        || hdr.first_usable > hdr.last_usable
        || !on_disk(hdr.last_usable)
        || (hdr.first_usable..=hdr.last_usable).contains(&hdr.my_lba)
        || (hdr.first_usable..=hdr.last_usable).contains(&hdr.alternate_lba);
    if usable_bad {
        return Err(PartitionError::GptUsableRange {
            first: hdr.first_usable,
            last: hdr.last_usable,
            disk: disk_sectors,
        });
    }
    if hdr.entry_size % GPT_MIN_ENTRY_SIZE != 0
        || !(GPT_MIN_ENTRY_SIZE..=GPT_MAX_ENTRY_SIZE).contains(&hdr.entry_size)
    {
        return Err(PartitionError::GptEntrySize(hdr.entry_size));
    }
    if hdr.num_entries == 0 || hdr.array_bytes() > MAX_GPT_ARRAY_BYTES {
        return Err(PartitionError::GptEntryCount {
            count: hdr.num_entries,
            entry_size: hdr.entry_size,
        });
    }
    let (a, n) = (hdr.entries_lba, hdr.array_sectors());
    let placement_bad = a < 2
        || a.checked_add(n).is_none()
        || disk_sectors.is_some_and(|d| a + n > d)
        || intersects(a, n, hdr.my_lba, 1)
        || intersects(
            a,
            n,
            hdr.first_usable,
            hdr.last_usable - hdr.first_usable + 1,
        );
    if placement_bad {
        return Err(PartitionError::GptArrayPlacement { lba: a, sectors: n });
    }
    Ok(hdr)
}

/// Parse the primary GPT of physical partition 0 from `sectors`, the bytes from LBA 0 on
/// (at least the header at LBA 1 and the entry array where it says), disk size unknown.
pub fn parse_gpt(sectors: &[u8], sector_size: u32) -> Result<Vec<Partition>, PartitionError> {
    parse_gpt_on(sectors, sector_size, 0, None)
}

/// As [`parse_gpt`], for physical partition `lun`, with the disk size in sectors when known.
pub fn parse_gpt_on(
    sectors: &[u8],
    sector_size: u32,
    lun: u32,
    disk_sectors: Option<u64>,
) -> Result<Vec<Partition>, PartitionError> {
    check_sector_size(sector_size)?;
    let ss = sector_size as usize;
    let header = sectors.get(ss..).ok_or(PartitionError::Truncated {
        what: "the sectors from LBA 0",
        need: 2 * ss as u64,
        have: sectors.len() as u64,
    })?;
    let hdr = parse_gpt_header(header, sector_size, 1, disk_sectors)?;
    let need = hdr
        .entries_lba
        .checked_mul(u64::from(sector_size))
        .and_then(|o| o.checked_add(hdr.array_bytes()))
        .unwrap_or(u64::MAX);
    if need > sectors.len() as u64 {
        return Err(PartitionError::Truncated {
            what: "the sectors from LBA 0",
            need,
            have: sectors.len() as u64,
        });
    }
    // need <= sectors.len(), so the offset fits in usize.
    let off = (hdr.entries_lba * u64::from(sector_size)) as usize;
    hdr.parse_entries(&sectors[off..], lun)
}

/// Whether a NAND page starts with the SBL codeword (a boot loader is present).
pub fn has_sbl_codeword(page: &[u8]) -> bool {
    u32_at(page, 0) == Some(SBL_CODEWORD)
}

/// Whether a NAND page is a MIBIB header page.
pub fn is_mibib_header(page: &[u8]) -> bool {
    u32_at(page, 0) == Some(MIBIB_MAGIC1) && u32_at(page, 4) == Some(MIBIB_MAGIC2)
}

/// Whether a NAND page carries the partition-table magics (it may still fail to parse).
pub fn is_mibib_table(page: &[u8]) -> bool {
    u32_at(page, 0) == Some(PTABLE_MAGIC1) && u32_at(page, 4) == Some(PTABLE_MAGIC2)
}

/// Parse a NAND partition-table page (page 1 of the MIBIB block). Block offsets become sectors
/// (pages) with `pages_per_block`; with `total_blocks` known every partition must end on the
/// device, and a last entry of [`MIBIB_GROW`] blocks (an unpatched table) takes the rest of it.
/// Partitions are returned in table order on physical partition 0.
pub fn parse_mibib_table(
    page: &[u8],
    pages_per_block: u32,
    total_blocks: Option<u64>,
) -> Result<Vec<Partition>, PartitionError> {
    if pages_per_block == 0 || pages_per_block > 4096 {
        return Err(PartitionError::PagesPerBlock(pages_per_block));
    }
    if !is_mibib_table(page) {
        return Err(PartitionError::NoMibibTable);
    }
    let version = u32_at(page, 8).ok_or(PartitionError::NoMibibTable)?;
    if !PTABLE_VERSIONS.contains(&version) {
        return Err(PartitionError::MibibVersion(version));
    }
    let count = u32_at(page, 12).ok_or(PartitionError::NoMibibTable)?;
    let fits = page.len().saturating_sub(PTABLE_HEADER) / PTABLE_ENTRY;
    if count as usize > fits {
        return Err(PartitionError::MibibCount { count, fits });
    }
    let ppb = u64::from(pages_per_block);
    let mut out = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let at = PTABLE_HEADER + index * PTABLE_ENTRY;
        let e = &page[at..at + PTABLE_ENTRY];
        let name = decode_mibib_name(&e[..16]);
        let first_block = u32_at(e, 16).unwrap_or(0);
        let num_blocks = u32_at(e, 20).unwrap_or(0);
        let first = u64::from(first_block);
        let mut blocks = u64::from(num_blocks);
        if let Some(total) = total_blocks {
            if num_blocks == MIBIB_GROW && index + 1 == count as usize && first < total {
                blocks = total - first;
            }
            if first + blocks > total {
                return Err(PartitionError::MibibEntryRange {
                    index,
                    name,
                    first_block,
                    num_blocks,
                    total_blocks,
                });
            }
        } else if num_blocks == MIBIB_GROW {
            return Err(PartitionError::MibibEntryRange {
                index,
                name,
                first_block,
                num_blocks,
                total_blocks,
            });
        }
        // Both factors are below 2^32, so the products fit in u64.
        out.push(Partition {
            lun: 0,
            name,
            start_sector: first * ppb,
            num_sectors: blocks * ppb,
        });
    }
    check_overlaps(&out)?;
    Ok(out)
}

/// The partitions whose label equals `label`, ignoring ASCII case and surrounding space.
pub fn matching<'a>(parts: &'a [Partition], label: &str) -> Vec<&'a Partition> {
    let want = label.trim();
    parts
        .iter()
        .filter(|p| p.name.eq_ignore_ascii_case(want))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::firehose::storage::{Storage, StorageProfile};
    use proptest::prelude::*;

    /// Build a GPT image from LBA 0 through the end of the entry array (tests only; written
    /// from the field table in the module docs).
    struct GptBuild {
        ss: u32,
        disk: u64,
        entries: u32,
        entry_size: u32,
        parts: Vec<(String, u64, u64)>,
    }

    impl GptBuild {
        fn array_lbas(&self) -> u64 {
            (u64::from(self.entries) * u64::from(self.entry_size)).div_ceil(u64::from(self.ss))
        }
        fn first_usable(&self) -> u64 {
            2 + self.array_lbas()
        }
        fn last_usable(&self) -> u64 {
            self.disk - 2 - self.array_lbas()
        }
        fn image(&self) -> Vec<u8> {
            let ss = self.ss as usize;
            let esz = self.entry_size as usize;
            let mut array = vec![0u8; self.entries as usize * esz];
            for (i, (name, first, count)) in self.parts.iter().enumerate() {
                let e = &mut array[i * esz..(i + 1) * esz];
                e[0] = 0xA2; // any non-zero type GUID
                e[16] = i as u8 + 1;
                e[32..40].copy_from_slice(&first.to_le_bytes());
                e[40..48].copy_from_slice(&(first + count - 1).to_le_bytes());
                for (j, u) in name.encode_utf16().take(36).enumerate() {
                    e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
                }
            }
            let mut img = vec![0u8; 2 * ss + array.len().div_ceil(ss) * ss];
            img[510] = 0x55;
            img[511] = 0xAA;
            let h = &mut img[ss..2 * ss];
            h[..8].copy_from_slice(GPT_SIGNATURE);
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&1u64.to_le_bytes());
            h[32..40].copy_from_slice(&(self.disk - 1).to_le_bytes());
            h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
            h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
            h[72..80].copy_from_slice(&2u64.to_le_bytes());
            h[80..84].copy_from_slice(&self.entries.to_le_bytes());
            h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
            h[88..92].copy_from_slice(&crc32fast::hash(&array).to_le_bytes());
            let crc = crc32fast::hash(&h[..92]);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            img[2 * ss..2 * ss + array.len()].copy_from_slice(&array);
            img
        }
        fn expected(&self, lun: u32) -> Vec<Partition> {
            self.parts
                .iter()
                .map(|(n, s, c)| Partition {
                    lun,
                    name: n.clone(),
                    start_sector: *s,
                    num_sectors: *c,
                })
                .collect()
        }
    }

    fn sample_gpt() -> GptBuild {
        GptBuild {
            ss: 512,
            disk: 100_000,
            entries: 32,
            entry_size: 128,
            parts: vec![
                ("modem".into(), 34, 1000),
                ("sbl1".into(), 1034, 16),
                ("userdata".into(), 2000, 97_000 - 2000 + 1),
            ],
        }
    }

    /// Recompute the header CRC after editing header fields.
    fn reseal(img: &mut [u8], ss: usize) {
        let h = &mut img[ss..2 * ss];
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn built_gpt_parses() {
        let g = sample_gpt();
        let img = g.image();
        assert_eq!(parse_gpt(&img, 512).unwrap(), g.expected(0));
        assert_eq!(
            parse_gpt_on(&img, 512, 3, Some(100_000)).unwrap(),
            g.expected(3)
        );
        let hdr = parse_gpt_header(&img[512..], 512, 1, None).unwrap();
        assert_eq!(hdr.array_sectors(), 8);
        assert_eq!(hdr.first_usable, 10);
        // A hand-made header with impossible fields is refused, not sliced.
        let mut odd = hdr.clone();
        odd.entry_size = 0;
        assert_eq!(
            odd.parse_entries(&img[1024..], 0),
            Err(PartitionError::GptEntrySize(0))
        );
        let mut huge = hdr;
        huge.num_entries = u32::MAX;
        assert!(matches!(
            huge.parse_entries(&img[1024..], 0),
            Err(PartitionError::GptEntryCount { .. })
        ));
    }

    #[test]
    fn gpt_damage_is_named() {
        let g = sample_gpt();
        let img = g.image();
        // Header checksum.
        let mut bad = img.clone();
        bad[512 + 40] ^= 1;
        assert!(matches!(
            parse_gpt(&bad, 512),
            Err(PartitionError::GptHeaderCrc { .. })
        ));
        // Array checksum.
        let mut bad = img.clone();
        bad[1024 + 60] ^= 1;
        assert!(matches!(
            parse_gpt(&bad, 512),
            Err(PartitionError::GptArrayCrc { .. })
        ));
        // Blank storage.
        assert_eq!(
            parse_gpt(&vec![0u8; 512 * 34], 512),
            Err(PartitionError::NoGptSignature { lba: 1 })
        );
        // Truncated input.
        assert!(matches!(
            parse_gpt(&img[..600], 512),
            Err(PartitionError::Truncated { .. })
        ));
        assert!(matches!(
            parse_gpt(&img[..1500], 512),
            Err(PartitionError::Truncated { .. })
        ));
        // Wrong sector size: the header is not at the 4096-byte LBA 1.
        assert!(parse_gpt(&img, 4096).is_err());
        assert_eq!(parse_gpt(&img, 1000), Err(PartitionError::SectorSize(1000)));
        // The disk is smaller than the header says.
        assert!(matches!(
            parse_gpt_on(&img, 512, 0, Some(50_000)),
            Err(PartitionError::GptAlternateLba { .. })
        ));
        // Header fields that would make the host read gigabytes or outside the disk.
        for (at, value, what) in [
            (80usize, 0u64, "count 0"),
            (80, 100_000, "count too large"),
            (84, 100, "entry size not a multiple of 128"),
            (12, 4, "header size"),
            (24, 7, "MyLBA"),
            (72, 40, "array inside the usable range"),
            (72, 0, "array over the MBR"),
            (48, 10, "last usable before first"),
        ] {
            let mut bad = img.clone();
            let w = if matches!(at, 80 | 84 | 12) { 4 } else { 8 };
            bad[512 + at..512 + at + w].copy_from_slice(&value.to_le_bytes()[..w]);
            reseal(&mut bad, 512);
            assert!(parse_gpt(&bad, 512).is_err(), "{what}");
        }
    }

    #[test]
    fn gpt_entries_outside_or_overlapping_are_refused() {
        let mut g = sample_gpt();
        g.parts.push(("evil".into(), 99_990, 100));
        assert!(matches!(
            parse_gpt(&g.image(), 512),
            Err(PartitionError::GptEntryRange { index: 3, .. })
        ));
        let mut g = sample_gpt();
        g.parts.push(("twin".into(), 1040, 4));
        assert_eq!(
            parse_gpt(&g.image(), 512),
            Err(PartitionError::Overlap {
                first: "sbl1".into(),
                second: "twin".into()
            })
        );
    }

    #[test]
    fn names_are_safe_to_print() {
        let mut g = sample_gpt();
        g.parts[0].0 = "mo\u{1b}[2Jdem\u{202E}x\u{7}".into();
        let parts = parse_gpt(&g.image(), 512).unwrap();
        assert_eq!(parts[0].name, "mo[2Jdemx");
        // An unpaired surrogate becomes U+FFFD; decoding stops at NUL.
        let raw = [0x41, 0, 0x00, 0xD8, 0x42, 0, 0, 0, 0x43, 0];
        assert_eq!(decode_gpt_name(&raw), "A\u{FFFD}B");
        assert_eq!(decode_mibib_name(b"0:SBL\0\0\0\0\0\0\0\0\0\0\0"), "SBL");
        assert_eq!(decode_mibib_name(b"12:modem\0"), "modem");
        assert_eq!(decode_mibib_name(b"a:b"), "a:b");
        assert_eq!(decode_mibib_name(b"0:E\x1bFS\xff2"), "EFS\u{FFFD}2");
        assert_eq!(decode_mibib_name(b"NOTERMINATORXXXX"), "NOTERMINATORXXXX");
    }

    fn table_page(page_size: usize, version: u32, entries: &[(&str, u32, u32)]) -> Vec<u8> {
        let mut pg = vec![0xFF; page_size];
        pg[0..4].copy_from_slice(&PTABLE_MAGIC1.to_le_bytes());
        pg[4..8].copy_from_slice(&PTABLE_MAGIC2.to_le_bytes());
        pg[8..12].copy_from_slice(&version.to_le_bytes());
        pg[12..16].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for (i, (name, first, n)) in entries.iter().enumerate() {
            let at = 16 + 28 * i;
            pg[at..at + 16].fill(0);
            pg[at..at + name.len()].copy_from_slice(name.as_bytes());
            pg[at + 16..at + 20].copy_from_slice(&first.to_le_bytes());
            pg[at + 20..at + 24].copy_from_slice(&n.to_le_bytes());
            pg[at + 24..at + 28].copy_from_slice(&[0xFF, 1, 0, 0]);
        }
        pg
    }

    #[test]
    fn mibib_table_parses_and_checks() {
        // The first rows of the real EC25-E table (edl printout): sbl 0x0+0x280000 bytes,
        // mibib 0x280000+0x280000, efs2 0x500000+0x1600000; 256 KiB blocks, 64 pages each.
        let pg = table_page(
            4096,
            4,
            &[("0:SBL", 0, 10), ("0:MIBIB", 10, 10), ("0:EFS2", 20, 88)],
        );
        let parts = parse_mibib_table(&pg, 64, Some(2048)).unwrap();
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["SBL", "MIBIB", "EFS2"]);
        assert_eq!(parts[1].start_sector, MIBIB_SECTOR);
        assert_eq!(parts[2].start_sector * 4096, 0x500000);
        assert_eq!(parts[2].num_sectors * 4096, 0x1600000);

        assert_eq!(
            parse_mibib_table(&[0xFF; 4096], 64, None),
            Err(PartitionError::NoMibibTable)
        );
        assert_eq!(
            parse_mibib_table(&pg, 0, None),
            Err(PartitionError::PagesPerBlock(0))
        );
        assert_eq!(
            parse_mibib_table(&table_page(4096, 9, &[]), 64, None),
            Err(PartitionError::MibibVersion(9))
        );
        let mut bad = pg.clone();
        bad[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            parse_mibib_table(&bad, 64, None),
            Err(PartitionError::MibibCount {
                count: 1000,
                fits: 145
            })
        );
        assert!(matches!(
            parse_mibib_table(&pg, 64, Some(100)),
            Err(PartitionError::MibibEntryRange { index: 2, .. })
        ));
        let overlap = table_page(2048, 4, &[("0:A", 0, 10), ("0:B", 5, 10)]);
        assert!(matches!(
            parse_mibib_table(&overlap, 64, None),
            Err(PartitionError::Overlap { .. })
        ));
        // An unpatched "grow" length takes the rest of the device when its size is known.
        let grow = table_page(2048, 3, &[("0:A", 0, 10), ("0:system", 10, MIBIB_GROW)]);
        let p = parse_mibib_table(&grow, 64, Some(1024)).unwrap();
        assert_eq!(p[1].num_sectors, (1024 - 10) * 64);
        assert!(parse_mibib_table(&grow, 64, None).is_err());
        // Page-header helpers.
        let mut hdr = vec![0xFF; 2048];
        hdr[..4].copy_from_slice(&MIBIB_MAGIC1.to_le_bytes());
        hdr[4..8].copy_from_slice(&MIBIB_MAGIC2.to_le_bytes());
        assert!(is_mibib_header(&hdr) && !is_mibib_table(&hdr));
        assert!(is_mibib_table(&grow) && !has_sbl_codeword(&grow));
        assert!(has_sbl_codeword(&SBL_CODEWORD.to_le_bytes()));
        assert!(!has_sbl_codeword(&[0xD1, 0xDC]));
    }

    #[test]
    fn matching_ignores_case() {
        let g = sample_gpt();
        let parts = g.expected(0);
        assert_eq!(matching(&parts, " SBL1 ")[0].name, "sbl1");
        assert!(matching(&parts, "sbl").is_empty());
    }

    fn regions_of(storage: &Storage, lun: u32) -> Vec<(String, u64, u64)> {
        storage
            .regions()
            .into_iter()
            .filter(|r| r.lun == lun)
            .map(|r| (r.name, r.start_sector, r.num_sectors))
            .collect()
    }

    fn triples(parts: &[Partition]) -> Vec<(String, u64, u64)> {
        parts
            .iter()
            .map(|p| (p.name.clone(), p.start_sector, p.num_sectors))
            .collect()
    }

    #[test]
    fn emulated_block_storage_tables_match_its_regions() {
        for name in ["emmc-msm8916", "ufs-qcs6490"] {
            let storage = Storage::new(&StorageProfile::by_name(name).unwrap());
            let ss = storage.sector_size();
            let mut with_table = 0;
            for lun in 0..storage.num_physical() {
                let disk = storage.num_sectors(lun).unwrap();
                let head = storage.read_sectors(lun, 0, 2).unwrap();
                let want = regions_of(&storage, lun);
                match parse_gpt_header(&head[ss as usize..], ss, 1, Some(disk)) {
                    Ok(hdr) => {
                        let n = hdr.entries_lba + hdr.array_sectors();
                        let bytes = storage.read_sectors(lun, 0, n).unwrap();
                        let parts = parse_gpt_on(&bytes, ss, lun, Some(disk)).unwrap();
                        assert!(parts.iter().all(|p| p.lun == lun));
                        assert_eq!(triples(&parts), want, "{name} LUN {lun}");
                        // The backup header at the end describes the same table.
                        let last = storage.read_sectors(lun, disk - 1, 1).unwrap();
                        let b = parse_gpt_header(&last, ss, disk - 1, Some(disk)).unwrap();
                        let arr = storage
                            .read_sectors(lun, b.entries_lba, b.array_sectors())
                            .unwrap();
                        assert_eq!(b.parse_entries(&arr, lun).unwrap(), parts);
                        with_table += 1;
                    }
                    Err(e) => {
                        // Only LUNs without a table (eMMC boot areas), listed as one region.
                        assert_eq!(e, PartitionError::NoGptSignature { lba: 1 });
                        assert_eq!(want, [(format!("lun{lun}"), 0, disk)], "{name} LUN {lun}");
                    }
                }
            }
            assert!(with_table >= 1, "{name}");
        }
    }

    #[test]
    fn emulated_nand_tables_match_its_regions() {
        for name in ["nand-ec25e", "nand-em12g"] {
            let profile = StorageProfile::by_name(name).unwrap();
            let storage = Storage::new(&profile);
            let ppb = storage.pages_per_block().unwrap();
            let total_blocks = storage.num_sectors(0).unwrap() / u64::from(ppb);
            let sbl = storage.read_sectors(0, 0, 1).unwrap();
            assert!(has_sbl_codeword(&sbl), "{name}");
            let mibib = storage.read_sectors(0, MIBIB_SECTOR, 2).unwrap();
            let ps = storage.sector_size() as usize;
            assert!(is_mibib_header(&mibib[..ps]), "{name}");
            let parts = parse_mibib_table(&mibib[ps..], ppb, Some(total_blocks)).unwrap();
            assert_eq!(triples(&parts), regions_of(&storage, 0), "{name}");
            assert!(parts.len() >= 19);
        }
    }

    /// Any byte string, optionally dressed with the magics so parsing goes further.
    fn device_bytes() -> impl Strategy<Value = Vec<u8>> {
        (proptest::collection::vec(any::<u8>(), 0..5000), 0u8..3).prop_map(|(mut v, dress)| {
            if dress == 1 && v.len() >= 528 {
                v[512..520].copy_from_slice(GPT_SIGNATURE);
                v[520..524].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            }
            if dress == 2 && v.len() >= 8 {
                v[0..4].copy_from_slice(&PTABLE_MAGIC1.to_le_bytes());
                v[4..8].copy_from_slice(&PTABLE_MAGIC2.to_le_bytes());
            }
            v
        })
    }

    /// A valid layout: up to 20 partitions in order with gaps, names from a mixed alphabet.
    fn layout() -> impl Strategy<Value = Vec<(String, u64, u64)>> {
        proptest::collection::vec(("[a-zA-Z0-9_é]{1,36}", 0u64..50, 1u64..5000), 0..20).prop_map(
            |v| {
                let mut at = 34;
                v.into_iter()
                    .map(|(n, gap, len)| {
                        let start = at + gap;
                        at = start + len;
                        (n, start, len)
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in device_bytes(),
            ss in prop_oneof![Just(512u32), Just(4096), any::<u32>()],
            ppb in prop_oneof![Just(64u32), any::<u32>()],
            total in proptest::option::of(any::<u64>()),
            lba in any::<u64>(),
        ) {
            let _ = parse_gpt(&bytes, ss);
            let _ = parse_gpt_on(&bytes, ss, 1, total);
            let _ = parse_gpt_header(&bytes, ss, lba, total);
            let _ = parse_mibib_table(&bytes, ppb, total);
            let _ = decode_gpt_name(&bytes);
            let _ = decode_mibib_name(&bytes);
        }

        #[test]
        fn mutated_gpt_never_panics(flips in proptest::collection::vec((0usize..6144, any::<u8>()), 1..8), reseal_header in any::<bool>()) {
            let g = sample_gpt();
            let mut img = g.image();
            for (at, v) in flips {
                if let Some(b) = img.get_mut(at) {
                    *b = v;
                }
            }
            if reseal_header && img[512 + 12..512 + 16] == 92u32.to_le_bytes() {
                reseal(&mut img, 512);
            }
            if let Ok(parts) = parse_gpt_on(&img, 512, 0, Some(g.disk)) {
                for p in parts {
                    prop_assert!(p.num_sectors > 0 && p.end_sector() <= g.disk);
                }
            }
        }

        #[test]
        fn built_gpt_round_trips(parts in layout(), wide in any::<bool>(), ss in prop_oneof![Just(512u32), Just(4096)]) {
            let g = GptBuild {
                ss,
                disk: 1_000_000,
                entries: if wide { 64 } else { 32 },
                entry_size: if wide { 256 } else { 128 },
                parts,
            };
            let mut g = g;
            // Keep the partitions inside the usable range of this geometry.
            let first = g.first_usable();
            for p in &mut g.parts {
                p.1 = p.1 - 34 + first;
            }
            let img = g.image();
            prop_assert_eq!(parse_gpt_on(&img, ss, 2, Some(g.disk)).unwrap(), g.expected(2));
        }

        #[test]
        fn built_mibib_round_trips(
            sizes in proptest::collection::vec(("[A-Za-z0-9_]{1,13}", 1u32..100), 0..30),
            ppb in prop_oneof![Just(64u32), Just(128)],
        ) {
            let mut at = 0u32;
            let entries: Vec<(String, u32, u32)> = sizes
                .into_iter()
                .map(|(n, len)| {
                    let e = (format!("0:{n}"), at, len);
                    at += len;
                    e
                })
                .collect();
            let refs: Vec<(&str, u32, u32)> = entries.iter().map(|(n, a, b)| (n.as_str(), *a, *b)).collect();
            let pg = table_page(2048, 4, &refs);
            let parts = parse_mibib_table(&pg, ppb, Some(u64::from(at))).unwrap();
            prop_assert_eq!(parts.len(), entries.len());
            for (p, (n, first, len)) in parts.iter().zip(&entries) {
                prop_assert_eq!(&p.name, &n[2..]);
                prop_assert_eq!(p.start_sector, u64::from(*first) * u64::from(ppb));
                prop_assert_eq!(p.num_sectors, u64::from(*len) * u64::from(ppb));
            }
        }
    }
}
