//! `realloc`: growth by reallocation, big and small.
//!
//! Big: a `Vec<u64>` grows by `push` from empty to `size` MiB (`size · 2^17`
//! elements), so `Vec`'s doubling reallocates it through every power of
//! two up to that size; its sum is checked and it is dropped; three times.
//! Only one big vector is alive at a time: the peak is the last
//! reallocation's old and new block together.
//!
//! Small: 64 byte vectors, each with a target length of 64..=4096 bytes;
//! each step appends 1..=64 bytes (`extend_from_slice`) to a random one,
//! so their reallocations interleave; a vector that reaches its target is
//! checked byte by byte and dropped, and a new one takes its place. The
//! small phase appends `size` MiB in all (after each big round, a third).
//!
//! `--threads N` runs N independent copies, each with its own stream and
//! `size / N` MiB (at least 1).
//!
//! `ops` = allocations and reallocations: every change of a vector's
//! capacity (the same under every allocator, as `Vec`'s growth policy
//! decides them). The checksum sums the big vectors' sums and the hashes
//! of the small vectors' contents.

use super::common::{Rng, corrupt, mix, share};
use super::{Outcome, Params, Workload};

/// Rounds of big growth.
pub const ROUNDS: u64 = 3;
/// Small vectors growing at once.
pub const SMALL_VECS: usize = 64;
/// Smallest target length of a small vector.
pub const MIN_TARGET: usize = 64;
/// Largest target length of a small vector.
pub const MAX_TARGET: usize = 4096;
/// Longest single append.
const MAX_APPEND: usize = 64;
/// Seed of the copies' streams.
const SEED: u64 = 0x4ea1_1c00;

/// The workload's entry in the suite.
pub const WORKLOAD: Workload = Workload {
    name: "realloc",
    default_size: 256,
    default_threads: 1,
    scaling: false,
    size_unit: "MiB: the big Vec's final size (3 rounds) and the bytes appended to small ones",
    summary: "a Vec<u64> grown by push to size MiB three times, and 64 byte vectors growing to 64 B-4 KiB by interleaved appends",
    body: run,
};

/// The workload body.
pub fn run(p: Params) -> Outcome {
    let copies = p.threads;
    let mib = |c: usize| share(p.size, copies, c).max(1);
    let (ops, checksum) = if copies == 1 {
        copy(0, mib(0))
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..copies)
                .map(|c| s.spawn(move || copy(c, mib(c))))
                .collect();
            handles.into_iter().fold((0u64, 0u64), |(o, sum), h| {
                let (co, cs) = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                (o + co, sum.wrapping_add(cs))
            })
        })
    };
    Outcome { ops, checksum }
}

/// Copy `c`, growing to `mib` MiB. Returns (ops, checksum).
fn copy(c: usize, mib: u64) -> (u64, u64) {
    let mut rng = Rng::new(SEED, c as u64);
    let mut ops = 0u64;
    let mut checksum = 0u64;
    let mut small = Small::new(&mut rng);
    let small_bytes = (mib << 20) / ROUNDS;
    for round in 0..ROUNDS {
        let (o, s) = big(mib << 17, round);
        ops += o;
        checksum = checksum.wrapping_add(s);
        let (o, s) = small.append(&mut rng, small_bytes);
        ops += o;
        checksum = checksum.wrapping_add(s);
    }
    let (o, s) = small.finish();
    (ops + o, checksum.wrapping_add(s))
}

/// The value pushed at index `i` in big round `round`.
#[inline]
fn big_value(i: u64, round: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round
}

/// One big round: pushes `n` elements; returns (capacity changes, sum).
fn big(n: u64, round: u64) -> (u64, u64) {
    let mut v: Vec<u64> = Vec::new();
    let mut ops = 0u64;
    let mut cap = v.capacity();
    let mut want = 0u64;
    for i in 0..n {
        let x = big_value(i, round);
        v.push(x);
        want = want.wrapping_add(x);
        if v.capacity() != cap {
            cap = v.capacity();
            ops += 1;
        }
    }
    let got = v.iter().fold(0u64, |s, &x| s.wrapping_add(x));
    if got != want || v.len() as u64 != n {
        corrupt(format_args!(
            "realloc: big vector of round {round} sums to {got:#x}, pushed {want:#x}"
        ));
    }
    let spot = n / 2;
    if n > 0 && v[spot as usize] != big_value(spot, round) {
        corrupt(format_args!(
            "realloc: big vector of round {round}: element {spot} moved"
        ));
    }
    (ops, got)
}

/// Period of the small vectors' byte pattern (a prime, so that the
/// pattern does not line up with any power of two).
const PERIOD: usize = 251;

/// The small vectors' bytes: a vector with offset `o` (below [`PERIOD`])
/// holds `PATTERN[o..o + len]`, so appending and checking are copies and
/// compares, and the workload's own work stays small beside the
/// reallocations it measures.
static PATTERN: [u8; PERIOD + MAX_TARGET] = {
    let mut p = [0u8; PERIOD + MAX_TARGET];
    let mut i = 0;
    while i < p.len() {
        p[i] = ((i % PERIOD) as u8).wrapping_mul(97).wrapping_add(13);
        i += 1;
    }
    p
};

/// One small vector: its bytes, its target length and its pattern offset.
struct Growing {
    /// The bytes appended so far.
    bytes: Vec<u8>,
    /// The length at which it is checked and dropped.
    target: usize,
    /// Where in [`PATTERN`] its bytes start (from its tag).
    offset: usize,
    /// Its tag.
    tag: u64,
}

/// The small vectors of one copy.
struct Small {
    /// The vectors growing now.
    vecs: Vec<Growing>,
    /// Tag of the next vector.
    next_tag: u64,
}

impl Small {
    /// `SMALL_VECS` empty vectors with their targets.
    fn new(rng: &mut Rng) -> Small {
        let mut s = Small {
            vecs: Vec::with_capacity(SMALL_VECS),
            next_tag: 0,
        };
        for _ in 0..SMALL_VECS {
            let g = s.fresh(rng);
            s.vecs.push(g);
        }
        s
    }

    /// A new empty vector with a random target.
    fn fresh(&mut self, rng: &mut Rng) -> Growing {
        self.next_tag += 1;
        Growing {
            bytes: Vec::new(),
            target: rng.range(MIN_TARGET, MAX_TARGET),
            offset: (mix(self.next_tag) % PERIOD as u64) as usize,
            tag: self.next_tag,
        }
    }

    /// Appends `total` bytes in all to random vectors. Returns (capacity
    /// changes, checksum of the vectors completed).
    fn append(&mut self, rng: &mut Rng, total: u64) -> (u64, u64) {
        let (mut ops, mut sum) = (0u64, 0u64);
        let mut done = 0u64;
        while done < total {
            let i = rng.below(SMALL_VECS as u64) as usize;
            let g = &mut self.vecs[i];
            let n = rng.range(1, MAX_APPEND).min(g.target - g.bytes.len());
            let at = g.offset + g.bytes.len();
            let cap = g.bytes.capacity();
            g.bytes.extend_from_slice(&PATTERN[at..at + n]);
            ops += u64::from(g.bytes.capacity() != cap);
            done += n as u64;
            if g.bytes.len() == g.target {
                let new = self.fresh(rng);
                let g = std::mem::replace(&mut self.vecs[i], new);
                sum = sum.wrapping_add(check(&g));
            }
        }
        (ops, sum)
    }

    /// Checks and drops every vector still growing. Returns (0, checksum).
    fn finish(self) -> (u64, u64) {
        let sum = self.vecs.iter().fold(0u64, |s, g| s.wrapping_add(check(g)));
        (0, sum)
    }
}

/// Checks a small vector's bytes; returns a hash of its tag and length.
fn check(g: &Growing) -> u64 {
    let want = &PATTERN[g.offset..g.offset + g.bytes.len()];
    if g.bytes[..] != *want {
        let i = (0..want.len())
            .find(|&i| g.bytes[i] != want[i])
            .unwrap_or(0);
        corrupt(format_args!(
            "realloc: small vector {} of {} bytes differs at byte {i}",
            g.tag,
            g.bytes.len()
        ));
    }
    mix(g.tag ^ (g.bytes.len() as u64) << 40)
}
