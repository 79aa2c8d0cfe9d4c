//! Hostile sparse images must not make qrescue allocate more than a small bound: the streaming
//! reader allocates nothing per chunk, and the run lists grow only with chunks actually present
//! in the input. A counting global allocator measures the peak heap use around each call (this
//! file is its own test binary, so the allocator does not affect other tests).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use qrescue::package::sparse::{
    read_layout, ChunkKind, SparseExpander, SparseReader, CHUNK_DONT_CARE, CHUNK_FILL, CHUNK_RAW,
    SPARSE_MAGIC,
};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak extra heap bytes while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst).saturating_sub(base)
}

/// Everything qrescue does with an untrusted image: walk the chunks (reading part of each RAW
/// chunk), expand it through a fixed buffer (at most 8 MiB of output), and map it onto runs both
/// ways.
fn exercise(bytes: &[u8]) {
    if let Ok(mut r) = SparseReader::new(bytes) {
        while let Ok(Some(c)) = r.next_chunk() {
            if let ChunkKind::Raw(mut d) = c.kind {
                let mut buf = [0u8; 512];
                let _ = d.read(&mut buf);
            }
        }
    }
    if let Ok(mut ex) = SparseExpander::new(bytes) {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while let Ok(n) = ex.read(&mut buf) {
            if n == 0 || total > 8 << 20 {
                break;
            }
            total += n;
        }
    }
    if let Ok(r) = SparseReader::new(bytes) {
        let _ = r.runs();
    }
    let _ = read_layout(Cursor::new(bytes));
}

fn header(blk_sz: u32, total_blks: u32, total_chunks: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&SPARSE_MAGIC.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&28u16.to_le_bytes());
    h.extend_from_slice(&12u16.to_le_bytes());
    h.extend_from_slice(&blk_sz.to_le_bytes());
    h.extend_from_slice(&total_blks.to_le_bytes());
    h.extend_from_slice(&total_chunks.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

fn chunk(ty: u16, blocks: u32, total: u32) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&ty.to_le_bytes());
    c.extend_from_slice(&0u16.to_le_bytes());
    c.extend_from_slice(&blocks.to_le_bytes());
    c.extend_from_slice(&total.to_le_bytes());
    c
}

/// Bound for an input of `len` bytes: a fixed allowance plus a few words per possible chunk.
fn bound(len: usize) -> usize {
    64 * 1024 + len * 8
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_and_mutated_images_allocate_within_a_bound(
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
        totals in (any::<u32>(), any::<u32>()),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        shape in 0u8..3,
    ) {
        let bytes = match shape {
            // Pure noise.
            0 => tail,
            // A valid header with hostile totals and noise as chunks.
            1 => {
                let mut b = header(4096, totals.0, totals.1);
                b.extend_from_slice(&tail);
                b
            }
            // A valid image of many one-block FILL chunks with a few bytes changed.
            _ => {
                let n = 1 + tail.len() as u32 / 4;
                let mut b = header(4, 2 * n, 2 * n + 1);
                for i in 0..n {
                    b.extend_from_slice(&chunk(CHUNK_FILL, 1, 16));
                    b.extend_from_slice(&i.to_le_bytes());
                    b.extend_from_slice(&chunk(CHUNK_RAW, 1, 16));
                    b.extend_from_slice(&[0xAB; 4]);
                }
                b.extend_from_slice(&chunk(CHUNK_DONT_CARE, 0, 12));
                for (at, v) in &flips {
                    let at = at % b.len();
                    b[at] = *v;
                }
                b
            }
        };
        let len = bytes.len();
        let peak = peak_during(|| exercise(&bytes));
        prop_assert!(peak <= bound(len), "peak {peak} bytes for a {len}-byte input");
    }
}

#[test]
fn the_counter_sees_allocations() {
    let peak = peak_during(|| {
        let v = vec![1u8; 1 << 20];
        assert_eq!(v.len(), 1 << 20);
    });
    assert!(peak >= 1 << 20, "peak {peak}");
    // A valid image with many chunks: the run list is the only allocation, and it is counted.
    let n = 1000u32;
    let mut b = header(4, n, n);
    for i in 0..n {
        b.extend_from_slice(&chunk(CHUNK_FILL, 1, 16));
        b.extend_from_slice(&i.to_le_bytes());
    }
    let peak = peak_during(|| {
        let layout = read_layout(Cursor::new(&b)).unwrap();
        assert_eq!(layout.runs.len(), n as usize);
    });
    assert!(
        peak >= n as usize * 24 && peak <= bound(b.len()),
        "peak {peak}"
    );
}
