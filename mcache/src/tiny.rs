//! The tiny allocator of the seeds, adapted to malloc/free (cargo feature
//! `tiny`, off by default: see the README for the measurement that decided).
//!
//! Requests of [`TINY_MAX`] bytes or less are packed into 16-byte blocks
//! taken from the 16-byte size class. Go frees a tiny block when the
//! garbage collector finds none of its pieces reachable; with explicit
//! frees the block needs a count of its live pieces. It is kept in the
//! block's last byte, so pieces use bytes 0..15:
//!
//! - the cache holding a block as its current tiny block owns one
//!   reference; every piece handed out adds one;
//! - freeing a piece, and the cache moving on to a new block, drop one
//!   (atomically: pieces of one block may be freed by different threads);
//! - whoever drops the last reference frees the 16-byte block through the
//!   ordinary path, so a block is re-used only once every piece in it was
//!   freed and the cache has let it go.

use core::sync::atomic::{AtomicU8, Ordering};

/// Bytes of a tiny block.
pub const TINY_BLOCK: usize = 16;
/// The largest request the tiny allocator serves. Pieces live in bytes
/// 0..15 of a block; an 8-byte piece would fit only once, no better than
/// the 8-byte class.
pub const TINY_MAX: usize = 7;
/// Where in the block the reference count lives.
const COUNT_AT: usize = TINY_BLOCK - 1;

/// The reference count of the block holding `piece`.
///
/// # Safety
///
/// `piece` lies in a live tiny block.
#[inline]
unsafe fn count_of(block: *mut u8) -> &'static AtomicU8 {
    // SAFETY: byte 15 of a live tiny block is its count, only ever accessed
    // atomically.
    unsafe { &*block.add(COUNT_AT).cast::<AtomicU8>() }
}

/// The block holding a tiny piece.
#[inline]
pub fn block_of(piece: *mut u8) -> *mut u8 {
    (piece as usize & !(TINY_BLOCK - 1)) as *mut u8
}

/// A cache's current tiny block.
///
/// `Send`: it holds a reference on a block of the heap, not tied to a thread.
///
/// Invariant: `block` is null (then `off` is 0) or a live 16-byte block of
/// which this cache owns one reference, with bytes `off..15` unused.
pub struct Tiny {
    block: *mut u8,
    off: usize,
}

impl Tiny {
    /// No current block.
    pub const fn new() -> Self {
        Self {
            block: core::ptr::null_mut(),
            off: 0,
        }
    }

    /// A piece of `size` bytes at `align` from the current block, or null
    /// if it does not fit.
    #[inline]
    pub fn take(&mut self, size: usize, align: usize) -> *mut u8 {
        if self.block.is_null() {
            return core::ptr::null_mut();
        }
        let off = self.off.next_multiple_of(align);
        if off + size > COUNT_AT {
            return core::ptr::null_mut();
        }
        // SAFETY: the block is live (we hold a reference).
        unsafe { count_of(self.block) }.fetch_add(1, Ordering::Relaxed);
        self.off = off + size;
        // SAFETY: `off` is inside the block.
        unsafe { self.block.add(off) }
    }

    /// Makes `fresh` (a new 16-byte object) the current block, with the
    /// cache's reference and one for a first piece at offset 0 of `size`
    /// bytes. Returns the old block if that dropped its last reference (the
    /// caller frees it).
    ///
    /// # Safety
    ///
    /// `fresh` is a live, unused 16-byte object.
    pub unsafe fn replace(&mut self, fresh: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: `fresh` is ours; its count byte starts life here.
        unsafe { fresh.add(COUNT_AT).write(2) };
        let old = core::mem::replace(&mut self.block, fresh);
        self.off = size;
        if old.is_null() {
            return old;
        }
        // SAFETY: we held a reference on `old`.
        unsafe { release(old) }
    }

    /// Drops the cache's reference (flush); returns the block if it is to
    /// be freed.
    pub fn drop_current(&mut self) -> *mut u8 {
        let old = core::mem::replace(&mut self.block, core::ptr::null_mut());
        self.off = 0;
        if old.is_null() {
            return old;
        }
        // SAFETY: we held a reference on `old`.
        unsafe { release(old) }
    }
}

impl Default for Tiny {
    fn default() -> Self {
        Self::new()
    }
}

/// Drops one reference on `block`; returns it if that was the last (the
/// caller frees the 16-byte object), else null.
///
/// # Safety
///
/// The caller holds a reference on `block` (a piece or the cache's).
#[inline]
pub unsafe fn release(block: *mut u8) -> *mut u8 {
    // SAFETY: the block is live while we hold a reference.
    if unsafe { count_of(block) }.fetch_sub(1, Ordering::AcqRel) == 1 {
        block
    } else {
        core::ptr::null_mut()
    }
}
