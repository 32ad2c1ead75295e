//! `cargo xtask compare` end to end against fake workload binaries: a shell
//! script speaking the `compare-*` protocol (real programs filtered out), so
//! that the driver's planning, interleaving, failure handling and files are
//! checked in well under a second.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fake: `--list` gives a scaling and a non-scaling workload; a run
/// echoes its arguments with a checksum of them; `FAKE_FAIL=<binary>` makes
/// that binary fail its verification.
const FAKE: &str = r#"#!/bin/sh
me=$(basename "$0")
if [ "$1" = --list ]; then
  echo "larson 1000 2 yes"
  echo "mixed 500 1 no"
  exit 0
fi
name=$1; threads=$3; size=$5
if [ "$FAKE_FAIL" = "$me" ]; then echo "verification failed" >&2; exit 1; fi
sum=$(printf '%s' "$name $threads $size" | cksum | cut -d' ' -f1)
printf 'workload=%s threads=%s size=%s ops=%s elapsed_ns=%s checksum=%016x\n' \
  "$name" "$threads" "$size" "$((size * threads))" "$((size * 1000 / threads))" "$sum"
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

fn compare(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let out = dir.join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["compare", "--no-build", "--runs", "2", "--threads", "1,4"])
        .arg("--bin-dir")
        .arg(dir)
        .arg("--out")
        .arg(&out)
        .args(extra)
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
