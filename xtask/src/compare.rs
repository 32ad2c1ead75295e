//! `cargo xtask compare`: is gomalloc faster and leaner than the allocator
//! I have? Runs a suite of workloads under gomalloc and its peers (the
//! system allocator, mimalloc, jemalloc, tcmalloc), interleaved, several
//! runs each, and prints a table of median time and peak RSS, each as a
//! ratio to the best peer, with files for the record and the README. A
//! column `gomalloc-hardened` (gomalloc built with its `hardened` feature)
//! shows what the hardened checks cost: its ratios are to plain gomalloc's,
//! and it is no peer ([`allocators::Role`]).
//!
//! # The workloads
//!
//! - **Rust workloads**: the `compare-*` binaries of `gomalloc-benches`
//!   (`compare-gomalloc`, `compare-system`, `compare-mimalloc`,
//!   `compare-jemalloc`: one workload code, four `#[global_allocator]`s;
//!   tcmalloc is `compare-system` with tcmalloc in `LD_PRELOAD`). The
//!   protocol is in [`protocol`]. Scaling workloads run at each thread count
//!   of `--threads`, the others at their default count. The time is the
//!   workload's own `elapsed_ns`; every allocator must print the same
//!   checksum.
//! - **Real programs** ([`programs`]): python3 and sqlite3 under each
//!   allocator's C library in `LD_PRELOAD` (`libgomalloc.so` of
//!   `gomalloc-capi`; Debian's libmimalloc2.0, libjemalloc2,
//!   libtcmalloc-minimal4; nothing for glibc, the `system` column). The
//!   time is the wall clock from spawn to exit; the stdout must equal the
//!   glibc run's.
//! - **Memory return** (`idle-return`, issue 6): our C program
//!   `benches/c/idle_return.c`, compiled with `gcc` into the work directory
//!   and run under `LD_PRELOAD` like the real programs, but speaking the
//!   Rust workloads' protocol (its own time, peak RSS and checksum). It
//!   frees about 1.2 GiB of small and medium objects and reports what stays
//!   resident right after, three idle seconds later and after
//!   `malloc_trim(0)`: the table "Memory given back", with gomalloc's goals
//!   (at most 64 MiB after the idle seconds, 32 MiB after the trim, a peak
//!   at most 1.1 times glibc's).
//!
//! # Measurement
//!
//! For each configuration, round r = 1..runs runs every allocator once,
//! starting one allocator further along each round (round 1 starts with
//! `system`, the reference), so that drift of the machine falls on all
//! alike. The peak RSS of a Rust workload is what the binary reports
//! (`VmHWM`, its own memory map's high-water mark); of a real program, what
//! GNU time reports for it (`programs::TIME`). A child's `ru_maxrss` from
//! `wait4` ([`child`]) is the fallback: it also counts the driver's pages
//! that the child shared before its `exec` (about 8 MiB by the end of a
//! run), which would flatten every ratio. Each (configuration, allocator) is summarised by the median
//! time and median peak RSS over its runs; "best peer" is the lowest among
//! the peers (not gomalloc, nor its hardened variant), and each figure's
//! ratio is the figure over the best peer's (gomalloc-hardened's: over
//! gomalloc's). gomalloc's goals: time <= 0.9 and peak RSS <= 1.1 times the
//! best peer's ([`results`]).
//!
//! A run that exits non-zero, is killed by `--timeout`, prints no valid
//! result line or a different checksum (or output) than the reference is a
//! failure: `FAIL` in the table, the exit status non-zero, the suite goes
//! on. A missing peer (library or program) is a warning and a `-` column.
//!
//! # Output
//!
//! Progress on stderr, the table on stdout, and in `--out` (default
//! `target/compare`): `runs.csv` (every run, written as it goes),
//! `summary.csv`, `summary.md` (the tables in Markdown with the machine
//! line) and `compare.svg` ([`svg`]).
//!
//! # Builds
//!
//! Unless `--no-build`: `cargo build --release` of the `compare-*`
//! binaries and `libgomalloc.so` (`target/release`) and, when
//! gomalloc-hardened is among `--allocators`, of `compare-gomalloc` and
//! `libgomalloc.so` with `--features hardened` into a target directory of
//! its own, `target/compare-hardened` ([`allocators::Build`]), so that
//! neither build unifies the other's features or rebuilds the other.

use std::env;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::USAGE_ERROR;

mod allocators;
mod child;
mod programs;
mod protocol;
mod report;
mod results;
mod svg;

use allocators::{ALLOCATORS, Allocator, Build, REFERENCE, Role};
use programs::{PROGRAMS, Prepared};
use report::{Machine, Style, Suite};
use results::{Config, Run, Source, Status};

const USAGE: &str = "\
usage: cargo xtask compare [options]

Runs the comparison suite: each workload under gomalloc and its peers
(system, mimalloc, jemalloc, tcmalloc), interleaved, several runs each, and
prints the median time and peak RSS of each, with the ratio to the best
peer. Workloads: the Rust workloads of the compare-* binaries (package
gomalloc-benches; larson, xmalloc and cache-scratch at each --threads
count), the real programs python3 and sqlite3 under LD_PRELOAD, and
idle-return (benches/c/idle_return.c, built with gcc, under LD_PRELOAD;
--size in MiB, default 1200): the memory each allocator gives back after a
large free, in a table of its own (Memory given back).

gomalloc-hardened is gomalloc built with its `hardened` feature: not a
peer; its ratios are to plain gomalloc's (the cost of hardening).

Builds first: cargo build --release -p gomalloc-benches --bins
-p gomalloc-capi, and, with gomalloc-hardened among the allocators,
compare-gomalloc and libgomalloc.so with --features hardened into
target/compare-hardened (skip both with --no-build). Writes runs.csv,
summary.csv, summary.md and compare.svg into the --out directory. A
missing peer library or program (or gcc) is skipped with a warning. Exits
non-zero if any run failed (exit status, timeout, or a checksum or output
different from the reference allocator's).

options:
  --quick              3 runs and a quarter of each default size
  --runs N             runs per workload and allocator (default 5; quick 3)
  --filter NAME        only workloads whose name contains NAME (repeatable,
                       or a comma list)
  --threads LIST       thread counts of the scaling workloads (default 1,2,8)
  --size NAME=N        the size of workload NAME (repeatable; overrides
                       --quick's quarter)
  --allocators LIST    a subset of gomalloc,system,mimalloc,jemalloc,tcmalloc,
                       gomalloc-hardened (default all; leaving
                       gomalloc-hardened out skips its build)
  --out DIR            where the files go (default target/compare)
  --no-build           do not run cargo build first
  --bin-dir DIR        where the compare-* binaries are (default
                       target/release; gomalloc-hardened's is always
                       target/compare-hardened/release/compare-gomalloc)
  --timeout SECS       per-run time limit (default 300): a run past it is
                       killed and counted as failed
  -h, --help           print this help

An option's value may also be given as --option=VALUE.
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Options {
    help: bool,
    quick: bool,
    runs: Option<u32>,
    filters: Vec<String>,
    threads: Vec<u32>,
    sizes: Vec<(String, u64)>,
    allocators: Vec<&'static Allocator>,
    out: Option<PathBuf>,
    no_build: bool,
    bin_dir: Option<PathBuf>,
    timeout: Duration,
}

impl Options {
    /// Runs per (configuration, allocator).
    fn rounds(&self) -> u32 {
        self.runs.unwrap_or(if self.quick { 3 } else { 5 })
    }

    /// Whether workload `name` passes `--filter`.
    fn selects(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    /// The size to run workload `name` at, given its default.
    fn size_of(&self, name: &str, default: u64) -> u64 {
        match self.sizes.iter().rev().find(|(n, _)| n == name) {
            Some((_, size)) => *size,
            None if self.quick => (default / 4).max(1),
            None => default,
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        help: false,
        quick: false,
        runs: None,
        filters: Vec::new(),
        threads: vec![1, 2, 8],
        sizes: Vec::new(),
        allocators: ALLOCATORS.iter().collect(),
        out: None,
        no_build: false,
        bin_dir: None,
        timeout: Duration::from_secs(300),
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
            "--quick" => flag(&mut opts.quick)?,
            "--no-build" => flag(&mut opts.no_build)?,
            "--runs" | "--filter" | "--threads" | "--size" | "--allocators" | "--out"
            | "--bin-dir" | "--timeout" => {
                let value = match inline {
                    Some(value) => value,
                    None => args
                        .next()
                        .ok_or_else(|| format!("`{name}` needs a value"))?,
                };
                match name {
                    "--runs" => {
                        let n = number(name, value)?;
                        if n == 0 {
                            return Err("`--runs` needs at least 1".to_string());
                        }
                        opts.runs = Some(u32::try_from(n).map_err(|_| "`--runs`: too many")?);
                    }
                    "--filter" => opts.filters.extend(list(name, value)?),
                    "--threads" => {
                        let mut threads = Vec::new();
                        for t in list(name, value)? {
                            let t = number(name, &t)?;
                            if t == 0 || t > 4096 {
                                return Err(format!("`--threads`: {t} is not in 1..=4096"));
                            }
                            threads.push(t as u32);
                        }
                        threads.sort_unstable();
                        threads.dedup();
                        opts.threads = threads;
                    }
                    "--size" => {
                        let (workload, size) = value
                            .split_once('=')
                            .ok_or_else(|| format!("`--size` needs NAME=N, not `{value}`"))?;
                        let size = number(name, size)?;
                        if workload.is_empty() || size == 0 {
                            return Err(format!(
                                "`--size` needs NAME=N with N >= 1, not `{value}`"
                            ));
                        }
                        opts.sizes.push((workload.to_string(), size));
                    }
                    "--allocators" => {
                        let mut chosen: Vec<&'static Allocator> = Vec::new();
                        for n in list(name, value)? {
                            let a = allocators::by_name(&n).ok_or_else(|| {
                                format!(
                                    "no allocator named `{n}` (the allocators: {})",
                                    ALLOCATORS
                                        .iter()
                                        .map(|a| a.name)
                                        .collect::<Vec<_>>()
                                        .join(",")
                                )
                            })?;
                            if !chosen.contains(&a) {
                                chosen.push(a);
                            }
                        }
                        // Column order is the table's, whatever the order given.
                        opts.allocators =
                            ALLOCATORS.iter().filter(|a| chosen.contains(a)).collect();
                    }
                    "--out" => opts.out = Some(PathBuf::from(value)),
                    "--bin-dir" => opts.bin_dir = Some(PathBuf::from(value)),
                    _ => {
                        let secs = number(name, value)?;
                        if secs == 0 {
                            return Err("`--timeout` needs at least 1 second".to_string());
                        }
                        opts.timeout = Duration::from_secs(secs);
                    }
                }
            }
            _ => return Err(format!("unknown option `{arg}`")),
        }
    }
    Ok(opts)
}

fn number(name: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("`{name}` needs a non-negative integer, not `{value}`"))
}

/// The items of a comma list; empty items are an error.
fn list(name: &str, value: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
    if items.iter().any(String::is_empty) {
        return Err(format!("`{name}`: empty item in `{value}`"));
    }
    Ok(items)
}

/// The workspace root (this crate's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `CARGO_TARGET_DIR` or the workspace's `target`.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Entry point for `cargo xtask compare ARGS`.
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
    match suite(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Error::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(USAGE_ERROR)
        }
        Err(Error::Failed(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Why the suite could not run.
enum Error {
    /// The options ask for something that does not exist.
    Usage(String),
    /// Something needed is missing or broken.
    Failed(String),
}

impl From<String> for Error {
    fn from(msg: String) -> Error {
        Error::Failed(msg)
    }
}

/// The builds the suite needs for `allocs`: the release build always (the
/// peers' `compare-*` binaries are there too), and each other build that
/// one of `allocs` comes from.
fn builds(allocs: &[&Allocator]) -> Vec<Build> {
    let mut builds = vec![Build::Release];
    for a in allocs {
        if !builds.contains(&a.build) {
            builds.push(a.build);
        }
    }
    builds
}

/// Runs `cargo build` for the suite: the workload binaries and
/// `libgomalloc.so` of each build in `builds` (see [`Build::cargo_args`]).
fn build(builds: &[Build], target: &Path) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    for b in builds {
        let args = b.cargo_args(target);
        eprintln!("compare: cargo {}", args.join(" "));
        let status = Command::new(&cargo)
            .current_dir(workspace_root())
            .args(&args)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("running cargo: {e}"))?;
        if !status.success() {
            return Err(format!("the build failed ({status})"));
        }
    }
    Ok(())
}

/// `h:mm:ss` or `m:ss`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The allocators' order in round `round` (from 1): a rotation of `avail`
/// (indices) that starts at the reference allocator in round 1 and one
/// further along each round after.
fn round_order(avail: &[usize], reference: Option<usize>, round: u32) -> Vec<usize> {
    if avail.is_empty() {
        return Vec::new();
    }
    let start = reference
        .and_then(|r| avail.iter().position(|&a| a == r))
        .unwrap_or(0);
    let shift = (start + round as usize - 1) % avail.len();
    avail[shift..]
        .iter()
        .chain(&avail[..shift])
        .copied()
        .collect()
}

/// How to start a configuration's runs under one allocator.
#[derive(Debug, Clone)]
struct Launch {
    /// The `compare-*` binary (Rust workloads; a real program's command is
    /// in [`Planned::prepared`]).
    binary: Option<PathBuf>,
    /// What goes in `LD_PRELOAD` (nothing: the allocator linked in, or
    /// glibc's for a real program).
    preload: Option<PathBuf>,
}

/// One configuration as the suite runs it.
struct Planned {
    config: Config,
    /// A real program's prepared command (`None` for a Rust workload).
    prepared: Option<Prepared>,
    /// Per allocator of the suite, how to run this configuration under it
    /// (`None`: its binary, library or program is missing).
    launch: Vec<Option<Launch>>,
}

impl Planned {
    /// The allocators (indices) that can run this configuration.
    fn avail(&self) -> Vec<usize> {
        (0..self.launch.len())
            .filter(|&a| self.launch[a].is_some())
            .collect()
    }

    /// The command of one run under allocator `a` (which must be
    /// available).
    fn command(&self, a: usize) -> std::io::Result<Command> {
        let launch = self.launch[a]
            .as_ref()
            .expect("only available allocators run");
        if let Some(prepared) = &self.prepared {
            return prepared.command(launch.preload.as_deref());
        }
        let binary = launch.binary.as_ref().expect("a Rust workload's binary");
        let mut cmd = Command::new(binary);
        cmd.arg(&self.config.workload)
            .arg("--threads")
            .arg(self.config.threads.unwrap_or(1).to_string())
            .arg("--size")
            .arg(self.config.size.to_string())
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null());
        if let Some(lib) = &launch.preload {
            cmd.env("LD_PRELOAD", lib);
        }
        Ok(cmd)
    }
}

/// Per allocator, how it runs the Rust workloads, or `None` with a
/// warning when its binary or preloaded library is missing. The binaries of
/// the release build are in `bin_dir`, the others in their build's
/// directory under `target`.
fn rust_launches(opts: &Options, bin_dir: &Path, target: &Path) -> Vec<Option<Launch>> {
    opts.allocators
        .iter()
        .map(|a| {
            let release = a.build.release_dir(target);
            let binary = match a.build {
                Build::Release => bin_dir.join(a.binary),
                _ => release.join(a.binary),
            };
            if !binary.is_file() {
                let hint = match (opts.bin_dir.as_ref(), a.build) {
                    (Some(_), Build::Release) => String::new(),
                    (_, b) => format!(" (cargo {})", b.cargo_args(target).join(" ")),
                };
                eprintln!(
                    "warning: {}: {} is missing{hint}; its Rust workloads are skipped",
                    a.name,
                    binary.display()
                );
                return None;
            }
            match a.rust_preload.map(|l| l.locate(&release)).transpose() {
                Ok(preload) => Some(Launch {
                    binary: Some(binary),
                    preload,
                }),
                Err(why) => {
                    eprintln!("warning: {}: {why}; its Rust workloads are skipped", a.name);
                    None
                }
            }
        })
        .collect()
}

/// Per allocator, how it runs the program workloads, or `None` with a
/// warning when its library is missing.
fn program_launches(opts: &Options, target: &Path) -> Vec<Option<Launch>> {
    opts.allocators
        .iter()
        .map(|a| {
            let release = a.build.release_dir(target);
            match a.program_preload.map(|l| l.locate(&release)).transpose() {
                Ok(preload) => Some(Launch {
                    binary: None,
                    preload,
                }),
                Err(why) => {
                    eprintln!(
                        "warning: {}: {why}; its program runs (python3, sqlite3, idle-return) are skipped",
                        a.name
                    );
                    None
                }
            }
        })
        .collect()
}

/// The workload list of the first Rust binary, gomalloc's if it is there;
/// warns when another binary lists different workloads.
fn list_workloads(launches: &[Option<Launch>]) -> Result<Vec<protocol::Listed>, String> {
    let mut listed: Option<(Vec<protocol::Listed>, &Path)> = None;
    let mut seen: Vec<&Path> = Vec::new();
    for binary in launches
        .iter()
        .flatten()
        .filter_map(|l| l.binary.as_deref())
    {
        if seen.contains(&binary) {
            continue;
        }
        seen.push(binary);
        let out = Command::new(binary)
            .arg("--list")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {} --list: {e}", binary.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} --list failed ({}): {}",
                binary.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let list = protocol::parse_list(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        match &listed {
            None => listed = Some((list, binary)),
            Some((first, from)) if *first != list => eprintln!(
                "warning: {} lists other workloads than {}; using the latter's",
                binary.display(),
                from.display()
            ),
            Some(_) => {}
        }
    }
    Ok(listed.map(|(l, _)| l).unwrap_or_default())
}

/// The configurations to run, in table order: the Rust workloads (each
/// scaling one at every `--threads` count), then the program workloads,
/// whose inputs (and idle-return's binary) are written into `work`.
fn plan(opts: &Options, bin_dir: &Path, target: &Path, work: &Path) -> Result<Vec<Planned>, Error> {
    let rust = rust_launches(opts, bin_dir, target);
    let native = program_launches(opts, target);
    let listed = list_workloads(&rust)?;
    let mut known: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    known.extend(PROGRAMS.iter().map(|p| p.name()));
    for (name, _) in &opts.sizes {
        if !known.contains(&name.as_str()) {
            return Err(Error::Usage(format!(
                "`--size {name}=…`: no workload named `{name}` (the workloads: {})",
                known.join(", ")
            )));
        }
    }
    let mut planned = Vec::new();
    for l in listed.iter().filter(|l| opts.selects(&l.name)) {
        let threads = if l.scaling {
            opts.threads.clone()
        } else {
            vec![l.threads]
        };
        for t in threads {
            planned.push(Planned {
                config: Config {
                    workload: l.name.clone(),
                    threads: Some(t),
                    size: opts.size_of(&l.name, l.size),
                    scaling: l.scaling,
                    source: Source::Rust,
                },
                prepared: None,
                launch: rust.clone(),
            });
        }
    }
    for &p in PROGRAMS.iter().filter(|p| opts.selects(p.name())) {
        let exe = match p.locate() {
            Ok(exe) => exe,
            Err(why) => {
                eprintln!("warning: {why}; the {} workload is skipped", p.name());
                continue;
            }
        };
        let size = opts.size_of(p.name(), p.default_size());
        let writing = |e: std::io::Error| {
            format!(
                "preparing {} (its input or binary) in {}: {e}",
                p.name(),
                work.display()
            )
        };
        fs::create_dir_all(work).map_err(writing)?;
        let prepared = p.prepare(&exe, work, size).map_err(writing)?;
        planned.push(Planned {
            config: Config {
                workload: p.name().to_string(),
                threads: None,
                size,
                scaling: false,
                source: Source::Program(p),
            },
            prepared: Some(prepared),
            launch: native.clone(),
        });
    }
    if planned.is_empty() {
        if !opts.filters.is_empty() {
            return Err(Error::Usage(format!(
                "no workload matches --filter {} (the workloads: {})",
                opts.filters.join(","),
                known.join(", ")
            )));
        }
        return Err(Error::Failed(
            "no workload can run (see the warnings)".to_string(),
        ));
    }
    // The suite is about gomalloc: a configuration it cannot run is an
    // error, not a skipped column.
    if let Some(g) = opts.allocators.iter().position(|a| a.role == Role::Subject)
        && let Some(p) = planned.iter().find(|p| p.launch[g].is_none())
    {
        return Err(Error::Failed(format!(
            "gomalloc cannot run {} (see the warning above)",
            p.config.label()
        )));
    }
    Ok(planned)
}

/// Runs every planned configuration `opts.rounds()` times under each
/// allocator that can run it, interleaved, reporting progress on stderr and
/// appending each run to `runs_csv` as it ends.
fn execute(opts: &Options, planned: &[Planned], runs_csv: &Path) -> Result<Vec<Run>, String> {
    let allocs = &opts.allocators;
    let rounds = opts.rounds();
    let total: usize = planned.iter().map(|p| p.avail().len()).sum::<usize>() * rounds as usize;
    let write_err = |e: std::io::Error| format!("writing {}: {e}", runs_csv.display());
    let mut csv = File::create(runs_csv)
        .map(BufWriter::new)
        .map_err(write_err)?;
    writeln!(csv, "{}", report::RUNS_HEADER).map_err(write_err)?;

    let reference = allocs.iter().position(|a| a.name == REFERENCE);
    let label_width = planned
        .iter()
        .map(|p| p.config.label().len())
        .max()
        .unwrap_or(0);
    let name_width = allocs.iter().map(|a| a.name.len()).max().unwrap_or(0);
    let mut runs: Vec<Run> = Vec::new();
    let (mut done, mut remaining) = (0usize, total);
    let started = Instant::now();
    for (c, p) in planned.iter().enumerate() {
        let config = &p.config;
        let avail = p.avail();
        // A real program whose output is compared whole (not one that
        // reports its own result line).
        let real = matches!(config.source, Source::Program(prog) if !prog.reports());
        if let (true, Some(&first)) = (real, round_order(&avail, reference, 1).first()) {
            // One uncounted run first, so that no allocator's run pays for
            // loading the program and its files from disk. (A reporting
            // program times its own work, which excludes its start-up.)
            eprintln!("{}: warm-up run (not counted)", config.label());
            let mut cmd = p
                .command(first)
                .map_err(|e| format!("preparing {}: {e}", config.label()))?;
            let _ = child::run(&mut cmd, opts.timeout);
        }
        // The first good run's checksum (and a program's whole stdout).
        let mut expected: Option<(String, Vec<u8>)> = None;
        let mut aborted = false;
        for round in 1..=rounds {
            for a in round_order(&avail, reference, round) {
                if aborted {
                    remaining -= 1;
                    continue;
                }
                let mut cmd = p
                    .command(a)
                    .map_err(|e| format!("preparing {}: {e}", config.label()))?;
                let rss_file = p.prepared.as_ref().and_then(|pr| pr.rss_file());
                let (run, detail) = measure(
                    &mut cmd,
                    config,
                    (c, a, round),
                    &mut expected,
                    opts.timeout,
                    rss_file,
                );
                done += 1;
                remaining -= 1;
                let eta = started.elapsed().mul_f64(remaining as f64 / done as f64);
                let prefix = format!(
                    "[{done:>w$}/{total}] {:<label_width$}  {:<name_width$}  run {round}/{rounds}",
                    config.label(),
                    allocs[a].name,
                    w = total.to_string().len()
                );
                match (&run.status, run.elapsed_s, run.peak_rss_kib) {
                    (Status::Ok, Some(s), Some(kib)) => eprintln!(
                        "{prefix}  {:>9}  {:>9}  ETA {}",
                        report::fmt_time(s),
                        report::fmt_rss(kib as f64),
                        clock(eta)
                    ),
                    _ => {
                        eprintln!("{prefix}  FAIL: {}  ETA {}", run.status.token(), clock(eta));
                        for l in detail.lines() {
                            eprintln!("    | {l}");
                        }
                    }
                }
                // A real program whose output differs is not measured
                // further: the runs would not be comparable.
                if run.status == Status::Mismatch && real {
                    aborted = true;
                    eprintln!(
                        "error: {}: the output under {} differs from the reference run's; the rest of this workload's runs are skipped",
                        config.label(),
                        allocs[a].name
                    );
                }
                writeln!(csv, "{}", report::runs_line(config, allocs[a], &run))
                    .and_then(|()| csv.flush())
                    .map_err(write_err)?;
                runs.push(run);
            }
        }
    }
    Ok(runs)
}

/// Runs the suite; `Ok(false)` when some run failed.
fn suite(opts: &Options) -> Result<bool, Error> {
    let started = Instant::now();
    let target = target_dir();
    let bin_dir = opts
        .bin_dir
        .clone()
        .unwrap_or_else(|| Build::Release.release_dir(&target));
    let out_dir = opts.out.clone().unwrap_or_else(|| target.join("compare"));
    if !opts.no_build {
        build(&builds(&opts.allocators), &target)?;
    }
    let machine = Machine::current();
    let planned = plan(opts, &bin_dir, &target, &out_dir.join("work"))?;
    let rounds = opts.rounds();
    let mode = if opts.quick { "quick" } else { "full" };
    let total: usize = planned.iter().map(|p| p.avail().len()).sum::<usize>() * rounds as usize;
    eprintln!(
        "compare: {} configurations, {} allocators, {rounds} runs each: {total} runs ({mode} mode); files in {}",
        planned.len(),
        opts.allocators.len(),
        out_dir.display()
    );
    fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let runs = execute(opts, &planned, &out_dir.join("runs.csv"))?;

    let configs: Vec<Config> = planned.into_iter().map(|p| p.config).collect();
    let rows = results::summarize(&configs, &opts.allocators, &runs);
    let suite = Suite {
        configs: &configs,
        allocs: &opts.allocators,
        rows: &rows,
        runs: &runs,
        rounds,
        machine: &machine,
        mode,
    };
    println!();
    print!("{}", report::tables(&suite, Style::Text));
    let markdown = format!(
        "<!-- generated by `cargo xtask compare{}`; do not edit -->\n\n{}",
        if opts.quick { " --quick" } else { "" },
        report::tables(&suite, Style::Markdown)
    );
    let files = [
        ("summary.csv", report::summary_csv(&suite)),
        ("summary.md", markdown),
        ("compare.svg", svg::chart(&suite, &machine.line())),
    ];
    for (name, contents) in &files {
        let path = out_dir.join(name);
        fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let failed = report::failures(&suite).len();
    eprintln!(
        "compare: {} runs in {}; wrote runs.csv, summary.csv, summary.md and compare.svg in {}",
        runs.len(),
        clock(started.elapsed()),
        out_dir.display()
    );
    if failed > 0 {
        eprintln!("compare: {failed} runs FAILED (see the table)");
    }
    Ok(failed == 0)
}

/// Runs `cmd` once, as run `round` of configuration `c` under allocator
/// `a` (the triple `(c, a, round)`), and checks its output against
/// `expected` (set by the first good run). Returns the record and, for a
/// failure, what to show of it.
fn measure(
    cmd: &mut Command,
    config: &Config,
    (c, a, round): (usize, usize, u32),
    expected: &mut Option<(String, Vec<u8>)>,
    timeout: Duration,
    rss_file: Option<&Path>,
) -> (Run, String) {
    let mut run = Run {
        config: c,
        alloc: a,
        round,
        elapsed_s: None,
        peak_rss_kib: None,
        ops: None,
        checksum: None,
        retained: None,
        status: Status::Ok,
    };
    let m = match child::run(cmd, timeout) {
        Ok(m) => m,
        Err(e) => {
            run.status = Status::SpawnError;
            return (run, format!("could not run {:?}: {e}", cmd.get_program()));
        }
    };
    run.peak_rss_kib = Some(m.peak_rss_kib);
    let stderr_tail = || {
        let text = String::from_utf8_lossy(&m.stderr);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    };
    if m.timed_out {
        run.status = Status::Timeout;
        return (
            run,
            format!("killed after {} s (--timeout)", timeout.as_secs()),
        );
    }
    if !m.status.success() {
        use std::os::unix::process::ExitStatusExt;
        run.status = match (m.status.code(), m.status.signal()) {
            (Some(code), _) => Status::Exit(code),
            (None, Some(sig)) => Status::Signal(sig),
            (None, None) => Status::Exit(-1),
        };
        return (run, stderr_tail());
    }
    let checksum = match config.source {
        Source::Program(p) if !p.reports() => {
            run.elapsed_s = Some(m.wall.as_secs_f64());
            if let Some(kib) = rss_file.and_then(programs::read_peak_rss) {
                run.peak_rss_kib = Some(kib);
            }
            programs::digest(&m.stdout)
        }
        Source::Rust | Source::Program(_) => {
            let stdout = String::from_utf8_lossy(&m.stdout);
            let report = match protocol::parse_report(&stdout) {
                Ok(r) => r,
                Err(why) => {
                    run.status = Status::BadOutput;
                    return (run, why);
                }
            };
            // A program chooses its own thread count.
            let asked = (
                config.workload.as_str(),
                config.threads.unwrap_or(report.threads),
                config.size,
            );
            if (report.workload.as_str(), report.threads, report.size) != asked {
                run.status = Status::BadOutput;
                return (
                    run,
                    format!(
                        "asked for {} threads={} size={}, it reports {} threads={} size={}",
                        asked.0, asked.1, asked.2, report.workload, report.threads, report.size
                    ),
                );
            }
            run.elapsed_s = Some(report.elapsed_ns as f64 / 1e9);
            run.ops = Some(report.ops);
            run.retained = report.retained;
            if let Some(kib) = report.peak_rss_kib {
                run.peak_rss_kib = Some(kib);
            }
            report.checksum
        }
    };
    run.checksum = Some(checksum.clone());
    match expected {
        None => *expected = Some((checksum, m.stdout)),
        Some((want, want_out)) if *want != checksum => {
            run.status = Status::Mismatch;
            let detail = match config.source {
                Source::Program(p) if !p.reports() => {
                    programs::first_difference(want_out, &m.stdout)
                }
                _ => format!("checksum {checksum}, the reference run's {want}"),
            };
            return (run, detail);
        }
        Some(_) => {}
    }
    (run, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Options, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn default_options() {
        let o = parse_strs(&[]).unwrap();
        assert!(!o.help && !o.quick && !o.no_build);
        assert_eq!(o.rounds(), 5);
        assert_eq!(o.threads, [1, 2, 8]);
        assert_eq!(o.allocators.len(), ALLOCATORS.len());
        assert_eq!(o.timeout, Duration::from_secs(300));
        assert!(o.selects("larson"));
        assert_eq!(o.size_of("larson", 1000), 1000);
    }

    #[test]
    fn options() {
        let o = parse_strs(&[
            "--quick",
            "--filter",
            "larson,python",
            "--filter=churn",
            "--threads",
            "8,1,2,2",
            "--size",
            "larson=40",
            "--size=mixed=7",
            "--allocators",
            "tcmalloc,gomalloc",
            "--out",
            "/tmp/o",
            "--no-build",
            "--bin-dir=/tmp/b",
            "--timeout",
            "9",
        ])
        .unwrap();
        assert!(o.quick && o.no_build);
        assert_eq!(o.rounds(), 3);
        assert_eq!(o.filters, ["larson", "python", "churn"]);
        assert!(o.selects("python3") && o.selects("churn") && !o.selects("mixed"));
        assert_eq!(o.threads, [1, 2, 8]);
        assert_eq!(o.size_of("larson", 1000), 40);
        assert_eq!(o.size_of("mixed", 1000), 7);
        assert_eq!(o.size_of("churn", 1000), 250);
        assert_eq!(o.size_of("churn", 3), 1);
        let names: Vec<&str> = o.allocators.iter().map(|a| a.name).collect();
        assert_eq!(names, ["gomalloc", "tcmalloc"]);
        assert_eq!(o.out, Some(PathBuf::from("/tmp/o")));
        assert_eq!(o.bin_dir, Some(PathBuf::from("/tmp/b")));
        assert_eq!(o.timeout, Duration::from_secs(9));
        assert_eq!(parse_strs(&["--quick", "--runs", "7"]).unwrap().rounds(), 7);
        assert!(parse_strs(&["--runs=2", "-h"]).unwrap().help);
    }

    #[test]
    fn usage_errors() {
        for (args, expected) in [
            (&["--runs", "0"][..], "`--runs` needs at least 1"),
            (&["--runs"], "`--runs` needs a value"),
            (&["--threads", "1,,2"], "`--threads`: empty item"),
            (&["--threads", "0"], "`--threads`: 0 is not in"),
            (
                &["--threads", "x"],
                "`--threads` needs a non-negative integer",
            ),
            (&["--size", "larson"], "`--size` needs NAME=N"),
            (&["--size", "larson=0"], "`--size` needs NAME=N with N >= 1"),
            (&["--size", "=5"], "`--size` needs NAME=N with N >= 1"),
            (&["--allocators", "glibc"], "no allocator named `glibc`"),
            (&["--timeout=0"], "`--timeout` needs at least 1 second"),
            (&["--quick=yes"], "`--quick` takes no value"),
            (&["--bogus"], "unknown option `--bogus`"),
        ] {
            let err = parse_strs(args).unwrap_err();
            assert!(err.starts_with(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_hardened_build_only_with_its_allocator() {
        let o = parse_strs(&["--allocators", "gomalloc,system"]).unwrap();
        assert_eq!(builds(&o.allocators), [Build::Release]);
        let o = parse_strs(&["--allocators", "gomalloc-hardened"]).unwrap();
        assert_eq!(builds(&o.allocators), [Build::Release, Build::Hardened]);
        let o = parse_strs(&[]).unwrap();
        assert_eq!(builds(&o.allocators), [Build::Release, Build::Hardened]);
        assert_eq!(
            o.allocators.last().map(|a| a.name),
            Some("gomalloc-hardened")
        );
    }

    #[test]
    fn rounds_rotate_from_the_reference() {
        let avail = [0, 1, 2, 3, 4];
        assert_eq!(round_order(&avail, Some(1), 1), [1, 2, 3, 4, 0]);
        assert_eq!(round_order(&avail, Some(1), 2), [2, 3, 4, 0, 1]);
        assert_eq!(round_order(&avail, Some(1), 5), [0, 1, 2, 3, 4]);
        assert_eq!(round_order(&avail, Some(1), 6), [1, 2, 3, 4, 0]);
        assert_eq!(round_order(&avail, None, 1), [0, 1, 2, 3, 4]);
        // The reference not available: start from the first.
        assert_eq!(round_order(&[0, 2], Some(1), 2), [2, 0]);
        assert!(round_order(&[], Some(1), 1).is_empty());
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]).stdin(Stdio::null());
        cmd
    }

    /// `measure` of a shell script, with a 30 s timeout and no RSS file.
    fn run_sh(
        script: &str,
        config: &Config,
        key: (usize, usize, u32),
        expected: &mut Option<(String, Vec<u8>)>,
    ) -> (Run, String) {
        measure(
            &mut sh(script),
            config,
            key,
            expected,
            Duration::from_secs(30),
            None,
        )
    }

    #[test]
    fn measure_checks_rust_results() {
        let config = Config {
            workload: "larson".into(),
            threads: Some(2),
            size: 100,
            scaling: true,
            source: Source::Rust,
        };
        let line = |threads: u32, sum: &str| {
            format!(
                "echo workload=larson threads={threads} size=100 ops=500 elapsed_ns=2500000 checksum={sum}"
            )
        };
        let mut expected = None;
        let (run, _) = run_sh(
            &line(2, "00000000000000aa"),
            &config,
            (0, 1, 1),
            &mut expected,
        );
        assert_eq!(run.status, Status::Ok);
        assert_eq!(run.elapsed_s, Some(0.0025));
        assert_eq!(run.ops, Some(500));
        assert!(run.peak_rss_kib.is_some());
        assert_eq!(expected.as_ref().unwrap().0, "00000000000000aa");
        let (run, detail) = run_sh(
            &line(2, "00000000000000bb"),
            &config,
            (0, 2, 1),
            &mut expected,
        );
        assert_eq!(run.status, Status::Mismatch);
        assert!(detail.contains("00000000000000bb"), "{detail}");
        let (run, detail) = run_sh(
            &line(8, "00000000000000aa"),
            &config,
            (0, 2, 1),
            &mut expected,
        );
        assert_eq!(run.status, Status::BadOutput);
        assert!(detail.contains("threads=8"), "{detail}");
        let (run, detail) = run_sh("echo bad >&2; exit 101", &config, (0, 2, 1), &mut expected);
        assert_eq!(run.status, Status::Exit(101));
        assert_eq!(detail, "bad");
        let (run, _) = run_sh("echo nothing", &config, (0, 2, 1), &mut expected);
        assert_eq!(run.status, Status::BadOutput);
        let (run, _) = run_sh("kill -9 $$", &config, (0, 2, 1), &mut expected);
        assert_eq!(run.status, Status::Signal(9));
    }

    #[test]
    fn measure_parses_a_reporting_program() {
        let config = Config {
            workload: "idle-return".into(),
            threads: None,
            size: 300,
            scaling: false,
            source: Source::Program(programs::Program::IdleReturn),
        };
        let line = |size: u32, extra: &str| {
            format!(
                "echo workload=idle-return threads=2 size={size} ops=2000000 elapsed_ns=400000000 checksum=00000000000000aa peak_rss_kib=330000{extra}"
            )
        };
        let mut expected = None;
        let (run, detail) = run_sh(
            &line(
                300,
                " rss_freed_kib=320000 rss_idle_kib=60000 rss_trim_kib=3000",
            ),
            &config,
            (0, 0, 1),
            &mut expected,
        );
        assert_eq!(run.status, Status::Ok, "{detail}");
        assert_eq!(run.elapsed_s, Some(0.4));
        assert_eq!(run.peak_rss_kib, Some(330_000));
        assert_eq!(
            run.retained,
            Some(protocol::Retained {
                freed: 320_000,
                idle: 60_000,
                trim: 3000
            })
        );
        // Its checksum is compared, not its whole output.
        let (run, _) = run_sh(&line(300, ""), &config, (0, 1, 1), &mut expected);
        assert_eq!(run.status, Status::Ok);
        assert_eq!(run.retained, None);
        let (run, detail) = run_sh(&line(1200, ""), &config, (0, 1, 1), &mut expected);
        assert_eq!(run.status, Status::BadOutput);
        assert!(detail.contains("size=1200"), "{detail}");
        let (run, _) = run_sh(
            "echo idle_return: object 7 corrupt >&2; kill -6 $$",
            &config,
            (0, 1, 1),
            &mut expected,
        );
        assert_eq!(run.status, Status::Signal(6));
    }

    #[test]
    fn measure_compares_program_output() {
        let config = Config {
            workload: "python3".into(),
            threads: None,
            size: 10,
            scaling: false,
            source: Source::Program(programs::Program::Python),
        };
        let mut expected = None;
        let (run, _) = run_sh("echo 1 2; echo 3", &config, (1, 1, 1), &mut expected);
        assert_eq!(run.status, Status::Ok);
        assert!(run.elapsed_s.is_some_and(|s| s > 0.0));
        assert_eq!(
            run.checksum.as_deref(),
            Some(programs::digest(b"1 2\n3\n").as_str())
        );
        let (run, _) = run_sh("echo 1 2; echo 3", &config, (1, 0, 1), &mut expected);
        assert_eq!(run.status, Status::Ok);
        let (run, detail) = run_sh("echo 1 2; echo 4", &config, (1, 0, 2), &mut expected);
        assert_eq!(run.status, Status::Mismatch);
        assert_eq!(detail, "line 2: expected \"3\", got \"4\"");
    }

    #[test]
    fn clocks() {
        assert_eq!(clock(Duration::from_secs(65)), "1:05");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }
}
