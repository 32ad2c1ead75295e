//! [`stats_by_walk`]: the statistics that the counters of [`crate::stats`]
//! claim, recomputed from scratch by walking every span of the heap and
//! every thread cache, for tests (and debugging) to compare the two.

use crate::global::HEAP;
use crate::thread::{for_each_cache, record_bytes, with_orphan};
use mcentral::objects::{FLAGS, list_len_tail};
use mheap::SpanState;
use sizeclass::NUM_CLASSES;

/// What a walk of the heap finds (see [`stats_by_walk`]). Field names are
/// those of the [`crate::Stats`] fields they recompute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapWalk {
    /// Bytes of live objects: small ones at their class size, large ones at
    /// their span's size.
    pub heap_alloc: u64,
    /// Live objects.
    pub heap_objects: u64,
    /// Bytes of heap address space.
    pub heap_sys: u64,
    /// Bytes in free spans.
    pub heap_idle: u64,
    /// Bytes in spans handed out.
    pub heap_inuse: u64,
    /// Bytes of free spans released to the OS, per the page map.
    pub heap_released: u64,
    /// Spans handed out.
    pub spans_inuse: u64,
    /// Free spans.
    pub spans_free: u64,
    /// Large objects live.
    pub large_objects: u64,
    /// Live objects per size class (index 0 unused).
    pub by_size_live: [u64; NUM_CLASSES],
}

/// Recomputes the heap's statistics by walking it: every span (under the
/// heap lock), and for small-object spans the objects that are not free
/// (carved, minus those on the span's own list and its remote stack, minus
/// those thread caches hold on their current span's list and their
/// stashes). Large objects are the class-0 spans other than those that
/// hold the thread caches' records.
///
/// Slow (O(objects)), and exact only while no other thread allocates or
/// frees: a test calls it with every other thread stopped or waiting.
pub fn stats_by_walk() -> HeapWalk {
    crate::options::ensure();
    let mut w = HeapWalk {
        heap_alloc: 0,
        heap_objects: 0,
        heap_sys: 0,
        heap_idle: 0,
        heap_inuse: 0,
        heap_released: 0,
        spans_inuse: 0,
        spans_free: 0,
        large_objects: 0,
        by_size_live: [0; NUM_CLASSES],
    };
    // Objects held by the caches outside their spans' lists, per class.
    let mut held = [0u64; NUM_CLASSES];
    let mut add = |cache: &mcache::MCache| {
        for (class, h) in held.iter_mut().enumerate().skip(1) {
            // SAFETY: the caller guarantees no other thread runs its cache.
            *h += unsafe { cache.held_free(class) } as u64;
        }
    };
    for_each_cache(&mut add);
    with_orphan(|c| add(c));
    let mut large_bytes = 0u64;
    let mut class0_spans = 0u64;
    HEAP.walk_spans(|s| {
        let bytes = s.bytes() as u64;
        w.heap_sys += bytes;
        match s.state() {
            SpanState::Free => {
                w.heap_idle += bytes;
                w.spans_free += 1;
            }
            SpanState::InUse => {
                w.heap_inuse += bytes;
                w.spans_inuse += 1;
                let class = s.size_class() as usize;
                if class == 0 {
                    class0_spans += 1;
                    large_bytes += bytes;
                } else {
                    let o = &s.objects;
                    // SAFETY: quiescent heap (caller): nobody changes the
                    // span's owner-guarded fields or its remote stack.
                    let (carved, nfree, remote) = unsafe {
                        let carved = o.carved.with(|p| *p) as u64;
                        let nfree = o.nfree.with(|p| *p) as u64;
                        let head = (o.remote.load(core::sync::atomic::Ordering::Acquire) & !FLAGS)
                            as *mut u8;
                        (carved, nfree, list_len_tail(head).0 as u64)
                    };
                    w.by_size_live[class] += carved - nfree - remote;
                }
            }
            SpanState::Dead => mheap::fatal("stats_by_walk: a dead span in the heap"),
        }
    });
    w.heap_released = HEAP.check_invariants().released as u64;
    let record_bytes = record_bytes() as u64;
    let record_spans = record_bytes / (crate::thread::RECORD_SPAN_PAGES * mheap::PAGE_SIZE) as u64;
    w.large_objects = class0_spans - record_spans;
    w.heap_alloc = large_bytes - record_bytes;
    w.heap_objects = w.large_objects;
    for (class, live) in w.by_size_live.iter_mut().enumerate().skip(1) {
        *live -= held[class];
        w.heap_objects += *live;
        w.heap_alloc += *live * sizeclass::SIZE_CLASSES.size_of_class(class) as u64;
    }
    w
}
