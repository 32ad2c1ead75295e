//! The `GlobalAlloc` contract of `GoMalloc`, edge by edge: tiny sizes and
//! zero-sized types, every alignment a `Layout` can ask for (up to 1 GiB),
//! sizes that the alignment does not divide, `realloc` in every direction
//! (in place where the class or the large span allows), `alloc_zeroed` on
//! fresh and dirty memory, impossible requests (null, never an abort), and
//! the exactness of the per-class counters of `gomalloc::stats()`.
//!
//! Every test takes `SERIAL`: some compare counters or rely on the heap's
//! layout, so no other test of this binary may allocate meanwhile.

use gomalloc::GoMalloc;
use sizeclass::{MAX_SMALL_SIZE, NUM_CLASSES, PAGE_SIZE, SIZE_CLASSES};
use std::alloc::{GlobalAlloc, Layout, alloc, alloc_zeroed, dealloc, realloc};
use std::sync::{Mutex, MutexGuard};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

/// Serialises the tests of this binary (counters, heap layout).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

mod common;
use common::{check, fill};

/// Whether every byte of `p..p+len` is zero.
///
/// # Safety
///
/// `p..p+len` is readable.
unsafe fn all_zero(p: *const u8, len: usize) -> bool {
    // SAFETY: caller's contract.
    let s = unsafe { std::slice::from_raw_parts(p, len) };
    let (head, mid, tail) = {
        // SAFETY: u64 has no invalid bit patterns.
        unsafe { s.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid layout")
}

/// The small class gomalloc serves (size, align) from, or `None` for a large
/// object: the rule of the crate docs (alignments above 8 need a class whose
/// size they divide).
fn small_class(size: usize, align: usize) -> Option<usize> {
    if align > PAGE_SIZE || size > MAX_SMALL_SIZE {
        return None;
    }
    // A `hardened` build serves requests under 16 bytes from the 16-byte
    // class (every object has a second word, for its double-free tag).
    let min = if cfg!(feature = "hardened") { 16 } else { 1 };
    let rounded = size.max(min).next_multiple_of(align.max(1));
    if rounded > MAX_SMALL_SIZE {
        return None;
    }
    let class = SIZE_CLASSES.class_of(rounded);
    SIZE_CLASSES
        .size_of_class(class)
        .is_multiple_of(align)
        .then_some(class)
}

// ---------------------------------------------------------------------------

#[test]
fn tiny_sizes_are_distinct_aligned_and_hold_their_bytes() {
    let _g = serial();
    // Many live objects of 1..=16 bytes at every alignment up to 16; each
    // holds its own pattern while all the others are written.
    let mut live = Vec::new();
    for round in 0..64u64 {
        for size in 1..=16usize {
            for align in [1, 2, 4, 8, 16] {
                let l = layout(size, align);
                // SAFETY: non-zero size.
                let p = unsafe { alloc(l) };
                assert!(!p.is_null(), "alloc({size}, {align}) returned null");
                assert_eq!(p as usize % align, 0, "alloc({size}, {align}) misaligned");
                let seed = round << 32 | (size as u64) << 8 | align as u64;
                // SAFETY: `p` holds `size` bytes.
                unsafe { fill(p, size, seed) };
                live.push((p, l, seed));
            }
        }
    }
    let mut addrs: Vec<usize> = live.iter().map(|&(p, _, _)| p as usize).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), live.len(), "two live objects share an address");
    for (p, l, seed) in live {
        // SAFETY: live, filled above.
        unsafe {
            check(p, l.size(), seed, "tiny object");
            dealloc(p, l);
        }
    }
}

#[test]
fn zero_sized_types_never_reach_the_allocator_and_tiny_vecs_work() {
    let _g = serial();
    // Collections of ZSTs use dangling pointers, whatever the count.
    let mut v: Vec<()> = Vec::new();
    for _ in 0..1_000_000 {
        v.push(());
    }
    assert_eq!(v.len(), 1_000_000);
    assert_eq!(v.capacity(), usize::MAX);
    let b = Box::new(());
    assert_eq!(std::ptr::from_ref(&*b) as usize, std::mem::align_of::<()>());
    let z: Box<[u64; 0]> = Box::new([]);
    assert_eq!(z.len(), 0);
    drop((v, b, z));

    // One-byte vectors grow through every small class by realloc.
    let mut bytes: Vec<u8> = Vec::with_capacity(1);
    assert!(bytes.capacity() >= 1);
    for i in 0..100_000u32 {
        bytes.push((i % 251) as u8);
    }
    assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    bytes.truncate(3);
    bytes.shrink_to_fit();
    assert_eq!(bytes, [0, 1, 2]);

    // A single byte at a time, many times: no object is handed out twice.
    let mut boxes: Vec<Box<u8>> = (0..10_000u32).map(|i| Box::new(i as u8)).collect();
    for (i, b) in boxes.iter().enumerate() {
        assert_eq!(**b, i as u8);
    }
    boxes.retain(|b| **b % 2 == 0);
    assert!(boxes.iter().all(|b| **b % 2 == 0));
}

#[test]
fn every_power_of_two_alignment_up_to_one_gib() {
    let _g = serial();
    for shift in 0..=30u32 {
        let align = 1usize << shift;
        for size in [
            1usize,
            8,
            100,
            align.min(1 << 20),
            (3 * align / 2).clamp(1, 3 << 20),
        ] {
            let l = layout(size, align);
            // SAFETY: non-zero size.
            let p = unsafe { alloc(l) };
            assert!(
                !p.is_null(),
                "alloc(size {size}, align {align}) returned null"
            );
            assert_eq!(
                p as usize % align,
                0,
                "alloc(size {size}, align {align}) = {p:p} is misaligned"
            );
            // SAFETY: `p` holds `size` bytes.
            unsafe {
                p.write(0xA5);
                p.add(size - 1).write(0x5A);
                assert_eq!(p.read(), if size == 1 { 0x5A } else { 0xA5 });
                assert_eq!(p.add(size - 1).read(), 0x5A);
                dealloc(p, l);
            }
        }
    }
}

#[test]
fn alignments_beyond_one_gib_are_aligned_or_null() {
    let _g = serial();
    // A `Layout` may ask for more; gomalloc serves it or says no, never
    // misaligns and never aborts.
    for shift in 31..=40u32 {
        let l = layout(64, 1 << shift);
        // SAFETY: non-zero size.
        let p = unsafe { GoMalloc.alloc(l) };
        if !p.is_null() {
            assert_eq!(p as usize % l.align(), 0, "align 1 << {shift} misaligned");
            // SAFETY: 64 bytes.
            unsafe {
                p.write_bytes(0xC3, 64);
                GoMalloc.dealloc(p, l);
            }
        }
    }
}

#[test]
fn sizes_the_alignment_does_not_divide() {
    let _g = serial();
    let named = [
        (24usize, 16usize),
        (3328, 256),
        (100, 4096),
        (40000, 65536),
        (1, 8192),
        (8193, 8192),
        (12, 32),
        (33, 32),
        (3000, 1024),
        (20000, 16384),
        (32767, 2048),
        (5000, 128),
    ];
    let mut live = Vec::new();
    let mut seed = 1u64;
    for &(size, align) in &named {
        for _ in 0..8 {
            let l = layout(size, align);
            // SAFETY: non-zero size.
            let p = unsafe { alloc(l) };
            assert!(!p.is_null(), "alloc({size}, {align}) null");
            assert_eq!(p as usize % align, 0, "alloc({size}, {align}) = {p:p}");
            // SAFETY: `size` bytes.
            unsafe { fill(p, size, seed) };
            live.push((p, l, seed));
            seed += 1;
        }
    }
    // Every size from 1 to 40000 in odd steps, at alignments 16..=16384.
    let mut size = 1usize;
    while size < 40_000 {
        for align in [16usize, 64, 512, 4096, 16384] {
            let l = layout(size, align);
            // SAFETY: non-zero size.
            let p = unsafe { alloc(l) };
            assert!(!p.is_null(), "alloc({size}, {align}) null");
            assert_eq!(p as usize % align, 0, "alloc({size}, {align}) = {p:p}");
            // SAFETY: `size` bytes.
            unsafe { fill(p, size, seed) };
            live.push((p, l, seed));
            seed += 1;
        }
        size = size * 5 / 4 + 7;
    }
    // No two live objects overlap.
    let mut ranges: Vec<(usize, usize)> = live
        .iter()
        .map(|&(p, l, _)| (p as usize, p as usize + l.size()))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "objects {:x?} and {:x?} overlap",
            w[0],
            w[1]
        );
    }
    for (p, l, seed) in live {
        // SAFETY: live and filled.
        unsafe {
            check(p, l.size(), seed, "aligned object");
            dealloc(p, l);
        }
    }
}

#[test]
fn realloc_within_a_class_stays_in_place() {
    let _g = serial();
    for class in 2..NUM_CLASSES {
        let lo = SIZE_CLASSES.size_of_class(class - 1) + 1;
        let hi = SIZE_CLASSES.size_of_class(class);
        let l = layout(lo, 8);
        // SAFETY: non-zero size.
        let p = unsafe { alloc(l) };
        assert!(!p.is_null());
        // SAFETY: `lo` bytes.
        unsafe { fill(p, lo, class as u64) };
        // SAFETY: `p` is live with layout `l`; `hi` is a valid size.
        let q = unsafe { realloc(p, l, hi) };
        assert_eq!(q, p, "realloc {lo} -> {hi} (class {class}) moved");
        // SAFETY: `hi` bytes, the first `lo` preserved.
        unsafe { check(q, lo, class as u64, "in-place growth") };
        // SAFETY: as above.
        let r = unsafe { realloc(q, layout(hi, 8), lo) };
        assert_eq!(r, p, "realloc {hi} -> {lo} (class {class}) moved");
        // SAFETY: live with this layout.
        unsafe {
            check(r, lo, class as u64, "in-place shrink");
            dealloc(r, l);
        }
    }
}

#[test]
fn realloc_across_classes_and_to_and_from_large_preserves_contents() {
    let _g = serial();
    let sizes = [
        1usize,
        9,
        24,
        100,
        1024,
        3000,
        8000,
        16384,
        32768,
        32769,
        40000,
        100_000,
        300_000,
        (1 << 20) + 1,
    ];
    let mut seed = 0xABCD_u64;
    for align in [1usize, 16, 4096, 65536] {
        for &from in &sizes {
            for &to in &sizes {
                let l = layout(from, align);
                // SAFETY: non-zero size.
                let p = unsafe { alloc(l) };
                assert!(!p.is_null());
                // SAFETY: `from` bytes.
                unsafe { fill(p, from, seed) };
                // SAFETY: live with layout `l`; `to` rounded up to `align`
                // does not overflow.
                let q = unsafe { realloc(p, l, to) };
                assert!(!q.is_null(), "realloc {from} -> {to} (align {align}) null");
                assert_eq!(q as usize % align, 0, "realloc {from} -> {to} misaligned");
                // SAFETY: `q` holds `to` bytes, of which min(from, to) kept.
                unsafe {
                    check(q, from.min(to), seed, "realloc");
                    fill(q, to, seed + 1);
                    check(q, to, seed + 1, "after realloc");
                    dealloc(q, layout(to, align));
                }
                seed += 2;
            }
        }
    }
}

#[test]
fn alloc_zeroed_small_returns_zeroed_dirty_memory() {
    let _g = serial();
    for class in 1..NUM_CLASSES {
        let size = SIZE_CLASSES.size_of_class(class);
        for &(sz, align) in &[(size, 8usize), (size.div_ceil(2), 1)] {
            let l = layout(sz, align);
            // Past its first refills of the class (from the class's shared
            // span, where another test's thread could take the objects this
            // one frees), so that its frees stay its own.
            let warm: Vec<*mut u8> = (0..40)
                // SAFETY: non-zero size.
                .map(|_| unsafe { alloc(l) })
                .collect();
            for p in warm {
                assert!(!p.is_null());
                // SAFETY: live with layout `l`.
                unsafe { dealloc(p, l) };
            }
            // Dirty a batch of objects of the class, free them, then ask for
            // zeroed ones: the same memory comes back (LIFO free list) and
            // must read as zero.
            let mut dirty = Vec::new();
            for _ in 0..4 {
                // SAFETY: non-zero size.
                let p = unsafe { alloc(l) };
                assert!(!p.is_null());
                // SAFETY: `sz` bytes.
                unsafe { p.write_bytes(0xEE, sz) };
                dirty.push(p);
            }
            for &p in &dirty {
                // SAFETY: live with layout `l`.
                unsafe { dealloc(p, l) };
            }
            // alloc_zeroed prefers never-used objects of a fresh span (no
            // memset needed); keep going until the dirty ones come back.
            let mut reused = 0;
            let mut zs = Vec::new();
            let limit = SIZE_CLASSES.objects_of_class(class) + 4;
            while reused < dirty.len() && zs.len() < limit {
                // SAFETY: non-zero size.
                let z = unsafe { alloc_zeroed(l) };
                assert!(!z.is_null());
                // SAFETY: `sz` bytes.
                let zeroed = unsafe { all_zero(z, sz) };
                assert!(zeroed, "alloc_zeroed({sz}, {align}) returned dirty memory");
                reused += usize::from(dirty.contains(&z));
                zs.push(z);
            }
            assert!(reused > 0, "class {class}: no freed object was re-used");
            for z in zs {
                // SAFETY: live with layout `l`.
                unsafe { dealloc(z, l) };
            }
        }
    }
}

#[test]
fn alloc_zeroed_large_fresh_and_reused() {
    let _g = serial();
    for size in [
        MAX_SMALL_SIZE + 1,
        65536,
        100_000,
        1 << 20,
        (5 << 20) + 3,
        24 << 20,
    ] {
        let l = layout(size, 8);
        for round in 0..3 {
            // SAFETY: non-zero size.
            let z = unsafe { alloc_zeroed(l) };
            assert!(!z.is_null());
            // SAFETY: `size` bytes.
            let zeroed = unsafe { all_zero(z, size) };
            assert!(
                zeroed,
                "alloc_zeroed({size}) round {round} returned dirty memory"
            );
            // SAFETY: as above.
            unsafe {
                z.write_bytes(0xFF, size);
                dealloc(z, l);
            }
        }
    }
    // The dirty tail a shrink gives back, coalesced with whatever is free
    // after it, must be zeroed when it is handed out zeroed. (Sizes leave
    // room for the canary a `hardened` build puts after a large object.)
    let canary = if cfg!(feature = "hardened") { 8 } else { 0 };
    let mut tail_reused = 0;
    for pages in [12usize, 20, 70, 200] {
        let l = layout(pages * PAGE_SIZE, 8);
        // SAFETY: non-zero size.
        let p = unsafe { alloc(l) };
        assert!(!p.is_null());
        // SAFETY: the whole object.
        unsafe { p.write_bytes(0xDD, l.size()) };
        // SAFETY: live with layout `l`.
        let q = unsafe { realloc(p, l, 5 * PAGE_SIZE - canary) };
        assert_eq!(q, p, "large shrink moved");
        let tail_layout = layout((pages - 5) * PAGE_SIZE - canary, 8);
        // SAFETY: non-zero size.
        let t = unsafe { alloc_zeroed(tail_layout) };
        assert!(!t.is_null());
        tail_reused += usize::from(t as usize == p as usize + 5 * PAGE_SIZE);
        // SAFETY: the whole tail object.
        let zeroed = unsafe { all_zero(t, tail_layout.size()) };
        assert!(
            zeroed,
            "alloc_zeroed over a shrunk object's tail is dirty ({pages} pages, got {t:p}, \
             object at {p:p})"
        );
        // SAFETY: both live.
        unsafe {
            dealloc(t, tail_layout);
            dealloc(q, layout(5 * PAGE_SIZE - canary, 8));
        }
    }
    // The test means something only if the dirty tail was handed out again.
    assert!(tail_reused > 0, "no shrunk tail was re-used");
}

#[test]
fn impossible_requests_return_null() {
    let _g = serial();
    let impossible = [
        layout(isize::MAX as usize - 4095, 4096),
        layout(isize::MAX as usize - 7, 8),
        layout(isize::MAX as usize / 2, 1 << 40),
        layout(1 << 47, 8),
        layout(1 << 48, 4096),
        layout(64, 1 << 62),
        layout(1 << 20, 1 << 48),
    ];
    for l in impossible {
        // SAFETY: non-zero size.
        let p = unsafe { GoMalloc.alloc(l) };
        assert!(p.is_null(), "GoMalloc.alloc({l:?}) = {p:p}, want null");
        // SAFETY: non-zero size.
        let z = unsafe { GoMalloc.alloc_zeroed(l) };
        assert!(
            z.is_null(),
            "GoMalloc.alloc_zeroed({l:?}) = {z:p}, want null"
        );
        // SAFETY: non-zero size; the result is checked, never used.
        let s = unsafe { alloc(l) };
        assert!(s.is_null(), "std::alloc::alloc({l:?}) = {s:p}, want null");
    }
    // realloc to an impossible size returns null and leaves the old block
    // alone.
    for from in [100usize, 100_000] {
        let l = layout(from, 8);
        // SAFETY: non-zero size.
        let p = unsafe { alloc(l) };
        assert!(!p.is_null());
        // SAFETY: `from` bytes.
        unsafe { fill(p, from, 7) };
        for to in [isize::MAX as usize - 4095, 1 << 47] {
            // SAFETY: live with layout `l`; `to` rounded to 8 fits isize.
            let q = unsafe { realloc(p, l, to) };
            assert!(q.is_null(), "realloc({from} -> {to}) = {q:p}, want null");
            // SAFETY: still live.
            unsafe { check(p, from, 7, "block after failed realloc") };
        }
        // SAFETY: live.
        unsafe { dealloc(p, l) };
    }
    // And the allocator still works.
    let v: Vec<u64> = (0..10_000).collect();
    assert_eq!(v.iter().sum::<u64>(), 10_000 * 9_999 / 2);
}

/// Terabyte requests on a machine with a few GiB of memory: the heap must
/// refuse them (null) rather than build page-map metadata for every page.
#[test]
fn a_few_tib_return_null() {
    let _g = serial();
    for l in [
        layout(1 << 45, 8),
        layout(1 << 46, 4096),
        layout(1 << 44, 1 << 20),
    ] {
        // SAFETY: non-zero size.
        let p = unsafe { GoMalloc.alloc(l) };
        assert!(p.is_null(), "GoMalloc.alloc({l:?}) = {p:p}, want null");
        // SAFETY: non-zero size; the result is checked, never used.
        let s = unsafe { alloc(l) };
        assert!(s.is_null(), "std::alloc::alloc({l:?}) = {s:p}, want null");
    }
}

/// A snapshot taken while no other thread allocates or frees: two snapshots
/// 20 ms apart that agree. (The harness's main thread, and test threads of
/// this binary that exit and hand their counters over, must not fall between
/// the snapshots a test compares.)
fn quiet_stats() -> gomalloc::Stats {
    let key = |s: &gomalloc::Stats| {
        (
            s.small_allocs(),
            s.small_frees(),
            s.large_allocs,
            s.large_frees,
        )
    };
    let mut last = gomalloc::stats();
    for _ in 0..500 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = gomalloc::stats();
        if key(&now) == key(&last) {
            return now;
        }
        last = now;
    }
    panic!("the process never stopped allocating");
}

#[test]
fn per_class_counters_grow_by_exactly_k_on_a_fresh_thread() {
    let _g = serial();
    // Classes no other code of this binary is likely to use meanwhile.
    for (size, align, k) in [
        (27_000usize, 8usize, 1000u64),
        (6500, 4, 777),
        (19_000, 8, 64),
    ] {
        let class = small_class(size, align).expect("a small class");
        let before = quiet_stats();
        let l = layout(size, align);
        let mid = std::thread::spawn(move || {
            // On the stack: no allocation of another size disturbs the count.
            let mut ptrs = [0usize; 1024];
            for i in 0..k {
                // SAFETY: non-zero size.
                let p = unsafe { alloc(l) };
                assert!(!p.is_null());
                // SAFETY: `size` bytes.
                unsafe { fill(p, size, i) };
                ptrs[i as usize] = p as usize;
            }
            // The live thread's cache counts are visible.
            let mid = quiet_stats();
            for (i, &p) in ptrs.iter().enumerate().take(k as usize) {
                // SAFETY: live, filled above.
                unsafe {
                    check(p as *const u8, size, i as u64, "counted object");
                    dealloc(p as *mut u8, l);
                }
            }
            mid
        })
        .join()
        .unwrap();
        let after = quiet_stats();
        let (b, m, a) = (
            before.by_size[class],
            mid.by_size[class],
            after.by_size[class],
        );
        assert_eq!(b.size, SIZE_CLASSES.size_of_class(class));
        assert_eq!(m.allocs - b.allocs, k, "allocs of class {class} while live");
        assert_eq!(m.frees - b.frees, 0, "frees of class {class} while live");
        assert_eq!(a.allocs - b.allocs, k, "allocs of class {class} after exit");
        assert_eq!(a.frees - b.frees, k, "frees of class {class} after exit");
        assert!(a.spans_from_heap >= b.spans_from_heap);
        assert_eq!(after.large_allocs - before.large_allocs, 0);
    }
}

#[test]
fn large_counters_and_heap_in_use_track_large_objects() {
    let _g = serial();
    let before = quiet_stats();
    let l = layout(3 * PAGE_SIZE * 10 + 5, 8);
    let mut ptrs = Vec::with_capacity(50);
    for _ in 0..50 {
        // SAFETY: non-zero size.
        let p = unsafe { alloc(l) };
        assert!(!p.is_null());
        ptrs.push(p);
    }
    let mid = quiet_stats();
    assert_eq!(mid.large_allocs - before.large_allocs, 50);
    assert_eq!(mid.large_frees - before.large_frees, 0);
    // Other threads' exits may give spans back meanwhile: compare with the
    // absolute amount our objects hold.
    assert!(mid.heap.in_use >= 50 * 31 * PAGE_SIZE);
    assert!(mid.heap.spans_in_use >= 50);
    for p in ptrs {
        // SAFETY: live with layout `l`.
        unsafe { dealloc(p, l) };
    }
    let after = quiet_stats();
    assert_eq!(after.large_allocs - before.large_allocs, 50);
    assert_eq!(after.large_frees - before.large_frees, 50);
    assert_eq!(after.heap.mapped, after.heap.in_use + after.heap.free);
}
