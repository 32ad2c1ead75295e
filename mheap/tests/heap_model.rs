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
//! - a span reported `zeroed` really reads as zero.

use mheap::{FixedRegion, HeapConfig, MHeap, PAGE_SIZE, Span};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc { npages: usize, align_shift: u32 },
    Free { pick: usize },
    Release { pages: usize },
    Resize { pick: usize, npages: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop_oneof![1usize..=8, 9usize..=127, 128usize..=600], 0u32..=5)
            .prop_map(|(npages, align_shift)| Op::Alloc { npages, align_shift }),
        4 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => (0usize..400).prop_map(|pages| Op::Release { pages }),
        2 => (any::<usize>(), 1usize..300).prop_map(|(pick, npages)| Op::Resize { pick, npages }),
    ]
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

fn run(ops: Vec<Op>) {
    let buf: &'static mut [u8] = Box::leak(vec![0xAAu8; 48 << 20].into_boxed_slice());
    let heap = MHeap::new(
        FixedRegion::new(buf),
        HeapConfig {
            arena_size: 1 << 20,
        },
    );
    let mut live: Vec<Live<'_>> = Vec::new();
    let mut next_tag = 1u64;
    for op in ops {
        match op {
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
        }
        for addr in [s.start().wrapping_sub(1), s.end()] {
            if !owned(addr) {
                assert!(heap.span_of(addr).is_none(), "free page maps to a span");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn heap_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops);
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
    run(ops);
}
