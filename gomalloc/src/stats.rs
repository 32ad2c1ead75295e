//! `stats()`: a snapshot of the allocator's counters, in the shape of Go's
//! `runtime.MemStats` where it applies, and the printer behind
//! `GOMALLOC_SHOW_STATS=1` and the C ABI's `malloc_stats()`.
//!
//! Every statistic is declared once, in the `stats!` table below: its field,
//! its documentation and the name it is printed under (Go's, where Go has
//! the same statistic) come from that one line; [`stats`] computes them.
//!
//! Taken without stopping the world: the page heap's counters under its lock
//! (briefly), the central lists' counters lock-free, and every thread
//! cache's per-class counters under the registry lock (only thread creation
//! and exit wait on it). Counters of threads that run meanwhile may be a
//! few operations apart from each other.

use crate::global::{CENTRAL, HEAP, LARGE_ALLOCS, LARGE_BYTES, LARGE_FREES, LARGE_LIVE_BYTES};
use crate::print::StackBuf;
use crate::thread::{for_each_cache, live_caches, record_bytes};
use core::fmt::Write;
use core::sync::atomic::Ordering::Relaxed;
use mheap::HeapStats;
use sizeclass::{NUM_CLASSES, SIZE_CLASSES};

/// Counters of one size class (Go's `MemStats.BySize`, and the central
/// list's span counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Object size of the class, in bytes.
    pub size: usize,
    /// Objects allocated, ever.
    pub allocs: u64,
    /// Objects freed, ever.
    pub frees: u64,
    /// Spans the central list holds with objects to give.
    pub partial_spans: usize,
    /// Spans the central list holds with none.
    pub full_spans: usize,
    /// Spans taken from the page heap, ever.
    pub spans_from_heap: u64,
    /// Spans given back to the page heap, ever.
    pub spans_to_heap: u64,
}

/// Declares the statistics: `field, "printed name": doc;`, each once.
macro_rules! stats {
    ($($(#[doc = $doc:literal])+ $field:ident, $name:literal;)+) => {
        /// A snapshot of gomalloc's statistics (see [`stats`]). Byte counts
        /// are in bytes; Go's `MemStats` names are given where Go has the
        /// same statistic.
        #[derive(Debug, Clone, Copy)]
        pub struct Stats {
            $($(#[doc = $doc])+ pub $field: u64,)+
            /// Per size class (Go's `BySize`); index 0 (large objects) is
            /// unused.
            pub by_size: [ClassStats; NUM_CLASSES],
            /// The page heap's own counters, as `mheap` keeps them.
            pub heap: HeapStats,
        }

        impl Stats {
            /// Every statistic as (printed name, value), in declaration
            /// order.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$(($name, self.$field)),+].into_iter()
            }
        }
    };
}

stats! {
    /// Bytes of live objects (Go's `HeapAlloc` and `Alloc`): small objects
    /// at their class size, large ones at their span's size.
    heap_alloc, "HeapAlloc";
    /// Bytes of objects allocated, ever (counted like `heap_alloc`).
    total_alloc, "TotalAlloc";
    /// Bytes obtained from the OS: heap address space and metadata.
    sys, "Sys";
    /// Objects allocated, ever.
    mallocs, "Mallocs";
    /// Objects freed, ever.
    frees, "Frees";
    /// Live objects.
    heap_objects, "HeapObjects";
    /// Bytes of heap address space (in spans and free).
    heap_sys, "HeapSys";
    /// Bytes in free spans of the heap, released or not.
    heap_idle, "HeapIdle";
    /// Bytes in spans handed out (to objects, thread caches and the cache
    /// records).
    heap_inuse, "HeapInuse";
    /// Bytes of free spans given back to the OS.
    heap_released, "HeapReleased";
    /// Estimated resident bytes of the heap: address space minus what was
    /// released, plus metadata.
    heap_resident, "HeapResident";
    /// Bytes of heap metadata (span records, page map).
    metadata_sys, "MetaSys";
    /// Spans handed out.
    spans_inuse, "SpansInuse";
    /// Free spans of the heap.
    spans_free, "SpansFree";
    /// Spans on the central lists (partial and full).
    spans_central, "SpansCentral";
    /// Large objects allocated, ever.
    large_allocs, "LargeAllocs";
    /// Large objects freed, ever.
    large_frees, "LargeFrees";
    /// Thread caches in use (one per thread that allocated and is alive).
    thread_caches, "ThreadCaches";
    /// Bytes of the spans that hold thread cache records.
    cache_sys, "MCacheSys";
    /// Bytes the scavenger gave back to the OS by policy, ever.
    scavenged, "Scavenged";
    /// Bytes given back on request (`release_memory`, `malloc_trim`),
    /// ever.
    released_on_request, "ReleasedOnRequest";
    /// Scavenger increments run, ever.
    scavenge_steps, "ScavengeSteps";
}

impl Stats {
    /// Small objects allocated, ever, over all classes.
    pub fn small_allocs(&self) -> u64 {
        self.by_size.iter().map(|c| c.allocs).sum()
    }

    /// Small objects freed, ever, over all classes.
    pub fn small_frees(&self) -> u64 {
        self.by_size.iter().map(|c| c.frees).sum()
    }
}

/// Takes a snapshot of gomalloc's statistics. Never allocates.
pub fn stats() -> Stats {
    crate::options::ensure();
    let mut by_size = [ClassStats::default(); NUM_CLASSES];
    let mut spans_central = 0u64;
    for (class, c) in by_size.iter_mut().enumerate().skip(1) {
        let central = CENTRAL.class_stats(class);
        *c = ClassStats {
            size: SIZE_CLASSES.size_of_class(class),
            allocs: central.allocs,
            frees: central.frees,
            partial_spans: central.partial,
            full_spans: central.full,
            spans_from_heap: central.spans_from_source,
            spans_to_heap: central.spans_to_source,
        };
        spans_central += (central.partial + central.full) as u64;
    }
    let mut add = |cache: &mcache::MCache| {
        for (class, c) in by_size.iter_mut().enumerate().skip(1) {
            let (a, f) = cache.counts(class);
            c.allocs += a;
            c.frees += f;
        }
    };
    for_each_cache(&mut add);
    crate::thread::with_orphan(|cache| add(cache));
    let (mut small_live, mut small_total, mut small_allocs, mut small_frees) = (0, 0, 0, 0);
    for c in &by_size[1..] {
        let size = c.size as u64;
        small_live += c.allocs.saturating_sub(c.frees) * size;
        small_total += c.allocs * size;
        small_allocs += c.allocs;
        small_frees += c.frees;
    }
    let (large_allocs, large_frees) = (LARGE_ALLOCS.load(Relaxed), LARGE_FREES.load(Relaxed));
    let mallocs = small_allocs + large_allocs;
    let frees = small_frees + large_frees;
    let heap = HEAP.stats();
    Stats {
        heap_alloc: small_live + LARGE_LIVE_BYTES.load(Relaxed),
        total_alloc: small_total + LARGE_BYTES.load(Relaxed),
        sys: (heap.mapped + heap.metadata) as u64,
        mallocs,
        frees,
        heap_objects: mallocs.saturating_sub(frees),
        heap_sys: heap.mapped as u64,
        heap_idle: heap.free as u64,
        heap_inuse: heap.in_use as u64,
        heap_released: heap.released as u64,
        heap_resident: heap.resident as u64,
        metadata_sys: heap.metadata as u64,
        spans_inuse: heap.spans_in_use as u64,
        spans_free: heap.free_spans as u64,
        spans_central,
        large_allocs,
        large_frees,
        thread_caches: live_caches() as u64,
        cache_sys: record_bytes() as u64,
        scavenged: heap.scavenged,
        released_on_request: heap.released_on_request,
        scavenge_steps: heap.scavenge_steps,
        by_size,
        heap,
    }
}

/// Prints the statistics to file descriptor `fd` without allocating: one
/// line per statistic, then one per size class that was used.
pub fn print_stats(fd: i32) {
    let s = stats();
    let mut b = StackBuf::<4096>::new();
    let _ = writeln!(b, "gomalloc statistics");
    for (name, v) in s.fields() {
        if b.room() < 64 {
            b.write_to(fd);
        }
        let _ = writeln!(b, "  {name:<18} {v:>16}");
    }
    let _ = writeln!(
        b,
        "  {:>5} {:>7} {:>14} {:>14} {:>8} {:>8}",
        "class", "size", "mallocs", "frees", "partial", "full"
    );
    for (class, c) in s.by_size.iter().enumerate().skip(1) {
        if c.allocs == 0 && c.partial_spans == 0 && c.full_spans == 0 {
            continue;
        }
        if b.room() < 80 {
            b.write_to(fd);
        }
        let _ = writeln!(
            b,
            "  {class:>5} {:>7} {:>14} {:>14} {:>8} {:>8}",
            c.size, c.allocs, c.frees, c.partial_spans, c.full_spans
        );
    }
    b.write_to(fd);
}

/// At exit (`.fini_array`, which runs without `atexit`'s allocation):
/// prints the statistics to stderr when `GOMALLOC_SHOW_STATS` asks for
/// them.
extern "C" fn at_exit() {
    if crate::options::SHOW_STATS.load(Relaxed) {
        print_stats(2);
    }
}

#[used]
#[unsafe(link_section = ".fini_array")]
static AT_EXIT: extern "C" fn() = at_exit;
