//! Loom models of the central lists and the remote-free protocol
//! (`src/objects.rs`, `src/central.rs`).
//!
//! Run them with `cargo xtask loom` (release, debug assertions on, bounded
//! preemptions); `cargo xtask loom --broken` checks that each one fails
//! when the protocol it guards is broken on purpose. Without
//! `--cfg gomalloc_loom` this file compiles to nothing.
//!
//! # The configuration
//!
//! Tiny, so that every race is a few steps away: one size class, spans of
//! one page cut into 2 or 4 objects, a fake [`SpanSource`] over boxed pages
//! that re-uses the spans given back to it. The fake checks, as the models
//! run, that a span is never handed out while live, never given back twice
//! and never given back with objects still on its remote stack or while a
//! cache (as the models track it) owns it; the models themselves check that
//! no object is ever handed out twice. Every model ends in
//! [`drain_and_check`]: with all threads joined and every object freed, it
//! takes each partial span, counts its objects (each exactly once, free list
//! plus remote stack plus never-carved), and gives it back; afterwards no
//! span may be live.
//!
//! The test's own bookkeeping (`live`, `owned`, `held`) uses plain core
//! atomics, not loom's: loom runs one thread at a time, so they check
//! exclusion in real time, and they add no synchronisation that could hide a
//! missing edge in the protocol.
//!
//! # The models, and the break each one catches
//!
//! | model | races | broken variant |
//! |---|---|---|
//! | [`remote_frees_race_owner_collecting`] | two remote frees vs the owner's `take_remote` | `take_remote` |
//! | [`uncache_races_remote_free`] | `uncache_span` of an exhausted span vs a remote free | `uncache_full` |
//! | [`last_free_races_cache_and_uncache`] | the last frees into a full span vs a cache taking and returning a span | `notify` |
//! | [`handout_and_takeback_under_contention`] | two caches `cache_span`/`uncache_span` vs a remote free | `handout` |
//! | [`sweep_races_remote_frees_and_a_cache`] | `sweep` of a partial span vs the remote frees of its last objects and a cache taking and returning a span | `sweep` |
//! | [`batches_race_remote_frees_and_a_sweep`] | `take_batch` from the shared span (its own list, remote stack, carving) vs remote frees of its objects and a `sweep` | `batch` |

#![cfg(gomalloc_loom)]

mod loom_support;

use loom_support::*;

/// (a) Two threads free the objects of a span remotely while its owner
/// collects its remote stack twice; after a last collection the owner has
/// every object exactly once. Broken by `take_remote` (a load and a
/// separate write lose a push in between).
#[test]
fn remote_frees_race_owner_collecting() {
    model(8, || {
        let c = new_central(1, 4096);
        let g = c.cache_span(CLASS).unwrap();
        let span = g.span;
        let objs = carve_all(&c, span);
        let threads: Vec<_> = objs
            .iter()
            .map(|&o| {
                let c = Arc::clone(&c);
                loom::thread::spawn(move || free_remote(&c, o))
            })
            .collect();
        let mut got = Vec::new();
        for _ in 0..2 {
            got.extend(list_to_vec(take_remote(span, 0), 2));
        }
        for t in threads {
            t.join().unwrap();
        }
        got.extend(list_to_vec(take_remote(span, 0), 2));
        got.sort_unstable();
        let mut want = objs.clone();
        want.sort_unstable();
        assert_eq!(got, want, "remote frees lost or collected twice");
        // SAFETY: we own the span; `got` are its free objects.
        unsafe { c.uncache_span(span, vec_to_list(&got)) };
        drain_and_check(&c);
    });
}

/// (b) The owner hands back an exhausted span (`uncache_span` with no free
/// objects) and then frees one of its objects remotely, while two other
/// threads free two more: each free lands before the stack is taken (and
/// goes back with the span), or `try_mark_full` sees it and files the span
/// as partial, or it lands on a full span and notifies. Once all have
/// finished, a span on the full list has an empty stack, and after the last
/// object is freed nothing is lost. Broken by `uncache_full` (marking full
/// overwrites the stack).
#[test]
fn uncache_races_remote_free() {
    model(4, || {
        let c = new_central(1, 2048);
        let g = c.cache_span(CLASS).unwrap();
        let span = g.span;
        let objs = carve_all(&c, span);
        let threads: Vec<_> = objs[..2]
            .iter()
            .map(|&o| {
                let c = Arc::clone(&c);
                loom::thread::spawn(move || free_remote(&c, o))
            })
            .collect();
        // SAFETY: we own the span; it has no free object left.
        unsafe { c.uncache_span(span, ptr::null_mut()) };
        free_remote(&c, objs[2]);
        for t in threads {
            t.join().unwrap();
        }
        let (partial, full) = c.check_class(CLASS);
        assert_eq!(partial + full, 1);
        if full == 1 {
            assert!(
                !has_remote(span),
                "span with a remote free on the full list"
            );
        }
        free_remote(&c, objs[3]);
        drain_and_check(&c);
    });
}

/// (c) A span sits on the full list; two threads free its two objects (the
/// first notifies, the last makes it wholly free) while a cache takes a span
/// (that one, once it is partial, or another from the source), allocates and
/// frees an object, and gives it back. The span goes back to the source
/// exactly once and is never handed out while live. Broken by `notify` (the
/// first free never tells the central list, so the span stays full with
/// free objects).
#[test]
fn last_free_races_cache_and_uncache() {
    model(8, || {
        let c = new_central(2, 4096);
        let g = c.cache_span(CLASS).unwrap();
        let objs = carve_all(&c, g.span);
        // SAFETY: we own the span; it has no free object left.
        unsafe { c.uncache_span(g.span, ptr::null_mut()) };
        assert_eq!(c.check_class(CLASS), (0, 1));
        let threads: Vec<_> = objs
            .iter()
            .map(|&o| {
                let c = Arc::clone(&c);
                loom::thread::spawn(move || free_remote(&c, o))
            })
            .collect();
        cache_round(&c);
        for t in threads {
            t.join().unwrap();
        }
        drain_and_check(&c);
    });
}

/// (d) Two caches each take a span, allocate, free and give it back, while
/// a third thread frees an object of the partial span remotely: no span is
/// ever owned by two caches, no object handed out twice, and every object
/// and span is accounted for. Broken by `handout` (a span handed out keeps
/// `IN_CENTRAL`, so a remote free into it notifies a list it is not on).
#[test]
fn handout_and_takeback_under_contention() {
    model(4, || {
        let c = new_central(3, 2048);
        // One span on the partial list: one object free, one held by the
        // remote freer, two never carved.
        let g = c.cache_span(CLASS).unwrap();
        // SAFETY: we own the fresh span.
        let (head, n) = unsafe { carve(g.span, 2) };
        assert_eq!(n, 2);
        let objs = list_to_vec(head, 2);
        c.source().take_obj(objs[0] as *mut u8);
        // SAFETY: we own the span; `objs[1]` is free.
        unsafe { c.uncache_span(g.span, vec_to_list(&objs[1..])) };
        assert_eq!(c.check_class(CLASS), (1, 0));
        let freer = {
            let c = Arc::clone(&c);
            let o = objs[0];
            loom::thread::spawn(move || free_remote(&c, o))
        };
        let caches: Vec<_> = (0..2)
            .map(|_| {
                let c = Arc::clone(&c);
                loom::thread::spawn(move || cache_round(&c))
            })
            .collect();
        freer.join().unwrap();
        for t in caches {
            t.join().unwrap();
        }
        drain_and_check(&c);
    });
}

/// (e) A partial span (one object free, one never carved, two held by
/// other threads) is swept while those threads free their objects
/// remotely and a cache takes a span (that one, or a fresh one once it is
/// gone), allocates and frees an object, and gives it back. A sweep may
/// find the stack empty, half full, or the span wholly free (then the
/// span goes back to the source, which checks that nothing is live and
/// nothing is left on the stack); the frees that land after it wait,
/// without a notification, for the next sweep or hand-out. Once everything
/// has finished, one more sweep leaves no span live: a wholly free span
/// never stays stranded on the partial list. Broken by `sweep` (the sweep
/// takes the stack leaving only `IN_CENTRAL`, so the next remote free
/// notifies a span that is on the partial list, not the full one).
#[test]
fn sweep_races_remote_frees_and_a_cache() {
    model(4, || {
        let c = new_central(2, 2048);
        let g = c.cache_span(CLASS).unwrap();
        // SAFETY: we own the fresh span.
        let (head, n) = unsafe { carve(g.span, 3) };
        assert_eq!(n, 3);
        let objs = list_to_vec(head, 3);
        for &o in &objs[..2] {
            c.source().take_obj(o as *mut u8);
        }
        // SAFETY: we own the span; `objs[2]` is free.
        unsafe { c.uncache_span(g.span, vec_to_list(&objs[2..])) };
        assert_eq!(c.check_class(CLASS), (1, 0));
        let mut threads: Vec<_> = objs[..2]
            .iter()
            .map(|&o| {
                let c = Arc::clone(&c);
                loom::thread::spawn(move || free_remote(&c, o))
            })
            .collect();
        threads.push({
            let c = Arc::clone(&c);
            loom::thread::spawn(move || cache_round(&c))
        });
        c.sweep(CLASS);
        for t in threads {
            t.join().unwrap();
        }
        c.sweep(CLASS);
        assert_eq!(
            c.check_class(CLASS),
            (0, 0),
            "a wholly free span stays listed after a sweep"
        );
        assert_eq!(c.source().live_spans(), 0, "a wholly free span kept");
        drain_and_check(&c);
    });
}

/// (f) Batches of the class's shared span race remote frees into it and a
/// sweep: the main thread takes a one-object batch (carved), a second
/// thread frees that object remotely while a third takes two batches of up
/// to two objects (the freed object off the remote stack, or never-carved
/// ones) and frees each batch remotely in turn, and the main thread sweeps
/// meanwhile. After the joins a sweep finds the shared span wholly free
/// and gives it back. Broken by `batch` (a batch cut from the span's own
/// list leaves its objects counted free: the span goes back to the source
/// with an object out, or never looks wholly free again).
#[test]
fn batches_race_remote_frees_and_a_sweep() {
    model(4, || {
        let c = new_central(2, 2048);
        let (head, n) = c.take_batch(CLASS, 1);
        assert_eq!(n, 1, "a fresh shared span carves the batch");
        c.source().take_obj(head);
        let a = head as usize;
        let freer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || free_remote(&c, a))
        };
        let taker = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || {
                for _ in 0..2 {
                    let (head, n) = c.take_batch(CLASS, 2);
                    assert!(n >= 1, "fake source exhausted");
                    let objs = list_to_vec(head, 2);
                    assert_eq!(objs.len(), n, "take_batch's count and list disagree");
                    for &o in &objs {
                        c.source().take_obj(o as *mut u8);
                    }
                    for &o in &objs {
                        free_remote(&c, o);
                    }
                }
            })
        };
        c.sweep(CLASS);
        freer.join().unwrap();
        taker.join().unwrap();
        c.sweep(CLASS);
        assert_eq!(
            c.source().live_spans(),
            0,
            "a wholly free shared span kept after a sweep"
        );
        drain_and_check(&c);
    });
}
