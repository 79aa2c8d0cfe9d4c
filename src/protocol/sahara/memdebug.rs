//! Sahara memory debug (crash dump, 05c6:900e; PROTOCOLS.md §1.5): the region table parser and
//! the file-name sanitiser. Pure code.
//!
//! Everything here comes from the device and is untrusted: the table may be truncated, huge or
//! nonsense, and the file names inside it may try to climb out of the output folder. The parser
//! bounds the number of entries and checks address arithmetic; [`sanitize_file_name`] turns any
//! byte string into a plain file name that cannot name another folder.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

/// Size of one 32-bit table entry: save_pref u32, base u32, length u32, desc[20], filename[20].
pub const ENTRY_LEN_32: usize = 52;
/// Size of one 64-bit table entry: type u64, addr u64, length u64, region[20], filename[20].
pub const ENTRY_LEN_64: usize = 64;
/// Default cap on the number of table entries.
pub const DEFAULT_MAX_ENTRIES: usize = 4096;
/// Regions are read in steps of this size (qdl `DEBUG_BLOCK_SIZE`, edl 0x80000).
pub const READ_CHUNK: u64 = 512 * 1024;
/// Longest file name the sanitiser produces (bytes, all ASCII).
pub const MAX_NAME_LEN: usize = 64;
/// Suffix of the temporary files the dump writer uses; no sanitised name ends with it.
pub const TEMP_SUFFIX: &str = ".qrescue-partial";
/// The manifest's file name; no region is ever given this name.
pub const MANIFEST_NAME: &str = "manifest.json";

/// Which entry layout the table uses: MEMORY_DEBUG gives 32-bit entries, MEMORY_DEBUG64 64-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableFormat {
    Bits32,
    Bits64,
}

impl TableFormat {
    pub fn entry_len(self) -> usize {
        match self {
            TableFormat::Bits32 => ENTRY_LEN_32,
            TableFormat::Bits64 => ENTRY_LEN_64,
        }
    }
}

/// One memory region the device offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    /// Position in the table (0-based).
    pub index: usize,
    /// save_pref (32-bit tables) or type (64-bit tables).
    pub kind: u64,
    pub base: u64,
    pub length: u64,
    /// The description field, printable ASCII only, for display.
    pub desc: String,
    /// The file name the device suggested, printable ASCII only, for display. Never used as a
    /// path.
    pub device_file_name: String,
    /// The sanitised, unique file name qrescue writes this region to.
    pub file_name: String,
}

/// Why a region table was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// The table is shorter than one entry.
    Empty { len: usize },
    /// More entries than the cap.
    TooManyEntries { entries: usize, max: usize },
    /// A region whose end does not fit the address space of its table format.
    RegionOutOfRange {
        index: usize,
        base: u64,
        length: u64,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Empty { len } => write!(
                f,
                "the region table is {len} bytes long, too short to hold a single region"
            ),
            TableError::TooManyEntries { entries, max } => write!(
                f,
                "the region table lists {entries} regions, more than the limit of {max}"
            ),
            TableError::RegionOutOfRange {
                index,
                base,
                length,
            } => write!(
                f,
                "region {index} (base {base:#x}, length {length:#x}) runs past the end of the address space"
            ),
        }
    }
}

impl std::error::Error for TableError {}

/// A parsed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub format: TableFormat,
    pub regions: Vec<Region>,
    /// Bytes at the end that did not make a whole entry (ignored).
    pub trailing_bytes: usize,
}

impl Table {
    /// Sum of all region lengths (saturating).
    pub fn total_len(&self) -> u64 {
        self.regions
            .iter()
            .fold(0u64, |a, r| a.saturating_add(r.length))
    }
}

/// How many entries a table of `table_len` bytes holds.
pub fn entry_count(table_len: u64, format: TableFormat) -> u64 {
    table_len / format.entry_len() as u64
}

fn le32(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Printable ASCII from a fixed-size device string: cut at the first NUL, everything outside
/// 0x20..=0x7E dropped, surrounding spaces trimmed.
pub fn display_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    raw[..end]
        .iter()
        .filter(|b| (0x20..=0x7E).contains(*b))
        .map(|&b| b as char)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Parse a region table and give every region a sanitised, unique file name.
pub fn parse_table(
    bytes: &[u8],
    format: TableFormat,
    max_entries: usize,
) -> Result<Table, TableError> {
    let el = format.entry_len();
    let entries = bytes.len() / el;
    if entries == 0 {
        return Err(TableError::Empty { len: bytes.len() });
    }
    if entries > max_entries {
        return Err(TableError::TooManyEntries {
            entries,
            max: max_entries,
        });
    }
    let mut names = UniqueNames::default();
    let mut regions = Vec::with_capacity(entries);
    for (index, e) in bytes.chunks_exact(el).enumerate() {
        let (kind, base, length, desc_raw, name_raw) = match format {
            TableFormat::Bits32 => (le32(e, 0), le32(e, 4), le32(e, 8), &e[12..32], &e[32..52]),
            TableFormat::Bits64 => (le64(e, 0), le64(e, 8), le64(e, 16), &e[24..44], &e[44..64]),
        };
        let limit = match format {
            TableFormat::Bits32 => 1u128 << 32,
            TableFormat::Bits64 => 1u128 << 64,
        };
        if u128::from(base) + u128::from(length) > limit {
            return Err(TableError::RegionOutOfRange {
                index,
                base,
                length,
            });
        }
        let fallback = format!("region{index:02}_{base:x}.bin");
        let file_name = names.claim(&sanitize_file_name(name_raw, desc_raw, &fallback));
        regions.push(Region {
            index,
            kind,
            base,
            length,
            desc: display_string(desc_raw),
            device_file_name: display_string(name_raw),
            file_name,
        });
    }
    Ok(Table {
        format,
        regions,
        trailing_bytes: bytes.len() % el,
    })
}

/// Reduce untrusted bytes to a safe file-name stem, or `None` if nothing usable is left.
fn clean(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let mut out = String::new();
    for &b in &raw[..end] {
        let c = b as char;
        let mapped = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else if c == '.' {
            // Runs of dots collapse to one, so ".." can never appear.
            if out.ends_with('.') {
                continue;
            }
            '.'
        } else {
            // '/', '\\', spaces, control characters, non-ASCII: all become '_' (once in a row).
            if out.ends_with('_') {
                continue;
            }
            '_'
        };
        out.push(mapped);
    }
    let trimmed = out
        .trim_start_matches(['.', '_', '-'])
        .trim_end_matches(['.', '_']);
    let mut s = trimmed.to_string();
    if s.len() > MAX_NAME_LEN {
        s.truncate(MAX_NAME_LEN);
        s = s.trim_end_matches(['.', '_']).to_string();
    }
    if s.is_empty() || !s.bytes().any(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    if lower.ends_with(TEMP_SUFFIX) {
        s.truncate(s.len() - TEMP_SUFFIX.len());
        s.push_str("_qrescue-partial");
    }
    if lower == MANIFEST_NAME {
        s = format!("region_{s}");
    }
    Some(s)
}

/// A plain file name for a region: the device's file name, else its description (with `.bin`),
/// else `fallback`. The result is non-empty ASCII of `[A-Za-z0-9._-]`, at most
/// [`MAX_NAME_LEN`] bytes, never starts with a dot, never contains `..`, `/` or `\`, and is never
/// the manifest name or a temp-file name, so `dir.join(name)` always stays inside `dir`.
pub fn sanitize_file_name(name: &[u8], desc: &[u8], fallback: &str) -> String {
    if let Some(s) = clean(name) {
        return s;
    }
    if let Some(s) = clean(desc) {
        let mut s = s;
        s.truncate(MAX_NAME_LEN - 4);
        return format!("{}.bin", s.trim_end_matches(['.', '_']));
    }
    clean(fallback.as_bytes()).unwrap_or_else(|| "region.bin".to_string())
}

/// Hands out file names that are unique ignoring ASCII case (a dump may be copied to a
/// case-insensitive file system).
#[derive(Debug, Default)]
pub struct UniqueNames {
    taken: HashSet<String>,
}

impl UniqueNames {
    /// Reserve `name` (already sanitised), or `name` with `_2`, `_3`, … before its extension.
    pub fn claim(&mut self, name: &str) -> String {
        let (stem, ext) = match name.rfind('.') {
            Some(p) if p > 0 => (&name[..p], &name[p..]),
            _ => (name, ""),
        };
        let mut candidate = name.to_string();
        let mut n = 2u64;
        while self.taken.contains(&candidate.to_ascii_lowercase()) {
            let suffix = format!("_{n}{ext}");
            let keep = MAX_NAME_LEN.saturating_sub(suffix.len()).min(stem.len());
            candidate = format!("{}{}", &stem[..keep], suffix);
            n += 1;
        }
        self.taken.insert(candidate.to_ascii_lowercase());
        candidate
    }
}

/// True when `name` is a single plain path component (what the sanitiser promises).
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN + 8
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixed20(s: &[u8]) -> [u8; 20] {
        let mut a = [0u8; 20];
        let n = s.len().min(20);
        a[..n].copy_from_slice(&s[..n]);
        a
    }

    fn entry32(pref: u32, base: u32, len: u32, desc: &[u8], name: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(pref.to_le_bytes());
        v.extend(base.to_le_bytes());
        v.extend(len.to_le_bytes());
        v.extend(fixed20(desc));
        v.extend(fixed20(name));
        v
    }

    fn entry64(kind: u64, base: u64, len: u64, desc: &[u8], name: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(kind.to_le_bytes());
        v.extend(base.to_le_bytes());
        v.extend(len.to_le_bytes());
        v.extend(fixed20(desc));
        v.extend(fixed20(name));
        v
    }

    #[test]
    fn parses_a_32_bit_table() {
        let mut t = entry32(1, 0x8000_0000, 0x10_0000, b"DDR CS0", b"DDRCS0.BIN");
        t.extend(entry32(0, 0x0800_0000, 0x4000, b"OCIMEM", b"OCIMEM.BIN"));
        t.extend([0xAA; 7]);
        let table = parse_table(&t, TableFormat::Bits32, 16).unwrap();
        assert_eq!(table.regions.len(), 2);
        assert_eq!(table.trailing_bytes, 7);
        let r = &table.regions[0];
        assert_eq!((r.kind, r.base, r.length), (1, 0x8000_0000, 0x10_0000));
        assert_eq!(r.desc, "DDR CS0");
        assert_eq!(r.file_name, "DDRCS0.BIN");
        assert_eq!(table.regions[1].file_name, "OCIMEM.BIN");
        assert_eq!(table.total_len(), 0x10_4000);
    }

    #[test]
    fn parses_a_64_bit_table() {
        let mut t = entry64(2, 0x1_4000_0000, 0x20_0000, b"DDR", b"DDRCS1.BIN");
        t.extend(entry64(0, 0x146A_A000, 0x1000, b"IMEM", b""));
        let table = parse_table(&t, TableFormat::Bits64, 16).unwrap();
        assert_eq!(table.regions[0].base, 0x1_4000_0000);
        assert_eq!(table.regions[0].file_name, "DDRCS1.BIN");
        // No file name: the description is used.
        assert_eq!(table.regions[1].file_name, "IMEM.bin");
    }

    #[test]
    fn rejects_empty_huge_and_overflowing_tables() {
        assert!(matches!(
            parse_table(&[0u8; 51], TableFormat::Bits32, 16),
            Err(TableError::Empty { len: 51 })
        ));
        let big = vec![0u8; ENTRY_LEN_64 * 5];
        assert!(matches!(
            parse_table(&big, TableFormat::Bits64, 4),
            Err(TableError::TooManyEntries { entries: 5, max: 4 })
        ));
        let t = entry32(0, 0xFFFF_F000, 0x2000, b"x", b"x.bin");
        assert!(matches!(
            parse_table(&t, TableFormat::Bits32, 4),
            Err(TableError::RegionOutOfRange { index: 0, .. })
        ));
        let t = entry64(0, u64::MAX - 10, 0x100, b"x", b"x.bin");
        assert!(matches!(
            parse_table(&t, TableFormat::Bits64, 4),
            Err(TableError::RegionOutOfRange { .. })
        ));
    }

    #[test]
    fn hostile_names_are_made_plain() {
        let cases: &[&[u8]] = &[
            b"../../etc/passwd",
            b"/abs/path",
            b"..\\..\\win.ini",
            b"..",
            b".",
            b".hidden",
            b"a\x01b\x7fc",
            b"\xff\xfe\xfd",
            b"",
            b"manifest.json",
            b"x.qrescue-partial",
        ];
        for raw in cases {
            let n = sanitize_file_name(raw, b"", "fallback.bin");
            assert!(is_plain_file_name(&n), "{raw:?} -> {n:?}");
            assert_ne!(n, MANIFEST_NAME);
            assert!(!n.ends_with(TEMP_SUFFIX));
        }
        assert_eq!(
            sanitize_file_name(b"../../etc/passwd", b"", "f"),
            "etc_passwd"
        );
        assert_eq!(sanitize_file_name(b"..", b"", "fb.bin"), "fb.bin");
        assert_eq!(
            sanitize_file_name(b"..", b"DDR CS0", "fb.bin"),
            "DDR_CS0.bin"
        );
        assert_eq!(sanitize_file_name(b"a\0/../../x", b"", "f"), "a");
        let long = [b'A'; 300];
        assert_eq!(sanitize_file_name(&long, b"", "f").len(), MAX_NAME_LEN);
    }

    #[test]
    fn names_are_unique_ignoring_case() {
        let mut t = entry32(0, 0, 16, b"", b"DUMP.BIN");
        t.extend(entry32(0, 16, 16, b"", b"dump.bin"));
        t.extend(entry32(0, 32, 16, b"", b"DUMP.BIN"));
        t.extend(entry32(0, 48, 16, b"", b"../"));
        t.extend(entry32(0, 64, 16, b"", b"../"));
        let table = parse_table(&t, TableFormat::Bits32, 16).unwrap();
        let names: Vec<_> = table.regions.iter().map(|r| r.file_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DUMP.BIN",
                "dump_2.bin",
                "DUMP_3.BIN",
                "region03_30.bin",
                "region04_40.bin"
            ]
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700), wide in any::<bool>()) {
            let fmt = if wide { TableFormat::Bits64 } else { TableFormat::Bits32 };
            if let Ok(t) = parse_table(&bytes, fmt, 8) {
                prop_assert!(t.regions.len() <= 8);
                let mut seen = HashSet::new();
                for r in &t.regions {
                    prop_assert!(is_plain_file_name(&r.file_name), "{:?}", r.file_name);
                    prop_assert!(seen.insert(r.file_name.to_ascii_lowercase()));
                }
            }
        }

        #[test]
        fn sanitiser_always_gives_a_plain_name(name in proptest::collection::vec(any::<u8>(), 0..40),
                                                desc in proptest::collection::vec(any::<u8>(), 0..40)) {
            let n = sanitize_file_name(&name, &desc, "region00_0.bin");
            prop_assert!(is_plain_file_name(&n), "{:?}", n);
            let p = std::path::Path::new(&n);
            let comps: Vec<_> = p.components().collect();
            prop_assert_eq!(comps.len(), 1);
            prop_assert!(matches!(comps[0], std::path::Component::Normal(_)));
        }
    }
}
