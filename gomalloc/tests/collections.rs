//! std collections on GoMalloc, on one thread and across threads.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

#[test]
fn vec_string_map_on_one_thread() {
    let mut v = Vec::new();
    for i in 0..100_000u64 {
        v.push(i * 3);
    }
    assert_eq!(v.iter().sum::<u64>(), 3 * (100_000 * 99_999 / 2));
    let mut m = HashMap::new();
    for i in 0..50_000u32 {
        m.insert(format!("key-{i}"), i.to_string());
    }
    for i in (0..50_000u32).step_by(7) {
        assert_eq!(m[&format!("key-{i}")], i.to_string());
    }
    let mut b = BTreeMap::new();
    for i in 0..20_000u32 {
        b.insert(
            i.wrapping_mul(2_654_435_761),
            vec![i as u8; (i % 300) as usize],
        );
    }
    for (k, v) in &b {
        let i = v.first().copied().unwrap_or(0);
        let _ = (k, i);
    }
    assert_eq!(b.len(), 20_000);
}

#[test]
fn boxes_move_between_threads() {
    let (tx, rx) = mpsc::channel::<Vec<Box<[u8]>>>();
    let producer = std::thread::spawn(move || {
        for round in 0..200u32 {
            let batch: Vec<Box<[u8]>> = (0..100u32)
                .map(|i| vec![(round ^ i) as u8; (1 + (i * 37) % 5000) as usize].into_boxed_slice())
                .collect();
            tx.send(batch).unwrap();
        }
    });
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for (round, batch) in rx.into_iter().enumerate() {
            for (i, b) in batch.iter().enumerate() {
                let want = (round as u32 ^ i as u32) as u8;
                assert!(
                    b.iter().all(|&x| x == want),
                    "object contents changed in transit"
                );
            }
            n += batch.len();
        }
        n
    });
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), 20_000);
}
