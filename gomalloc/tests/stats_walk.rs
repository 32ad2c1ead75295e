//! `gomalloc::stats()` against a walk of the heap: every statistic the
//! counters keep that the heap's state determines (bytes and objects live,
//! per class and in all; spans in use and free; bytes mapped, in use, idle
//! and released) is recomputed by `stats_by_walk()` and must agree, at
//! several points of a run with threads that allocate, free each other's
//! objects and exit.
//!
//! The walk is exact only while no other thread allocates, so this test
//! runs without the test harness (`harness = false`: no harness threads)
//! and with the background thread off.

use gomalloc::{GoMalloc, HeapWalk, Stats};
use sizeclass::NUM_CLASSES;
use std::alloc::{Layout, alloc, dealloc};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

mod common;
use common::{check, fill};

type Obj = (usize, Layout, u64);

fn allocate(n: usize, seed: u64) -> Vec<Obj> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly small objects over every class, one in 64 large.
            let size = if x.is_multiple_of(64) {
                40_000 + (x >> 8) as usize % 300_000
            } else {
                1 + (x >> 8) as usize % 32_768
            };
            let l = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { alloc(l) };
            assert!(!p.is_null());
            let s = seed.wrapping_mul(1000).wrapping_add(i as u64);
            // SAFETY: a live block of `size` bytes.
            unsafe { fill(p, size, s) };
            (p as usize, l, s)
        })
        .collect()
}

fn free_all(objs: Vec<Obj>) {
    for (p, l, s) in objs {
        // SAFETY: live blocks we allocated and filled.
        unsafe {
            check(p as *const u8, l.size(), s, "object");
            dealloc(p as *mut u8, l);
        }
    }
}

/// Compares the counters with the walk; returns a description of every
/// difference.
fn compare(what: &str, s: &Stats, w: &HeapWalk) -> Vec<String> {
    let mut bad = Vec::new();
    let mut eq = |name: &str, counted: u64, walked: u64| {
        if counted != walked {
            bad.push(format!(
                "{what}: {name}: counters say {counted}, the walk finds {walked}"
            ));
        }
    };
    eq("heap_alloc", s.heap_alloc, w.heap_alloc);
    eq("heap_objects", s.heap_objects, w.heap_objects);
    eq("heap_sys", s.heap_sys, w.heap_sys);
    eq("heap_idle", s.heap_idle, w.heap_idle);
    eq("heap_inuse", s.heap_inuse, w.heap_inuse);
    eq("heap_released", s.heap_released, w.heap_released);
    eq("spans_inuse", s.spans_inuse, w.spans_inuse);
    eq("spans_free", s.spans_free, w.spans_free);
    eq(
        "large objects",
        s.large_allocs - s.large_frees,
        w.large_objects,
    );
    for class in 1..NUM_CLASSES {
        let c = s.by_size[class];
        eq(
            &format!("class {class} live"),
            c.allocs - c.frees,
            w.by_size_live[class],
        );
    }
    bad
}

fn main() {
    let mut o = gomalloc::options();
    o.background_thread = false;
    gomalloc::set_options(o).unwrap();
    let mut failures = Vec::new();
    let mut point = |what: &str| {
        let s = gomalloc::stats();
        let w = gomalloc::stats_by_walk();
        assert!(w.heap_objects > 0 || what == "start");
        failures.extend(compare(what, &s, &w));
        eprintln!(
            "{what}: {} objects live ({} B), {} spans in use",
            w.heap_objects, w.heap_alloc, w.spans_inuse
        );
    };
    point("start");

    let mine = allocate(20_000, 1);
    point("after 20 000 allocations");

    // A thread allocates, hands its objects over and exits (its cache is
    // flushed to the central lists, objects still live).
    let theirs = std::thread::spawn(|| allocate(10_000, 2)).join().unwrap();
    point("after a thread allocated and exited");

    // Another thread frees half of this thread's objects (remote frees,
    // into spans this thread's cache owns) while this one frees half of
    // the exited thread's (into central spans), then allocates again
    // (stashes, refills).
    let (mine_keep, mine_give): (Vec<_>, Vec<_>) = mine.into_iter().partition(|o| o.2 % 2 == 0);
    let (theirs_keep, theirs_free): (Vec<_>, Vec<_>) =
        theirs.into_iter().partition(|o| o.2 % 2 == 0);
    let freer = std::thread::spawn(move || free_all(mine_give));
    free_all(theirs_free);
    freer.join().unwrap();
    point("after cross-thread frees");
    let more = allocate(5_000, 3);
    point("after more allocations");

    gomalloc::release_memory();
    point("after release_memory");

    free_all(mine_keep);
    free_all(theirs_keep);
    free_all(more);
    point("after freeing everything");

    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}");
        }
        panic!("{} statistics disagree with the heap walk", failures.len());
    }
    eprintln!("stats_walk: every statistic agrees with the heap walk");
}
