//! A larson/threadtest-style stress test of `GoMalloc` as the global
//! allocator: generations of threads churn objects of mixed sizes (1 B to
//! 1 MiB, mostly small) and alignments (1 to 64 KiB), through raw
//! `alloc`/`realloc`/`dealloc` and through `Vec`/`Box`, fill every object
//! with a pattern derived from (thread, serial, size), verify the whole
//! pattern before every free, and hand objects to each other through a
//! shared exchange of slots, so that most frees of exchanged objects are
//! cross-thread and many happen after the allocating thread exited.
//! At the end the allocator's counters must account for every object: the
//! per-class allocations minus frees equal the objects still live.
//!
//! Knobs (environment): `GOMALLOC_STRESS_OPS` (operations per thread per
//! generation, default 12000), `GOMALLOC_STRESS_ROUNDS` (generations, default
//! 6), `GOMALLOC_STRESS_SECS` (keep running generations until that many
//! seconds have passed, at least the rounds asked for).
//!
//! This binary holds one test on purpose: the counters are process-wide, so
//! no other test may allocate while they are compared.

use gomalloc::GoMalloc;
use sizeclass::{MAX_SMALL_SIZE, NUM_CLASSES, PAGE_SIZE, SIZE_CLASSES};
use std::alloc::{Layout, alloc, dealloc, realloc};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

/// Slots of the exchange through which threads hand objects to each other.
const SLOTS: usize = 256;
/// Objects a thread keeps to itself at most.
const LOCAL: usize = 48;

// ---------------------------------------------------------------------------
// Patterns (`fill` and `check`: tests/common)

mod common;
use common::{check, fill};

/// The seed of an object's pattern: a mix of who made it, when, how big.
fn seed_of(tid: u64, serial: u64, size: usize) -> u64 {
    let mut x = tid.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ serial.rotate_left(29) ^ size as u64;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 27)
}

// ---------------------------------------------------------------------------
// Objects

/// The small class gomalloc serves (size, align) from, `None` for large: the
/// rule of gomalloc's crate docs.
fn small_class(size: usize, align: usize) -> Option<usize> {
    if align > PAGE_SIZE || size > MAX_SMALL_SIZE {
        return None;
    }
    // A `hardened` build serves requests under 16 bytes from the 16-byte
    // class (every object has a second word, for its double-free tag).
    let min = if cfg!(feature = "hardened") { 16 } else { 1 };
    let rounded = size.max(min).next_multiple_of(align);
    if rounded > MAX_SMALL_SIZE {
        return None;
    }
    let class = SIZE_CLASSES.class_of(rounded);
    SIZE_CLASSES
        .size_of_class(class)
        .is_multiple_of(align)
        .then_some(class)
}

/// One live object and what its pattern was made from.
enum Obj {
    /// From `std::alloc::alloc` with `Layout(size, align)`.
    Raw {
        ptr: *mut u8,
        size: usize,
        align: usize,
        tid: u64,
        serial: u64,
    },
    /// A vector of bytes, pattern over its length.
    Bytes { v: Vec<u8>, tid: u64, serial: u64 },
    /// A boxed slice of words, pattern over its bytes.
    Words {
        b: Box<[u64]>,
        tid: u64,
        serial: u64,
    },
}

// SAFETY: a `Raw` object is a heap block owned by the `Obj` alone; moving
// the owner to another thread moves the ownership (gomalloc allows frees
// from any thread).
unsafe impl Send for Obj {}

impl Obj {
    /// The layout the allocator saw for this object's block.
    fn layout(&self) -> Layout {
        match self {
            Obj::Raw { size, align, .. } => Layout::from_size_align(*size, *align).unwrap(),
            Obj::Bytes { v, .. } => Layout::array::<u8>(v.capacity()).unwrap(),
            Obj::Words { b, .. } => Layout::array::<u64>(b.len()).unwrap(),
        }
    }

    /// The small class of the block, or `None` if large.
    fn class(&self) -> Option<usize> {
        let l = self.layout();
        small_class(l.size(), l.align())
    }

    /// Checks the whole pattern.
    fn verify(&self, what: &str) {
        match self {
            &Obj::Raw {
                ptr,
                size,
                align,
                tid,
                serial,
            } => {
                assert_eq!(ptr as usize % align, 0, "{what}: misaligned raw object");
                // SAFETY: a live block of `size` bytes, filled at creation.
                unsafe { check(ptr, size, seed_of(tid, serial, size), what) };
            }
            Obj::Bytes { v, tid, serial } => {
                // SAFETY: the vector's initialised bytes.
                unsafe { check(v.as_ptr(), v.len(), seed_of(*tid, *serial, v.len()), what) };
            }
            Obj::Words { b, tid, serial } => {
                let len = b.len() * 8;
                // SAFETY: the slice's bytes.
                unsafe { check(b.as_ptr().cast(), len, seed_of(*tid, *serial, len), what) };
            }
        }
    }

    /// Verifies and frees.
    fn free(self, what: &str) {
        self.verify(what);
        if let Obj::Raw { ptr, .. } = self {
            // SAFETY: allocated with exactly this layout, not used again.
            unsafe { dealloc(ptr, self.layout()) };
        }
        // `Bytes` and `Words` free themselves on drop.
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Log-uniform in `lo..=hi`.
    fn log_between(&mut self, lo: usize, hi: usize) -> usize {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        let t = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((a + (b - a) * t).exp() as usize).clamp(lo, hi)
    }

    /// Skewed toward small: most under 1 KiB, some 1–64 KiB, a few up to
    /// 1 MiB.
    fn size(&mut self) -> usize {
        match self.below(1000) {
            0..=449 => 1 + self.below(64) as usize,
            450..=879 => self.log_between(65, 1024),
            880..=994 => self.log_between(1025, 64 << 10),
            _ => self.log_between((64 << 10) + 1, 1 << 20),
        }
    }

    fn align(&mut self) -> usize {
        match self.below(100) {
            0..=54 => 8,
            55..=96 => 1 << self.below(13), // 1 ..= 4096
            _ => [8192, 16384, 65536][self.below(3) as usize],
        }
    }
}

/// What each thread did, to show the test did what it says.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    allocs: u64,
    frees: u64,
    reallocs: u64,
    taken_from_exchange: u64,
    put_in_exchange: u64,
    large: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.allocs += o.allocs;
        self.frees += o.frees;
        self.reallocs += o.reallocs;
        self.taken_from_exchange += o.taken_from_exchange;
        self.put_in_exchange += o.put_in_exchange;
        self.large += o.large;
    }
}

static EXCHANGE: [Mutex<Option<Obj>>; SLOTS] = [const { Mutex::new(None) }; SLOTS];

fn slot(i: usize) -> std::sync::MutexGuard<'static, Option<Obj>> {
    EXCHANGE[i].lock().unwrap_or_else(|e| e.into_inner())
}

struct Worker {
    tid: u64,
    serial: u64,
    rng: Rng,
    tally: Tally,
}

impl Worker {
    fn new_obj(&mut self) -> Obj {
        self.serial += 1;
        self.tally.allocs += 1;
        let (tid, serial) = (self.tid, self.serial);
        let size = self.rng.size();
        let obj = match self.rng.below(10) {
            0 => {
                // A vector grown byte by byte (realloc through `Vec`), or
                // made at its final capacity.
                let mut v = if self.rng.below(2) == 0 {
                    Vec::with_capacity(size)
                } else {
                    Vec::new()
                };
                v.resize(size.min(4096), 0u8);
                v.resize(size, 0u8);
                // SAFETY: `size` initialised bytes.
                unsafe { fill(v.as_mut_ptr(), size, seed_of(tid, serial, size)) };
                Obj::Bytes { v, tid, serial }
            }
            1 => {
                let n = size.div_ceil(8);
                let mut b = vec![0u64; n].into_boxed_slice();
                // SAFETY: `8 * n` bytes.
                unsafe { fill(b.as_mut_ptr().cast(), n * 8, seed_of(tid, serial, n * 8)) };
                Obj::Words { b, tid, serial }
            }
            _ => {
                let align = self.rng.align();
                let l = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size.
                let ptr = unsafe { alloc(l) };
                assert!(!ptr.is_null(), "alloc({size}, {align}) returned null");
                assert_eq!(ptr as usize % align, 0, "alloc({size}, {align}) misaligned");
                // SAFETY: `size` bytes.
                unsafe { fill(ptr, size, seed_of(tid, serial, size)) };
                Obj::Raw {
                    ptr,
                    size,
                    align,
                    tid,
                    serial,
                }
            }
        };
        if obj.class().is_none() {
            self.tally.large += 1;
        }
        obj
    }

    /// Resizes an object, checking that the common prefix survived, and
    /// gives it a fresh pattern.
    fn resize(&mut self, obj: &mut Obj) {
        self.serial += 1;
        self.tally.reallocs += 1;
        let (tid, serial) = (self.tid, self.serial);
        let new_size = self.rng.size();
        match obj {
            Obj::Raw {
                ptr,
                size,
                align,
                tid: t,
                serial: s,
            } => {
                let old = Layout::from_size_align(*size, *align).unwrap();
                // SAFETY: live with layout `old`; `new_size` rounded up to
                // `align` is far below isize::MAX.
                let q = unsafe { realloc(*ptr, old, new_size) };
                assert!(!q.is_null(), "realloc({size} -> {new_size}) returned null");
                assert_eq!(q as usize % *align, 0, "realloc misaligned");
                let keep = (*size).min(new_size);
                // SAFETY: `q` holds `new_size` bytes; the first `keep` are
                // the old object's.
                unsafe {
                    check(q, keep, seed_of(*t, *s, *size), "raw realloc prefix");
                    fill(q, new_size, seed_of(tid, serial, new_size));
                }
                (*ptr, *size, *t, *s) = (q, new_size, tid, serial);
            }
            Obj::Bytes {
                v,
                tid: t,
                serial: s,
            } => {
                let old_len = v.len();
                let old_seed = seed_of(*t, *s, old_len);
                if new_size > old_len {
                    v.reserve_exact(new_size - old_len);
                    v.resize(new_size, 0);
                } else {
                    v.truncate(new_size);
                    v.shrink_to_fit();
                }
                let keep = old_len.min(new_size);
                // SAFETY: `v` holds at least `keep` initialised bytes.
                unsafe {
                    check(v.as_ptr(), keep, old_seed, "vec resize prefix");
                    fill(v.as_mut_ptr(), new_size, seed_of(tid, serial, new_size));
                }
                (*t, *s) = (tid, serial);
            }
            Obj::Words { .. } => {
                // A boxed slice cannot grow: replace it (counted as one
                // realloc, not as an alloc and a free).
                let fresh = self.new_obj();
                self.tally.allocs -= 1;
                std::mem::replace(obj, fresh).free("boxed words replaced");
            }
        }
    }

    fn free(&mut self, obj: Obj, what: &str) {
        self.tally.frees += 1;
        obj.free(what);
    }

    fn run(&mut self, ops: usize) {
        let mut local: Vec<Obj> = Vec::with_capacity(LOCAL);
        for _ in 0..ops {
            match self.rng.below(100) {
                0..=39 => {
                    if local.len() == LOCAL {
                        let i = self.rng.below(LOCAL as u64) as usize;
                        let old = local.swap_remove(i);
                        self.free(old, "local object");
                    }
                    let o = self.new_obj();
                    local.push(o);
                }
                40..=54 => {
                    if !local.is_empty() {
                        let i = self.rng.below(local.len() as u64) as usize;
                        let old = local.swap_remove(i);
                        self.free(old, "local object");
                    }
                }
                55..=64 => {
                    if !local.is_empty() {
                        let i = self.rng.below(local.len() as u64) as usize;
                        let mut o = local.swap_remove(i);
                        self.resize(&mut o);
                        local.push(o);
                    }
                }
                65..=69 => {
                    if let Some(o) = local.last() {
                        o.verify("local object");
                    }
                }
                _ => {
                    // Swap one of ours (or a new one) into a random slot;
                    // whatever was there is verified and freed here, by a
                    // thread that (most likely) did not allocate it.
                    let give = match local.pop() {
                        Some(o) => o,
                        None => self.new_obj(),
                    };
                    self.tally.put_in_exchange += 1;
                    let i = self.rng.below(SLOTS as u64) as usize;
                    let taken = slot(i).replace(give);
                    if let Some(t) = taken {
                        self.tally.taken_from_exchange += 1;
                        self.free(t, "object from the exchange");
                    }
                }
            }
        }
        // Leave some objects in empty slots for the next generation; free
        // the rest.
        while let Some(o) = local.pop() {
            let i = self.rng.below(SLOTS as u64) as usize;
            let mut s = slot(i);
            if s.is_none() && self.rng.below(2) == 0 {
                self.tally.put_in_exchange += 1;
                *s = Some(o);
            } else {
                drop(s);
                self.free(o, "object at thread exit");
            }
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Per class (index 0: large), objects now in the exchange.
fn exchange_census() -> [u64; NUM_CLASSES] {
    let mut n = [0u64; NUM_CLASSES];
    for i in 0..SLOTS {
        if let Some(o) = slot(i).as_ref() {
            n[o.class().unwrap_or(0)] += 1;
        }
    }
    n
}

/// Per class, allocations minus frees ever (index 0: large objects).
fn live_by_class(s: &gomalloc::Stats) -> [i64; NUM_CLASSES] {
    let mut n = [0i64; NUM_CLASSES];
    for (c, cs) in s.by_size.iter().enumerate().skip(1) {
        n[c] = cs.allocs as i64 - cs.frees as i64;
    }
    n[0] = s.large_allocs as i64 - s.large_frees as i64;
    n
}

/// A snapshot taken while no other thread allocates or frees: two snapshots
/// 20 ms apart that agree. The test harness's main thread allocates its
/// bookkeeping for the test just after starting it; that must not fall
/// between the snapshots the test compares.
fn quiet_stats() -> gomalloc::Stats {
    let key = |s: &gomalloc::Stats| {
        (
            s.small_allocs(),
            s.small_frees(),
            s.large_allocs,
            s.large_frees,
        )
    };
    let mut last = gomalloc::stats();
    for _ in 0..500 {
        std::thread::sleep(Duration::from_millis(20));
        let now = gomalloc::stats();
        if key(&now) == key(&last) {
            return now;
        }
        last = now;
    }
    panic!("the process never stopped allocating");
}

#[test]
fn thread_generations_churn_mixed_sizes_and_exchange_objects() {
    let ops = env_usize("GOMALLOC_STRESS_OPS", 12_000);
    let rounds = env_usize("GOMALLOC_STRESS_ROUNDS", 6);
    let secs = env_usize("GOMALLOC_STRESS_SECS", 0);

    // Warm-up: the first thread spawn initialises what std keeps for the
    // life of the process; none of it may fall inside the comparison.
    std::thread::spawn(|| ()).join().unwrap();

    let start = Instant::now();
    let before = quiet_stats();
    let mut total = Tally::default();
    let mut round = 0;
    while round < rounds || start.elapsed() < Duration::from_secs(secs as u64) {
        let nthreads = if round % 2 == 0 { 4 } else { 8 };
        let handles: Vec<_> = (0..nthreads)
            .map(|i| {
                let tid = (round * 100 + i) as u64;
                std::thread::spawn(move || {
                    let mut w = Worker {
                        tid,
                        serial: 0,
                        rng: Rng(seed_of(tid, 0xC0FFEE, 1) | 1),
                        tally: Tally::default(),
                    };
                    w.run(ops);
                    w.tally
                })
            })
            .collect();
        for h in handles {
            total.add(h.join().expect("a worker panicked"));
        }
        round += 1;
    }

    // Every thread has exited; what is live is what sits in the exchange.
    let census = exchange_census();
    let mid = quiet_stats();
    let (b, m) = (live_by_class(&before), live_by_class(&mid));
    let off: Vec<(usize, i64)> = (0..NUM_CLASSES)
        .map(|c| (c, m[c] - b[c] - census[c] as i64))
        .filter(|&(_, d)| d != 0)
        .collect();
    assert!(
        off.is_empty(),
        "(class, live by the counters - live in the exchange): {off:?}"
    );
    for c in 0..NUM_CLASSES {
        assert_eq!(
            m[c] - b[c],
            census[c] as i64,
            "class {c} (size {}): allocations minus frees do not match the {} live objects \
             in the exchange",
            SIZE_CLASSES.size_of_class(c),
            census[c]
        );
    }
    let live: u64 = census.iter().sum();
    assert!(
        live > 0,
        "the exchange should hold objects across generations"
    );

    // Free what the last generation left, on this thread (cross-thread).
    for i in 0..SLOTS {
        let o = slot(i).take();
        if let Some(o) = o {
            total.frees += 1;
            o.free("object left in the exchange");
        }
    }
    let after = quiet_stats();
    let a = live_by_class(&after);
    for c in 0..NUM_CLASSES {
        assert_eq!(
            a[c] - b[c],
            0,
            "class {c}: allocations minus frees not back to where they started"
        );
    }
    assert_eq!(
        after.small_allocs() - after.small_frees(),
        before.small_allocs() - before.small_frees()
    );
    assert_eq!(after.heap.mapped, after.heap.in_use + after.heap.free);
    assert!(after.heap.released <= after.heap.free);

    // The workload did what it says.
    assert_eq!(total.allocs, total.frees, "the test lost track of objects");
    assert!(total.allocs as usize >= rounds * 4 * ops / 4);
    assert!(total.taken_from_exchange > 0 && total.put_in_exchange > 0);
    assert!(total.reallocs > 0 && total.large > 0);
    assert!(
        (after.small_allocs() - before.small_allocs()) > total.allocs / 2,
        "the allocator saw fewer small objects than the test made"
    );
    // Printed last: captured output is a buffer that stays allocated, which
    // the comparisons above must not see.
    eprintln!(
        "{round} generations of {ops} operations per thread in {:?}: {total:?}",
        start.elapsed()
    );
}
