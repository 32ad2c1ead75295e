//! Heap metadata memory: a bump arena over the page source, and the span
//! slab carved from it (the role of Go's `persistentalloc` and `fixalloc`).
//!
//! Nothing here calls the global allocator, which is what lets the heap run
//! inside `GlobalAlloc`. Metadata is never given back: span records must stay
//! readable forever (see `span.rs`), and page-map nodes live as long as the
//! address space they describe. Both are used only under the heap lock.

use crate::source::{PageSource, PageSourceError, SOURCE_GRANULE};
use crate::span::{Span, SpanState};
use core::ptr::{self, NonNull};

/// How much the arena takes from the page source at a time.
const META_BLOCK: usize = 256 << 10;

/// How many span records the slab carves at a time.
const SPANS_PER_REFILL: usize = 64;

/// A bump allocator of zeroed, committed memory for heap metadata.
///
/// Invariant: `cur <= end`; `cur..end` is committed memory taken from the
/// page source, not yet handed out, and reads as zero.
pub(crate) struct MetaArena {
    cur: usize,
    end: usize,
    /// Total bytes taken from the page source for metadata.
    pub(crate) mapped: usize,
}

impl MetaArena {
    pub(crate) const fn new() -> Self {
        Self {
            cur: 0,
            end: 0,
            mapped: 0,
        }
    }

    /// Returns `size` zeroed bytes aligned to `align` (a power of two at most
    /// `SOURCE_GRANULE`), taking a new block from `source` when needed.
    pub(crate) fn alloc<S: PageSource>(
        &mut self,
        source: &mut S,
        size: usize,
        align: usize,
    ) -> Result<NonNull<u8>, PageSourceError> {
        debug_assert!(align.is_power_of_two() && align <= SOURCE_GRANULE);
        let aligned = (self.cur + align - 1) & !(align - 1);
        if self.cur != 0 && aligned <= self.end && self.end - aligned >= size {
            self.cur = aligned + size;
            // SAFETY: `aligned` lies in a committed block (invariant), so it
            // is non-null.
            return Ok(unsafe { NonNull::new_unchecked(aligned as *mut u8) });
        }
        let block = size
            .max(META_BLOCK)
            .checked_next_multiple_of(SOURCE_GRANULE)
            .ok_or(PageSourceError::Exhausted { requested: size })?;
        let base = source.reserve(block, SOURCE_GRANULE)?;
        // SAFETY: `base..base+block` was just reserved from this source.
        unsafe { source.commit(base, block)? };
        self.mapped += block;
        // Reserved-then-committed memory reads as zero (PageSource contract).
        let start = base.as_ptr() as usize;
        if size < block && block - size > self.end.saturating_sub(self.cur) {
            // The rest of the new block outlives the rest of the old one.
            self.cur = start + size;
            self.end = start + block;
        }
        Ok(base)
    }
}

/// A free list of span records carved from the metadata arena.
///
/// Invariant: every record on the list is `Dead`, linked through `next`.
pub(crate) struct SpanSlab {
    free: *mut Span,
    /// Records ever carved (live + dead).
    pub(crate) carved: usize,
}

impl SpanSlab {
    pub(crate) const fn new() -> Self {
        Self {
            free: ptr::null_mut(),
            carved: 0,
        }
    }

    /// Takes a dead record, carving more from `arena` if the list is empty.
    /// Must be called under the heap lock.
    pub(crate) fn alloc_locked<S: PageSource>(
        &mut self,
        arena: &mut MetaArena,
        source: &mut S,
    ) -> Result<NonNull<Span>, PageSourceError> {
        if self.free.is_null() {
            let size = size_of::<Span>() * SPANS_PER_REFILL;
            let block = arena.alloc(source, size, align_of::<Span>())?;
            let base = block.as_ptr().cast::<Span>();
            for i in 0..SPANS_PER_REFILL {
                // SAFETY: `block` holds SPANS_PER_REFILL aligned, unused
                // record slots; each is initialised before it is linked. The
                // heap lock is held.
                unsafe {
                    let rec = base.add(i);
                    rec.write(Span::new_dead());
                    *(*rec).next.get() = self.free;
                    self.free = rec;
                }
            }
            self.carved += SPANS_PER_REFILL;
        }
        let rec = self.free;
        // SAFETY: `rec` is a dead record of the list (invariant); the heap
        // lock is held.
        unsafe {
            self.free = *(*rec).next.get();
            *(*rec).next.get() = ptr::null_mut();
            Ok(NonNull::new_unchecked(rec))
        }
    }

    /// Returns a record that no page maps to any more.
    ///
    /// # Safety
    ///
    /// The heap lock is held and `rec` came from `alloc_locked`, is linked
    /// nowhere and no page map entry points to it.
    pub(crate) unsafe fn free_locked(&mut self, rec: NonNull<Span>) {
        // SAFETY: caller's contract.
        unsafe {
            let r = rec.as_ref();
            r.init_locked(0, 0, SpanState::Dead);
            *r.next.get() = self.free;
        }
        self.free = rec.as_ptr();
    }
}
