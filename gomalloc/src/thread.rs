//! Thread binding: each thread's pointer to its cache, the records caches
//! live in, and the thread-exit hook that hands a cache back.
//!
//! - **The pointer** is one word of thread-local storage with no
//!   destructor (so no destructor registration, which can call libc's
//!   `calloc`, ever happens for it). On x86-64 Linux it is reached with the
//!   initial-exec TLS model written out in assembly, also inside
//!   `libgomalloc.so`, where a `thread_local!` would cost a call to
//!   `__tls_get_addr`; elsewhere it is a `const` `thread_local!`.
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

/// The calling thread's cache record, or one of the sentinels above: one
/// word of thread-local storage, reached with [`slot::get`] and
/// [`slot::set`].
mod slot {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    core::arch::global_asm!(
        // One zero-initialised word in the TLS block of whatever module
        // links gomalloc (the program, or libgomalloc.so). Hidden: the
        // symbol never leaves that module.
        ".pushsection .tbss.gomalloc_thread_cache,\"awT\",@nobits",
        ".p2align 3",
        ".globl gomalloc_thread_cache",
        ".hidden gomalloc_thread_cache",
        ".type gomalloc_thread_cache,@object",
        ".size gomalloc_thread_cache,8",
        "gomalloc_thread_cache:",
        ".zero 8",
        ".popsection",
    );

    /// The word's value for the calling thread.
    ///
    /// x86-64 Linux: the initial-exec TLS model, by hand. A Rust
    /// `thread_local!` compiled into a shared library uses the
    /// general-dynamic model, a call to `__tls_get_addr` on every access
    /// (about 11 instructions, twice per malloc/free pair under
    /// `LD_PRELOAD`); initial-exec is one load of the word's offset from the
    /// GOT and one `%fs`-relative load, and the linker turns it into a
    /// single load in a program. The price: the library needs static TLS,
    /// which a library loaded at start-up (linked or `LD_PRELOAD`) always
    /// has, and glibc reserves room for in libraries opened later.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[inline(always)]
    pub(super) fn get() -> usize {
        let v: usize;
        // SAFETY: reads this thread's copy of `gomalloc_thread_cache`, a
        // word of the TLS block defined above; `%fs` points to the thread's
        // TCB, and the GOT entry holds the word's offset from it.
        unsafe {
            core::arch::asm!(
                "movq gomalloc_thread_cache@GOTTPOFF(%rip), {v}",
                "movq %fs:({v}), {v}",
                v = out(reg) v,
                options(att_syntax, nostack, preserves_flags, readonly, pure),
            )
        };
        v
    }

    /// Sets the word for the calling thread.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[inline(always)]
    pub(super) fn set(v: usize) {
        // SAFETY: writes this thread's copy of the word (see `get`).
        unsafe {
            core::arch::asm!(
                "movq gomalloc_thread_cache@GOTTPOFF(%rip), {off}",
                "movq {v}, %fs:({off})",
                v = in(reg) v,
                off = out(reg) _,
                options(att_syntax, nostack, preserves_flags),
            )
        };
    }

    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    std::thread_local! {
        /// The word, elsewhere: a `const` thread-local with no destructor.
        static CACHE: core::cell::Cell<usize> = const { core::cell::Cell::new(super::NONE) };
    }

    /// The word's value for the calling thread.
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    #[inline(always)]
    pub(super) fn get() -> usize {
        CACHE.with(|c| c.get())
    }

    /// Sets the word for the calling thread.
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    #[inline(always)]
    pub(super) fn set(v: usize) {
        CACHE.with(|c| c.set(v))
    }
}

/// The calling thread's cache, if it has a live one. One TLS load.
#[inline(always)]
pub(crate) fn current() -> Option<&'static mut MCache> {
    let p = slot::get();
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
    match slot::get() {
        NONE => {}
        MAKING | DEAD => return None,
        _ => return current(),
    }
    crate::options::ensure_for_alloc();
    slot::set(MAKING);
    let rec = match Registry::take() {
        Some(r) => r,
        None => {
            slot::set(NONE);
            return None;
        }
    };
    let key = exit_key();
    // SAFETY: `key` is a live key; the value is our record. glibc stores
    // values of the first 32 keys in the thread descriptor; for later keys
    // it may call its own `calloc`, which is libc's, not ours, when gomalloc
    // is a Rust global allocator.
    unsafe { libc::pthread_setspecific(key, rec.cast()) };
    slot::set(rec as usize);
    crate::scavenger::safe_point();
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
    /// A pooled record whose cache still holds spans (its thread exited
    /// without flushing: see [`on_thread_exit`]). Registry lock.
    stocked: bool,
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
    /// Whether that span came zeroed (fresh from the OS).
    carve_zeroed: bool,
    /// Records owned by a live thread.
    live: usize,
    /// Bytes of the spans taken for records.
    span_bytes: usize,
}

// SAFETY: the registry points to records in heap spans, not tied to any
// thread; it is only reached under its lock.
unsafe impl Send for Registry {}

static REGISTRY: LeafMutex<Registry> = LeafMutex::new(Registry {
    all: ptr::null_mut(),
    free: ptr::null_mut(),
    carve: 0,
    carve_end: 0,
    carve_zeroed: false,
    live: 0,
    span_bytes: 0,
});

/// Pages taken from the heap at a time for cache records.
pub(crate) const RECORD_SPAN_PAGES: usize = 8;

impl Registry {
    /// A record for a new thread: a pooled one, else a new one.
    fn take() -> Option<*mut Record> {
        let mut reg = REGISTRY.lock();
        let rec = if !reg.free.is_null() {
            let r = reg.free;
            // SAFETY: pooled records are valid; the lock is held. The new
            // thread takes the cache with whatever spans it still holds.
            unsafe {
                reg.free = (*r).next_free;
                (*r).stocked = false;
                (*r).cache.new_thread();
            }
            r
        } else {
            let size = size_of::<Record>().next_multiple_of(align_of::<Record>());
            if reg.carve_end - reg.carve < size {
                let fresh = HEAP.alloc_pages(RECORD_SPAN_PAGES, PAGE_SIZE).ok()?;
                let span = fresh.span;
                reg.carve = span.start();
                reg.carve_end = span.end();
                reg.carve_zeroed = fresh.zeroed;
                reg.span_bytes += span.bytes();
            }
            let r = reg.carve as *mut Record;
            reg.carve += size;
            // SAFETY: `r` is unused, aligned memory of a span we own, all
            // zero if `carve_zeroed` (nothing was carved over it before).
            // The cache on zeroed pages is not written (`init_at`): a thread
            // touches the pages of the slots it uses only.
            unsafe {
                MCache::init_at(&raw mut (*r).cache, reg.carve_zeroed);
                (&raw mut (*r).next_all).write(reg.all);
                (&raw mut (*r).next_free).write(ptr::null_mut());
                (&raw mut (*r).live).write(AtomicBool::new(false));
                (&raw mut (*r).stocked).write(false);
            }
            reg.all = r;
            r
        };
        reg.live += 1;
        // SAFETY: `rec` is a valid record no thread owns.
        unsafe { (*rec).live.store(true, Ordering::Relaxed) };
        Some(rec)
    }

    /// Returns the record of an exited thread to the pool; `stocked`: its
    /// cache still holds spans.
    fn give(rec: *mut Record, stocked: bool) {
        let mut reg = REGISTRY.lock();
        // SAFETY: the record is valid and no thread owns it any more.
        unsafe {
            (*rec).live.store(false, Ordering::Relaxed);
            (*rec).next_free = reg.free;
            (*rec).stocked = stocked;
        }
        reg.free = rec;
        reg.live -= 1;
    }
}

/// Flushes the caches of pooled records that still hold spans (their
/// threads exited; no thread owns them) back to the central lists: the
/// background thread's sweep and `release_memory` call this. Returns how
/// many it flushed. Holds the registry lock meanwhile, so no new thread
/// takes one of these records halfway (lock order: registry, then a class
/// lock, then the heap's; nothing takes them the other way round).
pub(crate) fn flush_pooled() -> usize {
    let reg = REGISTRY.lock();
    let mut n = 0;
    let mut r = reg.free;
    while !r.is_null() {
        // SAFETY: pooled records are valid, owned by no thread, and only
        // reached under the registry lock, which we hold.
        unsafe {
            if (*r).stocked {
                (*r).cache.flush(&CENTRAL);
                (*r).stocked = false;
                n += 1;
            }
            r = (*r).next_free;
        }
    }
    n
}

/// Thread caches owned by live threads now.
pub(crate) fn live_caches() -> usize {
    REGISTRY.lock().live
}

/// Bytes of the heap spans that hold cache records (class-0 spans that are
/// not large objects: a heap walk must leave them out).
pub(crate) fn record_bytes() -> usize {
    REGISTRY.lock().span_bytes
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
    slot::set(DEAD);
    // With the background thread running, the cache keeps its spans in the
    // pool: the next thread to start takes the record with them, instead of
    // this one giving every span back to the central lists and that one
    // taking them again (the churn workload spent 18% of its time there),
    // and the next sweep (within a quarter of the scavenger delay, at most
    // 250 ms) flushes what no thread took. Without the thread, nothing would
    // sweep: flush now.
    let keep = crate::scavenger::background_thread_running()
        && crate::options::BACKGROUND.load(Ordering::Relaxed);
    if !keep {
        // SAFETY: the record was this thread's; no one else uses it.
        let cache = unsafe { &mut (*rec).cache };
        cache.flush(&CENTRAL);
    }
    Registry::give(rec, keep);
    // The sweep will look at this record's spans, or at those it gave back
    // as partial, which other threads' frees may empty.
    crate::scavenger::thread_exited();
}
