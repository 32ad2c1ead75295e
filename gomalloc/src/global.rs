//! `GoMalloc`, the `GlobalAlloc`: the allocation and free paths of the map
//! in the crate docs, and large objects.

use crate::scavenger::{HeapSource, safe_point, tick, want_thread};
use crate::thread::{current, current_or_make, with_orphan};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use mcentral::Centrals;
use mheap::{
    FaultInjecting, FaultPlan, HeapConfig, MHeap, OsPageSource, PAGE_SHIFT, PAGE_SIZE,
    ReleaseAdvice,
};
use sizeclass::{MAX_SMALL_SIZE, NUM_CLASSES, SIZE_CLASSES};

/// The page heap of the process.
///
/// The OS page source sits behind a [`FaultInjecting`] adapter whose plan is
/// `Never` unless a test sets one ([`inject_os_faults`]): it costs a compare
/// on each arena reservation, nothing on any allocation path.
pub(crate) static HEAP: MHeap<FaultInjecting<OsPageSource>> = MHeap::new(
    FaultInjecting::new(OsPageSource::new(ReleaseAdvice::DontNeed), FaultPlan::Never),
    HeapConfig::DEFAULT,
);

/// Makes the OS page source under the heap fail the requests `plan` names
/// (`FaultPlan::Never` heals it), so that tests reach gomalloc's
/// out-of-memory paths: every allocation that needs memory the heap does
/// not hold then returns null. For tests only.
#[doc(hidden)]
pub fn inject_os_faults(plan: FaultPlan) {
    HEAP.with_source(|s| s.set_plan(plan));
}

/// The central lists of the process, over the page heap (through
/// [`HeapSource`], which drives the scavenger on the way).
pub(crate) static CENTRAL: Centrals<HeapSource> = Centrals::new(HeapSource);

/// Large-object counters (small objects are counted by the caches).
pub(crate) static LARGE_ALLOCS: AtomicU64 = AtomicU64::new(0);
pub(crate) static LARGE_FREES: AtomicU64 = AtomicU64::new(0);
/// Bytes of large spans handed out, ever (growth in place included).
pub(crate) static LARGE_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes of large spans live now.
pub(crate) static LARGE_LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

/// The gomalloc global allocator. Put it behind `#[global_allocator]`:
///
/// ```
/// #[global_allocator]
/// static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;
///
/// let v: Vec<u64> = (0..1000).collect();
/// assert_eq!(v.iter().sum::<u64>(), 499_500);
/// ```
///
/// All instances share one heap: the type is a handle.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoMalloc;

/// Large blocks at least this long move to their new place in `realloc` by
/// remapping their pages ([`move_pages`]) instead of copying them.
///
/// Below it the copy is cheap and the remap's cost (a split of the memory
/// map, which the kernel bounds per process) not worth it.
pub(crate) const MOVE_MIN_BYTES: usize = 4 << 20;

/// Moves the pages holding `len` bytes at `src` to `dst` with
/// `mremap(MREMAP_FIXED | MREMAP_DONTUNMAP)`: the kernel moves the page
/// table entries, so nothing is copied and the resident set never holds
/// both copies (a `Vec` doubling to 256 MiB otherwise peaks at 384 MiB);
/// the old range stays mapped, empty, for the heap to re-use. Returns
/// whether it moved; on `false` (an old kernel, or a range across two
/// mappings) nothing changed and the caller copies.
///
/// # Safety
///
/// `src` and `dst` start large spans of this heap; `dst`'s span is at least
/// as long as `len` rounded up to pages, `src`'s holds `len` bytes, and
/// nothing else uses either during the call.
pub(crate) unsafe fn move_pages(src: *mut u8, dst: *mut u8, len: usize) -> bool {
    let bytes = len.next_multiple_of(PAGE_SIZE);
    // SAFETY: both ranges are page-aligned, private anonymous memory of the
    // heap that the caller owns alone; `MREMAP_FIXED` replaces the pages at
    // `dst` (not yet written), `MREMAP_DONTUNMAP` leaves `src` mapped.
    let r = unsafe {
        libc::mremap(
            src.cast(),
            bytes,
            bytes,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP,
            dst.cast::<libc::c_void>(),
        )
    };
    r == dst.cast()
}

/// Where a request is served.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// An object of this small size class.
    Small(usize),
    /// Its own span.
    Large,
}

/// The route of a request of `size` bytes at `align`.
#[inline(always)]
pub(crate) fn route(size: usize, align: usize) -> Route {
    match small_class(size, align) {
        Some(class) => Route::Small(class),
        None => Route::Large,
    }
}

/// The small size class serving `size` bytes at `align`, or `None` when the
/// request goes to the heap as a large object.
///
/// Objects of a class lie at multiples of its size from a page-aligned span
/// start, so a class serves an alignment that divides its size.
#[inline(always)]
fn small_class(size: usize, align: usize) -> Option<usize> {
    // Hardened: every object has a second word, for its double-free tag.
    #[cfg(feature = "hardened")]
    let size = size.max(crate::hardened::MIN_SMALL_SIZE);
    // The common case first: one compare pair and one table load.
    if size <= 1024 && align <= 8 {
        // SAFETY: a class looked up in `SIZE_CLASSES`.
        return Some(unsafe { known_class(SIZE_CLASSES.class_of_upto_1k(size)) });
    }
    let class = small_class_other(size, align)?;
    // SAFETY: a class looked up in `SIZE_CLASSES`.
    Some(unsafe { known_class(class) })
}

/// `class`, with its bound told to the optimizer: a cache's per-class
/// arrays are then indexed by it with no bounds check (a compare and a
/// branch on each malloc and free fast path).
///
/// # Safety
///
/// `class < NUM_CLASSES`: a class looked up in `SIZE_CLASSES` (every
/// entry of its tables is one, checked at compile time in `sizeclass`) or
/// the class of a small-object span (made for such a class).
#[inline(always)]
pub(crate) unsafe fn known_class(class: usize) -> usize {
    // SAFETY: caller's contract.
    unsafe { core::hint::assert_unchecked(class < NUM_CLASSES) };
    class
}

#[inline]
fn small_class_other(size: usize, align: usize) -> Option<usize> {
    if align <= 8 {
        if size <= MAX_SMALL_SIZE {
            return Some(SIZE_CLASSES.class_of(size.max(1)));
        }
        return None;
    }
    small_class_aligned(size, align)
}

#[inline]
fn small_class_aligned(size: usize, align: usize) -> Option<usize> {
    if align > PAGE_SIZE || size > MAX_SMALL_SIZE {
        return None;
    }
    // `align` is a power of two: mask instead of dividing (two `div`s
    // otherwise, tens of cycles each).
    let rounded = (size.max(1) + align - 1) & !(align - 1);
    if rounded > MAX_SMALL_SIZE {
        return None;
    }
    let class = SIZE_CLASSES.class_of(rounded);
    (SIZE_CLASSES.size_of_class(class) & (align - 1) == 0).then_some(class)
}

/// Runs `f` with the calling thread's cache (made on first use), or with
/// the shared cache when the thread has none.
#[inline]
fn with_cache<R>(f: impl FnOnce(&mut mcache::MCache) -> R) -> R {
    match current() {
        Some(cache) => f(cache),
        None => match current_or_make() {
            Some(cache) => f(cache),
            None => with_orphan(f),
        },
    }
}

/// Allocates an object of `class` for the calling thread.
#[inline(always)]
pub(crate) fn alloc_small(class: usize) -> *mut u8 {
    let p = match current() {
        Some(cache) => cache.alloc(class, &CENTRAL),
        None => alloc_small_slow(class),
    };
    #[cfg(feature = "hardened")]
    // SAFETY: `p` is null or an object of `class` just handed out.
    unsafe {
        crate::hardened::on_alloc_small(p)
    };
    p
}

#[cold]
#[inline(never)]
fn alloc_small_slow(class: usize) -> *mut u8 {
    with_cache(|cache| cache.alloc(class, &CENTRAL))
}

/// Frees `ptr`, an object of `class`: onto the stash from 64 bytes (no
/// bounds test: see the crate docs, "Free"), else onto the current span's
/// list when it lies there.
///
/// # Safety
///
/// `ptr` was allocated by gomalloc with a layout of class `class` and is not
/// used afterwards.
#[inline(always)]
#[cfg_attr(feature = "hardened", allow(dead_code))] // hardened: `free_small_in`
pub(crate) unsafe fn free_small(ptr: *mut u8, class: usize) {
    if let Some(cache) = current() {
        if class >= mcache::FIRST_STASH_CLASS {
            // A safe point only when the free took a slow path (an
            // overflow of the stash): not a load and a branch on every free.
            // SAFETY: caller's contract.
            if unsafe { cache.free_other(class, ptr, &CENTRAL) } {
                safe_point();
            }
            return;
        }
        // SAFETY: caller's contract.
        if unsafe { cache.free_local(class, ptr) } {
            return;
        }
        // SAFETY: caller's contract; not in the current span.
        return unsafe { free_small_nonlocal(cache, class, ptr) };
    }
    // SAFETY: caller's contract.
    unsafe { free_small_orphan(ptr) }
}

/// A free of an object under 64 bytes that is not in the current span of
/// the thread's cache: the page map gives its span, then the cache's stash
/// if the cache owns that span, else the span's remote stack
/// (`MCache::free_other`). Not `#[cold]`: a thread freeing what it
/// allocated a span ago, or what another thread allocated, takes it often.
///
/// # Safety
///
/// As for `free_small`.
#[inline(never)]
#[cfg_attr(feature = "hardened", allow(dead_code))]
unsafe fn free_small_nonlocal(cache: &mut mcache::MCache, class: usize, ptr: *mut u8) {
    // SAFETY: `ptr` is a live object of `class` gomalloc handed out
    // (GlobalAlloc's contract).
    if unsafe { cache.free_other(class, ptr, &CENTRAL) } {
        safe_point();
    }
}

/// Frees `ptr`, an object of `span` of class `class` whose span the caller
/// already looked up (the C ABI's checked free), without a second page-map
/// walk.
///
/// # Safety
///
/// `ptr` is a live object of the small-object span `span`, not used
/// afterwards.
#[inline(always)]
pub(crate) unsafe fn free_small_in(span: &mheap::Span, class: usize, ptr: *mut u8) {
    #[cfg(feature = "hardened")]
    // SAFETY: `ptr` starts an object of the live span `span` (caller), of
    // 16 bytes or more under the feature.
    unsafe {
        crate::hardened::on_free_small(ptr)
    };
    if let Some(cache) = current() {
        // SAFETY: caller's contract.
        unsafe {
            if class < mcache::FIRST_STASH_CLASS && cache.free_local(class, ptr) {
                return;
            }
            if cache.free_other_in(class, span, ptr, &CENTRAL) {
                safe_point();
            }
        }
        return;
    }
    // SAFETY: caller's contract.
    unsafe { free_small_orphan(ptr) }
}

/// A free by a thread without a cache of its own.
///
/// # Safety
///
/// As for `free_small`.
#[cold]
#[inline(never)]
unsafe fn free_small_orphan(ptr: *mut u8) {
    let Some(span) = HEAP.span_of(ptr as usize) else {
        crate::hardened::bad_free(ptr, None);
    };
    match current_or_make() {
        // SAFETY: `ptr` is an allocated object of `span` (caller).
        Some(cache) => unsafe { cache.free(span, ptr, &CENTRAL) },
        None => with_orphan(|cache| {
            // SAFETY: as above.
            unsafe { cache.free(span, ptr, &CENTRAL) }
        }),
    }
}

/// The largest object gomalloc will try to allocate: the machine's RAM
/// plus swap, read once with `sysinfo(2)` (which does not allocate).
///
/// The heap maps with `MAP_NORESERVE`, so the kernel's own refusal of an
/// allocation that could never be backed (its overcommit heuristic) does not
/// apply; without this bound a request of a few TiB would be "served" and
/// its page-map metadata alone (0.1% of it) would exhaust memory.
fn max_large() -> usize {
    use core::sync::atomic::AtomicUsize;
    static MAX: AtomicUsize = AtomicUsize::new(0);
    let m = MAX.load(Relaxed);
    if m != 0 {
        return m;
    }
    // SAFETY: `sysinfo` fills the struct we pass; all-zero is a valid
    // starting value for this plain C struct.
    let mut info: libc::sysinfo = unsafe { core::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    let m = if unsafe { libc::sysinfo(&mut info) } == 0 {
        let unit = (info.mem_unit as usize).max(1);
        ((info.totalram as usize).saturating_add(info.totalswap as usize)).saturating_mul(unit)
    } else {
        usize::MAX
    };
    let m = m.max(1 << 30);
    MAX.store(m, Relaxed);
    m
}

/// Allocates a large object: its own span of whole pages.
#[cold]
fn alloc_large(size: usize, align: usize, zero: bool) -> *mut u8 {
    if size > max_large() {
        return ptr::null_mut();
    }
    // Room for the canary after `size` when the large-object checks are on.
    let Some(npages) = size
        .max(1)
        .checked_add(crate::hardened::large_extra())
        .and_then(|n| n.checked_next_multiple_of(PAGE_SIZE))
    else {
        return ptr::null_mut();
    };
    crate::options::ensure_for_alloc();
    safe_point();
    let r = HEAP.alloc_pages(npages >> PAGE_SHIFT, align);
    tick();
    match r {
        Ok(a) => {
            LARGE_ALLOCS.fetch_add(1, Relaxed);
            LARGE_BYTES.fetch_add(a.span.bytes() as u64, Relaxed);
            LARGE_LIVE_BYTES.fetch_add(a.span.bytes() as u64, Relaxed);
            let p = a.span.start() as *mut u8;
            if zero && !a.zeroed {
                // SAFETY: the span is ours and at least `size` bytes long.
                unsafe { p.write_bytes(0, size) };
            }
            if crate::hardened::large_checks() {
                // SAFETY: the span is ours and holds `size` bytes and the
                // canary's (`large_extra` above).
                unsafe { crate::hardened::arm_large(a.span, p, size) };
            }
            p
        }
        Err(_) => ptr::null_mut(),
    }
}

/// Frees a large object of `size` bytes (its layout's).
///
/// # Safety
///
/// `ptr` came from `alloc_large` and is not used afterwards.
#[cold]
unsafe fn free_large(ptr: *mut u8, size: usize) {
    let span = large_span_of(ptr);
    if crate::hardened::large_checks() {
        // SAFETY: `span` is the live large span starting at `ptr`.
        unsafe { crate::hardened::check_large(span, ptr, Some(size)) };
    }
    // SAFETY: the span holds exactly this object, which the caller gives up.
    unsafe { free_large_span(span) };
}

/// The span of the large object `ptr` that a `dealloc` or `realloc` with a
/// large layout passes; aborts with the message that says what is wrong
/// when `ptr` is not the start of a live large object.
#[inline]
fn large_span_of(ptr: *mut u8) -> &'static mheap::Span {
    match HEAP.span_of(ptr as usize) {
        Some(s) if s.size_class() == 0 && s.start() == ptr as usize => s,
        _ => crate::hardened::bad_free(ptr, Some(0)),
    }
}

/// Gives a large object's span back to the heap.
///
/// # Safety
///
/// `span` is the live span of one large object, not used afterwards.
pub(crate) unsafe fn free_large_span(span: &mheap::Span) {
    // SAFETY: caller's contract.
    unsafe { free_large_span_of(span, false) }
}

/// [`free_large_span`], for a span whose pages `moved` (true) to another
/// block by [`move_pages`]: the heap records them as released, so it
/// re-uses resident memory first.
///
/// # Safety
///
/// As for `free_large_span`.
pub(crate) unsafe fn free_large_span_of(span: &mheap::Span, moved: bool) {
    if crate::hardened::large_checks() {
        crate::hardened::disarm(span);
    }
    LARGE_FREES.fetch_add(1, Relaxed);
    LARGE_LIVE_BYTES.fetch_sub(span.bytes() as u64, Relaxed);
    // SAFETY: caller's contract.
    unsafe {
        if moved {
            HEAP.free_span_released(span);
        } else {
            HEAP.free_span(span);
        }
    }
    want_thread();
    tick();
    safe_point();
}

/// Resizes a large object's span in place to `pages` pages, keeping the
/// byte counters; returns whether it did.
///
/// # Safety
///
/// `span` is the live span of one large object, which the caller owns
/// exclusively during the call.
pub(crate) unsafe fn resize_large(span: &mheap::Span, pages: usize) -> bool {
    let old = span.bytes() as u64;
    // SAFETY: caller's contract.
    if !unsafe { HEAP.resize_in_place(span, pages) } {
        return false;
    }
    let new = span.bytes() as u64;
    if new >= old {
        LARGE_BYTES.fetch_add(new - old, Relaxed);
        LARGE_LIVE_BYTES.fetch_add(new - old, Relaxed);
    } else {
        LARGE_LIVE_BYTES.fetch_sub(old - new, Relaxed);
    }
    true
}

// SAFETY: every returned block is at least `layout.size()` bytes, aligned to
// `layout.align()` (small classes are chosen so that their size is a
// multiple of the alignment, large spans are aligned by the heap), and not
// handed out again until freed; no path unwinds (invariant failures abort
// through `fatal`), and nothing calls the global allocator.
unsafe impl GlobalAlloc for GoMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match route(layout.size(), layout.align()) {
            Route::Small(class) => alloc_small(class),
            Route::Large => alloc_large(layout.size(), layout.align(), false),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match route(layout.size(), layout.align()) {
            // Hardened: the pointer checked as the C path checks it (an
            // object start, of the layout's class), and no second page-map
            // walk after.
            #[cfg(feature = "hardened")]
            Route::Small(class) => {
                let span = crate::hardened::small_span(ptr, class);
                // SAFETY: `ptr` starts an object of `span`, of `class`,
                // which the caller gives up.
                unsafe { free_small_in(span, class, ptr) }
            }
            // SAFETY: `ptr` was allocated with this layout (GlobalAlloc).
            #[cfg(not(feature = "hardened"))]
            Route::Small(class) => unsafe { free_small(ptr, class) },
            // SAFETY: as above.
            Route::Large => unsafe { free_large(ptr, layout.size()) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match route(layout.size(), layout.align()) {
            Route::Large => alloc_large(layout.size(), layout.align(), true),
            Route::Small(class) => {
                // A never-used object of a span fresh from the OS needs no
                // memset.
                let (p, dirty) = with_cache(|cache| cache.alloc_zeroed(class, &CENTRAL));
                if dirty && !p.is_null() {
                    // SAFETY: the object is at least `layout.size()` bytes.
                    unsafe { p.write_bytes(0, layout.size()) };
                }
                #[cfg(feature = "hardened")]
                // SAFETY: `p` is null or an object of `class` just handed
                // out.
                unsafe {
                    crate::hardened::on_alloc_small(p)
                };
                p
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // The old block's span when it is large (looked up once, checked).
        let mut old_large = None;
        match (route(layout.size(), align), route(new_size, align)) {
            (Route::Small(a), Route::Small(b)) if a == b => {
                #[cfg(feature = "hardened")]
                crate::hardened::small_span(ptr, a);
                return ptr;
            }
            (Route::Large, new) => {
                let span = large_span_of(ptr);
                if crate::hardened::large_checks() {
                    // SAFETY: the live large span starting at `ptr`.
                    unsafe { crate::hardened::check_large(span, ptr, Some(layout.size())) };
                }
                if new == Route::Large {
                    let Some(bytes) = new_size
                        .max(1)
                        .checked_add(crate::hardened::large_extra())
                        .and_then(|n| n.checked_next_multiple_of(PAGE_SIZE))
                    else {
                        return ptr::null_mut();
                    };
                    // SAFETY: a live large span of ours; the caller owns it
                    // exclusively for this call.
                    if unsafe { resize_large(span, bytes >> PAGE_SHIFT) } {
                        if crate::hardened::large_checks() {
                            // SAFETY: the span holds `new_size` bytes and
                            // the canary's now.
                            unsafe { crate::hardened::arm_large(span, ptr, new_size) };
                        }
                        return ptr;
                    }
                }
                old_large = Some(span);
            }
            // Hardened: check the old pointer before anything is copied.
            #[cfg(feature = "hardened")]
            (Route::Small(a), _) => {
                crate::hardened::small_span(ptr, a);
            }
            #[cfg(not(feature = "hardened"))]
            _ => {}
        }
        // SAFETY: `new_size` with the old alignment is a valid layout
        // (GlobalAlloc::realloc's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: non-zero size (contract).
        let fresh = unsafe { self.alloc(new_layout) };
        if !fresh.is_null() {
            let len = layout.size().min(new_size);
            // SAFETY: both blocks are live and at least `len` long; they
            // are distinct allocations, so they do not overlap. A large old
            // block is a whole span of ours, as is a large new one.
            unsafe {
                let moved =
                    len >= MOVE_MIN_BYTES && old_large.is_some() && move_pages(ptr, fresh, len);
                if moved {
                    // The move replaced whole pages of `fresh`, its canary's
                    // maybe (`fresh` is large: `new_size >= len`).
                    if crate::hardened::large_checks() {
                        crate::hardened::write_canary(fresh, new_size);
                    }
                } else {
                    ptr::copy_nonoverlapping(ptr, fresh, len);
                }
                // The old block was checked above (a moved one's pages read
                // as zero now, its canary too).
                match old_large {
                    Some(span) => free_large_span_of(span, moved),
                    None => self.dealloc(ptr, layout),
                }
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `MOVE_MIN_BYTES` and more keeps its contents through a
    /// `realloc` that has to move it, whether the pages move or are copied,
    /// and the old pages are left mapped, empty, for the heap to re-use.
    #[test]
    fn realloc_moves_big_blocks_with_their_contents() {
        let a = GoMalloc;
        let old = Layout::from_size_align(MOVE_MIN_BYTES + 12_345, 8).unwrap();
        // SAFETY: non-zero layouts; every block is used within its length.
        unsafe {
            let p = a.alloc(old);
            assert!(!p.is_null());
            for i in (0..old.size()).step_by(511) {
                p.add(i).write((i % 251) as u8);
            }
            // A neighbour right after the block, so it cannot grow in place.
            let blocker = a.alloc(Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap());
            let q = a.realloc(p, old, 3 * MOVE_MIN_BYTES);
            assert!(!q.is_null());
            for i in (0..old.size()).step_by(511) {
                assert_eq!(q.add(i).read(), (i % 251) as u8, "byte {i} after the move");
            }
            // Direct: pages move, the source reads as zero afterwards.
            let src = a.alloc(old);
            let dst = a.alloc(old);
            src.write_bytes(0x5A, old.size());
            if move_pages(src, dst, old.size()) {
                assert!((0..old.size()).step_by(4096).all(|i| *dst.add(i) == 0x5A));
                assert!((0..old.size()).step_by(4096).all(|i| *src.add(i) == 0));
            } else {
                eprintln!("mremap(MREMAP_DONTUNMAP) refused here: realloc copies");
            }
            // The raw move carried `src`'s bytes over both canaries.
            if crate::hardened::large_checks() {
                crate::hardened::write_canary(src, old.size());
                crate::hardened::write_canary(dst, old.size());
            }
            a.dealloc(src, old);
            a.dealloc(dst, old);
            a.dealloc(q, Layout::from_size_align(3 * MOVE_MIN_BYTES, 8).unwrap());
            a.dealloc(
                blocker,
                Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap(),
            );
        }
    }
}
