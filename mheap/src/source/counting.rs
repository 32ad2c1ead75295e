//! [`Counting`]: a page source that counts calls and bytes per transition.
//!
//! It wraps another source, passes every call through unchanged and keeps
//! [`SourceCounters`]: how many `reserve`, `commit` and `release` calls were
//! made, how many bytes each moved, and how many calls failed. Tests use it to
//! check that the heap makes the system calls it should (and no more); the
//! allocator's statistics can use it too.
//!
//! It needs no synchronisation of its own: every method takes `&mut self`, and
//! the heap calls them with its lock held. The counters are plain integers.

use core::ptr::NonNull;

use super::{PageSource, PageSourceError};

/// What a [`Counting`] source has seen. Every `*_calls` field counts calls
/// made, successful or not; every `*_bytes` field counts the bytes of the
/// successful ones only; `failed_calls` counts the calls of any kind that
/// returned an error. So `reserve_calls + commit_calls + release_calls -
/// failed_calls` calls succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// `reserve` calls (None → Reserved).
    pub reserve_calls: u64,
    /// Bytes reserved by successful `reserve` calls.
    pub reserved_bytes: u64,
    /// `commit` calls (Reserved or Released → Committed).
    pub commit_calls: u64,
    /// Bytes committed by successful `commit` calls.
    pub committed_bytes: u64,
    /// `release` calls (Committed → Released).
    pub release_calls: u64,
    /// Bytes released by successful `release` calls.
    pub released_bytes: u64,
    /// Calls of any kind that returned an error.
    pub failed_calls: u64,
}

/// A [`PageSource`] that passes every call to the source it wraps and counts
/// it in [`SourceCounters`].
#[derive(Debug)]
pub struct Counting<S: PageSource> {
    /// The wrapped source.
    inner: S,
    /// What has been seen so far.
    counters: SourceCounters,
}

impl<S: PageSource> Counting<S> {
    /// Wraps `inner`, with every counter at zero.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counters: SourceCounters::default(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> SourceCounters {
        self.counters
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&mut self) {
        self.counters = SourceCounters::default();
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped source, mutably (calls made through it are not counted).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the source.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Counts the outcome of a call that moved `len` bytes into `bytes`.
    #[inline]
    fn tally<T>(
        failed: &mut u64,
        bytes: &mut u64,
        len: usize,
        result: Result<T, PageSourceError>,
    ) -> Result<T, PageSourceError> {
        match result {
            Ok(_) => *bytes = bytes.wrapping_add(len as u64),
            Err(_) => *failed = failed.wrapping_add(1),
        }
        result
    }
}

// SAFETY: every call is passed to the inner source with the same arguments
// and its answer returned unchanged, so the inner source's promises (fresh,
// aligned, disjoint ranges; usable and zeroed after commit;
// `released_reads_zero`) are this source's. The counting is integer
// arithmetic: nothing allocates.
unsafe impl<S: PageSource> PageSource for Counting<S> {
    #[inline]
    fn reserve(&mut self, len: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
        let c = &mut self.counters;
        c.reserve_calls = c.reserve_calls.wrapping_add(1);
        let result = self.inner.reserve(len, align);
        Self::tally(&mut c.failed_calls, &mut c.reserved_bytes, len, result)
    }

    #[inline]
    unsafe fn commit(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError> {
        let c = &mut self.counters;
        c.commit_calls = c.commit_calls.wrapping_add(1);
        // SAFETY: the caller upholds `commit`'s contract for this source,
        // whose ranges all come from `inner`.
        let result = unsafe { self.inner.commit(ptr, len) };
        Self::tally(&mut c.failed_calls, &mut c.committed_bytes, len, result)
    }

    #[inline]
    unsafe fn release(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError> {
        let c = &mut self.counters;
        c.release_calls = c.release_calls.wrapping_add(1);
        // SAFETY: the caller upholds `release`'s contract for this source,
        // whose ranges all come from `inner`.
        let result = unsafe { self.inner.release(ptr, len) };
        Self::tally(&mut c.failed_calls, &mut c.released_bytes, len, result)
    }

    #[inline]
    fn released_reads_zero(&self) -> bool {
        self.inner.released_reads_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{FaultInjecting, FaultPlan, FixedRegion, SOURCE_GRANULE};

    const G: usize = SOURCE_GRANULE;

    fn fixed(granules: usize) -> FixedRegion {
        let buf: &'static mut [u8] = Box::leak(vec![0u8; (granules + 1) * G].into_boxed_slice());
        FixedRegion::new(buf)
    }

    #[test]
    fn counts_match_the_calls() {
        let mut c = Counting::new(fixed(16));
        assert_eq!(c.counters(), SourceCounters::default());
        let a = c.reserve(4 * G, G).unwrap();
        let b = c.reserve(2 * G, 2 * G).unwrap();
        // SAFETY: `a` and `b` were reserved from `c`; each range is
        // committed before it is released, and nothing reads them.
        unsafe {
            c.commit(a, 4 * G).unwrap();
            c.commit(b, G).unwrap();
            c.release(a, 3 * G).unwrap();
            c.commit(a, 3 * G).unwrap();
            c.release(b, G).unwrap();
        }
        assert_eq!(
            c.counters(),
            SourceCounters {
                reserve_calls: 2,
                reserved_bytes: 6 * G as u64,
                commit_calls: 3,
                committed_bytes: 8 * G as u64,
                release_calls: 2,
                released_bytes: 4 * G as u64,
                failed_calls: 0,
            }
        );
        assert!(c.released_reads_zero());
        c.reset_counters();
        assert_eq!(c.counters(), SourceCounters::default());
        assert_eq!(c.into_inner().reserved_bytes(), 6 * G);
    }

    #[test]
    fn failed_calls_are_counted_without_bytes() {
        let mut c = Counting::new(FaultInjecting::new(fixed(4), FaultPlan::Never));
        // Bad request and exhaustion come from the region itself.
        assert!(matches!(
            c.reserve(0, G),
            Err(PageSourceError::BadRequest { .. })
        ));
        assert!(matches!(
            c.reserve(8 * G, G),
            Err(PageSourceError::Exhausted { .. })
        ));
        let p = c.reserve(G, G).unwrap();
        // An injected failure of the next commit.
        c.inner_mut().set_plan(FaultPlan::FailNth(0));
        // SAFETY: `p` was reserved from `c`.
        assert_eq!(unsafe { c.commit(p, G) }, Err(PageSourceError::Injected));
        // SAFETY: as above.
        unsafe { c.commit(p, G) }.unwrap();
        let counters = c.counters();
        assert_eq!(counters.reserve_calls, 3);
        assert_eq!(counters.reserved_bytes, G as u64);
        assert_eq!(counters.commit_calls, 2);
        assert_eq!(counters.committed_bytes, G as u64);
        assert_eq!(counters.failed_calls, 3);
        assert_eq!(c.inner().inner().reserved_bytes(), G);
    }
}
