//! `xmalloc`: producers allocate, consumers free (the shape of
//! xmalloc-test, Lever and Boreham's test of cross-thread frees).
//!
//! `--threads N` runs N producer and N consumer threads (2N in all),
//! paired: producer `i` allocates its share of `size` test objects of
//! 16..=256 bytes (uniform), in batches of 64 pointers held in a `Vec`
//! (itself allocated by the producer), and sends each batch through a
//! bounded channel to consumer `i`, which verifies and frees the objects
//! and the batch. Every object is freed by a thread other than the one
//! that allocated it.
//!
//! `ops` = objects plus batch vectors allocated. The checksum sums a hash
//! of every object's header over the objects allocated (fixed by the
//! producers' seeded streams); each consumer's sum over what it freed must
//! equal its producer's.

use std::sync::mpsc;

use super::common::{Handoff, Rng, alloc_object, corrupt, free_object, header, mix, share};
use super::{Outcome, Params, Workload};

/// Smallest object.
pub const MIN_SIZE: usize = 16;
/// Largest object.
pub const MAX_SIZE: usize = 256;
/// Objects per batch.
pub const BATCH: usize = 64;
/// Batches a channel holds before the producer waits.
const DEPTH: usize = 16;
/// Seed of the producers' streams.
const SEED: u64 = 0x0a11_0c00;

/// The workload's entry in the suite.
pub const WORKLOAD: Workload = Workload {
    name: "xmalloc",
    default_size: 6_000_000,
    default_threads: 2,
    scaling: true,
    size_unit: "objects (all producers together)",
    summary: "N producers allocate 16-256 B objects, N consumers free them (batches of 64 through channels)",
    body: run,
};

/// The workload body.
pub fn run(p: Params) -> Outcome {
    let pairs = p.threads;
    let mut checksum = 0u64;
    let mut batches = 0u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..pairs)
            .map(|i| {
                let (tx, rx) = mpsc::sync_channel::<Handoff>(DEPTH);
                let producer = s.spawn(move || produce(i, share(p.size, pairs, i), tx));
                let consumer = s.spawn(move || consume(rx));
                (producer, consumer)
            })
            .collect();
        for (i, (producer, consumer)) in handles.into_iter().enumerate() {
            let (made, n) = producer
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            let freed = consumer
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            if made != freed {
                corrupt(format_args!(
                    "xmalloc: consumer {i} freed other objects than producer {i} made ({freed:#x} != {made:#x})"
                ));
            }
            checksum = checksum.wrapping_add(made);
            batches += n;
        }
    });
    Outcome {
        ops: p.size + batches,
        checksum,
    }
}

/// Producer `i`: allocates `count` objects and sends them in batches.
/// Returns the hash sum of the objects and the number of batches.
fn produce(i: usize, count: u64, tx: mpsc::SyncSender<Handoff>) -> (u64, u64) {
    let mut rng = Rng::new(SEED, i as u64);
    let mut tag = (i as u64) << 32;
    let mut sum = 0u64;
    let mut batches = 0u64;
    let mut left = count;
    while left > 0 {
        let n = left.min(BATCH as u64) as usize;
        let mut batch = Vec::with_capacity(BATCH);
        for _ in 0..n {
            let len = rng.range(MIN_SIZE, MAX_SIZE);
            batch.push(alloc_object(len, tag));
            sum = sum.wrapping_add(mix(header(len, tag)));
            tag += 1;
        }
        left -= n as u64;
        batches += 1;
        if tx.send(Handoff(batch)).is_err() {
            corrupt(format_args!("xmalloc: consumer {i} is gone"));
        }
    }
    (sum, batches)
}

/// A consumer: verifies and frees every object it receives until its
/// producer hangs up. Returns the hash sum of the objects.
fn consume(rx: mpsc::Receiver<Handoff>) -> u64 {
    let mut sum = 0u64;
    for Handoff(batch) in rx {
        for obj in batch {
            // SAFETY: each object came from `alloc_object` in the producer
            // and is owned by the batch alone; the channel orders the
            // producer's writes before this read.
            sum = sum.wrapping_add(mix(unsafe { free_object(obj, MAX_SIZE, None) }));
        }
    }
    sum
}
