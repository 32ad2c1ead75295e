//! The scavenger: free pages go back to the OS by themselves.
//!
//! A free page of the heap is either **dirty** (resident: it was used since
//! it was last released, or never released) or **released** (given back with
//! `madvise`, tracked page by page in the page map's `released` bitmap).
//! Scavenging releases dirty free pages by policy, so that a program that
//! frees a lot gets its resident memory back without calling anything, the
//! way Go's scavenger does. [`MHeap::release`](crate::MHeap::release) (by
//! address, on request) and [`MHeap::release_all`](crate::MHeap::release_all)
//! still exist for explicit calls.
//!
//! # The policy ([`ScavengePolicy`])
//!
//! Dirty free pages are released, longest idle first, when any of three
//! rules asks for it:
//!
//! 1. **Retained bound.** At most `retain_min_bytes + retain_percent% × in
//!    use` bytes stay dirty and free; the excess is released at once,
//!    whatever its age, except memory freed in the last two generations (at
//!    most 500 ms, see below). Defaults 4 MiB and 10%: Go keeps at most 10%
//!    over its heap goal, and the goal never falls below 4 MiB (Go's
//!    `heapminimum`). The floor keeps small programs from paying an
//!    `madvise` and the page faults after it (measured below: a released
//!    page costs six to eight times its `madvise` when it is used again)
//!    for every span they churn; an arena's worth (64 MiB) would let a program
//!    that has freed everything sit on 64 MiB for a whole delay, the
//!    resident size the benchmark allows at most.
//! 2. **Idle delay.** A dirty free page that has stayed free for `delay_ns`
//!    is released even under the bound. Default 1 s: memory that a program
//!    frees and takes again within a second (phases, churn of large
//!    objects) never pays the release and the refaults; memory that stays
//!    free comes back within about 1.25 s (see "Idle time" below). `0`
//!    releases every free page at once; [`ScavengePolicy::NEVER`] turns the
//!    rule off. A change of the delay applies at once to all free memory.
//! 3. **Soft memory limit** (Go's `GOMEMLIMIT`). When the heap's resident
//!    estimate (mapped − released + metadata) exceeds 95% of
//!    `memory_limit`, dirty free pages are released, whatever their age,
//!    until it is back under 95% or no dirty free page is left. The limit
//!    is soft: memory in use is never refused because of it. Off by default.
//!
//! And one rule outside the idle list, off by default: **a huge span goes
//! back as it is freed.** A span of at least `release_at_free_bytes` is
//! released by the thread that frees it, before it joins the free spans,
//! in `step_bytes` steps with the heap lock taken for each (the span is
//! still the caller's, so nothing else can take it meanwhile), as glibc's
//! malloc unmaps a block of 32 MiB and more at once. It is off because the
//! heap's placement already keeps such memory from piling up: requests of
//! 1 MiB and more take resident free memory first (`heap.rs`,
//! "Allocation"), so a program that frees a 256 MiB buffer and builds
//! another one builds it on the same pages. On the comparison suite's
//! `realloc` workload (a `Vec` grown to 256 MiB three times) the rule at
//! 32 MiB leaves peak RSS where it is (266 MiB, glibc's 264) and makes the
//! run 1.6 times longer: every round faults its 256 MiB in again. A program
//! that frees a huge block and then wants its memory given back before the
//! delay has passed can turn it on (`GOMALLOC_RELEASE_AT_FREE=32M`).
//!
//! Every increment of scavenging releases at most `step_bytes` (default
//! 1 MiB) so that no allocation or free that does one pays a long pause.
//! The release is an `madvise` made under the heap lock (the page source is
//! only reached under it), so the step also bounds how long other threads
//! wait for the lock. Measured on this project's 2-core VM (release build,
//! `tests/scavenge_os_rss.rs`, `print_release_costs`): a 1 MiB step of
//! touched memory takes about 67 µs (the longest seen 160 µs); per MiB,
//! 256 KiB steps cost about the same (69 µs), 4 MiB steps a little less
//! (63 µs, but up to 460 µs each) and 64 KiB steps much more (110 µs);
//! touching released memory again costs 400–550 µs per MiB.
//!
//! # Idle time: per 2 MiB block, dated by the scavenger
//!
//! Idle time is kept per 2 MiB block of address space, as Go keeps it per
//! chunk of its page allocator, not per free span: spans coalesce, and a
//! span that merges memory freed a moment ago with memory idle for minutes
//! has no single age. (With one time per span, taking the newest lets a
//! small span that is freed and re-taken over and over keep a large idle
//! neighbour young forever; taking the oldest releases a span just freed
//! because it touches old free memory, and the program pays an `madvise` and
//! the refaults on every round.) Per block, such churn keeps only its own
//! block young.
//!
//! The blocks that hold free pages not yet released sit on the **idle
//! list** in the order they were last freed into (head: longest idle); the
//! record of each lives in the page map's chunk (`BlockMeta`). Freeing pages
//! moves their blocks to the tail, **pending**: no clock is read on the free
//! path. The scavenger, which is given the time, **dates** the pending
//! blocks with it once they have been pending for a *generation* (a quarter
//! of the delay, at most 250 ms): their pages were freed no later than
//! that, so a block dated `t` is released by the delay rule once
//! `t + delay <= now`. Never early, whatever the gaps between calls; no
//! later than `delay + delay/4` after the free when the scavenger is called
//! that often (its background thread wakes exactly then:
//! [`MHeap::wait_for_scavenge_work`](crate::MHeap::wait_for_scavenge_work)).
//! A block freed into again while pending stays where it is, so the free
//! path's cost is one page-map walk and a compare in the common case.
//!
//! The retained bound takes a block only once it has been idle for a
//! generation after it was dated (the memory limit takes any block): a block
//! freed into at least once a generation, such as the pages of an object
//! that a program with little else in use allocates and frees over and over
//! (larger than the bound's floor), never pays a release and the refaults
//! after it; memory that stays free falls under the bound within two
//! generations (at most 500 ms).
//!
//! A block leaves the list when the scavenger finds no free, unreleased page
//! left in it (allocation and release by address leave it there; the list
//! is only read from its head). Within a block, pages are released from the
//! top down: allocation cuts spans from their low end, so a partly released
//! block keeps its dirty pages where the next allocation takes them.
//!
//! # What runs the scavenger
//!
//! - The heap itself, under the lock it already holds: `free_span` (and an
//!   allocation that re-commits released pages) does one increment when the
//!   memory limit is exceeded, the retained bound is and a block has
//!   settled, or the delay is 0. These need no clock (settling is judged by
//!   the latest time the heap was given).
//! - The tier above: [`MHeap::scavenge_step`](crate::MHeap::scavenge_step)
//!   (or `scavenge_step_now`) on its slow paths: one atomic load and a
//!   compare when there is nothing to do, else one increment. It is what
//!   applies the delay rule.
//! - A background thread for idle programs:
//!   `loop { heap.wait_for_scavenge_work(..); heap.scavenge_step_now(); }`.
//!   The heap publishes the earliest time at which it has work (`work_at`);
//!   the thread sleeps on a futex until then and is woken early when a free
//!   makes that time earlier.

use crate::fatal::fatal;
use crate::pagemap::{CHUNK_SHIFT, PageMap};
use crate::sync::{futex_wait_for, futex_wake_all};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use sizeclass::{PAGE_SHIFT, PAGE_SIZE};

/// log2 of the bytes of a block, the unit of idle time.
pub(crate) const BLOCK_SHIFT: usize = 21;
/// Bytes of a block (2 MiB).
pub(crate) const BLOCK_SIZE: usize = 1 << BLOCK_SHIFT;
/// Blocks per page-map chunk.
pub(crate) const BLOCKS_PER_CHUNK: usize = 1 << (CHUNK_SHIFT - BLOCK_SHIFT);

/// `BlockMeta::since` of a block on no idle list (zeroed memory is a valid
/// record).
const NOT_IDLE: u64 = 0;
/// `BlockMeta::since` of a block freed into since the last dating.
const PENDING: u64 = u64::MAX;
/// The longest generation (a quarter of the delay, capped): how long blocks
/// stay pending at most, and how long a dated block waits before the
/// retained bound may take it.
const MAX_PERIOD: u64 = 250_000_000;

/// When the source refused a release, the time-driven scavenger waits this
/// long before it tries again (nanoseconds).
pub(crate) const RETRY_NS: u64 = 100_000_000;

/// When and how much the heap gives free memory back to the OS by itself.
/// The [module docs](self) give the rules and why the defaults are what
/// they are.
///
/// Set at any time with
/// [`MHeap::set_scavenge_policy`](crate::MHeap::set_scavenge_policy); it
/// applies from the next heap operation, to all free memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScavengePolicy {
    /// Dirty free memory allowed beyond `retain_min_bytes`, in percent of the
    /// bytes in use. Default 10.
    pub retain_percent: u32,
    /// Dirty free memory always allowed (bytes). Default 4 MiB;
    /// `usize::MAX` turns the retained bound off.
    pub retain_min_bytes: usize,
    /// How long a free page stays dirty before it is released even under the
    /// bound (nanoseconds). Default 1 s; 0: at once; [`Self::NEVER`]: never
    /// by age.
    pub delay_ns: u64,
    /// The most one scavenging increment releases (bytes, rounded down to
    /// whole pages, at least one page). Default 1 MiB.
    pub step_bytes: usize,
    /// Soft limit on the heap's resident memory (bytes): above 95% of it,
    /// free pages are released whatever their age. Default `None`.
    pub memory_limit: Option<usize>,
    /// A span at least this long (bytes) goes back to the OS as it is freed
    /// ([`MHeap::free_span`](crate::MHeap::free_span)), whatever the delay
    /// and the retained bound. Default `usize::MAX`: never.
    pub release_at_free_bytes: usize,
}

impl ScavengePolicy {
    /// A `delay_ns` that never comes: no release by age.
    pub const NEVER: u64 = u64::MAX;

    /// The defaults: keep 4 MiB + 10% of what is in use, release what has
    /// been free for a second, 1 MiB per increment, no memory limit.
    pub const DEFAULT: Self = Self {
        retain_percent: 10,
        retain_min_bytes: 4 << 20,
        delay_ns: 1_000_000_000,
        step_bytes: 1 << 20,
        memory_limit: None,
        release_at_free_bytes: usize::MAX,
    };

    /// No release by policy at all: only explicit calls
    /// ([`release`](crate::MHeap::release),
    /// [`release_all`](crate::MHeap::release_all)) give memory back.
    pub const MANUAL: Self = Self {
        retain_percent: 0,
        retain_min_bytes: usize::MAX,
        delay_ns: Self::NEVER,
        step_bytes: 1 << 20,
        memory_limit: None,
        release_at_free_bytes: usize::MAX,
    };

    /// Pages one increment may release.
    pub(crate) fn step_pages(&self) -> usize {
        (self.step_bytes >> PAGE_SHIFT).max(1)
    }

    /// Dirty free pages the retained bound allows with `in_use` pages in use.
    #[inline]
    pub(crate) fn retain_pages(&self, in_use: usize) -> usize {
        (self.retain_min_bytes >> PAGE_SHIFT)
            .saturating_add(in_use.saturating_mul(self.retain_percent as usize) / 100)
    }

    /// The resident size (bytes) above which the memory limit asks for
    /// release: 95% of the limit (Go's target), `usize::MAX` without one.
    pub(crate) fn limit_target(&self) -> usize {
        self.memory_limit.map_or(usize::MAX, |l| l - l / 20)
    }

    /// How long blocks stay pending (a generation): a quarter of the
    /// delay, at most 250 ms.
    #[inline]
    fn period(&self) -> u64 {
        (self.delay_ns / 4).clamp(1, MAX_PERIOD)
    }
}

impl Default for ScavengePolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The monotonic clock the scavenger's `_now` entry points read:
/// `CLOCK_MONOTONIC_COARSE` on Linux (a few ns through the vDSO, ~4 ms
/// resolution, plenty for delays of a second), `CLOCK_MONOTONIC` elsewhere,
/// in nanoseconds. Whoever passes times to
/// [`MHeap::scavenge_step`](crate::MHeap::scavenge_step) directly must use
/// one clock for a heap's whole life; this one, if it also uses the `_now`
/// functions or [`MHeap::wait_for_scavenge_work`](crate::MHeap::wait_for_scavenge_work).
pub fn monotonic_ns() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let id = libc::CLOCK_MONOTONIC_COARSE;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let id = libc::CLOCK_MONOTONIC;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; `clock_gettime` writes only
    // it and cannot fail for a monotonic clock.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The idle record of one 2 MiB block, in its page-map chunk. Guarded by
/// the heap lock; reached only through raw pointers ([`IdleList`]'s
/// methods), since the records of one chunk share one cell.
#[derive(Clone, Copy)]
pub(crate) struct BlockMeta {
    /// `NOT_IDLE`, `PENDING`, or the time (at least 1) by which the block's
    /// free pages were all free.
    since: u64,
    /// The previous block on the idle list (its address), 0 if none.
    prev: usize,
    /// The next block on the idle list, 0 if none.
    next: usize,
}

/// The record of the block at `block` (a block address in a registered
/// chunk).
///
/// # Safety
///
/// Heap lock held; no reference to the record exists.
#[inline]
unsafe fn meta(map: &PageMap, block: usize) -> *mut BlockMeta {
    let c = map
        .chunk(block)
        .unwrap_or_else(|| fatal("scavenger: block outside the page map"));
    let i = (block >> BLOCK_SHIFT) & (BLOCKS_PER_CHUNK - 1);
    // SAFETY: `i < BLOCKS_PER_CHUNK`, inside the chunk's array.
    unsafe { c.blocks.get().cast::<BlockMeta>().add(i) }
}

/// The blocks that may hold free, unreleased pages, longest idle first, and
/// the generation clock that dates them. See the module docs.
///
/// Invariants: every block holding a free page that is not released is
/// linked (blocks with none may be too, until the scavenger meets them);
/// linked blocks hold heap pages; a linked block's `since` is `PENDING` or a
/// time, an unlinked one's `NOT_IDLE`; times are non-decreasing from the
/// head, and `PENDING` blocks form the tail; `head_since` is the head's
/// `since`; `hot` is 0 or a `PENDING` block. Guarded by the heap lock.
pub(crate) struct IdleList {
    /// First block (its address), 0 if none.
    head: usize,
    /// The head block's `since` (`NOT_IDLE` if none), kept here so that the
    /// free path's policy check needs no page-map walk.
    head_since: u64,
    /// Last block, 0 if none.
    tail: usize,
    /// A block known to be pending (0 if none): the last one freed into,
    /// so that frees into it again need no page-map walk.
    hot: usize,
    /// When the current generation began: the last dating of pending
    /// blocks (0 before the first).
    gen_start: u64,
    /// The latest time the heap was given.
    now: u64,
}

impl IdleList {
    pub(crate) const fn new() -> Self {
        Self {
            head: 0,
            head_since: NOT_IDLE,
            tail: 0,
            hot: 0,
            gen_start: 0,
            now: 0,
        }
    }

    /// The longest idle block, 0 if none.
    pub(crate) fn head(&self) -> usize {
        self.head
    }

    /// The latest time the heap was given (0 before the first).
    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    /// Moves the blocks of `start .. start + npages` (pages just freed) to
    /// the tail, pending, unless they are pending already. Returns whether
    /// any block became pending.
    ///
    /// # Safety
    ///
    /// Heap lock held; the range holds heap pages.
    #[inline]
    pub(crate) unsafe fn touch(&mut self, map: &PageMap, start: usize, npages: usize) -> bool {
        let first = start & !(BLOCK_SIZE - 1);
        let end = start + (npages << PAGE_SHIFT);
        if first == self.hot && end <= first + BLOCK_SIZE {
            return false;
        }
        let mut moved = false;
        let mut b = first;
        while b < end {
            // SAFETY: caller's contract; records are reached one at a time.
            unsafe {
                let since = (*meta(map, b)).since;
                if since != PENDING {
                    if since != NOT_IDLE {
                        self.unlink(map, b);
                    }
                    self.push_back(map, b, PENDING);
                    moved = true;
                }
            }
            self.hot = b;
            b += BLOCK_SIZE;
        }
        moved
    }

    /// Links `block` at the tail with `since`.
    ///
    /// # Safety
    ///
    /// Heap lock held; `block` is unlinked and lies in a registered chunk.
    unsafe fn push_back(&mut self, map: &PageMap, block: usize, since: u64) {
        // SAFETY: caller's contract; records are reached one at a time.
        unsafe {
            let m = meta(map, block);
            (*m).since = since;
            (*m).prev = self.tail;
            (*m).next = 0;
            if self.tail == 0 {
                self.head = block;
                self.head_since = since;
            } else {
                (*meta(map, self.tail)).next = block;
            }
        }
        self.tail = block;
    }

    /// Unlinks `block`.
    ///
    /// # Safety
    ///
    /// Heap lock held; `block` is linked.
    unsafe fn unlink(&mut self, map: &PageMap, block: usize) {
        // SAFETY: caller's contract; linked blocks lie in registered chunks;
        // records are reached one at a time.
        unsafe {
            if self.hot == block {
                self.hot = 0;
            }
            let m = meta(map, block);
            let (prev, next) = ((*m).prev, (*m).next);
            *m = BlockMeta {
                since: NOT_IDLE,
                prev: 0,
                next: 0,
            };
            if prev == 0 {
                self.head = next;
                self.head_since = if next == 0 {
                    NOT_IDLE
                } else {
                    (*meta(map, next)).since
                };
            } else {
                (*meta(map, prev)).next = next;
            }
            if next == 0 {
                self.tail = prev;
            } else {
                (*meta(map, next)).prev = prev;
            }
        }
    }

    /// Unlinks the head block (0 if none).
    ///
    /// # Safety
    ///
    /// Heap lock held.
    pub(crate) unsafe fn pop_front(&mut self, map: &PageMap) {
        if self.head != 0 {
            // SAFETY: the head is linked; lock held (caller).
            unsafe { self.unlink(map, self.head) };
        }
    }

    /// Takes note of the time `now` (times that go backwards are taken as
    /// the latest one seen) and, if the current generation has lasted its
    /// period, dates the pending blocks with it and starts the next.
    ///
    /// # Safety
    ///
    /// Heap lock held.
    pub(crate) unsafe fn observe(&mut self, map: &PageMap, now: u64, policy: &ScavengePolicy) {
        self.now = self.now.max(now).max(1);
        if self.now - self.gen_start < policy.period() {
            return;
        }
        self.gen_start = self.now;
        self.hot = 0;
        let mut b = self.tail;
        while b != 0 {
            // SAFETY: linked blocks lie in registered chunks; lock held.
            unsafe {
                let m = meta(map, b);
                if (*m).since != PENDING {
                    break;
                }
                (*m).since = self.now;
                b = (*m).prev;
            }
        }
        if self.head_since == PENDING {
            self.head_since = self.now;
        }
    }

    /// Whether the pages of `block` have been free for the delay at `now`.
    ///
    /// # Safety
    ///
    /// Heap lock held; `block` is linked.
    pub(crate) unsafe fn aged(
        map: &PageMap,
        block: usize,
        now: u64,
        policy: &ScavengePolicy,
    ) -> bool {
        // SAFETY: caller's contract.
        let since = unsafe { (*meta(map, block)).since };
        match policy.delay_ns {
            0 => true,
            ScavengePolicy::NEVER => false,
            _ if since == PENDING => false,
            delay => since.saturating_add(delay) <= now,
        }
    }

    /// When the pending blocks will be dated (`u64::MAX` if there are none).
    ///
    /// # Safety
    ///
    /// Heap lock held.
    unsafe fn dating_at(&self, map: &PageMap, policy: &ScavengePolicy) -> u64 {
        // SAFETY: the tail is linked; lock held (caller).
        if self.tail != 0 && unsafe { (*meta(map, self.tail)).since } == PENDING {
            self.next_dating(policy)
        } else {
            u64::MAX
        }
    }

    /// When the retained bound may next take a block: when the head block
    /// has been idle a generation since it was dated, or, while it is
    /// pending, when it will be dated (the first step towards that).
    /// `u64::MAX` if the list is empty.
    #[inline]
    pub(crate) fn bound_at(&self, policy: &ScavengePolicy) -> u64 {
        match self.head_since {
            NOT_IDLE => u64::MAX,
            PENDING => self.next_dating(policy),
            since => since.saturating_add(policy.period()),
        }
    }

    /// Whether the retained bound may take the pages of the linked `block`
    /// at the latest time seen.
    ///
    /// # Safety
    ///
    /// Heap lock held; `block` is linked.
    pub(crate) unsafe fn settled(
        &self,
        map: &PageMap,
        block: usize,
        policy: &ScavengePolicy,
    ) -> bool {
        // SAFETY: caller's contract.
        let since = unsafe { (*meta(map, block)).since };
        since != PENDING && since.saturating_add(policy.period()) <= self.now
    }

    /// The time just freed pages would be dated at (they are pending now).
    #[inline]
    pub(crate) fn next_dating(&self, policy: &ScavengePolicy) -> u64 {
        self.gen_start.saturating_add(policy.period())
    }

    /// When the delay rule next has something to do: the time the head block
    /// has been idle for the delay, or, while the head is pending, the time
    /// it will be dated. `u64::MAX`: never.
    ///
    /// # Safety
    ///
    /// Heap lock held.
    pub(crate) unsafe fn deadline(&self, map: &PageMap, policy: &ScavengePolicy) -> u64 {
        if self.head == 0 || policy.delay_ns == ScavengePolicy::NEVER {
            return u64::MAX;
        }
        if policy.delay_ns == 0 {
            return 0;
        }
        let since = self.head_since;
        if since == PENDING {
            self.next_dating(policy)
        } else {
            // SAFETY: lock held (caller).
            let dating = unsafe { self.dating_at(map, policy) };
            since.saturating_add(policy.delay_ns).min(dating)
        }
    }

    /// Calls `f` on every linked block, head first, after checking its links
    /// and order (for invariant checks). Returns the count.
    ///
    /// # Safety
    ///
    /// Heap lock held.
    pub(crate) unsafe fn check(&self, map: &PageMap, mut f: impl FnMut(usize)) -> usize {
        let mut n = 0;
        let mut prev = 0;
        let mut b = self.head;
        let mut last = 1;
        while b != 0 {
            assert!(
                b.is_multiple_of(BLOCK_SIZE),
                "idle list: not a block address"
            );
            // SAFETY: linked blocks lie in registered chunks; lock held.
            let m = unsafe { *meta(map, b) };
            assert_eq!(m.prev, prev, "idle list back link");
            assert!(m.since != NOT_IDLE, "a linked block is marked not idle");
            assert!(m.since >= last, "idle list out of time order");
            assert!(
                m.since == PENDING || m.since <= self.now,
                "a block dated in the future"
            );
            last = m.since;
            f(b);
            prev = b;
            b = m.next;
            n += 1;
        }
        assert_eq!(self.tail, prev, "idle list tail");
        let head_since = if self.head == 0 {
            NOT_IDLE
        } else {
            // SAFETY: the head is linked; lock held (caller).
            unsafe { (*meta(map, self.head)).since }
        };
        assert_eq!(self.head_since, head_since, "idle list head time");
        if self.hot != 0 {
            // SAFETY: as above: a pending block is linked.
            let since = unsafe { (*meta(map, self.hot)).since };
            assert_eq!(since, PENDING, "the hot block is not pending");
        }
        n
    }

    /// Whether `block` is linked (for invariant checks).
    ///
    /// # Safety
    ///
    /// Heap lock held; `block` lies in a registered chunk.
    pub(crate) unsafe fn linked(map: &PageMap, block: usize) -> bool {
        // SAFETY: caller's contract.
        unsafe { (*meta(map, block)).since != NOT_IDLE }
    }
}

/// What the heap publishes outside its lock for the scavenger's callers:
/// the earliest time at which it has work, and a futex word to wait on.
///
/// # Synchronisation
///
/// `work_at` is written only under the heap lock and read by anyone.
/// It may be early (a caller then takes the lock for nothing and it is
/// recomputed) but is never late: every change that creates work makes it
/// earlier before the lock is released. A waiter announces itself in
/// `waiters` and then reads `work_at`; a writer that moves `work_at` earlier
/// stores it and then reads `waiters` (all `SeqCst`), so either the waiter
/// sees the new time or the writer sees the waiter and bumps `seq`, which
/// makes the waiter's futex wait return.
pub(crate) struct Published {
    work_at: AtomicU64,
    seq: AtomicU32,
    waiters: AtomicU32,
}

impl Published {
    pub(crate) const fn new() -> Self {
        Self {
            work_at: AtomicU64::new(u64::MAX),
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// The earliest time at which the scavenger has work (`u64::MAX`: none).
    #[inline]
    pub(crate) fn work_at(&self) -> u64 {
        self.work_at.load(Ordering::Relaxed)
    }

    /// Publishes a new work time; wakes waiters if it moved earlier. Heap
    /// lock held.
    #[inline]
    pub(crate) fn set(&self, at: u64) {
        let old = self.work_at.load(Ordering::Relaxed);
        if at != old {
            self.work_at.store(at, Ordering::SeqCst);
            if at < old && self.waiters.load(Ordering::SeqCst) != 0 {
                self.wake();
            }
        }
    }

    /// Wakes every waiter, if any.
    pub(crate) fn wake_waiters(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        futex_wake_all(&self.seq);
    }

    /// Sleeps until the work time has come (by [`monotonic_ns`]), it moves
    /// earlier, or `max_wait_ns` has passed. Returns whether work is due.
    pub(crate) fn wait(&self, max_wait_ns: u64) -> bool {
        let seq = self.seq.load(Ordering::SeqCst);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let now = monotonic_ns();
        let at = self.work_at.load(Ordering::SeqCst);
        if at > now && max_wait_ns > 0 {
            futex_wait_for(&self.seq, seq, (at - now).min(max_wait_ns));
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        self.work_at() <= monotonic_ns()
    }
}

/// Bytes to pages, rounded up.
pub(crate) fn pages_up(bytes: usize) -> usize {
    bytes.div_ceil(PAGE_SIZE)
}
