//! Memory goes back to the OS: who drives the page heap's scavenger, the
//! sweep of spans stranded above the heap, and [`release_memory`].
//!
//! The page heap keeps the policy (retained bound, idle delay, memory
//! limit: `mheap::scavenge`); this module decides when it runs and makes
//! sure free memory reaches it:
//!
//! - **Slow paths.** Every span that moves between the central lists and
//!   the heap goes through [`HeapSource`], which runs one scavenger
//!   increment when one is due (one atomic load when none is), as do large
//!   allocations and frees.
//! - **The background thread** (option `background_thread`, on by
//!   default) sleeps until the heap has work or a sweep is due, so that a
//!   program that has gone idle gets its memory back without calling
//!   anything. Every quarter of the scavenger delay (at most 250 ms) while
//!   spans move, backing off to 10 s when nothing does, it **sweeps**: the
//!   central lists give back their partial spans whose objects were all
//!   freed by other threads (`Centrals::sweep_all`), and every thread cache
//!   is asked to give back its wholly free spans at its next refill
//!   (`mcache::request_trim`). The thread is started lazily, the first time
//!   a span goes back to the heap or a thread exits, and only at a *safe
//!   point*: a place in gomalloc where the calling thread holds no
//!   allocator lock and no borrow of its cache, because `pthread_create`
//!   allocates (re-entering gomalloc when it is the C `malloc`). It blocks
//!   every signal, never allocates, and is started again in the child of a
//!   `fork`.
//! - **On request**: [`release_memory`] (and `malloc_trim` in the C ABI).
//!
//! What stays resident without a call: spans that hold live objects, at
//! most the retained bound of free pages for at most the delay, and what
//! the caches of threads that stopped allocating still hold (bounded per
//! class by `mcache::MAX_FULL`, `mcache::MAX_EMPTY_BYTES` and
//! `mcache::STASH_BYTES`).

use crate::global::{CENTRAL, HEAP};
use crate::options;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use mcentral::SpanSource;
use mheap::{Span, monotonic_ns};

/// The central lists' span source: the process heap, running the
/// scavenger's increments on the way.
pub(crate) struct HeapSource;

// SAFETY: delegates to the heap's own `SpanSource` implementation, which
// upholds the trait's contract; the scavenger step touches only free pages.
unsafe impl SpanSource for HeapSource {
    fn alloc_span(&self, class: usize) -> Option<&Span> {
        let s = SpanSource::alloc_span(&HEAP, class);
        TRAFFIC.fetch_add(1, Relaxed);
        tick();
        s
    }

    unsafe fn free_span(&self, span: &Span) {
        // SAFETY: caller's contract.
        unsafe { SpanSource::free_span(&HEAP, span) };
        TRAFFIC.fetch_add(1, Relaxed);
        want_thread();
        tick();
    }

    #[inline(always)]
    unsafe fn span_of(&self, obj: *mut u8) -> &Span {
        // SAFETY: caller's contract.
        unsafe { SpanSource::span_of(&HEAP, obj) }
    }
}

/// One scavenger increment if one is due: a load and a compare when none
/// is (no clock read), else a coarse clock read and at most one step.
#[inline]
pub(crate) fn tick() {
    if HEAP.next_scavenge_deadline().is_some() {
        HEAP.scavenge_step_now();
    }
}

/// Spans moved between the central lists and the heap, ever: the
/// background thread sweeps often while this moves.
static TRAFFIC: AtomicU64 = AtomicU64::new(0);

const NOT_STARTED: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;
const FAILED: u8 = 3;

/// The background thread's state.
static THREAD: AtomicU8 = AtomicU8::new(NOT_STARTED);
/// Set when the thread should be started at the next safe point.
static WANTED: AtomicBool = AtomicBool::new(false);
/// The thread sleeps on this word while switched off; bumped to wake it.
static WAKE: AtomicU32 = AtomicU32::new(0);

/// Asks for the background thread (started at the next safe point).
#[inline]
pub(crate) fn want_thread() {
    if THREAD.load(Relaxed) == NOT_STARTED && !WANTED.load(Relaxed) {
        WANTED.store(true, Relaxed);
    }
}

/// A safe point (see the module docs): starts the background thread if it
/// is wanted. One load of a flag that is false almost always.
#[inline(always)]
pub(crate) fn safe_point() {
    if WANTED.load(Relaxed) {
        start_thread();
    }
}

/// A thread exited: its cache's spans are pooled or on the central lists,
/// and the next sweep should come at the short period.
pub(crate) fn thread_exited() {
    TRAFFIC.fetch_add(1, Relaxed);
    want_thread();
    if BACKED_OFF.load(Relaxed) && BACKED_OFF.swap(false, Relaxed) {
        HEAP.wake_scavenge_waiters();
    }
}

/// Set while the background thread sleeps longer than the sweep period
/// (nothing moved): a thread exit wakes it then, so that the cache it
/// pooled is swept within the period.
static BACKED_OFF: AtomicBool = AtomicBool::new(false);

/// The options changed: wake the thread to re-read them.
pub(crate) fn options_changed() {
    WAKE.fetch_add(1, Relaxed);
    mheap::sync::futex_wake_all(&WAKE);
}

#[cold]
#[inline(never)]
fn start_thread() {
    WANTED.store(false, Relaxed);
    if !options::BACKGROUND.load(Relaxed)
        || THREAD
            .compare_exchange(NOT_STARTED, STARTING, Relaxed, Relaxed)
            .is_err()
    {
        return;
    }
    crate::raw::install_fork_handlers();
    // SAFETY: plain libc calls on valid out-pointers. The new thread
    // inherits the signal mask, so it is created with every signal blocked
    // and the caller's mask is put back right after.
    let ok = unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, 256 << 10);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut tid: libc::pthread_t = 0;
        let r = libc::pthread_create(&mut tid, &attr, background_main, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        if r == 0 {
            libc::pthread_setname_np(tid, c"gomalloc-scav".as_ptr());
        }
        r == 0
    };
    THREAD.store(if ok { RUNNING } else { FAILED }, Relaxed);
}

/// In the child of a `fork` only the forking thread exists: the
/// background thread is wanted again (called by the child's fork handler,
/// `raw::install_fork_handlers`).
pub(crate) fn after_fork_child() {
    if THREAD.load(Relaxed) == RUNNING {
        THREAD.store(NOT_STARTED, Relaxed);
        WANTED.store(true, Relaxed);
    }
}

/// Whether the background thread is running (for tests and stats).
pub fn background_thread_running() -> bool {
    THREAD.load(Relaxed) == RUNNING
}

/// The sweep period while spans move: a quarter of the scavenger delay,
/// between 10 ms and 250 ms.
fn sweep_period() -> u64 {
    (HEAP.scavenge_policy().delay_ns / 4).clamp(10_000_000, 250_000_000)
}

/// The longest the thread sleeps between sweeps when nothing moves.
const MAX_SWEEP_INTERVAL: u64 = 10_000_000_000;

/// The background thread: never allocates, never returns.
extern "C" fn background_main(_: *mut libc::c_void) -> *mut libc::c_void {
    let mut interval = sweep_period();
    let mut seen = TRAFFIC.load(Relaxed);
    let mut next_sweep = monotonic_ns() + interval;
    loop {
        if !options::BACKGROUND.load(Relaxed) {
            // Switched off: exiting threads flush their own caches from now
            // on; flush those pooled before, then sleep until switched on.
            crate::thread::flush_pooled();
            let w = WAKE.load(Relaxed);
            if !options::BACKGROUND.load(Relaxed) {
                mheap::sync::futex_wait_for(&WAKE, w, u64::MAX);
            }
            continue;
        }
        let now = monotonic_ns();
        if HEAP.wait_for_scavenge_work(next_sweep.saturating_sub(now)) {
            // Work is due: increments until it is not (each takes the heap
            // lock for at most one step's `madvise`).
            let mut budget = 4096;
            while budget > 0
                && HEAP
                    .next_scavenge_deadline()
                    .is_some_and(|t| t <= monotonic_ns())
            {
                HEAP.scavenge_step_now();
                budget -= 1;
            }
        }
        let traffic = TRAFFIC.load(Relaxed);
        if traffic != seen {
            // Spans are moving: sweep at the short period again.
            interval = sweep_period();
            next_sweep = next_sweep.min(monotonic_ns() + interval);
        }
        if monotonic_ns() >= next_sweep {
            let swept = sweep();
            if traffic == seen && swept == 0 {
                interval = (interval * 2).min(MAX_SWEEP_INTERVAL);
            }
            seen = TRAFFIC.load(Relaxed);
            next_sweep = monotonic_ns() + interval;
            BACKED_OFF.store(interval > sweep_period(), Relaxed);
        }
    }
}

/// Gives the central lists' wholly free spans back to the heap and asks
/// every thread cache to give back its own at its next refill. Returns the
/// spans the central lists gave back.
fn sweep() -> usize {
    mcache::request_trim();
    crate::thread::flush_pooled() + CENTRAL.sweep_all()
}

/// Gives back to the OS all the memory gomalloc holds free now, and
/// returns how many bytes were released: the calling thread's cache gives
/// back its wholly free spans, the central lists theirs, every other
/// thread's cache does so at its next allocation refill, and every free
/// page of the heap is released. What stays resident is what live objects
/// occupy (their spans), the other threads' caches until they next refill,
/// and metadata. `malloc_trim` of the C ABI calls this.
pub fn release_memory() -> usize {
    options::ensure();
    if let Some(cache) = crate::thread::current() {
        cache.trim(&CENTRAL);
    }
    crate::thread::with_orphan(|cache| cache.trim(&CENTRAL));
    sweep();
    let n = HEAP.release_all();
    safe_point();
    n
}
