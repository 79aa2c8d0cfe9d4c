//! Android sparse images (PROTOCOLS.md §4), read as a stream.
//!
//! [`SparseReader`] walks the chunks of an image from any [`Read`] without loading it: a RAW
//! chunk hands out a reader for exactly its bytes, and whatever the caller does not read is
//! skipped when the next chunk is asked for. Memory use is constant (a few KiB of stack). Chunk
//! headers are read 12 bytes at a time, so wrap a `File` in a `BufReader`.
//!
//! Validation:
//! - file header: magic 0xED26FF3A, major version 1 (higher is refused, any minor), header sizes
//!   at least 28 and 12 bytes (larger ones are skipped), block size a multiple of 4 from 4 bytes
//!   to [`MAX_BLOCK_SIZE`];
//! - each chunk: a known type, `total_sz` exactly as the type requires, and an output that never
//!   passes `total_blks`;
//! - at the end: exactly `total_chunks` chunks whose blocks add up to `total_blks`;
//! - CRC32 chunks are checked against the CRC-32 of all output so far, DONT_CARE counted as zero
//!   bytes (libsparse's convention). Every byte of the image passes through the reader, so this is
//!   always possible; long FILL and DONT_CARE runs are hashed in O(log n) with CRC combination.
//!   The header's `image_checksum` is not enforced (libsparse writes 0 there and no tool checks
//!   it); [`SparseReader::image_checksum_matches`] reports it after the last chunk.
//!
//! [`SparseReader::runs`] and [`read_layout`] map an image onto the runs a flasher programs: one
//! per RAW or FILL chunk, DONT_CARE only advancing the output position (qdl's mapping).
//! [`SparseExpander`] yields the fully expanded image (DONT_CARE as zeros) for hashing and tests.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

/// The file magic, little-endian at offset 0.
pub const SPARSE_MAGIC: u32 = 0xED26_FF3A;
pub const CHUNK_RAW: u16 = 0xCAC1;
pub const CHUNK_FILL: u16 = 0xCAC2;
pub const CHUNK_DONT_CARE: u16 = 0xCAC3;
pub const CHUNK_CRC32: u16 = 0xCAC4;
/// The largest block size accepted (real images use 4096).
pub const MAX_BLOCK_SIZE: u32 = 16 * 1024 * 1024;
/// The most runs [`SparseReader::runs`] and [`read_layout`] will collect (real images have a
/// few thousand chunks).
pub const MAX_RUNS: usize = 1 << 20;

const FILE_HEADER_LEN: u16 = 28;
const CHUNK_HEADER_LEN: u16 = 12;

/// True when `first_bytes` starts with the sparse magic.
pub fn is_sparse(first_bytes: &[u8]) -> bool {
    first_bytes.len() >= 4 && first_bytes[..4] == SPARSE_MAGIC.to_le_bytes()
}

/// The sparse file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseHeader {
    pub major: u16,
    pub minor: u16,
    pub file_hdr_sz: u16,
    pub chunk_hdr_sz: u16,
    pub blk_sz: u32,
    pub total_blks: u32,
    pub total_chunks: u32,
    pub image_checksum: u32,
}

impl SparseHeader {
    /// The size of the expanded image in bytes.
    pub fn output_bytes(&self) -> u64 {
        u64::from(self.total_blks) * u64::from(self.blk_sz)
    }
}

/// Why a sparse image was refused.
#[derive(Debug, thiserror::Error)]
pub enum SparseError {
    #[error("the image ends early, inside {context}")]
    Truncated { context: &'static str },
    #[error("reading the image failed: {0}")]
    Io(#[source] io::Error),
    #[error("not an Android sparse image (magic {0:#010x}, expected 0xed26ff3a)")]
    BadMagic(u32),
    #[error("sparse format version {major}.{minor} is newer than the supported 1.x")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error(
        "the sparse header gives {field} = {value}, smaller than the {min} bytes it must hold"
    )]
    BadHeaderSize {
        field: &'static str,
        value: u16,
        min: u16,
    },
    #[error("the sparse block size {0} is not a multiple of 4 between 4 and 16 MiB")]
    BadBlockSize(u32),
    #[error("chunk {index} has unknown type {kind:#06x}")]
    UnknownChunk { index: u32, kind: u16 },
    #[error("chunk {index} ({kind}) declares {total_sz} bytes, expected {expected}")]
    BadChunkSize {
        index: u32,
        kind: ChunkType,
        total_sz: u32,
        expected: u64,
    },
    #[error("chunk {index} (CRC32) covers {blocks} output blocks, expected 0")]
    BadCrcChunk { index: u32, blocks: u32 },
    #[error("chunk {index} ends at block {end}, past the {total_blks} blocks the header declares")]
    PastEnd {
        index: u32,
        end: u64,
        total_blks: u32,
    },
    #[error("the chunks cover {blocks} blocks but the header declares {total_blks}")]
    BlockCountMismatch { blocks: u64, total_blks: u32 },
    #[error(
        "chunk {index} (CRC32) holds {expected:#010x} but the data so far has CRC {actual:#010x}"
    )]
    CrcMismatch {
        index: u32,
        expected: u32,
        actual: u32,
    },
    #[error("the image has more than {0} data chunks")]
    TooManyRuns(usize),
    #[error("the sparse reader stopped after an earlier error")]
    Stopped,
}

impl SparseError {
    fn from_io(e: io::Error, context: &'static str) -> SparseError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SparseError::Truncated { context }
        } else {
            SparseError::Io(e)
        }
    }
}

impl From<SparseError> for crate::Error {
    fn from(e: SparseError) -> Self {
        let next = match e {
            SparseError::Io(_) => "check that the file is readable and the disk is healthy",
            _ => {
                "extract the firmware package again and check it against its md5.txt; a damaged \
                 sparse image must not be flashed"
            }
        };
        crate::Error::failure(
            format!("sparse image: {e}"),
            "qrescue will not flash a package it cannot fully understand",
            next,
        )
    }
}

/// A chunk type, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkType {
    Raw,
    Fill,
    DontCare,
    Crc32,
}

impl fmt::Display for ChunkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkType::Raw => "RAW",
            ChunkType::Fill => "FILL",
            ChunkType::DontCare => "DONT_CARE",
            ChunkType::Crc32 => "CRC32",
        })
    }
}

/// One chunk of the image. `index` counts from 1.
#[derive(Debug)]
pub struct Chunk<'a, R> {
    pub index: u32,
    /// Where the chunk's output starts, in blocks.
    pub out_offset_blocks: u64,
    /// How many output blocks it covers (0 for CRC32).
    pub blocks: u64,
    pub kind: ChunkKind<'a, R>,
}

/// What a chunk holds.
#[derive(Debug)]
pub enum ChunkKind<'a, R> {
    /// The chunk's data: exactly `blocks × blk_sz` bytes.
    Raw(RawData<'a, R>),
    /// Every 4 bytes of the output are this value (little-endian).
    Fill(u32),
    /// Output the image does not define.
    DontCare,
    /// The CRC-32 of the output so far (already checked).
    Crc32(u32),
}

/// The data of a RAW chunk. Reads end after exactly the chunk's bytes; bytes not read are
/// skipped by the next [`SparseReader::next_chunk`].
pub struct RawData<'a, R> {
    reader: &'a mut SparseReader<R>,
    data_offset: u64,
}

impl<R> fmt::Debug for RawData<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawData")
            .field("remaining", &self.reader.raw_left)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl<R: Read> RawData<'_, R> {
    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.reader.raw_left
    }

    /// Where the chunk's data starts in the sparse file (relative to where the reader started).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
}

impl<R: Read> Read for RawData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_raw(buf)
    }
}

/// What a run programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Data stored in the sparse file at `data_offset` (relative to the start of the image).
    Raw { data_offset: u64 },
    /// A repeated 4-byte value.
    Fill(u32),
}

/// A stretch of output to program: one per RAW or FILL chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start_block: u64,
    pub blocks: u64,
    pub kind: RunKind,
}

impl Run {
    /// The run as (start sector, sector count) for a given sector size, when its bytes are a
    /// whole number of sectors (qdl's requirement).
    pub fn sectors(&self, blk_sz: u32, sector_size: u32) -> Option<(u64, u64)> {
        let (bs, ss) = (u64::from(blk_sz), u64::from(sector_size));
        if ss == 0 {
            return None;
        }
        let start = self.start_block.checked_mul(bs)?;
        let len = self.blocks.checked_mul(bs)?;
        if start % ss != 0 || len % ss != 0 {
            return None;
        }
        Some((start / ss, len / ss))
    }
}

/// An image mapped onto runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseLayout {
    pub header: SparseHeader,
    pub runs: Vec<Run>,
}

impl SparseLayout {
    /// Bytes that will actually be written (RAW and FILL runs).
    pub fn programmed_bytes(&self) -> u64 {
        self.runs
            .iter()
            .map(|r| r.blocks * u64::from(self.header.blk_sz))
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Header parsing shared by the streaming reader and the seeking layout reader
// ---------------------------------------------------------------------------------------------

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Read and throw away `n` bytes (hashing them when asked); fewer bytes than `n` is an
/// `UnexpectedEof` error.
fn discard<R: Read>(r: &mut R, mut n: u64, hash: Option<&mut crc32fast::Hasher>) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    let mut hash = hash;
    while n > 0 {
        let want = n.min(buf.len() as u64) as usize;
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(h) = hash.as_deref_mut() {
            h.update(&buf[..got]);
        }
        n -= got as u64;
    }
    Ok(())
}

fn read_exact_ctx<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    ctx: &'static str,
) -> Result<(), SparseError> {
    r.read_exact(buf).map_err(|e| SparseError::from_io(e, ctx))
}

/// Read the file header (and skip any extra header bytes). Returns the header and the number of
/// bytes consumed.
fn read_file_header<R: Read>(r: &mut R) -> Result<(SparseHeader, u64), SparseError> {
    let mut b = [0u8; FILE_HEADER_LEN as usize];
    read_exact_ctx(r, &mut b[..4], "the file header")?;
    let magic = u32_at(&b, 0);
    if magic != SPARSE_MAGIC {
        return Err(SparseError::BadMagic(magic));
    }
    read_exact_ctx(r, &mut b[4..], "the file header")?;
    let h = SparseHeader {
        major: u16_at(&b, 4),
        minor: u16_at(&b, 6),
        file_hdr_sz: u16_at(&b, 8),
        chunk_hdr_sz: u16_at(&b, 10),
        blk_sz: u32_at(&b, 12),
        total_blks: u32_at(&b, 16),
        total_chunks: u32_at(&b, 20),
        image_checksum: u32_at(&b, 24),
    };
    if h.major != 1 {
        return Err(SparseError::UnsupportedVersion {
            major: h.major,
            minor: h.minor,
        });
    }
    if h.file_hdr_sz < FILE_HEADER_LEN {
        return Err(SparseError::BadHeaderSize {
            field: "file_hdr_sz",
            value: h.file_hdr_sz,
            min: FILE_HEADER_LEN,
        });
    }
    if h.chunk_hdr_sz < CHUNK_HEADER_LEN {
        return Err(SparseError::BadHeaderSize {
            field: "chunk_hdr_sz",
            value: h.chunk_hdr_sz,
            min: CHUNK_HEADER_LEN,
        });
    }
    if h.blk_sz == 0 || h.blk_sz % 4 != 0 || h.blk_sz > MAX_BLOCK_SIZE {
        return Err(SparseError::BadBlockSize(h.blk_sz));
    }
    let extra = u64::from(h.file_hdr_sz - FILE_HEADER_LEN);
    discard(r, extra, None).map_err(|e| SparseError::from_io(e, "the file header"))?;
    Ok((h, u64::from(h.file_hdr_sz)))
}

/// A validated chunk header.
#[derive(Debug, Clone, Copy)]
enum Parsed {
    Raw { bytes: u64 },
    Fill(u32),
    DontCare,
    Crc32(u32),
}

/// Read one chunk header (plus the 4-byte payload of FILL and CRC32), validate it and return it
/// with its block count and the input bytes consumed.
fn read_chunk_header<R: Read>(
    r: &mut R,
    h: &SparseHeader,
    index: u32,
    out_block: u64,
) -> Result<(Parsed, u64, u64), SparseError> {
    const CTX: &str = "a chunk header";
    let mut b = [0u8; CHUNK_HEADER_LEN as usize];
    read_exact_ctx(r, &mut b, CTX)?;
    let kind = u16_at(&b, 0);
    let chunk_sz = u32_at(&b, 4);
    let total_sz = u32_at(&b, 8);
    discard(r, u64::from(h.chunk_hdr_sz - CHUNK_HEADER_LEN), None)
        .map_err(|e| SparseError::from_io(e, CTX))?;
    let hdr = u64::from(h.chunk_hdr_sz);
    let blocks = u64::from(chunk_sz);
    let (ty, expected) = match kind {
        CHUNK_RAW => (ChunkType::Raw, hdr + blocks * u64::from(h.blk_sz)),
        CHUNK_FILL => (ChunkType::Fill, hdr + 4),
        CHUNK_DONT_CARE => (ChunkType::DontCare, hdr),
        CHUNK_CRC32 => (ChunkType::Crc32, hdr + 4),
        other => return Err(SparseError::UnknownChunk { index, kind: other }),
    };
    if u64::from(total_sz) != expected {
        return Err(SparseError::BadChunkSize {
            index,
            kind: ty,
            total_sz,
            expected,
        });
    }
    if ty == ChunkType::Crc32 && chunk_sz != 0 {
        return Err(SparseError::BadCrcChunk {
            index,
            blocks: chunk_sz,
        });
    }
    let end = out_block + blocks;
    if end > u64::from(h.total_blks) {
        return Err(SparseError::PastEnd {
            index,
            end,
            total_blks: h.total_blks,
        });
    }
    let mut consumed = hdr;
    let parsed = match ty {
        ChunkType::Raw => Parsed::Raw {
            bytes: blocks * u64::from(h.blk_sz),
        },
        ChunkType::DontCare => Parsed::DontCare,
        ChunkType::Fill | ChunkType::Crc32 => {
            let mut v = [0u8; 4];
            read_exact_ctx(r, &mut v, "a chunk's value")?;
            consumed += 4;
            let v = u32::from_le_bytes(v);
            if ty == ChunkType::Fill {
                Parsed::Fill(v)
            } else {
                Parsed::Crc32(v)
            }
        }
    };
    Ok((parsed, blocks, consumed))
}

/// Append `len` bytes of the repeated 4-byte `pattern` to `hasher`; `len` is a multiple of 4.
/// Long runs are hashed by combining CRCs of doubling lengths, so a 64 GiB DONT_CARE costs
/// microseconds.
fn crc_repeat(hasher: &mut crc32fast::Hasher, pattern: [u8; 4], len: u64) {
    const SEG: u64 = 64 * 1024;
    let mut buf = [0u8; 4096];
    for c in buf.chunks_exact_mut(4) {
        c.copy_from_slice(&pattern);
    }
    let direct = |h: &mut crc32fast::Hasher, mut n: u64| {
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            h.update(&buf[..k]);
            n -= k as u64;
        }
    };
    if len <= SEG {
        direct(hasher, len);
        return;
    }
    let mut pow = crc32fast::Hasher::new();
    direct(&mut pow, SEG);
    let mut acc = crc32fast::Hasher::new();
    let mut n = len / SEG;
    while n > 0 {
        if n & 1 == 1 {
            acc.combine(&pow);
        }
        n >>= 1;
        if n > 0 {
            let p = pow.clone();
            pow.combine(&p);
        }
    }
    hasher.combine(&acc);
    direct(hasher, len % SEG);
}

// ---------------------------------------------------------------------------------------------
// The streaming reader
// ---------------------------------------------------------------------------------------------

/// A streaming reader over a sparse image (see the module notes).
pub struct SparseReader<R> {
    inner: R,
    header: SparseHeader,
    /// Chunks read so far.
    chunks: u32,
    /// Output position in blocks.
    out_block: u64,
    /// Bytes of the current RAW chunk not yet consumed.
    raw_left: u64,
    /// Input bytes consumed.
    in_offset: u64,
    /// CRC-32 of the output so far.
    crc: crc32fast::Hasher,
    finished: bool,
    failed: bool,
}

impl<R> fmt::Debug for SparseReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparseReader")
            .field("header", &self.header)
            .field("chunks", &self.chunks)
            .field("out_block", &self.out_block)
            .finish()
    }
}

impl<R: Read> SparseReader<R> {
    /// Read and validate the file header.
    pub fn new(mut reader: R) -> Result<Self, SparseError> {
        let (header, consumed) = read_file_header(&mut reader)?;
        Ok(SparseReader {
            inner: reader,
            header,
            chunks: 0,
            out_block: 0,
            raw_left: 0,
            in_offset: consumed,
            crc: crc32fast::Hasher::new(),
            finished: false,
            failed: false,
        })
    }

    pub fn header(&self) -> &SparseHeader {
        &self.header
    }

    /// The CRC-32 of the output produced so far (DONT_CARE as zeros, unread RAW bytes excluded).
    pub fn crc_so_far(&self) -> u32 {
        self.crc.clone().finalize()
    }

    /// After the last chunk: whether the header's image_checksum matches the output. `None`
    /// before the end, or when the header leaves it 0 (not computed).
    pub fn image_checksum_matches(&self) -> Option<bool> {
        if !self.finished || self.header.image_checksum == 0 {
            return None;
        }
        Some(self.crc_so_far() == self.header.image_checksum)
    }

    /// Give back the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.raw_left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = self.raw_left.min(buf.len() as u64) as usize;
        let got = match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.failed = true;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the sparse image ends inside a RAW chunk",
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        self.crc.update(&buf[..got]);
        self.raw_left -= got as u64;
        self.in_offset += got as u64;
        Ok(got)
    }

    /// The next chunk, or `None` after the last one (when the totals have been checked).
    pub fn next_chunk(&mut self) -> Result<Option<Chunk<'_, R>>, SparseError> {
        if self.failed {
            return Err(SparseError::Stopped);
        }
        if self.finished {
            return Ok(None);
        }
        match self.advance() {
            Ok(Some((index, start, blocks, parsed))) => {
                let kind = match parsed {
                    Parsed::Raw { .. } => {
                        let data_offset = self.in_offset;
                        ChunkKind::Raw(RawData {
                            reader: self,
                            data_offset,
                        })
                    }
                    Parsed::Fill(v) => ChunkKind::Fill(v),
                    Parsed::DontCare => ChunkKind::DontCare,
                    Parsed::Crc32(v) => ChunkKind::Crc32(v),
                };
                Ok(Some(Chunk {
                    index,
                    out_offset_blocks: start,
                    blocks,
                    kind,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Skip what is left of a RAW chunk, read the next header and account for it.
    #[allow(clippy::type_complexity)]
    fn advance(&mut self) -> Result<Option<(u32, u64, u64, Parsed)>, SparseError> {
        if self.raw_left > 0 {
            let left = self.raw_left;
            discard(&mut self.inner, left, Some(&mut self.crc))
                .map_err(|e| SparseError::from_io(e, "a RAW chunk"))?;
            self.in_offset += left;
            self.raw_left = 0;
        }
        let h = self.header;
        if self.chunks == h.total_chunks {
            if self.out_block != u64::from(h.total_blks) {
                return Err(SparseError::BlockCountMismatch {
                    blocks: self.out_block,
                    total_blks: h.total_blks,
                });
            }
            self.finished = true;
            return Ok(None);
        }
        let index = self.chunks + 1;
        let (parsed, blocks, consumed) =
            read_chunk_header(&mut self.inner, &h, index, self.out_block)?;
        self.in_offset += consumed;
        self.chunks += 1;
        let start = self.out_block;
        self.out_block += blocks;
        let bytes = blocks * u64::from(h.blk_sz);
        match parsed {
            Parsed::Raw { bytes } => self.raw_left = bytes,
            Parsed::Fill(v) => crc_repeat(&mut self.crc, v.to_le_bytes(), bytes),
            Parsed::DontCare => crc_repeat(&mut self.crc, [0; 4], bytes),
            Parsed::Crc32(expected) => {
                let actual = self.crc_so_far();
                if actual != expected {
                    return Err(SparseError::CrcMismatch {
                        index,
                        expected,
                        actual,
                    });
                }
            }
        }
        Ok(Some((index, start, blocks, parsed)))
    }

    /// Walk the whole image (reading every byte, checking CRC32 chunks and totals) and return
    /// its runs. For a seekable file, [`read_layout`] does the same from the headers alone.
    pub fn runs(mut self) -> Result<SparseLayout, SparseError> {
        let header = self.header;
        let mut runs = Vec::new();
        while let Some(chunk) = self.next_chunk()? {
            let kind = match chunk.kind {
                ChunkKind::Raw(ref d) => RunKind::Raw {
                    data_offset: d.data_offset(),
                },
                ChunkKind::Fill(v) => RunKind::Fill(v),
                ChunkKind::DontCare | ChunkKind::Crc32(_) => continue,
            };
            if chunk.blocks == 0 {
                continue;
            }
            if runs.len() >= MAX_RUNS {
                return Err(SparseError::TooManyRuns(MAX_RUNS));
            }
            runs.push(Run {
                start_block: chunk.out_offset_blocks,
                blocks: chunk.blocks,
                kind,
            });
        }
        Ok(SparseLayout { header, runs })
    }
}

/// Map a seekable sparse image onto runs from its headers alone: RAW data is seeked over, not
/// read, so CRC32 chunks are not verified here (use [`SparseReader`] or [`SparseExpander`] for
/// that). The totals are checked, and the file must really hold every RAW chunk's data.
pub fn read_layout<R: Read + Seek>(mut reader: R) -> Result<SparseLayout, SparseError> {
    let base = reader.stream_position().map_err(SparseError::Io)?;
    let (header, mut offset) = read_file_header(&mut reader)?;
    let mut out_block = 0u64;
    let mut runs = Vec::new();
    for i in 0..header.total_chunks {
        let index = i + 1;
        let (parsed, blocks, consumed) = read_chunk_header(&mut reader, &header, index, out_block)?;
        offset += consumed;
        let kind = match parsed {
            Parsed::Raw { bytes } => {
                let data_offset = offset;
                let skip = i64::try_from(bytes).map_err(|_| SparseError::Truncated {
                    context: "a RAW chunk",
                })?;
                reader
                    .seek(SeekFrom::Current(skip))
                    .map_err(SparseError::Io)?;
                offset += bytes;
                Some(RunKind::Raw { data_offset })
            }
            Parsed::Fill(v) => Some(RunKind::Fill(v)),
            Parsed::DontCare | Parsed::Crc32(_) => None,
        };
        if let Some(kind) = kind {
            if blocks > 0 {
                if runs.len() >= MAX_RUNS {
                    return Err(SparseError::TooManyRuns(MAX_RUNS));
                }
                runs.push(Run {
                    start_block: out_block,
                    blocks,
                    kind,
                });
            }
        }
        out_block += blocks;
    }
    if out_block != u64::from(header.total_blks) {
        return Err(SparseError::BlockCountMismatch {
            blocks: out_block,
            total_blks: header.total_blks,
        });
    }
    let end = reader.seek(SeekFrom::End(0)).map_err(SparseError::Io)?;
    if end < base + offset {
        return Err(SparseError::Truncated {
            context: "a RAW chunk",
        });
    }
    Ok(SparseLayout { header, runs })
}

// ---------------------------------------------------------------------------------------------
// The expander
// ---------------------------------------------------------------------------------------------

enum Pending {
    None,
    Raw,
    Fill {
        pattern: [u8; 4],
        left: u64,
        phase: usize,
    },
}

/// Yields the expanded image as a stream: RAW data, FILL values repeated, DONT_CARE as zero
/// bytes. Errors in the image surface as `io::ErrorKind::InvalidData` carrying the
/// [`SparseError`] (or `UnexpectedEof` for a truncated RAW chunk).
pub struct SparseExpander<R> {
    reader: SparseReader<R>,
    pending: Pending,
    done: bool,
}

impl<R: Read> SparseExpander<R> {
    pub fn new(reader: R) -> Result<Self, SparseError> {
        Ok(Self::from_reader(SparseReader::new(reader)?))
    }

    pub fn from_reader(reader: SparseReader<R>) -> Self {
        SparseExpander {
            reader,
            pending: Pending::None,
            done: false,
        }
    }

    pub fn header(&self) -> &SparseHeader {
        self.reader.header()
    }

    /// The reader underneath (for [`SparseReader::image_checksum_matches`] at the end).
    pub fn sparse_reader(&self) -> &SparseReader<R> {
        &self.reader
    }
}

impl<R: Read> Read for SparseExpander<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.pending {
                Pending::Raw => {
                    if self.reader.raw_left == 0 {
                        self.pending = Pending::None;
                        continue;
                    }
                    return self.reader.read_raw(buf);
                }
                Pending::Fill {
                    pattern,
                    left,
                    phase,
                } => {
                    if *left == 0 {
                        self.pending = Pending::None;
                        continue;
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    for b in &mut buf[..n] {
                        *b = pattern[*phase];
                        *phase = (*phase + 1) % 4;
                    }
                    *left -= n as u64;
                    return Ok(n);
                }
                Pending::None => {
                    if self.done {
                        return Ok(0);
                    }
                    let blk = u64::from(self.reader.header.blk_sz);
                    let next = match self.reader.next_chunk() {
                        Ok(Some(c)) => match c.kind {
                            ChunkKind::Raw(_) => Pending::Raw,
                            ChunkKind::Fill(v) => Pending::Fill {
                                pattern: v.to_le_bytes(),
                                left: c.blocks * blk,
                                phase: 0,
                            },
                            ChunkKind::DontCare => Pending::Fill {
                                pattern: [0; 4],
                                left: c.blocks * blk,
                                phase: 0,
                            },
                            ChunkKind::Crc32(_) => Pending::None,
                        },
                        Ok(None) => {
                            self.done = true;
                            return Ok(0);
                        }
                        Err(SparseError::Io(e)) => return Err(e),
                        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    };
                    self.pending = next;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    /// A chunk to build into a test image.
    #[derive(Debug, Clone)]
    enum Spec {
        Raw(Vec<u8>),
        Fill(u32, u32),
        DontCare(u32),
        Crc,
        BadCrc,
    }

    struct Built {
        image: Vec<u8>,
        expanded: Vec<u8>,
        runs: Vec<Run>,
    }

    /// Build an image with the given header sizes; RAW data must be whole blocks.
    fn build(blk_sz: u32, specs: &[Spec], file_hdr_sz: u16, chunk_hdr_sz: u16) -> Built {
        let mut body = Vec::new();
        let mut expanded: Vec<u8> = Vec::new();
        let mut runs = Vec::new();
        let mut blocks_total = 0u32;
        let hdr_pad = vec![0xEEu8; usize::from(chunk_hdr_sz - 12)];
        let chunk = |body: &mut Vec<u8>, ty: u16, sz: u32, total: u32| {
            body.extend_from_slice(&ty.to_le_bytes());
            body.extend_from_slice(&0u16.to_le_bytes());
            body.extend_from_slice(&sz.to_le_bytes());
            body.extend_from_slice(&total.to_le_bytes());
            body.extend_from_slice(&hdr_pad);
        };
        let h = u32::from(chunk_hdr_sz);
        for s in specs {
            match s {
                Spec::Raw(data) => {
                    let n = (data.len() / blk_sz as usize) as u32;
                    chunk(&mut body, CHUNK_RAW, n, h + data.len() as u32);
                    let data_offset = u64::from(file_hdr_sz) + body.len() as u64;
                    body.extend_from_slice(data);
                    if n > 0 {
                        runs.push(Run {
                            start_block: u64::from(blocks_total),
                            blocks: u64::from(n),
                            kind: RunKind::Raw { data_offset },
                        });
                    }
                    expanded.extend_from_slice(data);
                    blocks_total += n;
                }
                Spec::Fill(v, n) => {
                    chunk(&mut body, CHUNK_FILL, *n, h + 4);
                    body.extend_from_slice(&v.to_le_bytes());
                    for _ in 0..(*n * blk_sz / 4) {
                        expanded.extend_from_slice(&v.to_le_bytes());
                    }
                    if *n > 0 {
                        runs.push(Run {
                            start_block: u64::from(blocks_total),
                            blocks: u64::from(*n),
                            kind: RunKind::Fill(*v),
                        });
                    }
                    blocks_total += n;
                }
                Spec::DontCare(n) => {
                    chunk(&mut body, CHUNK_DONT_CARE, *n, h);
                    expanded.resize(expanded.len() + (*n * blk_sz) as usize, 0);
                    blocks_total += n;
                }
                Spec::Crc | Spec::BadCrc => {
                    chunk(&mut body, CHUNK_CRC32, 0, h + 4);
                    let mut crc = crc32fast::hash(&expanded);
                    if matches!(s, Spec::BadCrc) {
                        crc ^= 1;
                    }
                    body.extend_from_slice(&crc.to_le_bytes());
                }
            }
        }
        let mut image = Vec::new();
        image.extend_from_slice(&SPARSE_MAGIC.to_le_bytes());
        image.extend_from_slice(&1u16.to_le_bytes());
        image.extend_from_slice(&0u16.to_le_bytes());
        image.extend_from_slice(&file_hdr_sz.to_le_bytes());
        image.extend_from_slice(&chunk_hdr_sz.to_le_bytes());
        image.extend_from_slice(&blk_sz.to_le_bytes());
        image.extend_from_slice(&blocks_total.to_le_bytes());
        image.extend_from_slice(&(specs.len() as u32).to_le_bytes());
        image.extend_from_slice(&crc32fast::hash(&expanded).to_le_bytes());
        image.resize(usize::from(file_hdr_sz), 0xDD);
        image.extend_from_slice(&body);
        Built {
            image,
            expanded,
            runs,
        }
    }

    fn expand(image: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        SparseExpander::new(image)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .read_to_end(&mut out)?;
        Ok(out)
    }

    fn sample() -> Built {
        let raw: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
        build(
            4096,
            &[
                Spec::Raw(raw),
                Spec::DontCare(3),
                Spec::Fill(0xDEAD_BEEF, 2),
                Spec::Crc,
                Spec::Raw(vec![0x5A; 4096]),
            ],
            28,
            12,
        )
    }

    #[test]
    fn is_sparse_checks_the_magic() {
        assert!(is_sparse(&sample().image));
        assert!(is_sparse(&[0x3A, 0xFF, 0x26, 0xED]));
        assert!(!is_sparse(&[0x3A, 0xFF, 0x26]));
        assert!(!is_sparse(b"ANDROID!"));
    }

    #[test]
    fn chunks_stream_in_order_with_offsets() {
        let b = sample();
        let mut r = SparseReader::new(b.image.as_slice()).unwrap();
        assert_eq!(r.header().total_blks, 8);
        assert_eq!(r.header().output_bytes(), 8 * 4096);
        let mut seen = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            let what = match c.kind {
                ChunkKind::Raw(mut d) => {
                    assert_eq!(d.remaining(), c.blocks * 4096);
                    // Read only part; the rest is skipped by next_chunk.
                    let mut first = [0u8; 10];
                    d.read_exact(&mut first).unwrap();
                    format!("raw@{}", d.data_offset())
                }
                ChunkKind::Fill(v) => format!("fill {v:#x}"),
                ChunkKind::DontCare => "dontcare".into(),
                ChunkKind::Crc32(_) => "crc".into(),
            };
            seen.push((c.index, c.out_offset_blocks, c.blocks, what));
        }
        assert_eq!(
            seen,
            vec![
                (1, 0, 2, "raw@40".to_string()),
                (2, 2, 3, "dontcare".into()),
                (3, 5, 2, "fill 0xdeadbeef".into()),
                (4, 7, 0, "crc".into()),
                (5, 7, 1, format!("raw@{}", 40 + 8192 + 12 + 16 + 16 + 12)),
            ]
        );
        assert_eq!(r.crc_so_far(), crc32fast::hash(&b.expanded));
        assert_eq!(r.image_checksum_matches(), Some(true));
        assert!(r.next_chunk().unwrap().is_none());
    }

    #[test]
    fn expander_and_layouts_agree_with_the_builder() {
        let b = sample();
        assert_eq!(expand(&b.image).unwrap(), b.expanded);
        let streamed = SparseReader::new(b.image.as_slice())
            .unwrap()
            .runs()
            .unwrap();
        let seeked = read_layout(Cursor::new(&b.image)).unwrap();
        assert_eq!(streamed.runs, b.runs);
        assert_eq!(seeked, streamed);
        assert_eq!(seeked.programmed_bytes(), 5 * 4096);
        assert_eq!(seeked.runs[1].sectors(4096, 512), Some((40, 16)));
        assert_eq!(
            Run {
                start_block: 1,
                blocks: 1,
                kind: RunKind::Fill(0)
            }
            .sectors(512, 4096),
            None
        );
    }

    #[test]
    fn larger_header_sizes_are_skipped() {
        let raw = vec![7u8; 1024];
        let b = build(512, &[Spec::Raw(raw), Spec::Fill(1, 1), Spec::Crc], 40, 20);
        assert_eq!(expand(&b.image).unwrap(), b.expanded);
        assert_eq!(read_layout(Cursor::new(&b.image)).unwrap().runs, b.runs);
    }

    #[test]
    fn crc_mismatch_is_an_error() {
        let b = build(4, &[Spec::Raw(vec![1, 2, 3, 4]), Spec::BadCrc], 28, 12);
        let mut r = SparseReader::new(b.image.as_slice()).unwrap();
        assert!(r.next_chunk().unwrap().is_some());
        assert!(matches!(
            r.next_chunk(),
            Err(SparseError::CrcMismatch { index: 2, .. })
        ));
        assert!(matches!(r.next_chunk(), Err(SparseError::Stopped)));
        let e = expand(&b.image).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // The headers-only layout does not read the data, so it cannot see the CRC.
        assert!(read_layout(Cursor::new(&b.image)).is_ok());
    }

    #[test]
    fn huge_dont_care_and_fill_are_hashed_quickly_and_correctly() {
        // 768 MiB of DONT_CARE plus a 256 MiB fill, then a CRC chunk computed independently.
        let blk = 4096u32;
        let dc_blocks = 3 * 65_536u32;
        let fill_blocks = 65_536u32;
        let mut reference = crc32fast::Hasher::new();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..((u64::from(dc_blocks) * u64::from(blk)) >> 20) {
            reference.update(&zeros);
        }
        let ones: Vec<u8> = std::iter::repeat_n([1u8, 2, 3, 4], 1 << 18)
            .flatten()
            .collect();
        for _ in 0..((u64::from(fill_blocks) * u64::from(blk)) >> 20) {
            reference.update(&ones);
        }
        let expected = reference.finalize();
        let mut h = crc32fast::Hasher::new();
        crc_repeat(&mut h, [0; 4], u64::from(dc_blocks) * u64::from(blk));
        crc_repeat(
            &mut h,
            [1, 2, 3, 4],
            u64::from(fill_blocks) * u64::from(blk),
        );
        assert_eq!(h.finalize(), expected);
        // Odd lengths around the segment size.
        for len in [4u64, 65532, 65536, 65540, 3 * 65536 + 12] {
            let mut h = crc32fast::Hasher::new();
            crc_repeat(&mut h, [9, 8, 7, 6], len);
            let bytes: Vec<u8> = std::iter::repeat_n([9u8, 8, 7, 6], len as usize / 4)
                .flatten()
                .collect();
            assert_eq!(h.finalize(), crc32fast::hash(&bytes), "{len}");
        }
    }

    fn header_bytes(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut img = build(4096, &[Spec::DontCare(1)], 28, 12).image;
        f(&mut img);
        img
    }

    #[test]
    fn header_problems_are_refused() {
        let e = |img: Vec<u8>| SparseReader::new(img.as_slice()).unwrap_err();
        assert!(matches!(e(b"ANDROID!".to_vec()), SparseError::BadMagic(_)));
        assert!(matches!(e(vec![0x3A, 0xFF]), SparseError::Truncated { .. }));
        assert!(matches!(
            e(header_bytes(|b| b[4] = 2)),
            SparseError::UnsupportedVersion { major: 2, .. }
        ));
        // Minor versions above 0 are fine.
        assert!(SparseReader::new(header_bytes(|b| b[6] = 9).as_slice()).is_ok());
        assert!(matches!(
            e(header_bytes(|b| b[8] = 20)),
            SparseError::BadHeaderSize {
                field: "file_hdr_sz",
                ..
            }
        ));
        assert!(matches!(
            e(header_bytes(|b| b[10] = 8)),
            SparseError::BadHeaderSize {
                field: "chunk_hdr_sz",
                ..
            }
        ));
        for bad in [0u32, 4098, 64 * 1024 * 1024, u32::MAX - 3] {
            assert!(matches!(
                e(header_bytes(
                    |b| b[12..16].copy_from_slice(&bad.to_le_bytes())
                )),
                SparseError::BadBlockSize(_)
            ));
        }
        let msg = crate::Error::from(e(b"ANDROID!".to_vec())).to_string();
        assert!(msg.contains("not an Android sparse image"), "{msg}");
    }

    #[test]
    fn chunk_problems_are_refused() {
        let walk = |img: &[u8]| -> Result<(), SparseError> {
            let mut r = SparseReader::new(img)?;
            while r.next_chunk()?.is_some() {}
            Ok(())
        };
        let good = build(4, &[Spec::Raw(vec![1; 8]), Spec::Fill(3, 2)], 28, 12).image;
        walk(&good).unwrap();
        // Unknown type.
        let mut b = good.clone();
        b[28] = 0x00;
        assert!(matches!(
            walk(&b),
            Err(SparseError::UnknownChunk { index: 1, .. })
        ));
        // RAW total_sz disagreeing with chunk_sz × blk_sz.
        let mut b = good.clone();
        b[36] = 99;
        assert!(matches!(
            walk(&b),
            Err(SparseError::BadChunkSize { index: 1, .. })
        ));
        // A chunk running past total_blks.
        let mut b = good.clone();
        b[16] = 3;
        assert!(matches!(
            walk(&b),
            Err(SparseError::PastEnd { index: 2, .. })
        ));
        // Blocks that do not add up to total_blks.
        let mut b = good.clone();
        b[16] = 9;
        assert!(matches!(
            walk(&b),
            Err(SparseError::BlockCountMismatch {
                blocks: 4,
                total_blks: 9
            })
        ));
        assert!(matches!(
            read_layout(Cursor::new(&b)),
            Err(SparseError::BlockCountMismatch { .. })
        ));
        // Fewer chunks than declared: the input ends.
        let mut b = good.clone();
        b[20] = 3;
        assert!(matches!(walk(&b), Err(SparseError::Truncated { .. })));
        // Truncated RAW data, both when skipped and when read.
        let short = &good[..good.len() - 20];
        assert!(matches!(walk(short), Err(SparseError::Truncated { .. })));
        assert_eq!(
            expand(short).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(matches!(
            read_layout(Cursor::new(short)),
            Err(SparseError::Truncated { .. })
        ));
        // A RAW chunk whose size overflows the u32 total_sz can never validate.
        let mut b = good.clone();
        b[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(walk(&b), Err(SparseError::BadChunkSize { .. })));
        // CRC32 chunks cover no blocks.
        let mut b = build(4, &[Spec::Crc], 28, 12).image;
        b[32] = 1;
        b[16] = 1;
        assert!(matches!(walk(&b), Err(SparseError::BadCrcChunk { .. })));
    }

    #[test]
    fn a_large_image_streams_without_loading() {
        // 512 MiB of output from a few KiB of input: only FILL and DONT_CARE.
        let b = build(
            4096,
            &[
                Spec::Fill(0xFFFF_FFFF, 65536),
                Spec::DontCare(65536),
                Spec::Crc,
            ],
            28,
            12,
        );
        assert!(b.image.len() < 200);
        let mut r = SparseReader::new(b.image.as_slice()).unwrap();
        let mut n = 0;
        while r.next_chunk().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
        let mut h = crc32fast::Hasher::new();
        let mut total = 0u64;
        let mut ex = SparseExpander::new(b.image.as_slice()).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = ex.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            total += k as u64;
        }
        assert_eq!(total, 512 << 20);
        assert_eq!(h.finalize(), crc32fast::hash(&b.expanded));
        assert_eq!(ex.sparse_reader().image_checksum_matches(), Some(true));
    }

    fn spec_strategy() -> impl Strategy<Value = Spec> {
        prop_oneof![
            (1usize..4, any::<u8>()).prop_map(|(n, seed)| {
                Spec::Raw(
                    (0..n * 16)
                        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                        .collect(),
                )
            }),
            (any::<u32>(), 0u32..5).prop_map(|(v, n)| Spec::Fill(v, n)),
            (0u32..5).prop_map(Spec::DontCare),
            Just(Spec::Crc),
        ]
    }

    proptest! {
        #[test]
        fn generated_images_expand_to_the_expected_bytes(
            specs in proptest::collection::vec(spec_strategy(), 0..12),
            file_pad in 0u16..8,
            chunk_pad in 0u16..8,
        ) {
            let b = build(16, &specs, 28 + file_pad * 4, 12 + chunk_pad);
            prop_assert_eq!(expand(&b.image).unwrap(), b.expanded.clone());
            let layout = SparseReader::new(b.image.as_slice()).unwrap().runs().unwrap();
            prop_assert_eq!(&layout.runs, &b.runs);
            prop_assert_eq!(read_layout(Cursor::new(&b.image)).unwrap(), layout);
            // Small reads give the same bytes.
            let mut ex = SparseExpander::new(b.image.as_slice()).unwrap();
            let mut out = Vec::new();
            let mut buf = [0u8; 3];
            loop {
                let k = ex.read(&mut buf).unwrap();
                if k == 0 { break; }
                out.extend_from_slice(&buf[..k]);
            }
            prop_assert_eq!(out, b.expanded);
        }

        #[test]
        fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512), with_header in any::<bool>()) {
            let bytes = if with_header {
                // A valid header whose block and chunk totals come from the random bytes, so
                // the chunk parser sees random chunk headers.
                let mut h = build(4, &[], 28, 12).image;
                for (dst, src) in h[16..24].iter_mut().zip(&tail) {
                    *dst = *src;
                }
                h.extend_from_slice(&tail);
                h
            } else {
                tail
            };
            if let Ok(mut r) = SparseReader::new(bytes.as_slice()) {
                let mut guard = 0;
                while let Ok(Some(c)) = r.next_chunk() {
                    if let ChunkKind::Raw(mut d) = c.kind {
                        let mut sink = Vec::new();
                        let _ = (&mut d).take(4096).read_to_end(&mut sink);
                    }
                    guard += 1;
                    prop_assert!(guard <= bytes.len());
                }
            }
            let _ = expand(&bytes);
            if let Ok(layout) = read_layout(Cursor::new(&bytes)) {
                // Every run needs at least one 12-byte chunk header in the input.
                prop_assert!(layout.runs.len() * 12 <= bytes.len());
            }
        }
    }
}
