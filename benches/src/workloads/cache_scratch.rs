//! `cache-scratch`: passive false sharing (after Hoard's `cache-scratch`,
//! Berger et al., 2000).
//!
//! The main thread allocates one 8-byte test object per thread, back to
//! back, so that several of them likely share a cache line, and hands
//! object `t` to thread `t`. Each thread verifies and frees the object it
//! received, then does its share of `size` rounds: allocate an 8-byte
//! object, write a start value into it, increment its bytes 1000 times
//! (volatile byte loads and stores, cycling through the 8 bytes: the
//! load waits for the line, as in Hoard's loop), check the result and free
//! it. An allocator
//! that gives the thread back the object it just freed, which sits next to
//! the other threads' objects, makes the threads' writes fight over one
//! cache line; one that allocates from memory of the thread's own does not.
//!
//! `ops` = objects allocated (`threads + size`). The checksum sums the
//! final contents of every round's object (fixed by the round numbers).

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;

use super::common::{Owned, alloc_object, corrupt, free_object, header, mix, share};
use super::{Outcome, Params, Workload};

/// Size of every object.
pub const OBJECT: usize = 8;
/// Byte increments (a volatile load and store each) into each round's
/// object, a multiple of [`OBJECT`].
pub const WRITES: usize = 1000;
const _: () = assert!(WRITES.is_multiple_of(OBJECT));

/// The workload's entry in the suite.
pub const WORKLOAD: Workload = Workload {
    name: "cache-scratch",
    default_size: 3_000_000,
    default_threads: 2,
    scaling: true,
    size_unit: "rounds of allocate 8 B, 1000 byte increments, free (all threads together)",
    summary: "each thread frees an 8 B object allocated next to the others', then allocates, increments bytes 1000 times and frees its own",
    body: run,
};

/// The workload body.
pub fn run(p: Params) -> Outcome {
    let threads = p.threads;
    // Back to back: nothing else is allocated between the objects.
    let first: Vec<Owned> = (0..threads)
        .map(|t| Owned(alloc_object(OBJECT, t as u64)))
        .collect();
    let checksum = std::thread::scope(|s| {
        let handles: Vec<_> = first
            .into_iter()
            .enumerate()
            .map(|(t, obj)| s.spawn(move || scratch(t, obj, share(p.size, threads, t))))
            .collect();
        handles.into_iter().fold(0u64, |sum, h| {
            sum.wrapping_add(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        })
    });
    Outcome {
        ops: threads as u64 + p.size,
        checksum,
    }
}

/// Thread `t`: frees the object it was handed, then does `rounds` rounds.
/// Returns the sum of the hashes of its objects' final contents.
fn scratch(t: usize, first: Owned, rounds: u64) -> u64 {
    // SAFETY: the main thread allocated the object with `alloc_object` and
    // handed it to this thread alone; spawning orders its writes first.
    let h = unsafe { free_object(first.0, OBJECT, Some(OBJECT)) };
    if h != header(OBJECT, t as u64) {
        corrupt(format_args!("cache-scratch: thread {t} got header {h:#x}"));
    }
    // Aligned to 8, so the start value and the result move as one word.
    let layout = Layout::new::<u64>();
    let mut sum = 0u64;
    for round in 0..rounds {
        // SAFETY: the layout is 8 bytes, not zero-sized.
        let Some(p) = NonNull::new(unsafe { alloc(layout) }) else {
            handle_alloc_error(layout)
        };
        let start = round.wrapping_mul(0x0101_0101_0101_0101) ^ t as u64;
        // SAFETY: the object is 8 bytes, 8-aligned (its layout), owned by
        // this thread.
        unsafe { p.as_ptr().cast::<u64>().write_volatile(start) };
        for j in 0..WRITES {
            // SAFETY: `j % OBJECT` is inside the object, which this thread
            // owns.
            unsafe {
                let b = p.as_ptr().add(j % OBJECT);
                b.write_volatile(b.read_volatile().wrapping_add(1));
            }
        }
        // SAFETY: as the write above.
        let got = unsafe { p.as_ptr().cast::<u64>().read_volatile() }.to_le_bytes();
        // Each byte was incremented `WRITES / OBJECT` times.
        let want: [u8; OBJECT] =
            std::array::from_fn(|i| start.to_le_bytes()[i].wrapping_add((WRITES / OBJECT) as u8));
        if got != want {
            corrupt(format_args!(
                "cache-scratch: thread {t} round {round}: object at {p:p} holds {got:?}, expected {want:?}"
            ));
        }
        sum = sum.wrapping_add(mix(u64::from_le_bytes(got)));
        // SAFETY: `p` came from `alloc(layout)` and is freed once.
        unsafe { dealloc(p.as_ptr(), layout) };
    }
    sum
}
