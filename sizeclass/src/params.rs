//! The generator's inputs ([`Params`], [`WasteBound`]) and the typed error
//! ([`ParamError`]) returned when they are out of range or produce no usable
//! table.

use crate::{MAX_CLASSES, MAX_SMALL_SIZE, PAGE_SIZE};

/// Smallest page size the generator accepts.
pub const MIN_PAGE_SIZE: usize = 1024;
/// Largest page size the generator accepts (1 MiB keeps every span's byte
/// count, and so every object offset, inside `u32`).
pub const MAX_PAGE_SIZE: usize = 1 << 20;
/// Smallest `max_small` the generator accepts: the lookup's 8-byte table
/// covers sizes up to 1024, so the small-object range must reach it.
pub const MIN_MAX_SMALL: usize = 1024;
/// Largest `max_small` the generator accepts (256 KiB); it fixes the length
/// of the 128-byte lookup table that every [`SizeClasses`](crate::SizeClasses)
/// carries.
pub const MAX_MAX_SMALL: usize = 256 * 1024;

/// Parts per million, the denominator of [`WasteBound::from_ppm`].
const PPM: u32 = 1_000_000;

/// Why a set of [`Params`] was rejected, or why the table they produce is
/// unusable.
///
/// Returned by [`Params::validate`], [`WasteBound::new`] and
/// [`SizeClasses::new`](crate::SizeClasses::new).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The page size is not a power of two in
    /// [`MIN_PAGE_SIZE`]`..=`[`MAX_PAGE_SIZE`].
    #[error("page size {0} must be a power of two from 1024 to 1048576")]
    PageSize(usize),
    /// The largest small size is out of
    /// [`MIN_MAX_SMALL`]`..=`[`MAX_MAX_SMALL`], or is not on the generator's
    /// size grid (a multiple of 128 up to 2048, of 256 above), so no class
    /// would end exactly at it.
    #[error(
        "max small size {0} must be from 1024 to 262144, a multiple of 128 up to 2048 \
         and of 256 above"
    )]
    MaxSmall(usize),
    /// `min_span_pages` is not in `1..=64`.
    #[error("min_span_pages {0} must be from 1 to 64")]
    MinSpan(usize),
    /// `min_objects` is not in `1..=64`.
    #[error("min_objects {0} must be from 1 to 64")]
    MinObjects(usize),
    /// `min_align16` is not a power of two in `16..=128`.
    #[error("min_align16 {0} must be a power of two from 16 to 128")]
    MinAlign16(usize),
    /// The waste bound `num/den` is not strictly between 0 and 1.
    #[error("waste bound {num}/{den} must be strictly between 0 and 1")]
    Waste {
        /// Numerator as given.
        num: u32,
        /// Denominator as given.
        den: u32,
    },
    /// The waste bound given as a decimal fraction is not a number strictly
    /// between 0 and 1 (or rounds to 0 or 1 in parts per million).
    #[error("waste bound must be a fraction strictly between 0 and 1 (at least 0.000001)")]
    WasteFraction,
    /// The parameters produce more classes than a table holds (class
    /// indices must fit in a `u8`).
    #[error("the parameters produce more than {limit} size classes")]
    TooManyClasses {
        /// The capacity, [`MAX_CLASSES`], class 0 included.
        limit: usize,
    },
}

/// The largest fraction of a span the generator lets go to waste at its
/// tail, as an exact fraction `num/den` strictly between 0 and 1.
///
/// A span of `n` pages is accepted for an object size when
/// `span_bytes % size <= span_bytes * num / den` (integer arithmetic, as Go's
/// `allocsize % size <= allocsize / 8` for the bound 1/8).
///
/// Invariant: `0 < num < den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasteBound {
    num: u32,
    den: u32,
}

impl WasteBound {
    /// 1/8 (12.5 %), the bound Go uses.
    pub const ONE_EIGHTH: WasteBound = WasteBound { num: 1, den: 8 };

    /// The bound `num/den`.
    ///
    /// # Errors
    ///
    /// [`ParamError::Waste`] unless `0 < num < den`.
    pub const fn new(num: u32, den: u32) -> Result<WasteBound, ParamError> {
        if num == 0 || num >= den {
            return Err(ParamError::Waste { num, den });
        }
        Ok(WasteBound { num, den })
    }

    /// The bound `ppm / 1_000_000`.
    ///
    /// # Errors
    ///
    /// [`ParamError::Waste`] unless `0 < ppm < 1_000_000`.
    pub const fn from_ppm(ppm: u32) -> Result<WasteBound, ParamError> {
        WasteBound::new(ppm, PPM)
    }

    /// The bound nearest to `fraction` in parts per million (`0.125` gives
    /// 125000/1000000, which the generator treats exactly as 1/8).
    ///
    /// # Errors
    ///
    /// [`ParamError::WasteFraction`] if `fraction` is not finite, not in
    /// `(0, 1)`, or rounds to 0 or 1 in parts per million.
    pub fn from_fraction(fraction: f64) -> Result<WasteBound, ParamError> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(ParamError::WasteFraction);
        }
        // In range: 0 < fraction * 1e6 < 1e6, so the cast cannot saturate.
        let ppm = (fraction * f64::from(PPM)).round() as u32;
        match WasteBound::from_ppm(ppm) {
            Ok(w) => Ok(w),
            Err(_) => Err(ParamError::WasteFraction),
        }
    }

    /// Numerator.
    #[inline]
    pub const fn num(&self) -> u32 {
        self.num
    }

    /// Denominator.
    #[inline]
    pub const fn den(&self) -> u32 {
        self.den
    }

    /// The bound as a float, for display.
    pub fn as_f64(&self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }
}

/// The generator's parameters. See [`SizeClasses::new`](crate::SizeClasses::new)
/// for the algorithm they drive.
///
/// The fields are public; [`Params::validate`] (which the generator calls
/// first) checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Bytes per page: a power of two in
    /// [`MIN_PAGE_SIZE`]`..=`[`MAX_PAGE_SIZE`]. Spans are whole pages.
    pub page_size: usize,
    /// The largest small object; larger requests are not served from size
    /// classes. In [`MIN_MAX_SMALL`]`..=`[`MAX_MAX_SMALL`], a multiple of 128,
    /// and of 256 above 2048 (the generator's size grid), so that the last
    /// class ends exactly at it.
    pub max_small: usize,
    /// How much of a span may be left over at its tail.
    pub max_waste: WasteBound,
    /// The power of two (16, 32, 64 or 128) from which candidate sizes step
    /// by 16 bytes instead of 8. Go uses 16 (sizes 8, 16, 32, 48, …);
    /// gomalloc uses 64 (8, 16, 24, 32, 40, 48, 56, 64, 80, …). From 128 on,
    /// the step is `size / 8` for every value (Go's rule), up to 256 bytes
    /// from 2048.
    pub min_align16: usize,
    /// The fewest pages a span may have (1..=64); Go uses 1. A larger
    /// minimum lets a thread cache serve more objects from one span (fewer
    /// refills, and frees that find their span in the cache's bounds).
    pub min_span_pages: usize,
    /// The fewest objects a span may hold (1..=64); Go uses 1. For the
    /// largest classes, where Go's spans hold one or two objects, this keeps
    /// the page heap out of every allocation.
    pub min_objects: usize,
}

impl Params {
    /// gomalloc's parameters: 8 KiB pages, 32 KiB largest small object,
    /// waste bound 1/8, 8-byte steps up to 64 bytes. See the crate docs for
    /// why the 8-byte steps.
    pub const GOMALLOC: Params = Params {
        page_size: PAGE_SIZE,
        max_small: MAX_SMALL_SIZE,
        max_waste: WasteBound::ONE_EIGHTH,
        min_align16: 64,
        min_span_pages: 8,
        min_objects: 8,
    };

    /// Go 1.9.2's parameters (`runtime/mksizeclasses.go`): 8 KiB pages,
    /// 32 KiB largest small object, waste bound 1/8, 16-byte steps from 16.
    /// They reproduce Go's 67-entry `class_to_size` and
    /// `class_to_allocnpages` exactly.
    pub const GO_1_9_2: Params = Params {
        page_size: 8192,
        max_small: 32768,
        max_waste: WasteBound::ONE_EIGHTH,
        min_align16: 16,
        min_span_pages: 1,
        min_objects: 1,
    };

    /// Checks every field against the ranges documented on it.
    ///
    /// # Errors
    ///
    /// The first field out of range, as [`ParamError::PageSize`],
    /// [`ParamError::MaxSmall`], [`ParamError::MinAlign16`] or
    /// [`ParamError::Waste`].
    pub const fn validate(&self) -> Result<(), ParamError> {
        let page = self.page_size;
        if !page.is_power_of_two() || page < MIN_PAGE_SIZE || page > MAX_PAGE_SIZE {
            return Err(ParamError::PageSize(page));
        }
        let max = self.max_small;
        let grid = if max > 2048 { 256 } else { 128 };
        if max < MIN_MAX_SMALL || max > MAX_MAX_SMALL || !max.is_multiple_of(grid) {
            return Err(ParamError::MaxSmall(max));
        }
        let a = self.min_align16;
        if !a.is_power_of_two() || a < 16 || a > 128 {
            return Err(ParamError::MinAlign16(a));
        }
        if self.min_span_pages < 1 || self.min_span_pages > 64 {
            return Err(ParamError::MinSpan(self.min_span_pages));
        }
        if self.min_objects < 1 || self.min_objects > 64 {
            return Err(ParamError::MinObjects(self.min_objects));
        }
        // WasteBound's constructors keep 0 < num < den; checked again so
        // that a future constructor cannot slip a bad bound past the
        // generator.
        let w = self.max_waste;
        if w.num == 0 || w.num >= w.den {
            return Err(ParamError::Waste {
                num: w.num,
                den: w.den,
            });
        }
        Ok(())
    }
}

// Class indices are stored as `u8` in the lookup tables.
const _: () = assert!(MAX_CLASSES <= u8::MAX as usize + 1);

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut Params)) -> Result<(), ParamError> {
        let mut p = Params::GOMALLOC;
        f(&mut p);
        p.validate()
    }

    #[test]
    fn presets_are_valid() {
        assert_eq!(Params::GOMALLOC.validate(), Ok(()));
        assert_eq!(Params::GO_1_9_2.validate(), Ok(()));
    }

    #[test]
    fn page_size_range() {
        for ok in [1024, 4096, 8192, 65536, 1 << 20] {
            assert_eq!(with(|p| p.page_size = ok), Ok(()), "{ok}");
        }
        for bad in [0, 512, 3000, 8191, 12288, 1 << 21] {
            assert_eq!(with(|p| p.page_size = bad), Err(ParamError::PageSize(bad)));
        }
    }

    #[test]
    fn max_small_range() {
        for ok in [1024, 1152, 2048, 2304, 32768, 262144] {
            assert_eq!(with(|p| p.max_small = ok), Ok(()), "{ok}");
        }
        for bad in [0, 896, 1000, 2176, 32768 + 128, 262144 + 256] {
            assert_eq!(with(|p| p.max_small = bad), Err(ParamError::MaxSmall(bad)));
        }
    }

    #[test]
    fn min_align16_range() {
        for ok in [16, 32, 64, 128] {
            assert_eq!(with(|p| p.min_align16 = ok), Ok(()), "{ok}");
        }
        for bad in [0, 8, 24, 48, 256] {
            assert_eq!(
                with(|p| p.min_align16 = bad),
                Err(ParamError::MinAlign16(bad))
            );
        }
    }

    #[test]
    fn waste_constructors() {
        assert_eq!(WasteBound::new(1, 8), Ok(WasteBound::ONE_EIGHTH));
        assert_eq!(
            WasteBound::new(0, 8),
            Err(ParamError::Waste { num: 0, den: 8 })
        );
        assert_eq!(
            WasteBound::new(8, 8),
            Err(ParamError::Waste { num: 8, den: 8 })
        );
        assert_eq!(
            WasteBound::new(1, 0),
            Err(ParamError::Waste { num: 1, den: 0 })
        );
        let w = WasteBound::from_fraction(0.125).unwrap();
        assert_eq!((w.num(), w.den()), (125_000, 1_000_000));
        assert_eq!(w.as_f64(), 0.125);
        assert_eq!(WasteBound::from_ppm(1).map(|w| w.num()), Ok(1));
        for bad in [
            0.0,
            1.0,
            -0.5,
            1.5,
            1e-9,
            0.999_999_9,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert_eq!(
                WasteBound::from_fraction(bad),
                Err(ParamError::WasteFraction),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_waste_is_caught_by_validate() {
        // Only reachable by building the struct inside this crate.
        let w = WasteBound { num: 3, den: 2 };
        assert_eq!(
            with(|p| p.max_waste = w),
            Err(ParamError::Waste { num: 3, den: 2 })
        );
    }
}
