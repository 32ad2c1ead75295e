//! The comparison workloads at tiny sizes: through the library on
//! gomalloc (this test binary's global allocator), and through the four
//! `compare-*` binaries, whose output must follow the protocol and whose
//! checksums must agree.

use std::process::{Command, Output};

use gomalloc_benches::workloads::{self, Params, WORKLOADS};

/// The allocator under test runs the library tests too.
#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

/// A tiny size and a thread count for each workload (threads above 2 and
/// sizes that do not divide evenly, to exercise the split of the work).
fn tiny(name: &str) -> Params {
    let (threads, size) = match name {
        "larson" => (3, 20_001),
        "xmalloc" => (3, 10_001),
        "cache-scratch" => (3, 3_001),
        "mixed" => (1, 30_000),
        "churn" => (3, 20),
        "realloc" => (1, 2),
        other => panic!("no tiny size for workload {other}"),
    };
    Params { threads, size }
}

#[test]
fn every_workload_runs_and_repeats_its_checksum() {
    for w in &WORKLOADS {
        let p = tiny(w.name);
        let a = workloads::run(w, p);
        let b = workloads::run(w, p);
        assert!(a.outcome.ops >= p.size, "{}: ops {}", w.name, a.outcome.ops);
        assert_eq!(
            a.outcome, b.outcome,
            "{}: two runs with {p:?} differ",
            w.name
        );
    }
}

#[test]
fn checksums_depend_on_the_work() {
    for w in &WORKLOADS {
        let p = tiny(w.name);
        let a = workloads::run(w, p);
        let b = workloads::run(
            w,
            Params {
                size: p.size + 1,
                ..p
            },
        );
        assert_ne!(a.outcome.checksum, b.outcome.checksum, "{}", w.name);
    }
}

#[test]
fn mixed_runs_waves_with_a_small_ceiling_and_copies() {
    // About a dozen waves between 25.6 and 256 KiB.
    let a = workloads::mixed::copy(0, 20_000, 256 << 10);
    assert_eq!(a, workloads::mixed::copy(0, 20_000, 256 << 10));
    let w = workloads::find("mixed").expect("mixed");
    let p = Params {
        threads: 4,
        size: 20_000,
    };
    assert_eq!(workloads::run(w, p).outcome, workloads::run(w, p).outcome);
}

#[test]
fn arguments_parse_as_the_protocol_says() {
    use workloads::{Command as C, parse_args};
    let args = |s: &str| parse_args(s.split_whitespace().map(String::from));
    assert_eq!(args("--list"), Ok(C::List));
    let larson = workloads::find("larson").expect("larson");
    assert_eq!(
        args("larson"),
        Ok(C::Run(
            larson,
            Params {
                threads: larson.default_threads,
                size: larson.default_size
            }
        ))
    );
    assert_eq!(
        args("larson --threads 8 --size=1000"),
        Ok(C::Run(
            larson,
            Params {
                threads: 8,
                size: 1000
            }
        ))
    );
    for bad in [
        "",
        "nosuch",
        "larson --threads",
        "larson --threads 0",
        "larson --size -1",
        "larson --size 0",
        "larson --frobnicate 3",
        "--list extra",
    ] {
        assert!(args(bad).is_err(), "{bad:?} parsed");
    }
}

/// The four binaries, by allocator.
const BINARIES: [(&str, &str); 4] = [
    ("gomalloc", env!("CARGO_BIN_EXE_compare-gomalloc")),
    ("system", env!("CARGO_BIN_EXE_compare-system")),
    ("mimalloc", env!("CARGO_BIN_EXE_compare-mimalloc")),
    ("jemalloc", env!("CARGO_BIN_EXE_compare-jemalloc")),
];

/// Runs `bin` with `args`.
fn run_bin(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

/// Parses a result line into its seven `key=value` fields, checking the
/// keys, their order and the value formats. Returns the checksum.
fn parse_result(line: &str, name: &str, p: Params) -> String {
    let fields: Vec<(&str, &str)> = line
        .split(' ')
        .map(|f| {
            f.split_once('=')
                .unwrap_or_else(|| panic!("field {f:?} in {line:?}"))
        })
        .collect();
    let keys: Vec<&str> = fields.iter().map(|f| f.0).collect();
    assert_eq!(
        keys,
        [
            "workload",
            "threads",
            "size",
            "ops",
            "elapsed_ns",
            "checksum",
            "peak_rss_kib"
        ],
        "{line:?} (this test runs on Linux, where /proc gives the peak RSS)"
    );
    let kib: u64 = fields[6].1.parse().expect("peak_rss_kib is a number");
    assert!(kib > 0, "{line:?}");
    assert_eq!(fields[0].1, name);
    assert_eq!(fields[1].1, p.threads.to_string());
    assert_eq!(fields[2].1, p.size.to_string());
    for (key, value) in &fields[3..5] {
        assert!(value.parse::<u64>().is_ok(), "{key}={value:?}");
    }
    let checksum = fields[5].1;
    assert!(
        checksum.len() == 16 && checksum.bytes().all(|b| b.is_ascii_hexdigit()),
        "checksum {checksum:?}"
    );
    checksum.to_owned()
}

#[test]
fn gomalloc_binary_lists_and_runs() {
    let bin = BINARIES[0].1;
    let out = run_bin(bin, &["--list"]);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), WORKLOADS.len(), "{list}");
    for (line, w) in lines.iter().zip(&WORKLOADS) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "{line:?}");
        assert_eq!(f[0], w.name);
        assert!(f[1].parse::<u64>().is_ok_and(|n| n > 0), "{line:?}");
        assert!(f[2].parse::<usize>().is_ok_and(|n| n > 0), "{line:?}");
        assert!(f[3] == "yes" || f[3] == "no", "{line:?}");
    }

    let p = tiny("larson");
    let (t, s) = (p.threads.to_string(), p.size.to_string());
    let out = run_bin(bin, &["larson", "--threads", &t, "--size", &s]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    assert!(stdout.ends_with('\n'));
    parse_result(stdout.trim_end(), "larson", p);

    for bad in [&["nosuch"][..], &["larson", "--threads", "x"], &[]] {
        let out = run_bin(bin, bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(out.stdout.is_empty() && !out.stderr.is_empty());
    }
}

#[test]
fn all_allocators_agree_on_every_checksum() {
    for w in &WORKLOADS {
        let p = tiny(w.name);
        let (t, s) = (p.threads.to_string(), p.size.to_string());
        let sums: Vec<(&str, String)> = BINARIES
            .iter()
            .map(|&(alloc, bin)| {
                let out = run_bin(bin, &[w.name, "--threads", &t, "--size", &s]);
                assert!(out.status.success(), "{alloc} {}: {out:?}", w.name);
                let line = String::from_utf8(out.stdout).expect("utf-8");
                (alloc, parse_result(line.trim_end(), w.name, p))
            })
            .collect();
        for (alloc, sum) in &sums[1..] {
            assert_eq!(sum, &sums[0].1, "{} on {alloc} vs gomalloc", w.name);
        }
        // The library (on gomalloc, in this process) computes the same.
        let lib = workloads::run(w, p).outcome.checksum;
        assert_eq!(format!("{lib:016x}"), sums[0].1, "{}", w.name);
    }
}
