//! [`FixedRegion`]: a page source over one caller-provided buffer.
//!
//! It makes no system call: `reserve` bumps a pointer through the buffer
//! (skipping padding for alignment) and never gives memory back to the
//! buffer; `commit` only checks its arguments; `release` zeroes the range,
//! emulating `MADV_DONTNEED`, so that the heap's "fresh memory needs no
//! zeroing" logic is exercised faithfully. Tests run the whole allocator on
//! it; it also suits an embedded heap in a static buffer.
//!
//! It needs no synchronisation of its own: every method takes `&mut self`, and
//! the heap calls them with its lock held.

use core::ptr::NonNull;

use super::{PageSource, PageSourceError, SOURCE_GRANULE, check_request};

/// A [`PageSource`] that hands out a caller-provided buffer.
///
/// Invariants: `base` is aligned to [`SOURCE_GRANULE`];
/// `base..base+capacity` lies in the caller's buffer, is valid for reads and
/// writes for the life of the region, and is used by nothing else;
/// `capacity` is a multiple of [`SOURCE_GRANULE`]; `used <= capacity`, and
/// `base..base+used` holds everything `reserve` handed out (plus skipped
/// padding), `base+used..base+capacity` nothing.
#[derive(Debug)]
pub struct FixedRegion {
    /// First [`SOURCE_GRANULE`]-aligned address of the buffer.
    base: NonNull<u8>,
    /// Usable bytes from `base`.
    capacity: usize,
    /// The bump offset from `base`: bytes handed out or skipped.
    used: usize,
    /// Bytes handed out by `reserve` (skipped padding not counted).
    reserved: usize,
}

// SAFETY: a `FixedRegion` owns its memory exclusively (the contract of
// `from_raw` and `new`), and nothing in it is tied to a thread, so moving it
// to another thread moves that exclusive ownership along.
unsafe impl Send for FixedRegion {}

impl FixedRegion {
    /// A region over the `len` bytes at `ptr`. The usable part starts at the
    /// first [`SOURCE_GRANULE`]-aligned address and is cut to a whole number of
    /// granules; it may be empty, and then every `reserve` is `Exhausted`.
    ///
    /// # Safety
    ///
    /// `ptr..ptr+len` is valid for reads and writes for the whole life of the
    /// region and of every range it hands out, and nothing else uses it
    /// meanwhile.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> Self {
        let addr = ptr.as_ptr() as usize;
        let skip = addr
            .checked_next_multiple_of(SOURCE_GRANULE)
            .map_or(usize::MAX, |aligned| aligned - addr);
        let (skip, capacity) = if skip > len {
            (0, 0)
        } else {
            (skip, (len - skip) & !(SOURCE_GRANULE - 1))
        };
        // `skip <= len` (or 0), so this stays inside the buffer and non-null.
        let base = NonNull::new(ptr.as_ptr().wrapping_add(skip)).unwrap_or(ptr);
        Self {
            base,
            capacity,
            used: 0,
            reserved: 0,
        }
    }

    /// A region over a buffer that lives, unshared, for the rest of the
    /// program (for example a leaked `Box<[u8]>`).
    pub fn new(buf: &'static mut [u8]) -> Self {
        let len = buf.len();
        // SAFETY: the exclusive `'static` borrow makes the buffer valid for
        // reads and writes forever and unusable by anyone else; a slice's
        // pointer is never null.
        unsafe { Self::from_raw(NonNull::from(buf).cast(), len) }
    }

    /// The usable bytes of the region: the buffer from its first
    /// granule-aligned address, cut to whole granules.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes handed out by `reserve` so far (padding skipped for alignment
    /// not counted).
    pub fn reserved_bytes(&self) -> usize {
        self.reserved
    }

    /// Bytes not yet handed out nor skipped: the most that a request aligned
    /// to [`SOURCE_GRANULE`] can still get.
    pub fn remaining(&self) -> usize {
        self.capacity - self.used
    }

    /// The start of the usable region (aligned to [`SOURCE_GRANULE`]).
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Whether `ptr..ptr+len` lies inside what `reserve` handed out (or
    /// skipped).
    fn in_reserved(&self, ptr: NonNull<u8>, len: usize) -> bool {
        let base = self.base.as_ptr() as usize;
        let start = ptr.as_ptr() as usize;
        start >= base && len <= self.used && start - base <= self.used - len
    }
}

// SAFETY: the promises of `PageSource`:
// - `reserve` hands out `base+off..base+off+len` with `off` at or after the
//   bump offset and `off+len <= capacity`, then moves the bump offset past it:
//   ranges are inside the buffer, aligned (the address, not the offset, is
//   rounded up), disjoint, and never handed out twice.
// - The buffer is readable and writable for the region's life (`from_raw`'s
//   contract), so every range is usable once committed; `reserve` zeroes the
//   range and `release` zeroes it again, so it reads as zero after `commit`
//   from either state, as `released_reads_zero` says.
// - Nothing allocates: bump arithmetic and `write_bytes` only.
unsafe impl PageSource for FixedRegion {
    fn reserve(&mut self, len: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
        check_request(len, align)?;
        let exhausted = PageSourceError::Exhausted { requested: len };
        let base = self.base.as_ptr() as usize;
        // Round the address (not the offset) up; an overflow cannot fit.
        let next = base + self.used;
        let aligned = next.checked_next_multiple_of(align).ok_or(exhausted)?;
        let off = aligned - base;
        if off > self.capacity || len > self.capacity - off {
            return Err(exhausted);
        }
        // `off + len <= capacity`: inside the buffer.
        let ptr = self.base.as_ptr().wrapping_add(off);
        // SAFETY: `ptr..ptr+len` lies in the buffer, which is valid for
        // writes, and past the bump offset, so nobody holds it yet. The
        // buffer's old contents are unknown; Reserved memory must read as
        // zero once committed.
        unsafe { ptr.write_bytes(0, len) };
        self.used = off + len;
        self.reserved += len;
        // Derived from the non-null `base` by a non-wrapping offset.
        NonNull::new(ptr).ok_or(exhausted)
    }

    /// Checks (in debug builds) that the range was reserved; makes no call.
    unsafe fn commit(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError> {
        debug_assert!(
            self.in_reserved(ptr, len),
            "FixedRegion::commit outside the reserved part"
        );
        debug_assert!(
            (ptr.as_ptr() as usize).is_multiple_of(SOURCE_GRANULE)
                && len.is_multiple_of(SOURCE_GRANULE)
        );
        Ok(())
    }

    /// Zeroes the range, as `MADV_DONTNEED` would.
    unsafe fn release(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError> {
        debug_assert!(
            self.in_reserved(ptr, len),
            "FixedRegion::release outside the reserved part"
        );
        // SAFETY: the range lies in what this region reserved (the caller's
        // contract), inside the buffer, which is valid for writes; nobody uses
        // its contents until the next commit.
        unsafe { ptr.as_ptr().write_bytes(0, len) };
        Ok(())
    }

    fn released_reads_zero(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::Layout;

    const G: usize = SOURCE_GRANULE;

    /// A leaked buffer of `len` bytes at an address that is `align`-aligned
    /// plus `misalign`, filled with `fill`, and a region over it.
    fn region(len: usize, align: usize, misalign: usize, fill: u8) -> FixedRegion {
        let layout = Layout::from_size_align(len + misalign, align).unwrap();
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) };
        let raw = NonNull::new(raw).expect("test allocation");
        // SAFETY: `raw` is a fresh allocation of `len + misalign` bytes that
        // is leaked, so it lives forever and belongs to this region alone.
        unsafe {
            raw.as_ptr().write_bytes(fill, len + misalign);
            FixedRegion::from_raw(raw.add(misalign), len)
        }
    }

    /// Reserves and commits.
    fn take(r: &mut FixedRegion, len: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
        let p = r.reserve(len, align)?;
        // SAFETY: just reserved from `r`.
        unsafe { r.commit(p, len) }?;
        Ok(p)
    }

    /// The `len` bytes at `p`.
    fn bytes<'a>(p: NonNull<u8>, len: usize) -> &'a mut [u8] {
        // SAFETY: every caller passes a committed range of a leaked region and
        // holds no other reference to it.
        unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), len) }
    }

    #[test]
    fn usable_part_starts_at_a_granule() {
        let r = region(10 * G + 100, G, 1, 0);
        assert_eq!(r.base().as_ptr() as usize % G, 0);
        // One byte in: the first granule is cut to G - 1 bytes and lost.
        assert_eq!(r.capacity(), 9 * G);
        assert_eq!(r.remaining(), 9 * G);
        assert_eq!(r.reserved_bytes(), 0);

        let r = region(4 * G, G, 0, 0);
        assert_eq!(r.capacity(), 4 * G);

        // Too small to hold one aligned granule.
        let mut r = region(G + 10, G, 20, 0);
        assert_eq!(r.capacity(), 0);
        assert_eq!(
            r.reserve(G, G),
            Err(PageSourceError::Exhausted { requested: G })
        );
        let mut r = region(100, 8, 1, 0);
        assert_eq!(r.capacity(), 0);
        assert!(r.reserve(G, G).is_err());
    }

    #[test]
    fn new_takes_a_static_buffer() {
        let buf: &'static mut [u8] = Box::leak(vec![0x5A; 6 * G].into_boxed_slice());
        let mut r = FixedRegion::new(buf);
        assert!(r.capacity() >= 5 * G);
        let p = take(&mut r, 2 * G, G).unwrap();
        assert!(bytes(p, 2 * G).iter().all(|&b| b == 0));
        fn is_send<T: Send>() {}
        is_send::<FixedRegion>();
    }

    #[test]
    fn exhaustion_then_smaller_request() {
        let mut r = region(8 * G, G, 0, 0);
        let a = take(&mut r, 6 * G, G).unwrap();
        assert_eq!(a, r.base());
        assert_eq!(
            r.reserve(4 * G, G),
            Err(PageSourceError::Exhausted { requested: 4 * G })
        );
        let b = take(&mut r, 2 * G, G).unwrap();
        assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize + 6 * G);
        assert_eq!(r.remaining(), 0);
        assert_eq!(
            r.reserve(G, G),
            Err(PageSourceError::Exhausted { requested: G })
        );
        assert_eq!(r.reserved_bytes(), 8 * G);
        // A huge alignment overflows the address computation: still Exhausted.
        let mut r = region(8 * G, G, 0, 0);
        assert_eq!(
            r.reserve(G, 1 << (usize::BITS - 1)),
            Err(PageSourceError::Exhausted { requested: G })
        );
    }

    #[test]
    fn alignment_padding_is_skipped() {
        let mut r = region(16 * G, 16 * G, 0, 0);
        let a = take(&mut r, G, G).unwrap();
        assert_eq!(a, r.base());
        let b = take(&mut r, G, 4 * G).unwrap();
        assert_eq!(b.as_ptr() as usize % (4 * G), 0);
        assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 4 * G);
        // Three granules skipped, two handed out.
        assert_eq!(r.reserved_bytes(), 2 * G);
        assert_eq!(r.remaining(), 11 * G);
        // The padding is not handed out later either.
        let c = take(&mut r, G, G).unwrap();
        assert_eq!(c.as_ptr() as usize, b.as_ptr() as usize + G);
        // Padding that no longer fits.
        assert_eq!(
            r.reserve(G, 16 * G),
            Err(PageSourceError::Exhausted { requested: G })
        );
        assert!(take(&mut r, 10 * G, G).is_ok());
    }

    #[test]
    fn reserve_zeroes_a_dirty_buffer() {
        let mut r = region(4 * G, G, 0, 0xFF);
        let p = take(&mut r, 3 * G, G).unwrap();
        assert!(bytes(p, 3 * G).iter().all(|&b| b == 0));
        // The rest is untouched until reserved.
        let rest = r.base().as_ptr().wrapping_add(3 * G);
        // SAFETY: inside the leaked buffer, not handed out.
        assert_eq!(unsafe { rest.read() }, 0xFF);
        let q = take(&mut r, G, G).unwrap();
        assert!(bytes(q, G).iter().all(|&b| b == 0));
    }

    #[test]
    fn release_zeroes_the_range() {
        let mut r = region(4 * G, G, 0, 0);
        assert!(r.released_reads_zero());
        let p = take(&mut r, 4 * G, G).unwrap();
        bytes(p, 4 * G).fill(0xCD);
        let mid = NonNull::new(p.as_ptr().wrapping_add(G)).unwrap();
        // SAFETY: a granule-aligned part of the committed range, not read
        // before the commit below.
        unsafe { r.release(mid, 2 * G) }.unwrap();
        // SAFETY: released above.
        unsafe { r.commit(mid, 2 * G) }.unwrap();
        let all = bytes(p, 4 * G);
        assert!(all[..G].iter().all(|&b| b == 0xCD));
        assert!(all[G..3 * G].iter().all(|&b| b == 0));
        assert!(all[3 * G..].iter().all(|&b| b == 0xCD));
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut r = region(4 * G, G, 0, 0);
        for (len, align) in [(0, G), (G - 1, G), (G, 3 * G), (G, G / 2)] {
            assert_eq!(
                r.reserve(len, align),
                Err(PageSourceError::BadRequest { len, align })
            );
        }
        assert_eq!(r.remaining(), 4 * G);
    }
}
