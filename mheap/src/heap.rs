//! The page heap: spans of contiguous pages, their coalescing, and the
//! release of idle pages to the OS.
//!
//! # Allocation (`alloc_pages`, `alloc_small`)
//!
//! 1. Find a free span that fits (`bins.rs`, O(1) for up to 127 pages).
//! 2. None fits: reserve a new arena from the page source (64 MiB by
//!    default, aligned to its size), register its chunks in the page map and
//!    add it as one free span, coalesced with its neighbours; find again.
//! 3. Cut the request from the span's low end (at the requested alignment):
//!    the head and tail left over stay free spans.
//! 4. If some of its pages are Released (or never committed), commit the
//!    span through the source; no new mapping is made.
//! 5. Point every page of the span at its record in the page map, mark its
//!    pages dirty and report whether they were all known to be zero.
//!
//! # Free (`free_span`)
//!
//! Clear the span's pages in the page map, merge it with a free neighbour on
//! either side (found through the page map in O(1)), and link the result
//! into its bin. Released pages stay released inside the merged span (the
//! `released` bitmap tracks them page by page), so accounting stays exact.
//!
//! # Release (`release`)
//!
//! Walk the heap's regions from the highest address down, span by span, and
//! give back runs of free, not yet released pages until the target is met.
//!
//! # Locking
//!
//! One lock, `MHeap::inner`, guards everything but the page map's entries.
//! It is a leaf lock: nothing called under it takes another lock (the page
//! source is called under it and takes none). Functions that need it end in
//! `_locked` and live on `HeapInner`, which only a guard can reach.

use crate::bins::{BinIndex, FreeBins};
use crate::fatal::fatal;
use crate::meta::{MetaArena, SpanSlab};
use crate::pagemap::{ADDR_BITS, PageMap, clear_bits, count_bits, set_bits};
use crate::source::{PageSource, PageSourceError, SOURCE_GRANULE};
use crate::span::{Span, SpanState};
use crate::sync::LeafMutex;
use core::ptr::{self, NonNull};
use sizeclass::{PAGE_SHIFT, PAGE_SIZE};

/// Settings of a heap, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapConfig {
    /// How much address space the heap reserves from its page source at a
    /// time, and the alignment of each reservation: a power of two, at
    /// least the page size. Requests larger than this reserve a multiple of
    /// it. Default 64 MiB, so almost no allocation makes a system call.
    pub arena_size: usize,
}

impl HeapConfig {
    /// 64 MiB arenas.
    pub const DEFAULT: Self = Self {
        arena_size: 64 << 20,
    };
}

impl Default for HeapConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why the heap could not serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeapError {
    /// The page source could not provide memory (out of memory).
    #[error("out of memory: {0}")]
    OutOfMemory(#[from] PageSourceError),
    /// The request can never be met: zero pages, or more bytes than the
    /// address space can hold.
    #[error("impossible request: {npages} pages")]
    BadSize {
        /// The page count asked for.
        npages: usize,
    },
    /// The alignment is not a power of two.
    #[error("alignment {align} is not a power of two")]
    BadAlignment {
        /// The alignment asked for.
        align: usize,
    },
    /// The page source returned memory above the 48-bit range the page map
    /// covers.
    #[error("the page source returned an address beyond 48 bits")]
    AddressOutOfRange,
}

/// A snapshot of the heap's counters, in bytes (and span counts).
///
/// `mapped == in_use + free`; `released <= free`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Address space reserved for heap pages (metadata excluded).
    pub mapped: usize,
    /// Bytes in spans handed out.
    pub in_use: usize,
    /// Bytes in free spans.
    pub free: usize,
    /// Free bytes not backed by physical memory: released to the OS, or
    /// reserved and never used.
    pub released: usize,
    /// Bytes the heap took from the page source for its own metadata (span
    /// records, page map).
    pub metadata: usize,
    /// Spans handed out.
    pub spans_in_use: usize,
    /// Free spans (after coalescing).
    pub free_spans: usize,
}

/// A span just handed out by the heap.
#[derive(Debug, Clone, Copy)]
pub struct SpanAlloc<'h> {
    /// The span's record, `InUse`.
    pub span: &'h Span,
    /// Whether every byte of the span is known to be zero (fresh from the
    /// OS, or released with zeroing semantics and not used since), so that
    /// a zeroed allocation can skip its memset.
    pub zeroed: bool,
}

/// A maximal run of contiguous address space holding heap pages. Spans tile
/// each region exactly.
struct Region {
    start: usize,
    end: usize,
    /// The next region down in address order.
    lower: *mut Region,
}

/// Everything the heap lock guards.
struct HeapInner<S> {
    source: S,
    config: HeapConfig,
    meta: MetaArena,
    slab: SpanSlab,
    bins: FreeBins,
    /// Regions, highest address first.
    regions: *mut Region,
    mapped_pages: usize,
    in_use_pages: usize,
    released_pages: usize,
    spans_in_use: usize,
    free_spans: usize,
}

// SAFETY: the raw pointers point into heap metadata, which is not tied to
// any thread; the whole struct is only reached through the heap lock.
unsafe impl<S: Send> Send for HeapInner<S> {}

/// The page heap over a page source `S`. See the module docs.
///
/// The heap is `Sync`: allocation, free and release take its lock; page
/// lookups ([`span_of`](Self::span_of)) do not.
pub struct MHeap<S> {
    map: PageMap,
    inner: LeafMutex<HeapInner<S>>,
}

impl<S: PageSource> MHeap<S> {
    /// A heap over `source`. Takes no memory until the first allocation.
    ///
    /// # Panics
    ///
    /// If `config.arena_size` is not a power of two at least the page size
    /// (at compile time when the heap is built in a `static`).
    pub const fn new(source: S, config: HeapConfig) -> Self {
        assert!(
            config.arena_size.is_power_of_two() && config.arena_size >= PAGE_SIZE,
            "arena_size must be a power of two >= the page size"
        );
        Self {
            map: PageMap::new(),
            inner: LeafMutex::new(HeapInner {
                source,
                config,
                meta: MetaArena::new(),
                slab: SpanSlab::new(),
                bins: FreeBins::new(),
                regions: ptr::null_mut(),
                mapped_pages: 0,
                in_use_pages: 0,
                released_pages: 0,
                spans_in_use: 0,
                free_spans: 0,
            }),
        }
    }

    /// Allocates a span of `npages` pages whose start is aligned to `align`
    /// bytes (a power of two; anything up to the page size means page
    /// alignment), to hold one large object (size class 0).
    pub fn alloc_pages(&self, npages: usize, align: usize) -> Result<SpanAlloc<'_>, HeapError> {
        let alloc = self.alloc(npages, align)?;
        let span = alloc.span;
        span.set_class_locked(0, span.bytes(), 1);
        Ok(alloc)
    }

    /// Allocates a span of `npages` pages to be cut into objects of
    /// `elem_size` bytes of size class `class` (non-zero).
    pub fn alloc_small(
        &self,
        class: u8,
        npages: usize,
        elem_size: usize,
    ) -> Result<SpanAlloc<'_>, HeapError> {
        if class == 0 || elem_size == 0 || elem_size > npages.saturating_mul(PAGE_SIZE) {
            return Err(HeapError::BadSize { npages });
        }
        let alloc = self.alloc(npages, PAGE_SIZE)?;
        let span = alloc.span;
        span.set_class_locked(class, elem_size, span.bytes() / elem_size);
        Ok(alloc)
    }

    fn alloc(&self, npages: usize, align: usize) -> Result<SpanAlloc<'_>, HeapError> {
        if !align.is_power_of_two() {
            return Err(HeapError::BadAlignment { align });
        }
        if npages == 0 || npages > (1 << (ADDR_BITS - PAGE_SHIFT)) {
            return Err(HeapError::BadSize { npages });
        }
        let align = align.max(PAGE_SIZE);
        if align >= 1 << ADDR_BITS {
            return Err(HeapError::BadAlignment { align });
        }
        let mut inner = self.inner.lock();
        let (span, zeroed) = inner.alloc_locked(&self.map, npages, align)?;
        // SAFETY: span records live as long as the heap's metadata, which
        // lives as long as `self`.
        let span = unsafe { &*span.as_ptr() };
        Ok(SpanAlloc { span, zeroed })
    }

    /// Gives a span back to the heap.
    ///
    /// # Safety
    ///
    /// `span` was handed out by this heap, is `InUse`, and neither it nor
    /// any pointer into its memory is used after this call.
    pub unsafe fn free_span(&self, span: &Span) {
        if span.state() != SpanState::InUse {
            fatal("free_span: span is not in use (double free?)");
        }
        let mut inner = self.inner.lock();
        let rec = NonNull::from(span);
        inner.free_locked(&self.map, rec);
    }

    /// Grows or shrinks a large span in place to `npages` pages, keeping its
    /// start: a shrink gives the tail back to the heap, a growth takes the
    /// pages from a free span right after it. Returns whether it happened
    /// (`false` when the neighbour is not free or too small, or memory for
    /// the change could not be had); on `false` nothing changed.
    ///
    /// # Safety
    ///
    /// `span` was handed out by this heap as a large span
    /// ([`alloc_pages`](Self::alloc_pages)), is in use, and no other thread
    /// frees or resizes it during the call. On a shrink, nothing may use the
    /// tail afterwards.
    pub unsafe fn resize_in_place(&self, span: &Span, npages: usize) -> bool {
        if npages == 0 || span.state() != SpanState::InUse || span.size_class() != 0 {
            return false;
        }
        let mut inner = self.inner.lock();
        let ok = inner.resize_locked(&self.map, NonNull::from(span), npages);
        if ok {
            span.set_class_locked(0, span.bytes(), 1);
        }
        ok
    }

    /// The in-use span holding `addr`, or `None` if the heap never handed out
    /// the page of `addr` or it is free now. O(1), lock-free.
    ///
    /// Exact for the addresses of live spans. For other addresses it cannot
    /// be fooled by stale entries (the page map holds none); it reads
    /// records without the lock, so a lookup that races with the freeing of
    /// the very span it asks about may see either answer.
    #[inline]
    pub fn span_of(&self, addr: usize) -> Option<&Span> {
        let s = self.map.span_at(addr);
        if s.is_null() {
            return None;
        }
        // SAFETY: non-null entries point to span records, which are never
        // freed while the heap lives.
        let s = unsafe { &*s };
        (s.state() == SpanState::InUse && s.contains(addr)).then_some(s)
    }

    /// The span holding `addr`, trusting the caller: the page-map walk of
    /// [`span_of`](Self::span_of) (three dependent loads) without its checks.
    ///
    /// # Safety
    ///
    /// `addr` lies inside a live span this heap handed out (for example, a
    /// pointer the global allocator returned and that is being freed).
    #[inline(always)]
    pub unsafe fn span_of_unchecked(&self, addr: usize) -> &Span {
        // SAFETY: caller's contract: the page is in use, so its chunk is
        // registered and its entry points to its span's record.
        let s = unsafe { &*self.map.span_at_unchecked(addr) };
        debug_assert!(s.state() == SpanState::InUse && s.contains(addr));
        s
    }

    /// Gives at least `bytes` of free memory back to the OS (all of it if
    /// there is less), from the highest addresses down, and returns how many
    /// bytes were released. Pages already released are not counted again.
    pub fn release(&self, bytes: usize) -> usize {
        let mut inner = self.inner.lock();
        let target = bytes.div_ceil(PAGE_SIZE);
        inner.release_locked(&self.map, target) << PAGE_SHIFT
    }

    /// Takes the heap lock and keeps it (for `fork`: see
    /// `gomalloc::raw::lock_all`).
    pub fn lock_for_fork(&self) {
        core::mem::forget(self.inner.lock());
    }

    /// Releases the lock [`lock_for_fork`](Self::lock_for_fork) took.
    ///
    /// # Safety
    ///
    /// This thread holds the lock through `lock_for_fork` (or is the only
    /// thread of a child forked by the thread that did).
    pub unsafe fn unlock_after_fork(&self) {
        // SAFETY: caller's contract.
        unsafe {
            self.inner
                .force_unlock(parking_lot::lock_api::GuardSend::new())
        };
    }

    /// A snapshot of the counters (takes the lock briefly).
    pub fn stats(&self) -> HeapStats {
        self.inner.lock().stats()
    }

    /// Runs `f` on the page source, under the heap lock (for tests and
    /// adapters: counters, fault plans).
    pub fn with_source<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.inner.lock().source)
    }

    /// Walks the whole heap under its lock, checks every invariant (spans
    /// tile each region exactly; free spans are coalesced and correctly
    /// binned; the page map points every page to its span and nothing else;
    /// released pages are free) and returns the counters recomputed by the
    /// walk, for comparison with [`stats`](Self::stats).
    ///
    /// # Panics
    ///
    /// On the first violation, with a message saying which. For tests: the
    /// walk is O(pages) and must not run inside an allocation.
    pub fn check_invariants(&self) -> HeapStats {
        self.inner.lock().check_locked(&self.map)
    }
}

impl<S: PageSource> HeapInner<S> {
    fn stats(&self) -> HeapStats {
        HeapStats {
            mapped: self.mapped_pages << PAGE_SHIFT,
            in_use: self.in_use_pages << PAGE_SHIFT,
            free: (self.mapped_pages - self.in_use_pages) << PAGE_SHIFT,
            released: self.released_pages << PAGE_SHIFT,
            metadata: self.meta.mapped,
            spans_in_use: self.spans_in_use,
            free_spans: self.free_spans,
        }
    }

    fn new_record_locked(&mut self) -> Result<NonNull<Span>, HeapError> {
        Ok(self.slab.alloc_locked(&mut self.meta, &mut self.source)?)
    }

    fn alloc_locked(
        &mut self,
        map: &PageMap,
        npages: usize,
        align: usize,
    ) -> Result<(NonNull<Span>, bool), HeapError> {
        // SAFETY: the heap lock is held (`&mut self` is only reachable
        // through the guard); the same holds for every `bins` call below.
        let mut s = unsafe { self.bins.find(npages, align) };
        if s.is_null() {
            self.grow_locked(map, npages, align)?;
            // SAFETY: lock held.
            s = unsafe { self.bins.find(npages, align) };
            if s.is_null() {
                fatal("heap grew but no span fits");
            }
        }
        // SAFETY: records found in the bins are valid Free records.
        let free = unsafe { &*s };
        let (start, end) = (free.start(), free.end());
        let at = start.next_multiple_of(align);
        let at_end = at + (npages << PAGE_SHIFT);
        let has_head = at > start;
        let has_tail = at_end < end;

        // Take every record needed before changing anything, so that running
        // out of metadata memory leaves the heap as it was.
        let t = if has_head || has_tail {
            self.new_record_locked()?
        } else {
            // SAFETY: `s` is non-null.
            unsafe { NonNull::new_unchecked(s) }
        };
        let u = if has_head && has_tail {
            match self.new_record_locked() {
                Ok(u) => Some(u),
                Err(e) => {
                    // SAFETY: `t` is a fresh record that nothing points to.
                    unsafe { self.slab.free_locked(t) };
                    return Err(e);
                }
            }
        } else {
            None
        };

        // SAFETY: lock held; `s` is a Free record linked in its bin.
        unsafe { self.bins.remove(s) };
        self.free_spans -= 1;
        // The free record `s` keeps the head if there is one, else the tail.
        if has_head {
            free.set_extent_locked(start, (at - start) >> PAGE_SHIFT);
            map.set_locked(at - PAGE_SIZE, s);
            // SAFETY: lock held; `s` is Free and unlinked.
            unsafe { self.bins.insert(s) };
            self.free_spans += 1;
        }
        if has_tail {
            let tail = match u {
                Some(u) => {
                    // SAFETY: `u` is a fresh record.
                    let r = unsafe { u.as_ref() };
                    r.init_locked(at_end, (end - at_end) >> PAGE_SHIFT, SpanState::Free);
                    u.as_ptr()
                }
                None => {
                    free.set_extent_locked(at_end, (end - at_end) >> PAGE_SHIFT);
                    s
                }
            };
            map.set_locked(at_end, tail);
            map.set_locked(end - PAGE_SIZE, tail);
            // SAFETY: lock held; `tail` is Free and unlinked.
            unsafe { self.bins.insert(tail) };
            self.free_spans += 1;
        }

        // SAFETY: `t` is a valid record (fresh, or `s` itself).
        let span = unsafe { t.as_ref() };
        span.init_locked(at, npages, SpanState::InUse);
        map.set_range_locked(at, npages, t.as_ptr());
        self.in_use_pages += npages;
        self.spans_in_use += 1;

        let mut released = 0;
        let mut dirty = 0;
        map.for_each_chunk(at, npages, |c, lo, hi| {
            // SAFETY: bitmaps are guarded by the heap lock, which is held.
            unsafe {
                released += count_bits(&*c.released.get(), lo, hi);
                dirty += count_bits(&*c.dirty.get(), lo, hi);
            }
        });
        if released > 0 {
            // SAFETY: the span's range lies inside reservations of this
            // source and is page-aligned.
            let committed = unsafe {
                self.source
                    .commit(NonNull::new_unchecked(at as *mut u8), npages << PAGE_SHIFT)
            };
            if let Err(e) = committed {
                // Undo: the span goes back as it came (its pages are still
                // marked released, so the counters stay right).
                self.free_locked(map, t);
                return Err(e.into());
            }
            self.released_pages -= released;
        }
        map.for_each_chunk(at, npages, |c, lo, hi| {
            // SAFETY: heap lock held.
            unsafe {
                clear_bits(&mut *c.released.get(), lo, hi);
                set_bits(&mut *c.dirty.get(), lo, hi);
            }
        });
        Ok((t, dirty == 0))
    }

    fn resize_locked(&mut self, map: &PageMap, rec: NonNull<Span>, npages: usize) -> bool {
        // SAFETY: `rec` is an InUse record of this heap (caller).
        let span = unsafe { rec.as_ref() };
        let (start, cur) = (span.start(), span.npages());
        let end = span.end();
        if npages == cur {
            return true;
        }
        if npages < cur {
            let Ok(tail) = self.new_record_locked() else {
                return false;
            };
            let cut = start + (npages << PAGE_SHIFT);
            let n = cur - npages;
            span.set_extent_locked(start, npages);
            map.set_range_locked(cut, n, ptr::null_mut());
            self.in_use_pages -= n;
            self.insert_free_locked(map, tail, cut, n);
            return true;
        }
        let extra = npages - cur;
        let right = map.span_at(end);
        if right.is_null() {
            return false;
        }
        // SAFETY: non-null entries point to valid records; lock held.
        let r = unsafe { &*right };
        if r.state() != SpanState::Free || r.npages() < extra {
            return false;
        }
        let mut released = 0;
        map.for_each_chunk(end, extra, |c, lo, hi| {
            // SAFETY: lock held.
            released += count_bits(unsafe { &*c.released.get() }, lo, hi);
        });
        if released > 0 {
            // SAFETY: free heap pages inside this source's reservations.
            let ok = unsafe {
                self.source
                    .commit(NonNull::new_unchecked(end as *mut u8), extra << PAGE_SHIFT)
                    .is_ok()
            };
            if !ok {
                return false;
            }
        }
        let rest = r.npages() - extra;
        // SAFETY: `right` is a Free record linked in its bin; lock held.
        unsafe { self.bins.remove(right) };
        if rest == 0 {
            self.free_spans -= 1;
            // Its first and last entries lie inside the grown range and are
            // overwritten below.
            // SAFETY: unlinked; its entries are overwritten before the lock
            // is released.
            unsafe { self.slab.free_locked(NonNull::new_unchecked(right)) };
        } else {
            let new_start = end + (extra << PAGE_SHIFT);
            r.set_extent_locked(new_start, rest);
            map.set_locked(new_start, right);
            // SAFETY: Free and unlinked; lock held.
            unsafe { self.bins.insert(right) };
        }
        span.set_extent_locked(start, npages);
        map.set_range_locked(end, extra, rec.as_ptr());
        map.for_each_chunk(end, extra, |c, lo, hi| {
            // SAFETY: lock held.
            unsafe {
                clear_bits(&mut *c.released.get(), lo, hi);
                set_bits(&mut *c.dirty.get(), lo, hi);
            }
        });
        self.in_use_pages += extra;
        self.released_pages -= released;
        true
    }

    fn free_locked(&mut self, map: &PageMap, rec: NonNull<Span>) {
        // SAFETY: `rec` is an InUse record of this heap (caller).
        let span = unsafe { rec.as_ref() };
        let (start, npages) = (span.start(), span.npages());
        map.set_range_locked(start, npages, ptr::null_mut());
        self.in_use_pages -= npages;
        self.spans_in_use -= 1;
        span.set_class_locked(0, 0, 0);
        span.set_state_locked(SpanState::Free);
        self.insert_free_locked(map, rec, start, npages);
    }

    /// Makes `rec` the free span `start .. start + npages`, merged with any
    /// free neighbour, and links it into its bin. Its pages' map entries are
    /// null on entry.
    fn insert_free_locked(
        &mut self,
        map: &PageMap,
        rec: NonNull<Span>,
        start: usize,
        npages: usize,
    ) {
        let s = rec.as_ptr();
        let mut lo = start;
        let mut hi = start + (npages << PAGE_SHIFT);
        if lo >= PAGE_SIZE {
            let left = map.span_at(lo - PAGE_SIZE);
            // SAFETY: non-null entries point to valid records.
            if !left.is_null() && unsafe { (*left).state() } == SpanState::Free {
                // SAFETY: a Free record is linked in its bin; lock held.
                unsafe {
                    debug_assert_eq!((*left).end(), lo);
                    self.bins.remove(left);
                    map.set_locked(lo - PAGE_SIZE, ptr::null_mut());
                    lo = (*left).start();
                    self.slab.free_locked(NonNull::new_unchecked(left));
                }
                self.free_spans -= 1;
            }
        }
        let right = map.span_at(hi);
        // SAFETY: as above.
        if !right.is_null() && unsafe { (*right).state() } == SpanState::Free {
            // SAFETY: as above.
            unsafe {
                debug_assert_eq!((*right).start(), hi);
                self.bins.remove(right);
                map.set_locked(hi, ptr::null_mut());
                hi = (*right).end();
                self.slab.free_locked(NonNull::new_unchecked(right));
            }
            self.free_spans -= 1;
        }
        // SAFETY: `rec` is valid; lock held.
        let span = unsafe { rec.as_ref() };
        span.init_locked(lo, (hi - lo) >> PAGE_SHIFT, SpanState::Free);
        map.set_locked(lo, s);
        map.set_locked(hi - PAGE_SIZE, s);
        // SAFETY: `s` is Free and linked nowhere; lock held.
        unsafe { self.bins.insert(s) };
        self.free_spans += 1;
    }

    /// Reserves a new arena big enough for `npages` pages at `align`, and
    /// adds it as a free span.
    #[cold]
    fn grow_locked(&mut self, map: &PageMap, npages: usize, align: usize) -> Result<(), HeapError> {
        let bytes = npages << PAGE_SHIFT;
        let arena = self.config.arena_size;
        let preferred = bytes.checked_next_multiple_of(arena);
        let base = match preferred.map(|len| (len, self.source.reserve(len, align.max(arena)))) {
            Some((len, Ok(p))) => (p, len),
            _ => {
                // A whole arena is not to be had: try the exact size.
                let len = bytes
                    .checked_next_multiple_of(SOURCE_GRANULE)
                    .ok_or(HeapError::BadSize { npages })?;
                (self.source.reserve(len, align)?, len)
            }
        };
        let (base, len) = (base.0.as_ptr() as usize, base.1);
        let end = base
            .checked_add(len)
            .filter(|e| (e - 1) >> ADDR_BITS == 0)
            .ok_or(HeapError::AddressOutOfRange)?;
        // On failure below, the reservation stays unused: address space
        // only, never committed, so no memory is lost.
        map.ensure_locked(base, end, &mut self.meta, &mut self.source)?;
        let rec = self.new_record_locked()?;
        if let Err(e) = self.add_region_locked(base, end) {
            // SAFETY: `rec` is fresh; nothing points to it.
            unsafe { self.slab.free_locked(rec) };
            return Err(e);
        }
        let pages = len >> PAGE_SHIFT;
        map.for_each_chunk(base, pages, |c, lo, hi| {
            // SAFETY: heap lock held. Fresh pages are not backed and read as
            // zero: released, not dirty.
            unsafe {
                set_bits(&mut *c.released.get(), lo, hi);
                clear_bits(&mut *c.dirty.get(), lo, hi);
            }
        });
        self.mapped_pages += pages;
        self.released_pages += pages;
        self.insert_free_locked(map, rec, base, pages);
        Ok(())
    }

    /// Records `start..end` as heap address space, merging it with an
    /// adjacent region.
    fn add_region_locked(&mut self, start: usize, end: usize) -> Result<(), HeapError> {
        // Find the first region below `start` (list is highest first).
        let mut above: *mut Region = ptr::null_mut();
        let mut r = self.regions;
        // SAFETY: region records are valid metadata; the
        // lock is held.
        unsafe {
            while !r.is_null() && (*r).start > start {
                above = r;
                r = (*r).lower;
            }
            let below = r;
            let joins_below = !below.is_null() && (*below).end == start;
            let joins_above = !above.is_null() && (*above).start == end;
            match (joins_below, joins_above) {
                (true, true) => {
                    // `above` absorbs `below`; the record of `below` is
                    // dropped (metadata is never reused; a few bytes).
                    (*above).start = (*below).start;
                    (*above).lower = (*below).lower;
                }
                (true, false) => (*below).end = end,
                (false, true) => (*above).start = start,
                (false, false) => {
                    let rec = self
                        .meta
                        .alloc(&mut self.source, size_of::<Region>(), align_of::<Region>())?
                        .as_ptr()
                        .cast::<Region>();
                    rec.write(Region {
                        start,
                        end,
                        lower: below,
                    });
                    if above.is_null() {
                        self.regions = rec;
                    } else {
                        (*above).lower = rec;
                    }
                }
            }
        }
        Ok(())
    }

    /// Releases up to `target` free, unreleased pages, highest first;
    /// returns how many.
    fn release_locked(&mut self, map: &PageMap, target: usize) -> usize {
        let mut done = 0;
        let mut r = self.regions;
        while !r.is_null() && done < target {
            // SAFETY: region records are valid; lock held.
            let (rstart, rend, lower) = unsafe { ((*r).start, (*r).end, (*r).lower) };
            let mut p = rend;
            while p > rstart && done < target {
                let s = map.span_at(p - PAGE_SIZE);
                if s.is_null() {
                    fatal("release: region page with no span");
                }
                // SAFETY: valid record.
                let (sstart, state) = unsafe { ((*s).start(), (*s).state()) };
                if state == SpanState::Free {
                    match self.release_range_locked(map, sstart, p, target - done) {
                        Ok(n) => done += n,
                        Err(n) => return done + n,
                    }
                }
                p = sstart;
            }
            r = lower;
        }
        done
    }

    /// Releases the unreleased pages of `lo..hi` (inside one free span),
    /// highest first, at most `budget` of them. `Err` carries the count done
    /// before the source refused.
    fn release_range_locked(
        &mut self,
        map: &PageMap,
        lo: usize,
        hi: usize,
        budget: usize,
    ) -> Result<usize, usize> {
        let zeroes = self.source.released_reads_zero();
        let mut done = 0;
        let mut p = hi;
        while p > lo && done < budget {
            // Skip released pages, then take the run of unreleased ones.
            while p > lo && is_released(map, p - PAGE_SIZE) {
                p -= PAGE_SIZE;
            }
            let run_hi = p;
            while p > lo
                && !is_released(map, p - PAGE_SIZE)
                && (run_hi - p) >> PAGE_SHIFT < budget - done
            {
                p -= PAGE_SIZE;
            }
            let n = (run_hi - p) >> PAGE_SHIFT;
            if n == 0 {
                break;
            }
            // SAFETY: `p..run_hi` is free heap memory inside reservations of
            // this source; nothing uses free pages.
            let ok = unsafe {
                self.source
                    .release(NonNull::new_unchecked(p as *mut u8), n << PAGE_SHIFT)
                    .is_ok()
            };
            if !ok {
                return Err(done);
            }
            map.for_each_chunk(p, n, |c, clo, chi| {
                // SAFETY: heap lock held.
                unsafe {
                    set_bits(&mut *c.released.get(), clo, chi);
                    if zeroes {
                        clear_bits(&mut *c.dirty.get(), clo, chi);
                    }
                }
            });
            self.released_pages += n;
            done += n;
        }
        Ok(done)
    }

    fn check_locked(&self, map: &PageMap) -> HeapStats {
        let mut walk = HeapStats {
            metadata: self.meta.mapped,
            ..HeapStats::default()
        };
        let mut r = self.regions;
        let mut prev_start = usize::MAX;
        while !r.is_null() {
            // SAFETY: region records are valid; lock held.
            let (rstart, rend, lower) = unsafe { ((*r).start, (*r).end, (*r).lower) };
            assert!(rstart < rend, "empty region");
            assert!(
                rend < prev_start,
                "regions out of order, overlapping or adjacent"
            );
            prev_start = rstart;
            walk.mapped += rend - rstart;
            let mut p = rstart;
            let mut prev_free = false;
            while p < rend {
                let s = map.span_at(p);
                assert!(!s.is_null(), "a region page maps to no span");
                // SAFETY: valid record.
                let s = unsafe { &*s };
                assert_eq!(s.start(), p, "span does not start where the last one ended");
                assert!(s.npages() >= 1 && s.end() <= rend, "span leaves its region");
                let pages = s.npages();
                match s.state() {
                    SpanState::InUse => {
                        for i in 0..pages {
                            assert!(
                                ptr::eq(map.span_at(p + (i << PAGE_SHIFT)), s),
                                "in-use page does not map to its span"
                            );
                        }
                        let mut rel = 0;
                        map.for_each_chunk(p, pages, |c, lo, hi| {
                            // SAFETY: lock held.
                            rel += count_bits(unsafe { &*c.released.get() }, lo, hi);
                        });
                        assert_eq!(rel, 0, "an in-use page is marked released");
                        walk.in_use += s.bytes();
                        walk.spans_in_use += 1;
                        prev_free = false;
                    }
                    SpanState::Free => {
                        assert!(!prev_free, "two adjacent free spans");
                        assert!(
                            ptr::eq(map.span_at(s.end() - PAGE_SIZE), s),
                            "free span's last page"
                        );
                        for i in 1..pages.saturating_sub(1) {
                            assert!(
                                map.span_at(p + (i << PAGE_SHIFT)).is_null(),
                                "free span interior page maps to a span"
                            );
                        }
                        map.for_each_chunk(p, pages, |c, lo, hi| {
                            // SAFETY: lock held.
                            walk.released +=
                                count_bits(unsafe { &*c.released.get() }, lo, hi) << PAGE_SHIFT;
                        });
                        walk.free += s.bytes();
                        walk.free_spans += 1;
                        prev_free = true;
                    }
                    SpanState::Dead => panic!("a region page maps to a dead record"),
                }
                p = s.end();
            }
            r = lower;
        }
        let mut linked = 0;
        // SAFETY: lock held.
        unsafe {
            self.bins.for_each(|s, index| {
                let s = &*s;
                assert_eq!(s.state(), SpanState::Free, "a binned span is not free");
                assert_eq!(
                    index,
                    BinIndex::of(s.npages()),
                    "a free span is in the wrong bin"
                );
                linked += 1;
            });
        }
        assert!(
            self.bins.masks_consistent(),
            "bin masks disagree with the lists"
        );
        assert_eq!(
            linked, walk.free_spans,
            "binned spans != free spans in the walk"
        );
        let counted = self.stats();
        assert_eq!(counted, walk, "counters disagree with the heap walk");
        walk
    }
}

fn is_released(map: &PageMap, addr: usize) -> bool {
    let c = map
        .chunk(addr)
        .unwrap_or_else(|| fatal("page map chunk missing"));
    let i = (addr >> PAGE_SHIFT) % crate::pagemap::PAGES_PER_CHUNK;
    // SAFETY: heap lock held by the caller.
    unsafe { (*c.released.get())[i / 64] & (1 << (i % 64)) != 0 }
}
