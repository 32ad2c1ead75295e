//! # mheap: the page source and the page heap
//!
//! The bottom tier of gomalloc that touches memory (see `gomalloc/src/lib.rs`
//! for the map of the whole allocator). It owns all address space the
//! allocator uses and hands it out in **spans**: runs of contiguous 8 KiB
//! pages, each described by a [`Span`] record.
//!
//! - [`PageSource`] (module [`source`]) is where memory comes from: a state
//!   machine Reserved → Committed → Released → Committed over ranges of
//!   address space. [`OsPageSource`] maps anonymous memory in 64 MiB arenas
//!   (no swap reservation) and gives pages back with `madvise`;
//!   [`FixedRegion`], [`FaultInjecting`] and [`Counting`] are the adapters
//!   tests compose.
//! - [`MHeap`] is the page heap: span allocation by page count (O(1) free
//!   bins for up to 127 pages), any power-of-two alignment for large
//!   objects, coalescing of free neighbours, an O(1) lock-free page → span
//!   map that answers "not ours" for foreign addresses, exact tracking of
//!   released pages, and [`MHeap::release`] to give free memory back.
//! - The scavenger (module [`scavenge`]) gives free pages back by itself:
//!   a retained bound (4 MiB + 10% of what is in use), an idle delay (1 s),
//!   an optional soft memory limit, in bounded increments
//!   ([`ScavengePolicy`], [`MHeap::scavenge_step`],
//!   [`MHeap::wait_for_scavenge_work`], [`MHeap::release_all`]).
//!
//! It owns: the address space, the span records, the page map. It may call:
//! its page source and `sizeclass` (for the page size). It never calls the
//! global allocator: span records and page-map nodes are carved from memory
//! of the page source (as Go's `fixalloc`/`persistentalloc` do), so the heap
//! can run inside `GlobalAlloc`. It has one lock, a leaf lock that never
//! allocates ([`sync::RawLock`]).
//!
//! ## Example: the heap alone, over a fixed region
//!
//! ```
//! use mheap::{FixedRegion, HeapConfig, MHeap};
//!
//! // 8 MiB of the caller's memory; the heap grows in 1 MiB arenas.
//! let buf: &'static mut [u8] = Box::leak(vec![0u8; 8 << 20].into_boxed_slice());
//! let heap = MHeap::new(FixedRegion::new(buf), HeapConfig { arena_size: 1 << 20 });
//!
//! let a = heap.alloc_pages(4, 8192).unwrap();
//! assert_eq!(a.span.npages(), 4);
//! assert!(a.zeroed); // fresh memory: no memset needed
//! let inside = a.span.start() + 5000;
//! assert!(std::ptr::eq(heap.span_of(inside).unwrap(), a.span));
//! assert!(heap.span_of(0x1000).is_none()); // never ours
//!
//! let st = heap.stats();
//! assert_eq!(st.in_use, 4 * 8192);
//! // SAFETY: the span came from this heap and is not used again.
//! unsafe { heap.free_span(a.span) };
//! assert_eq!(heap.stats().in_use, 0);
//! heap.check_invariants();
//! ```

#![warn(unsafe_op_in_unsafe_fn, missing_docs)]

mod bins;
mod fatal;
mod heap;
mod meta;
mod pagemap;
pub mod scavenge;
pub mod source;
mod span;
pub mod sync;

pub use fatal::fatal;
pub use heap::{HeapConfig, HeapError, HeapStats, MHeap, SpanAlloc};
pub use scavenge::{ScavengePolicy, monotonic_ns};
pub use sizeclass::{PAGE_SHIFT, PAGE_SIZE};
pub use source::{
    Counting, FaultInjecting, FaultPlan, FixedRegion, OsPageSource, PageSource, PageSourceError,
    ReleaseAdvice,
};
pub use span::{Span, SpanState};
