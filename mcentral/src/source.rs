//! Where a central list gets fresh spans and sends empty ones: the
//! [`SpanSource`] trait, implemented by the page heap.

use mheap::{MHeap, PageSource, Span};
use sizeclass::SIZE_CLASSES;

/// A source of fresh spans for size classes, and the sink for spans whose
/// objects are all free.
///
/// # Safety
///
/// `alloc_span(class)` returns an `InUse` span of that class (its
/// `elem_size` and `nelems` set from the size-class table), not handed out
/// before and not in use by anyone else, with its `SpanObjects` reset
/// (`zeroed` true only if its memory reads as zero); the
/// source never allocates through the global allocator.
pub unsafe trait SpanSource {
    /// A fresh span for `class`, or `None` when out of memory.
    fn alloc_span(&self, class: usize) -> Option<&Span>;

    /// Takes back a span whose objects are all free.
    ///
    /// # Safety
    ///
    /// `span` came from `alloc_span` of this source, and nothing uses it or
    /// its memory afterwards.
    unsafe fn free_span(&self, span: &Span);

    /// The span holding `obj`.
    ///
    /// # Safety
    ///
    /// `obj` is an allocated object of a span this source handed out and
    /// that is still in use.
    unsafe fn span_of(&self, obj: *mut u8) -> &Span;
}

// SAFETY: `alloc_small` hands out an InUse span of the right class that
// nobody else holds; it is reset before it is returned; the heap never
// allocates through the global allocator.
unsafe impl<S: PageSource> SpanSource for MHeap<S> {
    fn alloc_span(&self, class: usize) -> Option<&Span> {
        let t = &SIZE_CLASSES;
        let a = self
            .alloc_small(class as u8, t.pages_of_class(class), t.size_of_class(class))
            .ok()?;
        // SAFETY: the span was just handed out to us alone.
        unsafe {
            a.span.objects.reset();
            a.span.objects.zeroed.with_mut(|p| *p = a.zeroed);
        }
        Some(a.span)
    }

    unsafe fn free_span(&self, span: &Span) {
        // SAFETY: caller's contract.
        unsafe { MHeap::free_span(self, span) }
    }

    #[inline(always)]
    unsafe fn span_of(&self, obj: *mut u8) -> &Span {
        // SAFETY: caller's contract: `obj` lies in a live span of this heap.
        unsafe { self.span_of_unchecked(obj as usize) }
    }
}

// SAFETY: forwards to `T`.
unsafe impl<T: SpanSource + ?Sized> SpanSource for &T {
    fn alloc_span(&self, class: usize) -> Option<&Span> {
        (**self).alloc_span(class)
    }

    unsafe fn free_span(&self, span: &Span) {
        // SAFETY: caller's contract.
        unsafe { (**self).free_span(span) }
    }

    #[inline(always)]
    unsafe fn span_of(&self, obj: *mut u8) -> &Span {
        // SAFETY: caller's contract.
        unsafe { (**self).span_of(obj) }
    }
}
