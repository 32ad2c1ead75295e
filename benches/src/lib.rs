//! Shared helpers of gomalloc's benchmarks (the criterion benches live in
//! `benches/benches/`).

pub mod workloads;
