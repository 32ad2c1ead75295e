//! The page heap: spans of contiguous pages, their coalescing, and the
//! release of idle pages to the OS.
//!
//! # Allocation (`alloc_pages`, `alloc_small`)
//!
//! 1. Find a free span that fits (`bins.rs`, O(1) for up to 127 pages):
//!    the best fit. Free spans are kept in two sets of bins, *dirty* (first
//!    page resident, or possibly so) and *released*; a request of
//!    [`DIRTY_FIRST_PAGES`] or more takes the best dirty fit before any
//!    released one, so that a big block built again after a bigger one was
//!    freed lands on the resident pages instead of faulting in new ones
//!    while the old ones stay resident (Go's heap kept free and scavenged
//!    spans apart for the same reason). Smaller requests take the best fit
//!    of both, which keeps the huge free spans whole for the big ones.
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
//! # Release
//!
//! - By policy (`scavenge_step`, and `free_span` itself when the policy
//!   needs no clock to decide): one bounded increment of releases from the
//!   idle list, longest idle 2 MiB block first. The policy, how idle time
//!   is measured and who calls what are in `scavenge.rs`.
//! - `release_all`: every free page, in increments, the lock dropped
//!   between them.
//! - `release(bytes)`: walk the heap's regions from the highest address
//!   down, span by span, and give back runs of free, not yet released pages
//!   until the target is met.
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
use crate::pagemap::{
    ADDR_BITS, CHUNK_SHIFT, PAGES_PER_CHUNK, PageMap, clear_bits, count_bits, last_set, set_bits,
};
use crate::scavenge::{
    BLOCK_SIZE, IdleList, Published, RETRY_NS, ScavengePolicy, monotonic_ns, pages_up,
};
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
/// `mapped == in_use + free`; `released <= free`;
/// `resident == mapped - released + metadata`. The gauges are recomputed by
/// [`MHeap::check_invariants`]'s walk; the cumulative counters
/// (`scavenge_steps`, `scavenged`, `released_on_request`) are not.
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
    /// The heap's estimate of its resident memory: every page that is not
    /// released (in use or dirty and free), plus metadata. What the soft
    /// memory limit is compared with.
    pub resident: usize,
    /// Scavenging increments run by policy (each took the heap lock), ever.
    pub scavenge_steps: u64,
    /// Bytes released by policy (the scavenger), ever.
    pub scavenged: u64,
    /// Bytes released on request ([`MHeap::release`],
    /// [`MHeap::release_all`]), ever.
    pub released_on_request: u64,
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

/// Requests of at least this many pages (1 MiB) take a dirty free span
/// before any released one (see the module docs, "Allocation").
pub(crate) const DIRTY_FIRST_PAGES: usize = (1 << 20) >> PAGE_SHIFT;

/// Everything the heap lock guards.
struct HeapInner<S> {
    source: S,
    config: HeapConfig,
    meta: MetaArena,
    slab: SpanSlab,
    /// Free spans whose first page is dirty (resident or possibly so).
    bins: FreeBins,
    /// Free spans whose first page is released (or never used).
    clean: FreeBins,
    /// Regions, highest address first.
    regions: *mut Region,
    mapped_pages: usize,
    in_use_pages: usize,
    released_pages: usize,
    spans_in_use: usize,
    free_spans: usize,
    /// Blocks that may hold free, unreleased pages, longest idle first.
    idle: IdleList,
    policy: ScavengePolicy,
    /// `policy.limit_target()`, kept at hand.
    limit_target: usize,
    /// When the delay rule next has work (`u64::MAX`: never); may be early.
    time_deadline: u64,
    /// No time-driven release before this (the source refused the last one).
    retry_at: u64,
    scavenge_steps: u64,
    scavenged_pages: u64,
    released_on_request_pages: u64,
}

// SAFETY: the raw pointers point into heap metadata, which is not tied to
// any thread; the whole struct is only reached through the heap lock.
unsafe impl<S: Send> Send for HeapInner<S> {}

/// The page heap over a page source `S`. See the module docs.
///
/// The heap is `Sync`: allocation, free and release take its lock; page
/// lookups ([`span_of`](Self::span_of)) and the scavenger's check for work
/// ([`scavenge_step`](Self::scavenge_step) when there is none) do not.
pub struct MHeap<S> {
    map: PageMap,
    /// When the scavenger next has work; written under the lock, read
    /// without it (see `scavenge::Published`).
    published: Published,
    inner: LeafMutex<HeapInner<S>>,
}

impl<S: PageSource> MHeap<S> {
    /// A heap over `source`, with the default [`ScavengePolicy`]. Takes no
    /// memory until the first allocation.
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
            published: Published::new(),
            inner: LeafMutex::new(HeapInner {
                source,
                config,
                meta: MetaArena::new(),
                slab: SpanSlab::new(),
                bins: FreeBins::new(),
                clean: FreeBins::new(),
                regions: ptr::null_mut(),
                mapped_pages: 0,
                in_use_pages: 0,
                released_pages: 0,
                spans_in_use: 0,
                free_spans: 0,
                idle: IdleList::new(),
                policy: ScavengePolicy::DEFAULT,
                limit_target: usize::MAX,
                time_deadline: u64::MAX,
                retry_at: 0,
                scavenge_steps: 0,
                scavenged_pages: 0,
                released_on_request_pages: 0,
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
        let (span, zeroed) = inner.alloc_locked(&self.map, &self.published, npages, align)?;
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
    ///
    /// A span of at least the policy's `release_at_free_bytes` goes back to
    /// the OS first, a `step_bytes` step at a time, the lock taken for each
    /// step (see the [scavenger's rules](crate::scavenge)).
    pub unsafe fn free_span(&self, span: &Span) {
        // SAFETY: caller's contract.
        unsafe { self.free_span_inner(span, false) }
    }

    /// [`free_span`](Self::free_span) for a span whose pages the caller
    /// emptied (moved elsewhere with `mremap`): its pages are released
    /// whatever its length, so that the heap counts them as what they are
    /// (not resident, reading as zero) rather than as dirty free memory.
    ///
    /// # Safety
    ///
    /// As for `free_span`.
    pub unsafe fn free_span_released(&self, span: &Span) {
        // SAFETY: caller's contract.
        unsafe { self.free_span_inner(span, true) }
    }

    unsafe fn free_span_inner(&self, span: &Span, release: bool) {
        if span.state() != SpanState::InUse {
            fatal("free_span: span is not in use (double free?)");
        }
        let released = self.release_before_free(span, release);
        let mut inner = self.inner.lock();
        let rec = NonNull::from(span);
        let start = span.start();
        inner.free_locked(&self.map, rec);
        if released > 0 {
            inner.mark_released_locked(&self.map, start, released);
        }
        inner.after_free_locked(&self.map, &self.published);
    }

    /// Releases the pages of `span`, still in use and the caller's alone,
    /// from its start, if `always` or the policy releases a span that long
    /// as it is freed; returns how many pages were released (all of them,
    /// or fewer if the source refused a step).
    fn release_before_free(&self, span: &Span, always: bool) -> usize {
        let (start, npages) = (span.start(), span.npages());
        let mut done = 0;
        while done < npages {
            let mut inner = self.inner.lock();
            if done == 0 && !always && npages << PAGE_SHIFT < inner.policy.release_at_free_bytes {
                return 0;
            }
            let n = inner.policy.step_pages().min(npages - done);
            let at = start + (done << PAGE_SHIFT);
            // SAFETY: `at .. at + n` pages lie in the caller's span, inside
            // this source's reservations; the caller uses none of it again.
            let ok = unsafe {
                inner
                    .source
                    .release(NonNull::new_unchecked(at as *mut u8), n << PAGE_SHIFT)
                    .is_ok()
            };
            if !ok {
                break;
            }
            done += n;
        }
        done
    }

    /// Grows or shrinks a large span in place to `npages` pages, keeping its
    /// start: a shrink gives the tail back to the heap, a growth takes the
    /// pages from a free span right after it. Returns whether it happened
    /// (`false` when the neighbour is not free or too small, or memory for
    /// the change could not be had, or when a growth to 1 MiB or more
    /// would take released pages while a dirty free span could hold the
    /// whole span, where an allocation of that size would go); on `false`
    /// nothing changed.
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
            inner.after_free_locked(&self.map, &self.published);
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

    /// The in-use span holding `addr`, or `None`: [`span_of`](Self::span_of)
    /// without its bounds re-check, for the C ABI's `free`.
    ///
    /// The page map holds no stale entries: a page's entry is null, or
    /// points to the free span whose end it is (a record in state `Free`),
    /// or to the in-use span that holds it. So an entry to an `InUse` record
    /// is the span holding `addr`, and the bounds test of `span_of` can only
    /// matter in a race with the freeing of that same span (a double free
    /// from two threads, or a use after free), which its re-checks narrow
    /// but cannot close either.
    #[inline]
    pub fn span_of_mapped(&self, addr: usize) -> Option<&Span> {
        let s = self.map.span_at(addr);
        if s.is_null() {
            return None;
        }
        // SAFETY: non-null entries point to span records, which are never
        // freed while the heap lives.
        let s = unsafe { &*s };
        (s.state() == SpanState::InUse).then_some(s)
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
    ///
    /// It holds the heap lock for the whole release; prefer
    /// [`release_all`](Self::release_all) to give everything back.
    pub fn release(&self, bytes: usize) -> usize {
        let mut inner = self.inner.lock();
        let target = bytes.div_ceil(PAGE_SIZE);
        let n = inner.release_locked(&self.map, target);
        inner.released_on_request_pages += n as u64;
        inner.publish(&self.published);
        n << PAGE_SHIFT
    }

    /// Gives every page that is free now back to the OS (what
    /// `gomalloc::release_memory()` and `malloc_trim(0)` call), longest idle
    /// first, in increments of the policy's `step_bytes` with the lock
    /// dropped between them, so other threads are held up one increment at
    /// a time. Returns the bytes released. Pages freed meanwhile may be
    /// released too; it stops once it has released as much as was dirty
    /// when it began, or nothing is left.
    pub fn release_all(&self) -> usize {
        let mut total = 0;
        let mut left = usize::MAX;
        loop {
            let mut inner = self.inner.lock();
            if left == usize::MAX {
                left = inner.dirty_pages();
            }
            let n = inner.scavenge_locked(&self.map, None, Mode::All);
            inner.released_on_request_pages += n as u64;
            inner.publish(&self.published);
            drop(inner);
            total += n;
            left = left.saturating_sub(n);
            if n == 0 || left == 0 {
                return total << PAGE_SHIFT;
            }
        }
    }

    /// One increment of scavenging by policy at time `now_ns` (see
    /// `scavenge.rs`: the retained bound, the idle delay, the memory limit):
    /// releases at most the policy's `step_bytes`, longest idle pages first,
    /// and returns the bytes released.
    ///
    /// When there is nothing to do (most calls) it takes no lock: one atomic
    /// load and a compare with the time at which the heap next has work. It
    /// may take the lock and release nothing (to date the blocks freed in
    /// the last generation, or when that time was early).
    ///
    /// `now_ns` is a monotonic time in nanoseconds from one clock for the
    /// whole life of the heap ([`monotonic_ns`] if the `_now` functions or
    /// [`wait_for_scavenge_work`](Self::wait_for_scavenge_work) are used
    /// too); times that go backwards are taken as the latest one seen.
    #[inline]
    pub fn scavenge_step(&self, now_ns: u64) -> usize {
        if now_ns < self.published.work_at() {
            return 0;
        }
        self.scavenge_step_slow(now_ns)
    }

    /// [`scavenge_step`](Self::scavenge_step) at [`monotonic_ns`] (a few
    /// ns more: one coarse clock read through the vDSO).
    #[inline]
    pub fn scavenge_step_now(&self) -> usize {
        self.scavenge_step(monotonic_ns())
    }

    #[cold]
    #[inline(never)]
    fn scavenge_step_slow(&self, now_ns: u64) -> usize {
        let mut inner = self.inner.lock();
        inner.scavenge_steps += 1;
        let n = inner.scavenge_locked(&self.map, Some(now_ns), Mode::Policy);
        inner.publish(&self.published);
        n << PAGE_SHIFT
    }

    /// The time (in the clock of [`scavenge_step`](Self::scavenge_step))
    /// from which a call to `scavenge_step` has work: `Some(t)` with
    /// `t <= now` when there is work now, `None` when the heap has no dirty
    /// free page at all. May be early, never late; a free can make it
    /// earlier at any moment (a waiting background thread is woken then:
    /// [`wait_for_scavenge_work`](Self::wait_for_scavenge_work)). Lock-free.
    pub fn next_scavenge_deadline(&self) -> Option<u64> {
        Some(self.published.work_at()).filter(|&t| t != u64::MAX)
    }

    /// For a background scavenger thread: sleeps until the heap has
    /// scavenging work by [`monotonic_ns`] (the next deadline comes, or a
    /// free creates work sooner and wakes the thread) or `max_wait_ns` has
    /// passed, and returns whether work is due. Never allocates; sleeps on
    /// a futex (Linux; elsewhere it polls every 10 ms). The loop is:
    ///
    /// ```no_run
    /// # let heap = mheap::MHeap::new(mheap::OsPageSource::default(), mheap::HeapConfig::DEFAULT);
    /// loop {
    ///     if heap.wait_for_scavenge_work(u64::MAX) {
    ///         heap.scavenge_step_now();
    ///     }
    /// }
    /// ```
    pub fn wait_for_scavenge_work(&self, max_wait_ns: u64) -> bool {
        self.published.wait(max_wait_ns)
    }

    /// Wakes a thread sleeping in
    /// [`wait_for_scavenge_work`](Self::wait_for_scavenge_work) now (it
    /// returns `false` unless heap work is due): for a caller whose
    /// background thread has other work than the heap's. One atomic load
    /// when no thread waits.
    pub fn wake_scavenge_waiters(&self) {
        self.published.wake_waiters();
    }

    /// The scavenging policy in force.
    pub fn scavenge_policy(&self) -> ScavengePolicy {
        self.inner.lock().policy
    }

    /// Sets the scavenging policy (at any time, also on a heap in a
    /// `static` before its first use). Releases nothing by itself: the next
    /// free or scavenger call applies it.
    pub fn set_scavenge_policy(&self, policy: ScavengePolicy) {
        let mut inner = self.inner.lock();
        inner.policy = policy;
        inner.limit_target = policy.limit_target();
        // SAFETY: lock held.
        inner.time_deadline = unsafe { inner.idle.deadline(&self.map, &policy) };
        inner.publish(&self.published);
    }

    /// The settings the heap was made with (or last given by
    /// [`set_config`](Self::set_config)).
    pub fn config(&self) -> HeapConfig {
        self.inner.lock().config
    }

    /// Replaces the heap's settings, only while it has reserved nothing
    /// from its page source yet (a heap in a `static`, configured at start
    /// up). Returns whether it did: `false` once memory is mapped, or when
    /// `config.arena_size` is not a power of two at least the page size.
    pub fn set_config(&self, config: HeapConfig) -> bool {
        if !(config.arena_size.is_power_of_two() && config.arena_size >= PAGE_SIZE) {
            return false;
        }
        let mut inner = self.inner.lock();
        if inner.mapped_pages != 0 || !inner.regions.is_null() {
            return false;
        }
        inner.config = config;
        true
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

    /// Calls `f` on every span of the heap (free and in use), region by
    /// region (highest region first, each in address order), under the heap lock: for tests and
    /// statistics that recompute what the counters claim. `f` must not call
    /// the heap (it would deadlock) nor allocate through it.
    pub fn walk_spans(&self, mut f: impl FnMut(&Span)) {
        let inner = self.inner.lock();
        let mut r = inner.regions;
        while !r.is_null() {
            // SAFETY: region records are valid while the heap lives; lock
            // held.
            let (start, end, lower) = unsafe { ((*r).start, (*r).end, (*r).lower) };
            let mut p = start;
            while p < end {
                let s = self.map.span_at(p);
                if s.is_null() {
                    fatal("mheap: walk_spans found a region page with no span");
                }
                // SAFETY: the page map holds valid span records; lock held,
                // so the region's tiling does not change under us.
                let s = unsafe { &*s };
                f(s);
                p = s.end();
            }
            r = lower;
        }
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

/// What a scavenging increment may release.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// What the policy asks for.
    Policy,
    /// Any dirty free page (`release_all`).
    All,
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
            resident: self.resident_bytes(),
            scavenge_steps: self.scavenge_steps,
            scavenged: self.scavenged_pages << PAGE_SHIFT,
            released_on_request: self.released_on_request_pages << PAGE_SHIFT,
        }
    }

    /// Free pages not released.
    #[inline]
    fn dirty_pages(&self) -> usize {
        self.mapped_pages - self.in_use_pages - self.released_pages
    }

    /// Pages not released, plus metadata, in bytes.
    #[inline]
    fn resident_bytes(&self) -> usize {
        ((self.mapped_pages - self.released_pages) << PAGE_SHIFT) + self.meta.mapped
    }

    /// Dirty free pages beyond the retained bound.
    #[inline]
    fn over_bound_pages(&self) -> usize {
        self.dirty_pages()
            .saturating_sub(self.policy.retain_pages(self.in_use_pages))
    }

    /// Pages to release to bring resident memory under the memory limit's
    /// target.
    #[inline]
    fn over_limit_pages(&self) -> usize {
        pages_up(self.resident_bytes().saturating_sub(self.limit_target))
    }

    /// When the scavenger next has work: `Ok(())` if the policy wants pages
    /// released now with no time given (the delay is 0, the memory limit is
    /// exceeded, or the retained bound is and the longest idle block has
    /// settled, see `scavenge.rs`), else `Err` with the earliest time at
    /// which it has work: when the delay rule next has work or, over the
    /// retained bound, when the bound may next take a block (`u64::MAX`:
    /// never).
    #[inline]
    fn next_work(&self) -> Result<(), u64> {
        let over_bound = self.over_bound_pages();
        let bound_at = if over_bound > 0 {
            self.idle.bound_at(&self.policy)
        } else {
            u64::MAX
        };
        if self.policy.delay_ns == 0
            || self.resident_bytes() > self.limit_target
            || bound_at <= self.idle.now()
        {
            Ok(())
        } else {
            Err(self.time_deadline.min(bound_at).max(self.retry_at))
        }
    }

    /// The earliest time at which the scavenger has work (`u64::MAX`: none;
    /// the time it may retry a refused release, or 0, when work is due now).
    fn work_at(&self) -> u64 {
        if self.dirty_pages() == 0 {
            return u64::MAX;
        }
        match self.next_work() {
            Ok(()) => self.retry_at,
            Err(at) => at,
        }
    }

    /// Publishes when the scavenger next has work.
    #[inline]
    fn publish(&self, published: &Published) {
        published.set(self.work_at());
    }

    /// After pages became free (so some are dirty): one increment of release
    /// if the policy wants one with no time given (no clock is read), then
    /// the new work time.
    #[inline]
    fn after_free_locked(&mut self, map: &PageMap, published: &Published) {
        match self.next_work() {
            Ok(()) => {
                self.scavenge_locked(map, None, Mode::Policy);
                self.publish(published);
            }
            Err(at) => published.set(at),
        }
    }

    fn new_record_locked(&mut self) -> Result<NonNull<Span>, HeapError> {
        Ok(self.slab.alloc_locked(&mut self.meta, &mut self.source)?)
    }

    fn alloc_locked(
        &mut self,
        map: &PageMap,
        published: &Published,
        npages: usize,
        align: usize,
    ) -> Result<(NonNull<Span>, bool), HeapError> {
        let metadata = self.meta.mapped;
        // SAFETY: the heap lock is held (`&mut self` is only reachable
        // through the guard); the same holds for every `bins` call below.
        let mut s = unsafe { self.find_free_locked(npages, align) };
        if s.is_null() {
            self.grow_locked(map, npages, align)?;
            // SAFETY: lock held.
            s = unsafe { self.find_free_locked(npages, align) };
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
        unsafe { self.bin_remove_locked(s) };
        self.free_spans -= 1;
        // The free record `s` keeps the head if there is one, else the tail.
        if has_head {
            free.set_extent_locked(start, (at - start) >> PAGE_SHIFT);
            map.set_locked(at - PAGE_SIZE, s);
            // SAFETY: lock held; `s` is Free and unlinked.
            unsafe { self.bin_insert_locked(map, s) };
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
            unsafe { self.bin_insert_locked(map, tail) };
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
                self.publish(published);
                return Err(e.into());
            }
            self.released_pages -= released;
        }
        map.for_each_chunk(at, npages, |c, lo, hi| {
            // SAFETY: heap lock held.
            unsafe {
                clear_bits(&mut *c.free.get(), lo, hi);
                clear_bits(&mut *c.released.get(), lo, hi);
                set_bits(&mut *c.dirty.get(), lo, hi);
            }
        });
        if released > 0 || self.meta.mapped != metadata {
            // Resident memory grew: the memory limit may want other free
            // pages released.
            if self.dirty_pages() > 0 && self.next_work().is_ok() {
                self.scavenge_locked(map, None, Mode::Policy);
            }
            self.publish(published);
        }
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
            map.free_range_locked(cut, n);
            self.in_use_pages -= n;
            self.idle_from_now_locked(map, cut, n);
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
        if released > 0 && npages >= DIRTY_FIRST_PAGES {
            // Growing here would fault released pages in while a dirty
            // free span could hold the whole span: the caller moves it
            // there instead (as `alloc` would place it).
            // SAFETY: lock held.
            if !unsafe { self.bins.find(npages, PAGE_SIZE) }.is_null() {
                return false;
            }
        }
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
        unsafe { self.bin_remove_locked(right) };
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
            unsafe { self.bin_insert_locked(map, right) };
        }
        span.set_extent_locked(start, npages);
        map.set_range_locked(end, extra, rec.as_ptr());
        map.for_each_chunk(end, extra, |c, lo, hi| {
            // SAFETY: lock held.
            unsafe {
                clear_bits(&mut *c.free.get(), lo, hi);
                clear_bits(&mut *c.released.get(), lo, hi);
                set_bits(&mut *c.dirty.get(), lo, hi);
            }
        });
        self.in_use_pages += extra;
        self.released_pages -= released;
        true
    }

    /// Makes the blocks of `start .. start + npages`, pages just freed, idle
    /// from now (pending).
    #[inline]
    fn idle_from_now_locked(&mut self, map: &PageMap, start: usize, npages: usize) {
        // SAFETY: heap lock held; the range holds heap pages.
        if unsafe { self.idle.touch(map, start, npages) } && self.policy.delay_ns != 0 {
            // The delay rule's next time is at the latest when they are
            // dated (exact when nothing older is idle; early, which is
            // harmless, else).
            self.time_deadline = self.time_deadline.min(self.idle.next_dating(&self.policy));
        }
    }

    fn free_locked(&mut self, map: &PageMap, rec: NonNull<Span>) {
        // SAFETY: `rec` is an InUse record of this heap (caller).
        let span = unsafe { rec.as_ref() };
        let (start, npages) = (span.start(), span.npages());
        map.free_range_locked(start, npages);
        self.in_use_pages -= npages;
        self.spans_in_use -= 1;
        span.set_class_locked(0, 0, 0);
        span.set_state_locked(SpanState::Free);
        self.idle_from_now_locked(map, start, npages);
        self.insert_free_locked(map, rec, start, npages);
    }

    /// Links the free span `s` into the bins its first page selects: the
    /// dirty ones, or the released ones.
    ///
    /// # Safety
    ///
    /// `s` is a `Free` record linked in no bin.
    unsafe fn bin_insert_locked(&mut self, map: &PageMap, s: *mut Span) {
        // SAFETY: caller's contract; the lock is held (`&mut self`).
        unsafe {
            let clean = released_in(map, (*s).start(), 1) == 1;
            *(*s).clean.get() = clean;
            if clean {
                self.clean.insert(s);
            } else {
                self.bins.insert(s);
            }
        }
    }

    /// Unlinks the free span `s` from its bin.
    ///
    /// # Safety
    ///
    /// `s` is a `Free` record linked in a bin.
    unsafe fn bin_remove_locked(&mut self, s: *mut Span) {
        // SAFETY: caller's contract; lock held.
        unsafe {
            if *(*s).clean.get() {
                self.clean.remove(s);
            } else {
                self.bins.remove(s);
            }
        }
    }

    /// A free span that fits `npages` pages at `align`, null if none does:
    /// from [`DIRTY_FIRST_PAGES`] pages the best dirty fit, else the best
    /// released one; below, the best fit of both.
    ///
    /// # Safety
    ///
    /// Lock held (`&self` is only reachable through the guard).
    unsafe fn find_free_locked(&self, npages: usize, align: usize) -> *mut Span {
        // SAFETY: lock held.
        unsafe {
            let dirty = self.bins.find(npages, align);
            if npages >= DIRTY_FIRST_PAGES && !dirty.is_null() {
                return dirty;
            }
            let clean = self.clean.find(npages, align);
            if dirty.is_null() || (!clean.is_null() && (*clean).npages() < (*dirty).npages()) {
                clean
            } else {
                dirty
            }
        }
    }

    /// Pages from `addr` were just released: if a dirty free span starts
    /// there, it moves to the bins of released spans.
    fn rebin_released_locked(&mut self, map: &PageMap, addr: usize) {
        let s = map.span_at(addr);
        if s.is_null() {
            return;
        }
        // SAFETY: non-null entries point to valid records; lock held.
        unsafe {
            if (*s).state() == SpanState::Free && (*s).start() == addr && !*(*s).clean.get() {
                self.bins.remove(s);
                *(*s).clean.get() = true;
                self.clean.insert(s);
            }
        }
    }

    /// Records the first `npages` pages from `start`, free pages just
    /// released by [`MHeap::release_before_free`], as released.
    fn mark_released_locked(&mut self, map: &PageMap, start: usize, npages: usize) {
        let zeroes = self.source.released_reads_zero();
        map.for_each_chunk(start, npages, |c, lo, hi| {
            // SAFETY: heap lock held.
            unsafe {
                set_bits(&mut *c.released.get(), lo, hi);
                if zeroes {
                    clear_bits(&mut *c.dirty.get(), lo, hi);
                }
            }
        });
        self.released_pages += npages;
        self.scavenged_pages += npages as u64;
        self.rebin_released_locked(map, start);
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
                    self.bin_remove_locked(left);
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
                self.bin_remove_locked(right);
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
        unsafe { self.bin_insert_locked(map, s) };
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
            // zero: released, not dirty (and free, below).
            unsafe {
                set_bits(&mut *c.released.get(), lo, hi);
                clear_bits(&mut *c.dirty.get(), lo, hi);
            }
        });
        map.for_each_chunk(base, pages, |c, lo, hi| {
            // SAFETY: heap lock held.
            unsafe { set_bits(&mut *c.free.get(), lo, hi) };
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
        while done < budget {
            // The highest unreleased page, then the run of them below it.
            let Some(top) = find_down(map, lo, p, false) else {
                break;
            };
            let run_hi = top + PAGE_SIZE;
            let floor = lo.max(run_hi.saturating_sub((budget - done).saturating_mul(PAGE_SIZE)));
            let run_lo = find_down(map, floor, top, true).map_or(floor, |r| r + PAGE_SIZE);
            let n = (run_hi - run_lo) >> PAGE_SHIFT;
            // SAFETY: `run_lo..run_hi` is free heap memory inside reservations
            // of this source; nothing uses free pages.
            let ok = unsafe {
                self.source
                    .release(NonNull::new_unchecked(run_lo as *mut u8), n << PAGE_SHIFT)
                    .is_ok()
            };
            if !ok {
                return Err(done);
            }
            map.for_each_chunk(run_lo, n, |c, clo, chi| {
                // SAFETY: heap lock held.
                unsafe {
                    set_bits(&mut *c.released.get(), clo, chi);
                    if zeroes {
                        clear_bits(&mut *c.dirty.get(), clo, chi);
                    }
                }
            });
            self.released_pages += n;
            self.rebin_released_locked(map, run_lo);
            done += n;
            p = run_lo;
        }
        Ok(done)
    }

    /// One increment of scavenging: releases at most the policy's step of
    /// free, unreleased pages from the idle list, longest idle block first,
    /// each from its top down. With `Mode::Policy` a block is released in
    /// full once idle for the delay by `now` (with no time given, never),
    /// else only as many pages as the memory limit, and the retained bound
    /// if the block has settled, ask for. Returns the pages released.
    fn scavenge_locked(&mut self, map: &PageMap, now: Option<u64>, mode: Mode) -> usize {
        if let Some(now) = now {
            // SAFETY: lock held.
            unsafe { self.idle.observe(map, now, &self.policy) };
        }
        let step = self.policy.step_pages();
        let mut done = 0;
        let mut refused = false;
        while done < step {
            let b = self.idle.head();
            if b == 0 {
                break;
            }
            // SAFETY: lock held; `b` is linked.
            let (aged, settled) = unsafe {
                (
                    now.is_some_and(|t| IdleList::aged(map, b, t, &self.policy)),
                    self.idle.settled(map, b, &self.policy),
                )
            };
            let want = if mode == Mode::All || aged || self.policy.delay_ns == 0 {
                step - done
            } else {
                let bound = if settled { self.over_bound_pages() } else { 0 };
                (step - done).min(bound.max(self.over_limit_pages()))
            };
            if want == 0 {
                break;
            }
            match self.release_block_locked(map, b, want) {
                Ok(n) if n < want => {
                    // The block has nothing more to release.
                    done += n;
                    // SAFETY: lock held.
                    unsafe { self.idle.pop_front(map) };
                }
                Ok(n) => done += n,
                Err(n) => {
                    done += n;
                    refused = true;
                    break;
                }
            }
        }
        // SAFETY: lock held.
        self.time_deadline = unsafe { self.idle.deadline(map, &self.policy) };
        if refused {
            // Retry later, not in a loop: by time only (frees still try).
            self.retry_at = self.idle.now().saturating_add(RETRY_NS);
        }
        if mode == Mode::Policy {
            self.scavenged_pages += done as u64;
        }
        done
    }

    /// Releases the free, unreleased pages of the block at `block`, from its
    /// top down, at most `budget` of them. `Err` carries the count done
    /// before the source refused.
    fn release_block_locked(
        &mut self,
        map: &PageMap,
        block: usize,
        budget: usize,
    ) -> Result<usize, usize> {
        let zeroes = self.source.released_reads_zero();
        let c = map
            .chunk(block)
            .unwrap_or_else(|| fatal("scavenger: block outside the page map"));
        let first = (block >> PAGE_SHIFT) % PAGES_PER_CHUNK;
        let chunk_base = block & !((1 << CHUNK_SHIFT) - 1);
        // A page to release is free and not released.
        let wanted = |w: usize| {
            // SAFETY: the bitmaps are guarded by the heap lock (held).
            unsafe { (*c.free.get())[w] & !(*c.released.get())[w] }
        };
        let mut done = 0;
        let mut hi = first + (BLOCK_SIZE >> PAGE_SHIFT);
        while done < budget {
            let Some(top) = last_set(first, hi, wanted) else {
                break;
            };
            let floor = first.max((top + 1).saturating_sub(budget - done));
            let lo = last_set(floor, top, |w| !wanted(w)).map_or(floor, |i| i + 1);
            let n = top + 1 - lo;
            let addr = chunk_base + (lo << PAGE_SHIFT);
            // SAFETY: the pages are free heap pages inside reservations of
            // this source (the free bit is set only for those); nothing
            // uses free pages.
            let ok = unsafe {
                self.source
                    .release(NonNull::new_unchecked(addr as *mut u8), n << PAGE_SHIFT)
                    .is_ok()
            };
            if !ok {
                return Err(done);
            }
            // SAFETY: heap lock held.
            unsafe {
                set_bits(&mut *c.released.get(), lo, top + 1);
                if zeroes {
                    clear_bits(&mut *c.dirty.get(), lo, top + 1);
                }
            }
            self.released_pages += n;
            // The run's lowest page is the only one that can start a free
            // span (free spans never touch each other).
            self.rebin_released_locked(map, addr);
            done += n;
            hi = lo;
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
        // Free bits over every chunk the regions touch (each counted once:
        // regions come highest first, so a shared chunk comes twice in a row).
        let mut free_bits = 0;
        let mut last_chunk = usize::MAX;
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
            let mut c = (rend - 1) >> CHUNK_SHIFT;
            loop {
                if c != last_chunk {
                    free_bits += free_in(map, c << CHUNK_SHIFT, PAGES_PER_CHUNK);
                    last_chunk = c;
                }
                if c == rstart >> CHUNK_SHIFT {
                    break;
                }
                c -= 1;
            }
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
                        assert_eq!(free_in(map, p, pages), 0, "an in-use page is marked free");
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
                        let rel = released_in(map, p, pages);
                        assert_eq!(
                            free_in(map, p, pages),
                            pages,
                            "a free page is not marked free"
                        );
                        // Every block with a free page not released is idle.
                        let mut b = p & !(BLOCK_SIZE - 1);
                        while b < s.end() {
                            let lo = b.max(p);
                            let n = (s.end().min(b + BLOCK_SIZE) - lo) >> PAGE_SHIFT;
                            if released_in(map, lo, n) < n {
                                // SAFETY: lock held; `b` holds heap pages.
                                let linked = unsafe { IdleList::linked(map, b) };
                                assert!(linked, "a block with dirty free pages is not idle");
                            }
                            b += BLOCK_SIZE;
                        }
                        walk.released += rel << PAGE_SHIFT;
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
        for (bins, clean) in [(&self.bins, false), (&self.clean, true)] {
            // SAFETY: lock held.
            unsafe {
                bins.for_each(|s, index| {
                    let s = &*s;
                    assert_eq!(s.state(), SpanState::Free, "a binned span is not free");
                    assert_eq!(
                        index,
                        BinIndex::of(s.npages()),
                        "a free span is in the wrong bin"
                    );
                    assert_eq!(*s.clean.get(), clean, "a span's clean flag is wrong");
                    assert_eq!(
                        released_in(map, s.start(), 1) == 1,
                        clean,
                        "a free span is binned as {} but its first page is not",
                        if clean { "released" } else { "dirty" }
                    );
                    linked += 1;
                });
            }
            assert!(bins.masks_consistent(), "bin masks disagree with the lists");
        }
        assert_eq!(
            linked, walk.free_spans,
            "binned spans != free spans in the walk"
        );
        assert_eq!(
            free_bits << PAGE_SHIFT,
            walk.free,
            "pages marked free outside the free spans"
        );
        // SAFETY: lock held.
        unsafe {
            self.idle.check(map, |b| {
                let mut r = self.regions;
                let mut inside = false;
                while !r.is_null() {
                    inside |= (*r).start < b + BLOCK_SIZE && b < (*r).end;
                    r = (*r).lower;
                }
                assert!(inside, "an idle block holds no heap page");
            });
        }
        let counted = self.stats();
        walk.resident = walk.mapped - walk.released + walk.metadata;
        walk.scavenge_steps = counted.scavenge_steps;
        walk.scavenged = counted.scavenged;
        walk.released_on_request = counted.released_on_request;
        assert_eq!(counted, walk, "counters disagree with the heap walk");
        walk
    }
}

/// How many of the `npages` pages from `start` are released. Heap lock held.
fn released_in(map: &PageMap, start: usize, npages: usize) -> usize {
    let mut n = 0;
    map.for_each_chunk(start, npages, |c, lo, hi| {
        // SAFETY: the bitmaps are guarded by the heap lock (caller).
        n += count_bits(unsafe { &*c.released.get() }, lo, hi);
    });
    n
}

/// How many of the `npages` pages from `start` are marked free. Heap lock
/// held.
fn free_in(map: &PageMap, start: usize, npages: usize) -> usize {
    let mut n = 0;
    map.for_each_chunk(start, npages, |c, lo, hi| {
        // SAFETY: the bitmaps are guarded by the heap lock (caller).
        n += count_bits(unsafe { &*c.free.get() }, lo, hi);
    });
    n
}

/// The highest page in `lo..hi` (page-aligned addresses, inside registered
/// chunks) whose released bit is `released`. Heap lock held.
fn find_down(map: &PageMap, lo: usize, hi: usize, released: bool) -> Option<usize> {
    let lo_page = lo >> PAGE_SHIFT;
    let mut page = hi >> PAGE_SHIFT;
    while page > lo_page {
        let top = page - 1;
        let chunk_first = top - top % PAGES_PER_CHUNK;
        let from = chunk_first.max(lo_page);
        let c = map
            .chunk(top << PAGE_SHIFT)
            .unwrap_or_else(|| fatal("page map chunk missing"));
        // SAFETY: the bitmaps are guarded by the heap lock (caller).
        let bits = unsafe { &*c.released.get() };
        let word = |w: usize| if released { bits[w] } else { !bits[w] };
        if let Some(i) = last_set(from - chunk_first, top - chunk_first + 1, word) {
            return Some((chunk_first + i) << PAGE_SHIFT);
        }
        page = from;
    }
    None
}
