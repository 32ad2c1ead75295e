//! `churn`: thousands of short-lived threads (the life of a thread pool
//! that does not pool, or of a program that spawns a thread per request).
//!
//! `size` threads in all, spawned in waves of `--threads` (the threads
//! alive at once): the main thread spawns a wave, joins it, and spawns the
//! next. Each thread allocates 100 test objects of 16..=512 bytes
//! (uniform), verifies and frees the ones its stream picks (about half)
//! and returns the rest, in the `Vec` that held them, to the main thread,
//! which verifies and frees them after the join: frees of objects whose
//! allocating thread has exited. The allocator pays for setting up and
//! tearing down each thread's cache.
//!
//! `ops` = objects allocated (100 per thread). The checksum sums a hash of
//! every object's header (fixed by each thread's seeded stream).

use super::common::{Handoff, Rng, alloc_object, corrupt, free_object, header, mix};
use super::{Outcome, Params, Workload};

/// Objects each thread allocates.
pub const OBJECTS_PER_THREAD: usize = 100;
/// Smallest object.
pub const MIN_SIZE: usize = 16;
/// Largest object.
pub const MAX_SIZE: usize = 512;
/// Seed of the threads' streams.
const SEED: u64 = 0xc4a2_9e00;

/// The workload's entry in the suite.
pub const WORKLOAD: Workload = Workload {
    name: "churn",
    default_size: 10_000,
    default_threads: 2,
    scaling: false,
    size_unit: "threads spawned in all",
    summary: "short-lived threads in waves of N, each allocating 100 objects of 16-512 B and leaving half to the main thread",
    body: run,
};

/// The workload body.
pub fn run(p: Params) -> Outcome {
    let total = p.size;
    let mut checksum = 0u64;
    let mut next = 0u64;
    while next < total {
        let wave = (total - next).min(p.threads as u64);
        let handles: Vec<_> = (next..next + wave)
            .map(|id| {
                std::thread::Builder::new()
                    .spawn(move || life(id))
                    .unwrap_or_else(|e| {
                        corrupt(format_args!("churn: cannot spawn thread {id}: {e}"))
                    })
            })
            .collect();
        for h in handles {
            let (made, freed, Handoff(left)) =
                h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            let mut rest = 0u64;
            for obj in left {
                // SAFETY: the thread allocated the object with
                // `alloc_object` and gave it up in the `Handoff`; the join
                // orders its writes before this read.
                rest = rest.wrapping_add(mix(unsafe { free_object(obj, MAX_SIZE, None) }));
            }
            if freed.wrapping_add(rest) != made {
                corrupt(format_args!(
                    "churn: a thread's objects freed are not those it allocated"
                ));
            }
            checksum = checksum.wrapping_add(made);
        }
        next += wave;
    }
    Outcome {
        ops: total * OBJECTS_PER_THREAD as u64,
        checksum,
    }
}

/// Thread number `id`: allocates its objects, frees about half. Returns
/// the hash sum of the objects it made, that of those it freed, and the
/// rest.
fn life(id: u64) -> (u64, u64, Handoff) {
    let mut rng = Rng::new(SEED, id);
    let tag = id << 16;
    let mut objs = Vec::with_capacity(OBJECTS_PER_THREAD);
    let mut made = 0u64;
    for i in 0..OBJECTS_PER_THREAD as u64 {
        let len = rng.range(MIN_SIZE, MAX_SIZE);
        objs.push(alloc_object(len, tag + i));
        made = made.wrapping_add(mix(header(len, tag + i)));
    }
    let mut freed = 0u64;
    objs.retain(|&obj| {
        if rng.below(2) == 0 {
            return true;
        }
        // SAFETY: this thread allocated `obj` with `alloc_object`; `retain`
        // drops it from the vector, so it is freed once.
        freed = freed.wrapping_add(mix(unsafe { free_object(obj, MAX_SIZE, None) }));
        false
    });
    (made, freed, Handoff(objs))
}
