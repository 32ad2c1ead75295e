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
//!
//! # Hardening (feature `hardened`)
//!
//! A free object's first word is the only allocator metadata that user code
//! can reach: a heap overflow out of the object before it, or a write
//! through a dangling pointer, lands there. In a plain build that word is
//! the raw address of the next free object, so overwriting it makes a later
//! allocation hand out any address the attacker chose (the classic
//! free-list poisoning of tcache and friends), and reading it leaks a heap
//! address.
//!
//! With the feature every link is stored encoded, `next ^ key(at)`, where
//! `at` is the address of the word itself and
//! `key(at) = secret ^ (at >> PAGE_SHIFT) * MIX`: a per-process random
//! secret ([`LazyKey`], from `getrandom(2)`, drawn once, without
//! allocating), mixed with the page the link lives in, so every page has
//! its own key and a link copied to another page decodes to garbage. The
//! end of a list is stored as `key(at)`, not 0, so a zeroed word is
//! detected too. Every decode checks that the pointer is 8-byte aligned and
//! below 2^48, where the page map says every heap address lies (a forged or
//! overwritten link, which decodes to a random word, passes with
//! probability 2^-19), and the thread cache's pop also checks that it lies
//! inside the current span (`check_link_in`: it passes with probability
//! span bytes / 2^64); a failed check aborts through `mheap::fatal` with
//! [`CORRUPT_LINK`] before the bad pointer is ever handed out.
//!
//! Everything that stores a link in an object goes through [`set_next`]
//! and [`next_of`]: carving, [`join`], [`list_len_tail`], the remote
//! stack's chain links, the caches' lists and stashes; the heads kept in
//! span records and caches (metadata user code cannot reach) stay raw.
//! Cost per link: one load of the key (and a never-taken branch), a shift,
//! a multiply and two XORs, plus the alignment test on a read. Without the
//! feature the two functions compile to a plain load and store, as before.

use core::ptr;
use core::sync::atomic::{AtomicUsize as CoreAtomicUsize, Ordering::Relaxed as CoreRelaxed};
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
/// With the `hardened` feature the word holds the link encoded (see the
/// module docs, "Hardening"); a link that does not decode to an 8-byte
/// aligned pointer below 2^48 aborts the process ([`CORRUPT_LINK`]).
///
/// # Safety
///
/// `obj` is a free object of a span (at least 8 bytes, 8-byte aligned)
/// whose first word was written by [`set_next`].
#[inline(always)]
pub unsafe fn next_of(obj: *mut u8) -> *mut u8 {
    #[cfg(not(feature = "hardened"))]
    // SAFETY: caller's contract.
    unsafe {
        obj.cast::<*mut u8>().read()
    }
    #[cfg(feature = "hardened")]
    {
        // SAFETY: caller's contract.
        let next = unsafe { obj.cast::<usize>().read() } ^ link_key(obj);
        if next & NOT_A_LINK != 0 {
            corrupt_link();
        }
        next as *mut u8
    }
}

/// Stores the next-object link in a free object's first word (encoded,
/// with the `hardened` feature).
///
/// # Safety
///
/// `obj` is a free object of a span (at least 8 bytes, 8-byte aligned)
/// that the caller may write.
#[inline(always)]
pub unsafe fn set_next(obj: *mut u8, next: *mut u8) {
    #[cfg(not(feature = "hardened"))]
    // SAFETY: caller's contract.
    unsafe {
        obj.cast::<*mut u8>().write(next)
    }
    #[cfg(feature = "hardened")]
    // SAFETY: caller's contract.
    unsafe {
        obj.cast::<usize>().write(next as usize ^ link_key(obj))
    }
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

/// Takes the remote stack of `span`, leaving `flags` in its word, and puts
/// it in front of the span's own free list, counted in `nfree`.
///
/// # Safety
///
/// The caller owns the span's own list: it is the span's owner (a cache),
/// or the central list that holds it, under that list's lock.
pub unsafe fn absorb_remote(span: &Span, flags: usize) {
    if !has_remote(span) {
        return;
    }
    let remote = take_remote(span, flags);
    // SAFETY: the caller owns the span's list; the taken stack is a list
    // of free objects of the span.
    unsafe { push_list(span, remote) };
}

/// Puts `list`, free objects of `span`, in front of the span's own free
/// list, counted in `nfree`.
///
/// # Safety
///
/// The caller owns the span's own list (as for [`absorb_remote`]); `list`
/// is a list of free objects of the span the caller owns.
pub unsafe fn push_list(span: &Span, list: *mut u8) {
    // SAFETY: caller's contract.
    let (n, tail) = unsafe { list_len_tail(list) };
    if n > 0 {
        let o = &span.objects;
        // SAFETY: caller's contract; `tail` ends `list`.
        unsafe {
            set_next(tail, o.free.with(|p| *p));
            o.free.with_mut(|p| *p = list);
            o.nfree.with_mut(|p| *p += n as u32);
        }
    }
}

/// Cuts up to `max` objects off the front of the span's own free list;
/// returns them as a list and how many (0 when the list is empty).
///
/// # Safety
///
/// The caller owns the span's own list (as for [`absorb_remote`]).
pub unsafe fn cut(span: &Span, max: usize) -> (*mut u8, usize) {
    let o = &span.objects;
    // SAFETY: caller's contract.
    let head = o.free.with(|p| unsafe { *p });
    let (mut n, mut tail, mut p) = (0, ptr::null_mut(), head);
    while n < max && !p.is_null() {
        tail = p;
        // SAFETY: `p` is on the span's free list, which the caller owns.
        p = unsafe { next_of(p) };
        n += 1;
    }
    if n > 0 {
        // SAFETY: as above; `tail` is the last object cut.
        unsafe {
            set_next(tail, ptr::null_mut());
            o.free.with_mut(|q| *q = p);
            #[cfg(not(gomalloc_loom_broken = "batch"))]
            o.nfree.with_mut(|q| *q -= n as u32);
        }
        // Broken on purpose: the span still counts the objects it handed
        // out as free, so it looks wholly free (and goes back to the
        // source) while they are in use.
    }
    (head, n)
}

/// Puts list `a` in front of list `b`; returns the head. Walks `a` only
/// (to find its tail): `b` may be a span's long, cold free list that
/// nothing needs counted.
///
/// # Safety
///
/// Both are lists of free objects the caller owns.
pub unsafe fn prepend(a: *mut u8, b: *mut u8) -> *mut u8 {
    if a.is_null() {
        return b;
    }
    if !b.is_null() {
        // SAFETY: caller's contract.
        let (_, tail) = unsafe { list_len_tail(a) };
        // SAFETY: `tail` is the last object of `a`.
        unsafe { set_next(tail, b) };
    }
    a
}

/// Joins two lists (`a` first); returns the head and total length. Walks
/// both.
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

// ---------------------------------------------------------------------------
// Hardening: keys and link checks (see the module docs, "Hardening").

/// The message of a free-list link that does not decode to a free object.
pub const CORRUPT_LINK: &str = "corrupted free list: a free object's link was overwritten \
     (heap overflow or use after free)";

/// A per-process random key, drawn the first time it is read: 8 bytes of
/// `getrandom(2)` (falling back to the kernel's `AT_RANDOM` bytes, mixed,
/// when the entropy pool is not ready), never 0. Reading it never
/// allocates; the first read costs one system call, later ones a load and a
/// never-taken branch. Racing first reads agree: the first value stored
/// wins (a compare-exchange from 0), so every thread sees one key for the
/// life of the process.
///
/// Used for the free-list links here and by `gomalloc`'s checks (double-free
/// tags, large-object canaries), each with a key of its own, so that
/// leaking one does not give the other away.
pub struct LazyKey(CoreAtomicUsize);

impl LazyKey {
    /// A key not drawn yet.
    pub const fn new() -> Self {
        Self(CoreAtomicUsize::new(0))
    }

    /// The key, drawn now if this is the first read.
    #[inline(always)]
    pub fn get(&self) -> usize {
        let k = self.0.load(CoreRelaxed);
        if k != 0 { k } else { self.draw() }
    }

    #[cold]
    #[inline(never)]
    fn draw(&self) -> usize {
        let k = random_word();
        match self.0.compare_exchange(0, k, CoreRelaxed, CoreRelaxed) {
            Ok(_) => k,
            Err(winner) => winner,
        }
    }
}

impl Default for LazyKey {
    fn default() -> Self {
        Self::new()
    }
}

/// A random non-zero word, without allocating: `getrandom(2)` (non-blocking),
/// else the 16 bytes the kernel gives every process at `exec`
/// (`getauxval(AT_RANDOM)`, which glibc also uses for its stack guard and
/// pointer guard, so they are mixed, not copied), with the address of a
/// stack slot (ASLR) and the clock mixed in.
fn random_word() -> usize {
    let mut w: usize = 0;
    // SAFETY: `getrandom` writes at most 8 bytes into `w`, a live local;
    // the raw system call does not allocate.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getrandom,
            ptr::from_mut(&mut w),
            size_of::<usize>(),
            libc::GRND_NONBLOCK,
        )
    };
    if n != size_of::<usize>() as libc::c_long {
        // SAFETY: `getauxval` reads the auxiliary vector, no allocation.
        let at = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u64;
        let (a, b) = if at.is_null() {
            (0, 0)
        } else {
            // SAFETY: AT_RANDOM points to 16 bytes the kernel placed on the
            // initial stack, readable for the life of the process.
            unsafe { (at.read_unaligned(), at.add(1).read_unaligned()) }
        };
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let local = 0u8;
        let stack = ptr::from_ref(&local) as u64;
        w = mix64(a ^ mix64(b ^ mix64(stack ^ (ts.tv_nsec as u64) ^ (ts.tv_sec as u64) << 32)))
            as usize;
    }
    if w == 0 { 0x9E37_79B9_7F4A_7C15 } else { w }
}

/// The splitmix64 finaliser.
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The bits no decoded link may have: the low three (objects are 8-byte
/// aligned) and those from 48 up (the page map covers 48-bit addresses and
/// the heap never hands out others). One test, as cheap as the alignment
/// test alone.
#[cfg(feature = "hardened")]
const NOT_A_LINK: usize = !((1usize << 48) - 1) | 7;

/// The secret of the free-list links.
#[cfg(feature = "hardened")]
static LINK_SECRET: LazyKey = LazyKey::new();

/// The key of a link stored at `at`: the secret, mixed with the page of
/// `at` (an odd multiplier spreads neighbouring pages over all 64 bits).
#[cfg(feature = "hardened")]
#[inline(always)]
fn link_key(at: *mut u8) -> usize {
    const MIX: usize = 0x9E37_79B9_7F4A_7C15;
    LINK_SECRET.get() ^ ((at as usize) >> mheap::PAGE_SHIFT).wrapping_mul(MIX)
}

/// Aborts: a link decoded to something that is not a free object.
#[cfg(feature = "hardened")]
#[cold]
#[inline(never)]
pub fn corrupt_link() -> ! {
    mheap::fatal(CORRUPT_LINK)
}

/// Checks a link just read from an object of the span `start..end` (the
/// thread cache's pop): null (the end of the list) or inside the span, else
/// aborts with [`CORRUPT_LINK`].
#[cfg(feature = "hardened")]
#[inline(always)]
pub fn check_link_in(next: *mut u8, start: usize, end: usize) {
    if (next as usize).wrapping_sub(start) >= end - start && !next.is_null() {
        corrupt_link();
    }
}
