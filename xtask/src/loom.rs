//! `cargo xtask loom`: run the loom models of the object tiers, or check
//! that each one fails when the protocol it guards is broken on purpose.
//!
//! The models live in `mcentral/tests/loom_central.rs` and
//! `mcache/tests/loom_cache.rs` and compile to nothing without
//! `--cfg gomalloc_loom`. [`MODELS`] lists every one with the broken
//! variant (`--cfg gomalloc_loom_broken="…"`, the values registered in the
//! workspace's `check-cfg`) that it must catch; a model that the test binary
//! lists but the table does not (or the reverse) is an error, so a new model
//! cannot be skipped silently.
//!
//! Each model runs as its own process (the test binary with `--exact`), so
//! the report gives each one's time, a hang is cut off by `--timeout`, and
//! a failure shows that model's output only.

use std::env;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::USAGE_ERROR;

const USAGE: &str = "\
usage: cargo xtask loom [options]

Runs the loom models of the object tiers (mcentral/tests/loom_central.rs,
mcache/tests/loom_cache.rs), each as its own process, and reports each
one's result, time and number of explored executions. Builds them with
RUSTFLAGS=\"--cfg gomalloc_loom\" in release mode with debug assertions on
(CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true), in the target directory
target/loom so the normal build is left alone. Each model has its own
preemption bound; LOOM_MAX_PREEMPTIONS (or --preemptions) overrides it for
all. Exits non-zero if any model fails.

With --broken, checks the models instead: for each broken variant, builds
with --cfg gomalloc_loom_broken=\"VARIANT\" (in target/loom-broken) and runs
the models that guard that protocol, each of which must fail. Prints a
table model x variant (failed as expected / UNEXPECTEDLY PASSED / TIMED
OUT) and succeeds only if every broken run failed.

options:
  --broken             run each model against its broken variant (see above)
  --model NAME         run only this model (repeatable; see --list)
  --list               list the models and their broken variants, then exit
  --preemptions N      LOOM_MAX_PREEMPTIONS=N for every model
  --timeout SECS       per-model time limit (default 600); a model that runs
                       longer counts as failed
  -h, --help           print this help

An option's value may also be given as --option=VALUE.
";

/// One loom model: a `#[test]` in a crate's `tests/loom_*.rs`.
struct Model {
    /// The crate that holds it.
    package: &'static str,
    /// Its test target (the file's name).
    test: &'static str,
    /// The test function.
    name: &'static str,
    /// The `gomalloc_loom_broken` value whose break it must catch.
    broken: &'static str,
}

/// Every model, in the order they run. Keep in step with the test files
/// (checked at run time) and with the models' doc tables.
const MODELS: &[Model] = &[
    Model {
        package: "mcentral",
        test: "loom_central",
        name: "remote_frees_race_owner_collecting",
        broken: "take_remote",
    },
    Model {
        package: "mcentral",
        test: "loom_central",
        name: "uncache_races_remote_free",
        broken: "uncache_full",
    },
    Model {
        package: "mcentral",
        test: "loom_central",
        name: "last_free_races_cache_and_uncache",
        broken: "notify",
    },
    Model {
        package: "mcentral",
        test: "loom_central",
        name: "handout_and_takeback_under_contention",
        broken: "handout",
    },
    Model {
        package: "mcentral",
        test: "loom_central",
        name: "sweep_races_remote_frees_and_a_cache",
        broken: "sweep",
    },
    Model {
        package: "mcentral",
        test: "loom_central",
        name: "batches_race_remote_frees_and_a_sweep",
        broken: "batch",
    },
    Model {
        package: "mcache",
        test: "loom_cache",
        name: "refill_races_remote_frees",
        broken: "take_remote",
    },
    Model {
        package: "mcache",
        test: "loom_cache",
        name: "flush_races_remote_frees",
        broken: "flush",
    },
    Model {
        package: "mcache",
        test: "loom_cache",
        name: "stash_drain_races_owner_flush",
        broken: "stash",
    },
    Model {
        package: "mcache",
        test: "loom_cache",
        name: "trim_races_remote_frees",
        broken: "trim",
    },
    Model {
        package: "mcache",
        test: "loom_cache",
        name: "shared_refills_race_remote_frees_and_a_takeover",
        broken: "take_remote",
    },
];

/// The values of `gomalloc_loom_broken`, as registered in the root
/// `Cargo.toml`'s `check-cfg` (a unit test checks the two agree). Broken
/// runs go in this order.
const VARIANTS: &[&str] = &[
    "take_remote",
    "uncache_full",
    "notify",
    "handout",
    "flush",
    "stash",
    "sweep",
    "trim",
    "batch",
];

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Options {
    help: bool,
    list: bool,
    broken: bool,
    models: Vec<String>,
    preemptions: Option<u32>,
    timeout: Duration,
}

/// Entry point for `cargo xtask loom ARGS`.
pub fn run(args: &[String]) -> ExitCode {
    let opts = match parse(args) {
        Ok(opts) => opts,
        Err(msg) => {
            eprint!("error: {msg}\n\n{USAGE}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    if opts.help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if opts.list {
        for m in MODELS {
            println!("{:<40} {:<9} broken by {}", m.name, m.package, m.broken);
        }
        return ExitCode::SUCCESS;
    }
    let selected: Vec<&Model> = MODELS
        .iter()
        .filter(|m| opts.models.is_empty() || opts.models.iter().any(|n| n == m.name))
        .collect();
    let result = if opts.broken {
        run_broken(&opts, &selected)
    } else {
        run_normal(&opts, &selected)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        help: false,
        list: false,
        broken: false,
        models: Vec::new(),
        preemptions: None,
        timeout: Duration::from_secs(600),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = crate::cli::split(arg);
        let flag = |set: &mut bool| crate::cli::flag(name, inline, set);
        match name {
            "-h" | "--help" => {
                flag(&mut opts.help)?;
                return Ok(opts);
            }
            "--list" => flag(&mut opts.list)?,
            "--broken" => flag(&mut opts.broken)?,
            "--model" | "--preemptions" | "--timeout" => {
                let value = match inline {
                    Some(value) => value,
                    None => args
                        .next()
                        .ok_or_else(|| format!("`{name}` needs a value"))?,
                };
                match name {
                    "--model" => {
                        if !MODELS.iter().any(|m| m.name == value) {
                            return Err(format!(
                                "no model named `{value}` (`cargo xtask loom --list` lists them)"
                            ));
                        }
                        opts.models.push(value.to_string());
                    }
                    "--preemptions" => opts.preemptions = Some(number(name, value)?),
                    _ => {
                        let secs = number(name, value)?;
                        if secs == 0 {
                            return Err("`--timeout` needs at least 1 second".to_string());
                        }
                        opts.timeout = Duration::from_secs(secs.into());
                    }
                }
            }
            _ => return Err(format!("unknown option `{arg}`")),
        }
    }
    Ok(opts)
}

fn number(name: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("`{name}` needs a non-negative integer, not `{value}`"))
}

/// The workspace root (this crate's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `<target>/<name>`, where `<target>` is `CARGO_TARGET_DIR` or the
/// workspace's `target`.
fn target_dir(name: &str) -> PathBuf {
    let base = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    base.join(name)
}

/// The RUSTFLAGS of a loom build, broken by `broken` if given.
fn rustflags(broken: Option<&str>) -> String {
    match broken {
        None => "--cfg gomalloc_loom".to_string(),
        Some(v) => format!("--cfg gomalloc_loom --cfg gomalloc_loom_broken=\"{v}\""),
    }
}

/// Builds the test targets of `models` with `flags` into `target`; returns
/// each test target's executable by target name.
fn build(models: &[&Model], flags: &str, target: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["test", "--release", "--no-run"])
        .arg("--message-format=json-render-diagnostics")
        .arg("--target-dir")
        .arg(target);
    let mut targets: Vec<(&str, &str)> = models.iter().map(|m| (m.package, m.test)).collect();
    targets.sort_unstable();
    targets.dedup();
    for (package, _) in &targets {
        cmd.args(["-p", package]);
    }
    for (_, test) in &targets {
        cmd.args(["--test", test]);
    }
    cmd.env("RUSTFLAGS", flags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!(
        "building {} with RUSTFLAGS='{flags}' in {}",
        targets
            .iter()
            .map(|(p, t)| format!("{p}/tests/{t}.rs"))
            .collect::<Vec<_>>()
            .join(", "),
        target.display()
    );
    let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("the build failed ({})", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut exes = Vec::new();
    for line in stdout.lines() {
        if let Some(path) = executable(line) {
            let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // `loom_central-0123abcd…`: the target name, then the hash.
            let name = stem.rsplit_once('-').map_or(stem, |(n, _)| n).to_string();
            if targets.iter().any(|(_, t)| *t == name) {
                exes.push((name, path));
            }
        }
    }
    for (_, test) in &targets {
        if !exes.iter().any(|(n, _)| n == test) {
            return Err(format!(
                "cargo built no executable for test target `{test}`"
            ));
        }
    }
    Ok(exes)
}

/// The `"executable"` of one line of cargo's JSON messages, if it names one.
fn executable(line: &str) -> Option<PathBuf> {
    if !line.contains("\"reason\":\"compiler-artifact\"") {
        return None;
    }
    let key = "\"executable\":\"";
    let start = line.find(key)? + key.len();
    let end = start + line[start..].find('"')?;
    Some(PathBuf::from(line[start..end].replace("\\\\", "\\")))
}

/// Checks that the test binaries list exactly the models of [`MODELS`]
/// (for the test targets built).
fn check_listed(exes: &[(String, PathBuf)]) -> Result<(), String> {
    for (test, exe) in exes {
        let out = Command::new(exe)
            .args(["--list", "--format=terse"])
            .output()
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect();
        for name in &listed {
            if !MODELS.iter().any(|m| m.test == test && m.name == name) {
                return Err(format!(
                    "model `{name}` of {test} is not in xtask/src/loom.rs MODELS (add it, with its broken variant)"
                ));
            }
        }
        for m in MODELS.iter().filter(|m| m.test == test) {
            if !listed.iter().any(|n| n == m.name) {
                return Err(format!(
                    "xtask/src/loom.rs MODELS names `{}`, which {test} does not have",
                    m.name
                ));
            }
        }
    }
    Ok(())
}

/// How one run of one model ended.
enum Outcome {
    Passed,
    Failed(ExitStatus),
    TimedOut,
}

/// One model's run: how it ended, how long it took, what it printed.
struct RunResult {
    outcome: Outcome,
    elapsed: Duration,
    output: String,
}

impl RunResult {
    /// loom's count of explored executions, as the model helper prints it.
    fn iterations(&self) -> Option<&str> {
        let line = self.output.lines().find(|l| l.starts_with("loom: "))?;
        Some(line.trim_start_matches("loom: "))
    }

    /// The first panic message (its location and first line), if any.
    fn panic_message(&self) -> Option<String> {
        let mut lines = self.output.lines();
        while let Some(line) = lines.next() {
            if let Some(at) = line.find("panicked at ") {
                let location = line[at + "panicked at ".len()..].trim_end_matches(':');
                let message = lines.next().unwrap_or("").trim();
                return Some(format!("{message} ({location})"));
            }
        }
        None
    }
}

/// Runs model `name` of the test binary `exe`.
fn run_model(exe: &Path, name: &str, opts: &Options) -> Result<RunResult, String> {
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = opts.preemptions {
        cmd.env("LOOM_MAX_PREEMPTIONS", n.to_string());
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    })
    .collect();
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break Outcome::Passed,
            Ok(Some(status)) => break Outcome::Failed(status),
            Ok(None) if start.elapsed() >= opts.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Outcome::TimedOut;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {}: {e}", exe.display())),
        }
    };
    let elapsed = start.elapsed();
    let mut output = String::new();
    for r in readers {
        output.push_str(&String::from_utf8_lossy(&r.join().unwrap_or_default()));
    }
    Ok(RunResult {
        outcome,
        elapsed,
        output,
    })
}

fn exe_of<'a>(exes: &'a [(String, PathBuf)], m: &Model) -> &'a Path {
    &exes
        .iter()
        .find(|(t, _)| t == m.test)
        .expect("built above")
        .1
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `cargo xtask loom`: every selected model must pass.
fn run_normal(opts: &Options, models: &[&Model]) -> Result<bool, String> {
    let start = Instant::now();
    let exes = build(models, &rustflags(None), &target_dir("loom"))?;
    check_listed(&exes)?;
    let mut failed = Vec::new();
    for m in models {
        eprintln!("model {} ({}/tests/{}.rs) ...", m.name, m.package, m.test);
        let r = run_model(exe_of(&exes, m), m.name, opts)?;
        let secs = r.elapsed.as_secs_f64();
        let iterations = r.iterations().unwrap_or("? iterations");
        match r.outcome {
            Outcome::Passed => eprintln!("    ok      {secs:7.2} s   {iterations}"),
            Outcome::Failed(status) => {
                eprintln!("    FAILED  {secs:7.2} s   ({status})");
                eprintln!("{}", tail(&r.output, 60));
                failed.push(m.name);
            }
            Outcome::TimedOut => {
                eprintln!("    TIMED OUT after {secs:.0} s (see --timeout)");
                eprintln!("{}", tail(&r.output, 20));
                failed.push(m.name);
            }
        }
    }
    let total = start.elapsed().as_secs_f64();
    if failed.is_empty() {
        eprintln!(
            "loom: all {} models passed in {total:.1} s (build included)",
            models.len()
        );
        Ok(true)
    } else {
        eprintln!(
            "loom: {} of {} models FAILED: {} ({total:.1} s)",
            failed.len(),
            models.len(),
            failed.join(", ")
        );
        Ok(false)
    }
}

/// `cargo xtask loom --broken`: every selected model must fail against its
/// broken variant.
fn run_broken(opts: &Options, models: &[&Model]) -> Result<bool, String> {
    let start = Instant::now();
    let target = target_dir("loom-broken");
    // (model, variant, verdict, detail)
    let mut rows: Vec<(&str, &str, &str, String)> = Vec::new();
    let mut all_caught = true;
    for variant in VARIANTS {
        let of_variant: Vec<&Model> = models
            .iter()
            .copied()
            .filter(|m| m.broken == *variant)
            .collect();
        if of_variant.is_empty() {
            continue;
        }
        let exes = build(&of_variant, &rustflags(Some(variant)), &target)?;
        check_listed(&exes)?;
        for m in &of_variant {
            eprintln!("model {} broken by `{variant}` ...", m.name);
            let r = run_model(exe_of(&exes, m), m.name, opts)?;
            let secs = r.elapsed.as_secs_f64();
            let (verdict, detail) = match r.outcome {
                Outcome::Failed(_) => (
                    "failed as expected",
                    r.panic_message()
                        .unwrap_or_else(|| tail(&r.output, 1).trim().to_string()),
                ),
                Outcome::Passed => {
                    all_caught = false;
                    (
                        "UNEXPECTEDLY PASSED",
                        r.iterations().unwrap_or("").to_string(),
                    )
                }
                Outcome::TimedOut => {
                    all_caught = false;
                    (
                        "TIMED OUT",
                        "a hang, not a report: see --timeout".to_string(),
                    )
                }
            };
            eprintln!("    {verdict} in {secs:.2} s: {detail}");
            rows.push((m.name, variant, verdict, detail));
        }
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5);
    println!();
    println!("{:<w$}  {:<13} {:<20} how", "model", "variant", "result");
    for (name, variant, verdict, detail) in &rows {
        println!("{name:<w$}  {variant:<13} {verdict:<20} {detail}");
    }
    let total = start.elapsed().as_secs_f64();
    if all_caught {
        println!(
            "loom --broken: every broken variant caught ({} runs, {total:.1} s, builds included)",
            rows.len()
        );
    } else {
        println!("loom --broken: some broken variant was NOT caught ({total:.1} s)");
    }
    Ok(all_caught)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Options, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        let o = parse_strs(&[]).unwrap();
        assert!(!o.broken && !o.help && !o.list && o.models.is_empty());
        assert_eq!(o.preemptions, None);
        let o = parse_strs(&[
            "--broken",
            "--model",
            "flush_races_remote_frees",
            "--preemptions=3",
            "--timeout",
            "60",
        ])
        .unwrap();
        assert!(o.broken);
        assert_eq!(o.models, ["flush_races_remote_frees"]);
        assert_eq!(o.preemptions, Some(3));
        assert_eq!(o.timeout, Duration::from_secs(60));
        assert!(parse_strs(&["--list", "-h"]).unwrap().help);
    }

    #[test]
    fn usage_errors() {
        for (args, expected) in [
            (&["--model", "nope"][..], "no model named `nope`"),
            (&["--preemptions"], "`--preemptions` needs a value"),
            (&["--timeout=0"], "`--timeout` needs at least 1 second"),
            (&["--broken=yes"], "`--broken` takes no value"),
            (&["--bogus"], "unknown option `--bogus`"),
        ] {
            let err = parse_strs(args).unwrap_err();
            assert!(err.starts_with(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn every_model_has_a_registered_variant_and_every_variant_a_model() {
        for m in MODELS {
            assert!(VARIANTS.contains(&m.broken), "{}: {}", m.name, m.broken);
        }
        for v in VARIANTS {
            assert!(MODELS.iter().any(|m| m.broken == *v), "no model for {v}");
        }
        let mut names: Vec<_> = MODELS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MODELS.len(), "model listed twice");
    }

    /// `VARIANTS` is exactly the `check-cfg` list of the root `Cargo.toml`.
    #[test]
    fn variants_match_check_cfg() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        let line = manifest
            .lines()
            .find(|l| l.contains("gomalloc_loom_broken, values("))
            .expect("check-cfg of gomalloc_loom_broken");
        let values = &line[line.find("values(").unwrap() + "values(".len()..];
        let values = &values[..values.find(')').unwrap()];
        let registered: Vec<String> = values
            .split(',')
            .map(|v| v.trim().trim_matches(|c| c == '\\' || c == '"').to_string())
            .collect();
        assert_eq!(registered, VARIANTS);
    }

    #[test]
    fn cargo_json_executable() {
        let line = r#"{"reason":"compiler-artifact","target":{"name":"loom_cache"},"executable":"/w/target/loom/release/deps/loom_cache-0a1b","fresh":true}"#;
        assert_eq!(
            executable(line),
            Some(PathBuf::from("/w/target/loom/release/deps/loom_cache-0a1b"))
        );
        assert_eq!(
            executable(r#"{"reason":"compiler-artifact","executable":null}"#),
            None
        );
        assert_eq!(executable(r#"{"reason":"build-finished"}"#), None);
    }
}
