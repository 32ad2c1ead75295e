//! Objects inside one span: carving, free lists, and the remote-free stack.
//!
//! # The remote-free protocol
//!
//! Every span has one word, `SpanObjects::remote`, that any thread may
//! change: the head of a lock-free stack of objects freed by threads that do
//! not own the span, with two flags in its low bits (objects are 8-byte
//! aligned, so the bits are free):
//!
//! - [`IN_CENTRAL`]: no thread cache owns the span; its central list does.
//! - [`NOTIFIED`]: the central list will look at the stack without being
//!   told (the span is in its partial list, or a notification is under way).
//!
//! | who | does | with |
//! |---|---|---|
//! | any non-owner, freeing | pushes the object; if it finds `IN_CENTRAL` without `NOTIFIED`, sets `NOTIFIED` in the same CAS and tells the central list, which moves the span out of its full list | [`push_remote`] (CAS, Release) |
//! | the owning cache, out of objects | takes the whole stack, keeping flags 0 | [`take_remote`] (swap, Acquire) |
//! | the central list, taking a span back | takes the stack and sets `IN_CENTRAL | NOTIFIED`; files the span as full only if a CAS from exactly that (empty stack) to `IN_CENTRAL` succeeds | [`take_remote`], [`try_mark_full`] |
//! | the central list, handing a span out | takes the stack, clearing both flags | [`take_remote`] |
//!
//! Why it is correct: an object is on exactly one list at a time (the
//! owner's free list or the stack), because pushes and takes are single
//! atomic operations on one word. A span is in the full list only while its
//! stack is empty and `NOTIFIED` is clear, and the first push after that
//! sets `NOTIFIED` atomically, so exactly one thread notifies, and no freed
//! object is ever stranded in a span the central list believes full. The
//! loom models (`tests/loom_central.rs`) check these claims.

use core::ptr;
use mheap::Span;
use mheap::sync::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Flag: the span is owned by its central list, not by a thread cache.
pub const IN_CENTRAL: usize = 1;
/// Flag: the central list needs no notification of further remote frees.
pub const NOTIFIED: usize = 2;
/// Both flags.
pub const FLAGS: usize = IN_CENTRAL | NOTIFIED;

/// Reads the next-object link stored in a free object's first word.
///
/// # Safety
///
/// `obj` is a free object of a span (at least 8 bytes, 8-byte aligned).
#[inline(always)]
pub unsafe fn next_of(obj: *mut u8) -> *mut u8 {
    // SAFETY: caller's contract.
    unsafe { obj.cast::<*mut u8>().read() }
}

/// Stores the next-object link in a free object's first word.
///
/// # Safety
///
/// As for [`next_of`].
#[inline(always)]
pub unsafe fn set_next(obj: *mut u8, next: *mut u8) {
    // SAFETY: caller's contract.
    unsafe { obj.cast::<*mut u8>().write(next) }
}

/// Pushes `obj`, freed by a thread that does not own `span`, onto the
/// span's remote stack. Returns `true` when the caller must notify the
/// span's central list (see the protocol above).
///
/// # Safety
///
/// `obj` is an allocated object of `span`, not used after this call.
#[inline]
pub unsafe fn push_remote(span: &Span, obj: *mut u8) -> bool {
    // SAFETY: caller's contract; a one-object chain.
    unsafe { push_remote_chain(span, obj, obj) }
}

/// Pushes a chain of objects of `span`, linked through their first words
/// from `head` to `tail`, onto the span's remote stack with one CAS: how a
/// thread hands back a run of another thread's objects at once. Returns
/// `true` when the caller must notify the span's central list.
///
/// # Safety
///
/// Every object of the chain is an allocated object of `span`, not used
/// after this call; `tail` is reached from `head` by following the links.
#[inline]
pub unsafe fn push_remote_chain(span: &Span, head: *mut u8, tail: *mut u8) -> bool {
    let remote = &span.objects.remote;
    let mut old = remote.load(Relaxed);
    loop {
        let notify = old & IN_CENTRAL != 0 && old & NOTIFIED == 0;
        #[cfg(gomalloc_loom_broken = "notify")]
        // Broken on purpose: never notifies, so a span on the full list
        // keeps its remote frees (and stays full) for ever.
        let notify = {
            let _ = notify;
            false
        };
        // SAFETY: the chain is ours until the CAS publishes it.
        unsafe { set_next(tail, (old & !FLAGS) as *mut u8) };
        let new = head as usize | (old & FLAGS) | if notify { NOTIFIED } else { 0 };
        match remote.compare_exchange_weak(old, new, Release, Relaxed) {
            Ok(_) => return notify,
            Err(cur) => old = cur,
        }
    }
}

/// Takes the whole remote stack of `span`, leaving it empty with `flags`
/// set; returns the list taken (linked through first words, may be null).
///
/// Only the span's owner may call it (the cache holding it, or the central
/// list under its lock when it takes the span over or hands it out).
#[inline]
pub fn take_remote(span: &Span, flags: usize) -> *mut u8 {
    let remote = &span.objects.remote;
    #[cfg(gomalloc_loom_broken = "take_remote")]
    {
        // Broken on purpose: a read and a separate write lose any push that
        // lands between them. (The write is a swap whose result is ignored,
        // not a plain store: loom orders a plain store against a concurrent
        // CAS more loosely than the memory model does.)
        let old = remote.load(Acquire);
        mheap::sync::yield_now();
        remote.swap(flags, AcqRel);
        return (old & !FLAGS) as *mut u8;
    }
    #[allow(unreachable_code)]
    {
        (remote.swap(flags, AcqRel) & !FLAGS) as *mut u8
    }
}

/// Whether the remote stack is non-empty right now (a hint for the owner).
#[inline]
pub fn has_remote(span: &Span) -> bool {
    span.objects.remote.load(Relaxed) & !FLAGS != 0
}

/// The central list's attempt to file a span as full: succeeds only if no
/// remote free arrived since it took the stack with `IN_CENTRAL | NOTIFIED`.
pub fn try_mark_full(span: &Span) -> bool {
    let remote = &span.objects.remote;
    #[cfg(gomalloc_loom_broken = "uncache_full")]
    {
        // Broken on purpose: overwrites a stack that may have grown (an
        // unconditional swap instead of the compare-exchange).
        remote.swap(IN_CENTRAL, AcqRel);
        return true;
    }
    #[allow(unreachable_code)]
    {
        remote
            .compare_exchange(IN_CENTRAL | NOTIFIED, IN_CENTRAL, AcqRel, Acquire)
            .is_ok()
    }
}

/// Carves up to `max` never-used objects out of `span` into a list;
/// returns its head (null if the span has none left) and length.
///
/// # Safety
///
/// The caller owns the span; its memory is the span's pages.
pub unsafe fn carve(span: &Span, max: usize) -> (*mut u8, usize) {
    let nelems = span.nelems();
    let size = span.elem_size();
    // SAFETY: the owner has exclusive use of `carved`.
    let carved = span.objects.carved.with(|p| unsafe { *p }) as usize;
    let n = (nelems - carved).min(max);
    if n == 0 {
        return (ptr::null_mut(), 0);
    }
    let first = span.start() + carved * size;
    // Link the objects in address order, last one to null.
    let mut next: *mut u8 = ptr::null_mut();
    for i in (0..n).rev() {
        let obj = (first + i * size) as *mut u8;
        // SAFETY: `obj` is a never-used object inside the span.
        unsafe { set_next(obj, next) };
        next = obj;
    }
    // SAFETY: as above.
    span.objects
        .carved
        .with_mut(|p| unsafe { *p = (carved + n) as u32 });
    (first as *mut u8, n)
}

/// How many objects carving may hand out at once: about 4 KiB worth, at
/// least one, so a fresh span is touched page by page as it is used.
#[inline]
pub fn carve_batch(elem_size: usize) -> usize {
    (4096 / elem_size).clamp(1, 256)
}

/// The length of a list, and its last object (null for an empty list).
///
/// # Safety
///
/// `head` is a list of free objects the caller owns.
pub unsafe fn list_len_tail(head: *mut u8) -> (usize, *mut u8) {
    let mut n = 0;
    let mut tail = ptr::null_mut();
    let mut p = head;
    while !p.is_null() {
        n += 1;
        tail = p;
        // SAFETY: caller's contract.
        p = unsafe { next_of(p) };
    }
    (n, tail)
}

/// Joins two lists (`a` first); returns the head and total length.
///
/// # Safety
///
/// Both are lists of free objects the caller owns.
pub unsafe fn join(a: *mut u8, b: *mut u8) -> (*mut u8, usize) {
    // SAFETY: caller's contract.
    let (na, tail) = unsafe { list_len_tail(a) };
    if a.is_null() {
        // SAFETY: caller's contract.
        return (b, unsafe { list_len_tail(b) }.0);
    }
    // SAFETY: caller's contract.
    let (nb, _) = unsafe { list_len_tail(b) };
    // SAFETY: `tail` is the last object of `a`.
    unsafe { set_next(tail, b) };
    (a, na + nb)
}
