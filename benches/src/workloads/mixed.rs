//! `mixed`: a program's heap in miniature: power-law sizes from 8 bytes
//! to 1 MiB and a live set that grows and shrinks in waves.
//!
//! Sizes: an octave `k` in `0..=17` with probability 2^-(k+1) (the last
//! octave takes the tail), then a uniform size in `[8·2^k, 16·2^k)`, capped
//! at 1 MiB. Every octave brings about the same number of bytes: half the
//! objects are under 16 bytes, yet objects of 2 KiB and more carry over
//! half the bytes. The mean is about 110 bytes.
//!
//! The live set is a `Vec` of test objects. While it grows, each step
//! allocates with probability 3/4 and otherwise frees a random live object
//! (verified first); once the live bytes reach the ceiling (32 MiB) it
//! shrinks (free with probability 3/4) down to a tenth of the ceiling, and
//! grows again: about 460 000 allocations to the first peak, then about
//! 550 000 per wave (the default size runs three and a half waves, the
//! quarter size reaches the first peak and starts shrinking). The run ends
//! after `size` allocations; what is live then is freed.
//!
//! `--threads N` runs N independent copies, each with its own stream,
//! `size / N` allocations and a ceiling of 32 MiB / N (the same total).
//!
//! `ops` = objects allocated. The checksum sums a hash of every object's
//! header (its length and tag) and of the order of the frees.

use std::ptr::NonNull;

use super::common::{Rng, alloc_object, corrupt, free_object, header, mix, share};
use super::{Outcome, Params, Workload};

/// Smallest object.
pub const MIN_SIZE: usize = 8;
/// Largest object (1 MiB).
pub const MAX_SIZE: usize = 1 << 20;
/// Octaves above the first (`8 << 17` is 1 MiB).
const OCTAVES: u32 = 17;
/// Live bytes at which the live set starts shrinking, for all copies
/// together.
pub const CEILING: usize = 32 << 20;
/// Live bytes (a fraction of the ceiling: 1/10) at which it grows again.
pub const FLOOR_DIVISOR: usize = 10;
/// Seed of the copies' streams.
const SEED: u64 = 0x313e_d000;

/// The workload's entry in the suite.
pub const WORKLOAD: Workload = Workload {
    name: "mixed",
    default_size: 2_000_000,
    default_threads: 1,
    scaling: false,
    size_unit: "objects allocated (all copies together)",
    summary: "power-law sizes 8 B-1 MiB, live set in waves between 3.2 and 32 MiB; N threads = N independent copies sharing size and ceiling",
    body: run,
};

/// The workload body.
pub fn run(p: Params) -> Outcome {
    let copies = p.threads;
    let checksum = if copies == 1 {
        copy(0, p.size, CEILING)
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..copies)
                .map(|c| s.spawn(move || copy(c, share(p.size, copies, c), CEILING / copies)))
                .collect();
            handles.into_iter().fold(0u64, |sum, h| {
                sum.wrapping_add(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            })
        })
    };
    Outcome {
        ops: p.size,
        checksum,
    }
}

/// A live object and its length.
struct Live {
    /// The object.
    obj: NonNull<u8>,
    /// Its length.
    len: usize,
}

/// A size from the power law.
fn pick_size(rng: &mut Rng) -> usize {
    let k = rng.next_u64().trailing_zeros().min(OCTAVES);
    let base = MIN_SIZE << k;
    (base + rng.below(base as u64) as usize).min(MAX_SIZE)
}

/// One copy of the workload: copy number `c` (its stream), `count`
/// allocations under a live-set `ceiling` in bytes. Returns its checksum.
/// Public so that tests can run waves with a small ceiling.
pub fn copy(c: usize, count: u64, ceiling: usize) -> u64 {
    let mut rng = Rng::new(SEED, c as u64);
    let floor = ceiling / FLOOR_DIVISOR;
    let mut live: Vec<Live> = Vec::new();
    let mut live_bytes = 0usize;
    let mut growing = true;
    let mut tag = (c as u64) << 32;
    let mut sum = 0u64;
    let mut made = 0u64;
    // Verifies and frees live object `i`, folding its header and the step
    // at which it was freed into the checksum.
    let free = |live: &mut Vec<Live>, i: usize, step: u64, sum: &mut u64| -> usize {
        let Live { obj, len } = live.swap_remove(i);
        // SAFETY: `obj` came from `alloc_object`, and `swap_remove` took
        // the only reference to it out of the live set.
        let h = unsafe { free_object(obj, MAX_SIZE, Some(len)) };
        *sum = sum.wrapping_add(mix(h ^ step.rotate_left(40)));
        len
    };
    let mut step = 0u64;
    while made < count {
        if growing && live_bytes >= ceiling {
            growing = false;
        } else if !growing && live_bytes <= floor {
            growing = true;
        }
        let alloc = (rng.below(4) < 3) == growing || live.is_empty();
        if alloc {
            let len = pick_size(&mut rng);
            live.push(Live {
                obj: alloc_object(len, tag),
                len,
            });
            sum = sum.wrapping_add(mix(header(len, tag)));
            tag += 1;
            made += 1;
            live_bytes += len;
        } else {
            let i = rng.below(live.len() as u64) as usize;
            live_bytes -= free(&mut live, i, step, &mut sum);
        }
        step += 1;
    }
    while !live.is_empty() {
        let last = live.len() - 1;
        live_bytes -= free(&mut live, last, step, &mut sum);
        step += 1;
    }
    if live_bytes != 0 {
        corrupt(format_args!(
            "mixed: {live_bytes} live bytes left after freeing all"
        ));
    }
    sum
}
