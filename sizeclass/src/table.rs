//! [`SizeClasses`]: a generated table and its O(1) read side — size to
//! class, class to size / pages / objects, and object index by
//! multiplication. The generator that fills it is in `generator.rs`.

use core::fmt;

use crate::Params;
use crate::params::MAX_MAX_SMALL;

/// Capacity of a table in classes, class 0 included; class indices fit in a
/// `u8`.
pub const MAX_CLASSES: usize = 256;

/// Sizes up to this are looked up in the 8-byte-granular table.
pub(crate) const SMALL_SIZE_MAX: usize = 1024;
/// Granularity of the table for sizes `1..=SMALL_SIZE_MAX`.
pub(crate) const SMALL_SIZE_DIV: usize = 8;
/// Granularity of the table for sizes above `SMALL_SIZE_MAX`.
pub(crate) const LARGE_SIZE_DIV: usize = 128;
/// Entries of the 8-byte table: indices `0..=1024/8`.
pub(crate) const SMALL_LOOKUP_LEN: usize = SMALL_SIZE_MAX / SMALL_SIZE_DIV + 1;
/// Entries of the 128-byte table: indices `0..=(256 KiB - 1024)/128`, enough
/// for the largest `max_small` a table may have.
pub(crate) const LARGE_LOOKUP_LEN: usize = (MAX_MAX_SMALL - SMALL_SIZE_MAX) / LARGE_SIZE_DIV + 1;

/// A size-class table: for each class its object size, pages per span,
/// objects per span and division magic, plus the two byte tables that map a
/// request size to its class in O(1).
///
/// Built only by [`SizeClasses::new`] (usually at compile time, as
/// [`SIZE_CLASSES`](crate::SIZE_CLASSES) is).
///
/// # Invariants
///
/// With `n = self.len()` and `P = params().page_size`:
///
/// - class 0 is the dummy "large object" class: size, pages, objects and
///   magic are 0; entries `n..MAX_CLASSES` are 0 too;
/// - `size[1] < size[2] < … < size[n-1] == params().max_small`, every size a
///   multiple of 8 and, above 1024, of 128;
/// - `objects[c] == pages[c] * P / size[c] >= 1` and the tail
///   `pages[c] * P - objects[c] * size[c]` is within the waste bound;
/// - `(off * magic[c]) >> 64 == off / size[c]` (in `u128`) for every
///   `off < pages[c] * P`;
/// - `small[(s + 7) / 8]` for `1 <= s <= 1024` and
///   `large[(s - 1024 + 127) / 128]` for `1024 < s <= max_small` are the
///   smallest class `c` with `size[c] >= s`; `small[0]` is class 1; `large`
///   entries past `max_small` are 0.
#[derive(Clone, PartialEq, Eq)]
pub struct SizeClasses {
    pub(crate) params: Params,
    pub(crate) len: usize,
    pub(crate) size: [u32; MAX_CLASSES],
    pub(crate) pages: [u32; MAX_CLASSES],
    pub(crate) objects: [u32; MAX_CLASSES],
    pub(crate) magic: [u64; MAX_CLASSES],
    pub(crate) small: [u8; SMALL_LOOKUP_LEN],
    pub(crate) large: [u8; LARGE_LOOKUP_LEN],
}

impl SizeClasses {
    /// The class for a request of `size` bytes: the smallest class whose
    /// object size is at least `size`. O(1): one load from a byte table.
    ///
    /// `size` must be in `1..=params().max_small` (debug-asserted). In
    /// release builds 0 gives the smallest class, and sizes above
    /// `max_small` give class 0 or panic on a bounds check; neither is
    /// undefined behaviour. Use [`try_class_of`](Self::try_class_of) when the
    /// size is not known to be small.
    #[inline]
    #[expect(
        clippy::manual_div_ceil,
        reason = "`(size + 7) / 8` is an add and a shift; `div_ceil` adds a test and a carry"
    )]
    pub const fn class_of(&self, size: usize) -> usize {
        debug_assert!(size >= 1 && size <= self.params.max_small);
        if size <= SMALL_SIZE_MAX {
            // size <= 1024: no overflow.
            self.small[(size + SMALL_SIZE_DIV - 1) / SMALL_SIZE_DIV] as usize
        } else {
            // `(size - 1024 + 127) / 128`, subtracting first so that no size
            // can overflow: size > 1024 > 897.
            self.large[(size - (SMALL_SIZE_MAX - LARGE_SIZE_DIV + 1)) / LARGE_SIZE_DIV] as usize
        }
    }

    /// [`class_of`](Self::class_of) for `size <= 1024`, 0 included (it maps
    /// to the smallest class): one byte-table load, no branch, for the
    /// allocation fast path. Larger sizes panic on the table's bounds check.
    #[inline(always)]
    #[expect(
        clippy::manual_div_ceil,
        reason = "`(size + 7) / 8` is an add and a shift; `div_ceil` adds a test and a carry"
    )]
    pub const fn class_of_upto_1k(&self, size: usize) -> usize {
        self.small[(size + SMALL_SIZE_DIV - 1) / SMALL_SIZE_DIV] as usize
    }

    /// [`class_of`](Self::class_of) for any size: `None` for 0 and for sizes
    /// above `params().max_small` (large objects).
    #[inline]
    pub const fn try_class_of(&self, size: usize) -> Option<usize> {
        if size == 0 || size > self.params.max_small {
            None
        } else {
            Some(self.class_of(size))
        }
    }

    /// Object size of class `class` (0 for class 0). `class < len()`
    /// (debug-asserted).
    #[inline]
    pub const fn size_of_class(&self, class: usize) -> usize {
        debug_assert!(class < self.len);
        self.size[class] as usize
    }

    /// Pages in a span of class `class` (0 for class 0). `class < len()`
    /// (debug-asserted).
    #[inline]
    pub const fn pages_of_class(&self, class: usize) -> usize {
        debug_assert!(class < self.len);
        self.pages[class] as usize
    }

    /// Bytes in a span of class `class`: `pages_of_class(class) * page_size`.
    #[inline]
    pub const fn span_bytes_of_class(&self, class: usize) -> usize {
        self.pages_of_class(class) * self.params.page_size
    }

    /// Objects in a span of class `class` (0 for class 0). `class < len()`
    /// (debug-asserted).
    #[inline]
    pub const fn objects_of_class(&self, class: usize) -> usize {
        debug_assert!(class < self.len);
        self.objects[class] as usize
    }

    /// `offset / size_of_class(class)` without a division: the index of the
    /// object holding byte `offset` of a span of this class.
    ///
    /// Computed as the high half of `offset * m` with the class's
    /// reciprocal `m = ceil(2^64 / size)`: one 64×64→128-bit multiply (`mul`
    /// on x86-64, `umulh` on AArch64), no shift. Exact for every
    /// `offset < span_bytes_of_class(class)` (debug-asserted); the generator
    /// checks it for every class and the tests check every offset.
    #[inline]
    pub const fn object_index(&self, class: usize, offset: usize) -> usize {
        debug_assert!(class >= 1 && class < self.len);
        debug_assert!(offset < self.span_bytes_of_class(class));
        ((offset as u128 * self.magic[class] as u128) >> 64) as usize
    }

    /// Number of classes, class 0 included (Go's `_NumSizeClasses`); the
    /// small classes are `1..len()`.
    #[inline]
    #[expect(
        clippy::len_without_is_empty,
        reason = "a table always holds class 0 and at least one small class"
    )]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// The parameters this table was generated from.
    #[inline]
    pub const fn params(&self) -> &Params {
        &self.params
    }
}

impl fmt::Debug for SizeClasses {
    /// Parameters and sizes only; [`SizeClasses::render`] prints the whole
    /// table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SizeClasses")
            .field("params", &self.params)
            .field("len", &self.len)
            .field("sizes", &&self.size[..self.len])
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::{SIZE_CLASSES, WasteBound};

    /// Tables the exhaustive tests run over: gomalloc's, Go's, and a few
    /// others that exercise other page sizes, steps and bounds.
    fn tables() -> Vec<SizeClasses> {
        let mut out = Vec::from([SIZE_CLASSES.clone()]);
        let variants = [
            Params::GO_1_9_2,
            Params {
                page_size: 4096,
                max_small: 16384,
                ..Params::GOMALLOC
            },
            Params {
                page_size: 1024,
                max_small: 1024,
                ..Params::GOMALLOC
            },
            Params {
                min_align16: 128,
                max_small: 1152,
                ..Params::GOMALLOC
            },
            Params {
                min_align16: 32,
                max_waste: WasteBound::new(1, 4).unwrap(),
                ..Params::GOMALLOC
            },
            Params {
                page_size: 16384,
                max_small: 65536,
                ..Params::GOMALLOC
            },
            Params {
                max_waste: WasteBound::new(1, 32).unwrap(),
                ..Params::GOMALLOC
            },
        ];
        for p in variants {
            out.push(SizeClasses::new(p).unwrap_or_else(|e| panic!("{p:?}: {e}")));
        }
        out
    }

    /// The smallest class whose size is >= `size`, by linear search.
    fn reference_class(t: &SizeClasses, size: usize) -> usize {
        (1..t.len()).find(|&c| t.size_of_class(c) >= size).unwrap()
    }

    #[test]
    fn every_small_size_maps_to_the_smallest_fitting_class() {
        for t in tables() {
            let max = t.params().max_small;
            for size in 1..=max {
                let c = t.class_of(size);
                assert_eq!(c, reference_class(&t, size), "size {size} in {t:?}");
                assert_eq!(t.try_class_of(size), Some(c));
            }
            assert_eq!(t.try_class_of(0), None);
            assert_eq!(t.try_class_of(max + 1), None);
            assert_eq!(t.try_class_of(usize::MAX), None);
            assert_eq!(t.class_of(max), t.len() - 1);
            assert_eq!(t.size_of_class(t.len() - 1), max);
        }
    }

    #[test]
    fn lookup_table_entries_outside_the_small_range() {
        for t in tables() {
            assert_eq!(t.small[0], 1);
            let used = (t.params().max_small - SMALL_SIZE_MAX) / LARGE_SIZE_DIV;
            assert!(t.large[used + 1..].iter().all(|&c| c == 0), "{t:?}");
        }
    }

    #[test]
    fn every_offset_of_every_span_divides_exactly() {
        let mut checked = 0u64;
        for t in tables() {
            for c in 1..t.len() {
                let size = t.size_of_class(c);
                for off in 0..t.span_bytes_of_class(c) {
                    assert_eq!(t.object_index(c, off), off / size, "class {c} off {off}");
                }
                checked += t.span_bytes_of_class(c) as u64;
            }
        }
        std::println!("{checked} offsets checked");
        assert!(checked > 5_000_000, "{checked}");
    }

    #[test]
    fn spans_hold_whole_objects_within_the_waste_bound() {
        for t in tables() {
            let w = t.params().max_waste;
            for c in 1..t.len() {
                let (size, span) = (t.size_of_class(c), t.span_bytes_of_class(c));
                let objects = t.objects_of_class(c);
                assert_eq!(span, t.pages_of_class(c) * t.params().page_size);
                assert!(objects >= 1);
                assert_eq!(objects, span / size);
                let tail = span - objects * size;
                let bound = span as u64 * u64::from(w.num()) / u64::from(w.den());
                assert!(tail as u64 <= bound, "class {c}: tail {tail} > {bound}");
            }
        }
    }

    #[test]
    fn sizes_increase_on_the_lookup_grids() {
        for t in tables() {
            assert_eq!(
                (
                    t.size_of_class(0),
                    t.pages_of_class(0),
                    t.objects_of_class(0)
                ),
                (0, 0, 0)
            );
            for c in 1..t.len() {
                let size = t.size_of_class(c);
                assert_eq!(size % 8, 0, "class {c}");
                if size > SMALL_SIZE_MAX {
                    assert_eq!(size % LARGE_SIZE_DIV, 0, "class {c}");
                }
                assert!(size > t.size_of_class(c - 1), "class {c}");
            }
            assert!(t.size[t.len()..].iter().all(|&s| s == 0));
            assert!(t.magic[t.len()..].iter().all(|&m| m == 0));
        }
    }

    /// Sizes that are multiples of 16 get classes whose sizes are multiples
    /// of 16, so objects of 16-aligned types are 16-aligned in a page-aligned
    /// span. (Largest alignment with this property: see `natural_alignment`.)
    #[test]
    fn sixteen_byte_multiples_stay_sixteen_byte_aligned() {
        for t in tables() {
            for size in (16..=t.params().max_small).step_by(16) {
                let class_size = t.size_of_class(t.class_of(size));
                assert_eq!(class_size % 16, 0, "size {size} -> {class_size}");
            }
        }
    }

    /// The largest power of two `a` such that every multiple of every
    /// `b <= a` maps to a class that is a multiple of `b`.
    fn natural_alignment(t: &SizeClasses) -> usize {
        let mut a = 8;
        loop {
            let next = a * 2;
            let holds = (next..=t.params().max_small)
                .step_by(next)
                .all(|s| t.size_of_class(t.class_of(s)).is_multiple_of(next));
            if !holds {
                return a;
            }
            a = next;
        }
    }

    #[test]
    fn natural_alignment_of_the_known_tables() {
        // Known values, so that a generator change that alters them shows.
        assert_eq!(natural_alignment(&SIZE_CLASSES), 128);
        assert_eq!(
            natural_alignment(&SizeClasses::new(Params::GO_1_9_2).unwrap()),
            128
        );
    }

    #[test]
    fn debug_output_is_short() {
        extern crate std;
        let s = std::format!("{:?}", SIZE_CLASSES);
        assert!(
            s.starts_with("SizeClasses { params: Params { page_size: 8192"),
            "{s}"
        );
        assert!(s.len() < 1000, "{}", s.len());
    }
}
