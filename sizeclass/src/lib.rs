//! # sizeclass: the size-class tier of gomalloc
//!
//! The bottom tier (the map of all tiers is in the `gomalloc` crate's docs).
//! It owns the **size-class table**: which object sizes exist, how many pages
//! a span of each class has and how many objects it holds; and the two
//! questions the tiers above ask on every allocation and free: *which class
//! serves a request of n bytes* ([`SizeClasses::class_of`], one byte-table
//! load) and *which object of a span holds byte offset k*
//! ([`SizeClasses::object_index`], one multiplication). It calls nothing:
//! no other tier, no allocator (the crate is `no_std`), no system call.
//!
//! The table is generated in the manner of Go's `mksizeclasses.go` by a
//! `const fn`, [`SizeClasses::new`], from [`Params`]. gomalloc's own table,
//! [`SIZE_CLASSES`], is a `static` computed at compile time, so the running
//! allocator does no start-up work and only reads it. With
//! [`Params::GO_1_9_2`] the generator reproduces Go 1.9.2's 67-class table
//! exactly (a unit test compares it entry by entry).
//!
//! ## gomalloc's parameters
//!
//! 8 KiB pages ([`PAGE_SIZE`]), objects up to 32 KiB are small
//! ([`MAX_SMALL_SIZE`]), a span may waste at most 1/8 at its tail: Go's
//! choices. One differs: candidate sizes step by 8 bytes up to 64
//! (8, 16, 24, 32, 40, 48, 56, 64) where Go steps by 16 from 16
//! (`min_align16` is 64, not 16). The reason is that Rust asks for exact
//! sizes with explicit alignment. A Rust type's size is a multiple of its
//! alignment, so a 24-byte type needs at most 8-byte alignment, and 24-, 40-
//! and 56-byte objects are everywhere in Rust: three-word structs (`Vec`,
//! `String`), `Arc` and `Rc` inners around small values, small boxed structs,
//! hash-map and B-tree nodes. Go's table rounds 24 up to 32 (a third of the
//! object wasted), 40 to 48 and 56 to 64. Types that do need 16-byte
//! alignment have sizes that are multiples of 16, and those still map to
//! classes that are multiples of 16 (a unit test checks every such size).
//! Above 64 bytes a 16-byte step wastes at most about 20 % on the gap
//! (15 of 80 bytes), and every extra class costs a partly used span in each
//! thread cache and central list, so the 8-byte steps stop there.
//!
//! Two more differ, and both come from measurement: every span has at least
//! 8 pages (64 KiB, `min_span_pages`) and at least 8 objects
//! (`min_objects`); Go starts at one page and one object. With one-page
//! spans a thread that allocates a thousand 16- to 64-byte objects and then
//! frees them fills 2 to 8 spans, and most of its frees miss the span its
//! cache allocates from, so they take the page-map walk (1.3–1.7× mimalloc's
//! time on that batch benchmark); with Go's one-object spans for 28–32 KiB
//! objects every allocation reached the page heap (2× mimalloc). The pages
//! of a span are touched only as its objects are carved, so the larger
//! spans cost address space, not resident memory. More classes survive the
//! merge rule with the larger spans (above 8 KiB a class every 1 KiB).
//! The result has [`NUM_CLASSES`] = 85 classes (class 0, large objects,
//! included), 84 small ones:
//!
//! ```
//! assert_eq!(sizeclass::NUM_CLASSES, 85);
//! let t = &sizeclass::SIZE_CLASSES;
//! let first: Vec<usize> = (1..=12).map(|c| t.size_of_class(c)).collect();
//! assert_eq!(first, [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128]);
//! ```
//!
//! `cargo xtask sizeclasses` prints the whole table with its waste figures
//! (see [`SizeClasses::render`]); `--go1.9` prints Go's.
//!
//! ## Using the generator on its own
//!
//! A table for 4 KiB pages and objects up to 16 KiB, printed and queried:
//!
//! ```
//! use sizeclass::{Params, SizeClasses, WasteBound};
//!
//! let params = Params {
//!     page_size: 4096,
//!     max_small: 16 * 1024,
//!     max_waste: WasteBound::ONE_EIGHTH,
//!     min_align16: 64,
//!     min_span_pages: 1,
//!     min_objects: 1,
//! };
//! let table = SizeClasses::new(params)?;
//!
//! let mut text = String::new();
//! table.render(&mut text)?;
//! print!("{text}");
//!
//! // A 100-byte request is served by the 112-byte class...
//! let class = table.class_of(100);
//! assert_eq!(table.size_of_class(class), 112);
//! assert_eq!(table.size_of_class(class - 1), 96);
//! // ...whose one-page spans hold 36 objects; byte 341 is in object 3.
//! assert_eq!(table.pages_of_class(class), 1);
//! assert_eq!(table.objects_of_class(class), 36);
//! assert_eq!(table.object_index(class, 341), 3);
//! // Requests above max_small are large objects.
//! assert_eq!(table.try_class_of(16 * 1024 + 1), None);
//!
//! // Bad parameters are typed errors.
//! let bad = Params { page_size: 3000, ..params };
//! assert_eq!(SizeClasses::new(bad), Err(sizeclass::ParamError::PageSize(3000)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Files
//!
//! - `params.rs`: [`Params`], [`WasteBound`], [`ParamError`];
//! - `generator.rs`: the generator and the division magic;
//! - `table.rs`: [`SizeClasses`] and its O(1) lookups;
//! - `render.rs`: the text table.

#![no_std]

mod generator;
mod params;
mod render;
mod table;

pub use params::{
    MAX_MAX_SMALL, MAX_PAGE_SIZE, MIN_MAX_SMALL, MIN_PAGE_SIZE, ParamError, Params, WasteBound,
};
pub use table::{MAX_CLASSES, SizeClasses};

/// log2 of gomalloc's page size.
pub const PAGE_SHIFT: usize = 13;
/// gomalloc's page size in bytes (8 KiB); spans are whole pages.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// The largest small object in gomalloc (32 KiB): larger requests are large
/// objects, served by the page heap directly.
pub const MAX_SMALL_SIZE: usize = 32 * 1024;

/// Number of classes in gomalloc's table, class 0 included: arrays indexed
/// by class (one entry per class in a cache, one central list per class)
/// have this length.
pub const NUM_CLASSES: usize = GOMALLOC_TABLE.len();

/// gomalloc's size-class table, from [`Params::GOMALLOC`], computed at
/// compile time.
pub static SIZE_CLASSES: SizeClasses = GOMALLOC_TABLE;

/// The compile-time evaluation behind [`SIZE_CLASSES`] and [`NUM_CLASSES`]:
/// bad parameters or a generator bug fail the build here.
const GOMALLOC_TABLE: SizeClasses = match SizeClasses::new(Params::GOMALLOC) {
    Ok(table) => table,
    Err(_) => panic!("gomalloc's size-class parameters are rejected by the generator"),
};

// Class indices of gomalloc's table fit in a u8 and the largest class ends
// exactly at MAX_SMALL_SIZE.
const _: () = assert!(NUM_CLASSES <= MAX_CLASSES);
const _: () = assert!(GOMALLOC_TABLE.size_of_class(NUM_CLASSES - 1) == MAX_SMALL_SIZE);

// Every entry of the two size-to-class tables is a class of the table
// (below NUM_CLASSES): `gomalloc` tells the optimizer so, and its caches
// index their per-class arrays by a looked-up class with no bounds check.
const _: () = {
    let t = &GOMALLOC_TABLE;
    let mut i = 0;
    while i < t.small.len() {
        assert!((t.small[i] as usize) < NUM_CLASSES);
        i += 1;
    }
    let mut i = 0;
    while i < t.large.len() {
        assert!((t.large[i] as usize) < NUM_CLASSES);
        i += 1;
    }
};
