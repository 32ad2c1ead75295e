//! Checks against heap misuse: what the `hardened` feature adds, and the
//! large-object checks a cheap runtime option can turn on without it.
//!
//! Each check names the misuse it stops, where it runs, and what it costs.
//! None of them allocates or unwinds: a failed check prints a fixed message
//! with `mheap::fatal` and aborts, before the heap is changed.
//!
//! ## Encoded free-list links (feature; `mcentral::objects`)
//!
//! *Threat*: a heap overflow out of one object, or a write through a
//! dangling pointer, overwrites the link in the first word of a free object
//! next to it; the allocation that pops it then hands out an address of
//! the attacker's choosing (free-list poisoning). *Check*: links are stored
//! XOR-ed with a key of the process secret and the link's page, and a
//! decoded link must be 8-byte aligned and below 2^48 (a forged link
//! passes with probability 2^-19), and inside the current span on the
//! thread cache's pop. The thread caches' stashes (objects of any span)
//! get the first test only. *Cost*: a load, a shift, a multiply and two
//! XORs per link written or read, and one or two compares per read.
//!
//! ## Double-free tags (feature; [`on_free_small`], [`on_alloc_small`])
//!
//! *Threat*: freeing a small object twice puts it on a free list twice, so
//! two later allocations share it (and its link word is then user data).
//! *Check*: a free writes a tag, `secret ^ address ^ FREE_SALT`, into the
//! object's second word; every allocation clears it; a free that finds the
//! tag already there aborts. Every object has a second word because the
//! feature routes requests of 8 bytes and less to the 16-byte class (see
//! [`MIN_SMALL_SIZE`]; the Rust and C paths both go through
//! `global::route`, so a `dealloc` computes the class its `alloc` used).
//! *Misses*: a double free whose object was allocated again in between (to
//! the allocator that is a valid free of a live object), and one whose tag
//! was overwritten meanwhile (by a use after free). *Cost*: one store per
//! allocation; a load, a compare and a store per free. 8-byte objects take
//! 16 bytes.
//!
//! ## Checked small frees (feature; [`small_span`])
//!
//! *Threat*: `dealloc` of a pointer into the middle of an object, of a
//! pointer gomalloc never handed out, or with a layout of another size
//! class, puts memory that is not a free object of that class on a free
//! list. The C path always checked this (`raw::owned_span`); the Rust path
//! trusted `GlobalAlloc`'s contract. *Check*: the checked page-map lookup,
//! the object-start test (divide by multiplying) and the span's class
//! against the layout's. *Cost*: the three dependent loads of the page map
//! and a multiply on every small free (the fast path skipped the page map).
//!
//! ## Large objects (feature or runtime option; [`large_checks`])
//!
//! *Threat*: a write past the end of a large object goes unnoticed (the
//! span's tail is slack) until it reaches whatever the next allocation puts
//! there; a second free of a large object used to abort with a message that
//! did not say so. *Check*: the object gets [`CANARY_BYTES`] more, and a
//! canary derived from the secret and its address is written right after
//! the requested size (not rounded: an overflow of one byte is caught);
//! free and realloc compare it ([`check_large`]). The C path does not know
//! the size at free, so the span record keeps it: a large span has no
//! owning thread cache, so its `SpanObjects::owner` word holds the size,
//! marked with [`ARMED`] (a cache id never has that bit; `reset` clears the
//! word when the record next serves a small span). A pointer with no live
//! block whose pages lie in a free span of the heap is reported as a double
//! free ([`bad_free`], on every build: it costs nothing until the abort).
//! *Cost*: 8 bytes per large object (a page when the size is within 8 bytes
//! of a page multiple), a store at allocation, a load and a compare at free.
//!
//! ## Measured
//!
//! Instructions per allocation/free pair on the warm fast path
//! (`HARDENED=1 benches/scripts/fastpath-instructions.sh`, callgrind, 16 to
//! 1024 bytes): Rust `alloc` + `dealloc` 80-98 → 187-188 (the checked
//! `dealloc` walks the page map, which the plain path skips: about 30 of
//! the difference); C `malloc` + `free` 112-122 → 179-180 (it walked the
//! page map already). Time, medians of 7 interleaved runs of the comparison
//! workloads on a shared 2-core machine: larson 1.30x (1 thread) and 1.17x
//! (2), xmalloc (2 threads) 1.31x, cache-scratch 1.23x, mixed 1.02x,
//! realloc 1.09x; peak RSS unchanged within 2%.
//!
//! ## The runtime option
//!
//! [`runtime_enabled`] turns the large-object checks on in a build without
//! the feature (the small-object checks change the object layout and stay
//! compile-time). It must be decided before the first large allocation and
//! not change afterwards: a block allocated with the checks off carries no
//! canary (the span is not armed) and is simply not checked; one allocated
//! with them on is checked even if they are off by its free.

use crate::global::HEAP;
use core::sync::atomic::Ordering::Relaxed;
use mcentral::objects::LazyKey;
use mheap::{Span, SpanState, fatal};
use sizeclass::SIZE_CLASSES;

/// Whether the large-object checks run in a build without the `hardened`
/// feature: the cheap runtime option.
#[inline(always)]
pub(crate) fn runtime_enabled() -> bool {
    crate::options::HARDENED.load(Relaxed)
}

/// Whether large objects get canaries and checked frees: always with the
/// `hardened` feature, else when the runtime option says so.
#[inline(always)]
pub(crate) fn large_checks() -> bool {
    cfg!(feature = "hardened") || runtime_enabled()
}

/// The secret of the double-free tags and the canaries (one of its own, so
/// that reading a canary past an object does not give the free-list key
/// away).
static GUARD: LazyKey = LazyKey::new();

/// An odd multiplier that spreads an address over 64 bits.
const MIX: usize = 0x9E37_79B9_7F4A_7C15;

// ---------------------------------------------------------------------------
// Messages (fixed strings: `fatal` does not format).

/// A small object freed while its double-free tag is set.
#[cfg(feature = "hardened")]
pub(crate) const DOUBLE_FREE: &str = "double free: the block is already free";
/// A pointer whose pages lie in a free span of the heap.
pub(crate) const FREED: &str =
    "double free or dangling pointer passed to free/dealloc/realloc: the block's pages are free";
/// A pointer inside a block, not at its start.
pub(crate) const INTERIOR: &str =
    "invalid pointer passed to free/dealloc/realloc: inside a block, not at its start";
/// A pointer that is in no span of the heap.
pub(crate) const NOT_OURS: &str =
    "invalid pointer passed to free/realloc: not a block gomalloc allocated";
/// A `dealloc`/`realloc` layout that maps to another class than the block's.
pub(crate) const WRONG_LAYOUT: &str =
    "dealloc/realloc with a layout of another size class than the block was allocated with";
/// A large object's canary does not match.
pub(crate) const OVERFLOW: &str =
    "heap overflow past a large object: the canary after its requested size was overwritten";

// ---------------------------------------------------------------------------
// Small objects (feature only).

/// The smallest request a small class serves under the feature: every
/// object has a second word for its double-free tag.
#[cfg(feature = "hardened")]
pub(crate) const MIN_SMALL_SIZE: usize = 16;

/// A constant that keeps a tag from equalling other secret-derived values.
#[cfg(feature = "hardened")]
const FREE_SALT: usize = 0x6A09_E667_F3BC_C909;

/// The double-free tag of the object at `p`.
#[cfg(feature = "hardened")]
#[inline(always)]
fn free_tag(p: *mut u8) -> usize {
    GUARD.get() ^ p as usize ^ FREE_SALT
}

/// Clears the double-free tag of an object just allocated (`p` may be null:
/// out of memory).
///
/// # Safety
///
/// `p` is null or a small object of at least 16 bytes the caller was just
/// handed.
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) unsafe fn on_alloc_small(p: *mut u8) {
    if !p.is_null() {
        // SAFETY: caller's contract: the object has a second word.
        unsafe { p.cast::<usize>().add(1).write(0) };
    }
}

/// Checks and sets the double-free tag of a small object being freed;
/// aborts with [`DOUBLE_FREE`] if it is set already.
///
/// # Safety
///
/// `p` is the start of an object of a live small span of at least 16 bytes
/// (checked by the caller, [`small_span`] or `raw::owned_span`).
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) unsafe fn on_free_small(p: *mut u8) {
    let tag = free_tag(p);
    // SAFETY: caller's contract: an object with a second word.
    let w = unsafe { p.cast::<usize>().add(1) };
    // SAFETY: as above.
    if unsafe { w.read() } == tag {
        fatal(DOUBLE_FREE);
    }
    // SAFETY: as above; the object is being freed, its words are ours.
    unsafe { w.write(tag) };
}

/// The span of `ptr`, which a `dealloc`/`realloc` says is an object of
/// `class`, checked as the C path checks: the page map knows the page, the
/// span is in use and of `class`, and `ptr` starts an object. Aborts with
/// the message [`bad_free`] picks otherwise.
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) fn small_span(ptr: *mut u8, class: usize) -> &'static Span {
    let addr = ptr as usize;
    // An entry to an in-use span is the span holding `addr` (the page map
    // keeps no stale entries; see `MHeap::span_of_mapped`).
    let Some(span) = HEAP.span_of_mapped(addr) else {
        bad_free(ptr, Some(class));
    };
    let off = addr - span.start();
    if span.size_class() as usize != class
        || SIZE_CLASSES.object_index(class, off) * SIZE_CLASSES.size_of_class(class) != off
    {
        bad_free(ptr, Some(class));
    }
    span
}

// ---------------------------------------------------------------------------
// Large objects (feature or runtime option).

/// Extra bytes a large object gets for its canary when the checks are on.
pub(crate) const CANARY_BYTES: usize = 8;

/// The mark of an armed large span's `SpanObjects::owner` word: the rest of
/// the word is the object's requested size.
pub(crate) const ARMED: usize = 1 << (usize::BITS - 1);

/// Another constant, for canaries.
const CANARY_SALT: usize = 0xBB67_AE85_84CA_A73B;

/// The canary of a large object whose requested size ends at `end`.
#[inline(always)]
fn canary(end: usize) -> usize {
    GUARD.get() ^ end.wrapping_mul(MIX) ^ CANARY_SALT
}

/// The extra bytes a large object of any size needs now (0 without checks).
#[inline(always)]
pub(crate) fn large_extra() -> usize {
    if large_checks() { CANARY_BYTES } else { 0 }
}

/// Writes the canary of a large object of `size` bytes at `p`.
///
/// # Safety
///
/// `p` starts a large span of at least `size + CANARY_BYTES` bytes that the
/// caller owns.
#[inline]
pub(crate) unsafe fn write_canary(p: *mut u8, size: usize) {
    let end = p as usize + size;
    // SAFETY: caller's contract: the 8 bytes after `size` are in the span.
    unsafe { (end as *mut usize).write_unaligned(canary(end)) };
}

/// Arms the large span of an object of `size` bytes at `p`: writes its
/// canary and records the size in the span.
///
/// # Safety
///
/// As for [`write_canary`]; `span` is `p`'s span.
#[inline]
pub(crate) unsafe fn arm_large(span: &Span, p: *mut u8, size: usize) {
    // SAFETY: caller's contract.
    unsafe { write_canary(p, size) };
    span.objects.owner.store(ARMED | size, Relaxed);
}

/// The requested size an armed large span records, or `None`.
#[inline]
pub(crate) fn armed_size(span: &Span) -> Option<usize> {
    let v = span.objects.owner.load(Relaxed);
    (v & ARMED != 0).then_some(v & !ARMED)
}

/// Checks the canary of the large object at `p` (its span `span`), and, for
/// a Rust `dealloc`/`realloc`, that the layout's size is the one it was
/// allocated (or last reallocated) with. A span that is not armed is not
/// checked. Aborts with [`OVERFLOW`] or [`WRONG_LAYOUT`].
///
/// # Safety
///
/// `span` is the live large span starting at `p`.
#[inline]
pub(crate) unsafe fn check_large(span: &Span, p: *mut u8, layout_size: Option<usize>) {
    let Some(size) = armed_size(span) else {
        return;
    };
    if layout_size.is_some_and(|s| s != size) {
        fatal(WRONG_LAYOUT);
    }
    let end = p as usize + size;
    // SAFETY: an armed span holds `size + CANARY_BYTES` bytes from `p`.
    if unsafe { (end as *const usize).read_unaligned() } != canary(end) {
        fatal(OVERFLOW);
    }
}

/// Forgets a large span's arming, as it goes back to the heap.
#[inline]
pub(crate) fn disarm(span: &Span) {
    span.objects.owner.store(0, Relaxed);
}

/// The bytes of a large object a caller may use: the requested size of an
/// armed span (its canary follows), else the whole span.
#[inline]
pub(crate) fn large_usable(span: &Span) -> usize {
    armed_size(span).unwrap_or_else(|| span.elem_size())
}

// ---------------------------------------------------------------------------
// Diagnosis of a bad pointer (every build; only on the way to an abort).

/// Aborts for a pointer that a free or realloc cannot take, with the
/// message that says what is wrong: inside a block ([`INTERIOR`]); a block
/// of another class than the layout's (`layout_class`: `Some(0)` for a
/// large layout, `None` from the C path, which has no layout;
/// [`WRONG_LAYOUT`]); no live block, but the pages lie in a free span of
/// the heap ([`FREED`]: a double free, or a dangling pointer); or not the
/// heap's at all ([`NOT_OURS`]).
///
/// Takes the heap lock to walk its spans (O(spans), once, before dying);
/// the caller holds no allocator lock.
#[cold]
#[inline(never)]
pub(crate) fn bad_free(ptr: *mut u8, layout_class: Option<usize>) -> ! {
    let addr = ptr as usize;
    if let Some(span) = HEAP.span_of(addr) {
        let class = span.size_class() as usize;
        let off = addr - span.start();
        let start = if class == 0 {
            0
        } else {
            SIZE_CLASSES.object_index(class, off) * SIZE_CLASSES.size_of_class(class)
        };
        if start != off {
            fatal(INTERIOR);
        }
        if layout_class.is_some_and(|c| c != class) {
            fatal(WRONG_LAYOUT);
        }
        // A live object start after all (a race with another thread's free
        // of the same block, or a caller's own check that failed).
        fatal(NOT_OURS);
    }
    let mut freed = false;
    HEAP.walk_spans(|s| {
        if s.state() == SpanState::Free && s.contains(addr) {
            freed = true;
        }
    });
    fatal(if freed { FREED } else { NOT_OURS })
}
