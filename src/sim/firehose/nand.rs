//! Emulated raw NAND as a Quectel NAND Firehose programmer presents it: a Firehose sector is one
//! page; erase works on blocks; a page must be erased before it is programmed again; factory bad
//! blocks are skipped.
//!
//! Bad-block skipping: a program/erase/read of `[start_sector, last_sector]` maps the request's
//! logical blocks, in order, onto the good physical blocks of that range (the reason Quectel's
//! XML carries `last_sector`). Without `last_sector` the range runs to the end of the device.
//! Reading a range back with the same start and `last_sector` therefore returns what was written.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::sparse::SparseStore;

/// NAND geometry. A Firehose "sector" is one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NandGeometry {
    pub page_size: u32,
    pub pages_per_block: u32,
    pub num_blocks: u32,
}

impl NandGeometry {
    pub fn block_bytes(&self) -> u32 {
        self.page_size * self.pages_per_block
    }
    pub fn total_pages(&self) -> u64 {
        u64::from(self.num_blocks) * u64::from(self.pages_per_block)
    }
    pub fn total_bytes(&self) -> u64 {
        self.total_pages() * u64::from(self.page_size)
    }
}

/// Why a NAND operation was refused. `Display` is the programmer's log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NandError {
    #[error("start_sector unaligned")]
    Unaligned { start: u64, pages_per_block: u32 },
    #[error("Block erase request exceeding total number of blocks")]
    EraseExceeds { end_block: u64, total_blocks: u32 },
    #[error("ERROR: Request for sectors {start}..{end} exceeding total number of sectors {total}")]
    Exceeds { start: u64, end: u64, total: u64 },
    #[error("ERROR: last_sector {last} is before start_sector {start}")]
    LastBeforeStart { start: u64, last: u64 },
    #[error("ERROR: Too many bad blocks between sector {start} and {last}: {bad} bad, no room for {needed} blocks")]
    BadBlocksExhaust {
        start: u64,
        last: u64,
        bad: u64,
        needed: u64,
    },
    #[error("ERROR: NAND page {page} (block {block}) is not erased; it was programmed since the last erase of its block")]
    NotErased { page: u64, block: u64 },
}

/// The physical blocks a request maps to, in logical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NandPlan {
    /// Page offset of the request's first page within its first block.
    pub first_offset: u32,
    /// Physical block for each logical block the request touches (may be shorter than needed for
    /// lenient plans: the rest of the request is unmapped).
    pub blocks: Vec<u32>,
    /// Bad blocks skipped while mapping.
    pub skipped: Vec<u32>,
    pub pages: u64,
}

impl NandPlan {
    /// Physical page of the request's `k`-th page, if mapped.
    pub fn phys_page(&self, k: u64, ppb: u32) -> Option<u64> {
        let l = u64::from(self.first_offset) + k;
        let b = *self.blocks.get((l / u64::from(ppb)) as usize)?;
        Some(u64::from(b) * u64::from(ppb) + l % u64::from(ppb))
    }
}

#[derive(Clone)]
pub struct Nand {
    geo: NandGeometry,
    store: SparseStore,
    bad: BTreeSet<u32>,
    /// One bit per page: programmed since the last erase of its block.
    programmed: Vec<u64>,
}

impl std::fmt::Debug for Nand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nand")
            .field("geometry", &self.geo)
            .field("store", &self.store)
            .field("bad_blocks", &self.bad)
            .finish()
    }
}

impl Nand {
    pub fn new(geo: NandGeometry, bad_blocks: impl IntoIterator<Item = u32>) -> Self {
        let pages = geo.total_pages();
        Nand {
            geo,
            store: SparseStore::new(geo.total_bytes(), 0xFF),
            bad: bad_blocks
                .into_iter()
                .filter(|b| *b != 0 && *b < geo.num_blocks)
                .collect(),
            programmed: vec![0; pages.div_ceil(64) as usize],
        }
    }

    pub fn geometry(&self) -> NandGeometry {
        self.geo
    }

    pub fn bad_blocks(&self) -> Vec<u32> {
        self.bad.iter().copied().collect()
    }

    pub fn is_bad(&self, block: u32) -> bool {
        self.bad.contains(&block)
    }

    pub fn allocated_bytes(&self) -> u64 {
        self.store.allocated_bytes()
    }

    fn is_programmed(&self, page: u64) -> bool {
        self.programmed[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    fn set_programmed(&mut self, page: u64, on: bool) {
        let w = &mut self.programmed[(page / 64) as usize];
        if on {
            *w |= 1 << (page % 64);
        } else {
            *w &= !(1 << (page % 64));
        }
    }

    /// Map `count` pages from `start` onto good blocks of `[start, last]` (last defaults to the
    /// device end). `lenient` returns a partial plan instead of failing when bad blocks exhaust
    /// the range.
    pub fn plan(
        &self,
        start: u64,
        count: u64,
        last: Option<u64>,
        lenient: bool,
    ) -> Result<NandPlan, NandError> {
        let total = self.geo.total_pages();
        let ppb = u64::from(self.geo.pages_per_block);
        let end = start.saturating_add(count);
        if end > total {
            return Err(NandError::Exceeds { start, end, total });
        }
        let last = match last {
            Some(l) if l < start => return Err(NandError::LastBeforeStart { start, last: l }),
            Some(l) if l >= total => {
                return Err(NandError::Exceeds {
                    start,
                    end: l.saturating_add(1),
                    total,
                })
            }
            Some(l) => l,
            None => total - 1,
        };
        let first_offset = (start % ppb) as u32;
        let needed = (u64::from(first_offset) + count).div_ceil(ppb);
        let mut blocks = Vec::with_capacity(needed as usize);
        let mut skipped = Vec::new();
        let mut b = start / ppb;
        let last_block = last / ppb;
        while (blocks.len() as u64) < needed && b <= last_block {
            if self.bad.contains(&(b as u32)) {
                skipped.push(b as u32);
            } else {
                blocks.push(b as u32);
            }
            b += 1;
        }
        let plan = NandPlan {
            first_offset,
            blocks,
            skipped,
            pages: count,
        };
        // The last mapped page must not pass last_sector.
        let fits = (plan.blocks.len() as u64) == needed
            && (count == 0
                || plan
                    .phys_page(count - 1, self.geo.pages_per_block)
                    .is_some_and(|p| p <= last));
        if !fits && !lenient {
            return Err(NandError::BadBlocksExhaust {
                start,
                last,
                bad: plan.skipped.len() as u64,
                needed,
            });
        }
        Ok(plan)
    }

    /// Plan a program: block-aligned start, in range, every target page erased.
    pub fn plan_program(
        &self,
        start: u64,
        count: u64,
        last: Option<u64>,
    ) -> Result<NandPlan, NandError> {
        let ppb = self.geo.pages_per_block;
        if start % u64::from(ppb) != 0 {
            return Err(NandError::Unaligned {
                start,
                pages_per_block: ppb,
            });
        }
        let plan = self.plan(start, count, last, false)?;
        for k in 0..count {
            let page = plan.phys_page(k, ppb).unwrap_or(0);
            if self.is_programmed(page) {
                return Err(NandError::NotErased {
                    page,
                    block: page / u64::from(ppb),
                });
            }
        }
        Ok(plan)
    }

    /// Write pages `first..first+n` of a planned request (`data` is n whole pages). Pages are
    /// marked programmed.
    pub fn program_pages(&mut self, plan: &NandPlan, first: u64, data: &[u8]) {
        let ps = u64::from(self.geo.page_size);
        let ppb = self.geo.pages_per_block;
        for (i, page_data) in data.chunks(ps as usize).enumerate() {
            let Some(page) = plan.phys_page(first + i as u64, ppb) else {
                continue;
            };
            self.store.write(page * ps, page_data);
            self.set_programmed(page, true);
        }
    }

    /// Erase `count` pages' worth of blocks from block-aligned `start` over good blocks of
    /// `[start, last]`. Bad blocks are skipped; a range with fewer good blocks than requested
    /// erases what it has (you cannot erase more than the physical range). Returns the plan.
    pub fn erase(
        &mut self,
        start: u64,
        count: u64,
        last: Option<u64>,
    ) -> Result<NandPlan, NandError> {
        let ppb = u64::from(self.geo.pages_per_block);
        if start % ppb != 0 {
            return Err(NandError::Unaligned {
                start,
                pages_per_block: self.geo.pages_per_block,
            });
        }
        let end_block = (start + count.min(u64::MAX - start)).div_ceil(ppb);
        if end_block > u64::from(self.geo.num_blocks) {
            return Err(NandError::EraseExceeds {
                end_block,
                total_blocks: self.geo.num_blocks,
            });
        }
        let count = count.div_ceil(ppb) * ppb;
        let plan = self.plan(start, count, last, true)?;
        let bb = u64::from(self.geo.block_bytes());
        for &b in &plan.blocks {
            self.store.erase(u64::from(b) * bb, bb);
            for pg in u64::from(b) * ppb..(u64::from(b) + 1) * ppb {
                self.set_programmed(pg, false);
            }
        }
        Ok(plan)
    }

    /// Read pages `first..first+n` of a planned request into `out` (n whole pages). Unmapped
    /// pages (a lenient plan ran out of good blocks) read as erased.
    pub fn read_pages(&self, plan: &NandPlan, first: u64, out: &mut [u8]) {
        let ps = u64::from(self.geo.page_size);
        for (i, chunk) in out.chunks_mut(ps as usize).enumerate() {
            match plan.phys_page(first + i as u64, self.geo.pages_per_block) {
                Some(page) => self.store.read(page * ps, chunk),
                None => chunk.fill(0xFF),
            }
        }
    }

    /// Physical read (no bad-block mapping), for reports and tests.
    pub fn read_physical(&self, byte_offset: u64, out: &mut [u8]) {
        self.store.read(byte_offset, out);
    }

    /// Physical bytes in pieces, for hashing.
    pub fn for_each_piece(&self, byte_offset: u64, len: u64, f: impl FnMut(&[u8])) {
        self.store.for_each_piece(byte_offset, len, f);
    }

    /// Write a page directly (factory contents: SBL stub, MIBIB), marking it programmed.
    pub fn factory_write_page(&mut self, page: u64, data: &[u8]) {
        let ps = u64::from(self.geo.page_size);
        self.store.write(page * ps, data);
        self.set_programmed(page, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEO: NandGeometry = NandGeometry {
        page_size: 4096,
        pages_per_block: 64,
        num_blocks: 64,
    };

    fn pages(n: usize, seed: u8) -> Vec<u8> {
        (0..n * 4096)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn unaligned_and_exceeding_are_refused_with_the_real_messages() {
        let mut n = Nand::new(GEO, []);
        let e = n.plan_program(13, 1, None).unwrap_err();
        assert_eq!(e.to_string(), "start_sector unaligned");
        let e = n.erase(65, 64, None).unwrap_err();
        assert_eq!(e.to_string(), "start_sector unaligned");
        let e = n.erase(64 * 60, 64 * 5, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Block erase request exceeding total number of blocks"
        );
        assert!(matches!(
            n.plan_program(64 * 63, 65, None),
            Err(NandError::Exceeds { .. })
        ));
    }

    #[test]
    fn erase_before_program_is_enforced() {
        let mut n = Nand::new(GEO, []);
        let plan = n.plan_program(64, 2, None).unwrap();
        n.program_pages(&plan, 0, &pages(2, 1));
        let e = n.plan_program(64, 1, None).unwrap_err();
        assert_eq!(e, NandError::NotErased { page: 64, block: 1 });
        n.erase(64, 64, None).unwrap();
        assert!(n.plan_program(64, 64, None).is_ok());
        let mut b = vec![0u8; 4096];
        n.read_physical(64 * 4096, &mut b);
        assert_eq!(b, vec![0xFF; 4096]);
    }

    #[test]
    fn bad_blocks_are_skipped_and_read_back_matches() {
        let mut n = Nand::new(GEO, [3, 5, 0]);
        assert_eq!(n.bad_blocks(), vec![3, 5], "block 0 is never bad");
        // Range blocks 2..=8 (7 blocks, 2 bad): program 5 blocks' worth.
        let (start, last) = (2 * 64, 9 * 64 - 1);
        n.erase(start, 7 * 64, Some(last)).unwrap();
        let data = pages(5 * 64, 9);
        let plan = n.plan_program(start, 5 * 64, Some(last)).unwrap();
        assert_eq!(plan.blocks, vec![2, 4, 6, 7, 8]);
        assert_eq!(plan.skipped, vec![3, 5]);
        n.program_pages(&plan, 0, &data[..64 * 4096]);
        n.program_pages(&plan, 64, &data[64 * 4096..]);
        let rplan = n.plan(start, 5 * 64, Some(last), true).unwrap();
        let mut back = vec![0u8; data.len()];
        n.read_pages(&rplan, 0, &mut back);
        assert_eq!(back, data);
        // The bad blocks were never touched.
        let mut b = vec![0u8; 4096];
        n.read_physical(3 * 64 * 4096, &mut b);
        assert_eq!(b, vec![0xFF; 4096]);
        // One more block does not fit in the range.
        n.erase(start, 7 * 64, Some(last)).unwrap();
        let e = n.plan_program(start, 6 * 64, Some(last)).unwrap_err();
        assert!(e.to_string().contains("Too many bad blocks"), "{e}");
    }
}
