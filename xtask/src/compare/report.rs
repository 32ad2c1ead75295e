//! The suite's reports: the table (plain text for the terminal, Markdown
//! for `summary.md`), `runs.csv`, `summary.csv`, and the machine line.

use std::fmt::Write as _;
use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use super::allocators::{Allocator, SUBJECT};
use super::results::{Cell, Config, RSS_GOAL, Row, Run, TIME_GOAL, meets};

/// Where and when the suite ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The CPU model (`model name` of `/proc/cpuinfo`).
    pub cpu: String,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// The kernel, as `uname -sr` prints it.
    pub kernel: String,
    /// When the suite started, `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
}

impl Machine {
    /// This machine, now.
    pub fn current() -> Machine {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            })
            .unwrap_or_else(|| "unknown CPU".to_string());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Machine {
            cpu,
            cpus,
            kernel: kernel(),
            date: utc_date(secs),
        }
    }

    /// One line: `AMD EPYC, 2 CPUs, Linux 6.1.0; 2026-05-09 07:35 UTC`.
    pub fn line(&self) -> String {
        format!(
            "{}, {} CPU{}, {}; {}",
            self.cpu,
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            self.kernel,
            self.date
        )
    }
}

/// `uname -sr`: the kernel's name and release.
fn kernel() -> String {
    // SAFETY: an all-zero utsname (arrays of c_char) is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname; uname writes only it.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown kernel".to_string();
    }
    let field = |f: &[libc::c_char]| -> String {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {}", field(&u.sysname), field(&u.release))
}

/// `secs` after the Unix epoch as `YYYY-MM-DD HH:MM UTC` (the civil-date
/// algorithm of Howard Hinnant's `civil_from_days`).
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Seconds, three significant digits or so: `1.23 s`, `0.412 s`, `4.12 ms`.
pub fn fmt_time(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{s:.3} s")
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

/// KiB as `31.2 MiB` (or `1.25 GiB`).
pub fn fmt_rss(kib: f64) -> String {
    let mib = kib / 1024.0;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// Operations per second: `12.3 M/s`, `456 k/s`.
pub fn fmt_rate(ops: f64) -> String {
    if ops >= 1e9 {
        format!("{:.2} G/s", ops / 1e9)
    } else if ops >= 1e6 {
        format!("{:.1} M/s", ops / 1e6)
    } else if ops >= 1e3 {
        format!("{:.0} k/s", ops / 1e3)
    } else {
        format!("{ops:.0}/s")
    }
}

/// Which figure a table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Median time.
    Time,
    /// Median peak RSS.
    Rss,
}

impl Figure {
    /// gomalloc's goal for this figure's ratio.
    pub fn goal(self) -> f64 {
        match self {
            Figure::Time => TIME_GOAL,
            Figure::Rss => RSS_GOAL,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Figure::Time => "Time",
            Figure::Rss => "Peak RSS",
        }
    }

    /// The cell's figure and ratio.
    pub fn of(self, cell: &Cell) -> (Option<f64>, Option<f64>) {
        match self {
            Figure::Time => (cell.time_s, cell.time_ratio),
            Figure::Rss => (cell.rss_kib, cell.rss_ratio),
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Figure::Time => fmt_time(value),
            Figure::Rss => fmt_rss(value),
        }
    }
}

/// The text of one cell: `0.412 s (0.87)`, with a trailing `*` when it is
/// gomalloc's and misses the goal; `FAIL`; or `-` (not run).
pub fn cell_text(fig: Figure, cell: &Cell, is_subject: bool) -> String {
    if cell.failure.is_some() {
        return "FAIL".to_string();
    }
    let (value, ratio) = fig.of(cell);
    let Some(value) = value else {
        return "-".to_string();
    };
    let mut s = fig.format(value);
    if let Some(r) = ratio {
        let _ = write!(s, " ({r:.2})");
        if is_subject && !meets(r, fig.goal()) {
            s.push('*');
        }
    }
    s
}

/// Table flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Aligned columns for a terminal.
    Text,
    /// A GitHub Markdown table.
    Markdown,
}

/// Everything a report needs.
pub struct Suite<'a> {
    /// The configurations, by index.
    pub configs: &'a [Config],
    /// The allocators, in column order.
    pub allocs: &'a [&'a Allocator],
    /// One row per configuration that ran.
    pub rows: &'a [Row],
    /// Every run.
    pub runs: &'a [Run],
    /// Runs per (configuration, allocator) asked for.
    pub rounds: u32,
    /// Where and when.
    pub machine: &'a Machine,
    /// `quick` or `full`.
    pub mode: &'a str,
}

/// The two tables (time, then peak RSS), the notes under them, the failures
/// and the machine line.
pub fn tables(suite: &Suite, style: Style) -> String {
    let mut out = String::new();
    for fig in [Figure::Time, Figure::Rss] {
        table(&mut out, suite, fig, style);
        out.push('\n');
    }
    let peers: Vec<&str> = suite
        .allocs
        .iter()
        .map(|a| a.name)
        .filter(|&n| n != SUBJECT)
        .collect();
    let star = match style {
        Style::Text => "*",
        Style::Markdown => "\\*",
    };
    let mut notes = vec![
        format!(
            "Each figure is the median of {} runs ({}); in parentheses, its ratio to the best peer's (the lowest of {}).",
            suite.rounds,
            if suite.mode == "quick" {
                "quick mode: a quarter of each default size"
            } else {
                "full mode: the default sizes"
            },
            peers.join(", ")
        ),
        format!(
            "gomalloc's goals: time <= {TIME_GOAL:.2} and peak RSS <= {RSS_GOAL:.2} times the best peer's; {star} marks a miss."
        ),
        "Rust workloads report their own time (the workload loop); real programs are timed from spawn to exit. Peak RSS is the process's own high-water mark: VmHWM reported by a Rust workload, GNU time's for a real program (wait4 where neither is available).".to_string(),
    ];
    let cells = || suite.rows.iter().flat_map(|r| r.cells.iter());
    if cells().any(|c| c.failure.is_some()) {
        notes.push(
            "FAIL: a run failed or its output differed from the reference run's (listed below)."
                .to_string(),
        );
    }
    if cells().any(|c| c.runs == 0) {
        notes.push("-: not run (its program or library is missing).".to_string());
    }
    for n in &notes {
        match style {
            Style::Text => {
                let _ = writeln!(out, "{n}");
            }
            Style::Markdown => {
                let _ = writeln!(out, "{n}  ");
            }
        }
    }
    let failures = failures(suite);
    if !failures.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "Failures:");
        for f in failures {
            match style {
                Style::Text => {
                    let _ = writeln!(out, "  {f}");
                }
                Style::Markdown => {
                    let _ = writeln!(out, "- {f}");
                }
            }
        }
    }
    out.push('\n');
    let _ = writeln!(out, "Machine: {}", suite.machine.line());
    out
}

/// One line per failed run.
pub fn failures(suite: &Suite) -> Vec<String> {
    suite
        .runs
        .iter()
        .filter(|r| r.status != super::results::Status::Ok)
        .map(|r| {
            format!(
                "{} {} run {}: {}",
                suite.configs[r.config].label(),
                suite.allocs[r.alloc].name,
                r.round,
                r.status.token()
            )
        })
        .collect()
}

fn table(out: &mut String, suite: &Suite, fig: Figure, style: Style) {
    let mut header: Vec<String> = vec!["workload".to_string()];
    header.extend(suite.allocs.iter().map(|a| a.name.to_string()));
    let mut body: Vec<Vec<String>> = Vec::new();
    for row in suite.rows {
        let mut line = vec![suite.configs[row.config].label()];
        for (a, cell) in suite.allocs.iter().zip(&row.cells) {
            let text = cell_text(fig, cell, a.name == SUBJECT);
            line.push(match style {
                Style::Text => text,
                Style::Markdown => text.replace('*', "\\*"),
            });
        }
        body.push(line);
    }
    match style {
        Style::Text => {
            let _ = writeln!(out, "{} (median; ratio to the best peer)", fig.title());
            // Right-aligned columns with one more place after each for
            // gomalloc's `*`, so that marked and unmarked figures line up.
            let split = |f: &str| -> (String, char) {
                match f.strip_suffix('*') {
                    Some(core) => (core.to_string(), '*'),
                    None => (f.to_string(), ' '),
                }
            };
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    body.iter()
                        .map(|l| split(&l[i]).0.chars().count())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for line in std::iter::once(&header).chain(&body) {
                let mut s = String::new();
                for (i, field) in line.iter().enumerate() {
                    let w = widths[i];
                    if i == 0 {
                        let _ = write!(s, "{field:<w$}");
                    } else {
                        let (core, mark) = split(field);
                        let _ = write!(s, "  {core:>w$}{mark}");
                    }
                }
                let _ = writeln!(out, "{}", s.trim_end());
            }
        }
        Style::Markdown => {
            let _ = writeln!(
                out,
                "**{}** (median; in parentheses the ratio to the best peer)\n",
                fig.title()
            );
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let mut rule = vec![":--".to_string()];
            rule.extend((1..header.len()).map(|_| "--:".to_string()));
            let _ = writeln!(out, "| {} |", rule.join(" | "));
            for line in &body {
                let _ = writeln!(out, "| {} |", line.join(" | "));
            }
        }
    }
}

/// A CSV field, quoted when it must be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

/// The header line of `runs.csv`.
pub const RUNS_HEADER: &str =
    "workload,threads,size,allocator,run,elapsed_s,peak_rss_kib,ops,checksum,status";

/// One line of `runs.csv` (no newline); `threads` is empty for real
/// programs, `elapsed_s` and the rest are empty when unknown.
pub fn runs_line(config: &Config, alloc: &Allocator, run: &Run) -> String {
    [
        csv_field(&config.workload),
        opt(config.threads),
        config.size.to_string(),
        csv_field(alloc.name),
        run.round.to_string(),
        opt(run.elapsed_s.map(|s| format!("{s:.6}"))),
        opt(run.peak_rss_kib),
        opt(run.ops),
        csv_field(run.checksum.as_deref().unwrap_or("")),
        run.status.token(),
    ]
    .join(",")
}

/// `summary.csv`: one line per (configuration, allocator). `status` is
/// `ok`, `fail` or `not-run`; the goal columns are `met` or `missed` for
/// gomalloc and empty for the peers.
pub fn summary_csv(suite: &Suite) -> String {
    let mut out = String::from(
        "workload,threads,size,allocator,runs,median_elapsed_s,time_ratio,median_peak_rss_kib,rss_ratio,ops_per_s,status,time_goal,rss_goal\n",
    );
    for row in suite.rows {
        let c = &suite.configs[row.config];
        for (a, cell) in suite.allocs.iter().zip(&row.cells) {
            let status = if cell.failure.is_some() {
                "fail"
            } else if cell.runs == 0 {
                "not-run"
            } else {
                "ok"
            };
            let goal = |ratio: Option<f64>, goal: f64| match ratio {
                Some(r) if a.name == SUBJECT => {
                    if meets(r, goal) { "met" } else { "missed" }.to_string()
                }
                _ => String::new(),
            };
            let line = [
                csv_field(&c.workload),
                opt(c.threads),
                c.size.to_string(),
                csv_field(a.name),
                cell.runs.to_string(),
                opt(cell.time_s.map(|v| format!("{v:.6}"))),
                opt(cell.time_ratio.map(|v| format!("{v:.4}"))),
                opt(cell.rss_kib.map(|v| format!("{v:.0}"))),
                opt(cell.rss_ratio.map(|v| format!("{v:.4}"))),
                opt(cell.ops_per_s.map(|v| format!("{v:.0}"))),
                status.to_string(),
                goal(cell.time_ratio, TIME_GOAL),
                goal(cell.rss_ratio, RSS_GOAL),
            ];
            let _ = writeln!(out, "{}", line.join(","));
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::allocators::ALLOCATORS;
    use super::super::results::{Source, Status, summarize};
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(utc_date(4_107_542_399), "2100-02-28 23:59 UTC");
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_time(12.34), "12.3 s");
        assert_eq!(fmt_time(1.234), "1.23 s");
        assert_eq!(fmt_time(0.4123), "0.412 s");
        assert_eq!(fmt_time(0.004123), "4.12 ms");
        assert_eq!(fmt_rss(31.2 * 1024.0), "31.2 MiB");
        assert_eq!(fmt_rss(1.25 * 1024.0 * 1024.0), "1.25 GiB");
        assert_eq!(fmt_rate(12.3e6), "12.3 M/s");
        assert_eq!(fmt_rate(456e3), "456 k/s");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }

    #[test]
    fn cells_mark_gomalloc_misses() {
        let cell = |t: f64, r: f64| Cell {
            runs: 3,
            time_s: Some(t),
            time_ratio: Some(r),
            rss_kib: Some(2048.0),
            rss_ratio: Some(1.5),
            ..Cell::default()
        };
        assert_eq!(
            cell_text(Figure::Time, &cell(0.412, 0.87), true),
            "0.412 s (0.87)"
        );
        assert_eq!(
            cell_text(Figure::Time, &cell(0.5, 0.95), true),
            "0.500 s (0.95)*"
        );
        assert_eq!(
            cell_text(Figure::Time, &cell(0.5, 0.95), false),
            "0.500 s (0.95)"
        );
        assert_eq!(
            cell_text(Figure::Rss, &cell(0.5, 0.95), true),
            "2.0 MiB (1.50)*"
        );
        let failed = Cell {
            failure: Some(Status::Timeout),
            ..cell(1.0, 1.0)
        };
        assert_eq!(cell_text(Figure::Time, &failed, true), "FAIL");
        assert_eq!(cell_text(Figure::Time, &Cell::default(), true), "-");
    }

    /// A small suite: two configurations, three allocators, one failure.
    pub(in super::super) fn sample() -> (Vec<Config>, Vec<&'static Allocator>, Vec<Run>) {
        let configs = vec![
            Config {
                workload: "larson".into(),
                threads: Some(2),
                size: 100,
                scaling: true,
                source: Source::Rust,
            },
            Config {
                workload: "python3".into(),
                threads: None,
                size: 300,
                scaling: false,
                source: Source::Program(super::super::programs::Program::Python),
            },
        ];
        let allocs: Vec<&Allocator> = ALLOCATORS.iter().take(3).collect();
        let mut runs = Vec::new();
        for config in 0..2 {
            for alloc in 0..3 {
                for round in 1..=3 {
                    let bad = config == 1 && alloc == 2 && round == 2;
                    runs.push(Run {
                        config,
                        alloc,
                        round,
                        elapsed_s: Some(0.1 * (alloc + round as usize) as f64),
                        peak_rss_kib: Some(1000 * (alloc as u64 + 1)),
                        ops: (config == 0).then_some(1_000_000),
                        checksum: Some("00000000000000ff".into()),
                        status: if bad { Status::Mismatch } else { Status::Ok },
                    });
                }
            }
        }
        (configs, allocs, runs)
    }

    #[test]
    fn tables_and_csv() {
        let (configs, allocs, runs) = sample();
        let rows = summarize(&configs, &allocs, &runs);
        let machine = Machine {
            cpu: "Test CPU".into(),
            cpus: 2,
            kernel: "Linux 6.1".into(),
            date: utc_date(0),
        };
        let suite = Suite {
            configs: &configs,
            allocs: &allocs,
            rows: &rows,
            runs: &runs,
            rounds: 3,
            machine: &machine,
            mode: "quick",
        };
        let text = tables(&suite, Style::Text);
        assert!(text.contains("larson t2"), "{text}");
        assert!(text.contains("python3"));
        assert!(text.contains("FAIL"));
        assert!(text.contains("python3 mimalloc run 2: mismatch"));
        assert!(text.contains("Machine: Test CPU, 2 CPUs, Linux 6.1; 1970-01-01 00:00 UTC"));
        // gomalloc: 0.2 s against system's 0.3 s: 0.67, met; RSS 1000 vs
        // 2000 KiB: 0.50.
        assert!(text.contains("0.200 s (0.67) "), "{text}");
        let md = tables(&suite, Style::Markdown);
        let table_lines: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(table_lines.len(), 2 * (2 + configs.len()));
        for l in &table_lines {
            assert_eq!(l.matches('|').count(), allocs.len() + 2, "{l}");
        }
        let csv = summary_csv(&suite);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + configs.len() * allocs.len());
        let columns = lines[0].split(',').count();
        assert!(
            lines.iter().all(|l| l.split(',').count() == columns),
            "{csv}"
        );
        assert!(lines[1].starts_with("larson,2,100,gomalloc,3,"));
        assert!(lines[1].ends_with(",ok,met,met"), "{}", lines[1]);
        assert!(csv.contains("python3,,300,mimalloc,3,,,,,,fail,,"));
        let line = runs_line(&configs[1], allocs[2], &runs[17]);
        assert_eq!(
            line.split(',').count(),
            RUNS_HEADER.split(',').count(),
            "{line}"
        );
        assert!(line.starts_with("python3,,300,mimalloc,3,"), "{line}");
    }
}
