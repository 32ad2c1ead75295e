//! The allocators the benches compare, called directly through
//! `GlobalAlloc` (none of them is the bench binary's global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkGroup, Criterion};

/// gomalloc, the allocator under test.
static GOMALLOC: gomalloc::GoMalloc = gomalloc::GoMalloc;
/// mimalloc 3.3 (the `mimalloc` crate, no features; it asks for transparent
/// huge pages with `MADV_HUGEPAGE`).
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
/// jemalloc 5.3 (the `tikv-jemallocator` crate; prefixed symbols, so it
/// does not replace the C library's `malloc`).
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
/// The C library's `malloc` (glibc here), through `std::alloc::System`.
static SYSTEM: System = System;

/// Something run once per allocator, monomorphised for each.
pub trait Visit {
    /// Called with the allocator's short name and the allocator.
    fn visit<A: GlobalAlloc + Sync>(&mut self, name: &'static str, alloc: &'static A);
}

/// Calls `v` with each allocator in turn: gomalloc, mimalloc, jemalloc,
/// system.
pub fn for_each_allocator(v: &mut impl Visit) {
    v.visit("gomalloc", &GOMALLOC);
    v.visit("mimalloc", &MIMALLOC);
    v.visit("jemalloc", &JEMALLOC);
    v.visit("system", &SYSTEM);
}

/// `a.alloc(layout)` behind a call that is never inlined, as a
/// `#[global_allocator]` is reached through `__rust_alloc`: gomalloc's
/// `#[inline]` fast path cannot melt into the benchmark loop while the C
/// allocators sit behind a call. Aborts on null (the benches never run out
/// of memory; a null would make every later measurement meaningless).
#[inline(never)]
pub fn alloc<A: GlobalAlloc>(a: &A, layout: Layout) -> *mut u8 {
    // SAFETY: every layout the benches use has a non-zero size.
    let p = unsafe { a.alloc(layout) };
    if p.is_null() {
        std::process::abort();
    }
    p
}

/// `a.dealloc(p, layout)` behind a call that is never inlined (see
/// [`alloc`]).
///
/// # Safety
///
/// `p` was returned by `alloc(a, layout)` with this `layout` and is not used
/// afterwards.
#[inline(never)]
pub unsafe fn dealloc<A: GlobalAlloc>(a: &A, p: *mut u8, layout: Layout) {
    // SAFETY: the caller's contract is `GlobalAlloc::dealloc`'s.
    unsafe { a.dealloc(p, layout) }
}

/// Warms `a` up on `layouts`: per layout, allocates a batch of `n` objects
/// (writing a byte into each) and frees them, so the thread's caches exist
/// and the allocator has mapped memory for every class before anything is
/// measured.
pub fn warm<A: GlobalAlloc>(a: &A, layouts: &[Layout], n: usize) {
    let mut ptrs = Vec::with_capacity(n);
    for &layout in layouts {
        for _ in 0..n {
            let p = alloc(a, layout);
            // SAFETY: `p` points to at least `layout.size()` >= 1 bytes.
            unsafe { p.write(1) };
            ptrs.push(black_box(p));
        }
        for p in ptrs.drain(..) {
            // SAFETY: allocated just above with `layout`; freed once.
            unsafe { dealloc(a, p, layout) };
        }
    }
}

/// Adds benchmark `name` to `group`: one `alloc` + one `dealloc` of one
/// object of `layout` on `a`, a byte written into the object. Warms `a` up
/// on `layout` first.
pub fn bench_alloc_free<A: GlobalAlloc>(
    group: &mut BenchmarkGroup<'_, Clock>,
    name: &str,
    a: &A,
    layout: Layout,
) {
    warm(a, &[layout], 1000);
    group.bench_function(name, |b| {
        b.iter(|| {
            // The layout is opaque, as it is to an allocator behind
            // `__rust_alloc`: no size-class lookup is folded away.
            let layout = black_box(layout);
            let p = alloc(a, layout);
            // SAFETY: `p` points to at least `layout.size()` >= 1 bytes.
            unsafe { p.write(1) };
            // SAFETY: allocated just above with `layout`; freed once.
            unsafe { dealloc(a, black_box(p), layout) };
        });
    });
}

/// The clock the comparison benches measure with, chosen by the
/// environment variable `GOMALLOC_BENCH_CLOCK`: `cpu` (the default) is the
/// benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`: user and kernel
/// time of this thread, page faults and system calls included, time spent
/// waiting for a core excluded), `wall` is elapsed time
/// (`CLOCK_MONOTONIC`, what criterion's `WallTime` measures). On a loaded
/// 2-core machine the wall clock also counts the time other processes held
/// the core; thread CPU time does not. Values are nanoseconds either way.
pub struct Clock {
    /// The `clock_gettime` clock read.
    id: libc::clockid_t,
    /// Only for its formatter (nanoseconds shown as ns/µs/ms/s).
    wall: WallTime,
}

impl Clock {
    /// The clock `GOMALLOC_BENCH_CLOCK` names (`cpu` unless it says
    /// `wall`); panics on any other value.
    pub fn from_env() -> Self {
        let id = match std::env::var("GOMALLOC_BENCH_CLOCK").as_deref() {
            Err(_) | Ok("cpu") => libc::CLOCK_THREAD_CPUTIME_ID,
            Ok("wall") => libc::CLOCK_MONOTONIC,
            Ok(other) => panic!("GOMALLOC_BENCH_CLOCK={other}: expected cpu or wall"),
        };
        Clock { id, wall: WallTime }
    }

    /// The clock's name, for a header line.
    pub fn name(&self) -> &'static str {
        if self.id == libc::CLOCK_MONOTONIC {
            "wall (CLOCK_MONOTONIC)"
        } else {
            "thread CPU time (CLOCK_THREAD_CPUTIME_ID)"
        }
    }

    /// The clock's reading in nanoseconds.
    fn now(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable `timespec`; both clocks exist on
        // Linux, so the call cannot fail.
        let rc = unsafe { libc::clock_gettime(self.id, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime");
        // Both clocks start at 0 (boot, thread start) and never go back.
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

impl Measurement for Clock {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        self.now()
    }

    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(self.now().saturating_sub(start))
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

/// The criterion configuration of the comparison benches: 0.5 s warm-up,
/// 1.5 s measurement, 40 samples, [`Clock::from_env`], then the command
/// line.
pub fn criterion() -> Criterion<Clock> {
    let clock = Clock::from_env();
    println!("# clock: {}", clock.name());
    Criterion::default()
        .with_measurement(clock)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(40)
        .configure_from_args()
}
