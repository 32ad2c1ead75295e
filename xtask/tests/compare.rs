//! `cargo xtask compare` end to end against fake workload binaries: a shell
//! script speaking the `compare-*` protocol (programs filtered out), so
//! that the driver's planning, interleaving, failure handling and files are
//! checked in well under a second. `CARGO_TARGET_DIR` points into each
//! test's directory, where the gomalloc-hardened binary is looked for
//! (`target/compare-hardened/release`): the workspace's own builds never
//! take part.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fake: `--list` gives a scaling and two non-scaling workloads; a run
/// echoes its arguments with a checksum of them; `FAKE_FAIL=<binary>` makes
/// that binary fail its verification. As the gomalloc-hardened binary (a
/// `compare-gomalloc` under `compare-hardened/`) it takes 1.5 times as
/// long. `retain` also reports peak and retained memory, as `idle-return`
/// does (KiB): gomalloc a peak of 1.10 times system's and 50, 40 MiB
/// retained after the idle seconds and the trim.
const FAKE: &str = r#"#!/bin/sh
me=$(basename "$0")
case "$0" in *compare-hardened/*) me=hardened ;; esac
if [ "$1" = --list ]; then
  echo "larson 1000 2 yes"
  echo "mixed 500 1 no"
  echo "retain 64 2 no"
  exit 0
fi
name=$1; threads=$3; size=$5
if [ "$FAKE_FAIL" = "$me" ]; then echo "verification failed" >&2; exit 1; fi
sum=$(printf '%s' "$name $threads $size" | cksum | cut -d' ' -f1)
elapsed=$((size * 1000 / threads))
if [ "$me" = hardened ]; then elapsed=$((elapsed * 3 / 2)); fi
extra=
if [ "$name" = retain ]; then
  case "$me" in
    compare-gomalloc) extra="peak_rss_kib=110000 rss_freed_kib=100000 rss_idle_kib=51200 rss_trim_kib=40960" ;;
    hardened) extra="peak_rss_kib=121000 rss_freed_kib=110000 rss_idle_kib=20480 rss_trim_kib=10240" ;;
    *) extra="peak_rss_kib=100000 rss_freed_kib=100000 rss_idle_kib=100000 rss_trim_kib=1024" ;;
  esac
fi
printf 'workload=%s threads=%s size=%s ops=%s elapsed_ns=%s checksum=%016x %s\n' \
  "$name" "$threads" "$size" "$((size * threads))" "$elapsed" "$sum" "$extra"
"#;

/// A fresh directory with the fake as every `compare-*` binary.
fn fake_bin_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-compare-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let script = dir.join("fake.sh");
    fs::write(&script, FAKE).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    for a in ["gomalloc", "system", "mimalloc", "jemalloc"] {
        symlink(&script, dir.join(format!("compare-{a}"))).unwrap();
    }
    dir
}

/// Adds the fake as the gomalloc-hardened binary, where the driver looks
/// for it: `$CARGO_TARGET_DIR/compare-hardened/release/compare-gomalloc`.
fn fake_hardened(dir: &Path) {
    let release = dir.join("target/compare-hardened/release");
    fs::create_dir_all(&release).unwrap();
    symlink(dir.join("fake.sh"), release.join("compare-gomalloc")).unwrap();
}

fn compare(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let out = dir.join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["compare", "--no-build", "--runs", "2", "--threads", "1,4"])
        .arg("--bin-dir")
        .arg(dir)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .envs(env.iter().copied());
    cmd.output().expect("run xtask")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn runs_the_suite_and_writes_the_files() {
    let dir = fake_bin_dir("ok");
    let out = compare(
        &dir,
        &[
            "--filter",
            "larson,mixed",
            "--allocators",
            "gomalloc,system,mimalloc",
        ],
        &[],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    for row in ["larson t1", "larson t4", "mixed t1"] {
        assert!(stdout.contains(row), "no row {row}:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("python3")),
        "{stdout}"
    );
    // 3 configurations x 3 allocators x 2 runs, interleaved: round 1 starts
    // with system, round 2 one further along.
    assert!(
        stderr.contains("[ 1/18] larson t1  system    run 1/2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[ 4/18] larson t1  mimalloc  run 2/2"),
        "{stderr}"
    );
    let files = dir.join("out");
    let runs = fs::read_to_string(files.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 1 + 18, "{runs}");
    assert!(runs.lines().skip(1).all(|l| l.ends_with(",ok")), "{runs}");
    // No workload here reports retained memory: no such table, empty
    // columns.
    assert!(!stdout.contains("Memory given back"), "{stdout}");
    assert!(runs.lines().nth(1).unwrap().contains(",,,,"), "{runs}");
    let summary = fs::read_to_string(files.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 1 + 9, "{summary}");
    let md = fs::read_to_string(files.join("summary.md")).unwrap();
    assert!(md.contains("| larson t4 |"), "{md}");
    assert!(md.contains("Machine: "), "{md}");
    let svg = fs::read_to_string(files.join("compare.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains(">mixed t1<"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_allocator_is_reported_and_fails_the_suite() {
    let dir = fake_bin_dir("fail");
    let out = compare(
        &dir,
        &[
            "--filter",
            "mixed",
            "--allocators",
            "gomalloc,system,jemalloc",
        ],
        &[("FAKE_FAIL", "compare-jemalloc")],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}\n{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("mixed t1 jemalloc run 1: exit-1"),
        "{stdout}"
    );
    assert!(stderr.contains("verification failed"), "{stderr}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn usage_errors_exit_2() {
    let dir = fake_bin_dir("usage");
    for (args, expected) in [
        (&["--size", "nope=5"][..], "no workload named `nope`"),
        (&["--filter", "nothing-matches"], "no workload matches"),
        (&["--allocators", "glibc"], "no allocator named `glibc`"),
    ] {
        let out = compare(&dir, args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let help = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["compare", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(text(&help.stdout).starts_with("usage: cargo xtask compare"));
    let _ = fs::remove_dir_all(&dir);
}

/// The fields of `line` (a CSV line without quoting) by the column names of
/// `header`.
fn fields<'a>(header: &'a str, line: &'a str) -> Vec<(&'a str, &'a str)> {
    header.split(',').zip(line.split(',')).collect()
}

fn field<'a>(fields: &[(&str, &'a str)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| *k == name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .1
}

#[test]
fn memory_given_back_and_the_hardened_column() {
    let dir = fake_bin_dir("memory");
    fake_hardened(&dir);
    let out = compare(
        &dir,
        &[
            "--filter",
            "retain,mixed",
            "--allocators",
            "gomalloc-hardened,system,gomalloc",
        ],
        &[],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    // Columns in table order whatever the order given; the hardened binary
    // is the one under the target directory.
    let header = stdout.lines().find(|l| l.starts_with("workload")).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["workload", "gomalloc", "system", "gomalloc-hardened"]
    );
    // mixed t1: gomalloc 0.50 ms, system 0.50 ms, hardened 0.75 ms, its
    // ratio to gomalloc's; it is no peer (system is the best peer).
    let mixed = stdout.lines().find(|l| l.starts_with("mixed t1")).unwrap();
    assert!(mixed.contains("0.50 ms (1.00)*"), "{mixed}");
    assert!(mixed.trim_end().ends_with("0.75 ms (1.50)"), "{mixed}");
    assert!(
        stdout
            .contains("gomalloc-hardened: gomalloc built with its `hardened` feature, not a peer"),
        "{stdout}"
    );
    assert!(stdout.contains("the lowest of system)"), "{stdout}");

    // The memory table: peak (ratio to system's), after the free, idle,
    // trim; gomalloc misses the trim goal only.
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Memory given back: retain, size 64"))
        .take(5)
        .collect();
    assert_eq!(table.len(), 5, "{stdout}");
    let row = |name: &str| -> Vec<&str> {
        let line = table
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row {name}:\n{stdout}"));
        line.split("  ")
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect()
    };
    assert_eq!(
        row("gomalloc"),
        [
            "gomalloc",
            "107.4 MiB (1.10)",
            "97.7 MiB",
            "50.0 MiB",
            "40.0 MiB*"
        ]
    );
    assert_eq!(
        row("system"),
        [
            "system",
            "97.7 MiB (1.00)",
            "97.7 MiB",
            "97.7 MiB",
            "1.0 MiB"
        ]
    );
    assert_eq!(
        row("gomalloc-hardened"),
        [
            "gomalloc-hardened",
            "118.2 MiB (1.21)",
            "107.4 MiB",
            "20.0 MiB",
            "10.0 MiB"
        ]
    );
    assert!(
        stdout.contains(
            "(met), <= 64.0 MiB after 3 s idle (met), <= 32.0 MiB after malloc_trim(0) (missed)"
        ),
        "{stdout}"
    );

    let files = dir.join("out");
    let runs = fs::read_to_string(files.join("runs.csv")).unwrap();
    let mut lines = runs.lines();
    let header = lines.next().unwrap();
    let hardened: Vec<_> = lines
        .map(|l| fields(header, l))
        .filter(|f| {
            field(f, "workload") == "retain" && field(f, "allocator") == "gomalloc-hardened"
        })
        .collect();
    assert_eq!(hardened.len(), 2, "{runs}");
    for f in &hardened {
        assert_eq!(field(f, "peak_rss_kib"), "121000");
        assert_eq!(field(f, "rss_freed_kib"), "110000");
        assert_eq!(field(f, "rss_idle_kib"), "20480");
        assert_eq!(field(f, "rss_trim_kib"), "10240");
        assert_eq!(field(f, "status"), "ok");
    }

    let summary = fs::read_to_string(files.join("summary.csv")).unwrap();
    let mut lines = summary.lines();
    let header = lines.next().unwrap();
    let rows: Vec<_> = lines.map(|l| fields(header, l)).collect();
    let of = |workload: &str, alloc: &str| {
        rows.iter()
            .find(|f| field(f, "workload") == workload && field(f, "allocator") == alloc)
            .unwrap_or_else(|| panic!("no {workload} {alloc}:\n{summary}"))
    };
    let g = of("retain", "gomalloc");
    assert_eq!(field(g, "median_rss_idle_kib"), "51200");
    assert_eq!(field(g, "idle_goal"), "met");
    assert_eq!(field(g, "trim_goal"), "missed");
    assert_eq!(field(g, "return_peak_goal"), "met");
    let h = of("mixed", "gomalloc-hardened");
    assert_eq!(field(h, "ratio_to"), "gomalloc");
    assert_eq!(field(h, "time_ratio"), "1.5000");
    assert_eq!(field(h, "time_goal"), "");
    assert_eq!(field(of("mixed", "gomalloc"), "median_rss_idle_kib"), "");

    let md = fs::read_to_string(files.join("summary.md")).unwrap();
    assert!(
        md.contains("**Memory given back**: retain, size 64"),
        "{md}"
    );
    assert!(
        md.contains("| gomalloc | 107.4 MiB (1.10) | 97.7 MiB | 50.0 MiB | 40.0 MiB\\* |"),
        "{md}"
    );
    let svg = fs::read_to_string(files.join("compare.svg")).unwrap();
    assert!(svg.contains(">gomalloc-hardened<"), "{svg}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_hardened_build_is_skipped_with_a_warning() {
    let dir = fake_bin_dir("no-hardened");
    let out = compare(
        &dir,
        &[
            "--filter",
            "mixed",
            "--allocators",
            "gomalloc,system,gomalloc-hardened",
        ],
        &[],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(
        stderr.contains("warning: gomalloc-hardened: ")
            && stderr.contains(
                "compare-hardened/release/compare-gomalloc is missing (cargo build --release"
            )
            && stderr.contains("--features gomalloc-benches/hardened,gomalloc-capi/hardened"),
        "{stderr}"
    );
    // 1 configuration x 2 allocators x 2 runs.
    assert!(stderr.contains("[1/4] mixed t1"), "{stderr}");
    let mixed = stdout.lines().find(|l| l.starts_with("mixed t1")).unwrap();
    assert!(mixed.trim_end().ends_with(" -"), "{mixed}");
    let _ = fs::remove_dir_all(&dir);
}
