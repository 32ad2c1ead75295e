//! [`OsPageSource`]: address space from anonymous memory mappings of the OS.
//!
//! `reserve` maps fresh anonymous memory (read/write, private, `MAP_NORESERVE`)
//! through memmap2 and trims it to the requested alignment; `commit` is free;
//! `release` hands the physical pages back with `madvise`. The source keeps
//! no list of its mappings and never unmaps what it handed out: the heap keeps
//! its address space for the life of the process.
//!
//! It needs no synchronisation of its own: every method takes `&mut self`, and
//! the heap calls them with its lock held. The kernel calls themselves are
//! thread-safe, so two sources in one process do not interfere either.
//!
//! # The states, on Linux
//!
//! - **Reserved**: a `MAP_NORESERVE` anonymous mapping. It is already
//!   readable and writable; no page is resident until touched, and the kernel
//!   does not charge it against the commit limit.
//! - **Committed**: the same. `commit` makes no system call: the first touch
//!   of each page faults in a zero page.
//! - **Released**: `madvise(MADV_DONTNEED)` (the default) drops the pages at
//!   once and the range reads as zero on the next touch; `madvise(MADV_FREE)`
//!   lets the kernel take them lazily, under memory pressure, so the range
//!   keeps unspecified contents (old data or zeros).
//!
//! `MAP_NORESERVE` is what makes large aligned reservations cheap; the price
//! is the usual one of overcommit: when the machine is out of memory, the
//! first touch of a page is what fails (the OOM killer), not a call here.
//! Under `vm.overcommit_memory = 2` the kernel ignores the flag and charges
//! every reservation, alignment padding included until it is trimmed.
//!
//! # No allocation
//!
//! Nothing here calls the global allocator. memmap2 0.9.12's
//! `MmapOptions::map_anon` (`src/unix.rs`: `MmapInner::map_anon` →
//! `MmapInner::new` → `libc::mmap`) builds no heap value on its way to
//! `mmap` and reports failure with `io::Error::last_os_error()`, an errno
//! packed into the error's pointer-sized representation. Its only allocating
//! path is the "length overflows isize" error, which `reserve` rules out by
//! refusing such lengths first. Errors are read back with
//! `io::Error::raw_os_error`, never formatted, and the `MmapMut` is never
//! dropped.

use core::mem::ManuallyDrop;
use core::ptr::NonNull;

use super::{PageSource, PageSourceError, SOURCE_GRANULE, check_request};

/// How [`OsPageSource::release`](PageSource::release) gives pages back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReleaseAdvice {
    /// `MADV_DONTNEED`: the pages leave the resident set at once and the range
    /// reads as zero afterwards, so reused memory needs no zeroing. Each
    /// re-touch faults in a fresh zero page.
    #[default]
    DontNeed,
    /// `MADV_FREE` (Linux 4.5 and later): the kernel reclaims the pages only
    /// under memory pressure, so a range reused soon costs no page faults,
    /// but its contents are unspecified and resident memory falls later.
    /// Where the kernel does not know `MADV_FREE` (`EINVAL`), the source
    /// falls back to `MADV_DONTNEED` for that call.
    Free,
}

/// A [`PageSource`] over anonymous memory mappings of the operating system.
///
/// Invariant: every range it returned lies in a mapping it made and never
/// unmaps; the mapping's unaligned head and tail were unmapped at once.
#[derive(Debug)]
pub struct OsPageSource {
    /// How `release` advises the kernel.
    advice: ReleaseAdvice,
    /// The OS page size, or 0 until the first `reserve` asks the OS. A
    /// `const fn new` cannot ask it.
    os_page: usize,
    /// Bytes handed out by `reserve` so far (trimmed padding not counted).
    reserved: usize,
}

impl OsPageSource {
    /// A source that releases memory with `advice`. `const`, so that it can
    /// live inside a `static` heap.
    pub const fn new(advice: ReleaseAdvice) -> Self {
        Self {
            advice,
            os_page: 0,
            reserved: 0,
        }
    }

    /// How this source releases memory.
    pub fn advice(&self) -> ReleaseAdvice {
        self.advice
    }

    /// Bytes of address space handed out by `reserve` so far.
    pub fn reserved_bytes(&self) -> usize {
        self.reserved
    }

    /// The OS page size, asked once and cached.
    fn os_page(&mut self) -> usize {
        if self.os_page == 0 {
            // SAFETY: `sysconf` only reads a system constant; it takes no
            // pointer and does not allocate.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            self.os_page = match usize::try_from(page) {
                Ok(p) if p.is_power_of_two() => p,
                // Unknown: assume the common 4 KiB. Worst case `munmap` or
                // `madvise` refuse an unaligned range, which is reported or
                // harmless (see `trim` and `release`).
                _ => 4096,
            };
        }
        self.os_page
    }

    /// Unmaps `addr..addr+len` of a mapping this source made, if `len > 0`.
    ///
    /// A failure leaves the range mapped, which only wastes address space:
    /// nobody will touch it. (`munmap` fails only when splitting a mapping
    /// exceeds the process's map count; trimming the head or tail of a
    /// mapping never splits it.)
    fn trim(addr: *mut u8, len: usize) {
        if len > 0 {
            // SAFETY: the caller passes a page-aligned range of a mapping
            // this source has just made and has not handed out, so no live
            // reference points into it; `munmap` does not allocate.
            let _ = unsafe { libc::munmap(addr.cast(), len) };
        }
    }

    /// `madvise(ptr, len, advice)`, as a `Result` carrying `errno`.
    fn madvise(ptr: *mut u8, len: usize, advice: libc::c_int) -> Result<(), i32> {
        // SAFETY: the caller passes a page-aligned range inside mappings this
        // source made, whose contents nobody uses until the next commit
        // (`release`'s contract); `madvise` does not allocate.
        let rc = unsafe { libc::madvise(ptr.cast(), len, advice) };
        if rc == 0 { Ok(()) } else { Err(last_errno()) }
    }
}

impl Default for OsPageSource {
    /// A source that releases with [`ReleaseAdvice::DontNeed`].
    fn default() -> Self {
        Self::new(ReleaseAdvice::DontNeed)
    }
}

/// The calling thread's `errno`, read without allocating.
fn last_errno() -> i32 {
    // `last_os_error` stores the errno inside the error value itself.
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

// SAFETY: the promises of `PageSource`:
// - `reserve` returns the aligned `len`-byte part of a brand-new mapping the
//   kernel has just created at an address no other mapping uses; it never
//   unmaps anything it handed out (the `MmapMut` is never dropped), so the
//   kernel cannot place a later mapping over it, and the range is never
//   returned again.
// - Memory of a fresh anonymous private mapping is readable, writable and
//   reads as zero; `commit` has nothing to do. After `MADV_DONTNEED` a private
//   anonymous range reads as zero on Linux and Android, which is the only
//   case where `released_reads_zero` returns true (partial OS pages at the
//   edges of a released range are zeroed by hand, see `release`).
// - No method allocates: see "No allocation" in the module docs.
unsafe impl PageSource for OsPageSource {
    fn reserve(&mut self, len: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
        check_request(len, align)?;
        let exhausted = PageSourceError::Exhausted { requested: len };
        let page = self.os_page();

        // `mmap` returns page-aligned memory: for a larger alignment map
        // `align - page` bytes more and cut the unaligned head and tail off.
        let pad = align.saturating_sub(page);
        let total = len.checked_add(pad).ok_or(exhausted)?;
        // No mapping can be that long; memmap2 would also refuse it, with an
        // error that allocates its message.
        if total > isize::MAX as usize {
            return Err(exhausted);
        }

        let map = memmap2::MmapOptions::new()
            .len(total)
            .no_reserve_swap()
            .map_anon()
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOMEM) | None => exhausted,
                Some(errno) => PageSourceError::Os { errno },
            })?;
        // Never unmapped by memmap2: the heap keeps its address space.
        let mut map = ManuallyDrop::new(map);
        let raw = map.as_mut_ptr();
        let raw_addr = raw as usize;

        // `aligned <= raw + pad` and `aligned + len <= raw + total`, which the
        // kernel has just mapped, so neither sum overflows.
        let aligned = raw_addr.next_multiple_of(align);
        let head = aligned - raw_addr;
        // The kernel mapped whole pages: `total` rounded up.
        let map_end = raw_addr + total.next_multiple_of(page);
        let tail_start = (aligned + len).next_multiple_of(page);
        Self::trim(raw, head);
        Self::trim(
            raw.wrapping_add(tail_start - raw_addr),
            map_end - tail_start,
        );

        self.reserved += len;
        // `raw` is not null (mmap succeeded) and `aligned >= raw`.
        NonNull::new(raw.wrapping_add(head)).ok_or(exhausted)
    }

    /// Makes no system call: the mapping is readable and writable from the
    /// start, and `MAP_NORESERVE` memory is charged to nobody until touched.
    unsafe fn commit(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError> {
        debug_assert!((ptr.as_ptr() as usize).is_multiple_of(SOURCE_GRANULE));
        debug_assert!(len.is_multiple_of(SOURCE_GRANULE));
        Ok(())
    }

    /// `madvise`s the whole OS pages of the range. Where the OS page is larger
    /// than [`SOURCE_GRANULE`] (64 KiB pages), the parts of the range that
    /// share an OS page with memory outside it cannot be released; with
    /// `DontNeed` they are zeroed by hand so that the range still reads as
    /// zero. An `madvise` error is returned as [`PageSourceError::Os`] (an
    /// `ENOMEM` here means the range was not mapped: a caller bug, not out of
    /// memory) and the range stays Committed.
    unsafe fn release(&mut self, ptr: NonNull<u8>, len: usize) -> Result<(), PageSourceError> {
        debug_assert!((ptr.as_ptr() as usize).is_multiple_of(SOURCE_GRANULE));
        debug_assert!(len.is_multiple_of(SOURCE_GRANULE));
        let page = self.os_page();
        let start = ptr.as_ptr() as usize;
        let end = start + len;
        let inner_start = start.next_multiple_of(page);
        let inner_end = end - end % page;
        let zero_edges = self.advice == ReleaseAdvice::DontNeed;
        let at = |addr: usize| ptr.as_ptr().wrapping_add(addr - start);

        if inner_start >= inner_end {
            // No whole OS page inside the range.
            if zero_edges {
                // SAFETY: `ptr..ptr+len` is Committed memory of this source
                // whose contents nobody uses any more (`release`'s contract).
                unsafe { ptr.as_ptr().write_bytes(0, len) };
            }
            return Ok(());
        }

        let advice = match self.advice {
            ReleaseAdvice::DontNeed => libc::MADV_DONTNEED,
            ReleaseAdvice::Free => libc::MADV_FREE,
        };
        let mut result = Self::madvise(at(inner_start), inner_end - inner_start, advice);
        if result == Err(libc::EINVAL) && self.advice == ReleaseAdvice::Free {
            // A kernel older than 4.5 does not know `MADV_FREE`.
            result = Self::madvise(
                at(inner_start),
                inner_end - inner_start,
                libc::MADV_DONTNEED,
            );
        }
        result.map_err(|errno| PageSourceError::Os { errno })?;

        if zero_edges {
            // SAFETY: both edges lie inside `ptr..ptr+len`, Committed memory of
            // this source whose contents nobody uses any more.
            unsafe {
                at(start).write_bytes(0, inner_start - start);
                at(inner_end).write_bytes(0, end - inner_end);
            }
        }
        Ok(())
    }

    fn released_reads_zero(&self) -> bool {
        // Only Linux (and Android) promise zero-fill after `MADV_DONTNEED` on
        // private anonymous memory; the BSDs and macOS may keep the data.
        self.advice == ReleaseAdvice::DontNeed
            && cfg!(any(target_os = "linux", target_os = "android"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    const GIB: usize = 1 << 30;

    /// Reserves and commits `len` bytes aligned to `align`.
    fn reserve_committed(src: &mut OsPageSource, len: usize, align: usize) -> NonNull<u8> {
        let p = src.reserve(len, align).expect("reserve");
        // SAFETY: `p..p+len` was just reserved from `src`.
        unsafe { src.commit(p, len) }.expect("commit");
        p
    }

    /// Offsets to probe in a range of `len` bytes: the first and last byte of
    /// every granule for small ranges, of every MiB for large ones.
    fn probes(len: usize) -> impl Iterator<Item = usize> {
        let step = if len <= 4 * MIB { SOURCE_GRANULE } else { MIB };
        (0..len)
            .step_by(step)
            .flat_map(move |o| [o, o + step.min(len - o) - 1])
    }

    #[test]
    fn reserve_is_aligned_zeroed_and_writable() {
        let mut src = OsPageSource::default();
        let cases = [
            (8 * KIB, 8 * KIB),
            (8 * KIB, 64 * KIB),
            (24 * KIB, 16 * KIB),
            (64 * KIB, 8 * KIB),
            (MIB, 2 * MIB),
            (4 * MIB, 4 * MIB),
            (3 * MIB, 64 * MIB),
            (64 * MIB, GIB),
        ];
        let mut ranges = Vec::new();
        for (len, align) in cases {
            let p = reserve_committed(&mut src, len, align);
            let base = p.as_ptr();
            assert_eq!(base as usize % align, 0, "len {len} align {align}");
            for off in probes(len) {
                // SAFETY: `off < len`, inside the committed range.
                unsafe {
                    assert_eq!(base.add(off).read(), 0, "fresh memory at {off}");
                    base.add(off).write((off % 251) as u8 + 1);
                }
            }
            for off in probes(len) {
                // SAFETY: as above.
                assert_eq!(unsafe { base.add(off).read() }, (off % 251) as u8 + 1);
            }
            ranges.push((base as usize, len));
        }
        // No two ranges overlap.
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:?} overlap");
        }
        assert_eq!(
            src.reserved_bytes(),
            cases.iter().map(|c| c.0).sum::<usize>()
        );
        // Give the touched pages back so the test process stays small.
        for (addr, len) in ranges {
            let p = NonNull::new(addr as *mut u8).unwrap();
            // SAFETY: reserved and committed above; not used afterwards.
            unsafe { src.release(p, len) }.expect("release");
        }
    }

    /// Whether the OS page holding `addr` is mapped (`mincore` fails with
    /// `ENOMEM` on unmapped addresses).
    fn mapped(addr: usize) -> bool {
        let page = OsPageSource::default().os_page();
        let mut vec = 0u8;
        // SAFETY: `mincore` only reads the page tables; `vec` has room for the
        // one page asked about.
        unsafe { libc::mincore((addr & !(page - 1)) as *mut _, page, &mut vec) == 0 }
    }

    #[test]
    fn trimmed_padding_is_unmapped() {
        let mut src = OsPageSource::default();
        let page = src.os_page();
        let (len, align) = (2 * MIB, 16 * MIB);
        // Another test thread may map something right next to a range between
        // `reserve` and the check (or a neighbouring mapping may be merged with
        // it), so ask for one clean observation out of several.
        let mut clean = 0;
        for _ in 0..8 {
            let start = src.reserve(len, align).unwrap().as_ptr() as usize;
            assert!(mapped(start) && mapped(start + len - 1));
            if !mapped(start - page) && !mapped(start + len) {
                clean += 1;
            }
        }
        assert!(clean > 0, "the padding around a reservation stayed mapped");
    }

    #[test]
    fn dont_need_release_reads_zero() {
        let mut src = OsPageSource::new(ReleaseAdvice::DontNeed);
        assert!(src.released_reads_zero() || !cfg!(target_os = "linux"));
        let len = MIB;
        let p = reserve_committed(&mut src, len, SOURCE_GRANULE);
        // SAFETY: `p..p+len` is committed and only used here.
        let bytes = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), len) };
        bytes.fill(0xAB);

        // Release the middle quarter only.
        let (lo, hi) = (len / 4, len / 2);
        let mid = NonNull::new(bytes[lo..].as_mut_ptr()).unwrap();
        // SAFETY: a granule-aligned part of the committed range, not read
        // again before the commit below.
        unsafe { src.release(mid, hi - lo) }.unwrap();
        // SAFETY: the same range, released above.
        unsafe { src.commit(mid, hi - lo) }.unwrap();
        // SAFETY: `p..p+len` is committed and only used here.
        let bytes = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), len) };
        if src.released_reads_zero() {
            assert!(bytes[lo..hi].iter().all(|&b| b == 0));
        }
        assert!(bytes[..lo].iter().all(|&b| b == 0xAB));
        assert!(bytes[hi..].iter().all(|&b| b == 0xAB));

        // The whole range, then reuse.
        // SAFETY: committed above; not read before the commit below.
        unsafe { src.release(p, len) }.unwrap();
        // SAFETY: released above.
        unsafe { src.commit(p, len) }.unwrap();
        // SAFETY: `p..p+len` is committed and only used here.
        let bytes = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), len) };
        if src.released_reads_zero() {
            assert!(bytes.iter().all(|&b| b == 0));
        }
        bytes.fill(7);
        assert!(bytes.iter().all(|&b| b == 7));
        // SAFETY: committed; not used afterwards.
        unsafe { src.release(p, len) }.unwrap();
    }

    #[test]
    fn free_release_is_reusable() {
        let mut src = OsPageSource::new(ReleaseAdvice::Free);
        assert_eq!(src.advice(), ReleaseAdvice::Free);
        assert!(!src.released_reads_zero());
        let len = 2 * MIB;
        let p = reserve_committed(&mut src, len, 2 * MIB);
        for round in 0..3u8 {
            // SAFETY: `p..p+len` is committed and only used here.
            let bytes = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), len) };
            bytes.fill(round + 1);
            assert!(bytes.iter().all(|&b| b == round + 1));
            // SAFETY: committed; contents not used before the next commit.
            unsafe { src.release(p, len) }.unwrap();
            // SAFETY: released above. Contents are unspecified now.
            unsafe { src.commit(p, len) }.unwrap();
        }
        // SAFETY: committed; not used afterwards.
        unsafe { src.release(p, len) }.unwrap();
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut src = OsPageSource::default();
        let g = SOURCE_GRANULE;
        for (len, align) in [
            (0, g),
            (g / 2, g),
            (g + 1, g),
            (g, 3 * g),
            (g, g / 2),
            (g, 0),
        ] {
            assert_eq!(
                src.reserve(len, align),
                Err(PageSourceError::BadRequest { len, align }),
                "len {len} align {align}"
            );
        }
        assert_eq!(src.reserved_bytes(), 0);
    }

    #[test]
    fn impossible_sizes_are_exhausted() {
        let mut src = OsPageSource::default();
        let g = SOURCE_GRANULE;
        // `len + align` overflows.
        let huge = usize::MAX - (g - 1);
        assert_eq!(
            src.reserve(huge, 1 << (usize::BITS - 1)),
            Err(PageSourceError::Exhausted { requested: huge })
        );
        // Longer than any mapping may be.
        let len = (isize::MAX as usize + 1) & !(g - 1);
        assert_eq!(
            src.reserve(len, g),
            Err(PageSourceError::Exhausted { requested: len })
        );
        // A length the kernel refuses with ENOMEM (more than the user
        // address space of any 64-bit target today).
        #[cfg(target_pointer_width = "64")]
        {
            let len = 1usize << 62;
            assert_eq!(
                src.reserve(len, g),
                Err(PageSourceError::Exhausted { requested: len })
            );
        }
        assert_eq!(src.reserved_bytes(), 0);
    }

    #[test]
    fn usable_in_a_static() {
        static SOURCE: OsPageSource = OsPageSource::new(ReleaseAdvice::Free);
        assert_eq!(SOURCE.advice(), ReleaseAdvice::Free);
        assert_eq!(OsPageSource::default().advice(), ReleaseAdvice::DontNeed);
        fn is_send<T: Send>() {}
        is_send::<OsPageSource>();
    }
}
