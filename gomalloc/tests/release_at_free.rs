//! A huge block goes back to the OS as it is freed (`release_at_free_bytes`,
//! off by default, here 32 MiB), through the whole allocator, with every other way back
//! switched off (no background thread, no delay, a retained bound larger
//! than the test's memory): resident memory (`/proc/self/statm`) falls at
//! the `dealloc` itself. A block under the size, and a huge one with the
//! rule off, stay resident: the control that shows the rule is what gave
//! the memory back.
//!
//! Resident memory is process-wide, so this binary holds one test.

#![cfg(target_os = "linux")]

use gomalloc::GoMalloc;
use std::alloc::{Layout, alloc, dealloc};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

mod common;
#[path = "../../mheap/tests/rss/mod.rs"]
mod rss;
use common::{check, fill};
use rss::rss;

const MIB: usize = 1 << 20;

/// Allocates a block of `bytes`, fills it with a pattern, checks it and
/// frees it; returns the resident size with the block filled and right
/// after the free.
fn fill_and_free(bytes: usize, seed: u64) -> (usize, usize) {
    let l = Layout::from_size_align(bytes, 8).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { alloc(l) };
    assert!(!p.is_null(), "allocation of {bytes} bytes failed");
    // SAFETY: `p` is a live block of `bytes` bytes; freed once, below.
    unsafe {
        fill(p, bytes, seed);
        // Every page written, not only the pattern's words.
        for off in (0..bytes).step_by(4096) {
            p.add(off).write_volatile(p.add(off).read_volatile());
        }
        check(p, bytes, seed, "huge block");
    }
    let full = rss();
    // SAFETY: as above.
    unsafe { dealloc(p, l) };
    (full, rss())
}

#[test]
fn a_huge_block_goes_back_as_it_is_freed() {
    let mut o = gomalloc::options();
    o.background_thread = false;
    o.scavenge_delay_ms = None;
    o.retain_min_bytes = 1 << 30;
    o.memory_limit = None;
    assert_eq!(o.release_at_free_bytes, None, "the default");
    o.release_at_free_bytes = Some(32 << 20);
    gomalloc::set_options(o).unwrap();

    // 64 MiB: over the size; resident memory falls at the free.
    let (full, after) = fill_and_free(64 * MIB, 1);
    assert!(
        full.saturating_sub(after) >= 60 * MIB,
        "64 MiB freed, resident only {} -> {} MiB",
        full / MIB,
        after / MIB
    );

    // 16 MiB: under it; stays resident (nothing else releases here).
    let (full, after) = fill_and_free(16 * MIB, 2);
    assert!(
        full.saturating_sub(after) < 4 * MIB,
        "a 16 MiB block went back though under the size: {} -> {} MiB",
        full / MIB,
        after / MIB
    );
    gomalloc::release_memory();

    // The rule off: 64 MiB stays resident too.
    o.release_at_free_bytes = None;
    gomalloc::set_options(o).unwrap();
    let (full, after) = fill_and_free(64 * MIB, 3);
    assert!(
        full.saturating_sub(after) < 4 * MIB,
        "64 MiB went back with the rule off: {} -> {} MiB",
        full / MIB,
        after / MIB
    );
    let st = gomalloc::stats();
    assert!(st.heap_idle - st.heap_released >= 60 * MIB as u64, "{st:?}");
}
