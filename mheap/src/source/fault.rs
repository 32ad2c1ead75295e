//! [`FaultInjecting`]: a page source that fails chosen requests on purpose.
//!
//! It wraps another source and, following a [`FaultPlan`], answers some
//! requests with [`PageSourceError::Injected`] without passing them on, so
//! that tests reach the heap's out-of-memory paths deterministically.
//!
//! A *request* is a call that can run out of memory: `reserve` and `commit`.
//! `release` calls become requests too when release faults are switched on
//! ([`FaultInjecting::set_release_faults`]); a failed release leaves the range
//! Committed, as the trait allows. Requests are numbered from 0 since the plan
//! was set ([`new`](FaultInjecting::new) or [`set_plan`](FaultInjecting::set_plan)).
//!
//! It needs no synchronisation of its own: every method takes `&mut self`, and
//! the heap calls them with its lock held.

use core::ptr::NonNull;

use super::{PageSource, PageSourceError};

/// Which requests a [`FaultInjecting`] source fails. Request numbers count
/// from 0 at the moment the plan was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultPlan {
    /// Fail nothing.
    #[default]
    Never,
    /// Fail request number `n` only, once.
    FailNth(u64),
    /// Fail request number `n` and every one after it, until
    /// [`FaultInjecting::heal`] or a new plan.
    FailFrom(u64),
    /// Fail every `k`-th request: numbers `k - 1`, `2k - 1`, … (`FailEvery(1)`
    /// fails all of them; `FailEvery(0)` fails none).
    FailEvery(u64),
}

impl FaultPlan {
    /// Whether request number `i` (counted from the plan's start) fails.
    fn fails(self, i: u64) -> bool {
        match self {
            FaultPlan::Never => false,
            FaultPlan::FailNth(n) => i == n,
            FaultPlan::FailFrom(n) => i >= n,
            FaultPlan::FailEvery(0) => false,
            FaultPlan::FailEvery(k) => (i + 1).is_multiple_of(k),
        }
    }
}

/// A [`PageSource`] that fails the requests its [`FaultPlan`] names and passes
/// every other call to the source it wraps.
#[derive(Debug)]
pub struct FaultInjecting<S: PageSource> {
    /// The wrapped source; failed calls never reach it.
    inner: S,
    /// Which requests fail.
    plan: FaultPlan,
    /// Requests since the plan was set: the number of the next one.
    since_plan: u64,
    /// Requests since construction.
    requests: u64,
    /// Requests failed on purpose since construction.
    failures: u64,
    /// Whether `release` calls are requests (and so can fail).
    release_faults: bool,
}

impl<S: PageSource> FaultInjecting<S> {
    /// Wraps `inner`, failing the requests `plan` names. `release` never
    /// fails until [`set_release_faults`](Self::set_release_faults).
    pub const fn new(inner: S, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan,
            since_plan: 0,
            requests: 0,
            failures: 0,
            release_faults: false,
        }
    }

    /// Replaces the plan; request numbers start again from 0.
    pub fn set_plan(&mut self, plan: FaultPlan) {
        self.plan = plan;
        self.since_plan = 0;
    }

    /// The plan in force.
    pub fn plan(&self) -> FaultPlan {
        self.plan
    }

    /// Stops failing: the plan becomes [`FaultPlan::Never`].
    pub fn heal(&mut self) {
        self.set_plan(FaultPlan::Never);
    }

    /// Whether `release` calls count as requests and follow the plan.
    pub fn set_release_faults(&mut self, on: bool) {
        self.release_faults = on;
    }

    /// Requests seen since construction, failed or not.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Requests failed on purpose since construction.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped source, mutably (calls made through it are not requests).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the source.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Counts one request and says whether it is to fail.
    fn inject(&mut self) -> Result<(), PageSourceError> {
        let i = self.since_plan;
        self.since_plan = self.since_plan.saturating_add(1);
        self.requests = self.requests.saturating_add(1);
        if self.plan.fails(i) {
            self.failures = self.failures.saturating_add(1);
            Err(PageSourceError::Injected)
        } else {
            Ok(())
        }
    }
}

// SAFETY: every call that succeeds is the inner source's own answer to the
// same arguments, so its promises (fresh, aligned, disjoint ranges; usable
// and zeroed after commit; `released_reads_zero`) carry over unchanged. A
// failed call returns an error before reaching the inner source, so it
// changes no state: a failed `release` leaves the range Committed, as the
// trait requires. The bookkeeping is integer arithmetic: nothing allocates.
unsafe impl<S: PageSource> PageSource for FaultInjecting<S> {
    #[inline]
    fn reserve(&mut self, len: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
        self.inject()?;
        self.inner.reserve(len, align)
    }

    #[inline]
    unsafe fn commit(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError> {
        self.inject()?;
        // SAFETY: the caller upholds `commit`'s contract for this source,
        // whose ranges all come from `inner`.
        unsafe { self.inner.commit(ptr, len) }
    }

    #[inline]
    unsafe fn release(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError> {
        if self.release_faults {
            self.inject()?;
        }
        // SAFETY: the caller upholds `release`'s contract for this source,
        // whose ranges all come from `inner`.
        unsafe { self.inner.release(ptr, len) }
    }

    #[inline]
    fn released_reads_zero(&self) -> bool {
        self.inner.released_reads_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Counting, FixedRegion, SOURCE_GRANULE, SourceCounters};

    const G: usize = SOURCE_GRANULE;

    fn fixed(granules: usize) -> FixedRegion {
        let buf: &'static mut [u8] = Box::leak(vec![0u8; (granules + 1) * G].into_boxed_slice());
        FixedRegion::new(buf)
    }

    /// Runs `n` reserve-then-commit pairs of one granule each and returns
    /// which requests failed (two per pair; a failed reserve skips the
    /// commit, whose slot is then `None`).
    fn run<S: PageSource>(src: &mut S, pairs: usize) -> Vec<Option<bool>> {
        let mut out = Vec::new();
        for _ in 0..pairs {
            match src.reserve(G, G) {
                Ok(p) => {
                    out.push(Some(false));
                    // SAFETY: just reserved from `src`.
                    let r = unsafe { src.commit(p, G) };
                    out.push(Some(r == Err(PageSourceError::Injected)));
                }
                Err(e) => {
                    assert_eq!(e, PageSourceError::Injected);
                    out.push(Some(true));
                    out.push(None);
                }
            }
        }
        out
    }

    #[test]
    fn never_fails_nothing() {
        let mut f = FaultInjecting::new(fixed(8), FaultPlan::default());
        assert_eq!(f.plan(), FaultPlan::Never);
        assert!(run(&mut f, 4).iter().all(|r| *r == Some(false)));
        assert_eq!((f.requests(), f.failures()), (8, 0));
    }

    #[test]
    fn fail_nth_fails_that_request_only() {
        for n in 0..8u64 {
            let mut f = FaultInjecting::new(fixed(8), FaultPlan::FailNth(n));
            let failed: Vec<u64> = (0..8u64).filter(|_| f.reserve(G, G).is_err()).collect();
            assert_eq!(failed, [n], "FailNth({n})");
            assert_eq!((f.requests(), f.failures()), (8, 1));
            // Seven reserves got through.
            assert_eq!(f.inner().reserved_bytes(), 7 * G);
        }
        // Commits are requests too: in reserve/commit pairs, request 3 is
        // the second commit.
        let mut f = FaultInjecting::new(fixed(8), FaultPlan::FailNth(3));
        let got = run(&mut f, 3);
        let expected = [false, false, false, true, false, false];
        assert_eq!(got, expected.map(Some));
    }

    #[test]
    fn fail_from_fails_until_heal() {
        let mut f = FaultInjecting::new(fixed(8), FaultPlan::FailFrom(1));
        assert!(f.reserve(G, G).is_ok());
        for _ in 0..5 {
            assert_eq!(f.reserve(G, G), Err(PageSourceError::Injected));
        }
        assert_eq!((f.requests(), f.failures()), (6, 5));
        f.heal();
        assert_eq!(f.plan(), FaultPlan::Never);
        assert!(run(&mut f, 3).iter().all(|r| *r == Some(false)));
        assert_eq!((f.requests(), f.failures()), (12, 5));
    }

    #[test]
    fn fail_every_kth() {
        let mut f = FaultInjecting::new(fixed(4), FaultPlan::FailEvery(3));
        // Exercise `commit` only: reserve through the inner source (no
        // request), then commit the same range again and again.
        let p = f.inner_mut().reserve(G, G).unwrap();
        // SAFETY: `p..p+G` was reserved from the inner region.
        let failed: Vec<u64> = (0..9u64)
            .filter(|_| unsafe { f.commit(p, G) }.is_err())
            .collect();
        assert_eq!(failed, [2, 5, 8]);
        assert_eq!((f.requests(), f.failures()), (9, 3));
        f.set_plan(FaultPlan::FailEvery(0));
        // SAFETY: as above.
        assert!(unsafe { f.commit(p, G) }.is_ok());
        f.set_plan(FaultPlan::FailEvery(1));
        // SAFETY: as above.
        assert!(unsafe { f.commit(p, G) }.is_err());
    }

    #[test]
    fn set_plan_restarts_numbering() {
        let mut f = FaultInjecting::new(fixed(8), FaultPlan::Never);
        assert_eq!(run(&mut f, 2).len(), 4);
        f.set_plan(FaultPlan::FailNth(0));
        assert_eq!(f.reserve(G, G), Err(PageSourceError::Injected));
        assert!(f.reserve(G, G).is_ok());
        assert_eq!((f.requests(), f.failures()), (6, 1));
    }

    #[test]
    fn failures_never_reach_the_inner_source() {
        let mut f = FaultInjecting::new(Counting::new(fixed(8)), FaultPlan::FailEvery(2));
        // Requests 1, 3, 5, 7 fail: the commit of each of four pairs.
        let got = run(&mut f, 4);
        assert_eq!(
            got,
            [false, true]
                .repeat(4)
                .into_iter()
                .map(Some)
                .collect::<Vec<_>>()
        );
        let c = f.inner().counters();
        assert_eq!(
            c,
            SourceCounters {
                reserve_calls: 4,
                reserved_bytes: 4 * G as u64,
                commit_calls: 0,
                committed_bytes: 0,
                release_calls: 0,
                released_bytes: 0,
                failed_calls: 0,
            }
        );
        assert_eq!(f.failures(), 4);
    }

    #[test]
    fn release_faults_are_opt_in_and_leave_the_range_committed() {
        let mut f = FaultInjecting::new(Counting::new(fixed(4)), FaultPlan::FailFrom(2));
        let p = f.reserve(2 * G, G).unwrap();
        // SAFETY: just reserved.
        unsafe { f.commit(p, 2 * G) }.unwrap();
        // SAFETY: committed; the region is leaked and only used here.
        let bytes = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), 2 * G) };
        bytes.fill(0x77);

        // Off by default: the release is no request and goes through.
        // SAFETY: committed, contents not used before the commit below.
        unsafe { f.release(p, G) }.unwrap();
        assert_eq!(f.requests(), 2);
        // SAFETY: released above.
        assert_eq!(unsafe { f.commit(p, G) }, Err(PageSourceError::Injected));
        f.heal();
        // SAFETY: released above.
        unsafe { f.commit(p, G) }.unwrap();

        f.set_release_faults(true);
        f.set_plan(FaultPlan::FailNth(0));
        let q = NonNull::new(p.as_ptr().wrapping_add(G)).unwrap();
        // SAFETY: committed; a failed release keeps it Committed.
        assert_eq!(unsafe { f.release(q, G) }, Err(PageSourceError::Injected));
        // The contents survived: the inner region (which zeroes on release)
        // never saw the call.
        // SAFETY: still committed.
        let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), G) };
        assert!(bytes.iter().all(|&b| b == 0x77));
        // SAFETY: committed; not used afterwards.
        unsafe { f.release(q, G) }.unwrap();
        let c = f.inner().counters();
        assert_eq!((c.release_calls, c.released_bytes), (2, 2 * G as u64));
        assert_eq!(f.failures(), 2);
        assert!(f.released_reads_zero());
        let region = f.into_inner().into_inner();
        assert_eq!(region.reserved_bytes(), 2 * G);
    }
}
