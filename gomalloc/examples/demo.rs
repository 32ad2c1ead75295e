//! A demo program on gomalloc: several threads build and exchange strings,
//! vectors and maps with `GoMalloc` as the global allocator, then the
//! program prints what the allocator saw (`gomalloc::stats()`).
//!
//! Run: `cargo run --release -p gomalloc --example demo [threads] [rounds]`

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let start = Instant::now();

    // Each worker builds a map of short strings and a few vectors per round
    // and sends half of what it made to the next worker, which checks and
    // drops it: objects freed by a thread other than their maker.
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel::<Vec<String>>()).unzip();
    let mut rxs: Vec<Option<mpsc::Receiver<Vec<String>>>> = rxs.into_iter().map(Some).collect();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let tx = txs[(t + 1) % threads].clone();
            let rx = rxs[t].take().unwrap();
            std::thread::spawn(move || {
                let mut checked = 0usize;
                for r in 0..rounds {
                    let mut map: HashMap<String, Vec<u32>> = HashMap::new();
                    for i in 0..500u32 {
                        map.insert(format!("t{t}-r{r}-k{i}"), (0..(i % 40)).collect());
                    }
                    let sent: Vec<String> = map.keys().take(250).cloned().collect();
                    tx.send(sent).unwrap();
                    if let Ok(batch) = rx.try_recv() {
                        checked += batch.iter().filter(|s| s.starts_with('t')).count();
                    }
                }
                drop(tx);
                checked + rx.iter().map(|b| b.len()).sum::<usize>()
            })
        })
        .collect();
    drop(txs);
    let received: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let elapsed = start.elapsed();

    let s = gomalloc::stats();
    println!("gomalloc demo: {threads} threads x {rounds} rounds in {elapsed:.2?}");
    println!("  strings passed between threads and freed there: {received}");
    println!(
        "  small objects: {} allocated, {} freed; large objects: {} allocated, {} freed",
        s.small_allocs(),
        s.small_frees(),
        s.large_allocs,
        s.large_frees
    );
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "  heap: {:.1} MiB mapped, {:.1} MiB in spans, {:.1} MiB free ({:.1} MiB released to the OS), {:.2} MiB metadata",
        mib(s.heap.mapped),
        mib(s.heap.in_use),
        mib(s.heap.free),
        mib(s.heap.released),
        mib(s.heap.metadata)
    );
    println!("  busiest size classes:");
    let mut classes: Vec<_> = s.by_size.iter().filter(|c| c.allocs > 0).collect();
    classes.sort_by_key(|c| std::cmp::Reverse(c.allocs));
    println!(
        "  {:>8} {:>12} {:>12} {:>8} {:>6}",
        "bytes", "allocs", "frees", "partial", "full"
    );
    for c in classes.iter().take(8) {
        println!(
            "  {:>8} {:>12} {:>12} {:>8} {:>6}",
            c.size, c.allocs, c.frees, c.partial_spans, c.full_spans
        );
    }
    assert_eq!(received, threads * rounds * 250, "every string arrived");
}
