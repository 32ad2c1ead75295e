//! # libgomalloc.so: gomalloc as a drop-in `malloc`
//!
//! ```text
//! cargo build --release -p gomalloc-capi
//! LD_PRELOAD=target/release/libgomalloc.so python3 script.py
//! ```
//!
//! This crate only exports the C symbols; everything they do is
//! `gomalloc::raw` (the layout-free entry points) over the same heap,
//! central lists and thread caches as `GoMalloc`. The `gomalloc` rlib itself
//! exports nothing, so Rust programs that use `GoMalloc` keep libc's
//! `malloc` beside it.
//!
//! Behaviour follows glibc where C leaves it open: `malloc(0)` returns a
//! unique block; `realloc(p, 0)` frees `p` and returns null; failures set
//! `errno = ENOMEM` (or return `EINVAL`/`ENOMEM` from `posix_memalign`);
//! blocks of more than 8 bytes are 16-byte aligned. A pointer gomalloc did
//! not hand out, passed to `free` or `realloc`, aborts the process with a
//! message on stderr instead of corrupting the heap.
//!
//! Bootstrapping: nothing on these paths calls back into `malloc` (no
//! `dlsym`, no Rust TLS destructor registration, no formatting); the first
//! call may come from the dynamic loader before `main`. `fork` is made safe
//! by `pthread_atfork` handlers, registered when the library is loaded,
//! that take every allocator lock in one fixed order before the fork and
//! release them in both parent and child.

#![warn(unsafe_op_in_unsafe_fn, missing_docs)]

use core::ffi::{c_int, c_void};
use core::ptr;
use gomalloc::raw;

fn set_errno(e: c_int) {
    // SAFETY: `__errno_location` returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

fn enomem<T>() -> *mut T {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// The OS page size, for `valloc` and `pvalloc`.
fn os_page() -> usize {
    // SAFETY: sysconf has no preconditions and does not allocate.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// C `malloc`.
///
/// # Safety
///
/// C's contract for `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let p = raw::malloc_c(size);
    if p.is_null() { enomem() } else { p.cast() }
}

/// C `free`.
///
/// # Safety
///
/// `ptr` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: caller's contract (bad pointers abort inside).
    unsafe { raw::free(ptr.cast()) }
}

/// C `calloc`: overflow-checked, zeroed.
///
/// # Safety
///
/// C's contract for `calloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        return enomem();
    };
    let align = if total > 8 { raw::MALLOC_ALIGN } else { 8 };
    if total > isize::MAX as usize - align {
        return enomem();
    }
    // SAFETY: a valid layout: non-zero size, power-of-two alignment, and
    // `total` at most isize::MAX - align (checked above).
    let layout = unsafe { core::alloc::Layout::from_size_align_unchecked(total.max(1), align) };
    // SAFETY: non-zero size.
    let p = unsafe { core::alloc::GlobalAlloc::alloc_zeroed(&gomalloc::GoMalloc, layout) };
    if p.is_null() { enomem() } else { p.cast() }
}

/// C `realloc`, as glibc: `realloc(NULL, n)` is `malloc(n)`,
/// `realloc(p, 0)` frees `p` and returns null.
///
/// # Safety
///
/// `ptr` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: caller's contract.
    let p = unsafe { raw::realloc(ptr.cast(), size) };
    if p.is_null() && size != 0 {
        return enomem();
    }
    p.cast()
}

/// C `reallocarray`: `realloc(ptr, n * size)`, failing with ENOMEM on
/// overflow (leaving `ptr` untouched).
///
/// # Safety
///
/// As for `realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: caller's contract.
        Some(total) => unsafe { realloc(ptr, total) },
        None => enomem(),
    }
}

/// A block of `size` bytes aligned to `align` (a power of two), or null.
fn aligned(align: usize, size: usize) -> *mut u8 {
    raw::malloc(size, align.max(8))
}

/// C `posix_memalign`: EINVAL unless `align` is a power of two multiple of
/// `sizeof(void *)`, ENOMEM on failure (errno untouched).
///
/// # Safety
///
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let p = aligned(align, size);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: caller's contract.
    unsafe { *out = p.cast() };
    0
}

/// C11 `aligned_alloc` (glibc accepts any power-of-two alignment).
///
/// # Safety
///
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    let p = aligned(align, size);
    if p.is_null() { enomem() } else { p.cast() }
}

/// Obsolete `memalign`.
///
/// # Safety
///
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { aligned_alloc(align, size) }
}

/// Obsolete `valloc`: page-aligned.
///
/// # Safety
///
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    let p = aligned(os_page(), size);
    if p.is_null() { enomem() } else { p.cast() }
}

/// Obsolete `pvalloc`: page-aligned, size rounded up to whole pages.
///
/// # Safety
///
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = os_page();
    let Some(rounded) = size.max(1).checked_next_multiple_of(page) else {
        return enomem();
    };
    let p = aligned(page, rounded);
    if p.is_null() { enomem() } else { p.cast() }
}

/// `malloc_usable_size`: never below the size asked for.
///
/// # Safety
///
/// `ptr` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // SAFETY: caller's contract.
    unsafe { raw::usable_size(ptr.cast()) }
}

/// C23 `free_sized`.
///
/// # Safety
///
/// As for `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_sized(ptr: *mut c_void, _size: usize) {
    // SAFETY: caller's contract.
    unsafe { raw::free(ptr.cast()) }
}

/// C23 `free_aligned_sized`.
///
/// # Safety
///
/// As for `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: caller's contract.
    unsafe { raw::free(ptr.cast()) }
}

/// `malloc_trim`: gives free memory back to the OS; 1 if any was.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    c_int::from(raw::trim())
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Mallinfo2 {
    /// Bytes of address space the heap holds (non-mmapped in glibc).
    pub arena: usize,
    /// Free spans.
    pub ordblks: usize,
    /// Unused (0).
    pub smblks: usize,
    /// Spans handed out.
    pub hblks: usize,
    /// Bytes of heap metadata.
    pub hblkhd: usize,
    /// Unused (0).
    pub usmblks: usize,
    /// Unused (0).
    pub fsmblks: usize,
    /// Bytes in spans handed out.
    pub uordblks: usize,
    /// Bytes in free spans.
    pub fordblks: usize,
    /// Bytes `malloc_trim` could give back now.
    pub keepcost: usize,
}

/// `mallinfo2`: the heap's counters in glibc's shape.
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo2() -> Mallinfo2 {
    let h = gomalloc::stats().heap;
    Mallinfo2 {
        arena: h.mapped,
        ordblks: h.free_spans,
        hblks: h.spans_in_use,
        hblkhd: h.metadata,
        uordblks: h.in_use,
        fordblks: h.free,
        keepcost: h.free - h.released,
        ..Mallinfo2::default()
    }
}

/// `malloc_stats`: prints gomalloc's statistics ([`gomalloc::stats`], one
/// line each, then the size classes in use) to stderr, without allocating.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_stats() {
    gomalloc::print_stats(2);
}

/// Registers the fork handlers when the library is loaded.
extern "C" fn on_load() {
    raw::install_fork_handlers();
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;
