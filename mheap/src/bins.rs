//! The index of free spans: finds a fitting free run for any page count.
//!
//! - Spans of 1..=127 pages sit in one list per exact page count, with a
//!   128-bit mask of non-empty lists: a request for `n` pages takes the
//!   first non-empty list at or above `n` with one count-trailing-zeros, in
//!   O(1) whatever the heap's size or fragmentation. Every small-object span
//!   (1 to 10 pages) and most large objects are served here.
//! - Larger spans sit in one list per power of two of their page count
//!   (128..255, 256..511, …) with a 64-bit mask, as TLSF does: a list above
//!   the request's power of two fits with its first span; the list of the
//!   request's own power of two is searched for the best fit.
//!
//! Why not Go 1.9's treap for large spans, or today's Go radix tree of bitmap
//! summaries: both exist to make page allocation cheap without a lock or
//! over a garbage-collected heap's scavenger state. Behind one leaf lock,
//! segregated lists are simpler and O(1) for the spans that matter; the
//! benchmark `mheap` (span alloc/free of 1, 8, 64, 1024 pages, and the same
//! with thousands of free spans of mixed sizes in the index) shows the cost
//! flat as the index grows.
//!
//! All of this is guarded by the heap lock.

use crate::span::Span;
use core::ptr;
use sizeclass::PAGE_SHIFT;

/// Page counts below this have a list each.
pub(crate) const EXACT_BINS: usize = 128;
const LARGE_BINS: usize = usize::BITS as usize;

/// Invariant: `exact[n]` lists the free spans of exactly `n` pages
/// (`1 <= n < EXACT_BINS`); `large[k]` those of `2^k <= npages < 2^(k+1)`
/// pages (`k >= 7`); bit `i` of a mask is set iff list `i` is non-empty.
pub(crate) struct FreeBins {
    exact: [*mut Span; EXACT_BINS],
    exact_mask: u128,
    large: [*mut Span; LARGE_BINS],
    large_mask: u64,
}

#[inline]
fn log2(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

impl FreeBins {
    pub(crate) const fn new() -> Self {
        Self {
            exact: [ptr::null_mut(); EXACT_BINS],
            exact_mask: 0,
            large: [ptr::null_mut(); LARGE_BINS],
            large_mask: 0,
        }
    }

    fn head_mut(&mut self, npages: usize) -> (&mut *mut Span, usize, bool) {
        if npages < EXACT_BINS {
            (&mut self.exact[npages], npages, true)
        } else {
            let k = log2(npages);
            (&mut self.large[k], k, false)
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
            let (head, i, exact) = self.head_mut((*s).npages());
            let old = *head;
            *(*s).next.get() = old;
            *(*s).prev.get() = ptr::null_mut();
            if !old.is_null() {
                *(*old).prev.get() = s;
            }
            *head = s;
            if exact {
                self.exact_mask |= 1 << i;
            } else {
                self.large_mask |= 1 << i;
            }
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
            let (head, i, exact) = self.head_mut((*s).npages());
            if prev.is_null() {
                debug_assert_eq!(*head, s);
                *head = next;
                if next.is_null() {
                    if exact {
                        self.exact_mask &= !(1 << i);
                    } else {
                        self.large_mask &= !(1 << i);
                    }
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
        }
        let k = log2(npages.max(EXACT_BINS));
        // The request's own power of two: best fit, lowest address on ties.
        if self.large_mask & (1 << k) != 0 {
            let mut best: *mut Span = ptr::null_mut();
            let mut s = self.large[k];
            while !s.is_null() {
                // SAFETY: linked records are valid; lock held.
                unsafe {
                    let n = (*s).npages();
                    if n >= npages
                        && (best.is_null()
                            || n < (*best).npages()
                            || (n == (*best).npages() && (*s).start() < (*best).start()))
                    {
                        best = s;
                    }
                    s = *(*s).next.get();
                }
            }
            if !best.is_null() {
                return best;
            }
        }
        // Any span of a higher power of two fits.
        let above = if k + 1 >= LARGE_BINS {
            0
        } else {
            self.large_mask & (!0u64 << (k + 1))
        };
        if above != 0 {
            return self.large[above.trailing_zeros() as usize];
        }
        ptr::null_mut()
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
        let mut m = self.large_mask & (!0u64 << k);
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let mut s = self.large[i];
            while !s.is_null() {
                if fits(s) {
                    return s;
                }
                // SAFETY: linked records are valid; lock held.
                s = unsafe { *(*s).next.get() };
            }
        }
        ptr::null_mut()
    }

    /// Calls `f` on every linked span (for invariant checks).
    ///
    /// # Safety
    ///
    /// Heap lock held.
    pub(crate) unsafe fn for_each(&self, mut f: impl FnMut(*mut Span, usize, bool)) {
        for (lists, exact) in [(&self.exact[..], true), (&self.large[..], false)] {
            for (i, &head) in lists.iter().enumerate() {
                let mut s = head;
                while !s.is_null() {
                    f(s, i, exact);
                    // SAFETY: linked records are valid; lock held.
                    s = unsafe { *(*s).next.get() };
                }
            }
        }
    }

    /// Whether the masks agree with the lists (for invariant checks).
    pub(crate) fn masks_consistent(&self) -> bool {
        self.exact
            .iter()
            .enumerate()
            .all(|(i, h)| h.is_null() == (self.exact_mask & (1 << i) == 0))
            && self
                .large
                .iter()
                .enumerate()
                .all(|(i, h)| h.is_null() == (self.large_mask & (1 << i) == 0))
    }
}
