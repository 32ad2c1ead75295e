//! In-place `realloc` of large objects: a shrink gives the span's tail back
//! to the heap, and growing again into that tail stays in place.
//!
//! Alone in its own test binary on purpose: the property holds only while no
//! other thread takes a span from the heap between the shrink and the
//! growth. In a binary with several tests, the test harness's main thread
//! allocates while it reports one test's result during the next, and can
//! take the freed tail; with a single test it only waits.

use gomalloc::GoMalloc;
use sizeclass::PAGE_SIZE;
use std::alloc::{Layout, alloc, dealloc, realloc};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

mod common;
use common::{check, fill};

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid layout")
}

#[test]
fn large_realloc_shrinks_and_grows_in_place() {
    for pages in [5usize, 8, 16, 33, 64, 130, 256] {
        let big = pages * PAGE_SIZE;
        let l = layout(big, 8);
        // SAFETY: non-zero size.
        let p = unsafe { alloc(l) };
        assert!(!p.is_null());
        // SAFETY: `big` bytes.
        unsafe { fill(p, big, pages as u64) };
        // A shrink of a large object always stays in place (its tail goes
        // back to the heap)...
        let half = (pages / 2).max(5) * PAGE_SIZE - 100;
        // SAFETY: live with layout `l`.
        let q = unsafe { realloc(p, l, half) };
        assert_eq!(q, p, "large shrink {big} -> {half} moved");
        // SAFETY: `half` bytes kept.
        unsafe { check(q, half, pages as u64, "large shrink") };
        // ... and growing back into the tail just freed stays in place too.
        // SAFETY: live with layout (half, 8).
        let r = unsafe { realloc(q, layout(half, 8), big) };
        assert_eq!(
            r, p,
            "large growth {half} -> {big} into the free tail moved"
        );
        // SAFETY: `big` bytes, `half` of them kept.
        unsafe {
            check(r, half, pages as u64, "large regrowth");
            fill(r, big, 99);
        }
        // Within the same page count: no move either.
        // SAFETY: live with layout `l`.
        let s = unsafe { realloc(r, l, big - 1000) };
        assert_eq!(s, p);
        // SAFETY: live.
        unsafe {
            check(s, big - 1000, 99, "same-pages realloc");
            dealloc(s, layout(big - 1000, 8));
        }
    }
}
