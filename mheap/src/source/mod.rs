//! Page sources: where the heap's memory comes from.
//!
//! # The states of a range of address space
//!
//! A page source moves byte ranges of address space between four states. The
//! heap calls every method with its lock held, so a source needs no
//! synchronisation of its own (methods take `&mut self`).
//!
//! ```text
//!            reserve               commit
//!   None ─────────────▶ Reserved ─────────▶ Committed ◀──┐
//!                                             │          │ commit
//!                                     release │          │
//!                                             ▼          │
//!                                           Released ────┘
//! ```
//!
//! - **None**: not ours; touching it faults.
//! - **Reserved**: address space set aside (in large aligned arenas, so that
//!   almost no allocation makes a system call), not usable until committed.
//!   Reserved memory reads as zero once committed.
//! - **Committed**: readable and writable; its pages may be resident.
//! - **Released**: given back to the OS (`madvise`); the address range stays
//!   ours and is made usable again by `commit`, without a new mapping. After
//!   `commit` it reads as zero if [`PageSource::released_reads_zero`] says so,
//!   otherwise its contents are unspecified.
//!
//! A source never takes a range back to None: the heap keeps its address
//! space for the life of the process, as Go's does.
//!
//! # Sources
//!
//! Sources compose from small adapters, each in its own file:
//! - [`OsPageSource`]: anonymous memory mappings from the OS.
//! - [`FixedRegion`]: hands out a caller-provided buffer; no system calls.
//! - [`FaultInjecting`]: wraps a source and fails chosen requests, so tests
//!   reach out-of-memory on purpose.
//! - [`Counting`]: wraps a source and counts calls and bytes per transition.

mod counting;
mod fault;
mod fixed;
mod os;

pub use counting::{Counting, SourceCounters};
pub use fault::{FaultInjecting, FaultPlan};
pub use fixed::FixedRegion;
pub use os::{OsPageSource, ReleaseAdvice};

use core::ptr::NonNull;

/// Why a page source could not serve a request. Every variant is something
/// a caller can act on: out of memory is reported, never panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageSourceError {
    /// The source has no more address space (a fixed region is used up, or
    /// the OS refused a mapping with `ENOMEM`).
    #[error("page source exhausted: could not reserve {requested} bytes")]
    Exhausted {
        /// The number of bytes asked for.
        requested: usize,
    },
    /// The operating system refused the request with this `errno`.
    #[error("the operating system refused the request (errno {errno})")]
    Os {
        /// The `errno` the system call set.
        errno: i32,
    },
    /// A [`FaultInjecting`] source failed this request on purpose.
    #[error("injected failure")]
    Injected,
    /// Length or alignment not acceptable: zero, not a multiple of the page
    /// size, or an alignment that is not a power of two.
    #[error("bad request: length {len}, alignment {align}")]
    BadRequest {
        /// The length asked for.
        len: usize,
        /// The alignment asked for.
        align: usize,
    },
}

/// The smallest unit a page source deals in: every length and address passed
/// to or returned by a [`PageSource`] is a multiple of it. It is the heap's
/// page size (8 KiB), a multiple of every common OS page size.
pub const SOURCE_GRANULE: usize = sizeclass::PAGE_SIZE;

/// A source of address space for the heap; see the module docs for the
/// state machine.
///
/// # Safety
///
/// An implementation promises that:
/// - a range returned by `reserve` is `len` bytes long, aligned to `align`,
///   lies inside no other range it has returned, and is never handed out
///   again;
/// - after a successful `commit` the range is readable and writable, and
///   reads as zero if it was Reserved (or Released, when
///   `released_reads_zero` returns true);
/// - no method allocates through the global allocator (the heap calls them
///   from inside `GlobalAlloc`).
pub unsafe trait PageSource {
    /// Reserves `len` bytes aligned to `align`: None → Reserved.
    ///
    /// `len` is a non-zero multiple of [`SOURCE_GRANULE`]; `align` is a power
    /// of two at least [`SOURCE_GRANULE`].
    fn reserve(&mut self, len: usize, align: usize) -> Result<NonNull<u8>, PageSourceError>;

    /// Makes a range usable: Reserved or Released → Committed.
    ///
    /// # Safety
    ///
    /// `ptr..ptr+len` lies inside ranges this source returned from
    /// `reserve`, and both are multiples of [`SOURCE_GRANULE`].
    unsafe fn commit(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError>;

    /// Gives a range's physical memory back to the OS: Committed → Released.
    /// On error the range stays Committed.
    ///
    /// # Safety
    ///
    /// As for [`commit`](Self::commit); also, nothing may use the contents
    /// of the range afterwards until it is committed again.
    unsafe fn release(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError>;

    /// Whether a Released range reads as zero after `commit`
    /// (`MADV_DONTNEED` semantics) rather than keeping unspecified contents
    /// (`MADV_FREE`). The heap uses it to know which memory needs no zeroing.
    fn released_reads_zero(&self) -> bool;
}

/// Checks the common preconditions of `reserve`.
pub(crate) fn check_request(len: usize, align: usize) -> Result<(), PageSourceError> {
    if len == 0
        || !len.is_multiple_of(SOURCE_GRANULE)
        || !align.is_power_of_two()
        || align < SOURCE_GRANULE
    {
        return Err(PageSourceError::BadRequest { len, align });
    }
    Ok(())
}
