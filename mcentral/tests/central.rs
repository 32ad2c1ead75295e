//! `Centrals` over a real page heap on a fixed region: spans handed out and
//! given back, carving, remote frees into cached, partial and full spans
//! (the notify path moving a full span to partial, or straight back to the
//! heap when its last object comes home), the lists' structure checked with
//! `check_class` after every step, the heap's `in_use` back to zero once
//! every object is free, several threads freeing remotely into spans that
//! another thread caches, sweeping (remote frees stranded on partial spans
//! collected, wholly free spans back to the heap, spans with a live object
//! kept), and out of memory.

use mcentral::objects::{
    carve, carve_batch, has_remote, list_len_tail, next_of, set_next, take_remote,
};
use mcentral::{Centrals, SpanSource};
use mheap::{FaultInjecting, FaultPlan, FixedRegion, HeapConfig, MHeap, PageSource, Span};
use sizeclass::{NUM_CLASSES, SIZE_CLASSES};
use std::collections::HashSet;
use std::sync::mpsc;

fn buffer(mib: usize) -> &'static mut [u8] {
    Box::leak(vec![0u8; mib << 20].into_boxed_slice())
}

fn heap(mib: usize) -> &'static MHeap<FixedRegion> {
    Box::leak(Box::new(MHeap::new(
        FixedRegion::new(buffer(mib)),
        HeapConfig {
            arena_size: 1 << 20,
        },
    )))
}

fn class_of(size: usize) -> usize {
    SIZE_CLASSES.class_of(size)
}

/// Every object of a list, in order.
///
/// # Safety
///
/// `head` is a list of free objects the caller owns.
unsafe fn collect(mut head: *mut u8) -> Vec<usize> {
    let mut v = Vec::new();
    while !head.is_null() {
        v.push(head as usize);
        // SAFETY: caller's contract.
        head = unsafe { next_of(head) };
    }
    v
}

/// Links `objs` into a list (first one at the head).
///
/// # Safety
///
/// The caller owns every object (each at least 8 bytes, 8-aligned).
unsafe fn link(objs: &[usize]) -> *mut u8 {
    let mut head = std::ptr::null_mut();
    for &o in objs.iter().rev() {
        // SAFETY: caller's contract.
        unsafe { set_next(o as *mut u8, head) };
        head = o as *mut u8;
    }
    head
}

/// Writes the pattern of object `o` (every word: its address xor index).
///
/// # Safety
///
/// The caller owns the `size`-byte object at `o`.
unsafe fn stamp(o: usize, size: usize) {
    for j in 0..size / 8 {
        // SAFETY: caller's contract.
        unsafe { (o as *mut u64).add(j).write(o as u64 ^ j as u64) };
    }
}

/// Checks the pattern of object `o`.
///
/// # Safety
///
/// The `size`-byte object at `o` is allocated and stamped.
unsafe fn verify(o: usize, size: usize) {
    for j in 0..size / 8 {
        // SAFETY: caller's contract.
        let w = unsafe { (o as *const u64).add(j).read() };
        assert_eq!(w, o as u64 ^ j as u64, "object {o:#x} word {j} corrupted");
    }
}

/// Carves every object of a span the caller owns.
///
/// # Safety
///
/// The caller owns `span`.
unsafe fn carve_all(span: &Span) -> Vec<usize> {
    let mut all = Vec::new();
    loop {
        // SAFETY: caller's contract.
        let (head, n) = unsafe { carve(span, carve_batch(span.elem_size())) };
        if n == 0 {
            assert!(head.is_null());
            break;
        }
        // SAFETY: the carved objects are ours.
        let got = unsafe { collect(head) };
        assert_eq!(got.len(), n, "carve's count and list disagree");
        all.extend(got);
    }
    all
}

/// Hands out and gives back spans until the class's lists are empty:
/// partial spans whose objects are all free go back to the heap this way.
fn drain<S: PageSource>(central: &Centrals<&MHeap<S>>, class: usize) {
    for _ in 0..10_000 {
        if central.check_class(class) == (0, 0) {
            return;
        }
        let g = central.cache_span(class).expect("memory for a span");
        // SAFETY: we own the span; its free list goes back with it.
        unsafe { central.uncache_span(g.span, g.free) };
    }
    panic!(
        "class {class} never drained: {:?}",
        central.check_class(class)
    );
}

#[test]
fn fresh_span_full_then_notified_partial_then_back_to_the_heap() {
    let heap = heap(8);
    let central = Centrals::new(heap);
    let class = class_of(64);
    let size = SIZE_CLASSES.size_of_class(class);
    let nelems = SIZE_CLASSES.objects_of_class(class);

    let g = central.cache_span(class).expect("a fresh span");
    let span = g.span;
    assert!(g.free.is_null(), "a fresh span comes with nothing carved");
    assert_eq!(span.size_class() as usize, class);
    assert_eq!((span.elem_size(), span.nelems()), (size, nelems));
    assert_eq!(
        central.check_class(class),
        (0, 0),
        "a cached span is in no list"
    );
    assert_eq!(heap.stats().in_use, span.bytes());
    assert_eq!(central.class_stats(class).spans_from_source, 1);

    // Carving hands out every object once, in the span, at object bounds.
    // SAFETY: we own the span.
    let objs = unsafe { carve_all(span) };
    assert_eq!(objs.len(), nelems);
    assert_eq!(objs.iter().collect::<HashSet<_>>().len(), nelems);
    for &o in &objs {
        assert!(span.contains(o) && (o - span.start()).is_multiple_of(size));
        // SAFETY: a carved object is ours.
        unsafe { stamp(o, size) };
    }
    // SAFETY: we own the span.
    let (_, more) = unsafe { carve(span, 10) };
    assert_eq!(more, 0, "an exhausted span carves nothing");

    // Given back with nothing free: full.
    // SAFETY: we own it and give it up; no free objects.
    unsafe { central.uncache_span(span, std::ptr::null_mut()) };
    assert_eq!(central.check_class(class), (0, 1));
    let st = central.class_stats(class);
    assert_eq!((st.partial, st.full), (0, 1));

    // The first remote free notifies: the span moves to partial.
    // SAFETY: an allocated object of `span`, not used again.
    unsafe {
        verify(objs[0], size);
        central.free_remote(span, objs[0] as *mut u8);
    }
    assert_eq!(
        central.check_class(class),
        (1, 0),
        "notify moves full -> partial"
    );
    let st = central.class_stats(class);
    assert_eq!((st.partial, st.full), (1, 0));
    // Further remote frees wait on the partial span's stack.
    for &o in &objs[1..10] {
        // SAFETY: as above.
        unsafe {
            verify(o, size);
            central.free_remote(span, o as *mut u8);
        }
        assert_eq!(central.check_class(class), (1, 0));
    }

    // Handed out again: the same span, with exactly the ten freed objects.
    let g = central.cache_span(class).unwrap();
    assert!(std::ptr::eq(g.span, span));
    assert_eq!(central.check_class(class), (0, 0));
    // SAFETY: the list is ours.
    let mut back = unsafe { collect(g.free) };
    back.sort_unstable();
    let mut want = objs[..10].to_vec();
    want.sort_unstable();
    assert_eq!(
        back, want,
        "the free list handed out is not the objects freed"
    );

    // Keep five, give back five with the span: partial.
    // SAFETY: the last five are free objects of the span we own.
    unsafe { central.uncache_span(span, link(&want[5..])) };
    assert_eq!(central.check_class(class), (1, 0));
    assert_eq!(heap.stats().in_use, span.bytes());

    // Free everything else remotely; then hand out and give back: the span
    // is wholly free and goes to the heap.
    for &o in want[..5].iter().chain(&objs[10..]) {
        // SAFETY: allocated objects of `span`, not used again.
        unsafe { central.free_remote(span, o as *mut u8) };
    }
    assert_eq!(central.check_class(class), (1, 0));
    let g = central.cache_span(class).unwrap();
    assert!(std::ptr::eq(g.span, span));
    // SAFETY: the list is ours.
    let (n, _) = unsafe { list_len_tail(g.free) };
    assert_eq!(n, nelems, "every object should come back free");
    // SAFETY: we own the span and all its objects.
    unsafe { central.uncache_span(g.span, g.free) };
    assert_eq!(central.check_class(class), (0, 0));
    assert_eq!(
        heap.stats().in_use,
        0,
        "a wholly free span goes back to the heap"
    );
    let st = central.class_stats(class);
    assert_eq!((st.spans_from_source, st.spans_to_source), (1, 1));
    heap.check_invariants();
}

/// A span source over the heap whose spans hold one object each (the
/// production table gives every span at least 8), so that a single remote
/// free finds a full span wholly free.
struct OneObject(&'static MHeap<FixedRegion>);

// SAFETY: `alloc_small` hands out an InUse span of the asked class that no
// one else holds, reset here; cut into one object of the span's size.
unsafe impl SpanSource for OneObject {
    fn alloc_span(&self, class: usize) -> Option<&Span> {
        let pages = SIZE_CLASSES.size_of_class(class).div_ceil(8192);
        let a = self.0.alloc_small(class as u8, pages, pages * 8192).ok()?;
        // SAFETY: just handed out to us alone.
        unsafe { a.span.objects.reset() };
        Some(a.span)
    }

    unsafe fn free_span(&self, span: &Span) {
        // SAFETY: caller's contract.
        unsafe { self.0.free_span(span) }
    }

    unsafe fn span_of(&self, obj: *mut u8) -> &Span {
        self.0.span_of(obj as usize).expect("object of a live span")
    }
}

#[test]
fn one_object_spans_go_back_to_the_heap_from_notify() {
    let heap = heap(8);
    let central = Centrals::new(OneObject(heap));
    for size in [8192usize, 16384, 24576, 32768] {
        let class = class_of(size);
        let mut spans = Vec::new();
        for _ in 0..4 {
            let g = central.cache_span(class).unwrap();
            // SAFETY: we own the span.
            let objs = unsafe { carve_all(g.span) };
            assert_eq!(objs.len(), 1);
            // SAFETY: ours.
            unsafe { stamp(objs[0], size) };
            // SAFETY: we give the span up, its one object allocated.
            unsafe { central.uncache_span(g.span, std::ptr::null_mut()) };
            spans.push((g.span, objs[0]));
        }
        assert_eq!(central.check_class(class), (0, 4));
        for (i, (span, o)) in spans.into_iter().enumerate() {
            // SAFETY: the allocated object of `span`.
            unsafe {
                verify(o, size);
                central.free_remote(span, o as *mut u8);
            }
            // The notification finds every object free: straight back to
            // the heap, never through partial.
            assert_eq!(central.check_class(class), (0, 3 - i));
        }
        let st = central.class_stats(class);
        assert_eq!((st.spans_from_source, st.spans_to_source), (4, 4));
        assert_eq!(heap.stats().in_use, 0);
    }
    heap.check_invariants();
}

#[test]
fn remote_frees_into_a_cached_span_wait_for_its_owner() {
    let heap = heap(8);
    let central = Centrals::new(heap);
    let class = class_of(200);
    let size = SIZE_CLASSES.size_of_class(class);
    let g = central.cache_span(class).unwrap();
    let span = g.span;
    // SAFETY: we own the span.
    let objs = unsafe { carve_all(span) };
    assert!(!has_remote(span));
    // Another "thread" frees some while we still cache the span: nothing
    // is notified, nothing moves.
    for &o in objs.iter().step_by(3) {
        // SAFETY: allocated objects of `span`.
        unsafe { central.free_remote(span, o as *mut u8) };
        assert_eq!(central.check_class(class), (0, 0));
    }
    assert!(has_remote(span));
    let taken = take_remote(span, 0);
    assert!(!has_remote(span));
    // SAFETY: the stack we took is ours.
    let mut got = unsafe { collect(taken) };
    got.sort_unstable();
    let want: Vec<usize> = objs.iter().step_by(3).copied().collect();
    assert_eq!(got, want, "the remote stack lost or duplicated objects");
    // Give back the span with every object free: straight to the heap.
    // SAFETY: we own the span and, now, all of its objects.
    unsafe { central.uncache_span(span, link(&objs)) };
    assert_eq!(central.check_class(class), (0, 0));
    assert_eq!(heap.stats().in_use, 0);
    let _ = size;
}

#[test]
fn every_class_full_then_all_objects_freed_remotely() {
    let heap = heap(64);
    let central = Centrals::new(heap);
    let mut live = Vec::new();
    for class in 1..NUM_CLASSES {
        let size = SIZE_CLASSES.size_of_class(class);
        for _ in 0..2 {
            let g = central.cache_span(class).unwrap();
            assert_eq!(g.span.npages(), SIZE_CLASSES.pages_of_class(class));
            // SAFETY: we own the span.
            let objs = unsafe { carve_all(g.span) };
            assert_eq!(objs.len(), SIZE_CLASSES.objects_of_class(class));
            for &o in &objs {
                // SAFETY: ours.
                unsafe { stamp(o, size) };
            }
            // SAFETY: given up with every object allocated.
            unsafe { central.uncache_span(g.span, std::ptr::null_mut()) };
            live.push((class, g.span, objs));
        }
        assert_eq!(central.check_class(class), (0, 2));
    }
    assert_eq!(heap.stats().spans_in_use, 2 * (NUM_CLASSES - 1));
    // Free in an interleaved order across classes and spans.
    let longest = live.iter().map(|(_, _, o)| o.len()).max().unwrap();
    for i in 0..longest {
        for (class, span, objs) in &live {
            if let Some(&o) = objs.get(i) {
                // SAFETY: an allocated, stamped object of `span`.
                unsafe {
                    verify(o, SIZE_CLASSES.size_of_class(*class));
                    central.free_remote(span, o as *mut u8);
                }
            }
        }
    }
    for class in 1..NUM_CLASSES {
        let (p, f) = central.check_class(class);
        assert_eq!(f, 0, "class {class}: a full span has free objects");
        assert!(p <= 2);
        drain(&central, class);
        let st = central.class_stats(class);
        assert_eq!(st.spans_from_source, st.spans_to_source, "class {class}");
    }
    assert_eq!(heap.stats().in_use, 0);
    heap.check_invariants();
}

#[test]
fn threads_free_remotely_into_spans_another_thread_caches() {
    let heap = heap(64);
    let central = Centrals::new(heap);
    for size in [16usize, 48, 256, 1408, 6784] {
        let class = class_of(size);
        let size = SIZE_CLASSES.size_of_class(class);
        const FREERS: usize = 3;
        const OBJECTS: usize = 100_000;
        std::thread::scope(|s| {
            let mut txs = Vec::new();
            for _ in 0..FREERS {
                let (tx, rx) = mpsc::channel::<Vec<(usize, usize)>>();
                txs.push(tx);
                let central = &central;
                s.spawn(move || {
                    for batch in rx {
                        for (span, o) in batch {
                            // SAFETY: `span` is a live span record; `o` an
                            // allocated object of it, handed to us.
                            unsafe {
                                verify(o, size);
                                central.free_remote(&*(span as *const Span), o as *mut u8);
                            }
                        }
                    }
                });
            }
            // The owner: a minimal thread cache. It allocates from its span
            // (own free list, then the remote stack, then carving), keeps
            // some objects and frees them locally, hands the rest to the
            // freers, and gives exhausted spans back (racing with remote
            // frees into them).
            let mut span: Option<&Span> = None;
            let mut list: *mut u8 = std::ptr::null_mut();
            let mut kept: Vec<usize> = Vec::new();
            let mut batches: Vec<Vec<(usize, usize)>> = vec![Vec::new(); FREERS];
            let mut made = 0;
            let mut spans_seen = HashSet::new();
            while made < OBJECTS {
                let sp = match span {
                    Some(sp) => sp,
                    None => {
                        let g = central.cache_span(class).expect("memory");
                        spans_seen.insert(g.span as *const Span as usize);
                        list = g.free;
                        span = Some(g.span);
                        g.span
                    }
                };
                if list.is_null() && has_remote(sp) {
                    list = take_remote(sp, 0);
                }
                if list.is_null() {
                    // SAFETY: we own the span.
                    list = unsafe { carve(sp, carve_batch(size)) }.0;
                }
                if list.is_null() {
                    // SAFETY: we own it; no free objects go with it.
                    unsafe { central.uncache_span(sp, std::ptr::null_mut()) };
                    span = None;
                    continue;
                }
                let o = list as usize;
                // SAFETY: a free object of our span.
                list = unsafe { next_of(list) };
                assert!(sp.contains(o));
                // SAFETY: allocated to us now.
                unsafe { stamp(o, size) };
                made += 1;
                if made % 5 == 0 {
                    kept.push(o);
                } else {
                    let b = &mut batches[made % FREERS];
                    b.push((sp as *const Span as usize, o));
                    if b.len() == 64 {
                        txs[made % FREERS].send(std::mem::take(b)).unwrap();
                    }
                }
                // Local frees of kept objects in the current span.
                if made % 7 == 0 {
                    kept.retain(|&k| {
                        if sp.contains(k) {
                            // SAFETY: our object, in the span we own.
                            unsafe {
                                verify(k, size);
                                set_next(k as *mut u8, list);
                            }
                            list = k as *mut u8;
                            false
                        } else {
                            true
                        }
                    });
                }
            }
            for (tx, b) in txs.iter().zip(batches) {
                tx.send(b).unwrap();
            }
            drop(txs);
            // The kept objects of other spans: freed remotely from here.
            for k in kept.drain(..) {
                let sp = heap.span_of(k).expect("a live object's span");
                if span.is_some_and(|c| std::ptr::eq(c, sp)) {
                    // SAFETY: our object of the span we own.
                    unsafe { set_next(k as *mut u8, list) };
                    list = k as *mut u8;
                } else {
                    // SAFETY: an allocated object of `sp`.
                    unsafe { central.free_remote(sp, k as *mut u8) };
                }
            }
            if let Some(sp) = span {
                // SAFETY: we own the span; `list` holds its free objects.
                unsafe { central.uncache_span(sp, list) };
            }
            assert!(spans_seen.len() > 2, "the test should cycle through spans");
        });
        // Every object is free: the lists hold only wholly free spans.
        let (_, full) = central.check_class(class);
        assert_eq!(
            full, 0,
            "size {size}: a full span after every object was freed"
        );
        drain(&central, class);
        let st = central.class_stats(class);
        assert_eq!(st.spans_from_source, st.spans_to_source, "size {size}");
        assert_eq!(heap.stats().in_use, 0, "size {size}: spans left out");
        heap.check_invariants();
    }
}

#[test]
fn out_of_memory_is_none_and_heals() {
    let heap: &'static MHeap<FaultInjecting<FixedRegion>> = Box::leak(Box::new(MHeap::new(
        FaultInjecting::new(FixedRegion::new(buffer(8)), FaultPlan::FailFrom(0)),
        HeapConfig {
            arena_size: 1 << 20,
        },
    )));
    let central = Centrals::new(heap);
    for class in [1, class_of(100), class_of(32768)] {
        assert!(
            central.cache_span(class).is_none(),
            "class {class} with no memory"
        );
        assert_eq!(central.check_class(class), (0, 0));
        assert_eq!(central.class_stats(class).spans_from_source, 0);
    }
    heap.with_source(|s| s.heal());
    let class = class_of(100);
    let g = central.cache_span(class).expect("memory is back");
    // SAFETY: we own the span.
    let objs = unsafe { carve_all(g.span) };
    // SAFETY: given back with every object free.
    unsafe { central.uncache_span(g.span, link(&objs)) };
    assert_eq!(heap.stats().in_use, 0);

    // Running out mid-way: eight spans' worth of pages used and given back
    // stay with the heap; with the source failing again, they are served
    // (no source request needed), then cache_span says None, and giving
    // spans back makes room again.
    let big = class_of(32768);
    let mut warm = Vec::new();
    // Eight spans of 256 KiB: two whole 1 MiB arenas, so every page the
    // heap holds afterwards is committed.
    for _ in 0..8 {
        warm.push(central.cache_span(big).expect("memory"));
    }
    for g in warm {
        // SAFETY: nothing carved: the span is wholly free.
        unsafe { central.uncache_span(g.span, g.free) };
    }
    assert_eq!(heap.stats().in_use, 0);
    heap.with_source(|s| s.set_plan(FaultPlan::FailFrom(0)));
    let mut held = Vec::new();
    while let Some(g) = central.cache_span(big) {
        // SAFETY: we own the span.
        let objs = unsafe { carve_all(g.span) };
        held.push((g.span, objs));
        assert!(held.len() < 10_000);
    }
    assert!(
        held.len() >= 8,
        "pages the heap holds are served without the source"
    );
    assert!(central.cache_span(class_of(64)).is_none());
    for (span, objs) in held {
        // SAFETY: given back with every object free.
        unsafe { central.uncache_span(span, link(&objs)) };
    }
    assert_eq!(heap.stats().in_use, 0);
    let g = central.cache_span(big).expect("freed memory is re-used");
    // SAFETY: wholly free.
    unsafe { central.uncache_span(g.span, g.free) };
    heap.with_source(|s| s.heal());
    assert_eq!(central.check_class(big), (0, 0));
    heap.check_invariants();
}

/// Gives `span` (which the caller owns) back with the objects of `objs`
/// from index `free_from` on free; the first `free_from` stay allocated.
///
/// # Safety
///
/// The caller owns `span` and every object of `objs`.
unsafe fn uncache_keeping(
    central: &Centrals<&MHeap<FixedRegion>>,
    span: &Span,
    objs: &[usize],
    free_from: usize,
) {
    // SAFETY: caller's contract.
    unsafe { central.uncache_span(span, link(&objs[free_from..])) };
}

#[test]
fn sweep_gives_back_partial_spans_whose_objects_came_home_remotely() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let class = class_of(128);
    let size = SIZE_CLASSES.size_of_class(class);
    let nelems = SIZE_CLASSES.objects_of_class(class);
    let span_bytes = SIZE_CLASSES.span_bytes_of_class(class);

    // Span A: one carving batch, the rest never carved; span B: every
    // object carved. Both go back partial, A with 2 free objects, B with 5.
    let a = central.cache_span(class).unwrap();
    let b = central.cache_span(class).unwrap();
    // SAFETY: we own span A.
    let (head, n) = unsafe { carve(a.span, carve_batch(size)) };
    assert!(n < nelems, "span A keeps never-carved objects");
    // SAFETY: the carved objects are ours.
    let a_objs = unsafe { collect(head) };
    // SAFETY: we own span B.
    let b_objs = unsafe { carve_all(b.span) };
    for &o in a_objs.iter().chain(&b_objs) {
        // SAFETY: carved objects are ours.
        unsafe { stamp(o, size) };
    }
    // SAFETY: we own both spans and all their objects.
    unsafe {
        uncache_keeping(&central, a.span, &a_objs, a_objs.len() - 2);
        uncache_keeping(&central, b.span, &b_objs, b_objs.len() - 5);
    }
    assert_eq!(central.check_class(class), (2, 0));
    assert_eq!(heap.stats().in_use, 2 * span_bytes);
    assert_eq!(central.sweep(class), 0, "both spans have live objects");

    // Every other object is freed remotely: the spans are partial and
    // `NOTIFIED`, so nobody is told; the objects wait on the stacks.
    for &o in a_objs[..a_objs.len() - 2]
        .iter()
        .chain(&b_objs[..b_objs.len() - 5])
    {
        let span = if a.span.contains(o) { a.span } else { b.span };
        // SAFETY: an allocated, stamped object of `span`, not used again.
        unsafe {
            verify(o, size);
            central.free_remote(span, o as *mut u8);
        }
    }
    assert!(has_remote(a.span) && has_remote(b.span));
    assert_eq!(central.check_class(class), (2, 0));
    assert_eq!(
        heap.stats().in_use,
        2 * span_bytes,
        "stranded on the stacks"
    );

    let before = central.class_stats(class);
    assert_eq!(central.sweep(class), 2);
    assert_eq!(central.check_class(class), (0, 0));
    assert_eq!(heap.stats().in_use, 0, "swept spans go back to the heap");
    let after = central.class_stats(class);
    assert_eq!(after.spans_to_source - before.spans_to_source, 2);
    assert_eq!((after.partial, after.full), (0, 0));
    assert_eq!(central.sweep(class), 0, "nothing left to sweep");
    assert_eq!(central.sweep_all(), 0);
    heap.check_invariants();
}

#[test]
fn sweep_keeps_a_span_with_a_live_object_and_sweep_all_covers_every_class() {
    let heap = heap(32);
    let central = Centrals::new(heap);
    let classes = [class_of(16), class_of(640), class_of(8192)];
    // One span per class, every object carved and stamped, given back
    // with its first object free.
    let mut spans = Vec::new();
    for &class in &classes {
        let size = SIZE_CLASSES.size_of_class(class);
        let g = central.cache_span(class).unwrap();
        // SAFETY: we own the span.
        let objs = unsafe { carve_all(g.span) };
        assert!(objs.len() >= 3, "class {class}: a free, a remote, a live");
        for &o in &objs {
            // SAFETY: ours.
            unsafe { stamp(o, size) };
        }
        // SAFETY: we own the span; the first object is free.
        unsafe { central.uncache_span(g.span, link(&objs[..1])) };
        assert_eq!(central.check_class(class), (1, 0));
        spans.push((class, g.span, objs));
    }
    let in_use = heap.stats().in_use;
    // Every object but the last of each span is freed remotely.
    for (class, span, objs) in &spans {
        let size = SIZE_CLASSES.size_of_class(*class);
        for &o in &objs[1..objs.len() - 1] {
            // SAFETY: an allocated, stamped object of `span`.
            unsafe {
                verify(o, size);
                central.free_remote(span, o as *mut u8);
            }
        }
    }
    // The last objects are live: sweeping collects the stacks but gives
    // nothing back.
    assert_eq!(central.sweep_all(), 0);
    assert_eq!(
        heap.stats().in_use,
        in_use,
        "a span with a live object went"
    );
    for (class, span, objs) in &spans {
        assert!(!has_remote(span), "sweep collects the remote stack");
        assert_eq!(central.check_class(*class), (1, 0));
        let size = SIZE_CLASSES.size_of_class(*class);
        let live = *objs.last().unwrap();
        // SAFETY: still allocated, stamped.
        unsafe { verify(live, size) };
        // The collected objects are on the span's list: a cache taking it
        // gets every free object, exactly once, and never the live one.
        let g = central.cache_span(*class).unwrap();
        assert!(std::ptr::eq(g.span, *span));
        // SAFETY: the list is ours.
        let mut got = unsafe { collect(g.free) };
        got.sort_unstable();
        let mut want = objs[..objs.len() - 1].to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "sweep lost or duplicated objects");
        // SAFETY: we own the span; the list holds its free objects.
        unsafe { central.uncache_span(g.span, g.free) };
        assert_eq!(central.check_class(*class), (1, 0));
    }
    // The last objects are freed remotely too: sweep_all gives back every
    // span, one per class.
    for (class, span, objs) in &spans {
        let live = *objs.last().unwrap();
        // SAFETY: allocated, stamped, not used again.
        unsafe {
            verify(live, SIZE_CLASSES.size_of_class(*class));
            central.free_remote(span, live as *mut u8);
        }
    }
    assert_eq!(heap.stats().in_use, in_use);
    assert_eq!(central.sweep_all(), classes.len());
    assert_eq!(heap.stats().in_use, 0);
    for &class in &classes {
        assert_eq!(central.check_class(class), (0, 0));
        let st = central.class_stats(class);
        assert_eq!((st.spans_from_source, st.spans_to_source), (1, 1));
    }
    heap.check_invariants();
}

#[test]
fn counts_handed_over_by_caches_add_up() {
    let central = Centrals::new(heap(2));
    let class = class_of(48);
    central.add_counts(class, 5, 3);
    central.add_counts(class, 10, 12);
    let st = central.class_stats(class);
    assert_eq!((st.allocs, st.frees), (15, 15));
    assert_eq!(central.class_stats(class + 1).allocs, 0);
    assert_eq!(
        Centrals::<&MHeap<FixedRegion>>::carve_batch(class),
        carve_batch(48)
    );
}

/// Takes batches of `class` until `count` objects are out; returns them.
fn take_batches(
    central: &Centrals<&MHeap<FixedRegion>>,
    class: usize,
    max: usize,
    count: usize,
) -> Vec<usize> {
    let mut out = Vec::new();
    while out.len() < count {
        let (head, n) = central.take_batch(class, max.min(count - out.len()));
        assert!(
            n >= 1 && n <= max,
            "a batch of {n}, asked for at most {max}"
        );
        // SAFETY: the batch's objects are ours.
        let got = unsafe { collect(head) };
        assert_eq!(got.len(), n, "take_batch's count and list disagree");
        out.extend(got);
    }
    out
}

#[test]
fn batches_share_one_span_reuse_what_came_home_and_go_back_once_all_are_free() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let class = class_of(48);
    let size = SIZE_CLASSES.size_of_class(class);
    let span_bytes = SIZE_CLASSES.span_bytes_of_class(class);

    // Three "threads" take three batches each: every object distinct, all
    // of one span, which sits on no list.
    let objs = take_batches(&central, class, 8, 72);
    let distinct: HashSet<usize> = objs.iter().copied().collect();
    assert_eq!(distinct.len(), objs.len(), "an object handed out twice");
    // SAFETY: the objects are allocated.
    let span = unsafe { central.source().span_of(objs[0] as *mut u8) };
    assert!(
        objs.iter().all(|&o| span.contains(o)),
        "batches of two spans"
    );
    assert_eq!(
        span.objects
            .owner
            .load(std::sync::atomic::Ordering::Relaxed),
        mcentral::SHARED_OWNER
    );
    assert_eq!(heap.stats().in_use, span_bytes, "one span for every batch");
    assert_eq!(
        central.check_class(class),
        (0, 0),
        "the shared span is on no list"
    );
    for &o in &objs {
        // SAFETY: ours.
        unsafe { stamp(o, size) };
    }

    // A batch's worth comes home remotely: the next batches re-use exactly
    // those objects before carving new ones.
    let (home, kept) = objs.split_at(16);
    for &o in home {
        // SAFETY: allocated, stamped, not used again.
        unsafe {
            verify(o, size);
            central.free_remote(span, o as *mut u8);
        }
    }
    let again = take_batches(&central, class, 8, 16);
    let again_set: HashSet<usize> = again.iter().copied().collect();
    let home_set: HashSet<usize> = home.iter().copied().collect();
    assert_eq!(
        again_set, home_set,
        "batches carved instead of re-using freed objects"
    );
    assert_eq!(heap.stats().in_use, span_bytes);

    // Not wholly free: a sweep keeps it; then everything comes home and a
    // sweep gives it back.
    assert_eq!(central.sweep(class), 0, "the shared span has live objects");
    for &o in kept.iter().chain(&again) {
        // SAFETY: allocated, not used again.
        unsafe { central.free_remote(span, o as *mut u8) };
    }
    assert_eq!(
        central.sweep(class),
        1,
        "a wholly free shared span goes back"
    );
    assert_eq!(heap.stats().in_use, 0);
    assert_eq!(central.check_class(class), (0, 0));
    heap.check_invariants();
}

#[test]
fn an_exhausted_shared_span_is_filed_and_a_cache_takes_the_next_one_over() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let class = NUM_CLASSES - 1;
    let nelems = SIZE_CLASSES.objects_of_class(class);

    // One object per batch: the first span's every object, then one more,
    // which comes from a second span; the first is filed full.
    let first = take_batches(&central, class, 1, nelems);
    // SAFETY: allocated objects.
    let s1 = unsafe { central.source().span_of(first[0] as *mut u8) };
    assert!(first.iter().all(|&o| s1.contains(o)));
    assert_eq!(
        central.check_class(class),
        (0, 0),
        "still shared while it has objects"
    );
    let next = take_batches(&central, class, 1, 1);
    assert!(
        !s1.contains(next[0]),
        "an exhausted span gave another object"
    );
    assert_eq!(
        central.check_class(class),
        (0, 1),
        "the exhausted span is filed full"
    );

    // A free into the full span notifies it to partial.
    // SAFETY: allocated, not used again.
    unsafe { central.free_remote(s1, first[0] as *mut u8) };
    assert_eq!(central.check_class(class), (1, 0));

    // A cache that outgrows its batches takes the shared span over (the
    // pages the batches touched), with its objects, before any partial one.
    // SAFETY: allocated.
    let s2 = unsafe { central.source().span_of(next[0] as *mut u8) };
    let g = central.cache_span(class).unwrap();
    assert!(
        std::ptr::eq(g.span, s2),
        "the cache got another span than the shared one"
    );
    assert!(
        g.free.is_null(),
        "the shared span had no free object, only never-carved ones"
    );
    // SAFETY: the cache owns s2 now.
    let rest = unsafe { carve_all(s2) };
    assert_eq!(rest.len(), nelems - 1);
    // With no shared span, the next batch takes the partial span over.
    let b = take_batches(&central, class, 1, 1);
    assert_eq!(b[0], first[0], "the partial span's free object");
    assert_eq!(central.check_class(class), (0, 0));

    // Everything home: the cache gives s2 back, the frees empty s1.
    // SAFETY: we own s2 and every object of it is free.
    unsafe {
        central.uncache_span(
            s2,
            link(&rest.iter().chain(&next).copied().collect::<Vec<_>>()),
        )
    };
    for &o in first.iter().skip(1).chain(&b) {
        // SAFETY: allocated, not used again.
        unsafe { central.free_remote(s1, o as *mut u8) };
    }
    assert_eq!(central.sweep(class), 1);
    assert_eq!(heap.stats().in_use, 0);
    heap.check_invariants();
}
