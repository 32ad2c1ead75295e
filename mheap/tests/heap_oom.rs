//! Out of memory through the fault-injecting page source: every failed
//! allocation returns an error, the heap stays consistent (the invariant
//! walk passes, counters unchanged), and allocation works again once memory
//! returns.

use mheap::source::SourceCounters;
use mheap::{
    Counting, FaultInjecting, FaultPlan, FixedRegion, HeapConfig, HeapError, MHeap, PAGE_SIZE,
    PageSourceError, Span,
};

type Src = FaultInjecting<Counting<FixedRegion>>;

fn heap(mib: usize) -> MHeap<Src> {
    let buf: &'static mut [u8] = Box::leak(vec![0u8; mib << 20].into_boxed_slice());
    MHeap::new(
        FaultInjecting::new(Counting::new(FixedRegion::new(buf)), FaultPlan::Never),
        HeapConfig {
            arena_size: 1 << 20,
        },
    )
}

/// A fixed mix of requests that makes the heap grow several times and
/// carve metadata (span records, page-map chunks, region records).
const SEQUENCE: [(usize, usize); 12] = [
    (1, 1),
    (8, 1),
    (200, 1),
    (3, 16),
    (129, 1),
    (64, 32),
    (1, 1),
    (300, 64),
    (2, 1),
    (127, 1),
    (1000, 1),
    (5, 8),
];

#[test]
fn every_single_failure_point_is_clean() {
    // Count the source requests the whole sequence makes when nothing fails.
    let reference = heap(64);
    for &(n, a) in &SEQUENCE {
        reference.alloc_pages(n, a * PAGE_SIZE).unwrap();
    }
    let total = reference.with_source(|s| s.requests());
    assert!(
        total >= 6,
        "the sequence should make several requests, made {total}"
    );

    // Then fail each of those requests in turn. A failed arena reservation
    // may be covered by the heap's retry with the exact size, so a failure
    // point fails at most one allocation; most must fail exactly one.
    let mut failing_points = 0;
    for n in 0..total {
        let heap = heap(64);
        heap.with_source(|s| s.set_plan(FaultPlan::FailNth(n)));
        let mut live: Vec<&Span> = Vec::new();
        let mut failures = 0;
        for &(pages, a) in &SEQUENCE {
            let before = heap.stats();
            match heap.alloc_pages(pages, a * PAGE_SIZE) {
                Ok(s) => live.push(s.span),
                Err(e) => {
                    failures += 1;
                    assert_eq!(e, HeapError::OutOfMemory(PageSourceError::Injected));
                    let after = heap.check_invariants();
                    // A failed request changes nothing a user can see (only
                    // metadata it already carved may stay).
                    assert_eq!(after.in_use, before.in_use);
                    assert_eq!(after.spans_in_use, before.spans_in_use);
                }
            }
            heap.check_invariants();
        }
        assert!(failures <= 1, "only the injected request fails (n = {n})");
        failing_points += failures;
        assert_eq!(heap.with_source(|s| s.failures()), 1, "the plan fired once");
        // Memory is back: the failed request now succeeds.
        for &(pages, a) in &SEQUENCE {
            live.push(heap.alloc_pages(pages, a * PAGE_SIZE).unwrap().span);
        }
        for s in live {
            // SAFETY: each span is live and not used again.
            unsafe { heap.free_span(s) };
        }
        let end = heap.check_invariants();
        assert_eq!(end.in_use, 0);
    }
    assert!(
        failing_points * 2 >= total,
        "only {failing_points} of {total} failure points reached the caller"
    );
}

#[test]
fn commit_failure_on_reuse_of_released_pages() {
    let heap = heap(16);
    let a = heap.alloc_pages(100, PAGE_SIZE).unwrap();
    // SAFETY: live span, not used again.
    unsafe { heap.free_span(a.span) };
    let released = heap.release(usize::MAX);
    assert!(released >= 100 * PAGE_SIZE);
    let before = heap.check_invariants();
    assert_eq!(before.released, before.free, "everything free is released");

    // Reusing released pages needs a commit; make it fail.
    heap.with_source(|s| s.set_plan(FaultPlan::FailFrom(0)));
    for pages in [1, 50, 100] {
        let e = heap.alloc_pages(pages, PAGE_SIZE).unwrap_err();
        assert_eq!(e, HeapError::OutOfMemory(PageSourceError::Injected));
        assert_eq!(
            heap.check_invariants(),
            before,
            "failed commit left a trace"
        );
    }
    heap.with_source(|s| s.heal());
    let commits_before: SourceCounters = heap.with_source(|s| s.inner().counters());
    let b = heap.alloc_pages(100, PAGE_SIZE).unwrap();
    let commits_after = heap.with_source(|s| s.inner().counters());
    assert!(b.zeroed, "released pages (DONTNEED semantics) read as zero");
    assert_eq!(commits_after.commit_calls, commits_before.commit_calls + 1);
    assert_eq!(
        commits_after.reserve_calls, commits_before.reserve_calls,
        "re-use of released pages makes no new reservation"
    );
    let st = heap.check_invariants();
    assert_eq!(st.released, before.released - 100 * PAGE_SIZE);
}

#[test]
fn exhausting_the_region_fails_cleanly_and_recovers() {
    let heap = heap(8);
    let mut live = Vec::new();
    loop {
        match heap.alloc_pages(37, PAGE_SIZE) {
            Ok(s) => live.push(s.span),
            Err(HeapError::OutOfMemory(PageSourceError::Exhausted { .. })) => break,
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(live.len() < 1000, "an 8 MiB region cannot hold this much");
    }
    assert!(!live.is_empty());
    heap.check_invariants();
    let s = live.pop().unwrap();
    // SAFETY: live span, not used again.
    unsafe { heap.free_span(s) };
    live.push(
        heap.alloc_pages(37, PAGE_SIZE)
            .expect("freed room is reused")
            .span,
    );
    for s in live {
        // SAFETY: live spans, not used again.
        unsafe { heap.free_span(s) };
    }
    assert_eq!(heap.check_invariants().in_use, 0);
}

#[test]
fn impossible_requests_are_refused() {
    let heap = heap(4);
    assert!(matches!(
        heap.alloc_pages(0, PAGE_SIZE),
        Err(HeapError::BadSize { .. })
    ));
    assert!(matches!(
        heap.alloc_pages(usize::MAX, PAGE_SIZE),
        Err(HeapError::BadSize { .. })
    ));
    assert!(matches!(
        heap.alloc_pages(1, 3 * PAGE_SIZE),
        Err(HeapError::BadAlignment { .. })
    ));
    assert!(matches!(
        heap.alloc_pages(1, 1 << 63),
        Err(HeapError::BadAlignment { .. })
    ));
    assert!(matches!(
        heap.alloc_small(0, 1, 16),
        Err(HeapError::BadSize { .. })
    ));
    assert_eq!(heap.stats().mapped, 0, "refused requests take no memory");
    // The longest request the heap accepts (the whole address space) is
    // looked up in the free index, whose largest list group it reaches,
    // and fails for want of memory, at any alignment.
    let longest = 1 << (48 - mheap::PAGE_SHIFT);
    for align in [PAGE_SIZE, 1 << 30] {
        assert!(matches!(
            heap.alloc_pages(longest, align),
            Err(HeapError::OutOfMemory(_) | HeapError::AddressOutOfRange)
        ));
    }
    assert!(matches!(
        heap.alloc_pages(longest + 1, PAGE_SIZE),
        Err(HeapError::BadSize { .. })
    ));
}
