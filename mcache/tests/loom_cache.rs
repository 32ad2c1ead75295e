//! Loom models of the thread cache against the central lists
//! (`src/lib.rs`: refill, local and remote frees, flush).
//!
//! Run them with `cargo xtask loom` (release, debug assertions on, bounded
//! preemptions); `cargo xtask loom --broken` checks that each one fails
//! when the protocol it guards is broken on purpose. Without
//! `--cfg gomalloc_loom` this file compiles to nothing.
//!
//! # The configuration
//!
//! As in `mcentral/tests/loom_central.rs` (whose fake span source and
//! checks this file repeats, to be kept in step): one size class, spans of
//! one page cut into 2 or 4 objects, a fake [`SpanSource`] over boxed pages
//! that re-uses spans and checks that a span is never handed out while
//! live, never given back twice, never given back with objects on its
//! remote stack or allocated; the models check that no object is handed
//! out twice, and every model ends in [`drain_and_check`], which counts
//! every object of every span exactly once and gives the spans back.
//!
//! The test's own bookkeeping uses plain core atomics, not loom's: loom
//! runs one thread at a time, so they check exclusion in real time, and they
//! add no synchronisation that could hide a missing edge in the protocol.
//!
//! # The models, and the break each one catches
//!
//! | model | races | broken variant |
//! |---|---|---|
//! | [`refill_races_remote_frees`] | a cache's refill (collect, give back, take another) vs two remote frees | `take_remote` |
//! | [`flush_races_remote_frees`] | a cache's flush (thread exit) vs remote frees of objects it allocated | `flush` |
//! | [`stash_drain_races_owner_flush`] | another cache stashes the owner's objects, re-uses one, and flushes (its stash drains to the remote stacks) vs the owner's allocation, free and flush | `stash` |
//! | [`trim_races_remote_frees`] | a cache's `trim` (collect the stacks of its full and current spans, give back the wholly free ones) vs two remote frees into its full span | `trim` |
//! | [`shared_refills_race_remote_frees_and_a_takeover`] | a fresh cache's refills from the shared span, then its takeover of that span (`cache_span`), vs a remote free into it | `take_remote` |

#![cfg(gomalloc_loom)]

#[path = "../../mcentral/tests/loom_support/mod.rs"]
mod loom_support;

use loom_support::*;
use mcache::MCache;

/// Spawns a model thread with room on its stack for an `MCache` (a slot of
/// span lists per size class: several KiB).
fn spawn_big<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> loom::thread::JoinHandle<T> {
    loom::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(f)
        .expect("spawn")
}

/// A cache that takes spans of its own from its first refill (no shared
/// refills until it flushes): the models below but the last are about the
/// spans a cache owns; the shared span's batches have their own models
/// (`shared_refills_race_remote_frees_and_a_takeover` here,
/// `batches_race_remote_frees_and_a_sweep` in `loom_central.rs`).
fn owning_cache() -> Box<MCache> {
    let mut cache = Box::new(MCache::new());
    cache.skip_shared_refills();
    cache
}

/// Allocates an object of `CLASS` from `cache` and takes it.
fn alloc(cache: &mut MCache, c: &Central) -> usize {
    let p = cache.alloc(CLASS, c);
    assert!(!p.is_null(), "fake source exhausted");
    c.source().take_obj(p);
    p as usize
}

/// Frees `obj` through `cache` (locally if it owns the span, else remotely).
fn free(cache: &mut MCache, c: &Central, obj: usize) {
    let src = c.source();
    let span = src.span_of(obj);
    src.give_obj(obj as *mut u8);
    // SAFETY: the object was allocated and is not used afterwards.
    unsafe { cache.free(span, obj as *mut u8, c) };
}

/// (a) A cache has allocated both objects of its span; two threads free
/// them remotely while the cache allocates again: its refill collects the
/// remote stack, or gives the exhausted span back (full, or partial if a
/// free slipped in) and takes a span from the central list (that one, or a
/// fresh one). Then the cache frees what it got and flushes. Every object is
/// accounted for exactly once. Broken by `take_remote` (a load and a
/// separate write lose a push in between).
#[test]
fn refill_races_remote_frees() {
    model(4, || {
        let c = new_central(2, 4096);
        let mut cache = owning_cache();
        let objs = [alloc(&mut cache, &c), alloc(&mut cache, &c)];
        let threads: Vec<_> = objs
            .iter()
            .map(|&o| {
                let c = Arc::clone(&c);
                loom::thread::spawn(move || free_remote(&c, o))
            })
            .collect();
        let x = alloc(&mut cache, &c);
        free(&mut cache, &c, x);
        cache.flush(&*c);
        for t in threads {
            t.join().unwrap();
        }
        drain_and_check(&c);
    });
}

/// (e) A thread exits (`MCache::flush`) holding a span with free objects on
/// its list, while other threads free objects it allocated: one through
/// its own cache (the remote path of `MCache::free`), one through
/// `free_remote` directly. Nothing is lost: the flushed span ends partial
/// or back at the source. Broken by `flush` (the cache's free list is
/// dropped on the floor).
#[test]
fn flush_races_remote_frees() {
    model(8, || {
        let c = new_central(2, 2048);
        let mut cache = owning_cache();
        // Four objects a span, carved two at a time: after three
        // allocations the cache's list holds the fourth.
        let objs = [
            alloc(&mut cache, &c),
            alloc(&mut cache, &c),
            alloc(&mut cache, &c),
        ];
        let other = {
            let c = Arc::clone(&c);
            let o = objs[0];
            spawn_big(move || free(&mut Box::new(MCache::new()), &c, o))
        };
        let exiting = {
            let c = Arc::clone(&c);
            let o = objs[1];
            spawn_big(move || {
                free(&mut cache, &c, o);
                cache.flush(&*c);
            })
        };
        free_remote(&c, objs[2]);
        other.join().unwrap();
        exiting.join().unwrap();
        drain_and_check(&c);
    });
}

/// Frees `obj` into `cache`'s stash (a thread freeing an object of a span
/// it may not own).
fn stash_free(cache: &mut MCache, c: &Central, obj: usize) {
    c.source().give_obj(obj as *mut u8);
    // SAFETY: `obj` is an allocated object of CLASS, not used afterwards.
    unsafe { cache.free_other(CLASS, obj as *mut u8, c) };
}

/// Another thread frees the owner's objects into its stash, re-uses one
/// from the stash, and flushes (the stash drains to the spans' remote
/// stacks) while the owner allocates, frees and flushes: every object and
/// span must come back exactly once.
#[test]
fn stash_drain_races_owner_flush() {
    model(4, || {
        let c = new_central(2, 2048);
        let mut owner = owning_cache();
        let objs = [alloc(&mut owner, &c), alloc(&mut owner, &c)];
        let other = {
            let c = Arc::clone(&c);
            spawn_big(move || {
                let mut cache = Box::new(MCache::new());
                stash_free(&mut cache, &c, objs[0]);
                let p = alloc(&mut cache, &c);
                assert_eq!(p, objs[0], "the stash is re-used first");
                stash_free(&mut cache, &c, p);
                stash_free(&mut cache, &c, objs[1]);
                cache.flush(&*c);
            })
        };
        let x = alloc(&mut owner, &c);
        free(&mut owner, &c, x);
        owner.flush(&*c);
        other.join().unwrap();
        drain_and_check(&c);
    });
}

/// (f) A cache owns a full span (both objects allocated) and a current
/// one (one object out, one never carved); two threads free the full
/// span's objects remotely while the cache trims: it collects the stack
/// (empty, one object or both) and gives the span back if both came home,
/// else files it partial. Then the cache frees its last object locally and
/// trims again: every span goes back (the current one with its object on
/// the slot's list), and the cache owns nothing. Broken by `trim` (the
/// collection leaves `IN_CENTRAL` set on a span the cache owns, so the
/// next remote free notifies a central list the span is not on).
#[test]
fn trim_races_remote_frees() {
    model(8, || {
        let c = new_central(2, 4096);
        let mut cache = owning_cache();
        // One object carved at a time: the third allocation parks the
        // exhausted first span as full and takes a second one.
        let objs = [
            alloc(&mut cache, &c),
            alloc(&mut cache, &c),
            alloc(&mut cache, &c),
        ];
        assert_eq!(cache.owned_spans(CLASS), (0, 1));
        let threads: Vec<_> = objs[..2]
            .iter()
            .map(|&o| {
                let c = Arc::clone(&c);
                loom::thread::spawn(move || free_remote(&c, o))
            })
            .collect();
        // Let the freers go first in some executions: trim only loads a
        // stack it finds empty, and loom, which looks for other orders
        // where a write conflicts, never ran them before those loads (30
        // executions, none catching `trim`, without this yield).
        loom::thread::yield_now();
        cache.trim(&*c);
        for t in threads {
            t.join().unwrap();
        }
        free(&mut cache, &c, objs[2]);
        cache.trim(&*c);
        assert_eq!(cache.owned_spans(CLASS), (0, 0), "trim kept a free span");
        assert!(
            cache.current_span(CLASS).is_none(),
            "trim kept the current span"
        );
        assert_eq!(c.source().live_spans(), 0, "a wholly free span kept");
        drain_and_check(&c);
    });
}

/// A fresh cache's first refills come from the class's shared span (one
/// object a batch for this class), while another thread frees the first
/// object remotely: the second batch takes it off the shared span's remote
/// stack, or carves the other object. Then the cache is past its shared
/// refills and takes the shared span over (`cache_span` hands it out with
/// its list and remote stack) while the free may still be landing; it
/// allocates from it, frees everything and flushes, and a sweep gives back
/// whatever shared span is left: every object and span comes back exactly
/// once. Broken by `take_remote` (the takeover's swap of the remote stack
/// split into a load and a write loses the free).
#[test]
fn shared_refills_race_remote_frees_and_a_takeover() {
    model(4, || {
        let c = new_central(2, 2048);
        let mut cache = Box::new(MCache::new());
        let first = alloc(&mut cache, &c);
        assert!(
            cache.current_span(CLASS).is_none(),
            "the first refill took a span instead of a shared batch"
        );
        let freer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || free_remote(&c, first))
        };
        let second = alloc(&mut cache, &c);
        cache.skip_shared_refills();
        let third = alloc(&mut cache, &c);
        freer.join().unwrap();
        for o in [second, third] {
            free(&mut cache, &c, o);
        }
        cache.flush(&*c);
        c.sweep(CLASS);
        drain_and_check(&c);
    });
}
