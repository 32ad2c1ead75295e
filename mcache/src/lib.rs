//! # mcache: the per-thread object cache
//!
//! **Status: not built yet** (the issue "Small and tiny objects" fills it).
//! This crate contains no code today; nothing here pretends to work.
//!
//! What the tier will do: one cache per thread holding, for every size
//! class, the span it allocates from, so that the allocation fast path takes
//! no lock and no atomic read-modify-write; the tiny allocator that packs
//! requests under 16 bytes into one 16-byte object; frees by the owning
//! thread straight into the span, and cheap remote frees from other threads.
//!
//! It owns: the per-class current spans of one thread and the tiny block.
//! It may call: the central-list trait that `mcentral` implements;
//! `sizeclass`. See `gomalloc/src/lib.rs` for the map of the whole allocator.
