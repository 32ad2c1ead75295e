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

fn pat_word(seed: u64, j: usize) -> u64 {
    let mut x = seed ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// Fills `len` bytes at `p` with the pattern of `seed`.
///
/// # Safety
///
/// `p..p+len` is writable.
unsafe fn fill(p: *mut u8, len: usize, seed: u64) {
    let words = len / 8;
    for j in 0..words {
        // SAFETY: in bounds (caller); unaligned writes are allowed.
        unsafe {
            p.add(j * 8)
                .cast::<u64>()
                .write_unaligned(pat_word(seed, j))
        };
    }
    let tail = pat_word(seed, words).to_le_bytes();
    for (k, &b) in tail.iter().enumerate().take(len % 8) {
        // SAFETY: in bounds (caller).
        unsafe { p.add(words * 8 + k).write(b) };
    }
}

/// Checks the pattern of `seed` over `len` bytes at `p`.
///
/// # Safety
///
/// `p..p+len` is readable and initialised.
unsafe fn check(p: *const u8, len: usize, seed: u64, what: &str) {
    let words = len / 8;
    for j in 0..words {
        // SAFETY: in bounds (caller).
        let w = unsafe { p.add(j * 8).cast::<u64>().read_unaligned() };
        assert_eq!(
            w,
            pat_word(seed, j),
            "{what}: word {j} of {len} bytes at {p:p} corrupted"
        );
    }
    let tail = pat_word(seed, words).to_le_bytes();
    for (k, &b) in tail.iter().enumerate().take(len % 8) {
        // SAFETY: in bounds (caller).
        let got = unsafe { p.add(words * 8 + k).read() };
        assert_eq!(got, b, "{what}: byte {} of {len} corrupted", words * 8 + k);
    }
}

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
