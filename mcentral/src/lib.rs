//! # mcentral: the per-size-class central span lists
//!
//! The middle tier of gomalloc (the map of all tiers is in `gomalloc`'s
//! docs). For every size class one central list, behind its own
//! cache-padded lock, owns the spans of that class that no thread cache
//! holds: spans that still have objects to give (partial) and spans that do
//! not (full). It hands a span with objects to a thread cache
//! ([`Centrals::cache_span`]), takes spans back ([`Centrals::uncache_span`]),
//! takes objects freed by threads that do not own their span
//! ([`Centrals::free_remote`], lock-free except for the one free that finds
//! a span full), hands a few objects of the class's *shared span* to a
//! cache that has allocated little of the class ([`Centrals::take_batch`]),
//! gets fresh spans from a [`SpanSource`] when it has none,
//! and gives a span back to the source once all of its objects are free.
//!
//! It owns: the partial and full lists and the shared span of each class, the remote-free
//! protocol on each span's `SpanObjects` ([`objects`]), and per-class
//! counters. It may call: a [`SpanSource`] (the page heap in production, a
//! fake in tests and loom models); `mheap` for the span record and the
//! concurrency shim; `sizeclass`.
//!
//! ## Example: central lists alone, over a page heap on a fixed region
//!
//! ```
//! use mcentral::Centrals;
//! use mheap::{FixedRegion, HeapConfig, MHeap};
//!
//! let buf: &'static mut [u8] = Box::leak(vec![0u8; 4 << 20].into_boxed_slice());
//! let heap = MHeap::new(FixedRegion::new(buf), HeapConfig { arena_size: 1 << 20 });
//! let central = Centrals::new(&heap);
//! let class = sizeclass::SIZE_CLASSES.class_of(24);
//!
//! // A cache takes a fresh span, carves two objects, gives the span back.
//! let g = central.cache_span(class).unwrap();
//! assert!(g.free.is_null()); // fresh: nothing carved yet
//! let (objs, n) = unsafe { mcentral::objects::carve(g.span, 2) };
//! assert_eq!(n, 2);
//! // SAFETY: we own the span and hand back the objects we did not keep.
//! let second = unsafe { mcentral::objects::next_of(objs) };
//! unsafe { central.uncache_span(g.span, second) };
//! assert_eq!(central.check_class(class), (1, 0)); // partial: it has objects
//!
//! // Another thread frees the first object: the span is wholly free again
//! // and goes back to the heap the next time it is handed out and returned.
//! unsafe { central.free_remote(g.span, objs) };
//! let g2 = central.cache_span(class).unwrap();
//! assert!(std::ptr::eq(g2.span, g.span));
//! unsafe { central.uncache_span(g2.span, g2.free) };
//! assert_eq!(heap.stats().in_use, 0);
//! ```

#![warn(unsafe_op_in_unsafe_fn, missing_docs)]

mod central;
pub mod objects;
mod source;

pub use central::{Centrals, ClassCentral, ClassStats, Grant, SHARED_OWNER};
pub use source::SpanSource;
