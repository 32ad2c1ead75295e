//! The generator: Go's `mksizeclasses` algorithm (as of Go 1.9.2) as a
//! `const fn`, plus the lookup tables and division magics derived from its
//! classes.

use crate::table::{
    LARGE_LOOKUP_LEN, LARGE_SIZE_DIV, MAX_CLASSES, SMALL_LOOKUP_LEN, SMALL_SIZE_DIV, SMALL_SIZE_MAX,
};
use crate::{ParamError, Params, SizeClasses};

impl SizeClasses {
    /// Generates the table for `params`. A `const fn`: a `static` built from
    /// it costs nothing at run time.
    ///
    /// # Algorithm
    ///
    /// 1. Class 0 is a dummy standing for large objects.
    /// 2. Candidate sizes run from 8 to `max_small` in steps of `align`,
    ///    which starts at 8 and is raised at powers of two: to 256 from 2048,
    ///    to `size / 8` from 128, to 16 from `min_align16`.
    /// 3. Each candidate gets the fewest pages whose tail
    ///    (`span_bytes % size`) is within the waste bound.
    /// 4. A candidate with the same pages per span and the same objects per
    ///    span as the previous class replaces that class's size (one class
    ///    instead of two that differ only in waste); otherwise it becomes a
    ///    new class.
    /// 5. Each class's size is then raised to the largest multiple of 128
    ///    that still fits the same number of objects in its span, capped
    ///    below the next class's size and, for the last class, at
    ///    `max_small` (Go has no cap; its parameters never need one, other
    ///    page sizes do).
    /// 6. Objects per span, and each class's 64-bit reciprocal for
    ///    [`object_index`](SizeClasses::object_index).
    ///
    /// With [`Params::GO_1_9_2`] steps 1–5 give Go 1.9.2's table bit for bit.
    ///
    /// # Errors
    ///
    /// A parameter out of range (see [`Params::validate`]), or
    /// [`ParamError::TooManyClasses`] when the parameters produce more than
    /// [`MAX_CLASSES`] classes.
    ///
    /// # Panics
    ///
    /// Only if an internal invariant is broken (a bug in the generator); in a
    /// `const` or `static` initialiser that is a compile error.
    pub const fn new(params: Params) -> Result<SizeClasses, ParamError> {
        if let Err(e) = params.validate() {
            return Err(e);
        }
        let mut t = SizeClasses {
            params,
            len: 1,
            size: [0; MAX_CLASSES],
            pages: [0; MAX_CLASSES],
            objects: [0; MAX_CLASSES],
            magic: [0; MAX_CLASSES],
            small: [0; SMALL_LOOKUP_LEN],
            large: [0; LARGE_LOOKUP_LEN],
        };
        if let Err(e) = make_classes(&mut t) {
            return Err(e);
        }
        raise_sizes(&mut t);
        check_sizes(&t);
        fill_objects_and_magic(&mut t);
        fill_lookup(&mut t);
        Ok(t)
    }
}

/// Steps 2–4: candidate sizes, pages per span, merging. Fills `size`,
/// `pages` and `len`.
const fn make_classes(t: &mut SizeClasses) -> Result<(), ParamError> {
    let page = t.params.page_size as u64;
    let max_small = t.params.max_small as u64;
    let min_align16 = t.params.min_align16 as u64;
    let num = t.params.max_waste.num() as u64;
    let den = t.params.max_waste.den() as u64;
    let min_alloc = page * t.params.min_span_pages as u64;
    let min_objects = t.params.min_objects as u64;

    let mut align = 8u64;
    let mut size = align;
    while size <= max_small {
        if size.is_power_of_two() {
            if size >= 2048 {
                align = 256;
            } else if size >= 128 {
                align = size / 8;
            } else if size >= min_align16 {
                align = 16;
            }
        }
        assert!(align.is_power_of_two());

        // Terminates: at the latest when alloc is a multiple of size, i.e.
        // after size / gcd(size, page) pages. Sizes above 2048 are multiples
        // of 256 and below it `align * k` with k < 16, so that is at most
        // 1024 pages of at most 1 MiB: alloc * num < 2^30 * 2^32 fits u64.
        // (With `min_span_pages` and `min_objects` at most 64, the first
        // loop adds at most 64 × 32 KiB.)
        let mut alloc = min_alloc;
        while alloc / size < min_objects {
            alloc += page;
        }
        while alloc % size > alloc * num / den {
            alloc += page;
        }
        let npages = alloc / page;

        let last = t.len - 1;
        if last >= 1
            && t.pages[last] as u64 == npages
            && alloc / t.size[last] as u64 == alloc / size
        {
            t.size[last] = size as u32;
        } else {
            if t.len == MAX_CLASSES {
                return Err(ParamError::TooManyClasses { limit: MAX_CLASSES });
            }
            t.size[t.len] = size as u32;
            t.pages[t.len] = npages as u32;
            t.len += 1;
        }
        size += align;
    }
    Ok(())
}

/// Step 5: raise each size to the largest multiple of 128 with the same
/// object count, but keep it below the next class's (raised) size, and the
/// last class at most `max_small`.
///
/// Go's example: 8448 bytes needs 7 pages for 6 objects; 9472 is also 6
/// objects in 7 pages, so the class holds 9472-byte objects.
///
/// The cap is not in Go, whose parameters never reach it. Others do: with
/// 4 KiB pages, 1408 bytes takes 3 pages for 8 objects, and 12288 / 8 = 1536
/// is exactly the next class (5 objects in 2 pages); raising it would give
/// two classes of one size.
const fn raise_sizes(t: &mut SizeClasses) {
    let page = t.params.page_size as u64;
    let round = !(LARGE_SIZE_DIV as u64 - 1);
    // From the last class down, so the cap is the next class's final size.
    let mut limit = t.params.max_small as u64;
    let mut c = t.len - 1;
    while c >= 1 {
        let span = t.pages[c] as u64 * page;
        let size = t.size[c] as u64;
        let raised = (span / (span / size)) & round;
        let cap = limit & round;
        let raised = if raised < cap { raised } else { cap };
        if raised > size {
            t.size[c] = raised as u32;
        }
        limit = t.size[c] as u64 - 1;
        c -= 1;
    }
}

/// Step 6, first half: the size invariants the lookup tables rely on.
const fn check_sizes(t: &SizeClasses) {
    let mut c = 1;
    while c < t.len {
        let size = t.size[c] as usize;
        // By construction: candidates are multiples of 8, and of 128 above
        // 1024; raised sizes are multiples of 128.
        assert!(size.is_multiple_of(SMALL_SIZE_DIV));
        assert!(size <= SMALL_SIZE_MAX || size.is_multiple_of(LARGE_SIZE_DIV));
        // Candidates increase, merging keeps the larger size, and raising
        // stays below the next class.
        assert!(c + 1 == t.len || t.size[c + 1] as usize > size);
        c += 1;
    }
    // Params::validate puts max_small on the candidate grid, so the last
    // candidate is max_small; merging keeps the larger size and raising is
    // capped at max_small.
    assert!(t.len >= 2 && t.size[t.len - 1] as usize == t.params.max_small);
}

/// Step 6, second half: objects per span and the division magic of each
/// class.
const fn fill_objects_and_magic(t: &mut SizeClasses) {
    let page = t.params.page_size as u64;
    let mut c = 1;
    while c < t.len {
        let span = t.pages[c] as u64 * page;
        let size = t.size[c] as u64;
        t.objects[c] = (span / size) as u32;
        // Spans are at most 1024 pages of at most 1 MiB and sizes at most
        // 256 KiB, so the 64-bit reciprocal is exact (see `reciprocal`);
        // checked anyway.
        t.magic[c] = match reciprocal(size, span, 64) {
            Some(m) => m as u64,
            None => panic!("64-bit reciprocal inexact"),
        };
        c += 1;
    }
}

/// The reciprocal `m = ceil(2^shift / d)` if `(n * m) >> shift == n / d`
/// for every `n < span`, else `None`. Requires `1 <= d <= span <= 2^32` and
/// `shift <= 64`.
///
/// # Why two checks suffice
///
/// Let `e = m*d - 2^shift`, so `0 <= e < d`, and write `n = q*d + r` with
/// `0 <= r < d`. Then `n*m / 2^shift = q + r/d + n*e / (d * 2^shift)`,
/// which is at least `q`, and its floor is exactly `q` iff
///
/// ```text
/// g(q, r) = r * 2^shift + (q*d + r) * e  <  d * 2^shift.
/// ```
///
/// `g` grows with `q` and with `r`. Over all `n < span` its maximum is
/// therefore at one of two points: the end of the last complete run of `d`
/// (`r = d - 1`, the largest such `n` being `(span / d) * d - 1`) or the
/// last offset `span - 1` (largest `q`, largest `r` in the last, possibly
/// partial, run). The reciprocal is exact for the whole span iff it is exact
/// at both, which is what this checks; the unit tests confirm it against
/// brute force on both sides of the boundary, with `shift = 32` where the
/// boundary is within reach.
///
/// With `shift = 64`, `n*e < 2^32 * d <= 2^64` whenever `d <= 2^32`, so
/// `g < (d - 1) * 2^64 + 2^64`: exact for every span a table can have. (A
/// 32-bit reciprocal, Go's `divMagic`, is not: with 8 KiB pages and a 1/32
/// waste bound, 25600-byte objects in 25-page spans already defeat it.)
pub(crate) const fn reciprocal(d: u64, span: u64, shift: u32) -> Option<u128> {
    assert!(d >= 1 && d <= span && span <= 1 << 32 && shift <= 64);
    const fn exact_at(n: u64, d: u64, m: u128, shift: u32) -> bool {
        (n as u128 * m) >> shift == (n / d) as u128
    }
    let m = (1u128 << shift).div_ceil(d as u128);
    if exact_at(span - 1, d, m, shift) && exact_at((span / d) * d - 1, d, m, shift) {
        Some(m)
    } else {
        None
    }
}

/// Fills the two byte tables from the final class sizes.
const fn fill_lookup(t: &mut SizeClasses) {
    let max_small = t.params.max_small;
    // Class sizes increase, so one cursor walks them once per table.
    let mut c = 1;
    let mut i = 0;
    while i < SMALL_LOOKUP_LEN {
        let size = i * SMALL_SIZE_DIV; // 0 maps to the smallest class
        while (t.size[c] as usize) < size {
            c += 1;
        }
        t.small[i] = c as u8;
        i += 1;
    }
    let mut i = 0;
    while i < LARGE_LOOKUP_LEN {
        let size = SMALL_SIZE_MAX + i * LARGE_SIZE_DIV;
        if size > max_small {
            break; // the rest stays 0: large objects
        }
        while (t.size[c] as usize) < size {
            c += 1;
        }
        t.large[i] = c as u8;
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::{MAX_SMALL_SIZE, NUM_CLASSES, PAGE_SIZE, SIZE_CLASSES, WasteBound};

    /// Go 1.9.2's `runtime/sizeclasses.go`, as quoted by the seed document
    /// `seeds/003_*.txt`.
    const GO_CLASS_TO_SIZE: [usize; 67] = [
        0, 8, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320,
        352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792,
        2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472,
        9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264,
        28672, 32768,
    ];
    const GO_CLASS_TO_ALLOCNPAGES: [usize; 67] = [
        0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 2, 1, 2, 1, 2, 1, 3, 2, 3, 1, 3, 2, 3, 4, 5, 6, 1, 7, 6, 5, 4, 3, 5, 7, 2, 9,
        7, 5, 8, 3, 10, 7, 4,
    ];

    /// Evaluated at compile time: a regression here fails the build of the
    /// tests, not only the test run.
    const GO_TABLE: SizeClasses = match SizeClasses::new(Params::GO_1_9_2) {
        Ok(t) => t,
        Err(_) => panic!("Go 1.9.2 parameters rejected"),
    };

    #[test]
    fn reproduces_go_1_9_2() {
        let t = &GO_TABLE;
        assert_eq!(t.len(), 67);
        let sizes: Vec<usize> = (0..t.len()).map(|c| t.size_of_class(c)).collect();
        let pages: Vec<usize> = (0..t.len()).map(|c| t.pages_of_class(c)).collect();
        assert_eq!(sizes, GO_CLASS_TO_SIZE);
        assert_eq!(pages, GO_CLASS_TO_ALLOCNPAGES);
    }

    #[test]
    fn gomalloc_table() {
        let t = &SIZE_CLASSES;
        assert_eq!(*t.params(), Params::GOMALLOC);
        assert_eq!(
            (t.params().page_size, t.params().max_small),
            (PAGE_SIZE, MAX_SMALL_SIZE)
        );
        assert_eq!(t.len(), NUM_CLASSES);
        let sizes: Vec<usize> = (0..t.len()).map(|c| t.size_of_class(c)).collect();
        std::println!(
            "gomalloc: {} classes (class 0 included): {sizes:?}",
            t.len()
        );
        // 8-byte steps to 64, then 16-byte steps to 128 as in Go.
        assert_eq!(sizes[..12], [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112]);
        // Every span is at least 64 KiB and holds at least 8 objects.
        for c in 1..t.len() {
            assert!(t.pages_of_class(c) >= 8, "class {c}");
            assert!(t.objects_of_class(c) >= 8, "class {c}");
        }
        assert_eq!(
            (
                t.pages_of_class(t.len() - 1),
                t.objects_of_class(t.len() - 1)
            ),
            (32, 8)
        );
        assert_eq!(NUM_CLASSES, 85);
    }

    /// With Go's minimums (one page, one object) the gomalloc parameters
    /// give Go's classes from 80 bytes on: the minimums are the only other
    /// difference.
    #[test]
    fn gomalloc_minimums_are_the_only_other_difference() {
        let t = SizeClasses::new(Params {
            min_span_pages: 1,
            min_objects: 1,
            ..Params::GOMALLOC
        })
        .unwrap();
        let sizes: Vec<usize> = (0..t.len()).map(|c| t.size_of_class(c)).collect();
        assert_eq!(sizes[12..], GO_CLASS_TO_SIZE[9..]);
    }

    #[test]
    fn min_align16_moves_the_16_byte_step() {
        let sizes = |a: usize| {
            let t = SizeClasses::new(Params {
                min_align16: a,
                ..Params::GOMALLOC
            })
            .unwrap();
            (1..9).map(|c| t.size_of_class(c)).collect::<Vec<_>>()
        };
        assert_eq!(sizes(16), [8, 16, 32, 48, 64, 80, 96, 112]);
        assert_eq!(sizes(32), [8, 16, 24, 32, 48, 64, 80, 96]);
        assert_eq!(sizes(64), [8, 16, 24, 32, 40, 48, 56, 64]);
        assert_eq!(sizes(128), [8, 16, 24, 32, 40, 48, 56, 64]);
        let t = SizeClasses::new(Params {
            min_align16: 128,
            ..Params::GOMALLOC
        })
        .unwrap();
        assert_eq!(t.size_of_class(16), 128);
        assert_eq!(t.size_of_class(17), 144);
    }

    #[test]
    fn invalid_params_are_reported() {
        let p = Params {
            page_size: 3000,
            ..Params::GOMALLOC
        };
        assert_eq!(SizeClasses::new(p), Err(ParamError::PageSize(3000)));
        let p = Params {
            max_small: 1000,
            ..Params::GOMALLOC
        };
        assert_eq!(SizeClasses::new(p), Err(ParamError::MaxSmall(1000)));
    }

    #[test]
    fn too_many_classes() {
        // A tiny waste bound stops merging: every candidate is its own class.
        let p = Params {
            max_small: 256 * 1024,
            max_waste: WasteBound::from_ppm(1).unwrap(),
            ..Params::GOMALLOC
        };
        assert_eq!(
            SizeClasses::new(p),
            Err(ParamError::TooManyClasses { limit: MAX_CLASSES })
        );
    }

    /// Parameters whose spans defeat a 32-bit reciprocal (Go's) still give
    /// exact object indices; the largest spans are checked at every object
    /// boundary and the offsets either side (every offset of smaller tables
    /// is checked in `table.rs`).
    #[test]
    fn large_spans_divide_exactly() {
        let cases = [
            Params {
                page_size: 1 << 20,
                max_small: 256 * 1024,
                ..Params::GO_1_9_2
            },
            Params {
                max_waste: WasteBound::new(1, 32).unwrap(),
                ..Params::GO_1_9_2
            },
            Params {
                page_size: 16384,
                max_small: 65536,
                ..Params::GO_1_9_2
            },
            Params {
                page_size: 16384,
                max_small: 65536,
                min_objects: 16,
                ..Params::GOMALLOC
            },
        ];
        let mut beyond_32_bit = 0;
        for p in cases {
            let t = SizeClasses::new(p).unwrap();
            for c in 1..t.len() {
                let (size, span) = (t.size_of_class(c), t.span_bytes_of_class(c));
                if reciprocal(size as u64, span as u64, 32).is_none() {
                    beyond_32_bit += 1;
                }
                for i in 0..=span / size {
                    for off in [i * size, (i * size).wrapping_sub(1), i * size + 1] {
                        if off < span {
                            assert_eq!(t.object_index(c, off), off / size, "{p:?} class {c}");
                        }
                    }
                }
                assert_eq!(t.object_index(c, span - 1), (span - 1) / size);
            }
        }
        assert!(beyond_32_bit > 10, "{beyond_32_bit}");
    }

    /// The first `n` at which the 32-bit reciprocal of `d` goes wrong, by
    /// brute force, searching `n < limit`.
    fn first_inexact(d: u64, limit: u64) -> Option<u64> {
        let m = (1u64 << 32).div_ceil(d);
        (0..limit).find(|&n| (n * m) >> 32 != n / d)
    }

    #[test]
    fn reciprocal_check_is_exact_on_both_sides_of_the_boundary() {
        let limit = 1 << 21;
        let mut boundaries = 0;
        for d in (8..=40_000u64)
            .step_by(8)
            .filter(|d| d % 1000 < 24 || d % 4096 == 0)
        {
            match first_inexact(d, limit) {
                Some(bad) => {
                    boundaries += 1;
                    assert!(bad >= d, "d {d}: every n < d divides exactly for d < 2^16");
                    // Exact for every span that stops before `bad`...
                    assert!(reciprocal(d, bad, 32).is_some(), "d {d} span {bad}");
                    // ...and rejected for every span that contains it.
                    assert_eq!(reciprocal(d, bad + 1, 32), None, "d {d} span {}", bad + 1);
                    assert_eq!(reciprocal(d, bad + 1 + d / 2, 32), None);
                    // The 64-bit reciprocal is exact there.
                    assert!(reciprocal(d, limit, 64).is_some(), "d {d}");
                }
                None => assert!(reciprocal(d, limit, 32).is_some(), "d {d}"),
            }
        }
        assert!(boundaries > 10, "{boundaries}");
    }

    #[test]
    fn reciprocals_of_powers_of_two_are_shifts() {
        for k in 3..=18 {
            let d = 1u64 << k;
            assert_eq!(reciprocal(d, 1 << 32, 64), Some(1u128 << (64 - k)));
            assert_eq!(reciprocal(d, 1 << 32, 32), Some(1u128 << (32 - k)));
        }
    }

    #[test]
    fn reciprocals_of_the_largest_sizes_are_exact_over_4_gib() {
        for d in (256 * 1024 - 64 * 256..=256 * 1024).step_by(8) {
            assert!(reciprocal(d, 1 << 32, 64).is_some(), "{d}");
        }
    }
}
