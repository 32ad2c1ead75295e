//! The page heap over the OS page source: large alignments, small-object
//! spans, and many threads allocating, freeing and looking up at once.

use mheap::{HeapConfig, MHeap, OsPageSource, PAGE_SIZE, ReleaseAdvice, SpanState};
use std::sync::Arc;

fn os_heap() -> MHeap<OsPageSource> {
    MHeap::new(
        OsPageSource::new(ReleaseAdvice::DontNeed),
        HeapConfig::DEFAULT,
    )
}

#[test]
fn alignments_up_to_one_gib() {
    let heap = os_heap();
    let mut live = Vec::new();
    for shift in [13u32, 14, 16, 20, 21, 26, 27, 30] {
        for npages in [1usize, 5, 300] {
            let align = 1usize << shift;
            let a = heap.alloc_pages(npages, align).unwrap();
            assert_eq!(
                a.span.start() % align,
                0,
                "{npages} pages at align 2^{shift}"
            );
            assert_eq!(a.span.npages(), npages);
            assert!(a.zeroed);
            // The memory is usable at both ends.
            // SAFETY: the span is ours; both bytes are inside it.
            unsafe {
                *(a.span.start() as *mut u8) = 1;
                *((a.span.end() - 1) as *mut u8) = 2;
            }
            live.push(a.span);
        }
    }
    // A 1 GiB object aligned to 1 GiB.
    let big = heap.alloc_pages((1 << 30) / PAGE_SIZE, 1 << 30).unwrap();
    assert_eq!(big.span.start() % (1 << 30), 0);
    live.push(big.span);
    heap.check_invariants();
    for s in live {
        // SAFETY: live spans, not used again.
        unsafe { heap.free_span(s) };
    }
    let st = heap.check_invariants();
    assert_eq!(st.in_use, 0);
}

#[test]
fn small_spans_record_their_class() {
    let heap = os_heap();
    let t = &sizeclass::SIZE_CLASSES;
    for class in 1..t.len() {
        let pages = t.pages_of_class(class);
        let size = t.size_of_class(class);
        let a = heap.alloc_small(class as u8, pages, size).unwrap();
        assert_eq!(a.span.size_class() as usize, class);
        assert_eq!(a.span.elem_size(), size);
        assert_eq!(a.span.nelems(), t.objects_of_class(class));
        assert_eq!(a.span.state(), SpanState::InUse);
        // SAFETY: live span, not used again.
        unsafe { heap.free_span(a.span) };
    }
    let large = heap.alloc_pages(7, PAGE_SIZE).unwrap();
    assert_eq!((large.span.size_class(), large.span.nelems()), (0, 1));
    assert_eq!(large.span.elem_size(), 7 * PAGE_SIZE);
}

#[test]
fn threads_allocate_free_and_look_up_concurrently() {
    let heap = Arc::new(os_heap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let heap = Arc::clone(&heap);
            std::thread::spawn(move || {
                let mut live = Vec::new();
                let mut x = 0x2545_F491_4F6C_DD1Du64 ^ t;
                for i in 0..3000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if live.len() < 64 && (!x.is_multiple_of(3) || live.is_empty()) {
                        let npages = [1, 2, 8, 33, 130][(x >> 8) as usize % 5];
                        let a = heap.alloc_pages(npages, PAGE_SIZE).unwrap();
                        let tag = (t << 32) | i;
                        // SAFETY: the span is ours.
                        unsafe {
                            *(a.span.start() as *mut u64) = tag;
                            *((a.span.end() - 8) as *mut u64) = !tag;
                        }
                        live.push((a.span, tag));
                    } else {
                        let (s, tag) = live.swap_remove((x >> 16) as usize % live.len());
                        // Lookups of our own live span from this thread are
                        // exact even while others change the heap.
                        let mid = s.start() + s.bytes() / 2;
                        assert!(std::ptr::eq(heap.span_of(mid).unwrap(), s));
                        // SAFETY: the span is ours.
                        unsafe {
                            assert_eq!(
                                *(s.start() as *const u64),
                                tag,
                                "span shared between threads"
                            );
                            assert_eq!(*((s.end() - 8) as *const u64), !tag);
                            heap.free_span(s);
                        }
                    }
                }
                for (s, _) in live {
                    // SAFETY: live spans of this thread, not used again.
                    unsafe { heap.free_span(s) };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = heap.check_invariants();
    assert_eq!(st.in_use, 0);
    assert_eq!(st.spans_in_use, 0);
}

/// `set_config` changes the arena size only before the first reservation:
/// the first arena is then the size asked for, and later calls are refused.
#[test]
fn set_config_only_before_first_use() {
    let heap = os_heap();
    assert!(!heap.set_config(HeapConfig {
        arena_size: 3 << 20
    }));
    assert!(heap.set_config(HeapConfig {
        arena_size: 4 << 20
    }));
    assert_eq!(heap.config().arena_size, 4 << 20);
    let a = heap.alloc_pages(1, PAGE_SIZE).unwrap();
    assert_eq!(heap.stats().mapped, 4 << 20);
    assert!(!heap.set_config(HeapConfig::DEFAULT));
    assert_eq!(heap.config().arena_size, 4 << 20);
    // SAFETY: the span is ours and unused.
    unsafe { heap.free_span(a.span) };
}
