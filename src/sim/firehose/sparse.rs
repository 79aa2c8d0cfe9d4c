//! Sparse in-memory byte store: a device of hundreds of MiB (or a 128 GiB UFS LUN) costs only the
//! chunks that were written. Unwritten bytes read back as the erased pattern (0xFF for NAND,
//! 0x00 for eMMC/UFS).

use std::collections::HashMap;

/// Allocation unit. 256 KiB: one 4K/256K NAND block, 512 eMMC sectors, 64 UFS sectors.
pub const CHUNK: usize = 256 * 1024;

#[derive(Clone)]
pub struct SparseStore {
    len: u64,
    fill: u8,
    chunks: HashMap<u64, Box<[u8]>>,
}

impl std::fmt::Debug for SparseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseStore")
            .field("len", &self.len)
            .field("fill", &self.fill)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl SparseStore {
    pub fn new(len: u64, fill: u8) -> Self {
        SparseStore {
            len,
            fill,
            chunks: HashMap::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The erased pattern.
    pub fn fill(&self) -> u8 {
        self.fill
    }

    /// Bytes of RAM held by written chunks.
    pub fn allocated_bytes(&self) -> u64 {
        self.chunks.len() as u64 * CHUNK as u64
    }

    fn check(&self, offset: u64, len: usize) {
        let end = offset.checked_add(len as u64);
        assert!(
            end.is_some_and(|e| e <= self.len),
            "sparse store access {offset}+{len} beyond {}",
            self.len
        );
    }

    /// Copy `buf.len()` bytes starting at `offset` into `buf`. Callers bound-check first.
    pub fn read(&self, offset: u64, buf: &mut [u8]) {
        self.check(offset, buf.len());
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let idx = pos / CHUNK as u64;
            let within = (pos % CHUNK as u64) as usize;
            let n = (CHUNK - within).min(buf.len() - done);
            match self.chunks.get(&idx) {
                Some(c) => buf[done..done + n].copy_from_slice(&c[within..within + n]),
                None => buf[done..done + n].fill(self.fill),
            }
            done += n;
        }
    }

    /// Write `data` at `offset`. Callers bound-check first.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.check(offset, data.len());
        let fill = self.fill;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let idx = pos / CHUNK as u64;
            let within = (pos % CHUNK as u64) as usize;
            let n = (CHUNK - within).min(data.len() - done);
            let part = &data[done..done + n];
            if !self.chunks.contains_key(&idx) && part.iter().all(|b| *b == fill) {
                // Writing the erased pattern into an unallocated chunk changes nothing.
            } else {
                let c = self
                    .chunks
                    .entry(idx)
                    .or_insert_with(|| vec![fill; CHUNK].into_boxed_slice());
                c[within..within + n].copy_from_slice(part);
            }
            done += n;
        }
    }

    /// Reset `len` bytes at `offset` to the erased pattern, freeing whole chunks.
    pub fn erase(&mut self, offset: u64, len: u64) {
        self.check(offset, 0);
        assert!(offset.saturating_add(len) <= self.len);
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let idx = pos / CHUNK as u64;
            let within = (pos % CHUNK as u64) as usize;
            let n = ((CHUNK - within) as u64).min(end - pos) as usize;
            if n == CHUNK {
                self.chunks.remove(&idx);
            } else if let Some(c) = self.chunks.get_mut(&idx) {
                c[within..within + n].fill(self.fill);
            }
            pos += n as u64;
        }
    }

    /// Feed `len` bytes at `offset` to `f` in pieces of at most one chunk, without copying
    /// written chunks. Unwritten ranges are fed from a shared erased buffer.
    pub fn for_each_piece(&self, offset: u64, len: u64, mut f: impl FnMut(&[u8])) {
        assert!(offset.saturating_add(len) <= self.len);
        let blank = vec![self.fill; CHUNK];
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let idx = pos / CHUNK as u64;
            let within = (pos % CHUNK as u64) as usize;
            let n = ((CHUNK - within) as u64).min(end - pos) as usize;
            match self.chunks.get(&idx) {
                Some(c) => f(&c[within..within + n]),
                None => f(&blank[..n]),
            }
            pos += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_reads_erased_and_writes_cross_chunks() {
        let mut s = SparseStore::new(4 * CHUNK as u64, 0xFF);
        let mut b = vec![0u8; 10];
        s.read(5, &mut b);
        assert_eq!(b, vec![0xFF; 10]);
        let data: Vec<u8> = (0..CHUNK + 100).map(|i| (i % 251) as u8).collect();
        s.write(CHUNK as u64 - 50, &data);
        let mut back = vec![0u8; data.len()];
        s.read(CHUNK as u64 - 50, &mut back);
        assert_eq!(back, data);
        assert_eq!(s.allocated_bytes(), 3 * CHUNK as u64);
        s.erase(0, 2 * CHUNK as u64);
        assert_eq!(s.allocated_bytes(), CHUNK as u64);
        let mut one = [0u8; 1];
        s.read(CHUNK as u64, &mut one);
        assert_eq!(one[0], 0xFF);
        s.read(2 * CHUNK as u64 + 10, &mut one);
        assert_eq!(one[0], data[CHUNK + 60]);
    }

    #[test]
    fn writing_the_fill_pattern_allocates_nothing_and_big_devices_are_cheap() {
        let mut s = SparseStore::new(128 << 30, 0);
        s.write(100 << 30, &vec![0u8; 3 * CHUNK]);
        assert_eq!(s.allocated_bytes(), 0);
        s.write((128 << 30) - 1, &[7]);
        assert_eq!(s.allocated_bytes(), CHUNK as u64);
        let mut total = 0u64;
        s.for_each_piece((128 << 30) - 2 * CHUNK as u64, 2 * CHUNK as u64, |p| {
            total += p.len() as u64
        });
        assert_eq!(total, 2 * CHUNK as u64);
    }
}
