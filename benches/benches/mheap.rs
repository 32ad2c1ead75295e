//! Criterion benchmarks of the page heap (`mheap::MHeap`) over the OS page
//! source with the default configuration (64 MiB arenas).
//!
//! - `span_alloc_free/{1,8,64,1024}`: one `alloc_pages` + `free_span` pair of
//!   N pages on a warm heap (it has already grown, so no `mmap` is measured).
//! - `span_alloc_free_fragmented/{1,8,64,1024}`: the same pair after the
//!   free index was filled with about 1900 free spans of 1..=199 pages that
//!   cannot coalesce; compared with the row above it shows whether the cost
//!   of the free index (`mheap/src/bins.rs`) stays flat as the index grows.
//! - `span_batch/{1,8,64}`: 256 spans of N pages allocated, then all 256
//!   freed in allocation order (time per batch; throughput in spans).
//! - `span_of`: the lock-free page → span lookup on addresses spread over
//!   1000 live spans of 1..=8 pages, visited round-robin in a shuffled order.
//! - `span_of_miss`: the same lookup on addresses the heap never handed out
//!   (system-allocator memory, the stack, random 47-bit addresses, and free
//!   pages of the heap's own arena that were never allocated).
//!
//! Run with `cargo bench -p gomalloc-benches --bench mheap`; see
//! `benches/README.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mheap::{HeapConfig, MHeap, OsPageSource, PAGE_SIZE, ReleaseAdvice, Span};

/// Page counts of the single alloc/free benchmarks.
const SIZES: [usize; 5] = [1, 8, 64, 150, 1024];
/// Page counts of the batch benchmark.
const BATCH_SIZES: [usize; 3] = [1, 8, 64];
/// Spans per batch.
const BATCH: usize = 256;
/// Spans allocated to fragment the heap; every other one is freed again.
const FRAGMENT_SPANS: usize = 4000;
/// Live spans the `span_of` lookups land in.
const LIVE_SPANS: usize = 1000;
/// Precomputed lookup addresses (a power of two, for a cheap wrap-around).
const LOOKUPS: usize = 4096;

type Heap = MHeap<OsPageSource>;

/// A fresh heap over the OS with the default configuration.
fn os_heap() -> Heap {
    MHeap::new(
        OsPageSource::new(ReleaseAdvice::DontNeed),
        HeapConfig::default(),
    )
}

/// Allocates a span of `npages` pages at page alignment; panics on failure.
fn alloc(heap: &Heap, npages: usize) -> &Span {
    match heap.alloc_pages(npages, PAGE_SIZE) {
        Ok(a) => a.span,
        Err(e) => panic!("alloc_pages({npages}): {e}"),
    }
}

/// xorshift64: a cheap, deterministic pseudo-random sequence.
fn next_rand(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// Allocates and frees one span of every benchmarked size so that the heap
/// has grown (its arena is reserved and the page map populated) before
/// anything is measured.
fn warm_up(heap: &Heap, npages: &[usize]) {
    for &n in npages {
        let s = alloc(heap, n);
        // SAFETY: `s` was just handed out by `heap` and is not used again.
        unsafe { heap.free_span(s) };
    }
}

/// Fills the free index of `heap` with thousands of free spans of mixed
/// sizes: allocates `FRAGMENT_SPANS` spans of 1..=199 pages (a cycle of odd
/// length, so the freed ones cover every size) and frees every other one.
/// Almost every freed span lies between two live ones, so it cannot
/// coalesce. Returns
/// the live spans, which must stay allocated.
fn fragment(heap: &Heap) -> Vec<&Span> {
    let spans: Vec<&Span> = (0..FRAGMENT_SPANS)
        .map(|i| alloc(heap, 1 + (i * 37) % 199))
        .collect();
    let mut live = Vec::with_capacity(FRAGMENT_SPANS / 2);
    for (i, s) in spans.into_iter().enumerate() {
        if i % 2 == 0 {
            // SAFETY: `s` came from `heap`, is in use, and is dropped from
            // the list of live spans here, so it is not used again.
            unsafe { heap.free_span(s) };
        } else {
            live.push(s);
        }
    }
    let free_spans = heap.stats().free_spans;
    // A few freed spans merge where arenas meet or where a later, smaller
    // span went into the tail of an earlier arena; about 1900 remain.
    assert!(
        free_spans >= FRAGMENT_SPANS * 3 / 8,
        "the heap should hold thousands of free spans, has {free_spans}"
    );
    live
}

/// Benchmarks one alloc + free pair of each size in `SIZES` on `heap`.
fn alloc_free_group(c: &mut Criterion, name: &str, heap: &Heap) {
    let mut group = c.benchmark_group(name);
    for n in SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                let s = black_box(alloc(heap, black_box(n)));
                // SAFETY: `s` was just handed out by `heap` and is not used
                // after this call.
                unsafe { heap.free_span(s) };
            });
        });
    }
    group.finish();
}

fn span_alloc_free(c: &mut Criterion) {
    let heap = os_heap();
    warm_up(&heap, &SIZES);
    alloc_free_group(c, "span_alloc_free", &heap);
}

fn span_alloc_free_fragmented(c: &mut Criterion) {
    let heap = os_heap();
    let live = fragment(&heap);
    warm_up(&heap, &SIZES);
    alloc_free_group(c, "span_alloc_free_fragmented", &heap);
    drop(live);
}

fn span_batch(c: &mut Criterion) {
    let heap = os_heap();
    let mut spans: Vec<&Span> = Vec::with_capacity(BATCH);
    let mut group = c.benchmark_group("span_batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    for n in BATCH_SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut batch = || {
                for _ in 0..BATCH {
                    spans.push(alloc(&heap, black_box(n)));
                }
                for s in spans.drain(..) {
                    // SAFETY: every span in `spans` was handed out by `heap`
                    // in this batch, is freed once, and is not used again.
                    unsafe { heap.free_span(s) };
                }
            };
            // Warm: the heap grows to hold a whole batch before measuring.
            batch();
            b.iter(&mut batch);
        });
    }
    group.finish();
}

fn span_of(c: &mut Criterion) {
    let heap = os_heap();
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let live: Vec<&Span> = (0..LIVE_SPANS)
        .map(|_| alloc(&heap, 1 + (next_rand(&mut rng) % 8) as usize))
        .collect();

    // Hits: a random byte of a random live span, in shuffled order.
    let hits: Vec<usize> = (0..LOOKUPS)
        .map(|_| {
            let s = live[(next_rand(&mut rng) % LIVE_SPANS as u64) as usize];
            s.start() + (next_rand(&mut rng) % s.bytes() as u64) as usize
        })
        .collect();
    for &a in &hits {
        assert!(heap.span_of(a).is_some_and(|s| s.contains(a)));
    }

    // Misses: addresses the heap never handed out.
    let arena = HeapConfig::default().arena_size;
    let top = live.iter().map(|s| s.end()).max().unwrap_or_default();
    // Arenas are aligned to their size; the live spans fill the first one
    // from its low end, so `top..arena_end` was never allocated.
    let arena_end = top.next_multiple_of(arena);
    assert!(
        arena_end - top >= 1024 * PAGE_SIZE,
        "the live spans fill the arena"
    );
    let foreign: Vec<Box<[u8; 64]>> = (0..LOOKUPS / 4).map(|_| Box::new([0u8; 64])).collect();
    let on_stack = 0u8;
    let mut misses: Vec<usize> = Vec::with_capacity(LOOKUPS);
    for i in 0..LOOKUPS {
        let r = next_rand(&mut rng) as usize;
        misses.push(match i % 4 {
            0 => &*foreign[i / 4] as *const [u8; 64] as usize,
            1 => r & ((1 << 47) - 1),
            2 => top + r % (arena_end - top),
            _ => &on_stack as *const u8 as usize + (r % 4096),
        });
    }
    for &a in &misses {
        assert!(heap.span_of(a).is_none(), "address {a:#x} is not a miss");
    }

    for (name, addrs) in [("span_of", &hits), ("span_of_miss", &misses)] {
        let mut i = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & (LOOKUPS - 1);
                heap.span_of(black_box(addrs[i])).map(Span::start)
            });
        });
    }
    drop(foreign);
    drop(live);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = span_alloc_free, span_alloc_free_fragmented, span_batch, span_of
}
criterion_main!(benches);
