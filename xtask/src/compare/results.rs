//! What a suite run records and how it is summarised: the configurations
//! (table rows), each run's record, and per (configuration, allocator) the
//! medians and their ratios to the best peer.

use super::allocators::Allocator;
use super::programs::Program;

/// gomalloc's time goal: at most this times the best peer's median.
pub const TIME_GOAL: f64 = 0.9;
/// gomalloc's peak-RSS goal: at most this times the best peer's median.
pub const RSS_GOAL: f64 = 1.1;

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
    /// `time_s` over the best peer's.
    pub time_ratio: Option<f64>,
    /// `rss_kib` over the best peer's.
    pub rss_ratio: Option<f64>,
}

/// The summary of one configuration: one cell per allocator of the suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Index of the configuration.
    pub config: usize,
    /// One cell per allocator, in suite order.
    pub cells: Vec<Cell>,
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

/// The smallest figure among the peers (every index but `subject`) that
/// have one.
pub fn best_peer(figures: &[Option<f64>], subject: Option<usize>) -> Option<f64> {
    figures
        .iter()
        .enumerate()
        .filter(|&(i, _)| Some(i) != subject)
        .filter_map(|(_, f)| *f)
        .min_by(f64::total_cmp)
}

/// Whether `ratio` meets `goal` as printed (two decimals), so that a cell
/// never reads `(0.90)` and is marked a miss against 0.90.
pub fn meets(ratio: f64, goal: f64) -> bool {
    (ratio * 100.0).round() <= (goal * 100.0).round()
}

/// Summarises `runs` into one row per configuration; `subject` is the index
/// of gomalloc in `allocs`, if it is there.
pub fn summarize(configs: &[Config], allocs: &[&Allocator], runs: &[Run]) -> Vec<Row> {
    let subject = allocs
        .iter()
        .position(|a| a.name == super::allocators::SUBJECT);
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
                }
                cell
            })
            .collect();
        let times: Vec<Option<f64>> = cells.iter().map(|c| c.time_s).collect();
        let rsss: Vec<Option<f64>> = cells.iter().map(|c| c.rss_kib).collect();
        let (best_t, best_m) = (best_peer(&times, subject), best_peer(&rsss, subject));
        for cell in &mut cells {
            cell.time_ratio = ratio(cell.time_s, best_t);
            cell.rss_ratio = ratio(cell.rss_kib, best_m);
        }
        rows.push(Row { config: c, cells });
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
        assert_eq!(best_peer(&f, Some(0)), Some(1.5));
        assert_eq!(best_peer(&f, None), Some(0.5));
        assert_eq!(best_peer(&[Some(1.0), None], Some(0)), None);
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
        assert_eq!(configs[0].label(), "larson t2");
    }
}
