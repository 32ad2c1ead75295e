//! # mcache: the per-thread object cache
//!
//! The tier right under the global allocator (the map of all tiers is in
//! `gomalloc`'s docs). One [`MCache`] per thread holds, for every size
//! class, the span it allocates from and that span's free list, so that:
//!
//! - **allocation** pops the class's free list: no lock, no atomic
//!   read-modify-write, four instructions and a branch
//!   ([`MCache::alloc`]);
//! - **a free by the owning thread** into one of its current spans pushes
//!   onto that list, found from the class and the span's bounds kept in the
//!   slot, without the page map ([`MCache::free_local`]);
//! - **any other free** goes to the span's remote stack through the tier
//!   below ([`Central::free_remote`]), which the span's owner collects when
//!   its list runs dry.
//!
//! When a class's list is empty the slow path ([`MCache::alloc`]'s refill)
//! collects the span's remote frees, else carves more never-used objects
//! from it (about 4 KiB at a time, so pages are touched as they are used),
//! else gives the exhausted span back to its central list and takes another.
//! [`MCache::flush`] gives every span back (thread exit).
//!
//! It owns: one thread's current span per class, their free lists and the
//! per-class allocation and free counters. It may call: the [`Central`]
//! trait (which `mcentral::Centrals` implements); `mcentral::objects` for
//! the span's object protocol; `sizeclass`.
//!
//! ## Tiny objects
//!
//! The seeds' tiny allocator (packing requests under 16 bytes into shared
//! 16-byte blocks) is not here: see the README's measurement of it.
//!
//! ## Example: a cache alone, over central lists on a fixed region
//!
//! ```
//! use mcache::MCache;
//! use mcentral::Centrals;
//! use mheap::{FixedRegion, HeapConfig, MHeap};
//!
//! let buf: &'static mut [u8] = Box::leak(vec![0u8; 4 << 20].into_boxed_slice());
//! let heap = MHeap::new(FixedRegion::new(buf), HeapConfig { arena_size: 1 << 20 });
//! let central = Centrals::new(&heap);
//! let mut cache = MCache::new();
//! let class = sizeclass::SIZE_CLASSES.class_of(48);
//!
//! let p = cache.alloc(class, &central);
//! assert!(!p.is_null());
//! // SAFETY: `p` is a live 48-byte object of this cache's current span.
//! unsafe {
//!     p.write_bytes(0xAB, 48);
//!     assert!(cache.free_local(class, p));
//! }
//! cache.flush(&central);
//! assert_eq!(heap.stats().in_use, 0); // the wholly free span went back
//! ```

#![warn(unsafe_op_in_unsafe_fn, missing_docs)]

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use mcentral::objects::{carve, carve_batch, has_remote, next_of, set_next, take_remote};
use mcentral::{Centrals, SpanSource};
use mheap::Span;
use sizeclass::NUM_CLASSES;

/// What a thread cache needs from the tier below.
///
/// # Safety
///
/// `cache_span` hands out a span of the asked class that nobody else owns
/// until it is given back with `uncache_span`; the free list that comes with
/// it holds free objects of that span only.
pub unsafe trait Central {
    /// A span of `class` with objects to give, and its free objects (null:
    /// carve), or `None` when out of memory.
    fn cache_span(&self, class: usize) -> Option<(&Span, *mut u8)>;

    /// Gives back a span the cache owned, with its remaining free objects.
    ///
    /// # Safety
    ///
    /// The cache owns `span`; `free` lists free objects of `span` only.
    unsafe fn uncache_span(&self, span: &Span, free: *mut u8);

    /// Frees an object of a span the calling cache does not own.
    ///
    /// # Safety
    ///
    /// `obj` is an allocated object of `span`, not used afterwards.
    unsafe fn free_remote(&self, span: &Span, obj: *mut u8);

    /// Receives the counters of a cache that flushes.
    fn add_counts(&self, class: usize, allocs: u64, frees: u64);
}

// SAFETY: `Centrals` implements exactly this contract.
unsafe impl<SS: SpanSource> Central for Centrals<SS> {
    #[inline]
    fn cache_span(&self, class: usize) -> Option<(&Span, *mut u8)> {
        Centrals::cache_span(self, class).map(|g| (g.span, g.free))
    }

    #[inline]
    unsafe fn uncache_span(&self, span: &Span, free: *mut u8) {
        // SAFETY: caller's contract.
        unsafe { Centrals::uncache_span(self, span, free) }
    }

    #[inline]
    unsafe fn free_remote(&self, span: &Span, obj: *mut u8) {
        // SAFETY: caller's contract.
        unsafe { Centrals::free_remote(self, span, obj) }
    }

    fn add_counts(&self, class: usize, allocs: u64, frees: u64) {
        Centrals::add_counts(self, class, allocs, frees)
    }
}

/// One size class of a cache.
///
/// Invariant: `span` is null (then `free` is null and `start == end == 0`)
/// or a span of this class that this cache owns, `start..end` its bytes,
/// and `free` a list of its free objects.
#[repr(C)]
struct Slot {
    free: *mut u8,
    start: usize,
    end: usize,
    span: *const Span,
    /// Allocations and frees by this thread. Written only by the owning
    /// thread (load + store, not read-modify-write: no atomic cost on the
    /// fast path), read by anyone for statistics.
    allocs: AtomicU64,
    frees: AtomicU64,
}

impl Slot {
    /// Forgets the span (keeps the counters).
    fn clear_span(&mut self) {
        self.free = ptr::null_mut();
        self.start = 0;
        self.end = 0;
        self.span = ptr::null();
    }

    const fn empty() -> Slot {
        Slot {
            free: ptr::null_mut(),
            start: 0,
            end: 0,
            span: ptr::null(),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
        }
    }
}

#[inline(always)]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

/// A thread's object cache. See the crate docs.
///
/// An `MCache` is used by one thread at a time (`&mut self`); its counters
/// may be read by others ([`MCache::counts`]).
pub struct MCache {
    slots: [Slot; NUM_CLASSES],
}

// SAFETY: the cache owns its spans; it may move to another thread (e.g. a
// record handed from an exiting thread to a new one) as long as one thread
// uses it at a time, which `&mut self` enforces.
unsafe impl Send for MCache {}

impl Default for MCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MCache {
    /// An empty cache: it owns no span.
    pub const fn new() -> Self {
        Self {
            slots: [const { Slot::empty() }; NUM_CLASSES],
        }
    }

    /// Allocates an object of `class` (1..NUM_CLASSES); null when out of
    /// memory.
    #[inline(always)]
    pub fn alloc<C: Central>(&mut self, class: usize, central: &C) -> *mut u8 {
        let slot = &mut self.slots[class];
        let p = slot.free;
        if !p.is_null() {
            // SAFETY: `p` heads the free list of a span this cache owns.
            slot.free = unsafe { next_of(p) };
            bump(&slot.allocs);
            return p;
        }
        self.refill(class, central)
    }

    /// The slow path of `alloc`: the class's list is empty.
    #[cold]
    #[inline(never)]
    fn refill<C: Central>(&mut self, class: usize, central: &C) -> *mut u8 {
        let slot = &mut self.slots[class];
        if !slot.span.is_null() {
            // SAFETY: the cache owns the span (slot invariant).
            let span = unsafe { &*slot.span };
            let mut list = ptr::null_mut();
            if has_remote(span) {
                list = take_remote(span, 0);
            }
            if list.is_null() {
                // SAFETY: we own the span.
                list = unsafe { carve(span, carve_batch(span.elem_size())) }.0;
            }
            if list.is_null() {
                // Exhausted: give it back (no free objects go with it).
                slot.clear_span();
                // SAFETY: we own the span and give it up.
                unsafe { central.uncache_span(span, ptr::null_mut()) };
            } else {
                return self.pop_from(class, list);
            }
        }
        let Some((span, mut list)) = central.cache_span(class) else {
            return ptr::null_mut();
        };
        if list.is_null() {
            // SAFETY: the span is ours now.
            list = unsafe { carve(span, carve_batch(span.elem_size())) }.0;
        }
        if list.is_null() {
            // A partial span whose objects are all on its remote stack.
            list = take_remote(span, 0);
        }
        let slot = &mut self.slots[class];
        slot.span = span;
        slot.start = span.start();
        slot.end = span.end();
        if list.is_null() {
            // Cannot happen: a span the central list calls partial has
            // something to give.
            mheap::fatal("mcache: central list handed out a span with no free object");
        }
        self.pop_from(class, list)
    }

    #[inline(always)]
    fn pop_from(&mut self, class: usize, list: *mut u8) -> *mut u8 {
        let slot = &mut self.slots[class];
        // SAFETY: `list` is a non-empty list of free objects of our span.
        slot.free = unsafe { next_of(list) };
        bump(&slot.allocs);
        list
    }

    /// Frees `ptr`, an object of `class`, if it belongs to the span this
    /// cache allocates `class` from; returns whether it did. The caller
    /// frees it some other way ([`free`](Self::free)) when not.
    ///
    /// # Safety
    ///
    /// `ptr` is an allocated object of size class `class`, not used after a
    /// `true` return.
    #[inline(always)]
    pub unsafe fn free_local(&mut self, class: usize, ptr: *mut u8) -> bool {
        let slot = &mut self.slots[class];
        if (ptr as usize).wrapping_sub(slot.start) < slot.end - slot.start {
            // SAFETY: `ptr` is a free object of our span now.
            unsafe { set_next(ptr, slot.free) };
            slot.free = ptr;
            bump(&slot.frees);
            return true;
        }
        false
    }

    /// Frees `ptr`, an allocated object of `span`: onto this cache's list
    /// if the cache owns the span, else through the span's remote stack.
    ///
    /// # Safety
    ///
    /// `ptr` is an allocated object of `span` (a small-object span of
    /// `central`'s source), not used afterwards.
    #[inline]
    pub unsafe fn free<C: Central>(&mut self, span: &Span, ptr: *mut u8, central: &C) {
        let class = span.size_class() as usize;
        // SAFETY: caller's contract.
        if unsafe { self.free_local(class, ptr) } {
            return;
        }
        bump(&self.slots[class].frees);
        // SAFETY: caller's contract; this cache does not own `span`.
        unsafe { central.free_remote(span, ptr) };
    }

    /// Counts a free that the caller performed through the remote path
    /// itself (statistics only).
    #[inline]
    pub fn count_free(&mut self, class: usize) {
        bump(&self.slots[class].frees);
    }

    /// Gives every span back to `central`, with its free objects, and hands
    /// the counters over (thread exit). The cache is empty afterwards and
    /// may be used again.
    pub fn flush<C: Central>(&mut self, central: &C) {
        for class in 1..NUM_CLASSES {
            let slot = &mut self.slots[class];
            let (allocs, frees) = (slot.allocs.load(Relaxed), slot.frees.load(Relaxed));
            if allocs != 0 || frees != 0 {
                central.add_counts(class, allocs, frees);
            }
            let (span, free) = (slot.span, slot.free);
            *slot = Slot::empty();
            if !span.is_null() {
                #[cfg(gomalloc_loom_broken = "flush")]
                // Broken on purpose: drops the free list on the floor.
                let free = {
                    let _ = free;
                    ptr::null_mut()
                };
                // SAFETY: we own the span and give it up with its list.
                unsafe { central.uncache_span(&*span, free) };
            }
        }
    }

    /// This cache's (allocations, frees) of `class` since it last flushed.
    pub fn counts(&self, class: usize) -> (u64, u64) {
        let s = &self.slots[class];
        (s.allocs.load(Relaxed), s.frees.load(Relaxed))
    }

    /// The span this cache allocates `class` from, if any.
    pub fn current_span(&self, class: usize) -> Option<&Span> {
        // SAFETY: a non-null slot span is a valid record the cache owns.
        unsafe { self.slots[class].span.as_ref() }
    }
}
