//! Does gomalloc need Go's tiny allocator? (Go packs requests under 16
//! bytes into shared 16-byte blocks.) gomalloc side by side with mimalloc,
//! jemalloc and the system allocator (glibc), each called directly through
//! `GlobalAlloc` (the bench binary's own global allocator stays the system
//! one).
//!
//! - `tiny/<size>/<alloc>` (criterion): one `alloc` + one `dealloc` of one
//!   object of 1, 3, 5, 8, 12 or 15 bytes, a byte written into it; single
//!   thread, a warm allocator; thread CPU time unless
//!   `GOMALLOC_BENCH_CLOCK=wall` (see `common::Clock`).
//! - `tiny-mem <alloc> <size> <bytes/object>` (printed before criterion
//!   runs): the resident memory one live object of 1, 4, 8, 12 or 15 bytes
//!   costs (16 for reference). A fresh child process (this binary, re-run
//!   with `GOMALLOC_TINY_MEM=<alloc>:<size>:<count>`) per allocator and
//!   size: it warms the allocator with one object, reads its resident set
//!   (`/proc/self/statm`, second field × page size), allocates `count`
//!   objects writing every byte of each, reads the resident set again, and
//!   prints the growth divided by `count`; then frees them. The array of
//!   pointers is allocated and written before the first reading, so it is
//!   not counted. A fresh process per measurement means no allocator sees
//!   memory another one (or an earlier size) left behind.
//!
//!   `count` is 10,000,000 under `cargo bench`: mimalloc asks for
//!   transparent huge pages (`MADV_HUGEPAGE`), so its resident set moves in
//!   2 MiB steps and a reading can be off by up to 2 MiB; over 10 million
//!   objects that is 0.2 byte per object (it would be 2 bytes over 1
//!   million). Under `cargo test` (criterion's test mode, no `--bench`
//!   argument) `count` is 100,000, a quick smoke test whose numbers are
//!   that coarse.
//!
//! Every object has the alignment of the largest power of two (at most 8)
//! dividing its size: 1 for 1, 3, 5 and 15 bytes (`[u8; N]`), 4 for 4 and
//! 12 (`[u32; N]`), 8 for 8 (`u64`), the alignments Go's tiny allocator
//! gives such objects.
//!
//! Run with `cargo bench -p gomalloc-benches --bench tiny`; see
//! `benches/README.md`.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

use common::{Clock, Visit, alloc, bench_alloc_free, dealloc, for_each_allocator};
use criterion::{BenchmarkGroup, Criterion};

/// Object sizes of the timing benchmark.
const TIME_SIZES: [usize; 6] = [1, 3, 5, 8, 12, 15];
/// Object sizes of the memory table (16: a reference where no tiny
/// allocator would help).
const MEM_SIZES: [usize; 6] = [1, 4, 8, 12, 15, 16];
/// Live objects per memory measurement under `cargo bench`.
const MEM_OBJECTS: usize = 10_000_000;
/// Live objects per memory measurement in criterion's test mode.
const MEM_OBJECTS_TEST: usize = 100_000;
/// Set in a child process: `<alloc>:<size>:<count>` to measure.
const CHILD_ENV: &str = "GOMALLOC_TINY_MEM";

/// The layout of one tiny object of `size` bytes: aligned to the largest
/// power of two, at most 8, that divides `size`.
fn tiny_layout(size: usize) -> Layout {
    let align = (1usize << size.trailing_zeros()).min(8);
    Layout::from_size_align(size, align).expect("valid layout")
}

/// Adds one `tiny` benchmark per allocator to the group of a size.
struct AllocFree<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, Clock>,
    layout: Layout,
}

impl Visit for AllocFree<'_, '_> {
    fn visit<A: GlobalAlloc + Sync>(&mut self, name: &'static str, a: &'static A) {
        bench_alloc_free(self.group, name, a, self.layout);
    }
}

fn tiny(c: &mut Criterion<Clock>) {
    for size in TIME_SIZES {
        let mut group = c.benchmark_group(format!("tiny/{size}"));
        for_each_allocator(&mut AllocFree {
            group: &mut group,
            layout: tiny_layout(size),
        });
        group.finish();
    }
}

/// The process's resident set in bytes: `/proc/self/statm`'s second field
/// (resident pages) times the page size.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident pages in /proc/self/statm");
    // SAFETY: `sysconf` only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).expect("page size")
}

/// In a child process: measures the resident memory per live object of one
/// allocator and size, and prints it.
struct MemChild {
    name: String,
    size: usize,
    count: usize,
    found: bool,
}

impl Visit for MemChild {
    fn visit<A: GlobalAlloc + Sync>(&mut self, name: &'static str, a: &'static A) {
        if name != self.name {
            return;
        }
        self.found = true;
        let layout = tiny_layout(self.size);
        // Warm: the allocator sets itself (and this thread's cache) up.
        let p = alloc(a, layout);
        // SAFETY: allocated just above with `layout`; freed once.
        unsafe { dealloc(a, p, layout) };
        // The pointer array is resident before the first reading (written
        // with a non-zero value, so its pages are touched).
        let mut ptrs = vec![std::ptr::dangling_mut::<u8>(); self.count];
        let before = rss_bytes();
        for slot in &mut ptrs {
            let p = alloc(a, layout);
            // SAFETY: `p` points to at least `layout.size()` bytes.
            unsafe { p.write_bytes(0xA5, layout.size()) };
            *slot = p;
        }
        let after = rss_bytes();
        for p in ptrs {
            // SAFETY: allocated above with `layout`; freed once.
            unsafe { dealloc(a, p, layout) };
        }
        let per_object = after.saturating_sub(before) as f64 / self.count as f64;
        println!("{per_object:.2}");
    }
}

/// Child-process side of the memory table: `spec` is
/// `<alloc>:<size>:<count>`.
fn mem_child(spec: &str) {
    let fields: Vec<&str> = spec.split(':').collect();
    let [name, size, count] = fields[..] else {
        panic!("{CHILD_ENV}={spec}: expected <alloc>:<size>:<count>");
    };
    let mut child = MemChild {
        name: name.to_owned(),
        size: size.parse().expect("size"),
        count: count.parse().expect("count"),
        found: false,
    };
    for_each_allocator(&mut child);
    assert!(child.found, "{CHILD_ENV}={spec}: no allocator named {name}");
}

/// Collects the allocators' names.
struct Names(Vec<&'static str>);

impl Visit for Names {
    fn visit<A: GlobalAlloc + Sync>(&mut self, name: &'static str, _: &'static A) {
        self.0.push(name);
    }
}

/// Prints the memory table for `count` live objects, one fresh child
/// process per allocator and size.
fn mem_table(count: usize) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut names = Names(Vec::new());
    for_each_allocator(&mut names);
    println!(
        "# tiny-mem <alloc> <size> <bytes/object>: resident-set growth per live object, \
         {count} objects, a fresh process each"
    );
    for name in names.0 {
        for size in MEM_SIZES {
            let out = Command::new(&exe)
                .env(CHILD_ENV, format!("{name}:{size}:{count}"))
                .output()
                .expect("run the memory child");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "memory child {name}:{size} failed: {}{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
            println!("tiny-mem {name} {size} {}", stdout.trim());
        }
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        mem_child(&spec);
        return;
    }
    // `cargo bench` passes `--bench`; criterion's test mode runs without.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    mem_table(if bench_mode {
        MEM_OBJECTS
    } else {
        MEM_OBJECTS_TEST
    });
    let mut c = common::criterion();
    tiny(&mut c);
    c.final_summary();
}
