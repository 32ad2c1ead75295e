//! `OsPageSource` really gives memory back: resident memory falls after
//! `MADV_DONTNEED`. It lives in its own test binary (its own process), so no
//! other test's allocations move the resident set while it measures; it keeps
//! one test function for the same reason.

#![cfg(target_os = "linux")]

use core::ptr::NonNull;

use mheap::source::{OsPageSource, PageSource, ReleaseAdvice, SOURCE_GRANULE};

mod rss;
use rss::rss;

const MIB: usize = 1 << 20;

/// Writes every OS page of `len` bytes at `p`.
fn touch(p: NonNull<u8>, len: usize) {
    for off in (0..len).step_by(4096) {
        // SAFETY: `p..p+len` is committed memory used only by this test.
        unsafe { p.as_ptr().add(off).write_volatile(1) };
    }
}

#[test]
fn rss_falls_after_dont_need_and_comes_back_on_reuse() {
    let mut src = OsPageSource::new(ReleaseAdvice::DontNeed);
    let len = 64 * MIB;
    let p = src.reserve(len, 2 * MIB).expect("reserve");
    // SAFETY: just reserved.
    unsafe { src.commit(p, len) }.expect("commit");

    let untouched = rss();
    touch(p, len);
    let touched = rss();
    assert!(
        touched >= untouched + 48 * MIB,
        "touching 64 MiB raised RSS from {untouched} to {touched} only"
    );

    // SAFETY: committed; its contents are not used before the next commit.
    unsafe { src.release(p, len) }.expect("release");
    let released = rss();
    assert!(
        released + 48 * MIB <= touched,
        "releasing 64 MiB lowered RSS from {touched} to {released} only"
    );

    // Reuse without a new mapping: zero, writable, resident again.
    // SAFETY: released above.
    unsafe { src.commit(p, len) }.expect("commit again");
    // SAFETY: committed, used only here.
    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), len) };
    assert!(bytes.iter().step_by(SOURCE_GRANULE).all(|&b| b == 0));
    touch(p, len);
    assert!(rss() >= released + 48 * MIB);

    // A sub-range: half of it.
    // SAFETY: committed; the released half is not used afterwards.
    unsafe { src.release(p, len / 2) }.expect("release half");
    assert!(rss() + 24 * MIB <= touched + 8 * MIB);
}
