//! Criterion benchmarks of malloc/free: gomalloc side by side with mimalloc,
//! jemalloc and the system allocator (glibc), in one process and one run,
//! on the same workloads. Each allocator is called directly through
//! `GlobalAlloc` (the bench binary's own global allocator stays the system
//! one), each call through an `#[inline(never)]` shim as a
//! `#[global_allocator]` is reached through `__rust_alloc`.
//!
//! - `malloc_free/<size>/<alloc>`: one `alloc` + one `dealloc` of one
//!   object of `size` bytes (alignment 8), a byte written into it; single
//!   thread, a warm allocator (steady state of the thread's cache).
//! - `batch/<size>/<alloc>`: 1000 objects of `size` bytes allocated (a byte
//!   written into each), then all 1000 freed in allocation order; time per
//!   batch, throughput in objects.
//!
//! Time is the thread's CPU time unless `GOMALLOC_BENCH_CLOCK=wall` (see
//! `common::Clock`).
//!
//! Groups are per size, so criterion lines the four allocators up. Run with
//! `cargo bench -p gomalloc-benches --bench alloc`; a subset with a filter,
//! e.g. `-- malloc_free/64/` (criterion's filter is a regex on the id
//! `malloc_free/64/gomalloc`; the trailing `/` keeps `malloc_free/16/` from
//! matching 16384). See `benches/README.md`.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

use common::{Clock, Visit, alloc, bench_alloc_free, dealloc, for_each_allocator, warm};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};

/// Object sizes of `malloc_free`.
const SIZES: [usize; 12] = [16, 24, 32, 48, 64, 128, 256, 512, 1024, 4096, 16384, 32768];
/// Object sizes of `batch`.
const BATCH_SIZES: [usize; 7] = [16, 32, 64, 256, 1024, 4096, 32768];
/// Objects per batch.
const BATCH: usize = 1000;
/// Alignment of every object (that of `u64`/`usize`, the common case).
const ALIGN: usize = 8;

/// The layout of one object of `size` bytes.
fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).expect("valid layout")
}

/// Adds one `malloc_free` benchmark per allocator to the group of a size.
struct MallocFree<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, Clock>,
    layout: Layout,
}

impl Visit for MallocFree<'_, '_> {
    fn visit<A: GlobalAlloc + Sync>(&mut self, name: &'static str, a: &'static A) {
        bench_alloc_free(self.group, name, a, self.layout);
    }
}

/// Adds one `batch` benchmark per allocator to the group of a size.
struct Batch<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, Clock>,
    layout: Layout,
    ptrs: Vec<*mut u8>,
}

impl Visit for Batch<'_, '_> {
    fn visit<A: GlobalAlloc + Sync>(&mut self, name: &'static str, a: &'static A) {
        let layout = self.layout;
        let ptrs = &mut self.ptrs;
        warm(a, &[layout], BATCH);
        self.group.bench_function(name, |b| {
            b.iter(|| {
                let layout = black_box(layout);
                for _ in 0..BATCH {
                    let p = alloc(a, layout);
                    // SAFETY: `p` points to at least `layout.size()` bytes.
                    unsafe { p.write(1) };
                    ptrs.push(p);
                }
                for p in ptrs.drain(..) {
                    // SAFETY: allocated in this batch with `layout`; each
                    // pointer is drained, so freed once.
                    unsafe { dealloc(a, black_box(p), layout) };
                }
            });
        });
    }
}

fn malloc_free(c: &mut Criterion<Clock>) {
    for size in SIZES {
        let mut group = c.benchmark_group(format!("malloc_free/{size}"));
        for_each_allocator(&mut MallocFree {
            group: &mut group,
            layout: layout(size),
        });
        group.finish();
    }
}

fn batch(c: &mut Criterion<Clock>) {
    for size in BATCH_SIZES {
        let mut group = c.benchmark_group(format!("batch/{size}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        // A batch takes microseconds to milliseconds: the same number of
        // batches per sample keeps the run within its measurement time.
        group.sampling_mode(SamplingMode::Flat);
        for_each_allocator(&mut Batch {
            group: &mut group,
            layout: layout(size),
            ptrs: Vec::with_capacity(BATCH),
        });
        group.finish();
    }
}

fn main() {
    let mut c = common::criterion();
    malloc_free(&mut c);
    batch(&mut c);
    c.final_summary();
}
