//! A large heap: tens of GiB of address space reserved, a few GiB touched,
//! then freed and released: resident memory must fall, and re-use must make
//! no new mapping. Runs in its own process so that resident-set readings
//! are not disturbed by other tests.

use mheap::{Counting, HeapConfig, MHeap, OsPageSource, PAGE_SIZE, ReleaseAdvice, ScavengePolicy};

const GIB: usize = 1 << 30;

/// Resident bytes of this process, from `/proc/self/statm`.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

fn touch(start: usize, len: usize) {
    for off in (0..len).step_by(4096) {
        // SAFETY: callers pass ranges of live spans they own.
        unsafe { ((start + off) as *mut u8).write_volatile(0x5A) };
    }
}

#[test]
fn tens_of_gib_reserved_few_touched_then_released() {
    let heap = MHeap::new(
        Counting::new(OsPageSource::new(ReleaseAdvice::DontNeed)),
        HeapConfig::DEFAULT,
    );
    // Explicit release only: this test is about `release`.
    heap.set_scavenge_policy(ScavengePolicy::MANUAL);
    // 24 GiB of address space in 1 GiB spans (no swap is reserved for it).
    let spans: Vec<_> = (0..24)
        .map(|_| heap.alloc_pages(GIB / PAGE_SIZE, PAGE_SIZE).unwrap().span)
        .collect();
    assert!(heap.stats().mapped >= 24 * GIB);

    let before = rss();
    // Touch 2 GiB: all of two spans.
    touch(spans[3].start(), GIB);
    touch(spans[17].start(), GIB);
    let touched = rss();
    assert!(
        touched >= before + 2 * GIB - (64 << 20),
        "touching did not raise RSS: {before} -> {touched}"
    );

    for &s in &spans {
        // SAFETY: live spans, not used again.
        unsafe { heap.free_span(s) };
    }
    let freed = heap.check_invariants();
    assert_eq!(freed.in_use, 0);
    // The heap cannot know which pages the user touched: every page it
    // handed out counts as backed until released.
    assert_eq!(freed.free - freed.released, 24 * GIB);

    let released = heap.release(usize::MAX);
    assert_eq!(released, 24 * GIB);
    let after = rss();
    assert!(
        after + 2 * GIB - (64 << 20) <= touched,
        "RSS did not fall: {touched} -> {after}"
    );
    let st = heap.check_invariants();
    assert_eq!(st.released, st.free);

    // Re-use: no new mapping, memory reads as zero, RSS comes back.
    let reserves = heap.with_source(|s| s.counters().reserve_calls);
    let again = heap.alloc_pages(GIB / PAGE_SIZE, PAGE_SIZE).unwrap();
    assert!(again.zeroed);
    touch(again.span.start(), GIB / 4);
    assert_eq!(heap.with_source(|s| s.counters().reserve_calls), reserves);
    assert!(rss() >= after + GIB / 4 - (32 << 20));
    // SAFETY: live span, not used again.
    unsafe { heap.free_span(again.span) };
}

#[test]
fn partial_release_takes_the_highest_addresses_first() {
    let heap = MHeap::new(
        OsPageSource::new(ReleaseAdvice::DontNeed),
        HeapConfig::DEFAULT,
    );
    heap.set_scavenge_policy(ScavengePolicy::MANUAL);
    let a = heap.alloc_pages(1024, PAGE_SIZE).unwrap();
    touch(a.span.start(), a.span.bytes());
    let (lo, hi) = (a.span.start(), a.span.end());
    // SAFETY: live span, not used again.
    unsafe { heap.free_span(a.span) };
    let got = heap.release(100 * PAGE_SIZE);
    assert_eq!(got, 100 * PAGE_SIZE);
    // The released pages are the top 100 of the touched range: they read as
    // zero now, the page below them still holds its byte. (Reading free
    // memory is fine here: the test owns the heap and allocates nothing.)
    // SAFETY: the range is mapped heap memory.
    unsafe {
        assert_eq!(*((hi - 100 * PAGE_SIZE) as *const u8), 0);
        assert_eq!(*((hi - 100 * PAGE_SIZE - 4096) as *const u8), 0x5A);
        assert_eq!(*(lo as *const u8), 0x5A);
    }
    let st = heap.check_invariants();
    assert_eq!(st.free - st.released, 924 * PAGE_SIZE);
}
