//! The span: a run of contiguous pages, and the record that describes it.
//!
//! A [`Span`] record lives in heap metadata (the span slab, see `meta.rs`),
//! never in the global allocator, and is never given back to the OS: a stale
//! pointer to a record always points at a valid record, which is what lets
//! [`MHeap::span_of`](crate::MHeap::span_of) read records without the lock.

// The identity fields use plain core atomics: the heap is never run inside a
// loom model. `SpanObjects` uses the shim: the object tiers' protocols are.
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use sizeclass::PAGE_SHIFT;

/// What a span record describes at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SpanState {
    /// The record describes no memory; it sits in the slab's free list.
    Dead = 0,
    /// Free pages owned by the heap, in one of its free bins.
    Free = 1,
    /// Pages handed out by the heap: a large object (class 0) or a span cut
    /// into objects of one size class.
    InUse = 2,
}

impl SpanState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Free,
            2 => Self::InUse,
            _ => Self::Dead,
        }
    }
}

/// The record of one span.
///
/// # Invariants
///
/// - `InUse`: `start` is page-aligned, `npages >= 1`, and every page of
///   `start .. start + npages * PAGE_SIZE` maps to this record in the page
///   map. For `class != 0`, `elem_size` is the class's object size and
///   `nelems = npages * PAGE_SIZE / elem_size`; for class 0 (a large object)
///   `elem_size = npages * PAGE_SIZE` and `nelems = 1`.
/// - `Free`: the first and last pages map to this record, the pages between
///   map to nothing, the record is linked in exactly one free bin, and
///   neither neighbouring page belongs to another free span (coalesced).
/// - `Dead`: the record is in the slab's free list and no page maps to it.
///
/// # Synchronisation
///
/// The identity fields (`start`, `npages`, `state`, `class`, `elem_size`,
/// `nelems`) are written only under the heap lock and are atomics so that
/// lock-free readers (`span_of`) may read them; while a span is `InUse` they
/// do not change, so its holder reads them with no further ordering. The
/// bin links (`next`, `prev`) are read and written only under the heap lock.
pub struct Span {
    start: AtomicUsize,
    npages: AtomicUsize,
    state: AtomicU8,
    class: AtomicU8,
    elem_size: AtomicUsize,
    nelems: AtomicU32,
    /// Bin (or slab free list) link; guarded by the heap lock.
    pub(crate) next: UnsafeCell<*mut Span>,
    /// Bin link; guarded by the heap lock.
    pub(crate) prev: UnsafeCell<*mut Span>,
    /// Of a free span: whether it is linked in the heap's bins of released
    /// spans (its first page released) rather than of dirty ones. Heap
    /// lock.
    pub(crate) clean: UnsafeCell<bool>,
    /// The object tiers' state of a small-object span (see `SpanObjects`).
    pub objects: SpanObjects,
}

/// The state a span of small objects carries for the object tiers
/// (`mcentral`, `mcache`). The heap never reads it; whoever takes a fresh
/// span from the heap resets it with [`SpanObjects::reset`].
///
/// # Synchronisation
///
/// - `free`, `nfree`, `carved` and the central-list fields belong to the
///   span's *owner*: the thread cache that holds the span, or, while no cache
///   holds it, its class's central list under that list's lock. Ownership
///   passes between them only under the central lock.
/// - `remote` is shared by every thread: a lock-free stack of objects freed
///   by threads that do not own the span, with ownership flags in its low
///   bits (objects are at least 8-byte aligned). Its protocol is `mcentral`'s.
pub struct SpanObjects {
    /// Head of the owner's free list (objects linked through their first
    /// word).
    pub free: crate::sync::UnsafeCell<*mut u8>,
    /// Objects on `free` (meaningful while the central list owns the span).
    pub nfree: crate::sync::UnsafeCell<u32>,
    /// Objects carved out of the span so far; objects at index `carved` and
    /// above were never handed out.
    pub carved: crate::sync::UnsafeCell<u32>,
    /// Remote-free stack head | ownership flags.
    pub remote: crate::sync::AtomicUsize,
    /// The id of the thread cache that owns the span, 0 when none does.
    /// Written only by that cache (on taking and giving up the span), read
    /// by any thread to ask "is this span mine?": a thread only ever sees
    /// its own id there if it wrote it itself.
    ///
    /// A large span (class 0) has no owning cache and the object tiers never
    /// read this word of one; `gomalloc`'s large-object checks keep the
    /// object's requested size there, marked with the top bit, which no
    /// cache id has (see `gomalloc/src/hardened.rs`). [`reset`](Self::reset)
    /// clears it when the record next serves a small span.
    pub owner: crate::sync::AtomicUsize,
    /// Next span in the central list that holds this one.
    pub next: crate::sync::UnsafeCell<*mut Span>,
    /// Previous span in the central list that holds this one.
    pub prev: crate::sync::UnsafeCell<*mut Span>,
    /// Which central list holds the span (the central tier's code).
    pub list: crate::sync::UnsafeCell<u8>,
    /// Whether the span's never-carved objects read as zero (its pages came
    /// fresh from the OS, or were released and not used since), so that a
    /// zeroed allocation taking one needs no memset. Owner-guarded.
    pub zeroed: crate::sync::UnsafeCell<bool>,
}

impl SpanObjects {
    fn new() -> Self {
        Self {
            free: crate::sync::UnsafeCell::new(ptr::null_mut()),
            nfree: crate::sync::UnsafeCell::new(0),
            carved: crate::sync::UnsafeCell::new(0),
            remote: crate::sync::AtomicUsize::new(0),
            owner: crate::sync::AtomicUsize::new(0),
            next: crate::sync::UnsafeCell::new(ptr::null_mut()),
            prev: crate::sync::UnsafeCell::new(ptr::null_mut()),
            list: crate::sync::UnsafeCell::new(0),
            zeroed: crate::sync::UnsafeCell::new(false),
        }
    }

    /// Clears the state of a span just taken from the heap: no free list,
    /// nothing carved, no remote frees, in no list.
    ///
    /// # Safety
    ///
    /// The caller owns the span exclusively (it was just handed out).
    pub unsafe fn reset(&self) {
        // SAFETY: exclusive ownership (caller's contract).
        unsafe {
            self.free.with_mut(|p| *p = ptr::null_mut());
            self.nfree.with_mut(|p| *p = 0);
            self.carved.with_mut(|p| *p = 0);
            self.next.with_mut(|p| *p = ptr::null_mut());
            self.prev.with_mut(|p| *p = ptr::null_mut());
            self.list.with_mut(|p| *p = 0);
            self.zeroed.with_mut(|p| *p = false);
        }
        self.remote.store(0, crate::sync::Ordering::Relaxed);
        self.owner.store(0, crate::sync::Ordering::Relaxed);
    }
}

// SAFETY: every field other than the links is atomic; the links are only
// touched under the heap lock (see "Synchronisation" above).
unsafe impl Sync for Span {}
// SAFETY: as above; the record holds no thread-bound data.
unsafe impl Send for Span {}

impl Span {
    /// A dead record (what the span slab carves).
    pub(crate) fn new_dead() -> Self {
        Self {
            start: AtomicUsize::new(0),
            npages: AtomicUsize::new(0),
            state: AtomicU8::new(SpanState::Dead as u8),
            class: AtomicU8::new(0),
            elem_size: AtomicUsize::new(0),
            nelems: AtomicU32::new(0),
            next: UnsafeCell::new(ptr::null_mut()),
            prev: UnsafeCell::new(ptr::null_mut()),
            clean: UnsafeCell::new(false),
            objects: SpanObjects::new(),
        }
    }

    /// An `InUse` record of a span that belongs to no heap, for fake span
    /// sources in the tests and loom models of the upper tiers: `npages`
    /// pages at `start` (memory the caller provides), cut into objects of
    /// `elem_size` bytes of size class `class`.
    pub fn new_detached(start: usize, npages: usize, class: u8, elem_size: usize) -> Self {
        let s = Self::new_dead();
        s.init_locked(start, npages, SpanState::InUse);
        s.set_class_locked(class, elem_size, (npages << PAGE_SHIFT) / elem_size.max(1));
        s
    }

    /// The first byte of the span.
    #[inline]
    pub fn start(&self) -> usize {
        self.start.load(Ordering::Relaxed)
    }

    /// The number of pages.
    #[inline]
    pub fn npages(&self) -> usize {
        self.npages.load(Ordering::Relaxed)
    }

    /// The span's length in bytes.
    #[inline]
    pub fn bytes(&self) -> usize {
        self.npages() << PAGE_SHIFT
    }

    /// One past the last byte of the span.
    #[inline]
    pub fn end(&self) -> usize {
        self.start() + self.bytes()
    }

    /// The span's state.
    #[inline]
    pub fn state(&self) -> SpanState {
        SpanState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The size class (0: one large object).
    #[inline]
    pub fn size_class(&self) -> u8 {
        self.class.load(Ordering::Relaxed)
    }

    /// The size of each object (for class 0, the whole span).
    #[inline]
    pub fn elem_size(&self) -> usize {
        self.elem_size.load(Ordering::Relaxed)
    }

    /// The number of objects the span holds.
    #[inline]
    pub fn nelems(&self) -> usize {
        self.nelems.load(Ordering::Relaxed) as usize
    }

    /// Whether `addr` lies inside the span.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        let start = self.start();
        addr >= start && addr - start < self.bytes()
    }

    /// Sets the identity of a record the heap is about to publish; called
    /// under the heap lock.
    pub(crate) fn init_locked(&self, start: usize, npages: usize, state: SpanState) {
        self.start.store(start, Ordering::Relaxed);
        self.npages.store(npages, Ordering::Relaxed);
        self.class.store(0, Ordering::Relaxed);
        self.elem_size.store(0, Ordering::Relaxed);
        self.nelems.store(0, Ordering::Relaxed);
        // SAFETY: the heap lock is held (caller's contract).
        unsafe {
            *self.next.get() = ptr::null_mut();
            *self.prev.get() = ptr::null_mut();
        }
        self.state.store(state as u8, Ordering::Release);
    }

    pub(crate) fn set_state_locked(&self, state: SpanState) {
        self.state.store(state as u8, Ordering::Release);
    }

    pub(crate) fn set_extent_locked(&self, start: usize, npages: usize) {
        self.start.store(start, Ordering::Relaxed);
        self.npages.store(npages, Ordering::Relaxed);
    }

    /// Records what the span is cut into; called under the heap lock before
    /// the span is handed out.
    pub(crate) fn set_class_locked(&self, class: u8, elem_size: usize, nelems: usize) {
        self.class.store(class, Ordering::Relaxed);
        self.elem_size.store(elem_size, Ordering::Relaxed);
        self.nelems.store(nelems as u32, Ordering::Relaxed);
    }
}

impl core::fmt::Debug for Span {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Span")
            .field("start", &(self.start() as *const u8))
            .field("npages", &self.npages())
            .field("state", &self.state())
            .field("class", &self.size_class())
            .finish()
    }
}
