//! # gomalloc: a Go-style memory allocator for Rust
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;
//! # fn main() { let s = String::from("gomalloc"); assert_eq!(s.len(), 8); }
//! ```
//!
//! ## The map
//!
//! ```text
//! gomalloc   GoMalloc (GlobalAlloc), thread binding, large objects;
//!    │        options, the scavenger's driver and thread, stats, hardening
//!    │
//! mcache     per-thread cache: current span and free list per class
//!    │        (trait Central: where spans come from / go back to)
//! mcentral   per-class central span lists, one cache-padded lock per class;
//!    │        each class's shared span (a thread's first objects of a class);
//!    │        the remote-free protocol on each span
//!    │        (trait SpanSource: fresh spans, and a sink for empty ones)
//! mheap      page heap: spans, coalescing, page→span map, release to the OS
//!    │        (trait PageSource: reserve / commit / release OS memory)
//! sizeclass  the size-class table (const fn) and size→class lookup
//! ```
//!
//! Each tier depends on the trait of the tier below, not on its concrete
//! type; this crate composes the production stack in three `static`s (the
//! heap, the central lists over it, and the thread caches' registry).
//!
//! ## Allocation (`GoMalloc::alloc`)
//!
//! 1. Size and alignment pick a small size class (one byte-table load;
//!    alignments above 8 need a class whose size they divide), or the
//!    request is large (over 32 KiB, or aligned beyond what any class
//!    offers).
//! 2. Small: one TLS load finds the thread's `MCache`; pop the class's
//!    stash (objects of other spans this thread freed last), else its
//!    current span's free list.
//!    No lock, no atomic read-modify-write.
//! 3. Both are empty: take the span's remote frees; else switch to a span
//!    the cache owns with free objects (local frees, or remote frees into
//!    one of its full spans); else carve ~4 KiB of never-used objects from
//!    the span; else a partial span from the central list, or a fresh one
//!    from the heap.
//! 4. Large: the heap hands out a span of whole pages at the alignment
//!    asked for; fresh pages skip the memset of `alloc_zeroed`.
//!
//! ## Free (`GoMalloc::dealloc`)
//!
//! 1. The layout gives the class. An object of 64 bytes or more goes on the
//!    class's stash in the thread's cache: no bounds test, no page-map walk
//!    (the next allocation of the class takes it back first). A smaller one
//!    is pushed on the cache's list if it lies in the span the cache
//!    allocates that class from (two compares against bounds kept in the
//!    cache); else it goes on the stash too if the cache owns its span, or
//!    straight to step 3 (objects under a cache line of another thread's
//!    span: re-using one would write next to that thread's objects).
//! 2. Past 32 KiB (and 64 objects) per class the stash drains: each
//!    object's span is found through the page map (O(1), lock-free); into
//!    the current span or another span the cache owns (it records its
//!    owner's id) the object goes on that span's list, still with no lock
//!    and no atomic read-modify-write. (Sending every free of 64 bytes and
//!    more to the stash, rather than testing the current span's bounds
//!    first, removed a branch that larson's random frees mispredicted:
//!    larson 8–16% faster at 1 and 2 threads.)
//! 3. Into another thread's span, objects go on the span's remote stack (one
//!    CAS per run of objects of one span); its owner collects them. The one
//!    push that finds the span on its central list's full list tells the
//!    list, which takes the span back into use or, if all its objects are
//!    free, returns it to the heap.
//! 4. Large: the span goes back to the heap and coalesces with its free
//!    neighbours.
//!
//! The C ABI (`gomalloc-capi`, through [`raw`]) frees without a layout: it
//! walks the page map with every check first, aborts on a pointer that is
//! not the start of a live object, then takes the same steps.
//!
//! ## Threads
//!
//! A thread's cache is made on its first allocation, in a record carved
//! from the heap, and handed back by a `pthread_key_create` destructor when
//! the thread exits. Allocation while the cache is being made or after it
//! was handed back goes through one shared cache behind a lock. No lock on
//! any of these paths allocates (`mheap::sync::RawLock`).
//!
//! ## Memory back to the OS, options, statistics
//!
//! The page heap holds the scavenging policy (retained bound, idle delay,
//! memory limit); this crate drives it (`src/scavenger.rs`): spans moving
//! between the central lists and the heap, and large objects, run one
//! increment when one is due; a background thread (option) does the rest
//! while the program is idle, and sweeps spans stranded on the central
//! lists and in thread caches back to the heap; [`release_memory`] gives
//! back everything free at once. [`Options`] come from the `GOMALLOC_*`
//! variables (read once, without allocating) or [`set_options`];
//! [`stats`] are in the shape of Go's `runtime.MemStats`, and
//! [`stats_by_walk`] recomputes them from the heap for tests.
//!
//! ## Hardening (feature `hardened`)
//!
//! Checks against heap misuse, each aborting with a message that names it:
//! free-list links stored encoded with a per-process secret and checked on
//! every pop (`mcentral::objects`), double-free tags on small objects (8-byte
//! requests take 16 bytes, for the tag's word), the C path's checks of the
//! freed pointer on the Rust `dealloc`/`realloc` too (object start, and the
//! layout's class), and canaries after large objects, checked at free and
//! realloc. The large-object checks can also be switched on at run time in
//! a build without the feature. The threat each check addresses and its
//! cost are in `src/hardened.rs`.
//!
//! ## Rules kept everywhere
//!
//! Nothing here calls the global allocator; nothing panics or unwinds out of
//! `GlobalAlloc` (invariant failures print a fixed message and abort); out
//! of memory returns null.

#![warn(unsafe_op_in_unsafe_fn, missing_docs)]

mod global;
mod hardened;
mod options;
mod print;
pub mod raw;
mod scavenger;
mod stats;
mod thread;
mod walk;

pub use global::GoMalloc;
#[doc(hidden)]
pub use global::inject_os_faults;
#[doc(hidden)]
pub use mheap::FaultPlan;
pub use options::{Options, OptionsError, options, set_options};
pub use scavenger::{background_thread_running, release_memory};
pub use stats::{ClassStats, Stats, print_stats, stats};
pub use walk::{HeapWalk, stats_by_walk};
