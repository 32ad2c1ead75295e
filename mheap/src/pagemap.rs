//! The page map: from any address to the span that holds it, in O(1).
//!
//! A two-level radix tree over 48-bit addresses, as Go's arena map:
//!
//! ```text
//! addr:  | 8 bits: L1 | 14 bits: L2 | 13 bits: page in chunk | 13 bits |
//!        47         40            26                         13        0
//! ```
//!
//! The leaves are [`ChunkMeta`]s, one per 64 MiB chunk of address space that
//! holds heap pages: a span pointer per page, three page bitmaps used by the
//! heap (which pages are free, which are released to the OS, which may hold
//! non-zero bytes) and the scavenger's idle record of each 2 MiB block
//! (`scavenge.rs`). L1 lives inside the heap (2 KiB); L2 nodes (128 KiB
//! of address space, of which a program touches the page or two its chunks'
//! entries fall in) and chunks (~67 KiB each, 0.1% of the memory they
//! describe) come from the metadata arena and are never freed. The split
//! keeps L1 small because the heap is a `static` with non-zero fields, so
//! it lives in the executable's data segment, which the kernel maps whole
//! (fault-around) on the first read: every KiB there is resident in every
//! process, while an L2 node's untouched pages cost nothing. (11/11 bits
//! put 14 KiB more in that segment.)
//!
//! # Synchronisation
//!
//! The tree's pointers and the span entries are atomics: written under the
//! heap lock (Release), read by anyone without it (Acquire), so
//! [`PageMap::span_at`] never takes the lock. The bitmaps and block records
//! are read and written only under the heap lock.

use crate::meta::MetaArena;
use crate::scavenge::{BLOCKS_PER_CHUNK, BlockMeta};
use crate::source::{PageSource, PageSourceError};
use crate::span::Span;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};
use sizeclass::PAGE_SHIFT;

/// Bits of address the map covers; higher addresses are never ours.
pub(crate) const ADDR_BITS: usize = 48;
/// log2 of the bytes one [`ChunkMeta`] describes (64 MiB).
pub(crate) const CHUNK_SHIFT: usize = 26;
/// Pages per chunk.
pub(crate) const PAGES_PER_CHUNK: usize = 1 << (CHUNK_SHIFT - PAGE_SHIFT);
const WORDS: usize = PAGES_PER_CHUNK / 64;
const L2_BITS: usize = 14;
const L1_BITS: usize = ADDR_BITS - CHUNK_SHIFT - L2_BITS;

/// A page bitmap of one chunk.
pub(crate) type Bits = [u64; WORDS];

/// The metadata of one 64 MiB chunk of address space.
///
/// Invariants: `spans[i]` is null, or points to the span record that holds
/// page `i` (see `Span`'s invariants for which pages of a span map to it).
/// `free[i]` is set exactly when page `i` belongs to a free span of the
/// heap (never for pages outside the heap's regions); `released[i]` is set
/// only for free pages (and pages outside the regions).
pub(crate) struct ChunkMeta {
    spans: [AtomicPtr<Span>; PAGES_PER_CHUNK],
    /// Page is in a free span; heap lock.
    pub(crate) free: UnsafeCell<Bits>,
    /// Page is Released or never committed (not backed); heap lock.
    pub(crate) released: UnsafeCell<Bits>,
    /// Page may hold non-zero bytes; heap lock.
    pub(crate) dirty: UnsafeCell<Bits>,
    /// The idle record of each 2 MiB block of the chunk; heap lock.
    pub(crate) blocks: UnsafeCell<[BlockMeta; BLOCKS_PER_CHUNK]>,
}

// SAFETY: `spans` are atomics; the bitmaps and block records are only
// accessed under the heap lock (see the module docs).
unsafe impl Sync for ChunkMeta {}

struct L2Node {
    chunks: [AtomicPtr<ChunkMeta>; 1 << L2_BITS],
}

/// The two-level page map. See the module docs.
pub(crate) struct PageMap {
    l1: [AtomicPtr<L2Node>; 1 << L1_BITS],
}

impl PageMap {
    pub(crate) const fn new() -> Self {
        Self {
            l1: [const { AtomicPtr::new(ptr::null_mut()) }; 1 << L1_BITS],
        }
    }

    /// The chunk holding `addr`, if the heap registered one. Lock-free.
    #[inline]
    pub(crate) fn chunk(&self, addr: usize) -> Option<&ChunkMeta> {
        if addr >> ADDR_BITS != 0 {
            return None;
        }
        let l2 = self.l1[addr >> (CHUNK_SHIFT + L2_BITS)].load(Ordering::Acquire);
        if l2.is_null() {
            return None;
        }
        // SAFETY: L2 nodes are published with Release after being zeroed
        // and are never freed.
        let l2 = unsafe { &*l2 };
        let chunk = l2.chunks[(addr >> CHUNK_SHIFT) & ((1 << L2_BITS) - 1)].load(Ordering::Acquire);
        // SAFETY: chunks are published with Release and never freed.
        unsafe { chunk.as_ref() }
    }

    /// The span record the page of `addr` maps to, or null. Lock-free.
    #[inline]
    pub(crate) fn span_at(&self, addr: usize) -> *mut Span {
        match self.chunk(addr) {
            Some(c) => c.spans[page_in_chunk(addr)].load(Ordering::Acquire),
            None => ptr::null_mut(),
        }
    }

    /// The span record page `addr` maps to, without any check: three
    /// dependent loads.
    ///
    /// # Safety
    ///
    /// `addr` lies in a page whose chunk the heap registered (any page of a
    /// span it handed out and that is still live).
    #[inline(always)]
    pub(crate) unsafe fn span_at_unchecked(&self, addr: usize) -> *mut Span {
        let l2 = self.l1[addr >> (CHUNK_SHIFT + L2_BITS)].load(Ordering::Acquire);
        // SAFETY: the chunk is registered (caller), so its L2 node and
        // chunk exist and are never freed.
        unsafe {
            let chunk =
                (*l2).chunks[(addr >> CHUNK_SHIFT) & ((1 << L2_BITS) - 1)].load(Ordering::Acquire);
            (*chunk).spans[page_in_chunk(addr)].load(Ordering::Acquire)
        }
    }

    /// Makes sure every chunk overlapping `start..end` exists, allocating
    /// L2 nodes and chunks from `arena`. Heap lock held.
    pub(crate) fn ensure_locked<S: PageSource>(
        &self,
        start: usize,
        end: usize,
        arena: &mut MetaArena,
        source: &mut S,
    ) -> Result<(), PageSourceError> {
        debug_assert!(start < end && (end - 1) >> ADDR_BITS == 0);
        let mut c = start >> CHUNK_SHIFT;
        while c <= (end - 1) >> CHUNK_SHIFT {
            let addr = c << CHUNK_SHIFT;
            let slot = &self.l1[addr >> (CHUNK_SHIFT + L2_BITS)];
            let mut l2 = slot.load(Ordering::Acquire);
            if l2.is_null() {
                l2 = arena
                    .alloc(source, size_of::<L2Node>(), align_of::<L2Node>())?
                    .as_ptr()
                    .cast();
                slot.store(l2, Ordering::Release);
            }
            // SAFETY: non-null L2 nodes are valid forever (see `chunk`).
            let cslot = unsafe { &(*l2).chunks[c & ((1 << L2_BITS) - 1)] };
            if cslot.load(Ordering::Acquire).is_null() {
                let meta = arena
                    .alloc(source, size_of::<ChunkMeta>(), align_of::<ChunkMeta>())?
                    .as_ptr()
                    .cast::<ChunkMeta>();
                // Zeroed memory is a valid empty chunk (null entries, clear
                // bitmaps).
                cslot.store(meta, Ordering::Release);
            }
            c += 1;
        }
        Ok(())
    }

    /// Points page `addr` at `span` (null to clear). Heap lock held; the
    /// chunk exists.
    #[inline]
    pub(crate) fn set_locked(&self, addr: usize, span: *mut Span) {
        let chunk = self.chunk(addr).expect("page map chunk missing");
        chunk.spans[page_in_chunk(addr)].store(span, Ordering::Release);
    }

    /// Points every page of `start .. start + npages` at `span`. Heap lock
    /// held; the chunks exist.
    #[inline]
    pub(crate) fn set_range_locked(&self, start: usize, npages: usize, span: *mut Span) {
        self.for_each_chunk(start, npages, |chunk, lo, hi| {
            for e in &chunk.spans[lo..hi] {
                e.store(span, Ordering::Release);
            }
        });
    }

    /// Clears the entries of the pages of `start .. start + npages`, just
    /// taken out of use, and marks them free. Heap lock held; the chunks
    /// exist.
    #[inline]
    pub(crate) fn free_range_locked(&self, start: usize, npages: usize) {
        self.for_each_chunk(start, npages, |chunk, lo, hi| {
            for e in &chunk.spans[lo..hi] {
                e.store(ptr::null_mut(), Ordering::Release);
            }
            // SAFETY: the bitmaps are guarded by the heap lock (caller).
            set_bits(unsafe { &mut *chunk.free.get() }, lo, hi);
        });
    }

    /// Calls `f(chunk, lo, hi)` for the page indices `lo..hi` of each chunk
    /// that `start .. start + npages` overlaps, in address order.
    #[inline]
    pub(crate) fn for_each_chunk(
        &self,
        start: usize,
        npages: usize,
        mut f: impl FnMut(&ChunkMeta, usize, usize),
    ) {
        let mut page = start >> PAGE_SHIFT;
        let end = page + npages;
        while page < end {
            let idx = page % PAGES_PER_CHUNK;
            let n = (PAGES_PER_CHUNK - idx).min(end - page);
            let chunk = self
                .chunk(page << PAGE_SHIFT)
                .expect("page map chunk missing");
            f(chunk, idx, idx + n);
            page += n;
        }
    }
}

#[inline]
fn page_in_chunk(addr: usize) -> usize {
    (addr >> PAGE_SHIFT) & (PAGES_PER_CHUNK - 1)
}

/// Sets bits `lo..hi`.
#[inline]
pub(crate) fn set_bits(bits: &mut Bits, lo: usize, hi: usize) {
    for_words(lo, hi, |w, mask| bits[w] |= mask);
}

/// Clears bits `lo..hi`.
#[inline]
pub(crate) fn clear_bits(bits: &mut Bits, lo: usize, hi: usize) {
    for_words(lo, hi, |w, mask| bits[w] &= !mask);
}

/// Counts the set bits in `lo..hi`.
#[inline]
pub(crate) fn count_bits(bits: &Bits, lo: usize, hi: usize) -> usize {
    let mut n = 0;
    for_words(lo, hi, |w, mask| {
        n += (bits[w] & mask).count_ones() as usize
    });
    n
}

/// The highest index in `lo..hi` whose bit is set in the bitmap whose
/// `w`-th word is `word(w)`, if any (for combinations of bitmaps, such as
/// free and not released).
#[inline]
pub(crate) fn last_set(lo: usize, hi: usize, word: impl Fn(usize) -> u64) -> Option<usize> {
    let mut i = hi;
    while i > lo {
        let w = (i - 1) / 64;
        let base = w * 64;
        let from = lo.max(base) - base;
        let to = i - base;
        let mask = if to == 64 { !0 } else { (1u64 << to) - 1 } & !((1u64 << from) - 1);
        let m = word(w) & mask;
        if m != 0 {
            return Some(base + 63 - m.leading_zeros() as usize);
        }
        i = base + from;
    }
    None
}

/// Calls `f(word, mask)` for each word that `lo..hi` touches, with the mask
/// of the bits of the range inside it.
#[inline]
fn for_words(lo: usize, hi: usize, mut f: impl FnMut(usize, u64)) {
    let mut i = lo;
    while i < hi {
        let w = i / 64;
        let b = i % 64;
        let n = (64 - b).min(hi - i);
        let mask = if n == 64 { !0 } else { ((1u64 << n) - 1) << b };
        f(w, mask);
        i += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_ranges() {
        let mut b: Bits = [0; WORDS];
        set_bits(&mut b, 3, 200);
        assert_eq!(count_bits(&b, 0, PAGES_PER_CHUNK), 197);
        assert_eq!(count_bits(&b, 0, 3), 0);
        assert_eq!(count_bits(&b, 64, 128), 64);
        clear_bits(&mut b, 10, 130);
        assert_eq!(count_bits(&b, 0, PAGES_PER_CHUNK), 197 - 120);
        assert_eq!(count_bits(&b, 3, 10), 7);
        assert_eq!(count_bits(&b, 130, 200), 70);
        set_bits(&mut b, 0, PAGES_PER_CHUNK);
        assert_eq!(count_bits(&b, 0, PAGES_PER_CHUNK), PAGES_PER_CHUNK);
    }

    /// The highest index in `lo..hi` whose bit equals `value`.
    fn last_bit(bits: &Bits, lo: usize, hi: usize, value: bool) -> Option<usize> {
        last_set(lo, hi, |w| if value { bits[w] } else { !bits[w] })
    }

    #[test]
    fn last_set_finds_the_highest_match() {
        let mut b: Bits = [0; WORDS];
        assert_eq!(last_bit(&b, 0, PAGES_PER_CHUNK, true), None);
        assert_eq!(
            last_bit(&b, 0, PAGES_PER_CHUNK, false),
            Some(PAGES_PER_CHUNK - 1)
        );
        set_bits(&mut b, 5, 70);
        set_bits(&mut b, 130, 131);
        assert_eq!(last_bit(&b, 0, PAGES_PER_CHUNK, true), Some(130));
        assert_eq!(last_bit(&b, 0, 130, true), Some(69));
        assert_eq!(last_bit(&b, 6, 69, true), Some(68));
        assert_eq!(last_bit(&b, 70, 130, true), None);
        assert_eq!(last_bit(&b, 0, 5, true), None);
        assert_eq!(last_bit(&b, 5, 70, false), None);
        assert_eq!(last_bit(&b, 5, 71, false), Some(70));
        assert_eq!(last_bit(&b, 0, 6, false), Some(4));
        assert_eq!(last_bit(&b, 64, 64, true), None);
        // Exhaustive on a small pattern against a plain loop.
        let mut b: Bits = [0; WORDS];
        for i in (0..300).filter(|i| (i * 7 + i / 13) % 5 < 2) {
            set_bits(&mut b, i, i + 1);
        }
        for lo in 0..200 {
            for hi in lo..260 {
                for v in [false, true] {
                    let want = (lo..hi)
                        .rev()
                        .find(|&i| (count_bits(&b, i, i + 1) == 1) == v);
                    assert_eq!(last_bit(&b, lo, hi, v), want, "{lo}..{hi} {v}");
                }
            }
        }
    }

    #[test]
    fn empty_map_answers_nothing() {
        let map = PageMap::new();
        for addr in [0usize, 1 << 20, 0x7fff_ffff_f000, usize::MAX] {
            assert!(map.span_at(addr).is_null());
            assert!(map.chunk(addr).is_none());
        }
    }
}
