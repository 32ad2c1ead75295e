//! The central lists: one per size class, each behind its own lock.
//!
//! A class's central list owns the spans of that class that no thread cache
//! holds, in two intrusive lists:
//!
//! - **partial**: spans with objects to give (on their free list, never
//!   carved, or waiting on their remote stack);
//! - **full**: spans with none, whose remote stack is empty and not
//!   `NOTIFIED`: the first remote free into one notifies the list, which
//!   collects it and moves the span to partial (or back to the heap).
//!
//! # Flows
//!
//! - [`Centrals::cache_span`]: pop a partial span, take its remote stack
//!   (clearing the flags: the cache owns it now), hand the span and its free
//!   objects to the cache. With no partial span, take a fresh one from the
//!   span source (outside the class lock).
//! - [`Centrals::uncache_span`]: a cache gives a span back with the free
//!   objects it still had. Take the remote stack (setting
//!   `IN_CENTRAL | NOTIFIED`), count the free objects: all free → back to
//!   the span source; some free → partial; none → full, if no remote free
//!   slipped in meanwhile (`try_mark_full`), else partial.
//! - [`Centrals::free_remote`]: push onto the span's remote stack; the one
//!   push that finds the span full notifies the list (`notify_locked`).
//! - [`Centrals::sweep`] (and [`Centrals::sweep_all`], every class): remote
//!   frees into a *partial* span notify nobody (it is `NOTIFIED` already),
//!   so they wait on its stack until a cache takes the span, and a span
//!   whose last objects came home that way would never go back to the
//!   source. Sweeping walks the partial list, takes each non-empty stack
//!   (keeping `IN_CENTRAL | NOTIFIED`, as `uncache_span` does) onto the
//!   span's free list, and gives every span whose objects are all free back
//!   to the span source. Called on request (a trim), never on the
//!   allocation path.
//!
//! # Locking
//!
//! One lock per class, cache-padded so that classes never share a cache
//! line; a lock on one class never blocks another. Lock order: a class lock
//! may be held while calling the span source (whose heap lock is a leaf),
//! never the other way round, and no two class locks are ever held at once.
//!
//! A sweep holds its class lock for one walk of the partial list: one
//! atomic load per span, plus the length of each remote stack it takes
//! (each object is collected once, so the work is bounded by the objects
//! freed since the last look). It is not cut into batches: resuming a walk
//! after dropping the lock would need a cursor that cache hand-outs and
//! notifications could remove under it, and sweeps are rare. The spans it
//! gives back go to the source after the lock is released, so the heap's
//! work does not lengthen the class's critical section.

use crate::objects::{
    FLAGS, IN_CENTRAL, NOTIFIED, absorb_remote, carve, carve_batch, cut, has_remote, join,
    list_len_tail, prepend, push_list, push_remote, push_remote_chain, take_remote, try_mark_full,
};
use crate::source::SpanSource;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use crossbeam_utils::CachePadded;
use mheap::Span;
use mheap::sync::Mutex;
use sizeclass::NUM_CLASSES;

const IN_NO_LIST: u8 = 0;
const IN_PARTIAL: u8 = 1;
const IN_FULL: u8 = 2;

/// The two lists of one class. Guarded by the class lock.
///
/// Invariant: every span on `partial` has `list == IN_PARTIAL` and remote
/// flags `IN_CENTRAL | NOTIFIED`; every span on `full` has
/// `list == IN_FULL`, no free or uncarved object, and remote flags
/// `IN_CENTRAL` (with an empty stack, until a push notifies).
struct Lists {
    partial: *mut Span,
    full: *mut Span,
    /// The class's shared span (see [`Centrals::take_batch`]), or null:
    /// on no list, owned by the class lock the way a cache owns its spans
    /// (remote flags clear, `owner` [`SHARED_OWNER`]), its free objects on
    /// its own list.
    shared: *mut Span,
}

/// The `SpanObjects::owner` of a class's shared span: no cache's id (ids
/// count up from 1), so every cache frees its objects as another thread's.
pub const SHARED_OWNER: usize = usize::MAX;

// SAFETY: the lists point to span records, which are not tied to a thread;
// they are only reached under the class lock.
unsafe impl Send for Lists {}

impl Lists {
    /// # Safety
    ///
    /// Class lock held; `span` is in no list.
    unsafe fn push(&mut self, span: &Span, which: u8) {
        let head = if which == IN_PARTIAL {
            &mut self.partial
        } else {
            &mut self.full
        };
        let old = *head;
        let me = ptr::from_ref(span).cast_mut();
        let o = &span.objects;
        // SAFETY: the lock guards the links of listed spans.
        unsafe {
            o.next.with_mut(|p| *p = old);
            o.prev.with_mut(|p| *p = ptr::null_mut());
            o.list.with_mut(|p| *p = which);
            if !old.is_null() {
                (*old).objects.prev.with_mut(|p| *p = me);
            }
        }
        *head = me;
    }

    /// # Safety
    ///
    /// Class lock held; `span` is on list `which`.
    unsafe fn remove(&mut self, span: &Span, which: u8) {
        let o = &span.objects;
        // SAFETY: the lock guards the links of listed spans.
        unsafe {
            debug_assert_eq!(o.list.with(|p| *p), which);
            let next = o.next.with(|p| *p);
            let prev = o.prev.with(|p| *p);
            if !next.is_null() {
                (*next).objects.prev.with_mut(|p| *p = prev);
            }
            if prev.is_null() {
                if which == IN_PARTIAL {
                    self.partial = next;
                } else {
                    self.full = next;
                }
            } else {
                (*prev).objects.next.with_mut(|p| *p = next);
            }
            o.list.with_mut(|p| *p = IN_NO_LIST);
        }
    }
}

/// Counters of one class. Plain core atomics: statistics only, never part
/// of a protocol (the models do not look at them).
#[derive(Default)]
struct Counters {
    spans_from_source: AtomicU64,
    spans_to_source: AtomicU64,
    partial: AtomicUsize,
    full: AtomicUsize,
    allocs: AtomicU64,
    frees: AtomicU64,
}

/// A snapshot of one class's central counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Spans taken from the span source, ever.
    pub spans_from_source: u64,
    /// Spans given back to the span source, ever.
    pub spans_to_source: u64,
    /// Spans on the partial list now.
    pub partial: usize,
    /// Spans on the full list now.
    pub full: usize,
    /// Allocations reported by thread caches that flushed (see
    /// [`Centrals::add_counts`]).
    pub allocs: u64,
    /// Frees reported likewise.
    pub frees: u64,
}

/// The central list of one size class: its lock and lists, and counters.
pub struct ClassCentral {
    lists: Mutex<Lists>,
    counters: Counters,
}

impl ClassCentral {
    mheap::const_unless_loom! {
        fn new() -> Self {
            Self {
                lists: Mutex::new(Lists {
                    partial: ptr::null_mut(),
                    full: ptr::null_mut(),
                    shared: ptr::null_mut(),
                }),
                counters: Counters {
                    spans_from_source: AtomicU64::new(0),
                    spans_to_source: AtomicU64::new(0),
                    partial: AtomicUsize::new(0),
                    full: AtomicUsize::new(0),
                    allocs: AtomicU64::new(0),
                    frees: AtomicU64::new(0),
                },
            }
        }
    }
}

/// A span handed to a thread cache, with the free objects that come with it.
#[derive(Debug)]
pub struct Grant<'a> {
    /// The span; the cache owns it until it gives it back.
    pub span: &'a Span,
    /// Free objects of the span (null: carve from the span).
    pub free: *mut u8,
}

/// The central lists of every size class over a span source `SS`.
pub struct Centrals<SS> {
    source: SS,
    classes: [CachePadded<ClassCentral>; NUM_CLASSES],
}

impl<SS> Centrals<SS> {
    #[cfg(not(gomalloc_loom))]
    /// Central lists over `source`; `const`, so it can live in a `static`.
    pub const fn new(source: SS) -> Self {
        Self {
            source,
            classes: [const { CachePadded::new(ClassCentral::new()) }; NUM_CLASSES],
        }
    }

    #[cfg(gomalloc_loom)]
    /// Central lists over `source`.
    pub fn new(source: SS) -> Self {
        Self {
            source,
            classes: core::array::from_fn(|_| CachePadded::new(ClassCentral::new())),
        }
    }

    /// The span source.
    pub fn source(&self) -> &SS {
        &self.source
    }
}

impl<SS: SpanSource> Centrals<SS> {
    /// Hands a span of `class` with objects to give to a thread cache, which
    /// owns it until [`uncache_span`](Self::uncache_span). `None` when the
    /// span source is out of memory.
    pub fn cache_span(&self, class: usize) -> Option<Grant<'_>> {
        let c = &self.classes[class];
        {
            let mut lists = c.lists.lock();
            if let Some(g) = Self::hand_out_shared(&mut lists) {
                return Some(g);
            }
            let head = lists.partial;
            if !head.is_null() {
                // SAFETY: listed spans are valid records; lock held.
                let span = unsafe { &*head };
                // SAFETY: lock held; `span` is on the partial list.
                unsafe { lists.remove(span, IN_PARTIAL) };
                c.counters.partial.fetch_sub(1, Relaxed);
                #[cfg(gomalloc_loom_broken = "handout")]
                // Broken on purpose: leaves `IN_CENTRAL` set on a span a
                // cache now owns, so its next remote free notifies a list
                // the span is not on.
                let remote = take_remote(span, IN_CENTRAL);
                #[cfg(not(gomalloc_loom_broken = "handout"))]
                let remote = take_remote(span, 0);
                let o = &span.objects;
                // SAFETY: the central list owns the span (lock held) and
                // hands it, with its lists, to the caller.
                let local = o
                    .free
                    .with_mut(|p| unsafe { core::mem::replace(&mut *p, ptr::null_mut()) });
                // SAFETY: as above.
                o.nfree.with_mut(|p| unsafe { *p = 0 });
                // SAFETY: both lists are free objects of the span we own.
                // Only the remote frees are walked, not the span's list.
                let free = unsafe { prepend(remote, local) };
                return Some(Grant { span, free });
            }
        }
        let span = self.source.alloc_span(class)?;
        c.counters.spans_from_source.fetch_add(1, Relaxed);
        Some(Grant {
            span,
            free: ptr::null_mut(),
        })
    }

    /// Takes back a span a thread cache owned, with the free objects the
    /// cache still had for it (`free`, may be null).
    ///
    /// # Safety
    ///
    /// The caller owns `span` (it came from `cache_span` of this class) and
    /// gives up ownership; `free` lists free objects of `span` only.
    pub unsafe fn uncache_span(&self, span: &Span, free: *mut u8) {
        let class = span.size_class() as usize;
        let c = &self.classes[class];
        let mut lists = c.lists.lock();
        // SAFETY: caller's contract; lock held.
        if unsafe { Self::file_locked(c, &mut lists, span, free) } {
            // Every object is free: no thread holds a pointer into the span,
            // so no remote free can race with giving it back.
            drop(lists);
            c.counters.spans_to_source.fetch_add(1, Relaxed);
            // SAFETY: the span came from this source and is unused.
            unsafe { self.source.free_span(span) };
        }
    }

    /// The central list takes over `span`, owned until now by a cache or
    /// as the shared span, with `free`, free objects of it: takes its remote
    /// stack (setting `IN_CENTRAL | NOTIFIED`) and files it as partial or
    /// full. Returns `true`, filing nothing, when every object is free: the
    /// caller gives it back to the source after dropping the lock.
    ///
    /// # Safety
    ///
    /// `lists` is the class's, locked; the caller owns `span` and gives it
    /// up; `free` lists free objects of `span` only.
    unsafe fn file_locked(c: &ClassCentral, lists: &mut Lists, span: &Span, free: *mut u8) -> bool {
        let remote = take_remote(span, IN_CENTRAL | NOTIFIED);
        // SAFETY: both lists hold free objects of `span`, which we own.
        let (mut head, mut n) = unsafe { join(free, remote) };
        let o = &span.objects;
        // SAFETY: the central list owns the span now (lock held).
        unsafe {
            let (old, old_n) = (o.free.with(|p| *p), o.nfree.with(|p| *p) as usize);
            if !old.is_null() {
                head = prepend(old, head);
                n += old_n;
            }
            o.free.with_mut(|p| *p = head);
            o.nfree.with_mut(|p| *p = n as u32);
        }
        // SAFETY: as above.
        let carved = o.carved.with(|p| unsafe { *p }) as usize;
        let uncarved = span.nelems() - carved;
        if n + uncarved == span.nelems() {
            return true;
        }
        if n > 0 || uncarved > 0 || !try_mark_full(span) {
            // SAFETY: lock held; the span is in no list.
            unsafe { lists.push(span, IN_PARTIAL) };
            c.counters.partial.fetch_add(1, Relaxed);
        } else {
            // SAFETY: as above.
            unsafe { lists.push(span, IN_FULL) };
            c.counters.full.fetch_add(1, Relaxed);
        }
        false
    }

    /// Hands the class's shared span to a cache, with its free objects, if
    /// it has any to give (on its list, never carved, or on its remote
    /// stack); the class has no shared span afterwards. A thread that
    /// outgrows [`take_batch`](Self::take_batch) so goes on in the span its
    /// batches came from, instead of touching a fresh one.
    fn hand_out_shared(lists: &mut Lists) -> Option<Grant<'static>> {
        // SAFETY: the shared span is a valid record (span records live as
        // long as the heap); the lock guards it.
        let span: &'static Span = unsafe { lists.shared.as_ref()? };
        let o = &span.objects;
        // SAFETY: the class lock owns the shared span's list.
        let (nfree, carved) = unsafe { (o.nfree.with(|p| *p), o.carved.with(|p| *p)) };
        if nfree == 0 && carved as usize == span.nelems() && !has_remote(span) {
            return None;
        }
        lists.shared = ptr::null_mut();
        // Its remote flags are clear already: only the stack moves.
        let remote = take_remote(span, 0);
        // SAFETY: as above; the list goes to the cache with the span.
        let local = unsafe {
            o.nfree.with_mut(|p| *p = 0);
            o.free
                .with_mut(|p| core::mem::replace(&mut *p, ptr::null_mut()))
        };
        // SAFETY: both lists are free objects of the span, ours to hand out.
        let free = unsafe { prepend(remote, local) };
        Some(Grant { span, free })
    }

    /// Up to `max` (at least 1) free objects of `class`, linked, and how
    /// many: for a thread cache that has allocated little of the class, so
    /// that threads that each use a class a little share its pages instead
    /// of holding a span each (the thread-churn workload: 100 objects over
    /// some 30 classes per thread). They come from the class's *shared
    /// span*, which the class lock owns as a cache owns its span: its own
    /// list first, then its remote stack (where every cache's frees of its
    /// objects land), then never-carved objects; once it is exhausted it is
    /// filed like a span a cache gives back, and a partial span (else a
    /// fresh one) becomes the shared span. `(null, 0)` when the span source
    /// is out of memory.
    pub fn take_batch(&self, class: usize, max: usize) -> (*mut u8, usize) {
        let c = &self.classes[class];
        let mut lists = c.lists.lock();
        loop {
            if lists.shared.is_null() {
                let head = lists.partial;
                let span = if head.is_null() {
                    // Holding a class lock while calling the source is in
                    // the lock order (see the module docs).
                    let Some(span) = self.source.alloc_span(class) else {
                        return (ptr::null_mut(), 0);
                    };
                    c.counters.spans_from_source.fetch_add(1, Relaxed);
                    span
                } else {
                    // SAFETY: listed spans are valid records; lock held.
                    let span = unsafe { &*head };
                    // SAFETY: lock held; `span` is on the partial list.
                    unsafe { lists.remove(span, IN_PARTIAL) };
                    c.counters.partial.fetch_sub(1, Relaxed);
                    // Owned like a cache's span: remote flags clear (in
                    // the same swap that takes the stack, so no push is
                    // lost), the stack in front of its own list.
                    let remote = take_remote(span, 0);
                    // SAFETY: the class lock owns the span's list; the
                    // stack is free objects of it.
                    unsafe { push_list(span, remote) };
                    span
                };
                span.objects.owner.store(SHARED_OWNER, Relaxed);
                lists.shared = ptr::from_ref(span).cast_mut();
            }
            // SAFETY: the shared span is a valid record the lock owns.
            let span = unsafe { &*lists.shared };
            // SAFETY: the class lock owns the shared span's list.
            let (head, n) = unsafe { cut(span, max) };
            if n > 0 {
                return (head, n);
            }
            if has_remote(span) {
                // SAFETY: as above.
                unsafe { absorb_remote(span, 0) };
                // SAFETY: as above.
                let (head, n) = unsafe { cut(span, max) };
                if n > 0 {
                    return (head, n);
                }
            }
            // SAFETY: the class lock owns the span, as a cache would.
            let (head, n) = unsafe { carve(span, max) };
            if n > 0 {
                return (head, n);
            }
            // Exhausted: file it as a cache would give it back.
            lists.shared = ptr::null_mut();
            span.objects.owner.store(0, Relaxed);
            // SAFETY: lock held; the span is ours to give up, its own list
            // empty.
            if unsafe { Self::file_locked(c, &mut lists, span, ptr::null_mut()) } {
                // Every object came back meanwhile.
                drop(lists);
                c.counters.spans_to_source.fetch_add(1, Relaxed);
                // SAFETY: every object is free; the span is from the source.
                unsafe { self.source.free_span(span) };
                lists = c.lists.lock();
            }
        }
    }

    /// Frees `obj` of `span` on behalf of a thread that does not own the span.
    ///
    /// # Safety
    ///
    /// `obj` is an allocated object of `span`, a span of this central's
    /// source, and is not used after this call.
    #[inline]
    pub unsafe fn free_remote(&self, span: &Span, obj: *mut u8) {
        // SAFETY: caller's contract.
        if unsafe { push_remote(span, obj) } {
            self.notify(span);
        }
    }

    /// Frees a chain of objects of `span` (linked through their first
    /// words from `head` to `tail`) on behalf of a thread that does not own
    /// the span, with one push.
    ///
    /// # Safety
    ///
    /// Every object of the chain is an allocated object of `span`, not used
    /// afterwards.
    pub unsafe fn free_remote_chain(&self, span: &Span, head: *mut u8, tail: *mut u8) {
        // SAFETY: caller's contract.
        if unsafe { push_remote_chain(span, head, tail) } {
            self.notify(span);
        }
    }

    /// A remote free found `span` on the full list and set `NOTIFIED`:
    /// collect its remote stack, and move it to partial, or give it back
    /// to the source if every object is free now.
    #[cold]
    fn notify(&self, span: &Span) {
        let class = span.size_class() as usize;
        let c = &self.classes[class];
        let mut lists = c.lists.lock();
        // Only full spans can be notified and only a notification takes a
        // span off the full list, so it is still there.
        // SAFETY: lock held; the span is on the full list.
        unsafe { lists.remove(span, IN_FULL) };
        c.counters.full.fetch_sub(1, Relaxed);
        let remote = take_remote(span, IN_CENTRAL | NOTIFIED);
        let o = &span.objects;
        // SAFETY: the central list owns the span (lock held); a full span
        // has an empty free list.
        let (n, _) = unsafe { list_len_tail(remote) };
        // SAFETY: as above.
        unsafe {
            o.free.with_mut(|p| *p = remote);
            o.nfree.with_mut(|p| *p = n as u32);
        }
        // SAFETY: as above.
        let carved = o.carved.with(|p| unsafe { *p }) as usize;
        if n + (span.nelems() - carved) == span.nelems() {
            drop(lists);
            c.counters.spans_to_source.fetch_add(1, Relaxed);
            // SAFETY: every object is free; the span came from this source.
            unsafe { self.source.free_span(span) };
            return;
        }
        // SAFETY: lock held; in no list now.
        unsafe { lists.push(span, IN_PARTIAL) };
        c.counters.partial.fetch_add(1, Relaxed);
    }

    /// Collects the remote stacks of the partial spans of `class` (and of
    /// its shared span) and gives every span whose objects are then all
    /// free back to the span source; returns how many it gave back. See the module docs (Flows, Locking)
    /// for why and at what cost.
    pub fn sweep(&self, class: usize) -> usize {
        let c = &self.classes[class];
        // Spans to give back, linked through their `next` cells once they
        // are off the partial list (the sweep owns them then).
        let mut freed: *mut Span = ptr::null_mut();
        let mut count = 0;
        {
            let mut lists = c.lists.lock();
            // SAFETY: a shared span is a valid record the lock owns.
            if let Some(span) = unsafe { lists.shared.as_ref() } {
                let o = &span.objects;
                // SAFETY: the class lock owns the shared span's list; its
                // remote flags stay clear.
                let (nfree, carved) = unsafe {
                    absorb_remote(span, 0);
                    (o.nfree.with(|p| *p), o.carved.with(|p| *p))
                };
                if nfree == carved {
                    // No object is out: no remote free can race with
                    // giving it back.
                    lists.shared = ptr::null_mut();
                    o.owner.store(0, Relaxed);
                    // SAFETY: on no list: its links are ours.
                    o.next.with_mut(|p| unsafe { *p = freed });
                    freed = ptr::from_ref(span).cast_mut();
                    count += 1;
                }
            }
            let mut s = lists.partial;
            while !s.is_null() {
                // SAFETY: listed spans are valid records; lock held.
                let span = unsafe { &*s };
                let o = &span.objects;
                // SAFETY: the lock guards the links of listed spans.
                s = o.next.with(|p| unsafe { *p });
                #[cfg(gomalloc_loom_broken = "sweep")]
                // Broken on purpose: takes the stack leaving only
                // `IN_CENTRAL` (the full-list state), so the next remote
                // free notifies a span that is on the partial list.
                let flags = IN_CENTRAL;
                #[cfg(not(gomalloc_loom_broken = "sweep"))]
                let flags = IN_CENTRAL | NOTIFIED;
                // SAFETY: the central list owns the span (lock held).
                unsafe { absorb_remote(span, flags) };
                // SAFETY: lock held.
                let (nfree, carved) = unsafe {
                    (
                        o.nfree.with(|p| *p) as usize,
                        o.carved.with(|p| *p) as usize,
                    )
                };
                if nfree + (span.nelems() - carved) == span.nelems() {
                    // Every object is free: no thread holds a pointer into
                    // the span, so no remote free can race with giving it
                    // back.
                    // SAFETY: lock held; the span is on the partial list.
                    unsafe { lists.remove(span, IN_PARTIAL) };
                    c.counters.partial.fetch_sub(1, Relaxed);
                    // SAFETY: off every list: its links are ours.
                    o.next.with_mut(|p| unsafe { *p = freed });
                    freed = ptr::from_ref(span).cast_mut();
                    count += 1;
                }
            }
        }
        while !freed.is_null() {
            // SAFETY: spans chained above: valid records only we reach.
            let span = unsafe { &*freed };
            // SAFETY: as above.
            freed = span.objects.next.with(|p| unsafe { *p });
            c.counters.spans_to_source.fetch_add(1, Relaxed);
            // SAFETY: every object is free; the span came from this source.
            unsafe { self.source.free_span(span) };
        }
        count
    }

    /// [`sweep`](Self::sweep) of every size class, one class lock at a
    /// time; returns how many spans went back to the span source.
    pub fn sweep_all(&self) -> usize {
        (1..NUM_CLASSES).map(|class| self.sweep(class)).sum()
    }

    /// Takes every class lock, in class order, and keeps them (for
    /// `fork`: see `gomalloc::raw::lock_all`).
    #[cfg(not(gomalloc_loom))]
    pub fn lock_all_for_fork(&self) {
        for c in &self.classes {
            core::mem::forget(c.lists.lock());
        }
    }

    /// Releases the locks [`lock_all_for_fork`](Self::lock_all_for_fork)
    /// took.
    ///
    /// # Safety
    ///
    /// This thread holds them through `lock_all_for_fork` (or is the only
    /// thread of a child forked by the thread that did).
    #[cfg(not(gomalloc_loom))]
    pub unsafe fn unlock_all_after_fork(&self) {
        for c in self.classes.iter().rev() {
            // SAFETY: caller's contract.
            unsafe {
                c.lists
                    .force_unlock(parking_lot::lock_api::GuardSend::new())
            };
        }
    }

    /// Adds the allocation and free counts of a thread cache that is going
    /// away to the class's totals.
    pub fn add_counts(&self, class: usize, allocs: u64, frees: u64) {
        let c = &self.classes[class].counters;
        c.allocs.fetch_add(allocs, Relaxed);
        c.frees.fetch_add(frees, Relaxed);
    }

    /// A snapshot of one class's counters (no lock taken).
    pub fn class_stats(&self, class: usize) -> ClassStats {
        let c = &self.classes[class].counters;
        ClassStats {
            spans_from_source: c.spans_from_source.load(Relaxed),
            spans_to_source: c.spans_to_source.load(Relaxed),
            partial: c.partial.load(Relaxed),
            full: c.full.load(Relaxed),
            allocs: c.allocs.load(Relaxed),
            frees: c.frees.load(Relaxed),
        }
    }

    /// How many objects a cache should carve at a time from a span of
    /// `class` (see [`carve_batch`]).
    pub fn carve_batch(class: usize) -> usize {
        carve_batch(sizeclass::SIZE_CLASSES.size_of_class(class))
    }
}

/// Checks the structure of one class's lists under its lock (for tests):
/// every listed span has the right list tag and flags, full spans have
/// nothing to give, and the shared span is on no list with its flags clear. Returns the number of (partial, full) spans.
///
/// # Panics
///
/// On the first violation.
impl<SS: SpanSource> Centrals<SS> {
    /// See the impl docs.
    pub fn check_class(&self, class: usize) -> (usize, usize) {
        let c = &self.classes[class];
        let lists = c.lists.lock();
        // SAFETY: a shared span is a valid record; lock held.
        if let Some(span) = unsafe { lists.shared.as_ref() } {
            let o = &span.objects;
            assert_eq!(
                span.size_class() as usize,
                class,
                "shared span of another class"
            );
            // SAFETY: lock held.
            let tag = o.list.with(|p| unsafe { *p });
            assert_eq!(tag, IN_NO_LIST, "shared span on a list");
            assert_eq!(o.remote.load(Relaxed) & FLAGS, 0, "shared span flags");
            assert_eq!(o.owner.load(Relaxed), SHARED_OWNER, "shared span owner");
        }
        let mut counts = [0usize; 2];
        for (i, (mut s, which)) in [(lists.partial, IN_PARTIAL), (lists.full, IN_FULL)]
            .into_iter()
            .enumerate()
        {
            while !s.is_null() {
                // SAFETY: listed spans are valid; lock held.
                let span = unsafe { &*s };
                let o = &span.objects;
                // SAFETY: lock held.
                let (tag, next, nfree, carved) = unsafe {
                    (
                        o.list.with(|p| *p),
                        o.next.with(|p| *p),
                        o.nfree.with(|p| *p),
                        o.carved.with(|p| *p),
                    )
                };
                assert_eq!(tag, which, "span on the wrong list");
                assert_eq!(span.size_class() as usize, class, "span of another class");
                let flags = o.remote.load(Relaxed) & FLAGS;
                if which == IN_PARTIAL {
                    assert_eq!(flags, IN_CENTRAL | NOTIFIED, "partial span flags");
                } else {
                    assert!(flags & IN_CENTRAL != 0, "full span not owned by central");
                    assert_eq!(nfree, 0, "full span with free objects");
                    assert_eq!(
                        carved as usize,
                        span.nelems(),
                        "full span with uncarved objects"
                    );
                }
                counts[i] += 1;
                s = next;
            }
        }
        (counts[0], counts[1])
    }
}
