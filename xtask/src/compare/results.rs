//! What a suite run records and how it is summarised: the configurations
//! (table rows), each run's record, and per (configuration, allocator) the
//! medians and their ratios to the best peer (for a variant of gomalloc, to
//! gomalloc's: see [`Role`]).

use super::allocators::{Allocator, REFERENCE, Role};
use super::programs::Program;
pub use super::protocol::Retained;

/// gomalloc's time goal: at most this times the best peer's median.
pub const TIME_GOAL: f64 = 0.9;
/// gomalloc's peak-RSS goal: at most this times the best peer's median.
pub const RSS_GOAL: f64 = 1.1;

/// gomalloc's memory-return goals (issue 6), for the workloads that report
/// [`Retained`] memory: at most this much resident (KiB) three idle
/// seconds after the free.
pub const IDLE_GOAL_KIB: f64 = 64.0 * 1024.0;
/// At most this much resident (KiB) after `malloc_trim(0)`.
pub const TRIM_GOAL_KIB: f64 = 32.0 * 1024.0;
/// A peak RSS of at most this times the reference allocator's (glibc's,
/// [`REFERENCE`]): giving memory back must not cost a larger peak.
pub const RETURN_PEAK_GOAL: f64 = 1.1;

/// What runs a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A workload of the `compare-*` binaries.
    Rust,
    /// A real program under `LD_PRELOAD`.
    Program(Program),
}

/// One workload configuration: a row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The workload's name.
    pub workload: String,
    /// Its thread count (`None` for real programs, which choose their own).
    pub threads: Option<u32>,
    /// Its size argument.
    pub size: u64,
    /// Whether it is a scaling workload (run at each `--threads`).
    pub scaling: bool,
    /// What runs it.
    pub source: Source,
}

impl Config {
    /// The row's label: `larson t2`, `mixed t1`, `python3`.
    pub fn label(&self) -> String {
        match self.threads {
            Some(t) => format!("{} t{t}", self.workload),
            None => self.workload.clone(),
        }
    }
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// It exited 0 and its output matched the reference.
    Ok,
    /// It exited with this non-zero code (1 or 101: its own verification
    /// failed).
    Exit(i32),
    /// A signal ended it.
    Signal(i32),
    /// The time limit ended it.
    Timeout,
    /// It succeeded but its checksum (or real program's stdout) differs from
    /// the configuration's reference run.
    Mismatch,
    /// It succeeded but its result line did not parse or did not echo the
    /// configuration.
    BadOutput,
    /// It could not be started.
    SpawnError,
}

impl Status {
    /// The status column of `runs.csv`: one token, no commas.
    pub fn token(&self) -> String {
        match self {
            Status::Ok => "ok".into(),
            Status::Exit(c) => format!("exit-{c}"),
            Status::Signal(s) => format!("signal-{s}"),
            Status::Timeout => "timeout".into(),
            Status::Mismatch => "mismatch".into(),
            Status::BadOutput => "bad-output".into(),
            Status::SpawnError => "spawn-error".into(),
        }
    }
}

/// One run of one configuration under one allocator.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Index of its configuration.
    pub config: usize,
    /// Index of its allocator in the suite's allocator list.
    pub alloc: usize,
    /// Its round, from 1.
    pub round: u32,
    /// Seconds: the workload's own `elapsed_ns`, or a real program's wall
    /// time; `None` when the run failed before reporting it.
    pub elapsed_s: Option<f64>,
    /// The child's peak RSS in KiB (`None` when it never ran).
    pub peak_rss_kib: Option<u64>,
    /// Operations done (Rust workloads).
    pub ops: Option<u64>,
    /// The reported checksum, or a digest of a real program's stdout.
    pub checksum: Option<String>,
    /// What a memory-return workload kept resident after its frees.
    pub retained: Option<Retained<u64>>,
    /// How it ended.
    pub status: Status,
}

/// The summary of one (configuration, allocator).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    /// Runs done.
    pub runs: usize,
    /// The first failed run's status, if any run failed.
    pub failure: Option<Status>,
    /// Median seconds (`None` when not run or failed).
    pub time_s: Option<f64>,
    /// Median peak RSS in KiB.
    pub rss_kib: Option<f64>,
    /// Median ops over median seconds (Rust workloads).
    pub ops_per_s: Option<f64>,
    /// Median retained memory, each moment's median on its own (when every
    /// run reported it).
    pub retained: Option<Retained<f64>>,
    /// `time_s` over the best peer's; for a [`Role::Variant`], over
    /// gomalloc's.
    pub time_ratio: Option<f64>,
    /// `rss_kib` over the best peer's; for a [`Role::Variant`], over
    /// gomalloc's.
    pub rss_ratio: Option<f64>,
}

/// The summary of one configuration: one cell per allocator of the suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Index of the configuration.
    pub config: usize,
    /// One cell per allocator, in suite order.
    pub cells: Vec<Cell>,
    /// The best peer's median time.
    pub best_time_s: Option<f64>,
    /// The best peer's median peak RSS in KiB.
    pub best_rss_kib: Option<f64>,
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The smallest figure among the peers (the indices `i` with `peer[i]`)
/// that have one.
pub fn best_peer(figures: &[Option<f64>], peer: &[bool]) -> Option<f64> {
    figures
        .iter()
        .zip(peer)
        .filter(|&(_, &p)| p)
        .filter_map(|(f, _)| *f)
        .min_by(f64::total_cmp)
}

/// Whether `ratio` meets `goal` as printed (two decimals), so that a cell
/// never reads `(0.90)` and is marked a miss against 0.90.
pub fn meets(ratio: f64, goal: f64) -> bool {
    (ratio * 100.0).round() <= (goal * 100.0).round()
}

/// Whether a memory-return cell meets gomalloc's goals (issue 6); each
/// `None` where a figure is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnGoals {
    /// Peak RSS at most [`RETURN_PEAK_GOAL`] times the reference's (as
    /// printed, see [`meets`]).
    pub peak: Option<bool>,
    /// At most [`IDLE_GOAL_KIB`] resident after the idle seconds.
    pub idle: Option<bool>,
    /// At most [`TRIM_GOAL_KIB`] resident after `malloc_trim(0)`.
    pub trim: Option<bool>,
}

impl ReturnGoals {
    /// The goals of `cell`, whose configuration the `reference` allocator
    /// ([`REFERENCE`]) ran as `reference` (if it did).
    pub fn of(cell: &Cell, reference: Option<&Cell>) -> ReturnGoals {
        let retained = cell.retained.filter(|_| cell.failure.is_none());
        ReturnGoals {
            peak: peak_ratio(cell, reference).map(|r| meets(r, RETURN_PEAK_GOAL)),
            idle: retained.map(|r| r.idle <= IDLE_GOAL_KIB),
            trim: retained.map(|r| r.trim <= TRIM_GOAL_KIB),
        }
    }
}

/// `cell`'s median peak RSS over the `reference` cell's.
pub fn peak_ratio(cell: &Cell, reference: Option<&Cell>) -> Option<f64> {
    if cell.failure.is_some() {
        return None;
    }
    ratio(cell.rss_kib, reference.and_then(|r| r.rss_kib))
}

/// The index of the reference allocator ([`REFERENCE`]) in `allocs`.
pub fn reference_index(allocs: &[&Allocator]) -> Option<usize> {
    allocs.iter().position(|a| a.name == REFERENCE)
}

/// Summarises `runs` into one row per configuration: medians, the best
/// peer's, and each cell's ratios (see [`Cell`]).
pub fn summarize(configs: &[Config], allocs: &[&Allocator], runs: &[Run]) -> Vec<Row> {
    let subject = allocs.iter().position(|a| a.role == Role::Subject);
    let peer: Vec<bool> = allocs.iter().map(|a| a.role == Role::Peer).collect();
    let mut rows = Vec::new();
    for c in 0..configs.len() {
        let mut cells: Vec<Cell> = (0..allocs.len())
            .map(|a| {
                let mine: Vec<&Run> = runs
                    .iter()
                    .filter(|r| r.config == c && r.alloc == a)
                    .collect();
                let failure = mine
                    .iter()
                    .find(|r| r.status != Status::Ok)
                    .map(|r| r.status.clone());
                let mut cell = Cell {
                    runs: mine.len(),
                    failure,
                    ..Cell::default()
                };
                if cell.failure.is_none() && !mine.is_empty() {
                    let of = |f: &dyn Fn(&Run) -> Option<f64>| -> Option<f64> {
                        let v: Vec<f64> = mine.iter().filter_map(|r| f(r)).collect();
                        if v.len() == mine.len() {
                            median(&v)
                        } else {
                            None
                        }
                    };
                    cell.time_s = of(&|r| r.elapsed_s);
                    cell.rss_kib = of(&|r| r.peak_rss_kib.map(|k| k as f64));
                    let ops = of(&|r| r.ops.map(|o| o as f64));
                    cell.ops_per_s = match (ops, cell.time_s) {
                        (Some(o), Some(t)) if t > 0.0 => Some(o / t),
                        _ => None,
                    };
                    let retained = |f: fn(&Retained<u64>) -> u64| {
                        of(&|r: &Run| r.retained.as_ref().map(|k| f(k) as f64))
                    };
                    cell.retained = match (
                        retained(|r| r.freed),
                        retained(|r| r.idle),
                        retained(|r| r.trim),
                    ) {
                        (Some(freed), Some(idle), Some(trim)) => {
                            Some(Retained { freed, idle, trim })
                        }
                        _ => None,
                    };
                }
                cell
            })
            .collect();
        let times: Vec<Option<f64>> = cells.iter().map(|c| c.time_s).collect();
        let rsss: Vec<Option<f64>> = cells.iter().map(|c| c.rss_kib).collect();
        let (best_t, best_m) = (best_peer(&times, &peer), best_peer(&rsss, &peer));
        let (subject_t, subject_m) = match subject {
            Some(s) => (times[s], rsss[s]),
            None => (None, None),
        };
        for (a, cell) in allocs.iter().zip(&mut cells) {
            let (base_t, base_m) = match a.role {
                Role::Variant => (subject_t, subject_m),
                Role::Subject | Role::Peer => (best_t, best_m),
            };
            cell.time_ratio = ratio(cell.time_s, base_t);
            cell.rss_ratio = ratio(cell.rss_kib, base_m);
        }
        rows.push(Row {
            config: c,
            cells,
            best_time_s: best_t,
            best_rss_kib: best_m,
        });
    }
    rows
}

fn ratio(x: Option<f64>, best: Option<f64>) -> Option<f64> {
    match (x, best) {
        (Some(x), Some(b)) if b > 0.0 => Some(x / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::allocators::ALLOCATORS;
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[1.0, 9.0, 2.0, 8.0, 3.0]), Some(3.0));
    }

    #[test]
    fn best_peer_skips_the_subject_and_the_missing() {
        let f = [Some(0.5), Some(2.0), None, Some(1.5)];
        assert_eq!(best_peer(&f, &[false, true, true, true]), Some(1.5));
        assert_eq!(best_peer(&f, &[true; 4]), Some(0.5));
        assert_eq!(best_peer(&f, &[false, true, true, false]), Some(2.0));
        assert_eq!(best_peer(&[Some(1.0), None], &[false, true]), None);
    }

    #[test]
    fn goals_as_printed() {
        assert!(meets(0.87, TIME_GOAL));
        assert!(meets(0.9, TIME_GOAL));
        assert!(meets(0.904, TIME_GOAL)); // prints as 0.90
        assert!(!meets(0.906, TIME_GOAL)); // prints as 0.91
        assert!(meets(1.1, RSS_GOAL));
        assert!(!meets(1.12, RSS_GOAL));
    }

    fn run(config: usize, alloc: usize, t: f64, kib: u64, status: Status) -> Run {
        Run {
            config,
            alloc,
            round: 1,
            elapsed_s: Some(t),
            peak_rss_kib: Some(kib),
            ops: Some(1000),
            checksum: Some("0123456789abcdef".into()),
            retained: None,
            status,
        }
    }

    #[test]
    fn summary_ratios_and_failures() {
        let allocs: Vec<&Allocator> = ALLOCATORS.iter().take(3).collect(); // gomalloc, system, mimalloc
        let configs = vec![Config {
            workload: "larson".into(),
            threads: Some(2),
            size: 10,
            scaling: true,
            source: Source::Rust,
        }];
        let mut runs = Vec::new();
        for (t, kib) in [(1.0, 100), (3.0, 300), (2.0, 200)] {
            runs.push(run(0, 0, t * 0.8, kib, Status::Ok));
            runs.push(run(0, 1, t, kib * 2, Status::Ok));
        }
        runs.push(run(0, 2, 0.1, 10, Status::Ok));
        runs.push(run(0, 2, 0.1, 10, Status::Exit(1)));
        let rows = summarize(&configs, &allocs, &runs);
        assert_eq!(rows.len(), 1);
        let [g, s, m] = &rows[0].cells[..] else {
            panic!()
        };
        assert_eq!(g.runs, 3);
        assert!((g.time_s.unwrap() - 1.6).abs() < 1e-12);
        assert_eq!(g.rss_kib, Some(200.0));
        // mimalloc failed, so system is the best peer.
        assert_eq!(m.failure, Some(Status::Exit(1)));
        assert_eq!(m.time_s, None);
        assert_eq!(s.time_ratio, Some(1.0));
        assert!((g.time_ratio.unwrap() - 0.8).abs() < 1e-12);
        assert!((g.rss_ratio.unwrap() - 0.5).abs() < 1e-12);
        assert!((g.ops_per_s.unwrap() - 1000.0 / 1.6).abs() < 1e-9);
        assert_eq!(g.retained, None);
        assert_eq!(rows[0].best_time_s, Some(2.0));
        assert_eq!(configs[0].label(), "larson t2");
    }

    #[test]
    fn a_variant_is_compared_with_gomalloc_and_is_no_peer() {
        let hardened = super::super::allocators::by_name("gomalloc-hardened").unwrap();
        // gomalloc, system, gomalloc-hardened
        let allocs: Vec<&Allocator> = vec![&ALLOCATORS[0], &ALLOCATORS[1], hardened];
        let configs = vec![Config {
            workload: "mixed".into(),
            threads: Some(1),
            size: 10,
            scaling: false,
            source: Source::Rust,
        }];
        // The variant is the fastest and leanest: still not the best peer.
        let runs = vec![
            run(0, 0, 1.0, 100, Status::Ok),
            run(0, 1, 2.0, 400, Status::Ok),
            run(0, 2, 0.5, 50, Status::Ok),
        ];
        let rows = summarize(&configs, &allocs, &runs);
        let [g, s, h] = &rows[0].cells[..] else {
            panic!()
        };
        assert_eq!(rows[0].best_time_s, Some(2.0));
        assert_eq!(rows[0].best_rss_kib, Some(400.0));
        assert_eq!(g.time_ratio, Some(0.5));
        assert_eq!(s.time_ratio, Some(1.0));
        assert_eq!(g.rss_ratio, Some(0.25));
        // The variant's ratios are to gomalloc's figures.
        assert_eq!(h.time_ratio, Some(0.5));
        assert_eq!(h.rss_ratio, Some(0.5));
        // Without gomalloc, a variant has no ratio.
        let rows = summarize(
            &configs,
            &allocs[1..],
            &[
                run(0, 0, 2.0, 400, Status::Ok),
                run(0, 1, 0.5, 50, Status::Ok),
            ],
        );
        assert_eq!(rows[0].cells[1].time_ratio, None);
    }

    #[test]
    fn retained_medians_and_return_goals() {
        let allocs: Vec<&Allocator> = ALLOCATORS.iter().take(2).collect(); // gomalloc, system
        let configs = vec![Config {
            workload: "idle-return".into(),
            threads: None,
            size: 1200,
            scaling: false,
            source: Source::Program(Program::IdleReturn),
        }];
        let mib = 1024;
        let mut runs = Vec::new();
        for (round, idle) in [(1, 70), (2, 60), (3, 50)] {
            let mut r = run(0, 0, 1.0, 1100 * mib, Status::Ok);
            r.round = round;
            r.retained = Some(Retained {
                freed: 1000 * mib,
                idle: idle * mib,
                trim: (idle - 20) * mib,
            });
            runs.push(r);
            let mut r = run(0, 1, 1.0, 1000 * mib, Status::Ok);
            r.round = round;
            r.retained = Some(Retained {
                freed: 1000 * mib,
                idle: 1000 * mib,
                trim: 5 * mib,
            });
            runs.push(r);
        }
        let rows = summarize(&configs, &allocs, &runs);
        let [g, s] = &rows[0].cells[..] else { panic!() };
        let m = |x: u64| (x * mib) as f64;
        assert_eq!(
            g.retained,
            Some(Retained {
                freed: m(1000),
                idle: m(60),
                trim: m(40)
            })
        );
        assert_eq!(peak_ratio(g, Some(s)), Some(1.1));
        assert_eq!(
            ReturnGoals::of(g, Some(s)),
            ReturnGoals {
                peak: Some(true),
                idle: Some(true),
                trim: Some(false)
            }
        );
        assert_eq!(
            ReturnGoals::of(s, Some(s)),
            ReturnGoals {
                peak: Some(true),
                idle: Some(false),
                trim: Some(true)
            }
        );
        assert_eq!(ReturnGoals::of(g, None).peak, None);
        // A run without the fields: no medians.
        runs[0].retained = None;
        let rows = summarize(&configs, &allocs, &runs);
        assert_eq!(rows[0].cells[0].retained, None);
        assert_eq!(
            ReturnGoals::of(&rows[0].cells[0], None),
            ReturnGoals {
                peak: None,
                idle: None,
                trim: None
            }
        );
        assert_eq!(reference_index(&allocs), Some(1));
    }
}
