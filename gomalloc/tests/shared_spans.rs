//! Threads that each allocate a few objects of many size classes share
//! those classes' spans (their first refills of a class come from the
//! class's shared span) instead of taking a span, and a page, per class per
//! thread. Checked through the heap's count of spans in use, with every
//! object's contents verified while all of them are live at once. (That a
//! busy thread goes on in a span of its own is `mcache`'s test.)
//!
//! The heap's counters are process-wide, so this binary holds one test.

use gomalloc::GoMalloc;
use sizeclass::SIZE_CLASSES;
use std::alloc::{Layout, alloc, dealloc};
use std::sync::{Arc, Barrier};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

mod common;
use common::{check, fill};

const THREADS: usize = 8;
/// Objects each thread allocates per class.
const PER_CLASS: usize = 3;

/// The sizes used: 20 classes from 16 B to 1 KiB (every other class).
fn sizes() -> Vec<usize> {
    let all: Vec<usize> = (1..sizeclass::NUM_CLASSES)
        .map(|c| SIZE_CLASSES.size_of_class(c))
        .filter(|&s| (16..=1024).contains(&s))
        .collect();
    all.iter()
        .step_by(all.len() / 20)
        .take(20)
        .copied()
        .collect()
}

fn spans_in_use() -> u64 {
    gomalloc::stats().spans_inuse
}

#[test]
fn threads_that_allocate_little_share_spans() {
    let sizes = sizes();
    assert!(sizes.iter().all(|&s| s <= 1024));
    // Start the background thread and whatever else the first allocations
    // make before the baseline.
    drop(vec![0u8; 100]);
    let before = spans_in_use();
    let live = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (live, done, sizes) = (live.clone(), done.clone(), sizes.clone());
            std::thread::spawn(move || {
                let mut objs = Vec::with_capacity(sizes.len() * PER_CLASS);
                for (k, &size) in sizes.iter().enumerate() {
                    for j in 0..PER_CLASS {
                        let l = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: non-zero size.
                        let p = unsafe { alloc(l) };
                        assert!(!p.is_null());
                        let seed = ((t * 1000 + k) * 10 + j) as u64;
                        // SAFETY: `p` is a live block of `size` bytes.
                        unsafe { fill(p, size, seed) };
                        objs.push((p, l, seed));
                    }
                }
                live.wait();
                done.wait();
                for (p, l, seed) in objs {
                    // SAFETY: allocated above with `l`, filled with `seed`;
                    // freed once.
                    unsafe {
                        check(p, l.size(), seed, "a shared-span object");
                        dealloc(p, l);
                    }
                }
            })
        })
        .collect();
    live.wait();
    let during = spans_in_use() - before;
    done.wait();
    for h in handles {
        h.join().unwrap();
    }
    // Every thread's objects live at once: a span per class per thread
    // would be THREADS * 20 = 160 spans; shared, a class needs one (two
    // where a span filled up: 1 KiB objects, 8 per 8 KiB span).
    assert!(
        during <= 2 * sizes.len() as u64,
        "{THREADS} threads with {PER_CLASS} objects in each of {} classes took {during} spans",
        sizes.len()
    );
}
