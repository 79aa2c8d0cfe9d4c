//! Fake Firehose programmers for the emulated modem: a generator of well-formed, "signed" ELF images
//! and the validator the emulated boot ROM applies to an uploaded image. No vendor binary is used
//! anywhere: contents are seeded pseudo-random bytes.
//!
//! # Layout of a generated programmer
//!
//! Modelled on the layout of real signed Qualcomm programmers (an ELF whose first program header
//! describes the headers themselves and whose second one is a "hash segment"):
//!
//! | phdr | type | `p_flags` segment-type bits (24..26) | contents |
//! |---|---|---|---|
//! | 0 | `PT_NULL` | 7 (headers) | ELF header + program-header table (offset 0) |
//! | 1 | `PT_NULL` | 2 (hash) | emulated hash table and signature, at offset 0x1000 |
//! | 2.. | `PT_LOAD` | 0 | 3–6 code/data segments of seeded random bytes |
//!
//! Load segments follow each other without 4 KiB alignment (some are 16-byte aligned, some are
//! packed), so a boot ROM that reads each segment in 4 KiB steps with a short last chunk produces
//! offsets that are not 4 KiB aligned, as in real uploads (PROTOCOLS.md §1.2).
//!
//! # The emulated signature (hash segment)
//!
//! ```text
//! header   10 × u32 LE: image_id (13), header version (3), 0, dest_ptr, image_size,
//!          code_size (= 32 × phnum), signature_ptr, signature_size (32), cert_chain_ptr, 0
//! table    phnum × 32 bytes: SHA-256 per program header —
//!            headers segment (type 7): sha256(ELF header bytes ‖ program-header table bytes)
//!            loaded segments (PT_LOAD, filesz > 0): sha256(segment file bytes)
//!            anything else (the hash segment itself, empty segments): 32 zero bytes, not checked
//! signature sha256(pk_hash ‖ table)
//! ```
//!
//! So a programmer is bound to one unit's PK hash the way a real signed one is bound to the OEM
//! key: the same image is refused (0x25) by a unit with another PK hash, and a corrupted segment is
//! refused with 0x22. The hash table covers exactly the bytes a boot ROM reads (see
//! [`request_plan`]), so validating the bytes a ROM collected gives the same answer as validating
//! the file.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// ELF class of a programmer (and of the boot ROM that loads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ElfClass {
    /// ELFCLASS32, ARM (older SoCs, e.g. MDM9207).
    Elf32,
    /// ELFCLASS64, AArch64 (SDX55 and newer).
    Elf64,
}

impl ElfClass {
    /// Size of the ELF header: 0x34 for ELF32, 0x40 for ELF64. A boot ROM reads this first.
    pub fn header_len(self) -> usize {
        match self {
            ElfClass::Elf32 => 0x34,
            ElfClass::Elf64 => 0x40,
        }
    }

    /// Size of one program header: 0x20 for ELF32, 0x38 for ELF64.
    pub fn phdr_len(self) -> usize {
        match self {
            ElfClass::Elf32 => 0x20,
            ElfClass::Elf64 => 0x38,
        }
    }

    fn ident_byte(self) -> u8 {
        match self {
            ElfClass::Elf32 => 1,
            ElfClass::Elf64 => 2,
        }
    }
}

/// Sahara END_OF_IMAGE status codes the validator returns (PROTOCOLS.md §1.6).
pub mod status {
    /// Invalid ELF header: bad magic, class, byte order, version or header size.
    pub const INVALID_ELF_HEADER: u32 = 0x14;
    /// Unsupported number of program headers (0 or more than [`super::MAX_PHNUM`]).
    pub const BAD_PHDR_COUNT: u32 = 0x0E;
    /// Invalid program-header size, or the table does not fit in the image.
    pub const BAD_PHDR_SIZE: u32 = 0x0F;
    /// The program-header table offset points into the ELF header (or is 0).
    pub const BAD_PHDR_LOCATION: u32 = 0x11;
    /// A segment lies outside the image or the image is larger than the ROM's buffer.
    pub const BAD_IMAGE_SIZE: u32 = 0x13;
    /// The hash segment is too small or its header is inconsistent.
    pub const BAD_HASH_TABLE_SIZE: u32 = 0x26;
    /// No hash segment.
    pub const HASH_TABLE_NOT_FOUND: u32 = 0x23;
    /// A segment does not match its hash.
    pub const HASH_VERIFY_FAILED: u32 = 0x22;
    /// The hash table is signed for another PK hash.
    pub const IMAGE_AUTH_FAILED: u32 = 0x25;
}

/// The boot ROM reads segments in steps of this many bytes.
pub const CHUNK: u64 = 0x1000;
/// Most program headers the emulated ROM accepts.
pub const MAX_PHNUM: u16 = 64;
/// Largest image (highest byte the ROM would read) the emulated ROM accepts, like a real ROM's
/// limited load buffer. It also bounds what a hostile host can make the emulator allocate.
pub const MAX_IMAGE_LEN: u64 = 32 << 20;

const PT_NULL: u32 = 0;
const PT_LOAD: u32 = 1;
/// Segment-type field of `p_flags` (bits 24..26) in Qualcomm images.
const SEG_TYPE_SHIFT: u32 = 24;
const SEG_TYPE_MASK: u32 = 0x7;
const SEG_TYPE_HASH: u32 = 2;
const SEG_TYPE_HEADERS: u32 = 7;
const HASH_HEADER_LEN: usize = 40;
const DIGEST_LEN: usize = 32;
/// Offset of the hash segment in generated images.
const HASH_SEGMENT_OFFSET: u64 = 0x1000;
/// Offset of the first load segment in generated images.
const FIRST_LOAD_OFFSET: u64 = 0x2000;

/// What a boot ROM learns from the ELF header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfHeader {
    pub class: ElfClass,
    pub entry: u64,
    pub phoff: u64,
    pub phentsize: u16,
    pub phnum: u16,
}

impl ElfHeader {
    /// Where the program-header table is: (offset, length).
    pub fn phdr_table(&self) -> (u64, u64) {
        (
            self.phoff,
            u64::from(self.phnum) * u64::from(self.phentsize),
        )
    }
}

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl Segment {
    fn seg_type(&self) -> u32 {
        (self.flags >> SEG_TYPE_SHIFT) & SEG_TYPE_MASK
    }

    /// The hash segment (emulated signature).
    pub fn is_hash(&self) -> bool {
        self.p_type == PT_NULL && self.seg_type() == SEG_TYPE_HASH
    }

    /// The segment that describes the ELF header and program headers themselves.
    pub fn is_headers(&self) -> bool {
        self.seg_type() == SEG_TYPE_HEADERS
    }

    /// True when a boot ROM reads this segment from the host: loadable or hash, not empty, and
    /// not the headers segment (its bytes were already read as header and program headers).
    pub fn is_loaded(&self) -> bool {
        self.filesz > 0 && !self.is_headers() && (self.p_type == PT_LOAD || self.is_hash())
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Parse the ELF header from the first bytes of an image, as a boot ROM does after its first
/// READ_DATA. `bytes` must hold at least the header for the image's class.
pub fn parse_header(bytes: &[u8]) -> Result<ElfHeader, u32> {
    if bytes.len() < 16 || bytes[..4] != [0x7f, b'E', b'L', b'F'] {
        return Err(status::INVALID_ELF_HEADER);
    }
    let class = match bytes[4] {
        1 => ElfClass::Elf32,
        2 => ElfClass::Elf64,
        _ => return Err(status::INVALID_ELF_HEADER),
    };
    // Little-endian, ELF version 1.
    if bytes[5] != 1 || bytes[6] != 1 || bytes.len() < class.header_len() {
        return Err(status::INVALID_ELF_HEADER);
    }
    let e_version = u32_at(bytes, 20);
    let (entry, phoff, ehsize, phentsize, phnum) = match class {
        ElfClass::Elf32 => (
            u64::from(u32_at(bytes, 24)),
            u64::from(u32_at(bytes, 28)),
            u16_at(bytes, 40),
            u16_at(bytes, 42),
            u16_at(bytes, 44),
        ),
        ElfClass::Elf64 => (
            u64_at(bytes, 24),
            u64_at(bytes, 32),
            u16_at(bytes, 52),
            u16_at(bytes, 54),
            u16_at(bytes, 56),
        ),
    };
    if e_version != 1 || usize::from(ehsize) != class.header_len() {
        return Err(status::INVALID_ELF_HEADER);
    }
    if usize::from(phentsize) != class.phdr_len() {
        return Err(status::BAD_PHDR_SIZE);
    }
    if phnum == 0 || phnum > MAX_PHNUM {
        return Err(status::BAD_PHDR_COUNT);
    }
    if phoff < u64::from(ehsize) {
        return Err(status::BAD_PHDR_LOCATION);
    }
    if phoff > MAX_IMAGE_LEN {
        return Err(status::BAD_IMAGE_SIZE);
    }
    Ok(ElfHeader {
        class,
        entry,
        phoff,
        phentsize,
        phnum,
    })
}

/// Parse the program-header table (`bytes` = exactly the table described by `hdr`).
pub fn parse_phdrs(hdr: &ElfHeader, bytes: &[u8]) -> Result<Vec<Segment>, u32> {
    let (_, len) = hdr.phdr_table();
    if bytes.len() as u64 != len {
        return Err(status::BAD_PHDR_SIZE);
    }
    let n = usize::from(hdr.phentsize);
    Ok(bytes
        .chunks_exact(n)
        .map(|p| match hdr.class {
            ElfClass::Elf32 => Segment {
                p_type: u32_at(p, 0),
                offset: u64::from(u32_at(p, 4)),
                vaddr: u64::from(u32_at(p, 8)),
                filesz: u64::from(u32_at(p, 16)),
                memsz: u64::from(u32_at(p, 20)),
                flags: u32_at(p, 24),
            },
            ElfClass::Elf64 => Segment {
                p_type: u32_at(p, 0),
                flags: u32_at(p, 4),
                offset: u64_at(p, 8),
                vaddr: u64_at(p, 16),
                filesz: u64_at(p, 32),
                memsz: u64_at(p, 40),
            },
        })
        .collect())
}

/// The READ_DATA requests for the segments, in program-header order: each loaded segment in
/// [`CHUNK`] steps with a short last chunk. Refuses (0x13) segments that end beyond
/// [`MAX_IMAGE_LEN`].
pub fn segment_requests(segments: &[Segment]) -> Result<Vec<(u64, u64)>, u32> {
    let mut out = Vec::new();
    for s in segments.iter().filter(|s| s.is_loaded()) {
        let end = s
            .offset
            .checked_add(s.filesz)
            .ok_or(status::BAD_IMAGE_SIZE)?;
        if end > MAX_IMAGE_LEN {
            return Err(status::BAD_IMAGE_SIZE);
        }
        let mut off = s.offset;
        while off < end {
            let len = (end - off).min(CHUNK);
            out.push((off, len));
            off += len;
        }
    }
    Ok(out)
}

/// The order in which a real boot ROM reads `image`: the ELF header (0x34 or 0x40 bytes), then the
/// program-header table, then every loaded segment in 4 KiB steps with a short last chunk per
/// segment. Stops where a ROM would stop: after the header if it is invalid, after the table if
/// the table is invalid.
pub fn request_plan(image: &[u8]) -> Vec<(u64, u64)> {
    let class = match image.get(4) {
        Some(2) => ElfClass::Elf64,
        _ => ElfClass::Elf32,
    };
    let mut plan = vec![(0u64, class.header_len() as u64)];
    let hdr = match parse_header(image) {
        Ok(h) => h,
        Err(_) => return plan,
    };
    let (phoff, phlen) = hdr.phdr_table();
    plan.push((phoff, phlen));
    let table = match slice(image, phoff, phlen) {
        Some(t) => t,
        None => return plan,
    };
    if let Ok(segs) = parse_phdrs(&hdr, table) {
        if let Ok(reqs) = segment_requests(&segs) {
            plan.extend(reqs);
        }
    }
    plan
}

fn slice(image: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    image.get(start..end)
}

fn sha256(parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Check an uploaded image the way the emulated boot ROM does. `Ok(())` means it would boot;
/// otherwise the Sahara END_OF_IMAGE status it would report (see [`status`]).
pub fn validate(image: &[u8], pk_hash: &[u8]) -> Result<(), u32> {
    let hdr = parse_header(image)?;
    let (phoff, phlen) = hdr.phdr_table();
    let table = slice(image, phoff, phlen).ok_or(status::BAD_PHDR_SIZE)?;
    let segs = parse_phdrs(&hdr, table)?;
    segment_requests(&segs)?;
    for s in segs.iter().filter(|s| s.is_loaded()) {
        if slice(image, s.offset, s.filesz).is_none() {
            return Err(status::BAD_IMAGE_SIZE);
        }
    }
    let hash_seg = segs
        .iter()
        .find(|s| s.is_hash() && s.filesz > 0)
        .ok_or(status::HASH_TABLE_NOT_FOUND)?;
    let hs = slice(image, hash_seg.offset, hash_seg.filesz).ok_or(status::BAD_IMAGE_SIZE)?;
    if hs.len() < HASH_HEADER_LEN {
        return Err(status::BAD_HASH_TABLE_SIZE);
    }
    let code_size = u32_at(hs, 20) as usize;
    let sig_size = u32_at(hs, 28) as usize;
    if code_size != DIGEST_LEN * segs.len()
        || sig_size != DIGEST_LEN
        || HASH_HEADER_LEN + code_size + sig_size > hs.len()
    {
        return Err(status::BAD_HASH_TABLE_SIZE);
    }
    let hash_table = &hs[HASH_HEADER_LEN..HASH_HEADER_LEN + code_size];
    let signature = &hs[HASH_HEADER_LEN + code_size..HASH_HEADER_LEN + code_size + sig_size];
    if sha256(&[pk_hash, hash_table])[..] != *signature {
        return Err(status::IMAGE_AUTH_FAILED);
    }
    let header_bytes = &image[..hdr.class.header_len()];
    for (i, s) in segs.iter().enumerate() {
        let want = &hash_table[i * DIGEST_LEN..(i + 1) * DIGEST_LEN];
        let got = if s.is_headers() {
            sha256(&[header_bytes, table])
        } else if s.is_loaded() && !s.is_hash() {
            // In range: checked above.
            sha256(&[slice(image, s.offset, s.filesz).unwrap_or_default()])
        } else {
            continue;
        };
        if got[..] != *want {
            return Err(status::HASH_VERIFY_FAILED);
        }
    }
    Ok(())
}

/// Build a fake programmer of exactly `size` bytes (or the minimum layout size, about 8.5 KiB, if
/// `size` is smaller), signed for `pk_hash`, with contents derived from `seed`. Same inputs, same
/// bytes.
pub fn generate_programmer(pk_hash: &[u8], size: usize, class: ElfClass, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5141_5245_5343_5545); // "QRESCUE"
    let n_load = rng.gen_range(3..=6usize);
    let phnum = 2 + n_load;
    let hash_len = (HASH_HEADER_LEN + DIGEST_LEN * phnum + DIGEST_LEN) as u64;
    const MIN_SEG: u64 = 0x100;
    let min_size = FIRST_LOAD_OFFSET + n_load as u64 * (MIN_SEG + 0x10);
    let size = (size as u64).max(min_size);

    // Choose the load segments: offsets, sizes (no 4 KiB alignment), some gaps to 16 bytes.
    let (base, hash_vaddr, machine) = match class {
        ElfClass::Elf32 => (0x0822_0000u64, 0x0821_f000u64, 40u16),
        ElfClass::Elf64 => (0x1468_0000u64, 0x1467_f000u64, 183u16),
    };
    let mut loads: Vec<Segment> = Vec::with_capacity(n_load);
    let mut cursor = FIRST_LOAD_OFFSET;
    let mut vcursor = base;
    for i in 0..n_load {
        let left = (n_load - i) as u64;
        let remaining = size - cursor;
        let filesz = if i + 1 == n_load {
            remaining
        } else {
            // Leave room for the rest (minimum size plus a possible alignment gap each).
            let room = remaining - (left - 1) * (MIN_SEG + 0x10);
            let fair = room / left;
            let mut s = rng
                .gen_range(fair / 2..=fair + fair / 2)
                .clamp(MIN_SEG, room);
            if i == 0 && s % CHUNK == 0 {
                // Make sure a short chunk shifts the following offsets off 4 KiB.
                s -= 0x88;
            }
            s
        };
        let bss = if rng.gen_bool(0.3) {
            rng.gen_range(1..0x4000u64)
        } else {
            0
        };
        let flags = if i == 0 { 0x5 } else { 0x6 };
        loads.push(Segment {
            p_type: PT_LOAD,
            flags,
            offset: cursor,
            vaddr: vcursor + (cursor % 0x10),
            filesz,
            memsz: filesz + bss,
        });
        cursor += filesz;
        vcursor = (vcursor + filesz + bss + 0xfff) & !0xfff;
        if i + 2 < n_load && rng.gen_bool(0.5) {
            cursor = (cursor + 0xf) & !0xf;
        }
    }
    let total = cursor as usize;
    debug_assert_eq!(cursor, size);

    let eh = class.header_len();
    let pe = class.phdr_len();
    let headers_end = (eh + phnum * pe) as u64;
    let mut segs = Vec::with_capacity(phnum);
    segs.push(Segment {
        p_type: PT_NULL,
        flags: SEG_TYPE_HEADERS << SEG_TYPE_SHIFT,
        offset: 0,
        vaddr: 0,
        filesz: headers_end,
        memsz: 0,
    });
    segs.push(Segment {
        p_type: PT_NULL,
        flags: (SEG_TYPE_HASH << SEG_TYPE_SHIFT) | 0x0020_0000,
        offset: HASH_SEGMENT_OFFSET,
        vaddr: hash_vaddr,
        filesz: hash_len,
        memsz: 0x1000,
    });
    segs.extend(loads.iter().copied());

    let mut img = vec![0u8; total];
    // ELF header.
    img[..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
    img[4] = class.ident_byte();
    img[5] = 1; // little-endian
    img[6] = 1; // EV_CURRENT
    let put16 = |img: &mut [u8], o: usize, v: u16| img[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |img: &mut [u8], o: usize, v: u32| img[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |img: &mut [u8], o: usize, v: u64| img[o..o + 8].copy_from_slice(&v.to_le_bytes());
    put16(&mut img, 16, 2); // ET_EXEC
    put16(&mut img, 18, machine);
    put32(&mut img, 20, 1);
    let entry = loads[0].vaddr;
    match class {
        ElfClass::Elf32 => {
            put32(&mut img, 24, entry as u32);
            put32(&mut img, 28, eh as u32);
            put32(&mut img, 36, 0x0500_0000); // ARM EABI version 5
            put16(&mut img, 40, eh as u16);
            put16(&mut img, 42, pe as u16);
            put16(&mut img, 44, phnum as u16);
            put16(&mut img, 46, 0x28);
        }
        ElfClass::Elf64 => {
            put64(&mut img, 24, entry);
            put64(&mut img, 32, eh as u64);
            put16(&mut img, 52, eh as u16);
            put16(&mut img, 54, pe as u16);
            put16(&mut img, 56, phnum as u16);
            put16(&mut img, 58, 0x40);
        }
    }
    // Program headers.
    for (i, s) in segs.iter().enumerate() {
        let o = eh + i * pe;
        let align = if s.p_type == PT_LOAD { 0x10 } else { 0 };
        match class {
            ElfClass::Elf32 => {
                put32(&mut img, o, s.p_type);
                put32(&mut img, o + 4, s.offset as u32);
                put32(&mut img, o + 8, s.vaddr as u32);
                put32(&mut img, o + 12, s.vaddr as u32);
                put32(&mut img, o + 16, s.filesz as u32);
                put32(&mut img, o + 20, s.memsz as u32);
                put32(&mut img, o + 24, s.flags);
                put32(&mut img, o + 28, align);
            }
            ElfClass::Elf64 => {
                put32(&mut img, o, s.p_type);
                put32(&mut img, o + 4, s.flags);
                put64(&mut img, o + 8, s.offset);
                put64(&mut img, o + 16, s.vaddr);
                put64(&mut img, o + 24, s.vaddr);
                put64(&mut img, o + 32, s.filesz);
                put64(&mut img, o + 40, s.memsz);
                put64(&mut img, o + 48, u64::from(align));
            }
        }
    }
    // Segment contents.
    for s in &loads {
        let (a, b) = (s.offset as usize, (s.offset + s.filesz) as usize);
        rng.fill_bytes(&mut img[a..b]);
    }
    // Hash table and signature.
    let header_bytes = img[..eh].to_vec();
    let phdr_bytes = img[eh..headers_end as usize].to_vec();
    let mut table = Vec::with_capacity(DIGEST_LEN * phnum);
    for s in &segs {
        if s.is_headers() {
            table.extend_from_slice(&sha256(&[&header_bytes, &phdr_bytes]));
        } else if s.is_loaded() && !s.is_hash() {
            let (a, b) = (s.offset as usize, (s.offset + s.filesz) as usize);
            table.extend_from_slice(&sha256(&[&img[a..b]]));
        } else {
            table.extend_from_slice(&[0u8; DIGEST_LEN]);
        }
    }
    let signature = sha256(&[pk_hash, &table]);
    let h = HASH_SEGMENT_OFFSET as usize;
    let code_size = table.len() as u32;
    let words = [
        13u32,
        3,
        0,
        hash_vaddr as u32 + HASH_HEADER_LEN as u32,
        code_size + DIGEST_LEN as u32,
        code_size,
        hash_vaddr as u32 + HASH_HEADER_LEN as u32 + code_size,
        DIGEST_LEN as u32,
        hash_vaddr as u32 + HASH_HEADER_LEN as u32 + code_size + DIGEST_LEN as u32,
        0,
    ];
    for (i, w) in words.iter().enumerate() {
        put32(&mut img, h + 4 * i, *w);
    }
    img[h + HASH_HEADER_LEN..h + HASH_HEADER_LEN + table.len()].copy_from_slice(&table);
    let sig_at = h + HASH_HEADER_LEN + table.len();
    img[sig_at..sig_at + DIGEST_LEN].copy_from_slice(&signature);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: [u8; 32] = [0xcc; 32];

    fn segments_of(img: &[u8]) -> Vec<Segment> {
        let hdr = parse_header(img).unwrap();
        let (o, l) = hdr.phdr_table();
        parse_phdrs(&hdr, &img[o as usize..(o + l) as usize]).unwrap()
    }

    #[test]
    fn generated_programmers_validate_for_their_pk_hash() {
        for (class, seed, size) in [
            (ElfClass::Elf32, 1, 132_016),
            (ElfClass::Elf64, 2, 600 * 1024),
            (ElfClass::Elf32, 3, 0),
            (ElfClass::Elf64, 4, 50_000),
        ] {
            let img = generate_programmer(&PK, size, class, seed);
            assert!(img.len() >= size);
            if size > 0x4000 {
                assert_eq!(img.len(), size);
            }
            assert_eq!(validate(&img, &PK), Ok(()), "{class:?} seed {seed}");
            assert_eq!(parse_header(&img).unwrap().class, class);
            // Same inputs, same bytes; another seed, other bytes.
            assert_eq!(img, generate_programmer(&PK, size, class, seed));
            assert_ne!(img, generate_programmer(&PK, size, class, seed + 100));
        }
    }

    #[test]
    fn layout_has_headers_hash_and_several_loads_not_all_aligned() {
        let img = generate_programmer(&PK, 300_000, ElfClass::Elf64, 9);
        let segs = segments_of(&img);
        assert!(segs[0].is_headers());
        assert!(segs[1].is_hash());
        let loads: Vec<_> = segs.iter().filter(|s| s.p_type == PT_LOAD).collect();
        assert!(loads.len() >= 3);
        assert!(loads.iter().any(|s| s.offset % CHUNK != 0));
        let plan = request_plan(&img);
        assert!(plan.iter().skip(2).any(|(o, _)| o % CHUNK != 0));
    }

    #[test]
    fn wrong_pk_hash_is_image_auth_failure() {
        let img = generate_programmer(&PK, 40_000, ElfClass::Elf32, 5);
        assert_eq!(validate(&img, &[0xdd; 32]), Err(0x25));
        assert_eq!(validate(&img, &[0xcc; 48]), Err(0x25));
    }

    #[test]
    fn corrupted_segment_is_hash_verification_failure() {
        let mut img = generate_programmer(&PK, 40_000, ElfClass::Elf32, 6);
        let last = img.len() - 10;
        img[last] ^= 0x01;
        assert_eq!(validate(&img, &PK), Err(0x22));
        // A corrupted program header (vaddr of a load segment) is caught by the headers hash.
        let mut img = generate_programmer(&PK, 40_000, ElfClass::Elf32, 6);
        let o = 0x34 + 2 * 0x20 + 8;
        img[o] ^= 0x10;
        assert_eq!(validate(&img, &PK), Err(0x22));
    }

    #[test]
    fn missing_hash_segment_is_hash_table_not_found() {
        let mut img = generate_programmer(&PK, 40_000, ElfClass::Elf64, 7);
        // Turn the hash segment's type bits into 0 (a plain PT_NULL).
        let o = 0x40 + 0x38 + 4;
        img[o + 3] = 0;
        img[o + 2] = 0;
        assert_eq!(validate(&img, &PK), Err(0x23));
    }

    #[test]
    fn broken_hash_table_is_invalid_hash_table_size() {
        let mut img = generate_programmer(&PK, 40_000, ElfClass::Elf32, 8);
        let code_size_at = 0x1000 + 20;
        img[code_size_at] = img[code_size_at].wrapping_add(32);
        assert_eq!(validate(&img, &PK), Err(0x26));
    }

    #[test]
    fn header_refusals() {
        let good = generate_programmer(&PK, 40_000, ElfClass::Elf32, 10);
        let mut bad_magic = good.clone();
        bad_magic[1] = b'X';
        assert_eq!(validate(&bad_magic, &PK), Err(0x14));
        let mut bad_class = good.clone();
        bad_class[4] = 3;
        assert_eq!(validate(&bad_class, &PK), Err(0x14));
        assert_eq!(validate(&good[..0x20], &PK), Err(0x14));
        assert_eq!(validate(b"MZ\x90\x00 not an elf at all", &PK), Err(0x14));
        let mut bad_ehsize = good.clone();
        bad_ehsize[40] = 0x40;
        assert_eq!(validate(&bad_ehsize, &PK), Err(0x14));
        let mut zero_ph = good.clone();
        zero_ph[44] = 0;
        zero_ph[45] = 0;
        assert_eq!(validate(&zero_ph, &PK), Err(0x0E));
        let mut many_ph = good.clone();
        many_ph[44] = 0xff;
        assert_eq!(validate(&many_ph, &PK), Err(0x0E));
        let mut bad_phentsize = good.clone();
        bad_phentsize[42] = 0x28;
        assert_eq!(validate(&bad_phentsize, &PK), Err(0x0F));
        // The table runs past the end of a truncated file.
        assert_eq!(validate(&good[..0x60], &PK), Err(0x0F));
        // Truncated in the middle of a segment.
        assert_eq!(validate(&good[..0x3000], &PK), Err(0x13));
    }

    #[test]
    fn request_plan_reads_header_then_phdrs_then_segments_once() {
        for (class, seed) in [(ElfClass::Elf32, 11), (ElfClass::Elf64, 12)] {
            let img = generate_programmer(&PK, 200_000, class, seed);
            let plan = request_plan(&img);
            let hdr = parse_header(&img).unwrap();
            assert_eq!(plan[0], (0, class.header_len() as u64));
            assert_eq!(plan[1], hdr.phdr_table());
            assert!(plan.iter().all(|(_, l)| *l > 0 && *l <= CHUNK));
            // Count how often each byte is read.
            let mut seen = vec![0u8; img.len()];
            for (o, l) in &plan {
                for b in &mut seen[*o as usize..(*o + *l) as usize] {
                    *b += 1;
                }
            }
            for s in segments_of(&img).iter().filter(|s| s.filesz > 0) {
                for (i, c) in seen[s.offset as usize..(s.offset + s.filesz) as usize]
                    .iter()
                    .enumerate()
                {
                    assert_eq!(*c, 1, "segment at {:#x}, byte {i}", s.offset);
                }
            }
            assert!(seen.iter().all(|c| *c <= 1));
            // Within each segment, full 4 KiB chunks and one short last chunk.
            for s in segments_of(&img).iter().filter(|s| s.is_loaded()) {
                let chunks: Vec<_> = plan
                    .iter()
                    .filter(|(o, _)| *o >= s.offset && *o < s.offset + s.filesz)
                    .collect();
                let (last, full) = chunks.split_last().unwrap();
                assert!(full.iter().all(|(_, l)| *l == CHUNK));
                assert_eq!(last.1, (s.filesz - 1) % CHUNK + 1);
            }
            // Rebuilding the image from only the planned reads validates the same way.
            let mut rebuilt = vec![0u8; img.len()];
            for (o, l) in &plan {
                let r = *o as usize..(*o + *l) as usize;
                rebuilt[r.clone()].copy_from_slice(&img[r]);
            }
            assert_eq!(validate(&rebuilt, &PK), Ok(()));
        }
    }

    #[test]
    fn request_plan_stops_where_a_rom_would() {
        assert_eq!(request_plan(b"garbage"), vec![(0, 0x34)]);
        let mut img = generate_programmer(&PK, 40_000, ElfClass::Elf64, 13);
        assert_eq!(request_plan(&img[..0x40]).len(), 2);
        img[56] = 0; // phnum = 0
        img[57] = 0;
        assert_eq!(request_plan(&img), vec![(0, 0x40)]);
    }

    #[test]
    fn six_hundred_kib_generates_fast() {
        let t = std::time::Instant::now();
        let img = generate_programmer(&PK, 600 * 1024, ElfClass::Elf64, 42);
        assert_eq!(img.len(), 600 * 1024);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(request_plan(&img).len() > 150);
    }
}
