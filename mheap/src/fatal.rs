//! Invariant failures inside the allocator: print a fixed message without
//! allocating, then abort. Unwinding out of `GlobalAlloc` is undefined
//! behaviour and formatting a panic message allocates, so the allocator
//! crates never `panic!` on a path that can run inside an allocation.

/// Writes `gomalloc: fatal: <msg>` to stderr with `write(2)` and aborts the
/// process. Never allocates, never unwinds.
#[cold]
#[inline(never)]
pub fn fatal(msg: &str) -> ! {
    let parts: [&[u8]; 3] = [b"gomalloc: fatal: ", msg.as_bytes(), b"\n"];
    for part in parts {
        // SAFETY: writes `part.len()` initialised bytes from a live slice to
        // fd 2; a short or failed write is ignored, we abort right after.
        unsafe {
            libc::write(2, part.as_ptr().cast(), part.len());
        }
    }
    std::process::abort()
}
