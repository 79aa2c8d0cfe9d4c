//! The emulated NAND's MIBIB (the partition table block at sector 640) and its partition
//! layouts.
//!
//! # Binary layout (an emulation: the magic numbers are Qualcomm's, the rest is kept simple)
//!
//! Block 0, page 0 — an SBL1 header stub so host tools that look for the SBL codeword at sector 0
//! (edl: 0x844BDCD1, PROTOCOLS.md §9.8) recognise NAND with a boot loader:
//!
//! | offset | size | value |
//! |---|---|---|
//! | 0 | 4 | codeword 0x844BDCD1 (LE) |
//! | 4 | 4 | magic 0x73D71034 |
//! | 8 | 4 | image id 21 (sbl1) |
//! | 12..80 | | zero; rest of the page 0xFF |
//!
//! MIBIB block (the block holding page 640; block 10 on both 2K/128K and 4K/256K parts):
//!
//! - page 0, MIBIB header: magic1 0xFE569FAC, magic2 0xCD7F127A, version 4, age 1 (four LE u32),
//!   rest 0xFF.
//! - page 1, partition table: magic1 0x55EE73AA, magic2 0xE35EBDDB, version 4, count (four LE
//!   u32), then `count` entries of 28 bytes: name (16 bytes ASCII, NUL-padded, `0:NAME` as in
//!   Qualcomm's partition_nand.xml), offset in blocks (u32), length in blocks (u32), attr1, attr2,
//!   attr3, which_flash (one byte each). The last partition is stored with its real length (the
//!   host-side MIBIB patch `NUM_DISK_BLOCKS-N.` at byte 16+28·(count−1)+20 of page 1 does the same
//!   in the real packages, see the Quectel patch_p*.xml files).
//! - other pages erased.

use serde::{Deserialize, Serialize};

pub const SBL_CODEWORD: u32 = 0x844B_DCD1;
pub const SBL_MAGIC: u32 = 0x73D7_1034;
pub const MIBIB_MAGIC1: u32 = 0xFE56_9FAC;
pub const MIBIB_MAGIC2: u32 = 0xCD7F_127A;
pub const PTABLE_MAGIC1: u32 = 0x55EE_73AA;
pub const PTABLE_MAGIC2: u32 = 0xE35E_BDDB;
pub const PTABLE_VERSION: u32 = 4;
/// Sector (page) where the MIBIB starts on every Quectel layout here.
pub const MIBIB_SECTOR: u64 = 640;
const ENTRY: usize = 28;

/// One partition of a NAND layout, sized in KiB (rounded up to whole blocks of the geometry).
/// `size_kib == 0` means "the rest of the device".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NandPartSpec {
    pub name: String,
    pub size_kib: u32,
    pub attrs: [u8; 3],
}

/// A partition as stored in the table: offsets in blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NandPartition {
    /// Name as stored (`0:SBL`).
    pub name: String,
    pub first_block: u32,
    pub num_blocks: u32,
    pub attrs: [u8; 3],
}

impl NandPartition {
    /// The name without the `0:` flash prefix.
    pub fn label(&self) -> &str {
        self.name
            .split_once(':')
            .map(|(_, n)| n)
            .unwrap_or(&self.name)
    }
}

fn p(name: &str, size_kib: u32, attrs: [u8; 3]) -> NandPartSpec {
    NandPartSpec {
        name: format!("0:{name}"),
        size_kib,
        attrs,
    }
}

const BOOT: [u8; 3] = [0xFF, 0x01, 0x00];
const RW: [u8; 3] = [0xFF, 0x01, 0xFF];

/// EG25-G (MDM9607, 2K pages / 128K blocks): sizes are size+pad from the real
/// update/partition_nand.xml, so the real rawprogram_nand_p2K_b128K_update.xml entries start
/// exactly at these partitions and the real patch (entry 16 = system) addresses the last entry.
pub fn layout_eg25g() -> Vec<NandPartSpec> {
    vec![
        p("SBL", 1280, BOOT),
        p("MIBIB", 1280, RW),
        p("EFS2", 17408, RW),
        p("sys_rev", 5120, BOOT),
        p("RAWDATA", 1280, BOOT),
        p("TZ", 1536, BOOT),
        p("RPM", 1152, BOOT),
        p("cust_info", 2048, BOOT),
        p("aboot", 1536, BOOT),
        p("boot", 7936, BOOT),
        p("recovery", 7936, BOOT),
        p("modem", 54784, BOOT),
        p("misc", 640, BOOT),
        p("recoveryfs", 20736, BOOT),
        p("usr_data", 61440, BOOT),
        p("sec", 512, BOOT),
        p("system", 0, BOOT),
    ]
}

/// A 128 MiB EG25 variant (the "GGC" part of USERS.md §2.1 #16): the EG25-G layout cut down so
/// the last partition fits; a full EG25-G package runs past its end.
pub fn layout_eg25g_128m() -> Vec<NandPartSpec> {
    let mut v = layout_eg25g();
    v.truncate(14); // through recoveryfs
    v.push(p("system", 0, BOOT));
    v
}

/// EC25-E (MDM9207, 4K pages / 256K blocks): the real MIBIB table printed by edl for an
/// EC25EFA-512 (realdata/logs/edl_ec25_mdm9207_sahara_nand_partitions.txt).
pub fn layout_ec25e() -> Vec<NandPartSpec> {
    vec![
        p("SBL", 2560, BOOT),
        p("MIBIB", 2560, RW),
        p("EFS2", 22528, RW),
        p("sys_rev", 5120, BOOT),
        p("RAWDATA", 3072, BOOT),
        p("TZ", 1280, BOOT),
        p("RPM", 1536, BOOT),
        p("aboot", 1280, BOOT),
        p("boot", 9216, BOOT),
        p("recovery", 9216, BOOT),
        p("image_back", 6400, BOOT),
        p("recoveryfs_b", 14336, BOOT),
        p("scrub", 16896, BOOT),
        p("modem", 63488, BOOT),
        p("misc", 1280, BOOT),
        p("recoveryfs", 30720, BOOT),
        p("qdsp6sw_b", 57344, BOOT),
        p("sys_back", 59392, BOOT),
        p("system", 0, BOOT),
    ]
}

/// EM12-G (SDX20, 4K pages / 256K blocks): built so every entry of the real
/// rawprogram_nand_p4K_b256K_update.xml starts on a partition and fits in it, and the real patch
/// (`NUM_DISK_BLOCKS-1904.` at entry 19) addresses the last partition, usrfs at block 1904. The
/// partitions the XML does not touch (EFS2, sys_rev, …) fill the gaps with plausible names.
pub fn layout_em12g() -> Vec<NandPartSpec> {
    let b = |n: u32| n * 256;
    vec![
        p("SBL", b(10), BOOT),
        p("MIBIB", b(10), RW),
        p("EFS2", b(88), RW),
        p("sys_rev", b(20), BOOT),
        p("RAWDATA", b(4), BOOT),
        p("TZ", b(12), BOOT),
        p("RPM", b(12), BOOT),
        p("aboot", b(12), BOOT),
        p("boot", b(53), BOOT),
        p("cust_info", b(12), BOOT),
        p("scrub", b(96), BOOT),
        p("apdp", b(12), BOOT),
        p("modem", b(288), BOOT),
        p("misc", b(12), BOOT),
        p("recovery", b(53), BOOT),
        p("sec", b(9), BOOT),
        p("recoveryfs", b(120), BOOT),
        p("system", b(321), BOOT),
        p("cache", b(760), BOOT),
        p("usrfs", 0, BOOT),
    ]
}

/// Resolve a KiB layout to blocks for a geometry. Sizes round up to whole blocks; a zero size
/// (or the last entry) takes the rest of the device. Entries that would start past the end are
/// dropped.
pub fn resolve(specs: &[NandPartSpec], block_bytes: u32, num_blocks: u32) -> Vec<NandPartition> {
    let mut out = Vec::new();
    let mut next = 0u32;
    for (i, s) in specs.iter().enumerate() {
        if next >= num_blocks {
            break;
        }
        let last = i + 1 == specs.len();
        let want = (u64::from(s.size_kib) * 1024).div_ceil(u64::from(block_bytes)) as u32;
        let n = if s.size_kib == 0 || last {
            num_blocks - next
        } else {
            want.min(num_blocks - next)
        };
        out.push(NandPartition {
            name: s.name.clone(),
            first_block: next,
            num_blocks: n,
            attrs: s.attrs,
        });
        next += n;
    }
    out
}

fn put32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Page 0 of block 0: the SBL header stub.
pub fn sbl_stub_page(page_size: usize) -> Vec<u8> {
    let mut pg = vec![0xFF; page_size];
    pg[..80].fill(0);
    put32(&mut pg, 0, SBL_CODEWORD);
    put32(&mut pg, 4, SBL_MAGIC);
    put32(&mut pg, 8, 21);
    pg
}

/// Page 0 of the MIBIB block.
pub fn mibib_header_page(page_size: usize) -> Vec<u8> {
    let mut pg = vec![0xFF; page_size];
    put32(&mut pg, 0, MIBIB_MAGIC1);
    put32(&mut pg, 4, MIBIB_MAGIC2);
    put32(&mut pg, 8, PTABLE_VERSION);
    put32(&mut pg, 12, 1);
    pg
}

/// Page 1 of the MIBIB block: the partition table.
pub fn table_page(page_size: usize, parts: &[NandPartition]) -> Vec<u8> {
    let mut pg = vec![0xFF; page_size];
    let max = (page_size - 16) / ENTRY;
    let parts = &parts[..parts.len().min(max)];
    put32(&mut pg, 0, PTABLE_MAGIC1);
    put32(&mut pg, 4, PTABLE_MAGIC2);
    put32(&mut pg, 8, PTABLE_VERSION);
    put32(&mut pg, 12, parts.len() as u32);
    for (i, part) in parts.iter().enumerate() {
        let at = 16 + i * ENTRY;
        let mut name = [0u8; 16];
        let bytes = part.name.as_bytes();
        let n = bytes.len().min(15);
        name[..n].copy_from_slice(&bytes[..n]);
        pg[at..at + 16].copy_from_slice(&name);
        put32(&mut pg, at + 16, part.first_block);
        put32(&mut pg, at + 20, part.num_blocks);
        pg[at + 24..at + 27].copy_from_slice(&part.attrs);
        pg[at + 27] = 0; // which_flash
    }
    pg
}

/// Why a MIBIB page could not be read as a partition table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MibibError {
    #[error("no partition table magic (0x55EE73AA 0xE35EBDDB) in the MIBIB")]
    NoMagic,
    #[error("the MIBIB partition table claims {0} entries, more than a page holds")]
    TooManyEntries(u32),
}

/// Parse a partition-table page (page 1 of the MIBIB block).
pub fn parse_table(page: &[u8]) -> Result<Vec<NandPartition>, MibibError> {
    if get32(page, 0) != Some(PTABLE_MAGIC1) || get32(page, 4) != Some(PTABLE_MAGIC2) {
        return Err(MibibError::NoMagic);
    }
    let count = get32(page, 12).ok_or(MibibError::NoMagic)?;
    if (count as usize).saturating_mul(ENTRY).saturating_add(16) > page.len() {
        return Err(MibibError::TooManyEntries(count));
    }
    let mut out = Vec::new();
    for i in 0..count as usize {
        let at = 16 + i * ENTRY;
        let raw = &page[at..at + 16];
        let end = raw.iter().position(|b| *b == 0).unwrap_or(16);
        let name = String::from_utf8_lossy(&raw[..end]).into_owned();
        out.push(NandPartition {
            name,
            first_block: get32(page, at + 16).unwrap_or(0),
            num_blocks: get32(page, at + 20).unwrap_or(0),
            attrs: [page[at + 24], page[at + 25], page[at + 26]],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_real_tables() {
        // EC25-E: the edl printout, offsets and lengths in bytes.
        let t = resolve(&layout_ec25e(), 256 * 1024, 2048);
        let bytes: Vec<(String, u64, u64)> = t
            .iter()
            .map(|p| {
                (
                    p.label().to_ascii_lowercase(),
                    u64::from(p.first_block) * 0x40000,
                    u64::from(p.num_blocks) * 0x40000,
                )
            })
            .collect();
        assert_eq!(bytes[0], ("sbl".into(), 0, 0x280000));
        assert_eq!(bytes[1], ("mibib".into(), 0x280000, 0x280000));
        assert_eq!(bytes[13], ("modem".into(), 0x5DC0000, 0x3E00000));
        assert_eq!(bytes[18], ("system".into(), 0x12D00000, 0xD300000));
        // EG25-G: the system partition starts at block 1458 (patch NUM_DISK_BLOCKS-1458.).
        let t = resolve(&layout_eg25g(), 128 * 1024, 2048);
        assert_eq!(t.len(), 17);
        assert_eq!(t[16].first_block, 1458);
        assert_eq!(t[1].first_block * 64, 640);
        // EM12-G: usrfs is entry 19 at block 1904 (patch NUM_DISK_BLOCKS-1904.).
        let t = resolve(&layout_em12g(), 256 * 1024, 2048);
        assert_eq!(t.len(), 20);
        assert_eq!(t[19].first_block, 1904);
        assert_eq!(t[19].num_blocks, 144);
    }

    #[test]
    fn table_round_trips_and_garbage_is_rejected() {
        let t = resolve(&layout_em12g(), 256 * 1024, 2048);
        let pg = table_page(4096, &t);
        assert_eq!(parse_table(&pg).unwrap(), t);
        assert_eq!(parse_table(&[0xFF; 4096]), Err(MibibError::NoMagic));
        let mut bad = pg.clone();
        bad[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(parse_table(&bad), Err(MibibError::TooManyEntries(1000)));
        assert_eq!(parse_table(&pg[..10]), Err(MibibError::NoMagic));
    }
}
