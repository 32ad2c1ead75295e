//! The macro workloads of the comparison suite (`cargo xtask compare`).
//!
//! Six programs in miniature, each written once here and run, unchanged,
//! under each allocator compared: the binaries `compare-gomalloc`,
//! `compare-system`, `compare-mimalloc` and `compare-jemalloc` differ only
//! in their `#[global_allocator]` and call [`main`]. The code only uses
//! `Box`, `Vec` and `std::alloc::{alloc, dealloc}`, so it runs under any
//! global allocator, and the system binary also under an `LD_PRELOAD`ed
//! `malloc` (tcmalloc): nothing assumes glibc.
//!
//! | workload | threads | what it does |
//! |---|---|---|
//! | [`larson`] | scaling | random replacement of objects in a shared slot array: frees of other threads' objects |
//! | [`xmalloc`] | scaling | producer threads allocate, consumer threads free (batches through channels) |
//! | [`cache_scratch`] | scaling | passive false sharing: each thread frees an object the main thread allocated next to the others', then allocates, writes and frees its own |
//! | [`mixed`] | 1 | power-law sizes 8 B..1 MiB, a live set growing and shrinking in waves |
//! | [`churn`] | 2 at once | thousands of short-lived threads, part of their objects freed by the main thread after they exit |
//! | [`realloc`] | 1 | `Vec` growth by doubling to hundreds of MiB, and many small vectors growing by `extend` |
//!
//! The shapes come from the allocator literature (Larson and Krishnan's
//! server benchmark, xmalloc-test, Hoard's cache-scratch); the code is
//! ours. Every object gets a pattern written when it is allocated (the
//! whole object up to 64 bytes, else its first and last words and a word
//! per 4 KiB page) and checked right before it is freed ([`common`]).
//!
//! # Protocol
//!
//! The driver relies on exactly this:
//!
//! - `compare-X --list` prints one line per workload,
//!   `<name> <default_size> <default_threads> <scaling>`, where `scaling`
//!   is `yes` for a workload meant to be run at 1, 2 and 8 threads, else
//!   `no`; exit status 0.
//! - `compare-X <name> [--threads N] [--size N]` runs one workload once
//!   and prints exactly one line on stdout:
//!   `workload=<name> threads=<n> size=<n> ops=<n> elapsed_ns=<n> checksum=<16 hex digits>`;
//!   then, where the system has it, ` peak_rss_kib=<n>`: the process's
//!   peak resident set (`VmHWM`), which the driver prefers to `wait4`'s;
//!   exit status 0. `elapsed_ns` is the wall time ([`Instant`]) of the
//!   workload body alone: its set-up, its threads' spawning and joining
//!   and its final frees, not argument parsing nor process start-up.
//!   `ops` counts the allocation operations done (each workload says
//!   which), for a throughput figure. `checksum` is a deterministic
//!   function of the work: the same for the same arguments under every
//!   allocator and every thread interleaving.
//! - A usage error prints a message on stderr and exits with status 2; a
//!   verification failure (an object's content changed while it was live,
//!   an object lost or freed twice) prints a message on stderr and exits
//!   with status 1.
//!
//! `size` is always the total work, divided among the threads, so that a
//! run at 8 threads does the same work as a run at 1; its unit is each
//! workload's own ([`Workload::size_unit`]).

use std::fmt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub mod cache_scratch;
pub mod churn;
pub mod common;
pub mod larson;
pub mod mixed;
pub mod realloc;
pub mod xmalloc;

/// Most threads a workload accepts (tags give a thread index 11 bits).
pub const MAX_THREADS: usize = 1024;

/// The arguments of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// `--threads`: the workload's thread count (what it means is the
    /// workload's: [`Workload::summary`]).
    pub threads: usize,
    /// `--size`: the total work, in [`Workload::size_unit`].
    pub size: u64,
}

/// What a workload body returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Allocation operations done.
    pub ops: u64,
    /// A deterministic function of the work done.
    pub checksum: u64,
}

/// One workload of the suite.
#[derive(Debug)]
pub struct Workload {
    /// The name given on the command line.
    pub name: &'static str,
    /// `--size` when not given.
    pub default_size: u64,
    /// `--threads` when not given.
    pub default_threads: usize,
    /// Whether the driver runs it at 1, 2 and 8 threads.
    pub scaling: bool,
    /// The unit of `--size`.
    pub size_unit: &'static str,
    /// One line: what it does and what `--threads` means.
    pub summary: &'static str,
    /// The body (allocates through the global allocator).
    pub body: fn(Params) -> Outcome,
}

/// Every workload, in the order `--list` prints them.
pub static WORKLOADS: [Workload; 6] = [
    larson::WORKLOAD,
    xmalloc::WORKLOAD,
    cache_scratch::WORKLOAD,
    mixed::WORKLOAD,
    churn::WORKLOAD,
    realloc::WORKLOAD,
];

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// One timed run of a workload.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    /// The workload's name.
    pub name: &'static str,
    /// The arguments it ran with.
    pub params: Params,
    /// What its body returned.
    pub outcome: Outcome,
    /// Wall time of the body.
    pub elapsed: Duration,
    /// The process's peak resident set in KiB (`VmHWM` of
    /// `/proc/self/status`) after the body, where the system has it.
    pub peak_rss_kib: Option<u64>,
}

/// This process's peak resident set in KiB: `VmHWM` of `/proc/self/status`
/// (Linux), the high-water mark of this program's own memory map, which
/// starts at the `exec` (unlike `wait4`'s `ru_maxrss`, which also counts
/// the parent's pages a child had before it).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl fmt::Display for Report {
    /// The protocol's result line (without the newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "workload={} threads={} size={} ops={} elapsed_ns={} checksum={:016x}",
            self.name,
            self.params.threads,
            self.params.size,
            self.outcome.ops,
            self.elapsed.as_nanos(),
            self.outcome.checksum
        )?;
        if let Some(kib) = self.peak_rss_kib {
            write!(f, " peak_rss_kib={kib}")?;
        }
        Ok(())
    }
}

/// Runs `w` once with `params` and times its body.
pub fn run(w: &'static Workload, params: Params) -> Report {
    let start = Instant::now();
    let outcome = (w.body)(params);
    let elapsed = start.elapsed();
    Report {
        name: w.name,
        params,
        outcome,
        elapsed,
        peak_rss_kib: peak_rss_kib(),
    }
}

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `--list`.
    List,
    /// `--help` or `-h`.
    Help,
    /// `<name> [--threads N] [--size N]`.
    Run(&'static Workload, Params),
}

/// Workloads are told apart by name (the table holds each name once; the
/// body, a function pointer, has no reliable equality).
impl PartialEq for Workload {
    fn eq(&self, other: &Workload) -> bool {
        self.name == other.name
    }
}

impl Eq for Workload {}

/// The usage text.
pub fn usage() -> String {
    let mut s = String::from(
        "usage: compare-<allocator> --list\n       \
         compare-<allocator> <workload> [--threads N] [--size N]\n\nworkloads:\n",
    );
    for w in &WORKLOADS {
        s += &format!(
            "  {:<14} size: {} (default {}); threads default {}; {}\n",
            w.name, w.size_unit, w.default_size, w.default_threads, w.summary
        );
    }
    s
}

/// Parses the arguments (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Err("no workload named".into());
    };
    match first.as_str() {
        "--list" => {
            return match args.next() {
                None => Ok(Command::List),
                Some(a) => Err(format!("unexpected argument after --list: {a:?}")),
            };
        }
        "--help" | "-h" => return Ok(Command::Help),
        _ => {}
    }
    let w = find(&first).ok_or_else(|| format!("unknown workload {first:?}"))?;
    let mut params = Params {
        threads: w.default_threads,
        size: w.default_size,
    };
    while let Some(flag) = args.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (flag, None),
        };
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None if flag == "--threads" || flag == "--size" => {
                return Err(format!("{flag} needs a value"));
            }
            None => return Err(format!("unknown argument {flag:?}")),
        };
        match flag.as_str() {
            "--threads" => {
                params.threads = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_THREADS).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "--threads takes a number from 1 to {MAX_THREADS}, not {value:?}"
                        ));
                    }
                }
            }
            "--size" => {
                params.size = match value.parse::<u64>() {
                    Ok(n) if n >= 1 => n,
                    _ => return Err(format!("--size takes a positive number, not {value:?}")),
                }
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Command::Run(w, params))
}

/// The whole program of a `compare-*` binary: parses the command line,
/// runs what it asks and prints the protocol's output ([module
/// docs](self)).
pub fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(Command::List) => {
            for w in &WORKLOADS {
                println!(
                    "{} {} {} {}",
                    w.name,
                    w.default_size,
                    w.default_threads,
                    if w.scaling { "yes" } else { "no" }
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Command::Help) => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        Ok(Command::Run(w, params)) => {
            println!("{}", run(w, params));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("error: {e}\n\n{}", usage());
            ExitCode::from(2)
        }
    }
}
