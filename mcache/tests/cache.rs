//! `MCache` over `Centrals` over a page heap on a fixed region: allocation
//! that exhausts several spans (the refill path), local frees, remote frees
//! from a second cache on another thread and through raw
//! `Centrals::free_remote`, every object's contents verified, exact
//! counters, `flush` giving wholly free spans back to the heap, `trim`
//! giving back the spans another cache's frees emptied, and out of memory
//! (null, never a crash) with recovery once memory returns. (A trim
//! *request* is process-wide, so its test has a binary of its own:
//! `tests/trim_request.rs`.)

use mcache::MCache;
use mcentral::Centrals;
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

/// Writes the pattern of object `p` of `size` bytes (every word: its
/// address xor index xor `tag`).
///
/// # Safety
///
/// The caller owns the object.
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
        assert_eq!(
            w,
            p as u64 ^ j as u64 ^ tag,
            "object {p:p} word {j} corrupted"
        );
    }
}

/// The span of `p` (a live object of `heap`).
fn span_of<S: PageSource>(heap: &MHeap<S>, p: *mut u8) -> &Span {
    heap.span_of(p as usize).expect("a live object has a span")
}

/// Gives every wholly free span left on the central lists back to the heap,
/// through a scratch cache: each one is handed out, one object taken and
/// freed, and the cache flushed; then a sweep gives back the class's shared
/// span if it is wholly free.
fn drain<S: PageSource>(central: &Centrals<&MHeap<S>>, class: usize) {
    let mut scratch = MCache::new();
    for _ in 0..10_000 {
        let (partial, full) = central.check_class(class);
        assert_eq!(
            full, 0,
            "class {class}: a full span with every object freed"
        );
        if partial == 0 {
            // And the class's shared span, if every object came home.
            central.sweep(class);
            return;
        }
        // Takes the span itself, not a batch of the shared span (a flush
        // starts the shared refills over).
        scratch.skip_shared_refills();
        let p = scratch.alloc(class, central);
        assert!(!p.is_null());
        // SAFETY: just allocated from the scratch cache's span.
        assert!(unsafe { scratch.free_local(class, p) });
        scratch.flush(central);
    }
    panic!("class {class} did not drain");
}

#[test]
fn refill_across_several_spans_then_free_and_flush() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let mut cache = MCache::new();
    for size in [8usize, 48, 640, 3072, 32768] {
        let class = class_of(size);
        let size = SIZE_CLASSES.size_of_class(class);
        let per_span = SIZE_CLASSES.objects_of_class(class);
        let n = 3 * per_span + per_span.div_ceil(2);
        let mut objs = Vec::with_capacity(n);
        let mut spans = HashSet::new();
        for i in 0..n {
            let p = cache.alloc(class, &central);
            assert!(!p.is_null(), "alloc of class {class} null");
            assert_eq!(p as usize % 8, 0);
            let sp = span_of(heap, p);
            assert_eq!(sp.size_class() as usize, class);
            assert!((p as usize - sp.start()).is_multiple_of(size));
            spans.insert(sp.start());
            // SAFETY: ours.
            unsafe { stamp(p, size, i as u64) };
            objs.push(p);
        }
        assert_eq!(
            objs.iter().collect::<HashSet<_>>().len(),
            n,
            "an object handed out twice"
        );
        assert_eq!(
            spans.len(),
            4,
            "size {size}: three exhausted spans and a current one"
        );
        assert_eq!(cache.counts(class), (n as u64, 0));
        // Exhausted spans stay with the cache that filled them, as full.
        assert_eq!(
            cache.owned_spans(class),
            (0, 3),
            "exhausted spans are owned full"
        );
        assert_eq!(
            central.check_class(class),
            (0, 0),
            "nothing went to the central list"
        );
        let cur = cache.current_span(class).expect("a current span").start();
        let cur = span_of(heap, cur as *mut u8);
        assert!(cur.contains(*objs.last().unwrap() as usize));

        // Free in reverse: the current span's objects through its bounds,
        // then those of the full spans the cache owns (found through the
        // page map: still local, no remote stack).
        let mut local = 0;
        for (i, &p) in objs.iter().enumerate().rev() {
            // SAFETY: allocated and stamped above.
            unsafe { verify(p, size, i as u64) };
            let sp = span_of(heap, p);
            if std::ptr::eq(sp, cur) {
                local += 1;
            }
            // SAFETY: an allocated object of `sp`, not used again.
            unsafe { cache.free(sp, p, &central) };
            assert_eq!(
                sp.objects.remote.load(std::sync::atomic::Ordering::Relaxed)
                    & !mcentral::objects::FLAGS,
                0,
                "an owner's free went to the remote stack"
            );
        }
        assert_eq!(local, n - 3 * per_span);
        assert_eq!(cache.counts(class), (n as u64, n as u64));
        // The once-full spans are wholly free: the cache keeps them for
        // re-use up to its bound (at least one) and gave the rest back.
        let span_bytes = SIZE_CLASSES.span_bytes_of_class(class);
        let kept = (mcache::MAX_EMPTY_BYTES / span_bytes).clamp(1, 3);
        assert_eq!(cache.owned_spans(class), (kept, 0));
        assert_eq!(central.check_class(class), (0, 0));

        // Flush hands the counters over and gives the wholly free spans it
        // kept, and the current one, straight back to the heap.
        let before = central.class_stats(class);
        cache.flush(&central);
        assert!(cache.current_span(class).is_none());
        assert_eq!(cache.owned_spans(class), (0, 0));
        assert_eq!(cache.counts(class), (0, 0));
        let after = central.class_stats(class);
        assert_eq!(after.allocs - before.allocs, n as u64);
        assert_eq!(after.frees - before.frees, n as u64);
        assert_eq!(
            after.spans_to_source - before.spans_to_source,
            kept as u64 + 1
        );
        assert_eq!(heap.stats().in_use, 0, "size {size}: spans left in use");
        drain(&central, class);
        let st = central.class_stats(class);
        assert_eq!(st.spans_from_source, st.spans_to_source);
    }
    heap.check_invariants();
}

#[test]
fn local_frees_and_flush_give_everything_back_at_once() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let mut cache = MCache::new();
    // Span ownership is what this test is about: no shared refills.
    cache.skip_shared_refills();
    let mut objs = Vec::new();
    // Up to one span's worth of every class: each stays in its current
    // span, so every free is local.
    for class in 1..NUM_CLASSES {
        let size = SIZE_CLASSES.size_of_class(class);
        for i in 0..SIZE_CLASSES.objects_of_class(class).min(40) {
            let p = cache.alloc(class, &central);
            assert!(!p.is_null());
            // SAFETY: ours.
            unsafe { stamp(p, size, (class * 1000 + i) as u64) };
            objs.push((class, i, p));
        }
    }
    assert!(heap.stats().in_use > 0);
    for &(class, i, p) in objs.iter().rev() {
        // SAFETY: allocated and stamped above.
        unsafe {
            verify(
                p,
                SIZE_CLASSES.size_of_class(class),
                (class * 1000 + i) as u64,
            )
        };
        // SAFETY: an object of `class` of the cache's current span.
        let local = unsafe { cache.free_local(class, p) };
        assert!(local, "class {class}: free not local");
    }
    for class in 1..NUM_CLASSES {
        let k = SIZE_CLASSES.objects_of_class(class).min(40) as u64;
        assert_eq!(cache.counts(class), (k, k));
    }
    cache.flush(&central);
    assert_eq!(
        heap.stats().in_use,
        0,
        "flush should give every wholly free span back"
    );
    for class in 1..NUM_CLASSES {
        assert_eq!(central.check_class(class), (0, 0));
        let st = central.class_stats(class);
        let k = SIZE_CLASSES.objects_of_class(class).min(40) as u64;
        assert_eq!((st.allocs, st.frees), (k, k));
        assert_eq!((st.spans_from_source, st.spans_to_source), (1, 1));
    }
    // The cache works again after a flush, which starts its shared
    // refills over: the object comes from the class's shared span.
    let c100 = class_of(100);
    let p = cache.alloc(c100, &central);
    assert!(!p.is_null());
    assert!(cache.current_span(c100).is_none() && cache.shared_refills(c100) == 1);
    // SAFETY: just allocated; not in a span the cache owns.
    unsafe {
        assert!(!cache.free_local(c100, p));
        cache.free_other(c100, p, &central);
    }
    cache.flush(&central);
    assert_eq!(central.sweep_all(), 1, "the shared span, wholly free");
    assert_eq!(heap.stats().in_use, 0);
}

#[test]
fn a_second_cache_on_another_thread_frees_remotely() {
    let heap = heap(32);
    let central = Centrals::new(heap);
    let classes = [class_of(16), class_of(96), class_of(1024), class_of(9472)];
    const N: usize = 30_000;
    let (tx, rx) = mpsc::sync_channel::<Vec<(usize, u64)>>(16);
    let (back_tx, back_rx) = mpsc::channel::<Vec<(usize, u64)>>();
    let ((a_allocs, a_frees), (b_allocs, b_frees)) = std::thread::scope(|s| {
        let central = &central;
        // B: frees what A sends (remote to B), and sends objects of its own
        // back for A to free (remote to A).
        let b = s.spawn(move || {
            let mut cache = MCache::new();
            let mut made = 0u64;
            for batch in rx {
                let mut mine = Vec::new();
                for (p, tag) in batch {
                    let p = p as *mut u8;
                    let sp = span_of(heap, p);
                    let size = sp.elem_size();
                    // SAFETY: A stamped it and handed it over.
                    unsafe {
                        verify(p, size, tag);
                        cache.free(sp, p, central);
                    }
                    let class = sp.size_class() as usize;
                    let q = cache.alloc(class, central);
                    assert!(!q.is_null());
                    made += 1;
                    // SAFETY: ours.
                    unsafe { stamp(q, size, made | 1 << 40) };
                    mine.push((q as usize, made | 1 << 40));
                }
                back_tx.send(mine).unwrap();
            }
            drop(back_tx);
            let counts: (u64, u64) = classes.iter().fold((0, 0), |acc, &c| {
                let (a, f) = cache.counts(c);
                (acc.0 + a, acc.1 + f)
            });
            cache.flush(central);
            counts
        });
        // A: allocates, keeps a few, sends the rest; frees what B returns.
        let mut cache = MCache::new();
        // A's local frees are about the spans it owns: no shared refills.
        cache.skip_shared_refills();
        let mut batch = Vec::new();
        for i in 0..N {
            let class = classes[i % classes.len()];
            let size = SIZE_CLASSES.size_of_class(class);
            let p = cache.alloc(class, central);
            assert!(!p.is_null());
            // SAFETY: ours.
            unsafe { stamp(p, size, i as u64) };
            if i % 10 == 0 {
                // SAFETY: just stamped; an object of the current span.
                unsafe {
                    verify(p, size, i as u64);
                    assert!(cache.free_local(class, p));
                }
            } else {
                batch.push((p as usize, i as u64));
            }
            if batch.len() == 100 {
                tx.send(std::mem::take(&mut batch)).unwrap();
            }
            while let Ok(back) = back_rx.try_recv() {
                for (q, tag) in back {
                    let q = q as *mut u8;
                    let sp = span_of(heap, q);
                    // SAFETY: B stamped it and handed it over.
                    unsafe {
                        verify(q, sp.elem_size(), tag);
                        cache.free(sp, q, central);
                    }
                }
            }
        }
        tx.send(batch).unwrap();
        drop(tx);
        for back in back_rx {
            for (q, tag) in back {
                let q = q as *mut u8;
                let sp = span_of(heap, q);
                // SAFETY: as above.
                unsafe {
                    verify(q, sp.elem_size(), tag);
                    cache.free(sp, q, central);
                }
            }
        }
        let counts: (u64, u64) = classes.iter().fold((0, 0), |acc, &c| {
            let (a, f) = cache.counts(c);
            (acc.0 + a, acc.1 + f)
        });
        cache.flush(central);
        (counts, b.join().unwrap())
    });
    let sent = (N - N / 10) as u64;
    assert_eq!(a_allocs, N as u64);
    assert_eq!(b_frees, sent, "B freed every object A sent");
    assert_eq!(b_allocs, sent, "B made one object per object it freed");
    assert_eq!(a_frees, N as u64 / 10 + b_allocs, "A freed its own and B's");
    let (mut allocs, mut frees) = (0, 0);
    for &class in &classes {
        let st = central.class_stats(class);
        allocs += st.allocs;
        frees += st.frees;
        drain(&central, class);
    }
    assert_eq!((allocs, frees), (a_allocs + b_allocs, a_frees + b_frees));
    assert_eq!(heap.stats().in_use, 0);
    heap.check_invariants();
}

#[test]
fn raw_remote_frees_from_other_threads_refill_the_owner() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let class = class_of(256);
    let size = SIZE_CLASSES.size_of_class(class);
    let per_span = SIZE_CLASSES.objects_of_class(class);
    let mut cache = MCache::new();
    // Allocate most of one span, free all of it remotely from two threads,
    // then keep allocating: the cache takes the remote stack instead of
    // carving or taking a new span.
    let objs: Vec<usize> = (0..per_span)
        .map(|i| {
            let p = cache.alloc(class, &central);
            // SAFETY: ours.
            unsafe { stamp(p, size, i as u64) };
            p as usize
        })
        .collect();
    let span = span_of(heap, objs[0] as *mut u8);
    assert!(std::ptr::eq(span, cache.current_span(class).unwrap()));
    assert!(objs.iter().all(|&p| span.contains(p)), "one span's worth");
    std::thread::scope(|s| {
        let objs = &objs;
        for half in objs.chunks(per_span.div_ceil(2)) {
            let central = &central;
            s.spawn(move || {
                for &p in half {
                    let i = objs.iter().position(|&q| q == p).unwrap();
                    // SAFETY: an allocated object of `span`, stamped.
                    unsafe {
                        verify(p as *const u8, size, i as u64);
                        central.free_remote(span, p as *mut u8);
                    }
                }
            });
        }
    });
    // Raw remote frees are not counted by any cache.
    assert_eq!(cache.counts(class), (per_span as u64, 0));
    assert_eq!(heap.stats().spans_in_use, 1);
    let mut again = HashSet::new();
    for _ in 0..per_span {
        let p = cache.alloc(class, &central);
        assert!(
            span.contains(p as usize),
            "refill should take the remote stack"
        );
        again.insert(p as usize);
    }
    assert_eq!(
        again,
        objs.iter().copied().collect(),
        "the same objects come back"
    );
    assert_eq!(heap.stats().spans_in_use, 1);
    for p in again {
        // SAFETY: allocated, current span.
        assert!(unsafe { cache.free_local(class, p as *mut u8) });
    }
    assert_eq!(cache.counts(class), (2 * per_span as u64, per_span as u64));
    cache.flush(&central);
    assert_eq!(heap.stats().in_use, 0);
}

#[test]
fn out_of_memory_returns_null_and_recovers() {
    let heap: &'static MHeap<FaultInjecting<FixedRegion>> = Box::leak(Box::new(MHeap::new(
        FaultInjecting::new(FixedRegion::new(buffer(4)), FaultPlan::FailFrom(0)),
        HeapConfig {
            arena_size: 1 << 20,
        },
    )));
    let central = Centrals::new(heap);
    let mut cache = MCache::new();
    // Span ownership is what this test is about: no shared refills.
    cache.skip_shared_refills();
    for class in [1, class_of(100), class_of(4096), class_of(32768)] {
        for _ in 0..3 {
            assert!(
                cache.alloc(class, &central).is_null(),
                "class {class}: no memory"
            );
        }
        assert_eq!(
            cache.counts(class),
            (0, 0),
            "failed allocations are not counted"
        );
        assert!(cache.current_span(class).is_none());
    }
    heap.with_source(|s| s.heal());
    let class = class_of(100);
    let size = SIZE_CLASSES.size_of_class(class);
    let p = cache.alloc(class, &central);
    assert!(!p.is_null(), "allocation works once memory returns");
    // SAFETY: ours.
    unsafe {
        stamp(p, size, 1);
        verify(p, size, 1);
        assert!(cache.free_local(class, p));
    }
    cache.flush(&central);
    assert_eq!(heap.stats().in_use, 0);

    // Exhaust the region with 32 KiB objects: null at the end, no crash;
    // everything freed, allocation works again.
    let big = class_of(32768);
    let mut held = Vec::new();
    loop {
        let p = cache.alloc(big, &central);
        if p.is_null() {
            break;
        }
        // SAFETY: ours.
        unsafe { stamp(p, 32768, held.len() as u64) };
        held.push(p);
        assert!(held.len() < 1000, "a 4 MiB region cannot hold this many");
    }
    assert!(
        held.len() >= 50,
        "most of the region should be usable: {}",
        held.len()
    );
    // The pages left over (too few for a 4-page span) still serve a
    // one-page class, until they too run out.
    let small = class_of(2048);
    let mut smalls = Vec::new();
    loop {
        let p = cache.alloc(small, &central);
        if p.is_null() {
            break;
        }
        // SAFETY: ours.
        unsafe { stamp(p, 2048, 7) };
        smalls.push(p);
        assert!(smalls.len() < 2048, "a 4 MiB region cannot hold this many");
    }
    assert!(cache.alloc(small, &central).is_null());
    assert!(cache.alloc(big, &central).is_null());
    for &p in &smalls {
        // SAFETY: allocated and stamped above.
        unsafe {
            verify(p, 2048, 7);
            cache.free(span_of(heap, p), p, &central);
        }
    }
    for (i, &p) in held.iter().enumerate() {
        // SAFETY: allocated and stamped above.
        unsafe {
            verify(p, 32768, i as u64);
            cache.free(span_of(heap, p), p, &central);
        }
    }
    assert_eq!(
        cache.counts(big),
        (held.len() as u64, held.len() as u64),
        "failed allocations are not counted"
    );
    cache.flush(&central);
    drain(&central, big);
    drain(&central, small);
    assert_eq!(heap.stats().in_use, 0);
    // (The flush started the shared refills over.)
    cache.skip_shared_refills();
    let p = cache.alloc(class_of(2048), &central);
    assert!(!p.is_null(), "memory freed is usable again");
    // SAFETY: ours, current span.
    assert!(unsafe { cache.free_local(class_of(2048), p) });
    cache.flush(&central);
    heap.check_invariants();
}

/// A cache's objects freed by another cache on another thread land on the
/// remote stacks of the spans the first cache owns (full ones and the
/// current one), where only that cache looks: `trim` collects them, drains
/// the stash, and gives back every span with no live object, and the heap
/// holds exactly the spans of the objects still live.
#[test]
fn trim_gives_back_spans_another_cache_emptied() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let class = class_of(256);
    let size = SIZE_CLASSES.size_of_class(class);
    let per_span = SIZE_CLASSES.objects_of_class(class);
    let span_bytes = SIZE_CLASSES.span_bytes_of_class(class);
    let mut cache = MCache::new();
    // Five spans filled, a sixth current with half of its objects out.
    let n = 5 * per_span + per_span / 2;
    let objs: Vec<*mut u8> = (0..n)
        .map(|i| {
            let p = cache.alloc(class, &central);
            assert!(!p.is_null());
            // SAFETY: ours.
            unsafe { stamp(p, size, i as u64) };
            p
        })
        .collect();
    let mut spans: Vec<&Span> = Vec::new();
    for &p in &objs {
        let sp = span_of(heap, p);
        if !spans.iter().any(|s| std::ptr::eq(*s, sp)) {
            spans.push(sp);
        }
    }
    assert_eq!(spans.len(), 6);
    assert_eq!(cache.owned_spans(class), (0, 5));
    assert!(std::ptr::eq(spans[5], cache.current_span(class).unwrap()));
    assert_eq!(heap.stats().in_use, 6 * span_bytes);
    let in_span = |k: usize| -> Vec<usize> {
        (0..n)
            .filter(|&i| spans[k].contains(objs[i] as usize))
            .collect()
    };
    // Who frees what (object indices):
    // - span 0: another cache, but three objects go to this cache's stash;
    // - span 1: another cache, all of them;
    // - span 2: another cache, all but one, which stays live;
    // - span 3: this cache, all of them (a wholly free partial span);
    // - span 4: half this cache, half the other;
    // - span 5 (current): half of what was handed out freed by each, one
    //   object live.
    let (s0, s1, s2, s3, s4, s5) = (
        in_span(0),
        in_span(1),
        in_span(2),
        in_span(3),
        in_span(4),
        in_span(5),
    );
    let live = [s2[s2.len() / 2], s5[0]];
    let mut remote = Vec::new();
    let mut local = Vec::new();
    let mut stashed = Vec::new();
    stashed.extend_from_slice(&s0[..3]);
    remote.extend_from_slice(&s0[3..]);
    remote.extend_from_slice(&s1);
    remote.extend(s2.iter().filter(|i| !live.contains(i)));
    local.extend_from_slice(&s3);
    let half = s4.len() / 2;
    local.extend_from_slice(&s4[..half]);
    remote.extend_from_slice(&s4[half..]);
    for (j, &i) in s5[1..].iter().enumerate() {
        if j % 2 == 0 { &mut local } else { &mut remote }.push(i);
    }

    let objs_addr: Vec<usize> = objs.iter().map(|&p| p as usize).collect();
    std::thread::scope(|s| {
        let (central, objs, remote) = (&central, &objs_addr, &remote);
        s.spawn(move || {
            let mut other = MCache::new();
            for &i in remote {
                let p = objs[i] as *mut u8;
                let sp = span_of(heap, p);
                // SAFETY: stamped by the owner, handed over, not used again.
                unsafe {
                    verify(p, size, i as u64);
                    other.free(sp, p, central);
                }
            }
            assert_eq!(other.counts(class), (0, remote.len() as u64));
            other.flush(central);
        });
    });
    for &i in &local {
        // SAFETY: allocated and stamped; not used again.
        unsafe {
            verify(objs[i], size, i as u64);
            cache.free(span_of(heap, objs[i]), objs[i], &central);
        }
    }
    for &i in &stashed {
        // SAFETY: as above; an object outside the current span.
        unsafe {
            verify(objs[i], size, i as u64);
            cache.free_other(class, objs[i], &central);
        }
    }
    // Span 3 is wholly free and kept for re-use; spans 0, 1, 2 sit full
    // with their objects on their remote stacks; nothing went back.
    assert_eq!(cache.owned_spans(class), (2, 3));
    assert_eq!(heap.stats().in_use, 6 * span_bytes);
    assert_eq!(central.check_class(class), (0, 0));

    let before = central.class_stats(class);
    cache.trim(&central);
    // Spans 0, 1, 3, 4 went back; span 2 (a live object, and free ones
    // now) is partial; the current span stays, with its free objects.
    assert_eq!(cache.owned_spans(class), (1, 0));
    assert!(std::ptr::eq(spans[5], cache.current_span(class).unwrap()));
    assert_eq!(
        heap.stats().in_use,
        2 * span_bytes,
        "the heap should hold the two spans with live objects only"
    );
    assert_eq!(central.check_class(class), (0, 0));
    let after = central.class_stats(class);
    assert_eq!(after.spans_to_source - before.spans_to_source, 4);
    for &i in &live {
        // SAFETY: still allocated and stamped.
        unsafe { verify(objs[i], size, i as u64) };
    }
    // A second trim finds nothing more to give.
    cache.trim(&central);
    assert_eq!(heap.stats().in_use, 2 * span_bytes);

    // The free objects trim collected serve allocation: the current span's
    // list first, then span 2. None of them is a live object.
    let mut again = Vec::new();
    for k in 0..per_span {
        let p = cache.alloc(class, &central);
        assert!(!p.is_null());
        assert!(
            !live.iter().any(|&i| objs[i] == p),
            "a live object handed out"
        );
        assert!(spans[2].contains(p as usize) || spans[5].contains(p as usize));
        // SAFETY: ours.
        unsafe { stamp(p, size, 1 << 40 | k as u64) };
        again.push(p);
    }
    assert_eq!(heap.stats().in_use, 2 * span_bytes, "no new span needed");
    for (k, &p) in again.iter().enumerate() {
        // SAFETY: allocated and stamped above; not used again.
        unsafe {
            verify(p, size, 1 << 40 | k as u64);
            cache.free(span_of(heap, p), p, &central);
        }
    }
    // The live objects go too: the current span through its list, span 2
    // through its own; trim gives both back.
    for &i in &live {
        // SAFETY: allocated and stamped; not used again.
        unsafe {
            verify(objs[i], size, i as u64);
            cache.free(span_of(heap, objs[i]), objs[i], &central);
        }
    }
    cache.trim(&central);
    assert_eq!(heap.stats().in_use, 0, "every span should be back");
    assert!(cache.current_span(class).is_none());
    assert_eq!(cache.owned_spans(class), (0, 0));
    assert_eq!(central.check_class(class), (0, 0));
    cache.flush(&central);
    let st = central.class_stats(class);
    assert_eq!(st.spans_from_source, st.spans_to_source);
    heap.check_invariants();
}

/// `alloc_zeroed` hands out never-used objects of a span fresh from the
/// source without asking for a memset, only while there are such objects,
/// and never an object that was used.
#[test]
fn alloc_zeroed_skips_the_memset_only_for_never_used_objects() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let mut cache = MCache::new();
    // Span ownership is what this test is about: no shared refills.
    cache.skip_shared_refills();
    let class = class_of(48);
    let size = SIZE_CLASSES.size_of_class(class);
    let per_span = SIZE_CLASSES.objects_of_class(class);
    // A used object, dirtied and freed into the current span's list.
    let used = cache.alloc(class, &central);
    // SAFETY: ours.
    unsafe {
        used.write_bytes(0xFF, size);
        assert!(cache.free_local(class, used));
    }
    let mut clean = 0;
    let mut live = Vec::new();
    for _ in 0..per_span {
        let (p, dirty) = cache.alloc_zeroed(class, &central);
        assert!(!p.is_null());
        if !dirty {
            clean += 1;
            assert_ne!(p, used, "a used object was called clean");
            // SAFETY: a live object of `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(bytes.iter().all(|&b| b == 0), "a clean object is not zero");
        }
        live.push(p);
    }
    // Everything but the objects carved into the free list at the first
    // refill came clean.
    let batch = mcentral::objects::carve_batch(size);
    assert_eq!(clean, per_span - batch, "clean objects");
    // The span is carved out: what follows needs zeroing.
    let (p, dirty) = cache.alloc_zeroed(class, &central);
    assert!(dirty && !p.is_null());
    live.push(p);
    for p in live {
        let sp = heap.span_of(p as usize).unwrap();
        // SAFETY: allocated above, not used again.
        unsafe { cache.free(sp, p, &central) };
    }
    cache.flush(&central);
    assert_eq!(heap.stats().in_use, 0);
}

/// A cache that frees a class without allocating it (a consumer) keeps a
/// quarter of the stash, from its first free on; once it allocates the
/// class it gets the whole stash back. Every object keeps its pattern until it is freed.
#[test]
fn a_consumer_keeps_a_quarter_of_the_stash() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let class = class_of(128);
    let size = SIZE_CLASSES.size_of_class(class);
    let full = (mcache::STASH_BYTES / size).clamp(2, 64);
    let mut producer = MCache::new();
    let mut consumer = MCache::new();
    let mut made = 0u64;
    let mut make = |producer: &mut MCache, n: usize| -> Vec<(*mut u8, u64)> {
        (0..n)
            .map(|_| {
                let p = producer.alloc(class, &central);
                assert!(!p.is_null());
                made += 1;
                // SAFETY: just allocated, ours.
                unsafe { stamp(p, size, made) };
                (p, made)
            })
            .collect()
    };
    // Frees `objs` through `cache`'s stash; returns the largest stash seen.
    let consume = |cache: &mut MCache, objs: Vec<(*mut u8, u64)>| -> usize {
        let mut most = 0;
        for (p, tag) in objs {
            // SAFETY: a live object of `class`, stamped with `tag`, freed
            // once.
            unsafe {
                verify(p, size, tag);
                cache.free_other(class, p, &central);
            }
            most = most.max(cache.stash_len(class));
        }
        most
    };

    // A cache that has not allocated the class gets a quarter of the cap
    // from its first push on.
    let objs = make(&mut producer, full + 1);
    assert_eq!(consume(&mut consumer, objs), full / 4);
    let objs = make(&mut producer, 20 * full);
    let most = consume(&mut consumer, objs);
    assert!(
        most <= full / 4,
        "a consumer's stash held {most} objects (a quarter of the cap is {})",
        full / 4
    );

    // The consumer allocates the class once: at the next overflow the
    // stash gets its whole cap back.
    let own = consumer.alloc(class, &central);
    assert!(!own.is_null());
    let objs = make(&mut producer, 20 * full);
    let most = consume(&mut consumer, objs);
    assert_eq!(most, full, "the stash did not get its cap back");

    // SAFETY: `own` is the consumer's, unused; freed once.
    unsafe { consumer.free_other(class, own, &central) };
    consumer.flush(&central);
    producer.flush(&central);
    drain(&central, class);
    // The first allocations' shared span.
    central.sweep(class);
    assert_eq!(heap.stats().in_use, 0, "spans left in use");
}

/// A fresh cache's first refills of a class come from the class's shared
/// span (it owns no span, the objects go through its stash); past
/// `SHARED_REFILLS` it takes that span over and goes on in it; a cache
/// handed to a new thread starts over. Two caches' batches share the span.
#[test]
fn first_refills_come_from_the_shared_span_then_the_cache_takes_it_over() {
    let heap = heap(16);
    let central = Centrals::new(heap);
    let class = class_of(64);
    let size = SIZE_CLASSES.size_of_class(class);
    let mut a = MCache::new();
    let mut b = MCache::new();
    let mut objs: Vec<(*mut u8, u64)> = Vec::new();
    let take = |cache: &mut MCache, objs: &mut Vec<(*mut u8, u64)>| {
        let p = cache.alloc(class, &central);
        assert!(!p.is_null());
        let tag = objs.len() as u64;
        // SAFETY: just allocated, ours.
        unsafe { stamp(p, size, tag) };
        objs.push((p, tag));
    };
    // Both caches' first objects: one span between them, owned by neither.
    take(&mut a, &mut objs);
    take(&mut b, &mut objs);
    let shared = span_of(heap, objs[0].0);
    assert!(
        std::ptr::eq(shared, span_of(heap, objs[1].0)),
        "two shared spans"
    );
    assert_eq!(heap.stats().in_use, SIZE_CLASSES.span_bytes_of_class(class));
    assert!(a.current_span(class).is_none() && b.current_span(class).is_none());
    assert_eq!((a.shared_refills(class), b.shared_refills(class)), (1, 1));

    // A allocates until its refills from the shared span are used up: then
    // the next refill takes the shared span itself as its current span.
    while a.shared_refills(class) < mcache::SHARED_REFILLS {
        take(&mut a, &mut objs);
    }
    assert!(a.current_span(class).is_none());
    while a.current_span(class).is_none() {
        take(&mut a, &mut objs);
    }
    assert!(
        std::ptr::eq(a.current_span(class).unwrap(), shared),
        "the cache took another span than the shared one"
    );
    assert_eq!(heap.stats().in_use, SIZE_CLASSES.span_bytes_of_class(class));
    let distinct: HashSet<usize> = objs.iter().map(|&(p, _)| p as usize).collect();
    assert_eq!(distinct.len(), objs.len(), "an object handed out twice");

    // Handed to a new thread, a cache starts its shared refills over.
    a.new_thread();
    assert_eq!(a.shared_refills(class), 0);

    // Everything freed (through each cache's free path), contents checked.
    for (i, &(p, tag)) in objs.iter().enumerate() {
        let cache = if i == 1 { &mut b } else { &mut a };
        // SAFETY: allocated and stamped above; freed once.
        unsafe {
            verify(p, size, tag);
            cache.free(span_of(heap, p), p, &central);
        }
    }
    a.flush(&central);
    b.flush(&central);
    drain(&central, class);
    assert_eq!(heap.stats().in_use, 0);
    heap.check_invariants();
}
