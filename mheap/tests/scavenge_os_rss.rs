//! The scavenger gives memory back to the OS by itself: resident memory
//! (from `/proc/self/statm`) falls after a large free once the idle delay
//! has passed, with nothing but `scavenge_step_now` called, and not before.
//!
//! Resident memory is process-wide, so this binary holds one test (the
//! timing print below is `#[ignore]`d and runs only on request); the checks
//! compare deltas with generous margins for a noisy 2-core machine.
//!
//! `cargo test -p mheap --test scavenge_os_rss -- --ignored --nocapture`
//! prints what a release costs (`madvise` per MiB) and what the memory costs
//! when it is touched again.

#![cfg(target_os = "linux")]

use mheap::{HeapConfig, MHeap, OsPageSource, PAGE_SIZE, ReleaseAdvice, ScavengePolicy, Span};
use std::time::{Duration, Instant};

mod rss;
use rss::rss;

const MIB: usize = 1 << 20;
const MS: u64 = 1_000_000;

fn touch(span: &Span) {
    for off in (0..span.bytes()).step_by(4096) {
        // SAFETY: callers pass live spans they own.
        unsafe { ((span.start() + off) as *mut u8).write_volatile(0x5A) };
    }
}

fn os_heap(policy: ScavengePolicy) -> MHeap<OsPageSource> {
    let h = MHeap::new(
        OsPageSource::new(ReleaseAdvice::DontNeed),
        HeapConfig::DEFAULT,
    );
    h.set_scavenge_policy(policy);
    h
}

#[test]
fn rss_falls_after_the_idle_delay_without_an_explicit_release() {
    let delay = 100 * MS;
    // The retained bound is off, so only the delay releases: nothing may go
    // back before it.
    let heap = os_heap(ScavengePolicy {
        retain_min_bytes: usize::MAX,
        delay_ns: delay,
        ..ScavengePolicy::DEFAULT
    });
    let total = 512 * MIB;
    let spans: Vec<&Span> = (0..total / MIB)
        .map(|_| heap.alloc_pages(MIB / PAGE_SIZE, PAGE_SIZE).unwrap().span)
        .collect();
    let before = rss();
    for &s in &spans {
        touch(s);
    }
    let touched = rss();
    assert!(
        touched >= before + total - 64 * MIB,
        "touching 512 MiB raised RSS from {before} to {touched} only"
    );

    heap.scavenge_step_now();
    for s in spans {
        // SAFETY: live spans, not used again.
        unsafe { heap.free_span(s) };
    }
    let freed_at = mheap::monotonic_ns();
    let start = Instant::now();
    let mut released = 0;
    while released < total {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "only {released} bytes released in 5 s"
        );
        let now = mheap::monotonic_ns();
        let got = heap.scavenge_step(now);
        assert!(
            got == 0 || now >= freed_at + delay,
            "released {} ms after the free",
            (now - freed_at) / MS
        );
        released += got;
        if got == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let after = rss();
    assert!(
        after + total - 64 * MIB <= touched,
        "RSS fell from {touched} to {after} only"
    );
    let st = heap.check_invariants();
    assert_eq!(st.released, st.free);
    assert_eq!(st.scavenged as usize, total);
    eprintln!(
        "512 MiB: RSS {} -> {} MiB, all released {} ms after the free (delay 100 ms)",
        touched / MIB,
        after / MIB,
        start.elapsed().as_millis()
    );
}

/// What a scavenging step costs: `madvise` of touched memory per MiB, by
/// step size, and what touching it again costs afterwards.
#[test]
#[ignore = "timing print, run on request"]
fn print_release_costs() {
    for step in [64 << 10, 256 << 10, MIB, 4 * MIB] {
        let heap = os_heap(ScavengePolicy {
            step_bytes: step,
            ..ScavengePolicy::MANUAL
        });
        let total = 256 * MIB;
        let spans: Vec<&Span> = (0..total / MIB)
            .map(|_| heap.alloc_pages(MIB / PAGE_SIZE, PAGE_SIZE).unwrap().span)
            .collect();
        for &s in &spans {
            touch(s);
        }
        for s in spans {
            // SAFETY: live spans, not used again.
            unsafe { heap.free_span(s) };
        }
        heap.set_scavenge_policy(ScavengePolicy {
            step_bytes: step,
            delay_ns: 0,
            ..ScavengePolicy::MANUAL
        });
        let t = Instant::now();
        let mut steps = 0u32;
        let mut longest = Duration::ZERO;
        loop {
            let s = Instant::now();
            if heap.scavenge_step(1) == 0 {
                break;
            }
            longest = longest.max(s.elapsed());
            steps += 1;
        }
        let release = t.elapsed();
        let a = heap.alloc_pages(total / PAGE_SIZE, PAGE_SIZE).unwrap().span;
        let t = Instant::now();
        touch(a);
        let refault = t.elapsed();
        eprintln!(
            "step {:>5} KiB: {steps} steps, release {:.1} us/MiB (longest step {:.1} us), \
             touching released memory again {:.1} us/MiB",
            step >> 10,
            release.as_secs_f64() * 1e6 / (total / MIB) as f64,
            longest.as_secs_f64() * 1e6,
            refault.as_secs_f64() * 1e6 / (total / MIB) as f64,
        );
        // SAFETY: live span, not used again.
        unsafe { heap.free_span(a) };
        heap.release_all();
    }
}
