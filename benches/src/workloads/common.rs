//! What every workload shares: the seeded generator, the hash that
//! checksums are sums of, the self-describing test objects (allocated with
//! a pattern, verified right before they are freed) and the one way a
//! verification failure ends the process.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;

/// Alignment of every test object.
pub const ALIGN: usize = 8;
/// Smallest test object: the header word alone.
pub const MIN_OBJECT: usize = 8;
/// Bits of the header that hold the object's length.
const LEN_BITS: u32 = 21;
/// Largest test object (2 MiB − 1: the length must fit in the header's 21
/// low bits).
pub const MAX_OBJECT: usize = (1 << LEN_BITS) - 1;
/// Largest tag (the header's upper 43 bits).
pub const MAX_TAG: u64 = (1 << (64 - LEN_BITS)) - 1;
/// Objects up to this length get every byte written; longer ones get
/// their first and last words and one word per 4 KiB page.
pub const SMALL_OBJECT: usize = 64;
/// Stride of the words written into large objects (one per page, so the
/// memory is really touched as a program touches what it allocates).
const PAGE: usize = 4096;

/// The 64-bit finaliser of SplitMix64 (Stafford's "Mix13"): a bijection
/// that spreads every input bit over the output. Checksums are wrapping
/// sums of `mix` of deterministic quantities, so they do not depend on the
/// order in which threads contribute.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// SplitMix64: a small, fast generator, good enough to pick sizes and
/// slots. Each thread of a workload gets its own stream from
/// [`Rng::new`], so its choices do not depend on the other threads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The stream `stream` (usually the thread index) of the workload
    /// seeded with `seed` (a constant per workload).
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng(mix(seed ^ mix(stream.wrapping_add(0x9e37_79b9_7f4a_7c15))))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A number in `0..n` (`n > 0`; multiply-shift, the bias is far below
    /// what a benchmark can see).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }
}

/// Work item `index` of `total` split over `parts`: how many of the
/// `total` the part `index` does (the first `total % parts` parts do one
/// more).
pub fn share(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts as u64;
    total / parts + u64::from((index as u64) < total % parts)
}

/// Reports a verification failure on stderr and ends the process with exit
/// status 1 (from any thread; nothing is unwound).
#[cold]
#[inline(never)]
pub fn corrupt(what: std::fmt::Arguments<'_>) -> ! {
    eprintln!("verification failed: {what}");
    std::process::exit(1)
}

/// The header word of an object: its length in the low 21 bits, its tag
/// above.
#[inline]
pub fn header(len: usize, tag: u64) -> u64 {
    debug_assert!((MIN_OBJECT..=MAX_OBJECT).contains(&len) && tag <= MAX_TAG);
    (tag << LEN_BITS) | len as u64
}

/// The length recorded in a header word.
#[inline]
pub fn header_len(header: u64) -> usize {
    (header & ((1 << LEN_BITS) - 1)) as usize
}

/// Allocates a test object of `len` bytes (`MIN_OBJECT..=MAX_OBJECT`,
/// alignment [`ALIGN`]) through the global allocator and writes its
/// pattern, derived from `tag` (at most [`MAX_TAG`]):
///
/// - bytes 0..8: the header word, `tag << 21 | len`, so that whoever frees
///   the object learns its length and tag from the object itself;
/// - objects of at most [`SMALL_OBJECT`] bytes: every further byte, derived
///   from `mix(header)`;
/// - longer ones: the last 8 bytes and one word at every 4 KiB offset.
///
/// Free it with [`free_object`]. Aborts through
/// [`handle_alloc_error`] when the allocator returns null.
#[inline]
pub fn alloc_object(len: usize, tag: u64) -> NonNull<u8> {
    let layout = object_layout(len);
    // SAFETY: `len >= MIN_OBJECT > 0`, so the layout is not zero-sized.
    let Some(p) = NonNull::new(unsafe { alloc(layout) }) else {
        handle_alloc_error(layout)
    };
    // SAFETY: `p` is a fresh allocation of `len` bytes, aligned to 8.
    unsafe { write_pattern(p, len, header(len, tag)) };
    p
}

/// Verifies a test object made by [`alloc_object`] and frees it; returns
/// its header word (length and tag). `max_len` is the largest length the
/// caller's workload allocates (a header claiming more is corruption and
/// is not followed); `expect_len`, when the caller knows the length,
/// must match the header. A mismatch ends the process ([`corrupt`]).
///
/// # Safety
///
/// `p` was returned by [`alloc_object`] and not freed since, and no other
/// thread accesses the object (any thread may free it once the writes of
/// the allocating thread happen-before this call).
#[inline]
pub unsafe fn free_object(p: NonNull<u8>, max_len: usize, expect_len: Option<usize>) -> u64 {
    // SAFETY: every object is at least 8 bytes and 8-aligned (caller).
    let h = unsafe { p.cast::<u64>().read() };
    let len = header_len(h);
    if len < MIN_OBJECT || len > max_len || expect_len.is_some_and(|e| e != len) {
        corrupt(format_args!(
            "object at {p:p}: header {h:#018x} has length {len} (at most {max_len}, expected {expect_len:?})"
        ));
    }
    // SAFETY: `p` is a live object of `len` bytes (caller; the length came
    // from its header and is within what the workload allocates).
    unsafe {
        check_pattern(p, len, h);
        dealloc(p.as_ptr(), object_layout(len));
    }
    h
}

/// The layout of a test object of `len` bytes.
#[inline]
pub fn object_layout(len: usize) -> Layout {
    debug_assert!((MIN_OBJECT..=MAX_OBJECT).contains(&len));
    // A length below 2 MiB with alignment 8 never overflows `isize`.
    Layout::from_size_align(len, ALIGN).unwrap_or_else(|_| unreachable!())
}

/// The value of the small-object word at index `k >= 1`.
#[inline]
fn small_word(m: u64, k: usize) -> u64 {
    m.wrapping_add(k as u64)
}

/// The value of the small-object byte at offset `i` past the last whole word.
#[inline]
fn small_byte(m: u64, i: usize) -> u8 {
    (m >> (8 * (i % 8))) as u8
}

/// The value of the large-object word at `offset` (a multiple of 4 KiB).
#[inline]
fn page_word(m: u64, offset: usize) -> u64 {
    m ^ offset as u64
}

/// The value of a large object's last 8 bytes.
#[inline]
fn tail_word(m: u64) -> u64 {
    m.rotate_left(17)
}

/// Writes the pattern of [`alloc_object`].
///
/// # Safety
///
/// `p` is valid for writes of `len >= 8` bytes and 8-aligned.
#[inline]
unsafe fn write_pattern(p: NonNull<u8>, len: usize, h: u64) {
    let m = mix(h);
    let p = p.as_ptr();
    // SAFETY: (all the writes below) every offset written is below `len`; the
    // word offsets are multiples of 8 except the tail, written unaligned.
    unsafe {
        p.cast::<u64>().write(h);
        if len <= SMALL_OBJECT {
            let words = len / 8;
            for k in 1..words {
                p.add(8 * k).cast::<u64>().write(small_word(m, k));
            }
            for i in 8 * words..len {
                p.add(i).write(small_byte(m, i));
            }
        } else {
            let mut off = PAGE;
            while off + 8 <= len - 8 {
                p.add(off).cast::<u64>().write(page_word(m, off));
                off += PAGE;
            }
            p.add(len - 8).cast::<u64>().write_unaligned(tail_word(m));
        }
    }
}

/// Checks the pattern of [`alloc_object`] (the header was read already).
///
/// # Safety
///
/// `p` is valid for reads of `len >= 8` bytes and 8-aligned.
#[inline]
unsafe fn check_pattern(p: NonNull<u8>, len: usize, h: u64) {
    let m = mix(h);
    let base = p.as_ptr();
    let mut bad = None;
    // SAFETY: (all the reads below) the same offsets as `write_pattern`.
    unsafe {
        if len <= SMALL_OBJECT {
            let words = len / 8;
            for k in 1..words {
                if base.add(8 * k).cast::<u64>().read() != small_word(m, k) {
                    bad = Some(8 * k);
                }
            }
            for i in 8 * words..len {
                if base.add(i).read() != small_byte(m, i) {
                    bad = Some(i);
                }
            }
        } else {
            let mut off = PAGE;
            while off + 8 <= len - 8 {
                if base.add(off).cast::<u64>().read() != page_word(m, off) {
                    bad = Some(off);
                }
                off += PAGE;
            }
            if base.add(len - 8).cast::<u64>().read_unaligned() != tail_word(m) {
                bad = Some(len - 8);
            }
        }
    }
    if let Some(off) = bad {
        corrupt(format_args!(
            "object at {p:p} (header {h:#018x}, {len} bytes): pattern overwritten at offset {off}"
        ));
    }
}

/// A batch of test objects (or other raw pointers) that moves between
/// threads. Raw pointers are not `Send`; the objects a `Handoff` holds are
/// owned by whoever holds the `Handoff`.
pub struct Handoff(pub Vec<NonNull<u8>>);

// SAFETY: the objects behind the pointers are owned by the `Handoff` alone
// (no other thread keeps a pointer to them), so moving the `Handoff` moves
// that ownership; the allocators compared are all thread-safe, so freeing
// on another thread is allowed.
unsafe impl Send for Handoff {}

/// One test object (or other raw pointer) that moves to another thread,
/// like [`Handoff`] but without a `Vec` around it.
pub struct Owned(pub NonNull<u8>);

// SAFETY: as for `Handoff`: the object is owned by the `Owned` alone.
unsafe impl Send for Owned {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_every_shape_round_trip() {
        for len in (8..200).chain([4095, 4096, 4097, 8200, 65536, MAX_OBJECT]) {
            let p = alloc_object(len, 12345);
            // SAFETY: `p` was just allocated and is freed once.
            let h = unsafe { free_object(p, MAX_OBJECT, Some(len)) };
            assert_eq!(h, header(len, 12345));
            assert_eq!(header_len(h), len);
        }
    }

    #[test]
    fn share_splits_exactly() {
        for total in [0, 1, 7, 1000, 1001] {
            for parts in 1..10 {
                let sum: u64 = (0..parts).map(|i| share(total, parts, i)).sum();
                assert_eq!(sum, total);
            }
        }
    }

    #[test]
    fn range_stays_in_bounds() {
        let mut r = Rng::new(1, 2);
        for _ in 0..10_000 {
            let x = r.range(10, 1000);
            assert!((10..=1000).contains(&x));
        }
    }
}
