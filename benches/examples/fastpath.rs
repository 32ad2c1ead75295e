//! The Rust `GlobalAlloc` fast path in instructions, for callgrind.
//!
//! `fastpath ALLOCATOR SIZE PAIRS`: warms ALLOCATOR (gomalloc, mimalloc,
//! jemalloc or system) on SIZE-byte objects, then runs PAIRS of
//! `alloc(SIZE)` + `dealloc` in `pairs`, each call through an
//! `#[inline(never)]` shim as `__rust_alloc` reaches a global allocator.
//! `benches/scripts/fastpath-instructions.sh` runs it under
//! `valgrind --tool=callgrind --toggle-collect=*pairs*` at two values of
//! PAIRS and reports the difference per pair.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::process::ExitCode;

/// Allocates through `a`, never inlined into the loop.
#[inline(never)]
fn shim_alloc<A: GlobalAlloc>(a: &A, layout: Layout) -> *mut u8 {
    // SAFETY: callers pass a non-zero-size layout.
    unsafe { a.alloc(layout) }
}

/// Frees through `a`, never inlined into the loop.
#[inline(never)]
fn shim_dealloc<A: GlobalAlloc>(a: &A, p: *mut u8, layout: Layout) {
    // SAFETY: `p` came from `shim_alloc(a, layout)`.
    unsafe { a.dealloc(p, layout) }
}

/// The measured loop: `n` allocate-touch-free pairs.
#[inline(never)]
fn pairs<A: GlobalAlloc>(a: &A, layout: Layout, n: u64) {
    for _ in 0..n {
        let p = shim_alloc(a, black_box(layout));
        // SAFETY: `p` is a live block of at least one byte.
        unsafe { p.write_volatile(1) };
        shim_dealloc(a, p, black_box(layout));
    }
}

fn run<A: GlobalAlloc>(a: &A, size: usize, n: u64) {
    let layout = Layout::from_size_align(size, 8).expect("valid layout");
    let warm: Vec<*mut u8> = (0..1000).map(|_| shim_alloc(a, layout)).collect();
    for p in warm {
        shim_dealloc(a, p, layout);
    }
    pairs(a, layout, n);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(Ok(size)), Some(Ok(n))) = (
        args.first(),
        args.get(1).map(|s| s.parse::<usize>()),
        args.get(2).map(|s| s.parse::<u64>()),
    ) else {
        eprintln!("usage: fastpath gomalloc|mimalloc|jemalloc|system SIZE PAIRS");
        return ExitCode::from(2);
    };
    match name.as_str() {
        "gomalloc" => run(&gomalloc::GoMalloc, size.max(1), n),
        "mimalloc" => run(&mimalloc::MiMalloc, size.max(1), n),
        "jemalloc" => run(&tikv_jemallocator::Jemalloc, size.max(1), n),
        "system" => run(&System, size.max(1), n),
        other => {
            eprintln!("unknown allocator {other}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
