//! The protocol of the `compare-*` workload binaries (package
//! `gomalloc-benches`): their `--list` output and the one result line of a
//! run.
//!
//! - `compare-X --list` prints one line per workload:
//!   `<name> <default_size> <default_threads> <scaling>`, scaling `yes`
//!   (run at each thread count of `--threads`) or `no` (run at its default
//!   thread count only).
//! - `compare-X <name> --threads N --size N` runs it once and prints
//!   `workload=<name> threads=<n> size=<n> ops=<n> elapsed_ns=<n>
//!   checksum=<16 hex>`, optionally followed by `peak_rss_kib=<n>`; exit 0
//!   on success, 1 or 101 when its own verification failed, 2 on a usage
//!   error.
//! - A memory-return workload (the C program `idle-return`,
//!   `benches/c/idle_return.c`, which prints the same line) adds the
//!   resident memory after it freed everything: `rss_freed_kib=<n>` (right
//!   after the frees), `rss_idle_kib=<n>` (after three idle seconds) and
//!   `rss_trim_kib=<n>` (after `malloc_trim(0)`), all three or none.

/// One workload as `--list` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name (the first argument of a run).
    pub name: String,
    /// Its default `--size`.
    pub size: u64,
    /// Its default `--threads`.
    pub threads: u32,
    /// Whether it runs at every thread count of `--threads`.
    pub scaling: bool,
}

/// Parses the output of `compare-X --list`; blank lines are skipped.
pub fn parse_list(text: &str) -> Result<Vec<Listed>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = |why: &str| format!("--list line {}: {why}: `{line}`", i + 1);
        let [name, size, threads, scaling] = fields[..] else {
            return Err(bad("expected 4 fields"));
        };
        let scaling = match scaling {
            "yes" => true,
            "no" => false,
            _ => return Err(bad("scaling is neither `yes` nor `no`")),
        };
        out.push(Listed {
            name: name.to_string(),
            size: size.parse().map_err(|_| bad("bad default size"))?,
            threads: threads.parse().map_err(|_| bad("bad default threads"))?,
            scaling,
        });
    }
    if out.is_empty() {
        return Err("--list printed no workloads".to_string());
    }
    Ok(out)
}

/// The result line of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `workload=`.
    pub workload: String,
    /// `threads=`.
    pub threads: u32,
    /// `size=`.
    pub size: u64,
    /// `ops=`: operations done (for ops/s).
    pub ops: u64,
    /// `elapsed_ns=`: the time the workload itself measured.
    pub elapsed_ns: u64,
    /// `checksum=`: 16 lowercase or uppercase hex digits, kept as printed
    /// but compared case-insensitively (stored lowercase).
    pub checksum: String,
    /// `peak_rss_kib=` (optional): the process's own peak resident set
    /// (`VmHWM`), exact where `wait4`'s `ru_maxrss` also counts the
    /// driver's pages the child had before its `exec`.
    pub peak_rss_kib: Option<u64>,
    /// `rss_freed_kib=`, `rss_idle_kib=`, `rss_trim_kib=` (optional, all
    /// three or none): what a memory-return workload kept resident.
    pub retained: Option<Retained<u64>>,
}

/// The resident memory of a process after it freed everything it had
/// allocated, at three moments, in KiB: `u64` as a run reports it, `f64`
/// for medians.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained<T> {
    /// Right after the last free (`rss_freed_kib=`).
    pub freed: T,
    /// After three idle seconds (`rss_idle_kib=`).
    pub idle: T,
    /// After `malloc_trim(0)` (`rss_trim_kib=`).
    pub trim: T,
}

/// The keys of [`Retained`]'s fields on the result line, in field order.
pub const RETAINED_KEYS: [&str; 3] = ["rss_freed_kib", "rss_idle_kib", "rss_trim_kib"];

/// Finds and parses the one `workload=…` line in a run's stdout.
pub fn parse_report(stdout: &str) -> Result<Report, String> {
    let mut lines = stdout.lines().filter(|l| l.starts_with("workload="));
    let line = lines
        .next()
        .ok_or("no `workload=…` line on stdout".to_string())?;
    if lines.next().is_some() {
        return Err("more than one `workload=…` line on stdout".to_string());
    }
    let mut workload = None;
    let mut numbers = [None; 4]; // threads, size, ops, elapsed_ns
    let mut checksum = None;
    let mut peak_rss_kib = None;
    let mut retained = [None; 3]; // in RETAINED_KEYS order
    for field in line.split_whitespace() {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("field `{field}` is not key=value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("`{key}` is not a number: `{value}`"))
        };
        match key {
            "workload" => workload = Some(value.to_string()),
            "threads" => numbers[0] = Some(number()?),
            "size" => numbers[1] = Some(number()?),
            "ops" => numbers[2] = Some(number()?),
            "elapsed_ns" => numbers[3] = Some(number()?),
            "peak_rss_kib" => peak_rss_kib = Some(number()?),
            "rss_freed_kib" => retained[0] = Some(number()?),
            "rss_idle_kib" => retained[1] = Some(number()?),
            "rss_trim_kib" => retained[2] = Some(number()?),
            "checksum" => {
                if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("checksum `{value}` is not 16 hex digits"));
                }
                checksum = Some(value.to_ascii_lowercase());
            }
            _ => {} // Unknown keys are allowed (a newer binary).
        }
    }
    let missing = |k: &str| format!("no `{k}=` in `{line}`");
    let retained = match retained {
        [Some(freed), Some(idle), Some(trim)] => Some(Retained { freed, idle, trim }),
        [None, None, None] => None,
        partial => {
            let absent = RETAINED_KEYS
                .iter()
                .zip(partial)
                .find(|(_, v)| v.is_none())
                .map_or("", |(k, _)| k);
            return Err(format!(
                "{} (the memory-return fields come all three or none)",
                missing(absent)
            ));
        }
    };
    let [threads, size, ops, elapsed_ns] = numbers;
    Ok(Report {
        workload: workload.ok_or_else(|| missing("workload"))?,
        threads: u32::try_from(threads.ok_or_else(|| missing("threads"))?)
            .map_err(|_| "threads out of range".to_string())?,
        size: size.ok_or_else(|| missing("size"))?,
        ops: ops.ok_or_else(|| missing("ops"))?,
        elapsed_ns: elapsed_ns.ok_or_else(|| missing("elapsed_ns"))?,
        checksum: checksum.ok_or_else(|| missing("checksum"))?,
        peak_rss_kib,
        retained,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list() {
        let l = parse_list("larson 100000 2 yes\n\nmixed 5000 1 no\n").unwrap();
        assert_eq!(
            l,
            [
                Listed {
                    name: "larson".into(),
                    size: 100000,
                    threads: 2,
                    scaling: true
                },
                Listed {
                    name: "mixed".into(),
                    size: 5000,
                    threads: 1,
                    scaling: false
                },
            ]
        );
        for bad in [
            "",
            "larson 1 2",
            "larson x 2 yes",
            "larson 1 2 maybe",
            "a 1 2 yes extra",
        ] {
            assert!(parse_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn report() {
        let out = "warming up\nworkload=larson threads=2 size=1000 ops=123456 elapsed_ns=412000000 checksum=00FF00ff00ff00ff\n";
        let r = parse_report(out).unwrap();
        assert_eq!(
            r,
            Report {
                workload: "larson".into(),
                threads: 2,
                size: 1000,
                ops: 123456,
                elapsed_ns: 412_000_000,
                checksum: "00ff00ff00ff00ff".into(),
                peak_rss_kib: None,
                retained: None,
            }
        );
        let ok = "workload=a threads=1 size=1 ops=1 elapsed_ns=1 checksum=0123456789abcdef";
        assert!(parse_report(ok).is_ok());
        let with_rss = format!("{ok} peak_rss_kib=2048");
        assert_eq!(parse_report(&with_rss).unwrap().peak_rss_kib, Some(2048));
        assert_eq!(parse_report(&with_rss).unwrap().retained, None);
        let idle = "workload=idle-return threads=2 size=1200 ops=8000000 elapsed_ns=1500000000 checksum=1ca07698529789fd peak_rss_kib=1300000 rss_freed_kib=1250000 rss_idle_kib=60000 rss_trim_kib=3000";
        let r = parse_report(idle).unwrap();
        assert_eq!(r.peak_rss_kib, Some(1_300_000));
        assert_eq!(
            r.retained,
            Some(Retained {
                freed: 1_250_000,
                idle: 60_000,
                trim: 3000
            })
        );
        for (bad, why) in [
            ("", "no `workload=…` line"),
            (&format!("{ok}\n{ok}"), "more than one"),
            (
                "workload=a threads=1 size=1 ops=1 elapsed_ns=1",
                "no `checksum=`",
            ),
            (
                "workload=a threads=x size=1 ops=1 elapsed_ns=1 checksum=0123456789abcdef",
                "`threads` is not a number",
            ),
            (
                "workload=a threads=1 size=1 ops=1 elapsed_ns=1 checksum=0123",
                "not 16 hex",
            ),
            (
                "workload=a threads=1 size=1 ops=1 elapsed_ns=1 checksum=0123456789abcdeg",
                "not 16 hex",
            ),
            ("workload=a junk", "not key=value"),
            (
                &format!("{ok} rss_freed_kib=1 rss_trim_kib=3"),
                "no `rss_idle_kib=`",
            ),
            (
                &format!("{ok} rss_idle_kib=-1"),
                "`rss_idle_kib` is not a number",
            ),
        ] {
            let err = parse_report(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
