//! `stats()`: a snapshot of the allocator's counters.
//!
//! Taken without stopping the world: the page heap's counters under its lock
//! (briefly), the central lists' counters lock-free, and every thread
//! cache's per-class counters under the registry lock (only thread creation
//! and exit wait on it). Counters of threads that run meanwhile may be a
//! few operations apart from each other.

use crate::global::{CENTRAL, HEAP, LARGE_ALLOCS, LARGE_FREES};
use crate::thread::for_each_cache;
use core::sync::atomic::Ordering::Relaxed;
use mheap::HeapStats;
use sizeclass::{NUM_CLASSES, SIZE_CLASSES};

/// Counters of one size class.
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

/// A snapshot of gomalloc's counters.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// The page heap: bytes mapped, in spans, free, released to the OS,
    /// metadata.
    pub heap: HeapStats,
    /// Bytes of small objects live now (objects × class size).
    pub small_bytes_in_use: u64,
    /// Large objects allocated, ever.
    pub large_allocs: u64,
    /// Large objects freed, ever.
    pub large_frees: u64,
    /// Per size class; index 0 (large objects) is unused.
    pub classes: [ClassStats; NUM_CLASSES],
}

impl Stats {
    /// Small objects allocated, ever, over all classes.
    pub fn small_allocs(&self) -> u64 {
        self.classes.iter().map(|c| c.allocs).sum()
    }

    /// Small objects freed, ever, over all classes.
    pub fn small_frees(&self) -> u64 {
        self.classes.iter().map(|c| c.frees).sum()
    }
}

/// Takes a snapshot of gomalloc's counters. Never allocates.
pub fn stats() -> Stats {
    let mut classes = [ClassStats::default(); NUM_CLASSES];
    for (class, c) in classes.iter_mut().enumerate().skip(1) {
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
    }
    let mut add = |cache: &mcache::MCache| {
        for (class, c) in classes.iter_mut().enumerate().skip(1) {
            let (a, f) = cache.counts(class);
            c.allocs += a;
            c.frees += f;
        }
    };
    for_each_cache(&mut add);
    crate::thread::with_orphan(|cache| add(cache));
    let small_bytes_in_use = classes
        .iter()
        .map(|c| c.allocs.saturating_sub(c.frees) * c.size as u64)
        .sum();
    Stats {
        heap: HEAP.stats(),
        small_bytes_in_use,
        large_allocs: LARGE_ALLOCS.load(Relaxed),
        large_frees: LARGE_FREES.load(Relaxed),
        classes,
    }
}
