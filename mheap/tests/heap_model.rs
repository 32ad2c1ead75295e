//! Model-based property test of the page heap: random sequences of span
//! allocations (any page count, alignments up to 256 KiB), frees and
//! releases, checked after every step against a simple model (the list of
//! live spans) and against the heap's own invariant walk.
//!
//! After each operation:
//! - no two live spans overlap, and each holds the pattern written into it
//!   when it was handed out (so a span handed out twice shows up);
//! - the heap walk (`check_invariants`) finds every page in exactly one span,
//!   no two adjacent free spans, every span in the right bin, the page map
//!   pointing every in-use page to its span and no free interior page to
//!   anything, and counters equal to what the walk recomputes;
//! - `span_of` answers the right span for the first, last and a middle page
//!   of every live span, and `None` just outside each live span unless that
//!   page belongs to another live span;
//! - a span reported `zeroed` really reads as zero (released pages re-used
//!   after scavenging included);
//! - the scavenger runs under a random policy (inside frees and allocations,
//!   and in `Tick`s that advance the clock): no increment releases more than
//!   a step, one releases at least what the memory limit asks for, and once
//!   the clock runs on with no frees the retained bound and the limit are
//!   met; both recomputed here from the stats and the policy's definition.

use mheap::{FixedRegion, HeapConfig, HeapStats, MHeap, PAGE_SIZE, ScavengePolicy, Span};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc { npages: usize, align_shift: u32 },
    Free { pick: usize },
    Release { pages: usize },
    Resize { pick: usize, npages: usize },
    Tick { ms: u64 },
    ReleaseAll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop_oneof![1usize..=8, 9usize..=127, 128usize..=600], 0u32..=5)
            .prop_map(|(npages, align_shift)| Op::Alloc { npages, align_shift }),
        4 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => (0usize..400).prop_map(|pages| Op::Release { pages }),
        2 => (any::<usize>(), 1usize..300).prop_map(|(pick, npages)| Op::Resize { pick, npages }),
        3 => (0u64..300).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::ReleaseAll),
    ]
}

fn policy() -> impl Strategy<Value = ScavengePolicy> {
    (
        0u32..30,
        prop_oneof![
            Just(0usize),
            Just(64 << 10),
            Just(1 << 20),
            Just(usize::MAX)
        ],
        prop_oneof![
            Just(0u64),
            1_000_000u64..500_000_000,
            Just(ScavengePolicy::NEVER)
        ],
        1usize..64,
        prop_oneof![Just(None), (4usize..48).prop_map(|m| Some(m << 20))],
        prop_oneof![Just(usize::MAX), (1usize..256).prop_map(|p| p * PAGE_SIZE)],
    )
        .prop_map(
            |(retain_percent, retain_min_bytes, delay_ns, step_pages, memory_limit, at_free)| {
                ScavengePolicy {
                    retain_percent,
                    retain_min_bytes,
                    delay_ns,
                    step_bytes: step_pages * PAGE_SIZE,
                    memory_limit,
                    release_at_free_bytes: at_free,
                }
            },
        )
}

/// Pages the memory limit wants released, from the policy's definition.
fn over_limit_pages(st: &HeapStats, p: &ScavengePolicy) -> usize {
    let dirty = (st.free - st.released) / PAGE_SIZE;
    let over = p.memory_limit.map_or(0, |l| {
        st.resident.saturating_sub(l - l / 20).div_ceil(PAGE_SIZE)
    });
    over.min(dirty)
}

/// Pages the retained bound and the memory limit want released.
fn pressure_pages(st: &HeapStats, p: &ScavengePolicy) -> usize {
    let dirty = (st.free - st.released) / PAGE_SIZE;
    let bound = (p.retain_min_bytes / PAGE_SIZE)
        .saturating_add((st.in_use / PAGE_SIZE).saturating_mul(p.retain_percent as usize) / 100);
    dirty.saturating_sub(bound).max(over_limit_pages(st, p))
}

struct Live<'h> {
    span: &'h Span,
    tag: u64,
}

fn pattern(tag: u64, i: usize) -> u64 {
    tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64
}

/// Writes the tag's pattern into the first and last word of every page.
fn fill(span: &Span, tag: u64) {
    for p in 0..span.npages() {
        let base = span.start() + p * PAGE_SIZE;
        // SAFETY: the span is ours and in use; both words are inside it.
        unsafe {
            *(base as *mut u64) = pattern(tag, 2 * p);
            *((base + PAGE_SIZE - 8) as *mut u64) = pattern(tag, 2 * p + 1);
        }
    }
}

fn verify(span: &Span, tag: u64) {
    for p in 0..span.npages() {
        let base = span.start() + p * PAGE_SIZE;
        // SAFETY: as in `fill`.
        let (a, b) = unsafe {
            (
                *(base as *const u64),
                *((base + PAGE_SIZE - 8) as *const u64),
            )
        };
        assert_eq!(a, pattern(tag, 2 * p), "span contents overwritten");
        assert_eq!(b, pattern(tag, 2 * p + 1), "span contents overwritten");
    }
}

fn run(ops: Vec<Op>, policy: ScavengePolicy) {
    let buf: &'static mut [u8] = Box::leak(vec![0xAAu8; 48 << 20].into_boxed_slice());
    let heap = MHeap::new(
        FixedRegion::new(buf),
        HeapConfig {
            arena_size: 1 << 20,
        },
    );
    heap.set_scavenge_policy(policy);
    let step = policy.step_bytes;
    let mut now = 1_000_000_000u64;
    let mut live: Vec<Live<'_>> = Vec::new();
    let mut next_tag = 1u64;
    for op in ops {
        match op {
            Op::Tick { ms } => {
                now += ms * 1_000_000;
                let before = heap.stats();
                let want = over_limit_pages(&before, &policy) * PAGE_SIZE;
                let got = heap.scavenge_step(now);
                let after = heap.stats();
                assert_eq!(after.released, before.released + got);
                assert!(got <= step, "a step released {got} > {step}");
                assert!(
                    got >= want.min(step),
                    "a step released {got}, the policy asks for {want}"
                );
            }
            Op::ReleaseAll => {
                let before = heap.stats();
                let got = heap.release_all();
                let after = heap.stats();
                assert_eq!(got, before.free - before.released);
                assert_eq!(after.released, after.free);
            }
            Op::Alloc {
                npages,
                align_shift,
            } => {
                let align = PAGE_SIZE << align_shift;
                match heap.alloc_pages(npages, align) {
                    Ok(a) => {
                        assert_eq!(a.span.npages(), npages);
                        assert_eq!(a.span.start() % align, 0, "misaligned span");
                        if a.zeroed {
                            let bytes = unsafe {
                                // SAFETY: the span is ours.
                                std::slice::from_raw_parts(
                                    a.span.start() as *const u8,
                                    a.span.bytes(),
                                )
                            };
                            assert!(bytes.iter().all(|&b| b == 0), "`zeroed` span is not zero");
                        }
                        fill(a.span, next_tag);
                        live.push(Live {
                            span: a.span,
                            tag: next_tag,
                        });
                        next_tag += 1;
                    }
                    Err(e) => {
                        // Only running out of the fixed region is acceptable.
                        assert!(matches!(e, mheap::HeapError::OutOfMemory(_)), "{e}");
                    }
                }
            }
            Op::Free { pick } => {
                if !live.is_empty() {
                    let l = live.swap_remove(pick % live.len());
                    verify(l.span, l.tag);
                    // SAFETY: the span is live and forgotten right after.
                    unsafe { heap.free_span(l.span) };
                }
            }
            Op::Resize { pick, npages } => {
                if !live.is_empty() {
                    let l = &live[pick % live.len()];
                    let (start, old) = (l.span.start(), l.span.npages());
                    // SAFETY: a live large span of this heap; single thread.
                    if unsafe { heap.resize_in_place(l.span, npages) } {
                        assert_eq!(l.span.npages(), npages);
                        assert_eq!(l.span.start(), start, "resize moved the span");
                        assert_eq!(l.span.elem_size(), l.span.bytes());
                        let keep = old.min(npages);
                        for p in 0..keep {
                            let base = start + p * PAGE_SIZE;
                            // SAFETY: inside the live span.
                            assert_eq!(unsafe { *(base as *const u64) }, pattern(l.tag, 2 * p));
                        }
                        fill(l.span, l.tag);
                    } else {
                        assert_eq!(l.span.npages(), old, "a failed resize changed the span");
                        // A shrink needs one span record: it fails only when
                        // metadata memory has run out.
                        assert!(
                            npages > old || heap.with_source(|s| s.remaining()) < 256 << 10,
                            "a shrink failed with memory to spare"
                        );
                    }
                }
            }
            Op::Release { pages } => {
                let before = heap.stats();
                let got = heap.release(pages * PAGE_SIZE);
                let after = heap.stats();
                assert_eq!(after.released, before.released + got);
                let unreleased = before.free - before.released;
                assert!(
                    got >= (pages * PAGE_SIZE).min(unreleased),
                    "released {got} of {} asked, {unreleased} available",
                    pages * PAGE_SIZE
                );
            }
        }
        check(&heap, &live);
    }
    // Time runs on with no frees: the bound and the limit are met (just
    // freed memory is exempt from the bound for two generations at most).
    let mut quiet_ticks = 0;
    while pressure_pages(&heap.stats(), &policy) > 0 {
        now += 300_000_000;
        let got = heap.scavenge_step(now);
        assert!(got <= step);
        quiet_ticks += 1;
        assert!(
            quiet_ticks < 10_000,
            "the policy's pressure is never relieved"
        );
    }
    check(&heap, &live);
    for l in live.drain(..) {
        verify(l.span, l.tag);
        // SAFETY: live span, forgotten right after.
        unsafe { heap.free_span(l.span) };
    }
    let end = heap.check_invariants();
    assert_eq!(end.in_use, 0);
    assert_eq!(end.spans_in_use, 0);
    // Everything coalesces back: at most one free span per arena reservation
    // that was not adjacent to another.
    assert!(end.free_spans >= 1 || end.mapped == 0);
}

fn check(heap: &MHeap<FixedRegion>, live: &[Live<'_>]) {
    let walk = heap.check_invariants();
    assert_eq!(walk, heap.stats());
    assert_eq!(walk.mapped, walk.in_use + walk.free);
    assert!(walk.released <= walk.free);
    let in_use: usize = live.iter().map(|l| l.span.bytes()).sum();
    assert_eq!(walk.in_use, in_use, "heap in-use bytes != model");
    assert_eq!(walk.spans_in_use, live.len());

    let mut ranges: Vec<(usize, usize)> = live
        .iter()
        .map(|l| (l.span.start(), l.span.end()))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "live spans overlap: {w:?}");
    }
    let owned = |addr: usize| ranges.iter().any(|&(s, e)| addr >= s && addr < e);
    for l in live {
        let s = l.span;
        for addr in [s.start(), s.end() - 1, s.start() + s.bytes() / 2] {
            let got = heap.span_of(addr).expect("live page maps to no span");
            assert!(std::ptr::eq(got, s), "page maps to the wrong span");
            let mapped = heap.span_of_mapped(addr).expect("live page unmapped");
            assert!(std::ptr::eq(mapped, s), "page entry of the wrong span");
        }
        for addr in [s.start().wrapping_sub(1), s.end()] {
            if !owned(addr) {
                assert!(heap.span_of(addr).is_none(), "free page maps to a span");
                // The C ABI's free relies on this: a page of no live span
                // maps to no in-use span (no stale entry left behind by
                // frees, merges or shrinks).
                assert!(
                    heap.span_of_mapped(addr).is_none(),
                    "free page maps to an in-use span"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn heap_matches_model(ops in prop::collection::vec(op(), 1..80), policy in policy()) {
        run(ops, policy);
    }
}

#[test]
fn fill_until_exhausted_then_free_everything() {
    // Deterministic companion: exhaust the region with mixed sizes, free
    // every other span, then everything, checking the walk at each stage.
    let mut ops = Vec::new();
    for i in 0..400 {
        ops.push(Op::Alloc {
            npages: [1, 3, 17, 130, 64][i % 5],
            align_shift: (i % 3) as u32,
        });
    }
    for i in 0..200 {
        ops.push(Op::Free { pick: i * 7 });
    }
    ops.push(Op::Release { pages: 1 << 20 });
    for _ in 0..40 {
        ops.push(Op::Alloc {
            npages: 40,
            align_shift: 0,
        });
    }
    run(ops.clone(), ScavengePolicy::MANUAL);
    // The same under an eager scavenger: every free page released at once,
    // and re-used.
    run(
        ops,
        ScavengePolicy {
            delay_ns: 0,
            step_bytes: 64 << 10,
            ..ScavengePolicy::DEFAULT
        },
    );
}
