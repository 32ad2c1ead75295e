//! Thread binding: each thread's pointer to its cache, the records caches
//! live in, and the thread-exit hook that hands a cache back.
//!
//! - **The pointer** is a `const`-initialised `thread_local!` `Cell` of a
//!   type with no destructor: Rust compiles it to a plain TLS slot, so the
//!   fast path pays one TLS load, and no destructor registration (which can
//!   call libc's `calloc`) ever happens for it.
//! - **Records** holding an `MCache` are carved from spans of the page heap,
//!   never from the global allocator, kept on a registry list for
//!   statistics, and re-used by new threads once their thread exits.
//! - **Thread exit**: the first time a thread makes a cache, it stores the
//!   record in a `pthread_key_create` key whose destructor flushes the cache
//!   to the central lists and returns the record; neither step allocates.
//! - **After teardown** (the destructor ran) and while a cache is being
//!   made (re-entry), the thread's pointer holds a sentinel and allocation
//!   goes through one shared cache behind a lock that never allocates
//!   ([`with_orphan`]): slower, always correct.

use crate::global::{CENTRAL, HEAP};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use mcache::MCache;
use mheap::sync::LeafMutex;
use mheap::{PAGE_SIZE, fatal};

/// The thread has no cache yet.
const NONE: usize = 0;
/// The thread is making its cache (a re-entrant allocation sees this).
const MAKING: usize = 1;
/// The thread's cache was handed back at thread exit.
const DEAD: usize = 2;

thread_local! {
    /// The calling thread's cache record, or one of the sentinels above.
    static CACHE: Cell<usize> = const { Cell::new(NONE) };
}

/// The calling thread's cache, if it has a live one. One TLS load.
#[inline(always)]
pub(crate) fn current() -> Option<&'static mut MCache> {
    let p = CACHE.with(|c| c.get());
    if p > DEAD {
        // SAFETY: a value above the sentinels is this thread's record,
        // used by this thread alone until its exit hook runs.
        Some(unsafe { &mut (*(p as *mut Record)).cache })
    } else {
        None
    }
}

/// The calling thread's cache, made on first use; `None` while it is being
/// made, after thread exit, or when no memory is left for it.
#[cold]
#[inline(never)]
pub(crate) fn current_or_make() -> Option<&'static mut MCache> {
    match CACHE.with(|c| c.get()) {
        NONE => {}
        MAKING | DEAD => return None,
        _ => return current(),
    }
    CACHE.with(|c| c.set(MAKING));
    let rec = match Registry::take() {
        Some(r) => r,
        None => {
            CACHE.with(|c| c.set(NONE));
            return None;
        }
    };
    let key = exit_key();
    // SAFETY: `key` is a live key; the value is our record. glibc stores
    // values of the first 32 keys in the thread descriptor; for later keys
    // it may call its own `calloc`, which is libc's, not ours, when gomalloc
    // is a Rust global allocator.
    unsafe { libc::pthread_setspecific(key, rec.cast()) };
    CACHE.with(|c| c.set(rec as usize));
    current()
}

/// A cache record: an `MCache` and the registry's links.
#[repr(C)]
struct Record {
    cache: MCache,
    /// Next record ever made (the registry's list of all records).
    next_all: *mut Record,
    /// Next record in the pool of records free for re-use.
    next_free: *mut Record,
    /// Whether a thread owns the record now.
    live: AtomicBool,
}

/// All cache records: a list of every record made, and a pool of records
/// whose thread exited. Records are never freed, so the list can be walked
/// for statistics while threads come and go.
struct Registry {
    all: *mut Record,
    free: *mut Record,
    /// Unused memory of the last span taken for records.
    carve: usize,
    carve_end: usize,
}

// SAFETY: the registry points to records in heap spans, not tied to any
// thread; it is only reached under its lock.
unsafe impl Send for Registry {}

static REGISTRY: LeafMutex<Registry> = LeafMutex::new(Registry {
    all: ptr::null_mut(),
    free: ptr::null_mut(),
    carve: 0,
    carve_end: 0,
});

/// Pages taken from the heap at a time for cache records.
const RECORD_SPAN_PAGES: usize = 8;

impl Registry {
    /// A record for a new thread: a pooled one, else a new one.
    fn take() -> Option<*mut Record> {
        let mut reg = REGISTRY.lock();
        let rec = if !reg.free.is_null() {
            let r = reg.free;
            // SAFETY: pooled records are valid; the lock is held.
            reg.free = unsafe { (*r).next_free };
            r
        } else {
            let size = size_of::<Record>().next_multiple_of(align_of::<Record>());
            if reg.carve_end - reg.carve < size {
                let span = HEAP.alloc_pages(RECORD_SPAN_PAGES, PAGE_SIZE).ok()?.span;
                reg.carve = span.start();
                reg.carve_end = span.end();
            }
            let r = reg.carve as *mut Record;
            reg.carve += size;
            // SAFETY: `r` is unused, aligned memory of a span we own.
            unsafe {
                r.write(Record {
                    cache: MCache::new(),
                    next_all: reg.all,
                    next_free: ptr::null_mut(),
                    live: AtomicBool::new(false),
                })
            };
            reg.all = r;
            r
        };
        // SAFETY: `rec` is a valid record no thread owns.
        unsafe { (*rec).live.store(true, Ordering::Relaxed) };
        Some(rec)
    }

    /// Returns the record of an exited thread to the pool.
    fn give(rec: *mut Record) {
        let mut reg = REGISTRY.lock();
        // SAFETY: the record is valid and no thread owns it any more.
        unsafe {
            (*rec).live.store(false, Ordering::Relaxed);
            (*rec).next_free = reg.free;
        }
        reg.free = rec;
    }
}

/// Calls `f` on every cache record's cache (live or pooled) under the
/// registry lock, for statistics. Counters are read with relaxed loads.
pub(crate) fn for_each_cache(mut f: impl FnMut(&MCache)) {
    let reg = REGISTRY.lock();
    let mut r = reg.all;
    while !r.is_null() {
        // SAFETY: records are never freed; we only read the counters, which
        // are atomics.
        unsafe {
            f(&(*r).cache);
            r = (*r).next_all;
        }
    }
}

/// The shared cache of threads with no cache of their own.
static ORPHAN: LeafMutex<MCache> = LeafMutex::new(MCache::new());

/// Runs `f` with the shared cache, under its lock.
#[cold]
#[inline(never)]
pub(crate) fn with_orphan<R>(f: impl FnOnce(&mut MCache) -> R) -> R {
    f(&mut ORPHAN.lock())
}

/// Takes the shared cache's and the registry's locks, in that order, and
/// keeps them (for `fork`).
pub(crate) fn lock_for_fork() {
    core::mem::forget(ORPHAN.lock());
    core::mem::forget(REGISTRY.lock());
}

/// Releases what [`lock_for_fork`] took.
///
/// # Safety
///
/// This thread holds both locks through `lock_for_fork` (or is the only
/// thread of a child forked by the thread that did).
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: caller's contract.
    unsafe {
        REGISTRY.force_unlock(parking_lot::lock_api::GuardSend::new());
        ORPHAN.force_unlock(parking_lot::lock_api::GuardSend::new());
    }
}

/// The pthread key whose destructor runs at thread exit; made once.
fn exit_key() -> libc::pthread_key_t {
    static KEY: AtomicUsize = AtomicUsize::new(0);
    // 0: not made; 1: being made; 2 + key: made.
    loop {
        match KEY.load(Ordering::Acquire) {
            0 => {
                if KEY
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire)
                    .is_ok()
                {
                    let mut key: libc::pthread_key_t = 0;
                    // SAFETY: `key` is a valid out-pointer; the destructor
                    // is a plain `extern "C"` function. glibc's
                    // pthread_key_create takes a slot of a static table and
                    // does not allocate.
                    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } != 0 {
                        fatal("pthread_key_create failed: no thread-exit hook");
                    }
                    KEY.store(2 + key as usize, Ordering::Release);
                    return key;
                }
            }
            1 => core::hint::spin_loop(),
            k => return (k - 2) as libc::pthread_key_t,
        }
    }
}

/// The thread-exit hook: flushes the thread's cache to the central lists,
/// returns its record, and marks the thread so that later allocations (by
/// other exit hooks) use the shared cache.
unsafe extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    let rec = value.cast::<Record>();
    if rec.is_null() {
        return;
    }
    CACHE.with(|c| c.set(DEAD));
    // SAFETY: the record was this thread's; no one else uses it.
    let cache = unsafe { &mut (*rec).cache };
    cache.flush(&CENTRAL);
    Registry::give(rec);
}
