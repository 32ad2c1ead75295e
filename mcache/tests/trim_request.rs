//! A process-wide trim request (`mcache::request_trim`) over `Centrals`
//! over a page heap on a fixed region: a cache whose objects another cache
//! freed trims at its next refill, and only then (not on the fast path,
//! and once per request), after which the heap holds exactly the spans of
//! the objects still live.
//!
//! A binary of its own: the request is a process-wide epoch, so every cache
//! of the test process would trim at its next refill, which would disturb
//! the exact span counts of the tests in `tests/cache.rs` running beside
//! it. Keep this file to one test for the same reason.

use mcache::MCache;
use mcentral::Centrals;
use mheap::{FixedRegion, HeapConfig, MHeap, Span};
use sizeclass::SIZE_CLASSES;

fn heap(mib: usize) -> &'static MHeap<FixedRegion> {
    let buf: &'static mut [u8] = Box::leak(vec![0u8; mib << 20].into_boxed_slice());
    Box::leak(Box::new(MHeap::new(
        FixedRegion::new(buf),
        HeapConfig {
            arena_size: 1 << 20,
        },
    )))
}

/// Writes the pattern `tag` into the object (every word: its address xor
/// index xor `tag`).
///
/// # Safety
///
/// The caller owns the `size`-byte object at `p`.
unsafe fn stamp(p: *mut u8, size: usize, tag: u64) {
    for j in 0..size / 8 {
        // SAFETY: caller's contract.
        unsafe { p.cast::<u64>().add(j).write(p as u64 ^ j as u64 ^ tag) };
    }
}

/// # Safety
///
/// The object is allocated and was stamped with `tag`.
unsafe fn verify(p: *const u8, size: usize, tag: u64) {
    for j in 0..size / 8 {
        // SAFETY: caller's contract.
        let w = unsafe { p.cast::<u64>().add(j).read() };
        assert_eq!(w, p as u64 ^ j as u64 ^ tag, "object {p:p} word {j}");
    }
}

fn span_of(heap: &MHeap<FixedRegion>, p: *mut u8) -> &Span {
    heap.span_of(p as usize).expect("a live object has a span")
}

/// Frees `objs` (with their tags) from a second cache on another thread:
/// remote frees into the spans of the cache that allocated them.
fn free_elsewhere(
    heap: &'static MHeap<FixedRegion>,
    central: &Centrals<&MHeap<FixedRegion>>,
    objs: &[(usize, u64)],
) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut other = MCache::new();
            for &(p, tag) in objs {
                let p = p as *mut u8;
                let sp = span_of(heap, p);
                // SAFETY: allocated and stamped by the owner, handed over,
                // not used again.
                unsafe {
                    verify(p, sp.elem_size(), tag);
                    other.free(sp, p, central);
                }
            }
            other.flush(central);
        });
    });
}

#[test]
fn a_trim_request_is_served_at_the_next_refill_only() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let bytes = |class: usize| SIZE_CLASSES.span_bytes_of_class(class);
    let (x, y) = (SIZE_CLASSES.class_of(512), SIZE_CLASSES.class_of(64));
    let (x_size, y_size) = (SIZE_CLASSES.size_of_class(x), SIZE_CLASSES.size_of_class(y));
    let mut cache = MCache::new();

    // Class x: three spans filled and a fourth current with two objects
    // out; class y: one object out of its current span.
    let n = 3 * SIZE_CLASSES.objects_of_class(x) + 2;
    let xs: Vec<(usize, u64)> = (0..n as u64)
        .map(|tag| {
            let p = cache.alloc(x, &central);
            assert!(!p.is_null());
            // SAFETY: ours.
            unsafe { stamp(p, x_size, tag) };
            (p as usize, tag)
        })
        .collect();
    let y0 = cache.alloc(y, &central);
    // SAFETY: ours.
    unsafe { stamp(y0, y_size, 1 << 40) };
    assert_eq!(cache.owned_spans(x), (0, 3));
    let full = 4 * bytes(x) + bytes(y);
    assert_eq!(heap.stats().in_use, full);

    // Another cache frees every x object but the last (in the current
    // span): three full spans now hold no live object, and nothing goes
    // back, because only their owner looks at their remote stacks.
    let (x_live, x_live_tag) = xs[n - 1];
    free_elsewhere(heap, &central, &xs[..n - 1]);
    assert_eq!(heap.stats().in_use, full);
    assert_eq!(cache.owned_spans(x), (0, 3));

    mcache::request_trim();
    // The fast path does not look at the request.
    let y1 = cache.alloc(y, &central);
    // SAFETY: ours.
    unsafe { stamp(y1, y_size, 2 << 40) };
    assert_eq!(heap.stats().in_use, full, "the fast path trimmed");
    assert_eq!(cache.owned_spans(x), (0, 3));

    // One allocation that reaches refill (a class the cache never used)
    // trims first: the three emptied spans go back; the current x span
    // (one live object) and the y span stay.
    let z = SIZE_CLASSES.class_of(2048);
    let z_size = SIZE_CLASSES.size_of_class(z);
    let z0 = cache.alloc(z, &central);
    // SAFETY: ours.
    unsafe { stamp(z0, z_size, 3 << 40) };
    assert_eq!(cache.owned_spans(x), (0, 0));
    assert_eq!(
        heap.stats().in_use,
        bytes(x) + bytes(y) + bytes(z),
        "the heap should hold the spans of the live objects only"
    );
    // SAFETY: allocated and stamped above.
    unsafe {
        verify(x_live as *const u8, x_size, x_live_tag);
        verify(y0, y_size, 1 << 40);
        verify(y1, y_size, 2 << 40);
    }

    // The last x object goes too, remotely: the current x span is wholly
    // free, its objects split between its list and its remote stack. A
    // refill with no new request does not trim again ...
    free_elsewhere(heap, &central, &[(x_live, x_live_tag)]);
    let w = SIZE_CLASSES.class_of(4096);
    let w0 = cache.alloc(w, &central);
    assert!(!w0.is_null());
    let in_use = bytes(x) + bytes(y) + bytes(z) + bytes(w);
    assert_eq!(heap.stats().in_use, in_use, "trimmed without a request");
    // ... a new request and a refill do: the x span goes back.
    mcache::request_trim();
    let v = SIZE_CLASSES.class_of(1024);
    let v0 = cache.alloc(v, &central);
    assert!(!v0.is_null());
    assert!(
        cache.current_span(x).is_none(),
        "a wholly free current span kept"
    );
    assert_eq!(heap.stats().in_use, in_use - bytes(x) + bytes(v));

    // Everything freed and flushed: nothing left.
    // SAFETY: allocated, not used again.
    unsafe {
        verify(z0, z_size, 3 << 40);
        for p in [y0, y1, z0, w0, v0] {
            cache.free(span_of(heap, p), p, &central);
        }
    }
    cache.flush(&central);
    // The classes first used here took their first objects from their
    // shared spans, which go back once wholly free, at a sweep.
    central.sweep_all();
    assert_eq!(heap.stats().in_use, 0);
    heap.check_invariants();
}
