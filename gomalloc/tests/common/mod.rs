//! Object patterns shared by the integration tests: byte `i` of an object
//! filled with `seed` depends on (seed, i) only, so a prefix of a pattern
//! is the pattern of the prefix (what `realloc` must keep).

/// Word `j` of the pattern of `seed`.
#[inline]
pub fn pat_word(seed: u64, j: usize) -> u64 {
    let mut x = seed ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// Fills `len` bytes at `p` with the pattern of `seed`.
///
/// # Safety
///
/// `p..p+len` is writable.
pub unsafe fn fill(p: *mut u8, len: usize, seed: u64) {
    let words = len / 8;
    for j in 0..words {
        // SAFETY: in bounds (caller); unaligned writes are allowed.
        unsafe {
            p.add(j * 8)
                .cast::<u64>()
                .write_unaligned(pat_word(seed, j))
        };
    }
    let tail = pat_word(seed, words).to_le_bytes();
    for (k, &b) in tail.iter().enumerate().take(len % 8) {
        // SAFETY: in bounds (caller).
        unsafe { p.add(words * 8 + k).write(b) };
    }
}

/// Checks the pattern of `seed` over `len` bytes at `p`; panics with
/// `what`, the object and the first corrupted word or byte.
///
/// # Safety
///
/// `p..p+len` is readable and initialised.
pub unsafe fn check(p: *const u8, len: usize, seed: u64, what: &str) {
    let words = len / 8;
    for j in 0..words {
        // SAFETY: in bounds (caller).
        let w = unsafe { p.add(j * 8).cast::<u64>().read_unaligned() };
        if w != pat_word(seed, j) {
            panic!(
                "{what}: {len}-byte object at {p:p}: word {j} is {w:#018x}, want {:#018x}",
                pat_word(seed, j)
            );
        }
    }
    let tail = pat_word(seed, words).to_le_bytes();
    for (k, &b) in tail.iter().enumerate().take(len % 8) {
        // SAFETY: in bounds (caller).
        let got = unsafe { p.add(words * 8 + k).read() };
        assert_eq!(
            got,
            b,
            "{what}: {len}-byte object at {p:p}: byte {}",
            words * 8 + k
        );
    }
}
