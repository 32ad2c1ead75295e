//! # mcache: the per-thread object cache
//!
//! The tier right under the global allocator (the map of all tiers is in
//! `gomalloc`'s docs). One [`MCache`] per thread owns, for every size class,
//! the span it allocates from (the *current* span) and the other spans it
//! took from its central list and still holds objects of:
//!
//! - **allocation** pops the current span's free list: no lock, no atomic
//!   read-modify-write, four instructions and a branch ([`MCache::alloc`]);
//! - **a free by the owning thread** into the current span pushes onto that
//!   list, found from the class and the span's bounds kept in the slot,
//!   without the page map ([`MCache::free_local`]); into another span the
//!   cache owns (the caller found it through the page map), it pushes onto
//!   that span's own list and files the span as *partial*
//!   ([`MCache::free`]);
//! - **any other free** (an object of another span, this cache's or
//!   another thread's) pushes onto the class's *stash*
//!   ([`MCache::free_other`]): no page map, no atomic; the next allocations
//!   re-use it while it is still in this CPU's cache. Past
//!   [`STASH_BYTES`] per class (a quarter of that for a thread that frees
//!   the class without allocating it), or at flush, the stash drains: each object
//!   goes back to its span, through the page map, onto an owned span's list
//!   or the span's remote stack ([`Central::free_remote`]), where the owner
//!   collects it later.
//!
//! Go's mcache holds one span per class and gives it back to mcentral when
//! it runs out, so a thread that frees what it allocated a span ago pays a
//! remote free each time (measured: 1.5–2.2× mimalloc on allocate-1000 /
//! free-1000 batches). Here a thread keeps the spans it filled, as
//! mimalloc's thread heaps do, within bounds (see [`MAX_FULL`] and
//! [`MAX_EMPTY_BYTES`]) so that a thread cannot hoard memory.
//!
//! ## Refill (the slow path of `alloc`)
//!
//! `alloc` pops the stash first (the objects this thread freed last, still
//! in its CPU cache: measured on larson at 8 threads, 27.5 -> 20.8 MiB peak
//! RSS against popping the current span's list first), then the current
//! span's list; when both are
//! empty, freed memory is re-used before fresh memory is touched:
//!
//! 0. If a trim was requested ([`request_trim`]) since this cache last
//!    trimmed, it trims first ([`MCache::trim`], below) and pops the
//!    current span's list if the stash's objects refilled it. This is the
//!    only place a cache looks at the request: one relaxed load per refill,
//!    nothing on the fast path.
//! 1. The current span's remote stack, if anything is on it.
//! 2. Another owned span with free objects: a partial one (local frees),
//!    else a full one whose remote stack filled meanwhile. The current span
//!    is filed as *full* (owned, nothing on its list; it may keep
//!    never-carved objects for later).
//! 3. Never-used objects carved from the current span, ~4 KiB at a time,
//!    so pages are touched as they are used; once it is exhausted, it is
//!    filed as full. Beyond [`MAX_FULL`] full spans, the oldest goes back
//!    to the central list, which watches it for remote frees.
//! 4. While the thread has refilled the class fewer than
//!    [`SHARED_REFILLS`] times: a few objects (about
//!    [`SHARED_BATCH_BYTES`]) of the class's *shared span*, which no cache
//!    owns ([`Central::take_batch`]), into the stash. A thread that
//!    allocates a little of many classes (a short-lived thread, a thread
//!    pool's idle worker) so holds no span, and no page, of its own for
//!    them: at 8 threads of the churn workload, each allocating 100 objects
//!    over some 30 classes, a page per class per thread was most of the
//!    heap's resident memory.
//! 5. A span from the central list: its shared span first (the one the
//!    batches came from, so a thread that outgrows them goes on in the
//!    pages it touched), else a partial one, else a fresh one.
//!
//! A partial span whose objects are all free counts as *empty*; beyond
//! [`MAX_EMPTY_BYTES`] of them per class, one goes back to the central
//! list, which returns it to the heap. [`MCache::flush`] gives every span
//! back (thread exit).
//!
//! ## Bounds, and trimming
//!
//! Between refills of a class, a live cache may hold for that class: the
//! current span, up to [`MAX_FULL`] full spans, up to [`MAX_EMPTY_BYTES`]
//! of wholly free spans (at least one), the partial spans it re-uses, and
//! a stash of up to [`STASH_BYTES`]. Other threads' frees into its spans
//! land on their remote stacks, which only the cache collects, so a full
//! span may hold no live object at all and still stay with a cache that
//! never refills that class again.
//!
//! [`MCache::trim`] gives such memory back without taking what the thread
//! still uses: it drains every stash to the objects' spans, collects the
//! remote stacks of the spans it owns, and gives back to the central list
//! every span with no live object (wholly free partial and full spans, and
//! the current span when every carved object is on the slot's list or the
//! span's remote stack); full spans that received frees become partial.
//! Spans with live objects stay. Its cost is one pass over the cache's
//! slots: the spans it owns (at most [`MAX_FULL`] full ones per class) and
//! the objects on their lists and stacks.
//!
//! A thread cannot trim another thread's cache, so a process-wide request
//! is a counter: [`request_trim`] bumps a static epoch, and each cache
//! remembers the epoch it last trimmed at and trims in its next refill
//! (step 0 above) when it is behind. A cache that never refills again (an
//! idle thread) keeps its memory until it does, or until it flushes at
//! thread exit: the bound above is the most it keeps. Spans given back
//! land on the central lists, whose own stranded remote frees
//! `Centrals::sweep_all` collects.
//!
//! It owns: one thread's spans per class, their free lists, the per-class
//! allocation and free counters. It may call: the [`Central`] trait (which
//! `mcentral::Centrals` implements); `mcentral::objects` for the span's
//! object protocol; `sizeclass`.
//!
//! ## Tiny objects
//!
//! The seeds' tiny allocator (requests under 16 bytes packed into shared
//! 16-byte blocks) was built, measured and left out: it saved memory only
//! for 1–7-byte objects and slowed every allocation (see the README).
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
//! // The cache's first objects of a class come from the class's shared
//! // span: it owns no span of the class yet.
//! assert!(cache.current_span(class).is_none());
//! // SAFETY: `p` is a live 48-byte object of `class`, freed once.
//! unsafe {
//!     p.write_bytes(0xAB, 48);
//!     assert!(!cache.free_local(class, p)); // not in a span it owns
//!     cache.free_other(class, p, &central); // into its stash
//! }
//! cache.flush(&central); // the stash goes back to the shared span
//! central.sweep_all(); // which is wholly free: back to the heap
//! assert_eq!(heap.stats().in_use, 0);
//! ```

#![warn(unsafe_op_in_unsafe_fn, missing_docs)]

use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use mcentral::objects::{
    absorb_remote, carve, carve_batch, has_remote, join, next_of, prepend, set_next, take_remote,
};
use mcentral::{Centrals, SpanSource};
use mheap::Span;
use sizeclass::NUM_CLASSES;

/// Full spans a cache keeps per class before it gives the oldest back to
/// its central list. The refill path looks at each for remote frees, so the
/// bound also bounds that scan.
pub const MAX_FULL: usize = 16;

/// Bytes of wholly free spans a cache keeps per class, for re-use, before
/// it gives them back (it always keeps one).
pub const MAX_EMPTY_BYTES: usize = 128 << 10;

/// Bytes of owned spans other than the current ones (full and partial,
/// over all classes) a cache keeps before it gives full spans of the class
/// it is filing one of back to the central list, and wholly free spans
/// back to the heap. [`MAX_FULL`] and [`MAX_EMPTY_BYTES`] bound each class;
/// this bounds their sum, which a thread that used every class would
/// otherwise hold (up to 85 × 16 spans) while it no longer allocates, and
/// never trims (see "Bounds, and trimming" in the crate docs).
pub const MAX_OWNED_BYTES: usize = 4 << 20;

/// Bytes of freed objects a cache keeps per class (its *stash*, see
/// [`MCache::free_other`]) before it sends them to their spans; the cap is
/// also 64 objects at most, so this only matters above 512-byte objects.
/// (32 KiB rather than 16 since `gomalloc` sends every free of 64 bytes and
/// more to the stash: larson at 8 threads peaked at 19.7 MiB with 32 KiB,
/// 22.0 with 16.)
pub const STASH_BYTES: usize = 32 << 10;

/// Objects smaller than this (a cache line) never go to a stash: see
/// [`MCache::free_other`].
pub const STASH_MIN_SIZE: usize = 64;

/// The first class whose objects may go to a stash.
pub const FIRST_STASH_CLASS: usize = sizeclass::SIZE_CLASSES.class_of(STASH_MIN_SIZE);

/// Refills of a class a thread cache serves from the class's shared span
/// ([`Central::take_batch`]) before it takes a span of its own: a thread
/// that allocates a few objects of a class shares the pages of that class
/// with every other such thread instead of holding a page of its own per
/// class (see "Refill" in the crate docs).
pub const SHARED_REFILLS: u8 = 4;

/// Bytes of objects one refill from the shared span brings (at least one
/// object, at most 8).
pub const SHARED_BATCH_BYTES: usize = 1024;

/// Per class (index 0 unused): how many objects make `bytes`, clamped to
/// `min..=max`.
const fn objects_per_class(bytes: usize, min: u32, max: u32) -> [u32; NUM_CLASSES] {
    let mut n = [0u32; NUM_CLASSES];
    let mut c = 1;
    while c < NUM_CLASSES {
        let k = bytes / sizeclass::SIZE_CLASSES.size_of_class(c);
        n[c] = if k < min as usize {
            min
        } else if k > max as usize {
            max
        } else {
            k as u32
        };
        c += 1;
    }
    n
}

/// Objects per shared refill, per class: [`SHARED_BATCH_BYTES`] worth, at
/// least 1 and at most 8.
const SHARED_BATCH: [u32; NUM_CLASSES] = objects_per_class(SHARED_BATCH_BYTES, 1, 8);

/// How many objects the stash of each class holds at most:
/// [`STASH_BYTES`] worth, at least 2 and at most 64.
const STASH_CAP: [u32; NUM_CLASSES] = objects_per_class(STASH_BYTES, 2, 64);

/// What a thread cache needs from the tier below.
///
/// # Safety
///
/// `cache_span` hands out a span of the asked class that nobody else owns
/// until it is given back with `uncache_span`; the free list that comes with
/// it holds free objects of that span only. `take_batch` hands out free
/// objects of the asked class that nobody else holds, of a span the caller
/// does not own.
pub unsafe trait Central {
    /// A span of `class` with objects to give, and its free objects (null:
    /// carve), or `None` when out of memory.
    fn cache_span(&self, class: usize) -> Option<(&Span, *mut u8)>;

    /// Gives back a span the cache owned, with its remaining free objects.
    ///
    /// # Safety
    ///
    /// The cache owns `span`; `free` lists free objects of `span` only, and
    /// the span's own free list (`SpanObjects::free`) is empty.
    unsafe fn uncache_span(&self, span: &Span, free: *mut u8);

    /// Frees an object of a span the calling cache does not own.
    ///
    /// # Safety
    ///
    /// `obj` is an allocated object of `span`, not used afterwards.
    unsafe fn free_remote(&self, span: &Span, obj: *mut u8);

    /// Frees a chain of objects of a span the calling cache does not own,
    /// linked through their first words from `head` to `tail`.
    ///
    /// # Safety
    ///
    /// Every object of the chain is an allocated object of `span`, not used
    /// afterwards.
    unsafe fn free_remote_chain(&self, span: &Span, head: *mut u8, tail: *mut u8);

    /// Up to `max` (at least 1) free objects of `class` from a span no
    /// cache owns, linked, and how many; `(null, 0)` when out of memory.
    /// Frees of these objects go through the span's remote stack (or a
    /// stash), as for any span the cache does not own.
    fn take_batch(&self, class: usize, max: usize) -> (*mut u8, usize);

    /// Receives the counters of a cache that flushes.
    fn add_counts(&self, class: usize, allocs: u64, frees: u64);

    /// The span holding `obj`.
    ///
    /// # Safety
    ///
    /// `obj` is an allocated object of a span of this central's source.
    unsafe fn span_of(&self, obj: *mut u8) -> &Span;
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

    #[inline]
    unsafe fn free_remote_chain(&self, span: &Span, head: *mut u8, tail: *mut u8) {
        // SAFETY: caller's contract.
        unsafe { Centrals::free_remote_chain(self, span, head, tail) }
    }

    #[inline]
    fn take_batch(&self, class: usize, max: usize) -> (*mut u8, usize) {
        Centrals::take_batch(self, class, max)
    }

    fn add_counts(&self, class: usize, allocs: u64, frees: u64) {
        Centrals::add_counts(self, class, allocs, frees)
    }

    #[inline(always)]
    unsafe fn span_of(&self, obj: *mut u8) -> &Span {
        // SAFETY: caller's contract.
        unsafe { self.source().span_of(obj) }
    }
}

/// Which cache list an owned, non-current span is on (`SpanObjects::list`;
/// the central lists use 1 and 2).
const ON_PARTIAL: u8 = 3;
const ON_FULL: u8 = 4;

/// An intrusive doubly linked list of spans the cache owns, through
/// `SpanObjects::next`/`prev`.
struct SpanList {
    head: *mut Span,
    tail: *mut Span,
    len: u32,
    /// Pages of the spans on the list. (`len` and `pages` are 32-bit so
    /// that a `Slot` stays 120 bytes: at 136 its index takes two more
    /// instructions on every allocation and free.)
    pages: u32,
}

impl SpanList {
    const fn new() -> Self {
        Self {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
            pages: 0,
        }
    }

    /// # Safety
    ///
    /// The cache owns `s`, which is on no list.
    unsafe fn push_front(&mut self, s: &Span, tag: u8) {
        let me = ptr::from_ref(s).cast_mut();
        let o = &s.objects;
        // SAFETY: the owner has exclusive use of its spans' links.
        unsafe {
            o.next.with_mut(|p| *p = self.head);
            o.prev.with_mut(|p| *p = ptr::null_mut());
            o.list.with_mut(|p| *p = tag);
            if self.head.is_null() {
                self.tail = me;
            } else {
                (*self.head).objects.prev.with_mut(|p| *p = me);
            }
        }
        self.head = me;
        self.len += 1;
        self.pages += s.npages() as u32;
    }

    /// # Safety
    ///
    /// `s` is on this list.
    unsafe fn remove(&mut self, s: &Span) {
        let o = &s.objects;
        // SAFETY: the owner has exclusive use of its spans' links.
        unsafe {
            let (next, prev) = (o.next.with(|p| *p), o.prev.with(|p| *p));
            if next.is_null() {
                self.tail = prev;
            } else {
                (*next).objects.prev.with_mut(|p| *p = prev);
            }
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).objects.next.with_mut(|p| *p = next);
            }
            o.list.with_mut(|p| *p = 0);
        }
        self.len -= 1;
        self.pages -= s.npages() as u32;
    }
}

/// One size class of a cache.
///
/// Invariant: `span` is null (then `free` is null and `start == end == 0`)
/// or the current span of this class, owned by this cache, `start..end` its
/// bytes, `free` a list of its free objects (its `SpanObjects::free` is
/// empty while it is current). `partial` holds owned spans with objects on
/// their own free list; `full` owned spans with none; `empty_bytes` is the
/// size of the partial spans whose objects are all free.
#[repr(C)]
struct Slot {
    free: *mut u8,
    start: usize,
    end: usize,
    span: *const Span,
    /// Freed objects of other spans, re-used before the current span's
    /// never-carved objects; `stash_len` of them, at most the class's
    /// `STASH_CAP`.
    stash: *mut u8,
    stash_len: u32,
    /// The stash's cap now: the class's `STASH_CAP`, or a quarter of it
    /// while the thread frees the class without allocating it (see
    /// `MCache::stash_overflow`); 0 until the first push sets it, so that
    /// an empty cache is all zero bytes (a record on fresh pages needs no
    /// writes, and a `static` one sits in `.bss`).
    stash_cap: u32,
    /// Allocations and frees by this thread. Written only by the owning
    /// thread (load + store, not read-modify-write: no atomic cost on the
    /// fast path), read by anyone for statistics.
    allocs: AtomicU64,
    frees: AtomicU64,
    partial: SpanList,
    full: SpanList,
    empty_bytes: u32,
    /// `allocs` (its low 32 bits) when the stash last overflowed.
    allocs_mark: u32,
}

// The fast paths index `slots` by class: at 120 bytes the index is two
// instructions cheaper than at 136 (see `SpanList`).
const _: () = assert!(size_of::<Slot>() == 120);

impl Slot {
    const fn empty() -> Slot {
        Slot {
            free: ptr::null_mut(),
            start: 0,
            end: 0,
            span: ptr::null(),
            stash: ptr::null_mut(),
            stash_len: 0,
            stash_cap: 0,
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            partial: SpanList::new(),
            full: SpanList::new(),
            empty_bytes: 0,
            allocs_mark: 0,
        }
    }

    fn set_current(&mut self, span: &Span, free: *mut u8) {
        self.span = span;
        self.start = span.start();
        self.end = span.end();
        self.free = free;
    }

    fn clear_current(&mut self) {
        self.free = ptr::null_mut();
        self.start = 0;
        self.end = 0;
        self.span = ptr::null();
    }
}

#[inline(always)]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

/// Whether every object of an owned, non-current span is on its free list.
///
/// # Safety
///
/// The cache owns `s`.
unsafe fn wholly_free(s: &Span) -> bool {
    // SAFETY: owner-guarded fields.
    unsafe { s.objects.nfree.with(|p| *p) == s.objects.carved.with(|p| *p) }
}

/// Moves an owned, non-current span's remote stack onto its own free list;
/// returns how many objects that list holds now.
///
/// # Safety
///
/// The cache owns `s`, which is not its current span.
unsafe fn collect_remote(s: &Span) -> u32 {
    #[cfg(gomalloc_loom_broken = "trim")]
    // Broken on purpose: collects the stack leaving `IN_CENTRAL` set, as
    // the central list's full state, so the next remote free into this
    // cache's span notifies a central list it is not on.
    let flags = mcentral::objects::IN_CENTRAL;
    #[cfg(not(gomalloc_loom_broken = "trim"))]
    let flags = 0;
    // SAFETY: the cache owns `s` and its list (caller).
    unsafe {
        absorb_remote(s, flags);
        s.objects.nfree.with(|p| *p)
    }
}

/// Takes an owned span's own free list, leaving it empty.
///
/// # Safety
///
/// The cache owns `s`.
unsafe fn take_list(s: &Span) -> *mut u8 {
    // SAFETY: owner-guarded fields.
    unsafe {
        s.objects.nfree.with_mut(|p| *p = 0);
        s.objects
            .free
            .with_mut(|p| core::mem::replace(&mut *p, ptr::null_mut()))
    }
}

/// Gives an owned, non-current span that is on no cache list back to
/// `central`, with its own free list.
///
/// # Safety
///
/// The cache owns `s` and gives it up.
unsafe fn give_back<C: Central>(s: &Span, central: &C) {
    // SAFETY: caller's contract.
    unsafe {
        let list = take_list(s);
        give_back_with(s, list, central);
    }
}

/// Gives a span the cache owns back to `central` with `list`, its free
/// objects.
///
/// # Safety
///
/// The cache owns `s` and gives it up; `list` lists free objects of `s`
/// only, and the span's own list is empty.
unsafe fn give_back_with<C: Central>(s: &Span, list: *mut u8, central: &C) {
    s.objects.owner.store(0, Relaxed);
    // SAFETY: caller's contract.
    unsafe { central.uncache_span(s, list) };
}

/// Ids of caches: 0 means "none", so a cache takes one when it first owns
/// a span.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// The process-wide trim epoch: [`request_trim`] bumps it, and a cache
/// whose `trim_epoch` differs trims in its next refill. Relaxed throughout:
/// a request is a hint that a cache acts on eventually, and trimming
/// touches only what the cache owns and the spans' own atomic protocol, so
/// it needs no ordering with the requester. A plain core atomic under loom
/// too, for that reason.
static TRIM_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Asks every thread cache to [`trim`](MCache::trim) itself: each does so
/// in its next refill (see the crate docs, "Bounds, and trimming"). Returns
/// at once; a cache that never refills again does not trim.
pub fn request_trim() {
    TRIM_EPOCH.fetch_add(1, Relaxed);
}

/// A thread's object cache. See the crate docs.
///
/// An `MCache` is used by one thread at a time (`&mut self`); its counters
/// may be read by others ([`MCache::counts`]).
pub struct MCache {
    slots: [Slot; NUM_CLASSES],
    /// This cache's owner id in `SpanObjects::owner` (0 until first use).
    id: usize,
    /// The [`TRIM_EPOCH`] this cache last trimmed at.
    trim_epoch: u64,
    /// Refills served from each class's shared span since the cache was
    /// made, flushed or handed to a new thread (up to [`SHARED_REFILLS`]).
    /// Rounded up to whole words so that the cache has no padding (see
    /// `init_at`).
    shared_refills: [u8; REFILL_COUNTERS],
}

/// Length of `MCache::shared_refills`: a counter per class, rounded up to
/// whole words.
const REFILL_COUNTERS: usize = NUM_CLASSES.next_multiple_of(size_of::<usize>());

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
            id: 0,
            trim_epoch: 0,
            shared_refills: [0; REFILL_COUNTERS],
        }
    }

    /// Makes `*p` an empty cache. Memory known to read as zero (`zeroed`)
    /// is left alone: an empty cache is all zero bytes (a unit test holds
    /// it to that), so a cache made on fresh pages touches none of them
    /// until it is used (about 10 KiB per thread otherwise).
    ///
    /// # Safety
    ///
    /// `p` is valid for writes and aligned for an `MCache`; with `zeroed`,
    /// every byte of `*p` reads as zero.
    pub unsafe fn init_at(p: *mut MCache, zeroed: bool) {
        if !zeroed {
            // SAFETY: caller's contract.
            unsafe { p.write(MCache::new()) };
        }
    }

    /// Allocates an object of `class` (1..NUM_CLASSES); null when out of
    /// memory.
    #[inline(always)]
    pub fn alloc<C: Central>(&mut self, class: usize, central: &C) -> *mut u8 {
        let slot = &mut self.slots[class];
        let p = slot.stash;
        if !p.is_null() {
            // SAFETY: `p` heads the stash: free objects only this cache
            // holds.
            slot.stash = unsafe { next_of(p) };
            slot.stash_len -= 1;
            bump(&slot.allocs);
            return p;
        }
        let p = slot.free;
        if !p.is_null() {
            // SAFETY: `p` heads the free list of a span this cache owns.
            slot.free = unsafe { next_of(p) };
            // Hardened: the next object must lie in the same span.
            #[cfg(feature = "hardened")]
            mcentral::objects::check_link_in(slot.free, slot.start, slot.end);
            bump(&slot.allocs);
            return p;
        }
        self.refill(class, central)
    }

    /// Allocates an object of `class` for a zeroed allocation. When the
    /// current span came fresh from the OS and still has never-carved
    /// objects, it takes one of those, which reads as zero, and returns
    /// `(ptr, false)`; otherwise an ordinary object and `(ptr, true)`: the
    /// caller must zero it. Null when out of memory.
    pub fn alloc_zeroed<C: Central>(&mut self, class: usize, central: &C) -> (*mut u8, bool) {
        let slot = &mut self.slots[class];
        // SAFETY: a non-null current span is ours (slot invariant), so are
        // its owner-guarded fields.
        if let Some(span) = unsafe { slot.span.as_ref() } {
            let o = &span.objects;
            // SAFETY: as above.
            unsafe {
                if o.zeroed.with(|p| *p) {
                    let carved = o.carved.with(|p| *p) as usize;
                    if carved < span.nelems() {
                        o.carved.with_mut(|p| *p += 1);
                        bump(&slot.allocs);
                        return ((span.start() + carved * span.elem_size()) as *mut u8, false);
                    }
                }
            }
        }
        (self.alloc(class, central), true)
    }

    /// The slow path of `alloc`: the current span's list is empty.
    ///
    /// Freed memory is re-used before fresh memory is touched: the current
    /// span's remote frees, then another owned span with free objects (a
    /// partial one, or a full one that received remote frees), and only
    /// then the current span's never-carved objects, then a span from the
    /// central list. A thread whose objects are freed by others (a server
    /// handing requests around) so keeps its resident set to what it uses.
    #[cold]
    #[inline(never)]
    fn refill<C: Central>(&mut self, class: usize, central: &C) -> *mut u8 {
        if self.id == 0 {
            self.id = NEXT_ID.fetch_add(1, Relaxed);
        }
        if TRIM_EPOCH.load(Relaxed) != self.trim_epoch {
            self.trim(central);
            // The stash of `class` drained into its spans: the current
            // span's list may have objects again.
            let list = self.slots[class].free;
            if !list.is_null() {
                return self.pop_from(class, list);
            }
        }
        let slot = &mut self.slots[class];
        // SAFETY: a non-null current span is ours (slot invariant).
        let current = unsafe { slot.span.as_ref() };
        if let Some(span) = current
            && has_remote(span)
        {
            let list = take_remote(span, 0);
            if !list.is_null() {
                return self.pop_from(class, list);
            }
        }
        if let Some((span, list)) = self.take_owned(class) {
            if let Some(cur) = current {
                self.park_current(class, cur, central);
            }
            self.slots[class].set_current(span, list);
            return self.pop_from(class, list);
        }
        if let Some(span) = current {
            // SAFETY: we own the span.
            let list = unsafe { carve(span, carve_batch(span.elem_size())) }.0;
            if !list.is_null() {
                return self.pop_from(class, list);
            }
            // Exhausted.
            self.park_current(class, span, central);
        }
        // While the thread has allocated little of the class: a few objects
        // of the class's shared span, into the stash (empty: `alloc` only
        // refills when it is), owning no span.
        if self.shared_refills[class] < SHARED_REFILLS {
            let (list, n) = central.take_batch(class, SHARED_BATCH[class] as usize);
            if n == 0 {
                return ptr::null_mut();
            }
            self.shared_refills[class] += 1;
            let slot = &mut self.slots[class];
            debug_assert!(slot.stash.is_null());
            // SAFETY: `list` is `n` free objects only this cache holds.
            slot.stash = unsafe { next_of(list) };
            slot.stash_len = n as u32 - 1;
            bump(&slot.allocs);
            return list;
        }
        // A span from the central list.
        let Some((span, mut list)) = central.cache_span(class) else {
            return ptr::null_mut();
        };
        span.objects.owner.store(self.id, Relaxed);
        if list.is_null() {
            // SAFETY: the span is ours now.
            list = unsafe { carve(span, carve_batch(span.elem_size())) }.0;
        }
        if list.is_null() {
            // A partial span whose objects were all on its remote stack.
            list = take_remote(span, 0);
        }
        if list.is_null() {
            mheap::fatal("mcache: central list handed out a span with no free object");
        }
        self.slots[class].set_current(span, list);
        self.pop_from(class, list)
    }

    /// An owned, non-current span of `class` with free objects, taken off
    /// its list with them: a partial span first, else a full one that
    /// received remote frees.
    fn take_owned(&mut self, class: usize) -> Option<(&'static Span, *mut u8)> {
        let slot = &mut self.slots[class];
        if !slot.partial.head.is_null() {
            // SAFETY: partial spans are ours, and live as long as the heap
            // (span records are never freed).
            let span: &'static Span = unsafe { &*slot.partial.head };
            // SAFETY: as above.
            unsafe {
                slot.partial.remove(span);
                if wholly_free(span) {
                    slot.empty_bytes -= span.bytes() as u32;
                }
                let mut list = take_list(span);
                if has_remote(span) {
                    list = prepend(take_remote(span, 0), list);
                }
                if !list.is_null() {
                    return Some((span, list));
                }
                // Cannot happen (a partial span has a list), but keep it
                // owned rather than lose it.
                slot.full.push_front(span, ON_FULL);
            }
        }
        let mut s = slot.full.head;
        while !s.is_null() {
            // SAFETY: full spans are ours; records live as long as the heap.
            let span: &'static Span = unsafe { &*s };
            if has_remote(span) {
                let list = take_remote(span, 0);
                if !list.is_null() {
                    // SAFETY: as above.
                    unsafe { slot.full.remove(span) };
                    return Some((span, list));
                }
            }
            // SAFETY: as above.
            s = span.objects.next.with(|p| unsafe { *p });
        }
        None
    }

    /// Moves the current span of `class`, whose free list is empty (it may
    /// still have never-carved objects), to the full list, giving the
    /// oldest full span back to `central` beyond [`MAX_FULL`].
    fn park_current<C: Central>(&mut self, class: usize, span: &Span, central: &C) {
        let slot = &mut self.slots[class];
        debug_assert!(ptr::eq(slot.span, span) && slot.free.is_null());
        slot.clear_current();
        // SAFETY: we own the span; it is on no list.
        unsafe { slot.full.push_front(span, ON_FULL) };
        let mut over = self.owned_bytes().saturating_sub(MAX_OWNED_BYTES);
        let slot = &mut self.slots[class];
        while slot.full.len as usize > MAX_FULL || (over > 0 && !slot.full.tail.is_null()) {
            // SAFETY: the tail is a full span we own.
            let oldest = unsafe { &*slot.full.tail };
            over = over.saturating_sub(oldest.bytes());
            // SAFETY: as above.
            unsafe { slot.full.remove(oldest) };
            oldest.objects.owner.store(0, Relaxed);
            // SAFETY: we own it; its own list is empty (full).
            unsafe { central.uncache_span(oldest, ptr::null_mut()) };
        }
    }

    /// Bytes of the owned spans other than the current ones (see
    /// [`MAX_OWNED_BYTES`]). Sums every class's two lists: for slow paths.
    fn owned_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| (s.partial.pages + s.full.pages) as usize)
            .sum::<usize>()
            << mheap::PAGE_SHIFT
    }

    #[inline(always)]
    fn pop_from(&mut self, class: usize, list: *mut u8) -> *mut u8 {
        let slot = &mut self.slots[class];
        // SAFETY: `list` is a non-empty list of free objects of our span.
        slot.free = unsafe { next_of(list) };
        #[cfg(feature = "hardened")]
        mcentral::objects::check_link_in(slot.free, slot.start, slot.end);
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

    /// Frees `ptr`, an allocated object of `span`: onto the cache's lists if
    /// the cache owns the span, else through the span's remote stack.
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
        // SAFETY: caller's contract; not in the current span.
        unsafe { self.free_nonlocal(span, ptr, central) }
    }

    /// The rest of [`free`](Self::free), for a caller that already knows
    /// `ptr` is not in the current span of its class (`free_local` said no).
    ///
    /// # Safety
    ///
    /// As for `free`; and `free_local(class, ptr)` returned `false`.
    #[inline]
    pub unsafe fn free_nonlocal<C: Central>(&mut self, span: &Span, ptr: *mut u8, central: &C) {
        let class = span.size_class() as usize;
        bump(&self.slots[class].frees);
        // SAFETY: caller's contract; counted.
        unsafe { self.release(class, span, ptr, central) }
    }

    /// Frees `ptr`, an object of `class` outside the current span, into the
    /// class's *stash*: a list of freed objects of any span, which the next
    /// allocations of the class re-use first. No page-map walk, no atomic: the
    /// object goes back to its span only when the stash overflows
    /// ([`STASH_BYTES`]) or the cache flushes.
    ///
    /// A thread that frees what other threads allocated (a server handing
    /// requests around, a consumer of a queue) so re-uses those objects
    /// while they are still in its own CPU cache, instead of sending each
    /// one back to its owner's remote stack, where the owner would find it
    /// cold.
    ///
    /// Objects under [`STASH_MIN_SIZE`] (a cache line) go to the stash only
    /// when this cache owns their span; others go straight back to their
    /// span's remote stack. Several such objects share a line, and a thread
    /// re-using one that another thread allocated would write next to that
    /// thread's objects (passive false sharing: measured 3-4x slower on the
    /// cache-scratch workload at 2 and 8 threads).
    ///
    /// Returns whether the free took a slow path (the stash overflowed, or
    /// the object went to another thread's span): a caller that has work to
    /// do at such points (`gomalloc` starts its background thread there)
    /// need not look on every free.
    ///
    /// # Safety
    ///
    /// `ptr` is an allocated object of `class` of a span of `central`'s
    /// source, not used afterwards.
    #[inline]
    pub unsafe fn free_other<C: Central>(
        &mut self,
        class: usize,
        ptr: *mut u8,
        central: &C,
    ) -> bool {
        if class < FIRST_STASH_CLASS {
            // SAFETY: `ptr` is an allocated object of a live span of
            // `central`'s source (caller).
            let span = unsafe { central.span_of(ptr) };
            // SAFETY: caller's contract.
            return unsafe { self.free_other_in(class, span, ptr, central) };
        }
        // SAFETY: caller's contract.
        unsafe { self.stash(class, ptr, central) }
    }

    /// [`free_other`](Self::free_other) for a caller that already knows the
    /// object's span (the C ABI's checked free); returns the same.
    ///
    /// # Safety
    ///
    /// `ptr` is an allocated object of `span`, of class `class`, not used
    /// afterwards.
    #[inline]
    pub unsafe fn free_other_in<C: Central>(
        &mut self,
        class: usize,
        span: &Span,
        ptr: *mut u8,
        central: &C,
    ) -> bool {
        if class >= FIRST_STASH_CLASS || span.objects.owner.load(Relaxed) == self.id {
            // SAFETY: caller's contract.
            return unsafe { self.stash(class, ptr, central) };
        }
        bump(&self.slots[class].frees);
        // SAFETY: caller's contract; `span` is not ours. (The owner test is
        // policy only: a stash may hold any object, so a cache whose id is
        // still 0 meeting an unowned span is harmless.)
        unsafe { central.free_remote(span, ptr) };
        true
    }

    /// Pushes `ptr` onto the stash of `class`, draining it past its cap;
    /// returns whether it was past its cap.
    ///
    /// # Safety
    ///
    /// As for [`free_other`](Self::free_other).
    #[inline(always)]
    unsafe fn stash<C: Central>(&mut self, class: usize, ptr: *mut u8, central: &C) -> bool {
        let slot = &mut self.slots[class];
        // SAFETY: `ptr` is free now, ours to link.
        unsafe { set_next(ptr, slot.stash) };
        slot.stash = ptr;
        slot.stash_len += 1;
        bump(&slot.frees);
        if slot.stash_len > slot.stash_cap {
            self.stash_overflow(class, central);
            return true;
        }
        false
    }

    /// The stash of `class` is over its cap: sets the cap for what comes
    /// next and drains the stash (on the first push, only sets it). A
    /// thread that has freed the class without allocating any since the
    /// last overflow, or ever (a consumer of what others allocate), gets a
    /// quarter of the cap: its stash would only hold
    /// the objects back from their owners. One that allocates the class
    /// again gets the whole cap back, so a thread that re-uses what it
    /// frees (larson) keeps its stash. On xmalloc (medians of 9,
    /// interleaved) peak RSS fell from 6.06 to 5.53 MiB at 8 threads and
    /// from 3.51 to 3.18 MiB at 2, time unchanged within noise; an eighth
    /// saved more at 8 threads (5.3 MiB) but cost 2 threads 13% of time
    /// (more, shorter chains pushed onto the producers' remote stacks).
    #[cold]
    #[inline(never)]
    fn stash_overflow<C: Central>(&mut self, class: usize, central: &C) {
        let slot = &mut self.slots[class];
        let allocs = slot.allocs.load(Relaxed) as u32;
        let first = slot.stash_cap == 0;
        slot.stash_cap = if allocs == slot.allocs_mark {
            (STASH_CAP[class] / 4).max(2)
        } else {
            STASH_CAP[class]
        };
        slot.allocs_mark = allocs;
        if first {
            // The first push since the cache was made or flushed (a thread
            // that has not allocated the class gets the quarter cap from
            // the start): nothing to drain yet.
            return;
        }
        self.drain_stash(class, central);
    }

    /// Sends every object of the stash of `class` back to its span. A run
    /// of objects of one span that this cache does not own (a consumer's
    /// stash, freed in the order a producer allocated) goes back as one
    /// chain: the stash's own links, one push onto the span's remote stack,
    /// and a bounds test instead of a page-map walk for every object after
    /// the first.
    #[cold]
    #[inline(never)]
    fn drain_stash<C: Central>(&mut self, class: usize, central: &C) {
        let slot = &mut self.slots[class];
        let mut p = slot.stash;
        slot.stash = ptr::null_mut();
        slot.stash_len = 0;
        while !p.is_null() {
            // A run of objects of the current span (every free of 64 bytes
            // and more comes through the stash, see `gomalloc`'s "Free")
            // goes onto the current list whole, found by the slot's bounds
            // with no page-map walk: its own links, one write at its tail.
            let slot = &mut self.slots[class];
            let (start, len) = (slot.start, slot.end - slot.start);
            if (p as usize).wrapping_sub(start) < len {
                let mut tail = p;
                // SAFETY: stash objects are free objects only this cache
                // holds; `p..=tail` are of our current span.
                unsafe {
                    let mut next = next_of(p);
                    while !next.is_null() && (next as usize).wrapping_sub(start) < len {
                        tail = next;
                        next = next_of(next);
                    }
                    set_next(tail, slot.free);
                    slot.free = p;
                    p = next;
                }
                continue;
            }
            // SAFETY: `p` is still allocated as far as its span knows.
            let span = unsafe { central.span_of(p) };
            let owner = span.objects.owner.load(Relaxed);
            if (owner == self.id && owner != 0) || ptr::eq(self.slots[class].span, span) {
                // SAFETY: stash objects are free objects only this cache
                // holds.
                let next = unsafe { next_of(p) };
                // SAFETY: as above.
                unsafe { self.release(class, span, p, central) };
                p = next;
                continue;
            }
            // The run of objects of `span` starting at `p`.
            let (start, end) = (span.start(), span.end());
            let mut tail = p;
            // SAFETY: stash objects are free objects only this cache holds.
            let mut next = unsafe { next_of(p) };
            while !next.is_null() && (start..end).contains(&(next as usize)) {
                tail = next;
                // SAFETY: as above.
                next = unsafe { next_of(next) };
            }
            // SAFETY: `p..=tail` are allocated objects of `span` (as far as
            // it knows), linked, not used afterwards; not our span.
            unsafe { central.free_remote_chain(span, p, tail) };
            p = next;
        }
    }

    /// Returns `ptr`, an object of `span` that its span counts allocated
    /// (already counted as freed), to the span: the current span's list,
    /// another owned span's list, or the span's remote stack.
    ///
    /// # Safety
    ///
    /// `ptr` is an allocated object of `span`, of class `class`, not used
    /// afterwards.
    unsafe fn release<C: Central>(&mut self, class: usize, span: &Span, ptr: *mut u8, central: &C) {
        let slot = &mut self.slots[class];
        if ptr::eq(slot.span, span) {
            // SAFETY: a free object of our current span.
            unsafe { set_next(ptr, slot.free) };
            slot.free = ptr;
            return;
        }
        let owner = span.objects.owner.load(Relaxed);
        if owner == self.id && owner != 0 {
            // SAFETY: the span is ours and not current.
            unsafe { self.free_owned(class, span, ptr, central) };
        } else {
            // SAFETY: caller's contract; this cache does not own `span`.
            unsafe { central.free_remote(span, ptr) };
        }
    }

    /// A free into an owned span that is not current.
    ///
    /// # Safety
    ///
    /// The cache owns `span` (partial or full) and `ptr` is an allocated
    /// object of it.
    unsafe fn free_owned<C: Central>(
        &mut self,
        class: usize,
        span: &Span,
        ptr: *mut u8,
        central: &C,
    ) {
        let slot = &mut self.slots[class];
        let o = &span.objects;
        // SAFETY: owner-guarded fields of our span.
        let nfree = unsafe {
            set_next(ptr, o.free.with(|p| *p));
            o.free.with_mut(|p| *p = ptr);
            o.nfree.with_mut(|p| {
                *p += 1;
                *p
            })
        };
        if nfree == 1 {
            // It had nothing to give: it was full.
            // SAFETY: the span is on our full list.
            unsafe {
                slot.full.remove(span);
                slot.partial.push_front(span, ON_PARTIAL);
            }
        }
        // SAFETY: we own the span.
        if unsafe { wholly_free(span) } {
            // Keep it for re-use within the bound (and always one, so that a
            // class whose spans exceed the bound does not churn the heap).
            let keep = slot.empty_bytes == 0
                || slot.empty_bytes as usize + span.bytes() <= MAX_EMPTY_BYTES;
            if keep && self.owned_bytes() <= MAX_OWNED_BYTES {
                self.slots[class].empty_bytes += span.bytes() as u32;
            } else {
                let slot = &mut self.slots[class];
                // SAFETY: the span is on our partial list; we give it up
                // with its list (all its objects).
                unsafe {
                    slot.partial.remove(span);
                    let list = take_list(span);
                    o.owner.store(0, Relaxed);
                    central.uncache_span(span, list);
                }
            }
        }
    }

    /// Gives every span back to `central`, with its free objects, and hands
    /// the counters over (thread exit). The cache is empty afterwards and
    /// may be used again.
    pub fn flush<C: Central>(&mut self, central: &C) {
        self.shared_refills = [0; REFILL_COUNTERS];
        for class in 1..NUM_CLASSES {
            #[cfg(not(gomalloc_loom_broken = "stash"))]
            if !self.slots[class].stash.is_null() {
                self.drain_stash(class, central);
            }
            // Broken on purpose: forgets the stash, whose objects never go
            // back to their spans.
            #[cfg(gomalloc_loom_broken = "stash")]
            {
                self.slots[class].stash = ptr::null_mut();
                self.slots[class].stash_len = 0;
            }
            let slot = &mut self.slots[class];
            let (allocs, frees) = (slot.allocs.load(Relaxed), slot.frees.load(Relaxed));
            if allocs != 0 || frees != 0 {
                central.add_counts(class, allocs, frees);
            }
            let (span, free) = (slot.span, slot.free);
            let (mut partial, mut full) = (slot.partial.head, slot.full.head);
            *slot = Slot::empty();
            if !span.is_null() {
                #[cfg(gomalloc_loom_broken = "flush")]
                // Broken on purpose: drops the free list on the floor.
                let free = {
                    let _ = free;
                    ptr::null_mut()
                };
                // SAFETY: we own the span and give it up with its list.
                unsafe {
                    (*span).objects.owner.store(0, Relaxed);
                    central.uncache_span(&*span, free);
                }
            }
            for head in [&mut partial, &mut full] {
                while !head.is_null() {
                    // SAFETY: listed spans are ours; we give each up with
                    // its own list.
                    unsafe {
                        let s = &**head;
                        *head = s.objects.next.with(|p| *p);
                        s.objects.list.with_mut(|p| *p = 0);
                        let list = take_list(s);
                        s.objects.owner.store(0, Relaxed);
                        central.uncache_span(s, list);
                    }
                }
            }
        }
    }

    /// Gives back to `central` what this cache holds without using it (see
    /// the crate docs, "Bounds, and trimming"): drains every stash to the
    /// objects' spans, collects the remote stacks of the spans it owns, and
    /// gives back every span with no live object, the current one
    /// included; full spans that received frees become partial. Spans with
    /// live objects stay, with all their free objects. The cache records
    /// the trim epoch it trimmed at ([`request_trim`]).
    pub fn trim<C: Central>(&mut self, central: &C) {
        self.trim_epoch = TRIM_EPOCH.load(Relaxed);
        for class in 1..NUM_CLASSES {
            if !self.slots[class].stash.is_null() {
                self.drain_stash(class, central);
            }
            self.trim_class(class, central);
        }
    }

    /// The span part of [`trim`](Self::trim) for one class (its stash is
    /// drained already).
    fn trim_class<C: Central>(&mut self, class: usize, central: &C) {
        let slot = &mut self.slots[class];
        // Partial spans: every wholly free one goes, so none is left to
        // count as empty.
        let mut s = slot.partial.head;
        while !s.is_null() {
            // SAFETY: partial spans are ours; records outlive the cache.
            let span = unsafe { &*s };
            // SAFETY: we own the span; its links are ours.
            s = span.objects.next.with(|p| unsafe { *p });
            // SAFETY: we own the span; it is not current.
            unsafe {
                collect_remote(span);
                if wholly_free(span) {
                    slot.partial.remove(span);
                    give_back(span, central);
                }
            }
        }
        slot.empty_bytes = 0;
        // Full spans: their remote stacks may hold any number of objects.
        let mut s = slot.full.head;
        while !s.is_null() {
            // SAFETY: full spans are ours; records outlive the cache.
            let span = unsafe { &*s };
            // SAFETY: we own the span; its links are ours.
            s = span.objects.next.with(|p| unsafe { *p });
            // SAFETY: we own the span; it is not current.
            unsafe {
                let nfree = collect_remote(span);
                if wholly_free(span) {
                    slot.full.remove(span);
                    give_back(span, central);
                } else if nfree > 0 {
                    slot.full.remove(span);
                    slot.partial.push_front(span, ON_PARTIAL);
                }
            }
        }
        // The current span: its free objects are the slot's list (its own
        // `SpanObjects::free` is empty while it is current) and its remote
        // stack; the never-carved ones are free too.
        // SAFETY: a non-null current span is ours (slot invariant).
        let Some(span) = (unsafe { slot.span.as_ref() }) else {
            return;
        };
        let remote = if has_remote(span) {
            take_remote(span, 0)
        } else {
            ptr::null_mut()
        };
        // SAFETY: both are lists of free objects of our span.
        let (list, n) = unsafe { join(remote, slot.free) };
        // SAFETY: owner-guarded field of our span.
        let carved = span.objects.carved.with(|p| unsafe { *p }) as usize;
        if n == carved {
            slot.clear_current();
            // SAFETY: we own the span and give it up with all its objects
            // (its own list is empty while it is current).
            unsafe { give_back_with(span, list, central) };
        } else {
            slot.free = list;
        }
    }

    /// Hands the cache, with whatever it still holds, to a new thread (a
    /// record its exited thread left unflushed): the new thread starts its
    /// classes on the shared spans again, as a fresh cache does, for those
    /// it finds no span of.
    pub fn new_thread(&mut self) {
        self.shared_refills = [0; REFILL_COUNTERS];
    }

    /// Makes every class take spans of its own from its next refill on, as
    /// if its shared refills were used up, until the cache flushes or goes
    /// to a new thread: for a cache known to allocate much of whatever it
    /// allocates, and for tests of span ownership.
    pub fn skip_shared_refills(&mut self) {
        self.shared_refills = [SHARED_REFILLS; REFILL_COUNTERS];
    }

    /// Refills of `class` served from the shared span since the cache was
    /// made, flushed or handed to a new thread.
    pub fn shared_refills(&self, class: usize) -> u8 {
        self.shared_refills[class]
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

    /// Objects in the stash of `class` now.
    pub fn stash_len(&self, class: usize) -> usize {
        self.slots[class].stash_len as usize
    }

    /// How many (partial, full) spans of `class` the cache owns besides the
    /// current one.
    pub fn owned_spans(&self, class: usize) -> (usize, usize) {
        let s = &self.slots[class];
        (s.partial.len as usize, s.full.len as usize)
    }

    /// Free objects of `class` this cache holds outside any span's own
    /// list: the current span's free list and the stash. Their spans count
    /// them as allocated; a heap walk subtracts them (gomalloc's
    /// `stats_by_walk`). Walks the lists: O(objects).
    ///
    /// # Safety
    ///
    /// The thread using this cache is not running it meanwhile (the
    /// caller's own cache, or one whose thread is stopped or waiting).
    pub unsafe fn held_free(&self, class: usize) -> usize {
        let s = &self.slots[class];
        let mut n = s.stash_len as usize;
        let mut p = s.free;
        while !p.is_null() {
            n += 1;
            // SAFETY: `p` is on the current span's free list, which nobody
            // changes meanwhile (caller).
            p = unsafe { next_of(p) };
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `init_at` skips zeroed memory, so an empty cache must be all zero
    /// bytes (`Slot` and `MCache` have no padding: `Slot`'s size is
    /// asserted, and the rest are words).
    #[test]
    fn an_empty_cache_is_all_zero_bytes() {
        let c = MCache::new();
        // SAFETY: `c` is a live, fully initialised value without padding,
        // read as bytes for its size.
        let bytes = unsafe {
            core::slice::from_raw_parts(ptr::from_ref(&c).cast::<u8>(), size_of::<MCache>())
        };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "an empty cache has non-zero bytes"
        );
    }
}
