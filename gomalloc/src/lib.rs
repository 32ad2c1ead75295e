//! # gomalloc: a Go-style memory allocator for Rust
//!
//! **Status: the global allocator is not built yet** (the issue "Small and
//! tiny objects" builds `GoMalloc`). Today the working tiers are
//! [`sizeclass`](../sizeclass/index.html) and
//! [`mheap`](../mheap/index.html); this crate contains no code.
//!
//! ## The map
//!
//! ```text
//! gomalloc   GlobalAlloc (+ C ABI), thread binding, large objects, stats
//!    │
//! mcache     per-thread cache: current span per class, tiny allocator
//!    │
//! mcentral   per-class central span lists, one lock per class
//!    │
//! mheap      page heap: spans, coalescing, page→span map, release to the OS
//!    │        (over the PageSource trait: reserve / commit / release)
//! sizeclass  the size-class table generator and size→class lookup
//! ```
//!
//! Each tier depends on the trait of the tier below, never on its concrete
//! type, so each can be tested alone against a fake below it.
