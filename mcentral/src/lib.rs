//! # mcentral: the per-size-class central span lists
//!
//! **Status: not built yet** (the issue "Small and tiny objects" fills it).
//! This crate contains no code today; nothing here pretends to work.
//!
//! What the tier will do: one central list per size class, each behind its
//! own cache-padded lock, holding the spans of that class that still have
//! free objects and those that do not. It hands a span with free objects to
//! a thread cache (`mcache`), takes spans back from thread caches, asks the
//! tier below (`mheap`, through a span-source trait) for a fresh span when it
//! has none, and returns a span to the heap once all its objects are free.
//!
//! It owns: the partial/full span lists of each class and their counters.
//! It may call: the span-source trait that `mheap` implements; `sizeclass`.
//! See `gomalloc/src/lib.rs` for the map of the whole allocator.
