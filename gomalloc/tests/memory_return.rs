//! Memory goes back to the OS (`/proc/self/statm`'s resident size), through
//! the whole allocator (`GoMalloc` as this binary's global allocator):
//!
//! 1. after a large free (small and medium objects, half of them freed by
//!    another thread), with nothing called: within the configured delay
//!    (set to 200 ms here) plus scheduling slack, resident memory falls back
//!    near where it started;
//! 2. after `release_memory()`, it is within a few MiB of what is live.
//!
//! Resident memory is process-wide, so this binary holds one test, which
//! runs both phases in order.

#![cfg(target_os = "linux")]

use gomalloc::GoMalloc;
use std::alloc::{Layout, alloc, dealloc};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

mod common;
#[path = "../../mheap/tests/rss/mod.rs"]
mod rss;
use common::{check, fill};
use rss::rss;

const MIB: usize = 1 << 20;

/// An object the test owns: address (as usize, to cross threads), layout,
/// pattern seed.
type Obj = (usize, Layout, u64);

/// Allocates about `total` bytes of objects from 16 B to 64 KiB (sizes
/// spread evenly over their logarithm, so every size class and some large
/// spans get a share), each filled with its pattern.
fn allocate(total: usize, seed: u64) -> Vec<Obj> {
    let mut objs = Vec::new();
    let mut x = seed | 1;
    let mut bytes = 0;
    while bytes < total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bits = 4 + (x % 13) as u32; // 16 B .. 64 KiB
        let size = (1usize << bits) + (x >> 20) as usize % (1usize << bits);
        let l = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { alloc(l) };
        assert!(!p.is_null(), "allocation of {size} bytes failed");
        let s = x.wrapping_add(objs.len() as u64);
        // SAFETY: `p` is a live block of `size` bytes.
        unsafe { fill(p, size, s) };
        objs.push((p as usize, l, s));
        bytes += size;
    }
    objs
}

/// Checks each object's pattern and frees it.
fn free_all(objs: Vec<Obj>, what: &str) {
    for (p, l, s) in objs {
        // SAFETY: a live block of `l` we allocated and filled with `s`.
        unsafe {
            check(p as *const u8, l.size(), s, what);
            dealloc(p as *mut u8, l);
        }
    }
}

#[test]
fn resident_memory_comes_back() {
    let mut o = gomalloc::options();
    o.scavenge_delay_ms = Some(200);
    o.background_thread = true;
    gomalloc::set_options(o).expect("options");
    let delay = Duration::from_millis(200);

    // Warm up: the harness's and std's own allocations.
    free_all(allocate(4 * MIB, 1), "warm-up");
    std::thread::sleep(Duration::from_millis(50));
    let base = rss();

    // Phase 1: 256 MiB, half freed by another thread, half by this one.
    let objs = allocate(256 * MIB, 7);
    let peak = rss();
    assert!(
        peak > base + 200 * MIB,
        "the objects are resident: {} MiB over a base of {} MiB",
        (peak - base) / MIB,
        base / MIB
    );
    let (mine, theirs): (Vec<Obj>, Vec<Obj>) =
        objs.into_iter()
            .enumerate()
            .fold((Vec::new(), Vec::new()), |(mut a, mut b), (i, o)| {
                if i % 2 == 0 {
                    a.push(o)
                } else {
                    b.push(o)
                }
                (a, b)
            });
    let other = std::thread::spawn(move || free_all(theirs, "freed by another thread"));
    free_all(mine, "freed by the allocating thread");
    other.join().unwrap();
    let freed_at = Instant::now();
    let after_free = rss();
    // Without any call: poll until resident memory is back within 32 MiB of
    // the base, for at most the delay plus 2.8 s of slack for a loaded
    // machine (the scavenger needs the delay, a quarter of it to date the
    // memory, and a sweep period).
    let limit = base + 32 * MIB;
    let deadline = delay + Duration::from_millis(2800);
    let mut now = rss();
    while now > limit && freed_at.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        now = rss();
    }
    let took = freed_at.elapsed();
    eprintln!(
        "base {} MiB, peak {} MiB, right after the free {} MiB, {} MiB after {took:?}",
        base / MIB,
        peak / MIB,
        after_free / MIB,
        now / MIB
    );
    if now > limit {
        gomalloc::print_stats(2);
    }
    assert!(
        now <= limit,
        "resident memory did not come back by itself: {} MiB, base {} MiB, {took:?} after the free",
        now / MIB,
        base / MIB
    );
    assert!(
        gomalloc::background_thread_running(),
        "the background thread did not start"
    );

    // Phase 2: keep 16 MiB live, free 128 MiB, release on request.
    let keep = allocate(16 * MIB, 11);
    let live: usize = keep.iter().map(|o| o.1.size()).sum();
    free_all(allocate(128 * MIB, 13), "phase 2");
    let before = rss();
    let released = gomalloc::release_memory();
    let after = rss();
    eprintln!(
        "release_memory: {} MiB released, {} -> {} MiB (base {} MiB, live {} MiB)",
        released / MIB,
        before / MIB,
        after / MIB,
        base / MIB,
        live / MIB
    );
    assert!(
        after <= base + live + 8 * MIB,
        "after release_memory {} MiB are resident for {} MiB live over a base of {} MiB",
        after / MIB,
        live / MIB,
        base / MIB
    );
    free_all(keep, "kept objects");
}
