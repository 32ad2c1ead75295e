//! The spans of a thread that exited go back to the heap by themselves: an
//! exiting thread's cache is pooled with its spans for the next thread,
//! and the background thread's sweep flushes it when no thread takes it,
//! within the sweep period (a quarter of the scavenger delay). Nothing is
//! called here but allocation and free.
//!
//! One test in its own binary: it watches process-wide counters.

use gomalloc::GoMalloc;
use std::alloc::{Layout, alloc, dealloc};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

mod common;
use common::{check, fill};

const MIB: u64 = 1 << 20;

#[test]
fn spans_of_exited_threads_come_back_by_themselves() {
    let mut o = gomalloc::options();
    o.scavenge_delay_ms = Some(200);
    o.background_thread = true;
    gomalloc::set_options(o).unwrap();
    // Start the background thread: a large free is one of its start points.
    drop(vec![0u8; 4 << 20]);
    drop(vec![0u8; 4 << 20]);
    let start = Instant::now();
    while !gomalloc::background_thread_running() && start.elapsed() < Duration::from_secs(2) {
        drop(vec![0u8; 1 << 20]);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        gomalloc::background_thread_running(),
        "no background thread"
    );
    let base = gomalloc::stats().heap_inuse;

    // Threads each allocate 32 MiB of 1 KiB objects, free half, hand the
    // other half to this thread, and exit.
    let l = Layout::from_size_align(1000, 8).unwrap();
    let mut handed = Vec::new();
    for t in 0..4u64 {
        let objs = std::thread::spawn(move || {
            let mut mine = Vec::new();
            let mut theirs = Vec::new();
            for i in 0..32_768u64 {
                // SAFETY: non-zero size.
                let p = unsafe { alloc(l) };
                assert!(!p.is_null());
                let seed = t << 32 | i;
                // SAFETY: a live 1000-byte block.
                unsafe { fill(p, 1000, seed) };
                if i % 2 == 0 {
                    mine.push((p as usize, seed));
                } else {
                    theirs.push((p as usize, seed));
                }
            }
            for (p, seed) in mine {
                // SAFETY: live blocks we filled.
                unsafe {
                    check(p as *const u8, 1000, seed, "freed by its thread");
                    dealloc(p as *mut u8, l);
                }
            }
            theirs
        })
        .join()
        .unwrap();
        handed.extend(objs);
    }
    let with_live = gomalloc::stats().heap_inuse;
    assert!(
        with_live > base + 60 * MIB,
        "the threads' objects are in spans: {} MiB over the base",
        (with_live - base) / MIB
    );
    for (p, seed) in handed.drain(..) {
        // SAFETY: live blocks handed over.
        unsafe {
            check(p as *const u8, 1000, seed, "freed by the main thread");
            dealloc(p as *mut u8, l);
        }
    }
    drop(handed);

    // The last exited thread's pooled cache holds up to its bound of owned
    // spans (4 MiB) and its current span until a sweep flushes it (the
    // rest went to the central lists as the threads ran, and the sweep
    // gives those back as they empty): wait for spans in use to fall back
    // to within 1 MiB of the base (this thread's cache holds only its
    // stash), for at most the delay plus slack for a loaded machine.
    let freed_at = Instant::now();
    let limit = base + MIB;
    let mut now = gomalloc::stats().heap_inuse;
    while now > limit && freed_at.elapsed() < Duration::from_millis(3000) {
        std::thread::sleep(Duration::from_millis(10));
        now = gomalloc::stats().heap_inuse;
    }
    eprintln!(
        "spans in use: base {} MiB, with live objects {} MiB, {} MiB {:?} after the last free",
        base / MIB,
        with_live / MIB,
        now / MIB,
        freed_at.elapsed()
    );
    assert!(
        now <= limit,
        "spans of exited threads stayed in use: {} MiB over the base",
        (now - base) / MIB
    );
}
