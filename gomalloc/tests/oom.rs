//! Out of memory through the whole allocator: the OS page source under the
//! process heap fails every request (`inject_os_faults`), so every
//! allocation that needs memory the heap does not already hold fails.
//! Every failed allocation (small, large, zeroed, a growing `realloc`, the
//! C ABI's `malloc`) returns null and leaves the other objects intact;
//! nothing leaks (live bytes and objects come back to where they were);
//! once memory is available again, allocation works again.
//!
//! One test in its own binary: the fault plan is process-wide.

use gomalloc::{FaultPlan, GoMalloc, raw};
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

mod common;
use common::{check, fill};

type Obj = (*mut u8, Layout, u64);

/// Allocates objects of `size` until one fails or `max` succeed; each is
/// filled with its pattern. Returns them and whether one failed.
fn until_null(size: usize, max: usize, seed: u64, out: &mut Vec<Obj>) -> bool {
    let l = Layout::from_size_align(size, 8).unwrap();
    for i in 0..max {
        assert!(out.len() < out.capacity(), "bookkeeping would allocate");
        // SAFETY: non-zero size.
        let p = unsafe { GoMalloc.alloc(l) };
        if p.is_null() {
            return true;
        }
        let s = seed ^ (i as u64) << 20;
        // SAFETY: a live block of `size` bytes.
        unsafe { fill(p, size, s) };
        out.push((p, l, s));
    }
    false
}

fn free_all(objs: &mut Vec<Obj>) {
    for (p, l, s) in objs.drain(..) {
        // SAFETY: live blocks we allocated and filled.
        unsafe {
            check(p, l.size(), s, "object");
            GoMalloc.dealloc(p, l);
        }
    }
}

#[test]
fn out_of_memory_returns_null_leaks_nothing_and_recovers() {
    let mut o = gomalloc::options();
    o.background_thread = false;
    gomalloc::set_options(o).unwrap();

    // Objects that live through it all.
    let mut keep = Vec::with_capacity(1000);
    for size in [24, 500, 3000, 20_000, 100_000] {
        assert!(!until_null(size, 50, size as u64, &mut keep));
    }
    // The test's own bookkeeping must not need memory while none is to be
    // had.
    let mut got = Vec::with_capacity(1 << 21);
    let before = gomalloc::stats();
    gomalloc::inject_os_faults(FaultPlan::FailFrom(0));
    let mapped = gomalloc::stats().heap_sys;
    // Large objects until the heap's free memory is gone, then small ones
    // of several classes until their spans cannot be had.
    assert!(
        until_null(1 << 20, 1 << 20, 1, &mut got),
        "1 MiB blocks never failed"
    );
    for (i, size) in [16usize, 100, 1000, 8000, 32_768].into_iter().enumerate() {
        assert!(
            until_null(size, 1 << 24, 2 + i as u64, &mut got),
            "{size}-byte objects never failed"
        );
    }
    // Once out of memory, everything that needs new memory fails.
    let big = Layout::from_size_align(1 << 20, 8).unwrap();
    // SAFETY: valid layouts; nothing returned non-null is left unfreed.
    unsafe {
        assert!(GoMalloc.alloc(big).is_null(), "large alloc");
        assert!(GoMalloc.alloc_zeroed(big).is_null(), "large alloc_zeroed");
        assert!(raw::malloc_c(1 << 20).is_null(), "C malloc of 1 MiB");
        // A growing realloc fails and leaves the block as it was.
        let (p, l, s) = keep[keep.len() - 1];
        assert!(
            GoMalloc.realloc(p, l, 64 << 20).is_null(),
            "realloc to 64 MiB"
        );
        check(p, l.size(), s, "block whose realloc failed");
    }
    let now = gomalloc::stats().heap_sys;
    if now != mapped {
        eprintln!("heap_sys {now} != {mapped}");
    }
    assert_eq!(now, mapped, "the heap grew while its source failed");
    let n = got.len();

    // Nothing leaks: freeing what was obtained brings live memory back.
    free_all(&mut got);
    let after = gomalloc::stats();
    assert_eq!(after.heap_alloc, before.heap_alloc, "live bytes");
    assert_eq!(after.heap_objects, before.heap_objects, "live objects");
    for (p, l, s) in &keep {
        // SAFETY: live blocks.
        unsafe { check(*p, l.size(), *s, "kept object") };
    }

    // Memory is available again: allocation works, far beyond what the
    // heap held.
    gomalloc::inject_os_faults(FaultPlan::Never);
    eprintln!("{n} allocations succeeded before memory ran out");
    assert!(
        !until_null(1 << 20, 512, 7, &mut got),
        "large allocation after healing"
    );
    for size in [16usize, 100, 1000, 8000, 32_768] {
        assert!(
            !until_null(size, 2000, 8, &mut got),
            "{size}-byte allocation after healing"
        );
    }
    assert!(gomalloc::stats().heap_sys > mapped);
    free_all(&mut got);
    free_all(&mut keep);
}
