//! The loom models' shared harness: a fake span source over small buffers
//! that checks every hand-out and give-back, and helpers to move objects
//! around and drain the central lists at the end of a model. Included by
//! `mcentral/tests/loom_central.rs` and `mcache/tests/loom_cache.rs`.

#![allow(dead_code, unused_imports)]

pub use core::ptr;
pub use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
pub use mcentral::objects::{FLAGS, carve, has_remote, next_of, set_next, take_remote};
pub use mcentral::{Centrals, SpanSource};
pub use mheap::sync::Ordering::{AcqRel, Acquire, Release};
pub use mheap::{PAGE_SIZE, Span};
pub use std::sync::Arc;

/// The one size class the models use. The fake source decides the object
/// size, so any index below `NUM_CLASSES` works for the central lists; the
/// thread cache reads its stash policy from the real table by class index,
/// and a class of objects of a cache line or more takes the stash for any
/// span, which the mcache models exercise.
pub const CLASS: usize = sizeclass::SIZE_CLASSES.class_of(1024);

/// A span source over a few boxed pages, one page per span, that re-uses
/// spans given back to it and checks how they are used.
///
/// Invariant: `live[i]` is true exactly while span `i` is handed out (from
/// `alloc_span` to `free_span`); `recycled` has bit `i` set while span `i`
/// waits for re-use.
pub struct FakeSource {
    elem_size: usize,
    spans: Vec<Span>,
    /// The spans' memory (the records point into it).
    _pages: Vec<Box<[u64]>>,
    /// Span handed out and not given back.
    live: Vec<AtomicBool>,
    /// Span owned by a cache, as the models track it.
    owned: Vec<AtomicBool>,
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
    pub fn new(nspans: usize, elem_size: usize) -> Self {
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
            owned: flags(nspans),
            held: flags(nspans * nelems),
            fresh: AtomicUsize::new(0),
            recycled: loom::sync::atomic::AtomicUsize::new(0),
            handed: AtomicUsize::new(0),
            freed: AtomicUsize::new(0),
        }
    }

    pub fn nelems(&self) -> usize {
        PAGE_SIZE / self.elem_size
    }

    pub fn index_of(&self, span: &Span) -> usize {
        let base = self.spans.as_ptr() as usize;
        let i = (ptr::from_ref(span) as usize - base) / size_of::<Span>();
        assert!(
            i < self.spans.len() && ptr::eq(&self.spans[i], span),
            "foreign span"
        );
        i
    }

    /// The span holding `addr`.
    pub fn span_of(&self, addr: usize) -> &Span {
        self.spans
            .iter()
            .find(|s| s.contains(addr))
            .expect("address of no span")
    }

    /// The global index of the object at `addr` (checked to be an object
    /// boundary of a live span).
    pub fn obj_index(&self, addr: usize) -> usize {
        let span = self.span_of(addr);
        let i = self.index_of(span);
        assert!(self.live[i].load(SeqCst), "object of a span not handed out");
        let off = addr - span.start();
        assert_eq!(off % self.elem_size, 0, "not an object boundary");
        i * self.nelems() + off / self.elem_size
    }

    /// The model's code takes `obj` (just allocated): nobody may hold it.
    pub fn take_obj(&self, obj: *mut u8) {
        let k = self.obj_index(obj as usize);
        assert!(!self.held[k].swap(true, SeqCst), "object handed out twice");
    }

    /// The model's code is about to free `obj`.
    pub fn give_obj(&self, obj: *mut u8) {
        let k = self.obj_index(obj as usize);
        assert!(
            self.held[k].swap(false, SeqCst),
            "object freed but not held"
        );
    }

    /// A cache takes ownership of `span`.
    pub fn own(&self, span: &Span) {
        let i = self.index_of(span);
        assert!(
            self.live[i].load(SeqCst),
            "cache owns a span not handed out"
        );
        assert!(
            !self.owned[i].swap(true, SeqCst),
            "span owned by two caches at once"
        );
    }

    /// A cache is about to give `span` back.
    pub fn disown(&self, span: &Span) {
        let i = self.index_of(span);
        assert!(
            self.owned[i].swap(false, SeqCst),
            "cache gives back a span it does not own"
        );
    }

    pub fn live_spans(&self) -> usize {
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
            !self.owned[i].load(SeqCst),
            "span given back to the source while a cache owns it"
        );
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

    unsafe fn span_of(&self, obj: *mut u8) -> &Span {
        let span = FakeSource::span_of(self, obj as usize);
        assert!(
            self.live[self.index_of(span)].load(SeqCst),
            "span lookup of an object of a span not handed out"
        );
        span
    }
}

pub type Central = Centrals<FakeSource>;

pub fn new_central(nspans: usize, elem_size: usize) -> Arc<Central> {
    Arc::new(Centrals::new(FakeSource::new(nspans, elem_size)))
}

/// Runs `f` under loom with `preemptions` as the default preemption bound
/// (`LOOM_MAX_PREEMPTIONS` overrides it), and reports how many executions
/// it explored (`cargo xtask loom` shows the line).
pub fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
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
pub fn list_to_vec(mut p: *mut u8, max: usize) -> Vec<usize> {
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

/// Links `objs` into a list (null when empty).
pub fn vec_to_list(objs: &[usize]) -> *mut u8 {
    let mut head = ptr::null_mut();
    for &o in objs.iter().rev() {
        // SAFETY: the caller owns these free objects.
        unsafe { set_next(o as *mut u8, head) };
        head = o as *mut u8;
    }
    head
}

/// Checks, for the owner of `span` about to give it back with `free`, that
/// no object is both on `free` and on the remote stack and that both are
/// proper lists (no cycle), so that a broken protocol fails here instead of
/// sending `uncache_span` round a cycle for ever.
pub fn check_disjoint(span: &Span, free: *mut u8) {
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

/// Carves every object of `span` (which the caller owns) and takes them.
pub fn carve_all(c: &Central, span: &Span) -> Vec<usize> {
    // SAFETY: the caller owns the span.
    let (head, n) = unsafe { carve(span, span.nelems()) };
    assert_eq!(n, span.nelems());
    let objs = list_to_vec(head, n);
    for &o in &objs {
        c.source().take_obj(o as *mut u8);
    }
    objs
}

/// Frees `obj` from a thread that does not own its span.
pub fn free_remote(c: &Central, obj: usize) {
    let src = c.source();
    let span = src.span_of(obj);
    src.give_obj(obj as *mut u8);
    // SAFETY: the object was allocated and is not used afterwards.
    unsafe { c.free_remote(span, obj as *mut u8) };
}

/// A cache's turn: take a span, allocate one object from it as a cache
/// would (its list, else carve, else its remote stack), use it, free it
/// locally, give the span back.
pub fn cache_round(c: &Central) {
    let src = c.source();
    let g = c.cache_span(CLASS).expect("fake source exhausted");
    src.own(g.span);
    let mut list = g.free;
    if list.is_null() {
        // SAFETY: we own the span.
        list = unsafe { carve(g.span, 1) }.0;
    }
    if list.is_null() {
        list = take_remote(g.span, 0);
    }
    assert!(
        !list.is_null(),
        "central list handed out a span with nothing to give"
    );
    let obj = list;
    // SAFETY: `obj` heads a free list of our span.
    let rest = unsafe { next_of(obj) };
    src.take_obj(obj);
    // SAFETY: the object is ours; write past its link word.
    unsafe { obj.add(8).write_bytes(0xA5, 8) };
    src.give_obj(obj);
    // SAFETY: free it locally: back on our list.
    unsafe { set_next(obj, rest) };
    check_disjoint(g.span, obj);
    src.disown(g.span);
    // SAFETY: we own the span and give it up with its free objects.
    unsafe { c.uncache_span(g.span, obj) };
}

/// With every thread joined and every object freed: the lists are
/// well-formed, no span sits on the full list, and every partial span holds
/// each of its objects exactly once; each goes back to the source, after
/// which no span is live and every span handed out was given back once.
pub fn drain_and_check(c: &Central) {
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
