//! The index of free spans: finds a fitting free run for any page count.
//!
//! - Spans of 1..=127 pages sit in one list per exact page count, with a
//!   128-bit mask of non-empty lists: a request for `n` pages takes the
//!   first non-empty list at or above `n` with one count-trailing-zeros, in
//!   O(1) whatever the heap's size or fragmentation. Every small-object span
//!   (1 to 10 pages) and most large objects are served here.
//! - Larger spans sit in two-level lists, as TLSF does: one group per power
//!   of two of the page count (128..255, 256..511, …), each split into 16
//!   lists of equal width, with a 64-bit mask of non-empty groups and a
//!   16-bit mask of non-empty lists per group. A request looks at the first
//!   few spans of its own list, else takes the head of the next non-empty
//!   list above it (every span there fits): O(1), never a walk of a list.
//!
//! Why not Go 1.9's treap for large spans, or today's Go radix tree of bitmap
//! summaries: both exist to make page allocation cheap without a lock or
//! over a garbage-collected heap's scavenger state. Behind one leaf lock,
//! segregated lists are simpler and O(1) for the spans that matter; the
//! benchmark `mheap` (span alloc/free of 1, 8, 64, 150 and 1024 pages, and
//! the same with about two thousand free spans of mixed sizes in the index)
//! shows the cost flat as the index grows. (A first version searched the
//! request's whole power-of-two list for the best fit: with ~700 free spans
//! of 128..255 pages a 150-page request took 3.5 µs instead of 0.26 µs.)
//!
//! All of this is guarded by the heap lock.

use crate::pagemap::ADDR_BITS;
use crate::span::Span;
use core::ptr;
use sizeclass::PAGE_SHIFT;

/// Page counts below this have a list each.
pub(crate) const EXACT_BINS: usize = 128;
/// Groups of large lists: one per power of two of a page count up to the
/// longest request the heap takes (`MHeap::alloc` refuses more pages than
/// the address space holds), not one per bit of a word: the bins sit in the
/// heap `static`, whose every byte is resident in every process.
const GROUPS: usize = ADDR_BITS - PAGE_SHIFT + 1;
const _: () = assert!(
    GROUPS <= u64::BITS as usize,
    "group_mask has a bit per group"
);
const SUB_BITS: usize = 4;
const SUBS: usize = 1 << SUB_BITS;
/// How many spans of its own list a large request looks at before it goes
/// to a list above.
const OWN_LIST_PROBES: usize = 4;

/// Invariant: `exact[n]` lists the free spans of exactly `n` pages
/// (`1 <= n < EXACT_BINS`); `large[k][j]` those whose page count `n` has
/// `log2(n) == k >= 7` and `(n >> (k - 4)) & 15 == j`; a mask bit is set iff
/// its list (or, for `group_mask`, some list of the group) is non-empty.
pub(crate) struct FreeBins {
    exact: [*mut Span; EXACT_BINS],
    exact_mask: u128,
    large: [[*mut Span; SUBS]; GROUPS],
    sub_mask: [u16; GROUPS],
    group_mask: u64,
}

#[inline]
fn log2(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

/// The (group, list) of a page count of at least `EXACT_BINS`.
#[inline]
fn large_index(n: usize) -> (usize, usize) {
    let k = log2(n);
    (k, (n >> (k - SUB_BITS)) & (SUBS - 1))
}

/// Which list a span of `n` pages belongs to.
#[derive(Clone, Copy)]
enum Bin {
    Exact(usize),
    Large(usize, usize),
}

impl Bin {
    fn of(n: usize) -> Self {
        if n < EXACT_BINS {
            Bin::Exact(n)
        } else {
            let (k, j) = large_index(n);
            Bin::Large(k, j)
        }
    }
}

impl FreeBins {
    pub(crate) const fn new() -> Self {
        Self {
            exact: [ptr::null_mut(); EXACT_BINS],
            exact_mask: 0,
            large: [[ptr::null_mut(); SUBS]; GROUPS],
            sub_mask: [0; GROUPS],
            group_mask: 0,
        }
    }

    fn head_mut(&mut self, bin: Bin) -> &mut *mut Span {
        match bin {
            Bin::Exact(n) => &mut self.exact[n],
            Bin::Large(k, j) => &mut self.large[k][j],
        }
    }

    fn mark(&mut self, bin: Bin, non_empty: bool) {
        match bin {
            Bin::Exact(n) if non_empty => self.exact_mask |= 1 << n,
            Bin::Exact(n) => self.exact_mask &= !(1 << n),
            Bin::Large(k, j) => {
                if non_empty {
                    self.sub_mask[k] |= 1 << j;
                } else {
                    self.sub_mask[k] &= !(1 << j);
                }
                if self.sub_mask[k] != 0 {
                    self.group_mask |= 1 << k;
                } else {
                    self.group_mask &= !(1 << k);
                }
            }
        }
    }

    /// Links a free span into its list.
    ///
    /// # Safety
    ///
    /// Heap lock held; `s` is a `Free` record linked in no list.
    pub(crate) unsafe fn insert(&mut self, s: *mut Span) {
        // SAFETY: caller's contract: `s` is valid and the lock is held.
        unsafe {
            let bin = Bin::of((*s).npages());
            let head = self.head_mut(bin);
            let old = *head;
            *head = s;
            *(*s).next.get() = old;
            *(*s).prev.get() = ptr::null_mut();
            if !old.is_null() {
                *(*old).prev.get() = s;
            }
            self.mark(bin, true);
        }
    }

    /// Unlinks a free span from its list.
    ///
    /// # Safety
    ///
    /// Heap lock held; `s` is linked in the list of its current page count.
    pub(crate) unsafe fn remove(&mut self, s: *mut Span) {
        // SAFETY: caller's contract.
        unsafe {
            let next = *(*s).next.get();
            let prev = *(*s).prev.get();
            if !next.is_null() {
                *(*next).prev.get() = prev;
            }
            let bin = Bin::of((*s).npages());
            if prev.is_null() {
                let head = self.head_mut(bin);
                debug_assert_eq!(*head, s);
                *head = next;
                if next.is_null() {
                    self.mark(bin, false);
                }
            } else {
                *(*prev).next.get() = next;
            }
            *(*s).next.get() = ptr::null_mut();
            *(*s).prev.get() = ptr::null_mut();
        }
    }

    /// Finds a free span that can hold `npages` pages starting at an address
    /// aligned to `align` bytes (a power of two, at least the page size), or
    /// null. The span stays linked.
    ///
    /// # Safety
    ///
    /// Heap lock held.
    pub(crate) unsafe fn find(&self, npages: usize, align: usize) -> *mut Span {
        debug_assert!(npages >= 1);
        if align <= 1 << PAGE_SHIFT {
            // SAFETY: lock held (caller).
            unsafe { self.find_unaligned(npages) }
        } else {
            // SAFETY: lock held (caller).
            unsafe { self.find_aligned(npages, align) }
        }
    }

    unsafe fn find_unaligned(&self, npages: usize) -> *mut Span {
        if npages < EXACT_BINS {
            let m = self.exact_mask & (!0u128 << npages);
            if m != 0 {
                return self.exact[m.trailing_zeros() as usize];
            }
            // Every large span fits.
            return self.first_large_from(EXACT_BINS.trailing_zeros() as usize, 0);
        }
        let (k, j) = large_index(npages);
        // The request's own list holds spans within 1/16 of its size; look
        // at a few of them and take the smallest that fits.
        let mut best: *mut Span = ptr::null_mut();
        let mut s = self.large[k][j];
        let mut probes = 0;
        while !s.is_null() && probes < OWN_LIST_PROBES {
            // SAFETY: linked records are valid; lock held.
            unsafe {
                if (*s).npages() >= npages && (best.is_null() || (*s).npages() < (*best).npages()) {
                    best = s;
                }
                s = *(*s).next.get();
            }
            probes += 1;
        }
        if !best.is_null() {
            return best;
        }
        // Every span of a list above fits.
        self.first_large_from(k, j + 1)
    }

    /// The head of the first non-empty large list at or after list `j` of
    /// group `k`, or null.
    #[inline]
    fn first_large_from(&self, k: usize, j: usize) -> *mut Span {
        let m = if j < SUBS {
            u32::from(self.sub_mask[k]) & (!0u32 << j)
        } else {
            0
        };
        if m != 0 {
            return self.large[k][m.trailing_zeros() as usize];
        }
        let g = if k + 1 < GROUPS {
            self.group_mask & (!0u64 << (k + 1))
        } else {
            0
        };
        if g == 0 {
            return ptr::null_mut();
        }
        let k = g.trailing_zeros() as usize;
        self.large[k][self.sub_mask[k].trailing_zeros() as usize]
    }

    #[cold]
    unsafe fn find_aligned(&self, npages: usize, align: usize) -> *mut Span {
        let fits = |s: *mut Span| {
            // SAFETY: linked records are valid; lock held.
            let (start, end) = unsafe { ((*s).start(), (*s).end()) };
            let aligned = start.next_multiple_of(align);
            aligned <= end && (end - aligned) >> PAGE_SHIFT >= npages
        };
        let mut m = if npages < EXACT_BINS {
            self.exact_mask & (!0u128 << npages)
        } else {
            0
        };
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let mut s = self.exact[i];
            while !s.is_null() {
                if fits(s) {
                    return s;
                }
                // SAFETY: linked records are valid; lock held.
                s = unsafe { *(*s).next.get() };
            }
        }
        let k = log2(npages.max(EXACT_BINS));
        let mut g = self.group_mask & (!0u64 << k);
        while g != 0 {
            let k = g.trailing_zeros() as usize;
            g &= g - 1;
            for &head in &self.large[k] {
                let mut s = head;
                while !s.is_null() {
                    if fits(s) {
                        return s;
                    }
                    // SAFETY: linked records are valid; lock held.
                    s = unsafe { *(*s).next.get() };
                }
            }
        }
        ptr::null_mut()
    }

    /// Calls `f` on every linked span with the index of its list (for
    /// invariant checks).
    ///
    /// # Safety
    ///
    /// Heap lock held.
    pub(crate) unsafe fn for_each(&self, mut f: impl FnMut(*mut Span, BinIndex)) {
        let lists = self
            .exact
            .iter()
            .enumerate()
            .map(|(n, &h)| (h, BinIndex::Exact(n)))
            .chain(self.large.iter().enumerate().flat_map(|(k, g)| {
                g.iter()
                    .enumerate()
                    .map(move |(j, &h)| (h, BinIndex::Large(k, j)))
            }));
        for (head, index) in lists {
            let mut s = head;
            while !s.is_null() {
                f(s, index);
                // SAFETY: linked records are valid; lock held.
                s = unsafe { *(*s).next.get() };
            }
        }
    }

    /// Whether the masks agree with the lists (for invariant checks).
    pub(crate) fn masks_consistent(&self) -> bool {
        let exact_ok = self
            .exact
            .iter()
            .enumerate()
            .all(|(i, h)| h.is_null() == (self.exact_mask & (1 << i) == 0));
        let large_ok = self.large.iter().enumerate().all(|(k, g)| {
            g.iter()
                .enumerate()
                .all(|(j, h)| h.is_null() == (self.sub_mask[k] & (1 << j) == 0))
                && (self.sub_mask[k] == 0) == (self.group_mask & (1 << k) == 0)
        });
        exact_ok && large_ok
    }
}

/// Which list a span is linked in, as reported by [`FreeBins::for_each`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinIndex {
    /// The list of exactly this many pages.
    Exact(usize),
    /// List `j` of power-of-two group `k`.
    Large(usize, usize),
}

impl BinIndex {
    /// The list a span of `npages` pages belongs to.
    pub(crate) fn of(npages: usize) -> Self {
        match Bin::of(npages) {
            Bin::Exact(n) => BinIndex::Exact(n),
            Bin::Large(k, j) => BinIndex::Large(k, j),
        }
    }
}
