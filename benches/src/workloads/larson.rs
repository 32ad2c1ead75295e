//! `larson`: a server's objects, allocated by one thread and freed by
//! another (after Larson and Krishnan, "Memory allocation for long-running
//! server applications", 1998).
//!
//! A shared array of 1000 slots per thread, each an [`AtomicPtr`] to a
//! test object. Each thread first fills its own 1000 slots, then, after a
//! barrier, does its share of `size` replacements: pick a random slot of
//! the whole array, allocate a new object of 10..=1000 bytes (uniform),
//! swap it into the slot and verify and free the object that was there,
//! which another thread most likely allocated. The main thread frees what
//! is left at the end. Fixed work (the classic benchmark runs for a fixed
//! time instead).
//!
//! `ops` = objects allocated (the prefill plus `size`). The checksum sums a
//! hash of every object's header (length and tag) over the objects
//! allocated: each thread's choices come from its own seeded stream, so
//! it does not depend on which thread freed what. The sum over the objects
//! freed must equal it (an object lost or freed twice is a failure).

use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::atomic::{AtomicPtr, Ordering};

use super::common::{Rng, alloc_object, corrupt, free_object, header, mix, share};
use super::{Outcome, Params, Workload};

/// Slots per thread.
pub const SLOTS_PER_THREAD: usize = 1000;
/// Smallest object.
pub const MIN_SIZE: usize = 10;
/// Largest object.
pub const MAX_SIZE: usize = 1000;
/// Seed of the threads' streams.
const SEED: u64 = 0x1a75_0e00;

/// The workload's entry in the suite.
pub const WORKLOAD: Workload = Workload {
    name: "larson",
    default_size: 8_000_000,
    default_threads: 2,
    scaling: true,
    size_unit: "replacements (all threads together)",
    summary: "threads replace random objects of 10-1000 B in a shared array of 1000 slots per thread",
    body: run,
};

/// The workload body.
pub fn run(p: Params) -> Outcome {
    let threads = p.threads;
    let slots: Box<[AtomicPtr<u8>]> = (0..threads * SLOTS_PER_THREAD)
        .map(|_| AtomicPtr::new(std::ptr::null_mut()))
        .collect();
    let barrier = Barrier::new(threads);
    let (allocated, mut freed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (slots, barrier) = (&slots, &barrier);
                s.spawn(move || worker(t, share(p.size, threads, t), slots, barrier))
            })
            .collect();
        handles.into_iter().fold((0u64, 0u64), |(a, f), h| {
            let (ta, tf) = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            (a.wrapping_add(ta), f.wrapping_add(tf))
        })
    });
    for slot in slots.iter() {
        let Some(obj) = NonNull::new(slot.load(Ordering::Acquire)) else {
            corrupt(format_args!("larson: a slot is empty at the end"));
        };
        // SAFETY: every slot holds an object from `alloc_object` that only
        // this slot refers to; the workers have been joined.
        freed = freed.wrapping_add(mix(unsafe { free_object(obj, MAX_SIZE, None) }));
    }
    if freed != allocated {
        corrupt(format_args!(
            "larson: the objects freed are not the objects allocated (sum {freed:#x} != {allocated:#x})"
        ));
    }
    Outcome {
        ops: (threads * SLOTS_PER_THREAD) as u64 + p.size,
        checksum: allocated,
    }
}

/// Thread `t`: fills its slots, waits for the others, then does `reps`
/// replacements. Returns the hash sums of the objects it allocated and of
/// those it freed.
fn worker(t: usize, reps: u64, slots: &[AtomicPtr<u8>], barrier: &Barrier) -> (u64, u64) {
    let mut rng = Rng::new(SEED, t as u64);
    let mut tag = (t as u64) << 32;
    let (mut allocated, mut freed) = (0u64, 0u64);
    for slot in &slots[t * SLOTS_PER_THREAD..(t + 1) * SLOTS_PER_THREAD] {
        let len = rng.range(MIN_SIZE, MAX_SIZE);
        let obj = alloc_object(len, tag);
        allocated = allocated.wrapping_add(mix(header(len, tag)));
        tag += 1;
        slot.store(obj.as_ptr(), Ordering::Release);
    }
    barrier.wait();
    for _ in 0..reps {
        let i = rng.below(slots.len() as u64) as usize;
        let len = rng.range(MIN_SIZE, MAX_SIZE);
        let obj = alloc_object(len, tag);
        allocated = allocated.wrapping_add(mix(header(len, tag)));
        tag += 1;
        // AcqRel: our pattern writes are released to whoever takes the
        // object out, and the previous owner's are acquired by us.
        let old = slots[i].swap(obj.as_ptr(), Ordering::AcqRel);
        let Some(old) = NonNull::new(old) else {
            corrupt(format_args!("larson: slot {i} is empty"));
        };
        // SAFETY: the swap removed `old` from the array, so this thread is
        // its only owner; it came from `alloc_object` and was published
        // with Release by the thread that stored it.
        freed = freed.wrapping_add(mix(unsafe { free_object(old, MAX_SIZE, None) }));
    }
    (allocated, freed)
}
