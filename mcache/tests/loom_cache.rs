//! Loom models of the thread cache against the central lists
//! (`src/lib.rs`: refill, local and remote frees, flush).
//!
//! Run them with `cargo xtask loom` (release, debug assertions on, bounded
//! preemptions); `cargo xtask loom --broken` checks that each one fails
//! when the protocol it guards is broken on purpose. Without
//! `--cfg gomalloc_loom` this file compiles to nothing.
//!
//! # The configuration
//!
//! As in `mcentral/tests/loom_central.rs` (whose fake span source and
//! checks this file repeats, to be kept in step): one size class, spans of
//! one page cut into 2 or 4 objects, a fake [`SpanSource`] over boxed pages
//! that re-uses spans and checks that a span is never handed out while
//! live, never given back twice, never given back with objects on its
//! remote stack or allocated; the models check that no object is handed
//! out twice, and every model ends in [`drain_and_check`], which counts
//! every object of every span exactly once and gives the spans back.
//!
//! The test's own bookkeeping uses plain core atomics, not loom's: loom
//! runs one thread at a time, so they check exclusion in real time, and they
//! add no synchronisation that could hide a missing edge in the protocol.
//!
//! # The models, and the break each one catches
//!
//! | model | races | broken variant |
//! |---|---|---|
//! | [`refill_races_remote_frees`] | a cache's refill (collect, give back, take another) vs two remote frees | `take_remote` |
//! | [`flush_races_remote_frees`] | a cache's flush (thread exit) vs remote frees of objects it allocated | `flush` |

#![cfg(gomalloc_loom)]

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use mcache::MCache;
use mcentral::objects::{FLAGS, next_of};
use mcentral::{Centrals, SpanSource};
use mheap::sync::Ordering::{AcqRel, Acquire, Release};
use mheap::{PAGE_SIZE, Span};
use std::sync::Arc;

/// The one size class the models use (any index below `NUM_CLASSES` works:
/// the fake source decides the object size).
const CLASS: usize = 1;

/// A span source over a few boxed pages, one page per span, that re-uses
/// spans given back to it and checks how they are used.
///
/// Invariant: `live[i]` is true exactly while span `i` is handed out (from
/// `alloc_span` to `free_span`); `recycled` has bit `i` set while span `i`
/// waits for re-use.
struct FakeSource {
    elem_size: usize,
    spans: Vec<Span>,
    /// The spans' memory (the records point into it).
    _pages: Vec<Box<[u64]>>,
    /// Span handed out and not given back.
    live: Vec<AtomicBool>,
    /// Object handed to the model's code (allocated), by object index.
    held: Vec<AtomicBool>,
    /// Next never-used record.
    fresh: AtomicUsize,
    /// Spans given back, ready for re-use: a loom atomic, because handing a
    /// record from the thread that gave it back to the one that re-uses it
    /// must order their accesses to its cells.
    recycled: loom::sync::atomic::AtomicUsize,
    handed: AtomicUsize,
    freed: AtomicUsize,
}

impl FakeSource {
    fn new(nspans: usize, elem_size: usize) -> Self {
        assert!(nspans <= usize::BITS as usize);
        let pages: Vec<Box<[u64]>> = (0..nspans)
            .map(|_| vec![0u64; PAGE_SIZE / 8].into_boxed_slice())
            .collect();
        let spans: Vec<Span> = pages
            .iter()
            .map(|p| Span::new_detached(p.as_ptr() as usize, 1, CLASS as u8, elem_size))
            .collect();
        let nelems = PAGE_SIZE / elem_size;
        let flags = |n| (0..n).map(|_| AtomicBool::new(false)).collect();
        Self {
            elem_size,
            spans,
            _pages: pages,
            live: flags(nspans),
            held: flags(nspans * nelems),
            fresh: AtomicUsize::new(0),
            recycled: loom::sync::atomic::AtomicUsize::new(0),
            handed: AtomicUsize::new(0),
            freed: AtomicUsize::new(0),
        }
    }

    fn nelems(&self) -> usize {
        PAGE_SIZE / self.elem_size
    }

    fn index_of(&self, span: &Span) -> usize {
        let base = self.spans.as_ptr() as usize;
        let i = (ptr::from_ref(span) as usize - base) / size_of::<Span>();
        assert!(
            i < self.spans.len() && ptr::eq(&self.spans[i], span),
            "foreign span"
        );
        i
    }

    /// The span holding `addr`.
    fn span_of(&self, addr: usize) -> &Span {
        self.spans
            .iter()
            .find(|s| s.contains(addr))
            .expect("address of no span")
    }

    /// The global index of the object at `addr` (checked to be an object
    /// boundary of a live span).
    fn obj_index(&self, addr: usize) -> usize {
        let span = self.span_of(addr);
        let i = self.index_of(span);
        assert!(self.live[i].load(SeqCst), "object of a span not handed out");
        let off = addr - span.start();
        assert_eq!(off % self.elem_size, 0, "not an object boundary");
        i * self.nelems() + off / self.elem_size
    }

    /// The model's code takes `obj` (just allocated): nobody may hold it.
    fn take_obj(&self, obj: *mut u8) {
        let k = self.obj_index(obj as usize);
        assert!(!self.held[k].swap(true, SeqCst), "object handed out twice");
    }

    /// The model's code is about to free `obj`.
    fn give_obj(&self, obj: *mut u8) {
        let k = self.obj_index(obj as usize);
        assert!(
            self.held[k].swap(false, SeqCst),
            "object freed but not held"
        );
    }

    fn live_spans(&self) -> usize {
        self.live.iter().filter(|l| l.load(SeqCst)).count()
    }
}

// SAFETY: `alloc_span` hands out a record of `CLASS` (the only class the
// models ask for) whose `live` flag was clear, resets its objects first, and
// never hands out a record twice without a `free_span` in between.
unsafe impl SpanSource for FakeSource {
    fn alloc_span(&self, class: usize) -> Option<&Span> {
        assert_eq!(class, CLASS, "fake source asked for another class");
        let mut i = None;
        let mut m = self.recycled.load(Acquire);
        while m != 0 {
            let bit = m.trailing_zeros() as usize;
            match self
                .recycled
                .compare_exchange(m, m & !(1 << bit), AcqRel, Acquire)
            {
                Ok(_) => {
                    i = Some(bit);
                    break;
                }
                Err(cur) => m = cur,
            }
        }
        let i = match i {
            Some(i) => i,
            None => {
                let i = self.fresh.fetch_add(1, SeqCst);
                assert!(i < self.spans.len(), "fake source exhausted: spans leak");
                i
            }
        };
        assert!(
            !self.live[i].swap(true, SeqCst),
            "span handed out while live"
        );
        let span = &self.spans[i];
        // SAFETY: nobody else holds the record (its live flag was clear).
        unsafe { span.objects.reset() };
        self.handed.fetch_add(1, SeqCst);
        Some(span)
    }

    unsafe fn free_span(&self, span: &Span) {
        let i = self.index_of(span);
        assert!(
            span.objects.remote.load(Acquire) & !FLAGS == 0,
            "span given back with objects on its remote stack"
        );
        let nelems = self.nelems();
        assert!(
            (0..nelems).all(|k| !self.held[i * nelems + k].load(SeqCst)),
            "span given back while an object of it is allocated"
        );
        assert!(self.live[i].swap(false, SeqCst), "span given back twice");
        self.freed.fetch_add(1, SeqCst);
        self.recycled.fetch_or(1 << i, Release);
    }
}

type Central = Centrals<FakeSource>;

fn new_central(nspans: usize, elem_size: usize) -> Arc<Central> {
    Arc::new(Centrals::new(FakeSource::new(nspans, elem_size)))
}

/// Runs `f` under loom with `preemptions` as the default preemption bound
/// (`LOOM_MAX_PREEMPTIONS` overrides it), and reports how many executions
/// it explored (`cargo xtask loom` shows the line).
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(preemptions);
    }
    let bound = b.preemption_bound;
    let iterations = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&iterations);
    b.check(move || {
        counter.fetch_add(1, SeqCst);
        f()
    });
    eprintln!(
        "loom: {} iterations (preemption bound {bound:?})",
        iterations.load(SeqCst)
    );
}

/// The objects of a list, in order; panics on a list longer than `max`
/// (a cycle: an object on the list twice).
fn list_to_vec(mut p: *mut u8, max: usize) -> Vec<usize> {
    let mut v = Vec::new();
    while !p.is_null() {
        assert!(
            v.len() < max,
            "free list longer than the span: an object is on it twice"
        );
        v.push(p as usize);
        // SAFETY: `p` is a free object of a span the caller owns.
        p = unsafe { next_of(p) };
    }
    v
}

/// Checks, for the owner of `span` about to give it back with `free`, that
/// no object is both on `free` and on the remote stack and that both are
/// proper lists (no cycle), so that a broken protocol fails here instead of
/// sending `uncache_span` round a cycle for ever.
fn check_disjoint(span: &Span, free: *mut u8) {
    let n = span.nelems();
    let mut objs = list_to_vec(free, n);
    // The owner may walk its stack: pushes only prepend, and the objects
    // already on it are not touched until the owner takes them.
    let stack = (span.objects.remote.load(Acquire) & !FLAGS) as *mut u8;
    objs.extend(list_to_vec(stack, n));
    let len = objs.len();
    objs.sort_unstable();
    objs.dedup();
    assert_eq!(
        objs.len(),
        len,
        "object both on the free list and the remote stack"
    );
}

/// Frees `obj` from a thread that does not own its span.
fn free_remote(c: &Central, obj: usize) {
    let src = c.source();
    let span = src.span_of(obj);
    src.give_obj(obj as *mut u8);
    // SAFETY: the object was allocated and is not used afterwards.
    unsafe { c.free_remote(span, obj as *mut u8) };
}

/// With every thread joined and every object freed: the lists are
/// well-formed, no span sits on the full list, and every partial span holds
/// each of its objects exactly once; each goes back to the source, after
/// which no span is live and every span handed out was given back once.
fn drain_and_check(c: &Central) {
    let src = c.source();
    assert!(
        src.held.iter().all(|h| !h.load(SeqCst)),
        "model ended holding objects"
    );
    let (partial, full) = c.check_class(CLASS);
    assert_eq!(
        full, 0,
        "a span sits on the full list though all its objects were freed (a free lost or not notified)"
    );
    let handed = src.handed.load(SeqCst);
    for _ in 0..partial {
        let g = c.cache_span(CLASS).expect("partial span");
        assert_eq!(
            src.handed.load(SeqCst),
            handed,
            "drain took a fresh span: a partial span went missing"
        );
        let span = g.span;
        let mut objs = list_to_vec(g.free, span.nelems());
        // SAFETY: we own the span (the central list handed it to us).
        let carved = span.objects.carved.with(|p| unsafe { *p }) as usize;
        for &o in &objs {
            assert!(span.contains(o), "object of another span on a free list");
            assert!(
                !src.held[src.obj_index(o)].load(SeqCst),
                "allocated object on a free list"
            );
        }
        objs.sort_unstable();
        objs.dedup();
        assert_eq!(
            objs.len() + span.nelems() - carved,
            span.nelems(),
            "objects lost or duplicated: {} free + {} never carved of {}",
            objs.len(),
            span.nelems() - carved,
            span.nelems()
        );
        check_disjoint(span, g.free);
        // SAFETY: we own the span; `g.free` lists its free objects.
        unsafe { c.uncache_span(span, g.free) };
    }
    assert_eq!(c.check_class(CLASS), (0, 0), "wholly free span kept");
    assert_eq!(src.live_spans(), 0, "span leaked");
    assert_eq!(
        src.freed.load(SeqCst),
        handed,
        "spans handed out != given back"
    );
}

/// Allocates an object of `CLASS` from `cache` and takes it.
/// Spawns a model thread with room on its stack for an `MCache` (a slot of
/// span lists per size class: several KiB).
fn spawn_big<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> loom::thread::JoinHandle<T> {
    loom::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(f)
        .expect("spawn")
}

fn alloc(cache: &mut MCache, c: &Central) -> usize {
    let p = cache.alloc(CLASS, c);
    assert!(!p.is_null(), "fake source exhausted");
    c.source().take_obj(p);
    p as usize
}

/// Frees `obj` through `cache` (locally if it owns the span, else remotely).
fn free(cache: &mut MCache, c: &Central, obj: usize) {
    let src = c.source();
    let span = src.span_of(obj);
    src.give_obj(obj as *mut u8);
    // SAFETY: the object was allocated and is not used afterwards.
    unsafe { cache.free(span, obj as *mut u8, c) };
}

/// (a) A cache has allocated both objects of its span; two threads free
/// them remotely while the cache allocates again: its refill collects the
/// remote stack, or gives the exhausted span back (full, or partial if a
/// free slipped in) and takes a span from the central list (that one, or a
/// fresh one). Then the cache frees what it got and flushes. Every object is
/// accounted for exactly once. Broken by `take_remote` (a load and a
/// separate write lose a push in between).
#[test]
fn refill_races_remote_frees() {
    model(4, || {
        let c = new_central(2, 4096);
        let mut cache = Box::new(MCache::new());
        let objs = [alloc(&mut cache, &c), alloc(&mut cache, &c)];
        let threads: Vec<_> = objs
            .iter()
            .map(|&o| {
                let c = Arc::clone(&c);
                loom::thread::spawn(move || free_remote(&c, o))
            })
            .collect();
        let x = alloc(&mut cache, &c);
        free(&mut cache, &c, x);
        cache.flush(&*c);
        for t in threads {
            t.join().unwrap();
        }
        drain_and_check(&c);
    });
}

/// (e) A thread exits (`MCache::flush`) holding a span with free objects on
/// its list, while other threads free objects it allocated: one through
/// its own cache (the remote path of `MCache::free`), one through
/// `free_remote` directly. Nothing is lost: the flushed span ends partial
/// or back at the source. Broken by `flush` (the cache's free list is
/// dropped on the floor).
#[test]
fn flush_races_remote_frees() {
    model(8, || {
        let c = new_central(2, 2048);
        let mut cache = Box::new(MCache::new());
        // Four objects a span, carved two at a time: after three
        // allocations the cache's list holds the fourth.
        let objs = [
            alloc(&mut cache, &c),
            alloc(&mut cache, &c),
            alloc(&mut cache, &c),
        ];
        let other = {
            let c = Arc::clone(&c);
            let o = objs[0];
            spawn_big(move || free(&mut Box::new(MCache::new()), &c, o))
        };
        let exiting = {
            let c = Arc::clone(&c);
            let o = objs[1];
            spawn_big(move || {
                free(&mut cache, &c, o);
                cache.flush(&*c);
            })
        };
        free_remote(&c, objs[2]);
        other.join().unwrap();
        exiting.join().unwrap();
        drain_and_check(&c);
    });
}
