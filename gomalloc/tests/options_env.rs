//! The `GOMALLOC_*` environment variables, read at the first allocation,
//! and `GOMALLOC_SHOW_STATS=1`, which prints the statistics at exit: each
//! test re-runs this binary as a child with the variables set (they are
//! read once per process) and checks what the child reports.

use gomalloc::GoMalloc;
use std::process::Command;

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

/// Set in the child: which scenario to run.
const CHILD: &str = "GOMALLOC_TEST_CHILD";

/// Runs test `name` of this binary as a child with `env`; returns (exit
/// success, stdout, stderr).
fn child(name: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// The child prints the options it runs with; the parent checks that each
/// variable reached them.
#[test]
fn environment_sets_the_options() {
    if in_child() {
        let o = gomalloc::options();
        println!(
            "arena={} delay={:?} percent={} min={} background={} limit={:?} at_free={:?} show={} hardened={}",
            o.arena_size,
            o.scavenge_delay_ms,
            o.retain_percent,
            o.retain_min_bytes,
            o.background_thread,
            o.memory_limit,
            o.release_at_free_bytes,
            o.show_stats,
            o.hardened
        );
        let v: Vec<u64> = (0..100_000).collect();
        println!("mapped={}", gomalloc::stats().heap_sys);
        drop(v);
        // Spans back to the heap and a large free: where the background
        // thread would start, were it on.
        for _ in 0..64 {
            drop(vec![1u8; 1 << 20]);
        }
        let small: Vec<Box<[u8; 100]>> = (0..10_000).map(|_| Box::new([7; 100])).collect();
        drop(small);
        println!("running={}", gomalloc::background_thread_running());
        return;
    }
    let (ok, out, err) = child(
        "environment_sets_the_options",
        &[
            ("GOMALLOC_ARENA_SIZE", "8M"),
            ("GOMALLOC_SCAVENGE_DELAY_MS", "123"),
            ("GOMALLOC_RETAIN_PERCENT", "7"),
            ("GOMALLOC_RETAIN_MIN", "2m"),
            ("GOMALLOC_BACKGROUND_THREAD", "off"),
            ("GOMALLOC_MEMORY_LIMIT", "1G"),
            ("GOMALLOC_RELEASE_AT_FREE", "16M"),
            ("GOMALLOC_HARDENED", "1"),
        ],
    );
    assert!(ok, "child failed:\n{out}\n{err}");
    assert!(
        out.contains(
            "arena=8388608 delay=Some(123) percent=7 min=2097152 background=false \
             limit=Some(1073741824) at_free=Some(16777216) show=false hardened=true"
        ),
        "options not taken from the environment:\n{out}\n{err}"
    );
    assert!(
        out.contains("running=false"),
        "the background thread started though switched off:\n{out}"
    );
    // 8 MiB arenas: the heap maps a multiple of 8 MiB, not of 64 MiB.
    let mapped: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("mapped="))
        .and_then(|v| v.trim().parse().ok())
        .expect("mapped= line");
    assert!(
        mapped.is_multiple_of(8 << 20) && !mapped.is_multiple_of(64 << 20),
        "mapped {mapped} bytes with 8 MiB arenas"
    );
}

/// A value that does not parse is reported and its default kept.
#[test]
fn bad_values_are_reported_and_ignored() {
    if in_child() {
        let o = gomalloc::options();
        println!("arena={} delay={:?}", o.arena_size, o.scavenge_delay_ms);
        return;
    }
    let (ok, out, err) = child(
        "bad_values_are_reported_and_ignored",
        &[
            ("GOMALLOC_ARENA_SIZE", "3M"),
            ("GOMALLOC_SCAVENGE_DELAY_MS", "soon"),
        ],
    );
    assert!(ok, "child failed:\n{out}\n{err}");
    assert!(out.contains("arena=67108864 delay=Some(1000)"), "{out}");
    assert!(
        err.contains("gomalloc: GOMALLOC_ARENA_SIZE: must be a power of two"),
        "{err}"
    );
    assert!(
        err.contains("gomalloc: GOMALLOC_SCAVENGE_DELAY_MS: value not understood"),
        "{err}"
    );
}

/// `GOMALLOC_SHOW_STATS=1` prints the statistics to stderr at exit, and the
/// printer allocates nothing (the allocation counters do not move while it
/// runs).
#[test]
fn show_stats_prints_at_exit_without_allocating() {
    if in_child() {
        let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let before = gomalloc::stats();
        gomalloc::print_stats(1);
        let after = gomalloc::stats();
        println!(
            "allocations during print_stats: {}",
            after.mallocs - before.mallocs
        );
        drop(v);
        return;
    }
    let (ok, out, err) = child(
        "show_stats_prints_at_exit_without_allocating",
        &[("GOMALLOC_SHOW_STATS", "1")],
    );
    assert!(ok, "child failed:\n{out}\n{err}");
    assert!(
        out.contains("allocations during print_stats: 0"),
        "print_stats allocated:\n{out}"
    );
    // Printed once on request to stdout, once at exit to stderr.
    assert!(out.contains("gomalloc statistics"), "{out}");
    for name in ["HeapAlloc", "HeapSys", "HeapReleased", "Mallocs", "Frees"] {
        assert!(
            err.contains(name),
            "{name} missing from the exit report:\n{err}"
        );
    }
    assert!(
        err.trim_end().lines().count() > 20,
        "the exit report is short:\n{err}"
    );
    let (ok, _, err) = child("show_stats_prints_at_exit_without_allocating", &[]);
    assert!(ok);
    assert!(
        !err.contains("gomalloc statistics"),
        "printed without being asked:\n{err}"
    );
}
