//! The scavenger's policy over a fixed region, with the time passed in by
//! the test (`scavenge_step(now)`), so every rule is checked exactly:
//!
//! - the idle delay: pages freed at `t` are not released before `t + delay`
//!   and are released by `t + delay + delay/4`;
//! - the step bound: no increment releases more than `step_bytes`;
//! - the retained bound: dirty free memory ends exactly at the bound, and
//!   memory just freed is exempt for a generation;
//! - the soft memory limit: release is eager near the limit, and only as
//!   much as needed;
//! - idle time is per 2 MiB block: churn keeps only its own block young,
//!   and an object churned with little else in use never pays a release;
//! - `release_all`, reuse of released pages, refused releases, and the
//!   lock-free no-op check;
//! - a span of `release_at_free_bytes` or more is released as it is freed,
//!   in steps, and one a page shorter is not;
//! - requests of 1 MiB and more take dirty free spans before released ones
//!   (and a large span does not grow over released pages while a dirty
//!   span could hold it); smaller ones the best fit of both;
//! - the background thread's wait: woken at the deadline and early when a
//!   change creates work.
//!
//! Every test compares the heap's counters with the page source's own
//! (`Counting`) and runs the invariant walk.

use mheap::source::SourceCounters;
use mheap::{
    Counting, FaultInjecting, FaultPlan, FixedRegion, HeapConfig, HeapStats, MHeap, PAGE_SIZE,
    ScavengePolicy, Span,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

type Heap = MHeap<Counting<FixedRegion>>;

/// A heap over `mib` MiB of fixed memory, growing in 1 MiB arenas.
fn heap(mib: usize, policy: ScavengePolicy) -> Heap {
    let buf: &'static mut [u8] = Box::leak(vec![0u8; mib * MIB].into_boxed_slice());
    let h = MHeap::new(
        Counting::new(FixedRegion::new(buf)),
        HeapConfig { arena_size: MIB },
    );
    h.set_scavenge_policy(policy);
    h
}

/// No release by policy but what the test switches on.
fn quiet() -> ScavengePolicy {
    ScavengePolicy::MANUAL
}

fn dirty(st: &HeapStats) -> usize {
    st.free - st.released
}

fn counters(h: &Heap) -> SourceCounters {
    h.with_source(|s| s.counters())
}

/// The invariant walk, and the heap's release counters against the
/// source's.
fn check(h: &Heap) -> HeapStats {
    let st = h.check_invariants();
    assert_eq!(
        st.scavenged + st.released_on_request,
        counters(h).released_bytes,
        "heap and source disagree on bytes released"
    );
    st
}

/// Allocates `n` spans of `pages` pages and writes into every page.
fn alloc_touched(h: &Heap, n: usize, pages: usize) -> Vec<&Span> {
    (0..n)
        .map(|_| {
            let s = h.alloc_pages(pages, PAGE_SIZE).unwrap().span;
            for p in 0..pages {
                // SAFETY: the span is ours and in use.
                unsafe { ((s.start() + p * PAGE_SIZE) as *mut u8).write(0x77) };
            }
            s
        })
        .collect()
}

fn free_all(h: &Heap, spans: Vec<&Span>) {
    for s in spans {
        // SAFETY: live spans of `h`, not used again.
        unsafe { h.free_span(s) };
    }
}

#[test]
fn idle_pages_are_released_after_the_delay_and_not_before() {
    let delay = SEC;
    let policy = ScavengePolicy {
        delay_ns: delay,
        ..quiet()
    };
    let h = heap(16, policy);
    let t0 = 50 * SEC;
    let spans = alloc_touched(&h, 64, 8);
    h.scavenge_step(t0);
    // Freed at t0.
    free_all(&h, spans);
    let freed = check(&h);
    assert_eq!(
        dirty(&freed),
        4 * MIB,
        "no release on free under this policy"
    );

    let mut t = t0;
    let mut first = None;
    while dirty(&h.stats()) > 0 {
        t += 10 * MS;
        assert!(t < t0 + 3 * delay, "idle pages were never released");
        let got = h.scavenge_step(t);
        assert!(got <= policy.step_bytes, "a step released {got} bytes");
        if got > 0 {
            first.get_or_insert(t);
        }
        check(&h);
    }
    let first = first.unwrap();
    assert!(
        first >= t0 + delay,
        "released {} ms after the free",
        (first - t0) / MS
    );
    // A generation lasts a quarter of the delay; steps come every 10 ms.
    assert!(
        first <= t0 + delay + delay / 4 + 10 * MS,
        "released only {} ms after the free",
        (first - t0) / MS
    );
    let st = check(&h);
    assert_eq!(st.scavenged as usize, 4 * MIB);
    assert_eq!(st.released_on_request, 0);
    assert_eq!(h.next_scavenge_deadline(), None, "nothing left to do");
}

#[test]
fn the_deadline_is_published_and_a_step_before_it_takes_no_lock() {
    let delay = 200 * MS;
    let h = heap(
        8,
        ScavengePolicy {
            delay_ns: delay,
            ..quiet()
        },
    );
    assert_eq!(h.next_scavenge_deadline(), None);
    // Nothing to do: no lock, so the heap does not even learn the time.
    assert_eq!(h.scavenge_step(SEC), 0);
    assert_eq!(h.stats().scavenge_steps, 0);
    let spans = alloc_touched(&h, 4, 16);
    free_all(&h, spans);
    // The heap has seen no time yet: generation 0 began at 0 and may end
    // after a quarter of the delay; the spans age only after it ends.
    assert_eq!(h.next_scavenge_deadline(), Some(delay / 4));
    // The first step that locks starts generation 1 at its own time: the
    // spans were freed no later than that, so they age a delay after it.
    let t0 = 7 * SEC;
    assert_eq!(h.scavenge_step(t0), 0);
    assert_eq!(h.stats().scavenge_steps, 1);
    let d = h.next_scavenge_deadline().unwrap();
    assert_eq!(d, t0 + delay);
    assert_eq!(h.scavenge_step(d - 1), 0);
    assert_eq!(
        h.stats().scavenge_steps,
        1,
        "a step before the deadline locked"
    );
    assert_eq!(h.scavenge_step(d), 4 * 16 * PAGE_SIZE);
    assert_eq!(h.stats().scavenge_steps, 2);
    assert_eq!(h.next_scavenge_deadline(), None);

    // Freed in a generation that started at t1 = d: the new generation may
    // start a quarter delay later, and then they age a delay after that.
    let spans = alloc_touched(&h, 2, 16);
    free_all(&h, spans);
    assert_eq!(h.next_scavenge_deadline(), Some(d + delay / 4));
    assert_eq!(h.scavenge_step(d + delay / 4), 0);
    assert_eq!(h.next_scavenge_deadline(), Some(d + delay / 4 + delay));
    assert_eq!(h.scavenge_step(d + delay / 4 + delay), 2 * 16 * PAGE_SIZE);
    check(&h);
}

#[test]
fn no_step_releases_more_than_a_step() {
    let h = heap(64, quiet());
    let mut spans = Vec::new();
    for (i, pages) in [1usize, 3, 17, 64, 130, 2, 300]
        .iter()
        .cycle()
        .take(70)
        .enumerate()
    {
        let s = alloc_touched(&h, 1, *pages);
        // Every third stays live, so that free spans lie between live ones.
        if i % 3 != 0 {
            spans.extend(s);
        }
    }
    free_all(&h, spans);
    let before = check(&h);
    let dirty_pages = dirty(&before) / PAGE_SIZE;
    assert!(dirty_pages > 1000);

    // Three pages per step (the step rounds down to whole pages).
    h.set_scavenge_policy(ScavengePolicy {
        delay_ns: 0,
        step_bytes: 3 * PAGE_SIZE + 100,
        ..quiet()
    });
    let mut steps = 0;
    let mut t = SEC;
    loop {
        t += MS;
        let got = h.scavenge_step(t);
        if got == 0 {
            break;
        }
        assert!(got <= 3 * PAGE_SIZE, "a step released {got} bytes");
        steps += 1;
    }
    // Each step continues into the next span: full steps but the last.
    assert_eq!(steps, dirty_pages.div_ceil(3));
    let st = check(&h);
    assert_eq!(dirty(&st), 0);
    assert_eq!(st.scavenged as usize, dirty_pages * PAGE_SIZE);
}

#[test]
fn the_retained_bound_is_honoured_exactly() {
    let policy = ScavengePolicy {
        retain_percent: 10,
        retain_min_bytes: MIB,
        delay_ns: ScavengePolicy::NEVER,
        step_bytes: 256 << 10,
        memory_limit: None,
        release_at_free_bytes: usize::MAX,
    };
    // A generation (how long just freed memory is exempt) is 250 ms here.
    let generation = 250 * MS;
    let h = heap(64, policy);
    let live = alloc_touched(&h, 20, 128); // 20 MiB in use
    let spans = alloc_touched(&h, 30, 128);
    let t0 = 10 * SEC;
    free_all(&h, spans);
    // Just freed: exempt from the bound, released by nobody yet.
    let st = check(&h);
    let bound = MIB + st.in_use / 10;
    assert_eq!(dirty(&st), 30 * MIB);
    assert_eq!(st.scavenged, 0);
    // The first step dates the blocks; the bound takes them a generation
    // later, in steps, down to the bound exactly.
    assert_eq!(h.scavenge_step(t0), 0);
    assert_eq!(h.next_scavenge_deadline(), Some(t0 + generation));
    assert_eq!(h.scavenge_step(t0 + generation - 1), 0);
    let mut t = t0 + generation;
    while h.scavenge_step(t) > 0 {
        t += MS;
    }
    let st = check(&h);
    assert_eq!(
        dirty(&st) / PAGE_SIZE,
        bound / PAGE_SIZE,
        "released exactly down to the bound"
    );
    // No delay: what is under the bound stays, however long.
    assert_eq!(h.scavenge_step(t + 3600 * SEC), 0);
    assert_eq!(h.next_scavenge_deadline(), None);

    // Less in use: a lower bound. The frees themselves release the old,
    // settled pages (a step each); the pages they free wait their turn.
    let before = check(&h);
    let half: Vec<_> = live.into_iter().take(10).collect();
    free_all(&h, half);
    let st = check(&h);
    assert_eq!(
        st.scavenged - before.scavenged,
        10 * (256 << 10),
        "each free released a step of the old pages"
    );
    let t = t + 3600 * SEC;
    while h.scavenge_step(t) > 0 {}
    let mut t = t + generation;
    while h.scavenge_step(t) > 0 {
        t += MS;
    }
    let st2 = check(&h);
    assert_eq!(dirty(&st2) / PAGE_SIZE, (MIB + st2.in_use / 10) / PAGE_SIZE);
}

#[test]
fn a_large_object_churned_with_little_else_in_use_pays_no_release() {
    // 8 MiB taken and given back every 10 ms, twice the bound's floor, with
    // nothing else in use: the bound never takes its pages (they are freed
    // into every generation), nor the delay.
    let h = heap(32, ScavengePolicy::DEFAULT);
    let mut t = SEC;
    for round in 0..300 {
        let a = h.alloc_pages(1024, PAGE_SIZE).unwrap();
        assert!(
            round == 0 || !a.zeroed,
            "round {round}: released pages came back"
        );
        // SAFETY: the span is ours and in use.
        unsafe { (a.span.start() as *mut u8).write(1) };
        // SAFETY: live span, not used again.
        unsafe { h.free_span(a.span) };
        t += 10 * MS;
        h.scavenge_step(t);
    }
    let st = check(&h);
    assert_eq!(st.scavenged, 0, "churn paid a release");
    assert_eq!(counters(&h).release_calls, 0);
    // Once the churn stops the pages go: the bound after two generations.
    let stop = t;
    while dirty(&h.stats()) > 4 * MIB {
        t += 10 * MS;
        h.scavenge_step(t);
        assert!(t <= stop + 500 * MS + 20 * MS, "the bound never applied");
    }
    assert_eq!(dirty(&check(&h)), 4 * MIB);
}

#[test]
fn the_memory_limit_makes_release_eager_and_no_more_than_needed() {
    let h = heap(64, quiet());
    let _live = alloc_touched(&h, 16, 128);
    let spans = alloc_touched(&h, 16, 128);
    free_all(&h, spans);
    let st = check(&h);
    assert_eq!(dirty(&st), 16 * MIB);
    assert_eq!(st.resident, 32 * MIB + st.metadata);

    // A limit of 24 MiB: release at once, ignoring the (infinite) delay,
    // down to 95% of it.
    let limit = 24 * MIB;
    let target = limit - limit / 20;
    h.set_scavenge_policy(ScavengePolicy {
        memory_limit: Some(limit),
        ..quiet()
    });
    assert_eq!(h.next_scavenge_deadline(), Some(0), "work is due at once");
    let mut t = SEC;
    while h.scavenge_step(t) > 0 {
        t += MS;
    }
    let st = check(&h);
    assert!(st.resident <= target, "resident {} > {target}", st.resident);
    assert!(
        st.resident + PAGE_SIZE > target,
        "released more than needed"
    );

    // Under the limit the pages stay.
    assert_eq!(h.scavenge_step(t + 3600 * SEC), 0);
    // Re-using released pages raises resident memory: the allocation itself
    // releases other free pages to stay under the limit.
    let again = alloc_touched(&h, 4, 128);
    let st = check(&h);
    assert!(
        st.resident <= target,
        "resident {} over the limit",
        st.resident
    );
    // The limit is soft: memory in use beyond it is never refused.
    let more = alloc_touched(&h, 16, 128);
    while h.scavenge_step(t) > 0 {}
    let st = check(&h);
    assert!(st.in_use > limit);
    assert_eq!(dirty(&st), 0, "every free page released over the limit");
    free_all(&h, more);
    free_all(&h, again);
    check(&h);
}

#[test]
fn churn_keeps_only_its_own_block_young() {
    // A small span freed and taken again every 100 ms at the low end of
    // 16 MiB of free memory: only its 2 MiB block stays young (idle time is
    // kept per block); the rest is released after the delay.
    let delay = SEC;
    let h = heap(
        40,
        ScavengePolicy {
            delay_ns: delay,
            ..quiet()
        },
    );
    let big = alloc_touched(&h, 1, 2048); // 16 MiB
    let t0 = 100 * SEC;
    free_all(&h, big);
    h.scavenge_step(t0);
    let mut t = t0;
    let mut first = None;
    while t < t0 + 3 * delay {
        t += 100 * MS;
        let before = h.stats().released;
        h.scavenge_step(t);
        if h.stats().released > before {
            first.get_or_insert(t);
        }
        // Cut from the free span's low end and merged back into it.
        let s = h.alloc_pages(8, PAGE_SIZE).unwrap();
        assert!(!s.zeroed, "the churned pages were released");
        // SAFETY: live span, not used again.
        unsafe { h.free_span(s.span) };
    }
    let first = first.expect("the idle blocks were never released");
    assert!(first >= t0 + delay && first <= t0 + delay + delay / 4 + 100 * MS);
    // Left: the churned block's share of the span, at most one block.
    let st = check(&h);
    assert!(
        dirty(&st) > 0 && dirty(&st) <= 2 * MIB,
        "dirty {}",
        dirty(&st)
    );
    // Once the churn stops, its block ages and goes too.
    let stop = t;
    while dirty(&h.stats()) > 0 {
        t += 10 * MS;
        h.scavenge_step(t);
        assert!(t <= stop + delay + delay / 4 + 20 * MS, "never released");
    }
    assert!(t >= stop + delay);
    check(&h);
}

#[test]
fn release_all_gives_back_everything_free_and_pages_are_reused() {
    let h = heap(32, quiet());
    let live = alloc_touched(&h, 3, 100);
    let spans = alloc_touched(&h, 40, 37);
    free_all(&h, spans);
    let before = check(&h);
    let got = h.release_all();
    assert_eq!(got, dirty(&before));
    let st = check(&h);
    assert_eq!(st.released, st.free);
    assert_eq!(st.released_on_request as usize, got);
    assert_eq!(st.scavenged, 0);
    assert_eq!(st.resident, st.in_use + st.metadata);
    assert_eq!(h.release_all(), 0);
    assert_eq!(h.next_scavenge_deadline(), None);

    // Re-use: committed again, read as zero, no new reservation.
    let c0 = counters(&h);
    let s = h.alloc_pages(200, PAGE_SIZE).unwrap();
    let c1 = counters(&h);
    assert!(s.zeroed);
    assert_eq!(
        c1.reserve_calls, c0.reserve_calls,
        "re-use made a reservation"
    );
    assert_eq!(c1.commit_calls, c0.commit_calls + 1);
    // SAFETY: the span is ours and in use.
    let bytes = unsafe { std::slice::from_raw_parts(s.span.start() as *const u8, s.span.bytes()) };
    assert!(bytes.iter().all(|&b| b == 0));
    let st2 = check(&h);
    assert_eq!(st2.released, st.released - 200 * PAGE_SIZE);
    // SAFETY: live span, not used again.
    unsafe { h.free_span(s.span) };
    free_all(&h, live);
    let dirty_now = dirty(&check(&h));
    assert_eq!(h.release_all(), dirty_now);
    assert_eq!(dirty(&check(&h)), 0);
}

#[test]
fn delay_zero_releases_on_free() {
    let h = heap(
        16,
        ScavengePolicy {
            delay_ns: 0,
            ..quiet()
        },
    );
    let spans = alloc_touched(&h, 8, 16); // 128 KiB each, under a step
    free_all(&h, spans);
    let st = check(&h);
    assert_eq!(dirty(&st), 0, "each free released its pages");
    assert_eq!(st.scavenged as usize, 8 * 16 * PAGE_SIZE);
}

/// From 1 MiB (128 pages) a request takes the best *dirty* fit before a
/// released one; below, the best fit of both; and a large span does not
/// grow in place over released pages while a dirty span could hold it.
#[test]
fn big_requests_take_resident_memory_first() {
    let buf: &'static mut [u8] = Box::leak(vec![0u8; 32 * MIB].into_boxed_slice());
    let h = MHeap::new(
        Counting::new(FixedRegion::new(buf)),
        HeapConfig {
            arena_size: 8 * MIB,
        },
    );
    h.set_scavenge_policy(quiet());
    // C and E, released free spans of 220 and 120 pages, and D, a dirty one
    // of 256, each followed by an in-use guard page.
    let c = alloc_touched(&h, 1, 220);
    let c_start = c[0].start();
    let g1 = alloc_touched(&h, 1, 1);
    let e = alloc_touched(&h, 1, 120);
    let e_start = e[0].start();
    let g3 = alloc_touched(&h, 1, 1);
    let d = alloc_touched(&h, 1, 256);
    let d_start = d[0].start();
    let g2 = alloc_touched(&h, 1, 1);
    free_all(&h, c);
    free_all(&h, e);
    h.release_all();
    free_all(&h, d);
    check(&h);

    // 100 pages: the best fit of both, E (120), not the dirty D.
    let small = h.alloc_pages(100, PAGE_SIZE).unwrap();
    assert_eq!(
        small.span.start(),
        e_start,
        "a small request did not take the best fit"
    );
    // 200 pages: the best fit overall is C (220), but D is resident.
    let big = h.alloc_pages(200, PAGE_SIZE).unwrap();
    assert_eq!(
        big.span.start(),
        d_start,
        "a 1 MiB+ request skipped the dirty span"
    );
    assert!(!big.zeroed);
    check(&h);
    free_all(&h, vec![small.span]);
    // E taken whole again, to keep what follows in C.
    let e = alloc_touched(&h, 1, 120);
    assert_eq!(e[0].start(), e_start);

    // Growth in place: everything released, a 16-page span L at C's
    // start, D dirty again.
    free_all(&h, vec![big.span]);
    h.release_all();
    let l = h.alloc_pages(16, PAGE_SIZE).unwrap().span;
    assert_eq!(l.start(), c_start);
    let d = alloc_touched(&h, 1, 256);
    assert_eq!(d[0].start(), d_start);
    free_all(&h, d);
    // L may not grow over C's released pages to 200 while D could hold it...
    // SAFETY: a live large span of ours, resized by us alone.
    let grew = unsafe { h.resize_in_place(l, 200) };
    assert!(!grew, "grew over released pages");
    // ...and may once no dirty span could.
    let d = alloc_touched(&h, 1, 256);
    assert_eq!(d[0].start(), d_start);
    // SAFETY: as above.
    assert!(unsafe { h.resize_in_place(l, 200) });
    check(&h);
    free_all(&h, vec![l]);
    free_all(&h, d);
    free_all(&h, e);
    free_all(&h, g1);
    free_all(&h, g2);
    free_all(&h, g3);
    check(&h);
}

#[test]
fn a_huge_span_is_released_as_it_is_freed_and_a_shorter_one_kept() {
    // No release by age or by the bound: only the rule under test.
    let policy = ScavengePolicy {
        release_at_free_bytes: 4 * MIB,
        step_bytes: MIB,
        ..quiet()
    };
    let h = heap(16, policy);
    let pages = 4 * MIB / PAGE_SIZE;
    let shorter = alloc_touched(&h, 1, pages - 1);
    let huge = alloc_touched(&h, 1, pages);
    // Free pages never used (the arenas' tails) count as released already.
    let before = check(&h);
    let calls = counters(&h).release_calls;
    free_all(&h, huge);
    let st = check(&h);
    assert_eq!(
        st.released - before.released,
        4 * MIB,
        "the huge span was not released"
    );
    assert_eq!(dirty(&st), dirty(&before));
    assert_eq!(st.scavenged as usize, 4 * MIB);
    assert_eq!(counters(&h).release_calls - calls, 4, "not in 1 MiB steps");
    free_all(&h, shorter);
    let st2 = check(&h);
    assert_eq!(
        dirty(&st2) - dirty(&st),
        4 * MIB - PAGE_SIZE,
        "a span under the size was released"
    );
    assert_eq!(st2.released, st.released);
    assert_eq!(st2.scavenged as usize, 4 * MIB);
}

#[test]
fn a_refused_step_of_a_huge_free_leaves_the_rest_dirty() {
    let buf: &'static mut [u8] = Box::leak(vec![0u8; 16 * MIB].into_boxed_slice());
    let h = MHeap::new(
        FaultInjecting::new(Counting::new(FixedRegion::new(buf)), FaultPlan::Never),
        HeapConfig { arena_size: MIB },
    );
    h.set_scavenge_policy(ScavengePolicy {
        release_at_free_bytes: 4 * MIB,
        step_bytes: MIB,
        ..quiet()
    });
    let span = h.alloc_pages(4 * MIB / PAGE_SIZE, PAGE_SIZE).unwrap().span;
    // The third release (the third 1 MiB step) fails.
    h.with_source(|s| {
        s.set_release_faults(true);
        s.set_plan(FaultPlan::FailNth(2));
    });
    // SAFETY: a live span, not used again.
    unsafe { h.free_span(span) };
    let st = h.check_invariants();
    let released = h.with_source(|s| s.inner().counters().released_bytes);
    assert_eq!(st.scavenged, released, "heap and source disagree");
    assert_eq!(
        st.released,
        2 * MIB,
        "only the steps before the refusal count"
    );
    assert_eq!(st.free - st.released, 2 * MIB, "the rest stays dirty");
}

#[test]
fn refused_releases_leave_the_heap_consistent_and_are_retried() {
    let buf: &'static mut [u8] = Box::leak(vec![0u8; 16 * MIB].into_boxed_slice());
    let h = MHeap::new(
        FaultInjecting::new(Counting::new(FixedRegion::new(buf)), FaultPlan::Never),
        HeapConfig { arena_size: MIB },
    );
    h.set_scavenge_policy(ScavengePolicy {
        delay_ns: 100 * MS,
        step_bytes: 64 << 10,
        ..quiet()
    });
    let spans: Vec<_> = (0..16)
        .map(|_| h.alloc_pages(16, PAGE_SIZE).unwrap().span)
        .collect();
    h.scavenge_step(SEC);
    for s in spans {
        // SAFETY: live spans, not used again.
        unsafe { h.free_span(s) };
    }
    h.with_source(|s| {
        s.set_release_faults(true);
        s.set_plan(FaultPlan::FailEvery(3));
    });
    let mut t = SEC;
    let mut refused = 0;
    while h.check_invariants().released < h.stats().free {
        t += 10 * MS;
        assert!(t < 60 * SEC, "never released");
        let failures = h.with_source(|s| s.failures());
        h.scavenge_step(t);
        if h.with_source(|s| s.failures()) > failures {
            refused += 1;
            // No retry by time for a while.
            assert!(h.next_scavenge_deadline().unwrap() >= t + 100 * MS);
        }
        let st = h.check_invariants();
        let released = h.with_source(|s| s.inner().counters().released_bytes);
        assert_eq!(st.scavenged, released, "heap and source disagree");
    }
    assert!(refused > 0);
}

#[test]
fn policy_is_settable_on_a_static_heap_before_first_use() {
    static HEAP: MHeap<mheap::OsPageSource> = MHeap::new(
        mheap::OsPageSource::new(mheap::ReleaseAdvice::DontNeed),
        HeapConfig::DEFAULT,
    );
    assert_eq!(HEAP.scavenge_policy(), ScavengePolicy::DEFAULT);
    let p = ScavengePolicy {
        memory_limit: Some(1 << 30),
        delay_ns: 5 * SEC,
        ..ScavengePolicy::DEFAULT
    };
    HEAP.set_scavenge_policy(p);
    assert_eq!(HEAP.scavenge_policy(), p);
    assert_eq!(HEAP.stats().mapped, 0, "setting the policy takes no memory");
    assert_eq!(HEAP.next_scavenge_deadline(), None);
}

#[test]
fn a_background_thread_sleeps_until_work_and_is_woken_early() {
    // Real clock here: the thread uses `wait_for_scavenge_work`, which reads
    // `monotonic_ns`. It waits at most 5 s at a time, so work done within
    // 2 s shows that it woke at the deadline, or was woken.
    let delay = 100 * MS;
    let h: &'static Heap = Box::leak(Box::new(heap(
        16,
        ScavengePolicy {
            delay_ns: delay,
            ..quiet()
        },
    )));
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let thread = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if h.wait_for_scavenge_work(5 * SEC) {
                h.scavenge_step_now();
            }
        }
    });
    h.scavenge_step_now();
    let spans = alloc_touched(h, 16, 16); // 2 MiB
    let freed_at = Instant::now();
    free_all(h, spans);
    // Nothing can be released before the delay, whatever the thread does.
    assert_eq!(dirty(&h.stats()), 2 * MIB);
    while dirty(&h.stats()) > 0 {
        assert!(
            freed_at.elapsed() < Duration::from_secs(2),
            "the thread did not wake at the deadline"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(freed_at.elapsed() >= Duration::from_millis(100));

    // An hour's delay: the thread sleeps (5 s at most); a policy change
    // that creates work at once must wake it.
    h.set_scavenge_policy(ScavengePolicy {
        delay_ns: 3600 * SEC,
        ..quiet()
    });
    let spans = alloc_touched(h, 16, 16);
    free_all(h, spans);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(dirty(&h.stats()), 2 * MIB);
    let no_bound = ScavengePolicy {
        retain_min_bytes: 0,
        retain_percent: 0,
        delay_ns: 3600 * SEC,
        ..quiet()
    };
    let changed_at = Instant::now();
    h.set_scavenge_policy(no_bound);
    while dirty(&h.stats()) > 0 {
        assert!(
            changed_at.elapsed() < Duration::from_secs(2),
            "the thread was not woken"
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    // Stop: leave dirty pages with no work, then create work to wake it.
    h.set_scavenge_policy(quiet());
    let spans = alloc_touched(h, 1, 16);
    free_all(h, spans);
    stop.store(true, Ordering::Relaxed);
    h.set_scavenge_policy(no_bound);
    thread.join().unwrap();
    check(h);
}
