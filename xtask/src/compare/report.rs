//! The suite's reports: the tables (plain text for the terminal, Markdown
//! for `summary.md`: time, peak RSS and, for the memory-return workload,
//! the memory given back), `runs.csv`, `summary.csv`, and the machine line.

use std::fmt::Write as _;
use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use super::allocators::{Allocator, REFERENCE, Role, SUBJECT};
use super::programs::Program;
use super::results::{
    Cell, Config, IDLE_GOAL_KIB, RETURN_PEAK_GOAL, RSS_GOAL, ReturnGoals, Row, Run, Source,
    TIME_GOAL, TRIM_GOAL_KIB, meets, peak_ratio, reference_index,
};

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

    /// The cell's figure and ratio (to the best peer's, or for a variant
    /// of gomalloc to gomalloc's).
    pub fn of(self, cell: &Cell) -> (Option<f64>, Option<f64>) {
        match self {
            Figure::Time => (cell.time_s, cell.time_ratio),
            Figure::Rss => (cell.rss_kib, cell.rss_ratio),
        }
    }

    /// The best peer's figure in `row`.
    pub fn best(self, row: &Row) -> Option<f64> {
        match self {
            Figure::Time => row.best_time_s,
            Figure::Rss => row.best_rss_kib,
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

/// The two tables (time, then peak RSS), the notes under them, the
/// memory-return tables ([`memory_tables`]), the failures and the machine
/// line.
pub fn tables(suite: &Suite, style: Style) -> String {
    let mut out = String::new();
    for fig in [Figure::Time, Figure::Rss] {
        table(&mut out, suite, fig, style);
        out.push('\n');
    }
    let peers: Vec<&str> = suite
        .allocs
        .iter()
        .filter(|a| a.role == Role::Peer)
        .map(|a| a.name)
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
        "Rust workloads and idle-return report their own time (the workload loop); real programs are timed from spawn to exit. Peak RSS is the process's own high-water mark: VmHWM reported by a Rust workload or idle-return, GNU time's for a real program (wait4 where neither is available).".to_string(),
    ];
    for a in suite.allocs.iter().filter(|a| a.role == Role::Variant) {
        notes.push(format!(
            "{}: gomalloc built with its `hardened` feature, not a peer; its ratios are to gomalloc's (what the hardened checks cost).",
            a.name
        ));
    }
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
    note_lines(&mut out, &notes, style);
    memory_tables(&mut out, suite, style);
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

/// Notes under a table, one a line (Markdown: hard line breaks).
fn note_lines(out: &mut String, notes: &[String], style: Style) {
    for n in notes {
        match style {
            Style::Text => {
                let _ = writeln!(out, "{n}");
            }
            Style::Markdown => {
                let _ = writeln!(out, "{n}  ");
            }
        }
    }
}

fn table(out: &mut String, suite: &Suite, fig: Figure, style: Style) {
    let mut header: Vec<String> = vec!["workload".to_string()];
    header.extend(suite.allocs.iter().map(|a| a.name.to_string()));
    let mut body: Vec<Vec<String>> = Vec::new();
    for row in suite.rows {
        let mut line = vec![suite.configs[row.config].label()];
        for (a, cell) in suite.allocs.iter().zip(&row.cells) {
            line.push(cell_text(fig, cell, a.role == Role::Subject));
        }
        body.push(line);
    }
    let title = format!("{} (median; ratio to the best peer)", fig.title());
    let md_title = format!(
        "**{}** (median; in parentheses the ratio to the best peer)",
        fig.title()
    );
    render(out, (&title, &md_title), &header, &body, style);
}

/// The rows of `suite` that report retained memory (the memory-return
/// workload's) in some cell.
fn memory_rows<'a>(suite: &'a Suite) -> impl Iterator<Item = &'a Row> + 'a {
    suite
        .rows
        .iter()
        .filter(|r| r.cells.iter().any(|c| c.retained.is_some()))
}

/// One "Memory given back" table per configuration that reports retained
/// memory (`idle-return`): per allocator, the medians of its peak RSS (in
/// parentheses, over the reference's, glibc's), the resident memory right
/// after the free, after the idle seconds and after `malloc_trim(0)`;
/// gomalloc's misses of the goals marked `*`, and a line saying which goals
/// it met.
pub fn memory_tables(out: &mut String, suite: &Suite, style: Style) {
    let star = match style {
        Style::Text => "*",
        Style::Markdown => "\\*",
    };
    let reference = reference_index(suite.allocs);
    for row in memory_rows(suite) {
        let config = &suite.configs[row.config];
        let size = match config.source {
            Source::Program(Program::IdleReturn) => format!("{} MiB", config.size),
            _ => format!("size {}", config.size),
        };
        let header: Vec<String> = [
            "allocator",
            "peak",
            "after the free",
            "3 s idle",
            "after malloc_trim",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let reference_cell = reference.map(|r| &row.cells[r]);
        let mut body = Vec::new();
        let mut subject_goals = None;
        for (a, cell) in suite.allocs.iter().zip(&row.cells) {
            let subject = a.role == Role::Subject;
            let goals = ReturnGoals::of(cell, reference_cell);
            if subject {
                subject_goals = Some(goals);
            }
            let mark = |met: Option<bool>| {
                if subject && met == Some(false) {
                    "*"
                } else {
                    ""
                }
            };
            let mut line = vec![a.name.to_string()];
            if cell.failure.is_some() {
                line.extend((0..4).map(|_| "FAIL".to_string()));
            } else {
                line.push(match (cell.rss_kib, peak_ratio(cell, reference_cell)) {
                    (Some(kib), Some(r)) => {
                        format!("{} ({r:.2}){}", fmt_rss(kib), mark(goals.peak))
                    }
                    (Some(kib), None) => fmt_rss(kib),
                    (None, _) => "-".to_string(),
                });
                match cell.retained {
                    Some(r) => {
                        line.push(fmt_rss(r.freed));
                        line.push(format!("{}{}", fmt_rss(r.idle), mark(goals.idle)));
                        line.push(format!("{}{}", fmt_rss(r.trim), mark(goals.trim)));
                    }
                    None => line.extend((0..3).map(|_| "-".to_string())),
                }
            }
            body.push(line);
        }
        out.push('\n');
        let what = format!(
            "Memory given back: {}, {size} (median resident memory; peak in parentheses: ratio to {REFERENCE}'s)",
            config.workload
        );
        let md_what = format!(
            "**Memory given back**: {}, {size} (median resident memory; peak in parentheses: ratio to {REFERENCE}'s)",
            config.workload
        );
        render(out, (&what, &md_what), &header, &body, style);
        out.push('\n');
        let verdict = |met: Option<bool>| match met {
            Some(true) => " (met)",
            Some(false) => " (missed)",
            None => "",
        };
        let g = subject_goals.unwrap_or(ReturnGoals {
            peak: None,
            idle: None,
            trim: None,
        });
        let notes = [
            format!(
                "{SUBJECT}'s goals (issue 6): peak <= {RETURN_PEAK_GOAL:.2} times {REFERENCE}'s{}, <= {} after 3 s idle{}, <= {} after malloc_trim(0){}; {star} marks a miss.",
                verdict(g.peak),
                fmt_rss(IDLE_GOAL_KIB),
                verdict(g.idle),
                fmt_rss(TRIM_GOAL_KIB),
                verdict(g.trim),
            ),
            "Resident memory is /proc/self/statm's: right after the last free (half of the objects freed by another thread than the one that allocated them), after 3 s of sleep, after malloc_trim(0). The goals are set for the default 1200 MiB.".to_string(),
        ];
        note_lines(out, &notes, style);
    }
}

/// A table: a title, a header line and the body; the first column
/// left-aligned, the others right-aligned with one more place after each
/// for gomalloc's `*` (Markdown escapes it).
fn render(
    out: &mut String,
    (title, md_title): (&str, &str),
    header: &[String],
    body: &[Vec<String>],
    style: Style,
) {
    match style {
        Style::Text => {
            let _ = writeln!(out, "{title}");
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
            for line in std::iter::once(header).chain(body.iter().map(Vec::as_slice)) {
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
            let _ = writeln!(out, "{md_title}\n");
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let mut rule = vec![":--".to_string()];
            rule.extend((1..header.len()).map(|_| "--:".to_string()));
            let _ = writeln!(out, "| {} |", rule.join(" | "));
            for line in body {
                let line: Vec<String> = line.iter().map(|f| f.replace('*', "\\*")).collect();
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
pub const RUNS_HEADER: &str = "workload,threads,size,allocator,run,elapsed_s,peak_rss_kib,rss_freed_kib,rss_idle_kib,rss_trim_kib,ops,checksum,status";

/// One line of `runs.csv` (no newline); `threads` is empty for programs,
/// `elapsed_s` and the rest are empty when unknown, the `rss_*_kib`
/// columns for workloads that do not report retained memory.
pub fn runs_line(config: &Config, alloc: &Allocator, run: &Run) -> String {
    let retained = run.retained;
    [
        csv_field(&config.workload),
        opt(config.threads),
        config.size.to_string(),
        csv_field(alloc.name),
        run.round.to_string(),
        opt(run.elapsed_s.map(|s| format!("{s:.6}"))),
        opt(run.peak_rss_kib),
        opt(retained.map(|r| r.freed)),
        opt(retained.map(|r| r.idle)),
        opt(retained.map(|r| r.trim)),
        opt(run.ops),
        csv_field(run.checksum.as_deref().unwrap_or("")),
        run.status.token(),
    ]
    .join(",")
}

/// The header line of `summary.csv`.
pub const SUMMARY_HEADER: &str = "workload,threads,size,allocator,runs,median_elapsed_s,time_ratio,median_peak_rss_kib,rss_ratio,ratio_to,median_rss_freed_kib,median_rss_idle_kib,median_rss_trim_kib,ops_per_s,status,time_goal,rss_goal,idle_goal,trim_goal,return_peak_goal";

/// `summary.csv`: one line per (configuration, allocator). `ratio_to` says
/// what the ratios are over: `best-peer`, or `gomalloc` for a variant of
/// it. The `median_rss_*_kib` columns are the memory-return workload's
/// (empty elsewhere). `status` is `ok`, `fail` or `not-run`; the goal
/// columns are `met` or `missed` for gomalloc and empty for the others (the
/// memory-return goals only where they apply).
pub fn summary_csv(suite: &Suite) -> String {
    let mut out = format!("{SUMMARY_HEADER}\n");
    let reference = reference_index(suite.allocs);
    for row in suite.rows {
        let c = &suite.configs[row.config];
        let reference_cell = reference.map(|r| &row.cells[r]);
        let retains = memory_rows(suite).any(|r| r.config == row.config);
        for (a, cell) in suite.allocs.iter().zip(&row.cells) {
            let status = if cell.failure.is_some() {
                "fail"
            } else if cell.runs == 0 {
                "not-run"
            } else {
                "ok"
            };
            let subject = a.role == Role::Subject;
            let goal = |ratio: Option<f64>, goal: f64| match ratio {
                Some(r) if subject => if meets(r, goal) { "met" } else { "missed" }.to_string(),
                _ => String::new(),
            };
            let met = |met: Option<bool>| match met {
                Some(m) if subject && retains => if m { "met" } else { "missed" }.to_string(),
                _ => String::new(),
            };
            let goals = ReturnGoals::of(cell, reference_cell);
            let retained = cell.retained;
            let kib = |v: Option<f64>| opt(v.map(|v| format!("{v:.0}")));
            let line = [
                csv_field(&c.workload),
                opt(c.threads),
                c.size.to_string(),
                csv_field(a.name),
                cell.runs.to_string(),
                opt(cell.time_s.map(|v| format!("{v:.6}"))),
                opt(cell.time_ratio.map(|v| format!("{v:.4}"))),
                kib(cell.rss_kib),
                opt(cell.rss_ratio.map(|v| format!("{v:.4}"))),
                match a.role {
                    Role::Variant => SUBJECT,
                    Role::Subject | Role::Peer => "best-peer",
                }
                .to_string(),
                kib(retained.map(|r| r.freed)),
                kib(retained.map(|r| r.idle)),
                kib(retained.map(|r| r.trim)),
                opt(cell.ops_per_s.map(|v| format!("{v:.0}"))),
                status.to_string(),
                goal(cell.time_ratio, TIME_GOAL),
                goal(cell.rss_ratio, RSS_GOAL),
                met(goals.idle),
                met(goals.trim),
                met(goals.peak),
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
    /// A machine for tests, with CPU name `cpu`.
    pub(in super::super) fn test_machine(cpu: &str) -> Machine {
        Machine {
            cpu: cpu.into(),
            cpus: 2,
            kernel: "Linux 6.1".into(),
            date: utc_date(0),
        }
    }

    /// The suite of a test over its samples, 3 rounds in `mode`.
    pub(in super::super) fn test_suite<'a>(
        configs: &'a [Config],
        allocs: &'a [&'static Allocator],
        rows: &'a [Row],
        runs: &'a [Run],
        machine: &'a Machine,
        mode: &'static str,
    ) -> Suite<'a> {
        Suite {
            configs,
            allocs,
            rows,
            runs,
            rounds: 3,
            machine,
            mode,
        }
    }

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
                        retained: None,
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
        let machine = test_machine("Test CPU");
        let suite = test_suite(&configs, &allocs, &rows, &runs, &machine, "quick");
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
        assert_eq!(lines[0], SUMMARY_HEADER);
        assert!(lines[1].starts_with("larson,2,100,gomalloc,3,"));
        assert!(lines[1].ends_with(",ok,met,met,,,"), "{}", lines[1]);
        assert!(
            csv.contains("python3,,300,mimalloc,3,,,,,best-peer,,,,,fail,,,,,\n"),
            "{csv}"
        );
        // No memory-return workload, no such table.
        assert!(!text.contains("Memory given back"), "{text}");
        let line = runs_line(&configs[1], allocs[2], &runs[17]);
        assert_eq!(
            line.split(',').count(),
            RUNS_HEADER.split(',').count(),
            "{line}"
        );
        assert!(line.starts_with("python3,,300,mimalloc,3,"), "{line}");
        assert!(line.ends_with(",3000,,,,,00000000000000ff,ok"), "{line}");
    }

    /// The sample with an idle-return configuration, its runs reporting
    /// retained memory, and gomalloc-hardened as a fourth allocator.
    pub(in super::super) fn sample_with_memory() -> (Vec<Config>, Vec<&'static Allocator>, Vec<Run>)
    {
        use super::super::results::Retained;
        let (mut configs, mut allocs, mut runs) = sample();
        allocs.push(super::super::allocators::by_name("gomalloc-hardened").unwrap());
        configs.push(Config {
            workload: "idle-return".into(),
            threads: None,
            size: 1200,
            scaling: false,
            source: Source::Program(Program::IdleReturn),
        });
        let mib = 1024;
        // (peak, freed, idle, trim) MiB of gomalloc, system, mimalloc,
        // gomalloc-hardened: gomalloc meets the idle goal, misses the trim
        // goal (40 > 32 MiB) and the peak goal (1.15 > 1.10 times system's).
        let figures = [
            (1380, 1300, 60, 40),
            (1200, 1150, 1150, 20),
            (1250, 1200, 1200, 1200),
            (1500, 1400, 100, 10),
        ];
        for (alloc, &(peak, freed, idle, trim)) in figures.iter().enumerate() {
            for round in 1..=3 {
                runs.push(Run {
                    config: 2,
                    alloc,
                    round,
                    elapsed_s: Some(1.0 + alloc as f64 / 10.0),
                    peak_rss_kib: Some(peak * mib),
                    ops: Some(8_000_000),
                    checksum: Some("1ca07698529789fd".into()),
                    retained: Some(Retained {
                        freed: freed * mib,
                        idle: idle * mib,
                        trim: trim * mib,
                    }),
                    status: Status::Ok,
                });
            }
        }
        (configs, allocs, runs)
    }

    #[test]
    fn memory_table_and_csv() {
        let (configs, allocs, runs) = sample_with_memory();
        let rows = summarize(&configs, &allocs, &runs);
        let machine = test_machine("Test CPU");
        let suite = test_suite(&configs, &allocs, &rows, &runs, &machine, "full");
        let text = tables(&suite, Style::Text);
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Memory given back: idle-return, 1200 MiB"))
            .take(6)
            .collect();
        assert_eq!(table.len(), 6, "{text}");
        assert!(table[1].starts_with("allocator"), "{text}");
        let of = |name: &str| -> Vec<&str> {
            let line = table
                .iter()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap();
            line.split("  ")
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect()
        };
        assert_eq!(
            of("gomalloc"),
            [
                "gomalloc",
                "1.35 GiB (1.15)*",
                "1.27 GiB",
                "60.0 MiB",
                "40.0 MiB*"
            ]
        );
        assert_eq!(
            of("system"),
            [
                "system",
                "1.17 GiB (1.00)",
                "1.12 GiB",
                "1.12 GiB",
                "20.0 MiB"
            ]
        );
        // No marks but gomalloc's.
        assert_eq!(
            of("gomalloc-hardened"),
            [
                "gomalloc-hardened",
                "1.46 GiB (1.25)",
                "1.37 GiB",
                "100.0 MiB",
                "10.0 MiB"
            ]
        );
        assert!(
            text.contains("gomalloc's goals (issue 6): peak <= 1.10 times system's (missed), <= 64.0 MiB after 3 s idle (met), <= 32.0 MiB after malloc_trim(0) (missed); * marks a miss."),
            "{text}"
        );
        // The variant's note, and its ratios to gomalloc in the main tables.
        assert!(
            text.contains(
                "gomalloc-hardened: gomalloc built with its `hardened` feature, not a peer"
            ),
            "{text}"
        );
        let peak_row = text
            .lines()
            .skip_while(|l| !l.starts_with("Peak RSS"))
            .find(|l| l.starts_with("idle-return"))
            .unwrap();
        // gomalloc 1380 over the best peer's (system) 1200; the variant
        // 1500 over gomalloc's 1380.
        assert!(peak_row.contains("1.35 GiB (1.15)*"), "{peak_row}");
        assert!(
            peak_row.trim_end().ends_with("1.46 GiB (1.09)"),
            "{peak_row}"
        );
        assert!(text.contains("the lowest of system, mimalloc)"), "{text}");

        let md = tables(&suite, Style::Markdown);
        assert!(
            md.contains("**Memory given back**: idle-return, 1200 MiB"),
            "{md}"
        );
        assert!(
            md.contains("| gomalloc | 1.35 GiB (1.15)\\* | 1.27 GiB | 60.0 MiB | 40.0 MiB\\* |"),
            "{md}"
        );
        assert!(md.contains("; \\* marks a miss.  \n"), "{md}");

        let csv = summary_csv(&suite);
        let columns = SUMMARY_HEADER.split(',').count();
        assert!(
            csv.lines().all(|l| l.split(',').count() == columns),
            "{csv}"
        );
        let line = |workload: &str, alloc: &str| -> Vec<String> {
            csv.lines()
                .find(|l| {
                    l.starts_with(&format!("{workload},")) && l.contains(&format!(",{alloc},"))
                })
                .unwrap()
                .split(',')
                .map(String::from)
                .collect()
        };
        let field = |l: &[String], name: &str| -> String {
            let i = SUMMARY_HEADER.split(',').position(|h| h == name).unwrap();
            l[i].clone()
        };
        let g = line("idle-return", "gomalloc");
        assert_eq!(field(&g, "median_rss_freed_kib"), (1300 * 1024).to_string());
        assert_eq!(field(&g, "median_rss_idle_kib"), (60 * 1024).to_string());
        assert_eq!(field(&g, "median_rss_trim_kib"), (40 * 1024).to_string());
        assert_eq!(field(&g, "idle_goal"), "met");
        assert_eq!(field(&g, "trim_goal"), "missed");
        assert_eq!(field(&g, "return_peak_goal"), "missed");
        assert_eq!(field(&g, "ratio_to"), "best-peer");
        let h = line("idle-return", "gomalloc-hardened");
        assert_eq!(field(&h, "ratio_to"), "gomalloc");
        assert_eq!(field(&h, "rss_ratio"), format!("{:.4}", 1500.0 / 1380.0));
        assert_eq!(field(&h, "idle_goal"), "");
        // Other workloads have no memory-return figures nor goals.
        let l = line("larson", "gomalloc");
        assert_eq!(field(&l, "median_rss_idle_kib"), "");
        assert_eq!(field(&l, "idle_goal"), "");
        assert_eq!(field(&l, "time_goal"), "met");

        let run = runs.iter().find(|r| r.config == 2 && r.alloc == 0).unwrap();
        let line = runs_line(&configs[2], allocs[0], run);
        assert_eq!(
            line,
            format!(
                "idle-return,,1200,gomalloc,1,1.000000,{},{},{},{},8000000,1ca07698529789fd,ok",
                1380 * 1024,
                1300 * 1024,
                60 * 1024,
                40 * 1024
            )
        );
    }
}
