//! The layout-free entry points that a C ABI needs (`gomalloc-capi` builds
//! `libgomalloc.so` on them). This crate exports no C symbols itself: a
//! Rust program using `GoMalloc` still links against libc's `malloc`.
//!
//! Unlike `GlobalAlloc`, a C caller does not say how big the block it frees
//! was, and may pass a pointer gomalloc never handed out. Every function
//! here that takes a pointer finds its span through the checked page-map
//! lookup and aborts with a clear message on a pointer that is not the
//! start of a live gomalloc object, rather than corrupting the heap.

use crate::global::{
    CENTRAL, HEAP, MOVE_MIN_BYTES, Route, alloc_small, free_large_span, free_large_span_of,
    free_small_in, known_class, move_pages, resize_large, route,
};
use core::ptr;
use mheap::{PAGE_SIZE, Span};
use sizeclass::SIZE_CLASSES;

/// The alignment C's `malloc` guarantees on x86-64 and AArch64 for blocks
/// of 16 bytes or more (`alignof(max_align_t)`); smaller blocks get 8.
pub const MALLOC_ALIGN: usize = 16;

/// The alignment C gets for `size` bytes asked at `align`.
fn c_align(size: usize, align: usize) -> usize {
    if size > 8 {
        align.max(MALLOC_ALIGN)
    } else {
        align
    }
}

/// `malloc(size)` with `align` (a power of two): null on out of memory or
/// an impossible request. Size 0 gets a unique minimal block.
pub fn malloc(size: usize, align: usize) -> *mut u8 {
    let align = c_align(size, align);
    if size > isize::MAX as usize - align {
        return ptr::null_mut();
    }
    // SAFETY: size and align describe a valid layout (checked above; 0 is
    // served as 1).
    let layout = unsafe { core::alloc::Layout::from_size_align_unchecked(size.max(1), align) };
    // SAFETY: non-zero size.
    unsafe { core::alloc::GlobalAlloc::alloc(&crate::GoMalloc, layout) }
}

/// C's `malloc(size)`: [`malloc`] at C's alignment, with a fast path for
/// sizes up to 1 KiB that rounds to a multiple of 16 above 8 bytes and
/// reads the class from the size table, with no alignment arithmetic.
#[inline]
pub fn malloc_c(size: usize) -> *mut u8 {
    if size <= 1024 {
        let s = if size <= 8 { size } else { (size + 15) & !15 };
        // Hardened: every object has a second word (see `global::route`).
        #[cfg(feature = "hardened")]
        let s = s.max(crate::hardened::MIN_SMALL_SIZE);
        // SAFETY: `size <= 1024` rounds to at most 1024 (the optimizer does
        // not see it through the select, and bounds-checks the table).
        unsafe { core::hint::assert_unchecked(s <= 1024) };
        // SAFETY: a class looked up in `SIZE_CLASSES`.
        return alloc_small(unsafe { known_class(SIZE_CLASSES.class_of_upto_1k(s)) });
    }
    malloc(size, 8)
}

/// The span of a block a C caller passes back, and its size class,
/// checked: aborts unless `ptr` is the start of a live object. Each span
/// field is read once.
#[inline(always)]
fn owned_span(ptr: *mut u8) -> (&'static Span, usize) {
    let addr = ptr as usize;
    // An entry to an in-use span is the span holding `addr` (the page map
    // keeps no stale entries; see `span_of_mapped`).
    let Some(span) = HEAP.span_of_mapped(addr) else {
        bad_pointer(ptr);
    };
    let off = addr - span.start();
    // SAFETY: an in-use span's class is 0 (large) or the small class it
    // was made for.
    let class = unsafe { known_class(span.size_class() as usize) };
    // The start of an object: divide by multiplying (no division on the
    // free path).
    let start = if class == 0 {
        0
    } else {
        SIZE_CLASSES.object_index(class, off) * SIZE_CLASSES.size_of_class(class)
    };
    if start != off {
        bad_pointer(ptr);
    }
    (span, class)
}

/// Aborts with the message that says what is wrong with `ptr` (not ours,
/// inside a block, or in pages that are free: a double free).
#[cold]
fn bad_pointer(ptr: *mut u8) -> ! {
    crate::hardened::bad_free(ptr, None)
}

/// `free(ptr)`: null is ignored; a pointer gomalloc does not own aborts.
///
/// # Safety
///
/// `ptr` is null or a block from this module (or `GoMalloc`), not used
/// afterwards.
#[inline]
pub unsafe fn free(ptr: *mut u8) {
    if ptr.is_null() {
        return;
    }
    let (span, class) = owned_span(ptr);
    if class == 0 {
        // SAFETY: the live large span starting at `ptr`.
        unsafe { free_large_c(span, ptr) };
    } else {
        // SAFETY: `ptr` is a live object of `span`, of class `class`.
        unsafe { free_small_in(span, class, ptr) };
    }
}

/// `free` of a large object, out of line so that the small-object path
/// keeps its registers (inlined, its checks cost the fast path a prologue
/// of saved registers: 8 instructions per malloc/free pair).
///
/// # Safety
///
/// `span` is the live large span starting at `ptr`, not used afterwards.
#[cold]
#[inline(never)]
unsafe fn free_large_c(span: &'static Span, ptr: *mut u8) {
    if crate::hardened::large_checks() {
        // SAFETY: caller's contract.
        unsafe { crate::hardened::check_large(span, ptr, None) };
    }
    // SAFETY: the span holds exactly this large object.
    unsafe { free_large_span(span) };
}

/// The usable size of the block at `ptr` (at least what was asked).
///
/// # Safety
///
/// `ptr` is null (0) or a live block from this module.
pub unsafe fn usable_size(ptr: *mut u8) -> usize {
    if ptr.is_null() {
        return 0;
    }
    let (span, class) = owned_span(ptr);
    if class == 0 && crate::hardened::large_checks() {
        // The canary follows the requested size.
        return crate::hardened::large_usable(span);
    }
    span.elem_size()
}

/// `realloc(ptr, size)` as glibc does it: null `ptr` is `malloc(size)`;
/// size 0 frees and returns null; in place when the block already fits
/// (same size class, or a large span that can shrink or grow in place).
///
/// # Safety
///
/// `ptr` is null or a live block from this module, not used afterwards
/// when a different pointer (or null after size 0) is returned.
pub unsafe fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        return malloc(size, 8);
    }
    if size == 0 {
        // SAFETY: caller's contract.
        unsafe { free(ptr) };
        return ptr::null_mut();
    }
    let (span, class) = owned_span(ptr);
    let mut old = span.elem_size();
    if class == 0 && crate::hardened::large_checks() {
        // SAFETY: the live large span starting at `ptr`.
        unsafe { crate::hardened::check_large(span, ptr, None) };
        old = crate::hardened::large_usable(span);
    }
    let align = c_align(size, 8);
    match route(size, align) {
        Route::Small(c) if c == class => return ptr,
        Route::Large if class == 0 => {
            // Room for the canary when the large-object checks are on.
            let pages = size
                .saturating_add(crate::hardened::large_extra())
                .div_ceil(PAGE_SIZE);
            // SAFETY: a live large span of ours; C callers own the block
            // exclusively during realloc.
            if pages == span.npages() || unsafe { resize_large(span, pages) } {
                if crate::hardened::large_checks() {
                    // SAFETY: the span holds `size` bytes and the canary's.
                    unsafe { crate::hardened::arm_large(span, ptr, size) };
                }
                return ptr;
            }
        }
        _ => {}
    }
    let fresh = malloc(size, align);
    if !fresh.is_null() {
        let len = old.min(size);
        // SAFETY: both blocks are live, at least `len` bytes, distinct; a
        // class-0 block is a whole large span, and so is one of
        // `MOVE_MIN_BYTES` or more.
        unsafe {
            let moved = class == 0 && len >= MOVE_MIN_BYTES && move_pages(ptr, fresh, len);
            if moved {
                // The move replaced whole pages of `fresh` (large), its
                // canary's maybe.
                if crate::hardened::large_checks() {
                    crate::hardened::write_canary(fresh, size);
                }
            } else {
                ptr::copy_nonoverlapping(ptr, fresh, len);
            }
            // `ptr` was checked above (a moved block's pages, canary
            // included, read as zero now).
            if class == 0 {
                free_large_span_of(span, moved);
            } else {
                free_small_in(span, class, ptr);
            }
        }
    }
    fresh
}

/// `malloc_trim`: gives back to the OS all the memory gomalloc holds free
/// ([`crate::release_memory`]); returns whether anything was released.
pub fn trim() -> bool {
    crate::release_memory() > 0
}

/// Registers gomalloc's `fork` handlers, once per process (later calls do
/// nothing): before `fork`, [`lock_all`], so that no lock is copied held by
/// another thread (the background thread included); after, [`unlock_all`]
/// in both processes, and in the child the background thread is wanted
/// again. `libgomalloc.so` calls this when it is loaded; the background
/// thread's start calls it too, so a Rust program that forks while that
/// thread holds a lock gets a working child.
pub fn install_fork_handlers() {
    use core::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: plain function pointers; glibc's pthread_atfork keeps them in
    // a list of its own.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
}

extern "C" fn fork_prepare() {
    lock_all();
}

extern "C" fn fork_parent() {
    // SAFETY: `fork_prepare` took the locks on this thread.
    unsafe { unlock_all() };
}

extern "C" fn fork_child() {
    // SAFETY: the forking thread took the locks in `fork_prepare`, and it
    // is the only thread of the child.
    unsafe { unlock_all() };
    crate::scavenger::after_fork_child();
}

/// Takes every allocator lock, in the one fixed order (shared cache,
/// cache registry, each class's central lock, heap), so that `fork` copies
/// none of them held by another thread. For `pthread_atfork`'s prepare.
pub fn lock_all() {
    crate::thread::lock_for_fork();
    CENTRAL.lock_all_for_fork();
    HEAP.lock_for_fork();
}

/// Releases what [`lock_all`] took, in reverse order. For both
/// `pthread_atfork`'s parent and child handlers: in the child the forking
/// thread is the only thread, and it holds every lock.
///
/// # Safety
///
/// The calling thread took the locks with `lock_all` (or is the child of a
/// fork made by the thread that did).
pub unsafe fn unlock_all() {
    // SAFETY: caller's contract.
    unsafe {
        HEAP.unlock_after_fork();
        CENTRAL.unlock_all_after_fork();
        crate::thread::unlock_after_fork();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `malloc_c`'s fast path picks, for every size up to 1 KiB, a block
    /// that holds the size at C's alignment (16 above 8 bytes), and frees
    /// through the checked path accept it.
    #[test]
    fn malloc_c_sizes_and_alignment() {
        for size in 0..=1100usize {
            let p = malloc_c(size);
            assert!(!p.is_null(), "malloc_c({size}) failed");
            let want = if size > 8 { 16 } else { 8 };
            assert_eq!(p as usize % want, 0, "malloc_c({size}) = {p:?}");
            // SAFETY: `p` is a live block of at least `size` bytes.
            unsafe {
                assert!(usable_size(p) >= size.max(1));
                p.write_bytes(0xA5, size);
                free(p);
            }
        }
    }
}
