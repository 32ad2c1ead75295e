//! Formatting without allocating: a fixed buffer on the stack that
//! `core::fmt` writes into and that goes to a file descriptor with
//! `write(2)`. For the allocator's own messages (option warnings,
//! statistics at exit, `malloc_stats`), which must never call the
//! allocator they report on.

use core::fmt;

/// A buffer of `N` bytes that formats without allocating; what does not
/// fit is cut off.
pub(crate) struct StackBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    /// An empty buffer.
    pub(crate) const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// Writes the buffer to `fd` (all of it, retrying short writes) and
    /// empties it.
    pub(crate) fn write_to(&mut self, fd: i32) {
        let mut done = 0;
        while done < self.len {
            // SAFETY: writes initialised bytes of a live buffer.
            let n = unsafe { libc::write(fd, self.buf[done..].as_ptr().cast(), self.len - done) };
            if n <= 0 {
                break;
            }
            done += n as usize;
        }
        self.len = 0;
    }

    /// Bytes free.
    pub(crate) fn room(&self) -> usize {
        N - self.len
    }
}

impl<const N: usize> fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
