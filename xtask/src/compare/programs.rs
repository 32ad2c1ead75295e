//! The workloads run as programs under each allocator's C library through
//! `LD_PRELOAD` (glibc's malloc when nothing is preloaded): the real
//! programs python3 and sqlite3, and our own C program `idle-return`.
//! [`Program::prepare`] writes their inputs into the work directory
//! (`<out>/work`) and, for `idle-return`, compiles it there with `gcc`.
//!
//! A real program's stdout must equal the reference run's (glibc's), byte
//! for byte. `idle-return` instead prints the result line of the Rust
//! workloads ([`Program::reports`], [`super::protocol`]): its own time,
//! peak RSS and checksum, and the memory it kept after freeing everything.

use std::env;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A real program driven by a script the suite writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// CPython with `PYTHONMALLOC=malloc` (every object through malloc):
    /// dicts of strings and lists churned, with a JSON dump now and then.
    Python,
    /// sqlite3 on an in-memory database: bulk insert, an index, grouping
    /// and a self-join.
    Sqlite,
    /// `benches/c/idle_return.c` (issue 6): allocates `size` MiB of small
    /// and medium objects, frees them (half from a second thread) and
    /// reports what stays resident right after, after three idle seconds
    /// and after `malloc_trim(0)`.
    IdleReturn,
}

/// Every program workload, in table order.
pub const PROGRAMS: &[Program] = &[Program::Python, Program::Sqlite, Program::IdleReturn];

/// The source of the `idle-return` workload, compiled into the work
/// directory by [`Program::prepare`].
pub const IDLE_RETURN_C: &str = include_str!("../../../benches/c/idle_return.c");

/// The python workload; `sys.argv[1]` is the number of iterations.
const PYTHON_SCRIPT: &str = r#"import json, random, sys
random.seed(7)
live = {}
total = 0
for i in range(int(sys.argv[1])):
    k = random.randrange(50_000)
    live[k] = {"id": i, "name": "x" * random.randrange(1, 200), "tags": list(range(i % 20))}
    if i % 3 == 0:
        live.pop(random.randrange(50_000), None)
    if i % 1000 == 0:
        total += len(json.dumps(list(live.values())[:50]))
print(len(live), total)
"#;

impl Program {
    /// Its workload name (the table's row, `--filter`, `--size`).
    pub fn name(self) -> &'static str {
        match self {
            Program::Python => "python3",
            Program::Sqlite => "sqlite3",
            Program::IdleReturn => "idle-return",
        }
    }

    /// Its default size: python iterations, sqlite rows inserted, or
    /// idle-return's MiB allocated.
    pub fn default_size(self) -> u64 {
        match self {
            Program::Python => 300_000,
            Program::Sqlite => 100_000,
            Program::IdleReturn => 1200,
        }
    }

    /// Whether it prints the suite's result line (parsed and checked like a
    /// Rust workload's: its `elapsed_ns`, `peak_rss_kib` and checksum)
    /// rather than output that is compared whole and timed from outside.
    pub fn reports(self) -> bool {
        self == Program::IdleReturn
    }

    /// The executable [`Program::locate`] looks for: the program, or the C
    /// compiler that builds it.
    fn tool(self) -> &'static str {
        match self {
            Program::IdleReturn => "gcc",
            p => p.name(),
        }
    }

    /// The Debian package that installs [`Program::tool`].
    fn package(self) -> &'static str {
        match self {
            Program::Python => "python3",
            Program::Sqlite => "sqlite3",
            Program::IdleReturn => "gcc",
        }
    }

    /// The program's executable (for `idle-return`, the C compiler that
    /// builds it), or why it cannot be run. For python3 this is the
    /// interpreter itself (`sys.executable`), not a wrapper such as a pyenv
    /// shim, so that neither the wrapper's time nor its allocations are
    /// measured.
    pub fn locate(self) -> Result<PathBuf, String> {
        let found = find_in_path(self.tool()).ok_or_else(|| {
            format!(
                "`{}` is not on PATH (Debian package {pkg}: apt-get install {pkg})",
                self.tool(),
                pkg = self.package()
            )
        })?;
        match self {
            Program::Sqlite | Program::IdleReturn => Ok(found),
            Program::Python => {
                let out = Command::new(&found)
                    .args(["-c", "import sys; print(sys.executable)"])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("running {}: {e}", found.display()))?;
                let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() || exe.is_empty() {
                    return Err(format!("{} does not run", found.display()));
                }
                Ok(PathBuf::from(exe))
            }
        }
    }

    /// Writes the workload's input of `size` into `work` (for
    /// `idle-return`, compiles it there with `exe`, the C compiler) and
    /// returns the command that runs it (the caller adds `LD_PRELOAD`).
    pub fn prepare(self, exe: &Path, work: &Path, size: u64) -> io::Result<Prepared> {
        match self {
            Program::IdleReturn => {
                let source = work.join("idle_return.c");
                fs::write(&source, IDLE_RETURN_C)?;
                let binary = work.join("idle-return");
                compile(exe, &source, &binary)?;
                Ok(Prepared {
                    exe: binary,
                    args: vec![size.to_string()],
                    env: Vec::new(),
                    stdin: None,
                    // It reports its own VmHWM.
                    rss_file: None,
                })
            }
            Program::Python => {
                let script = work.join("alloc.py");
                fs::write(&script, PYTHON_SCRIPT)?;
                Ok(Prepared {
                    exe: exe.to_path_buf(),
                    args: vec![script.display().to_string(), size.to_string()],
                    env: vec![("PYTHONMALLOC", "malloc")],
                    stdin: None,
                    rss_file: rss_file(work),
                })
            }
            Program::Sqlite => {
                let sql = work.join(format!("work-{size}.sql"));
                fs::write(&sql, sqlite_script(size))?;
                Ok(Prepared {
                    exe: exe.to_path_buf(),
                    args: vec![":memory:".to_string()],
                    env: Vec::new(),
                    stdin: Some(sql),
                    rss_file: rss_file(work),
                })
            }
        }
    }
}

/// Compiles the C program `source` into `binary` with `cc` (optimised, with
/// warnings as errors: it is our own code).
fn compile(cc: &Path, source: &Path, binary: &Path) -> io::Result<()> {
    let out = Command::new(cc)
        .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-o"])
        .arg(binary)
        .arg(source)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} {} failed ({}):\n{}",
            cc.display(),
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    Ok(())
}

/// How to run one prepared program workload.
#[derive(Debug, Clone)]
pub struct Prepared {
    exe: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    /// A file fed to its stdin (`/dev/null` when `None`).
    stdin: Option<PathBuf>,
    /// Where GNU time writes the program's peak RSS, when `/usr/bin/time`
    /// exists (see [`TIME`]).
    rss_file: Option<PathBuf>,
}

/// GNU time, the launcher of the real programs when installed (Debian
/// package `time`).
///
/// Why a launcher: `wait4`'s `ru_maxrss` of a child counts the pages it
/// had before its `exec`, which a `fork` or `vfork` of the driver shares
/// with the driver (about 8 MiB of it by the end of a suite run, the same
/// for every allocator, so it flattens every ratio). GNU time is a new
/// process forked from a small one: its child's count starts from time's
/// own ~1 MiB, and `env` then sets `LD_PRELOAD` for the program alone.
pub const TIME: &str = "/usr/bin/time";

/// The file GNU time writes into under `work`, if GNU time is installed.
fn rss_file(work: &Path) -> Option<PathBuf> {
    Path::new(TIME)
        .exists()
        .then(|| work.join("peak-rss-kib.txt"))
}

/// The peak RSS in KiB that GNU time wrote to `file` (its last line), if
/// it is there.
pub fn read_peak_rss(file: &Path) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().last()?.trim().parse().ok()
}

impl Prepared {
    /// Where the program's peak RSS is written, when GNU time launches it.
    pub fn rss_file(&self) -> Option<&Path> {
        self.rss_file.as_deref()
    }

    /// A command for one run, with `preload` in `LD_PRELOAD` (none: glibc).
    pub fn command(&self, preload: Option<&Path>) -> io::Result<Command> {
        let mut cmd = match &self.rss_file {
            Some(file) => {
                let _ = fs::remove_file(file);
                let mut cmd = Command::new(TIME);
                cmd.args(["-f", "%M", "-o"]).arg(file).arg("env");
                if let Some(lib) = preload {
                    cmd.arg(format!("LD_PRELOAD={}", lib.display()));
                }
                cmd.arg(&self.exe);
                cmd
            }
            None => Command::new(&self.exe),
        };
        cmd.args(&self.args).env_remove("LD_PRELOAD");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let (Some(lib), None) = (preload, &self.rss_file) {
            cmd.env("LD_PRELOAD", lib);
        }
        match &self.stdin {
            Some(file) => cmd.stdin(File::open(file)?),
            None => cmd.stdin(Stdio::null()),
        };
        Ok(cmd)
    }
}

/// The sqlite3 workload with `rows` rows: inserts in one transaction, an
/// index, an aggregate, a group-by and a self-join. (The default is 100 000
/// rows, about 0.4 s, so that process start-up does not dominate.)
pub fn sqlite_script(rows: u64) -> String {
    let mut s = String::from(
        "PRAGMA journal_mode=OFF; CREATE TABLE t(a INTEGER, b TEXT, c REAL);\nBEGIN;\n",
    );
    for i in 1..=rows {
        let _ = writeln!(
            s,
            "INSERT INTO t VALUES({i}, 'row-{i}-{}', {i}.5);",
            i * 7919 % 1000
        );
    }
    s.push_str("COMMIT; CREATE INDEX ib ON t(b);\n");
    s.push_str("SELECT count(*), sum(a), max(length(b)) FROM t;\n");
    s.push_str("SELECT substr(b, 1, 6), count(*) FROM t GROUP BY 1 ORDER BY 2 DESC LIMIT 3;\n");
    s.push_str("SELECT count(*) FROM t x JOIN t y ON x.a = y.a + 1 WHERE x.b > y.b;\n");
    s
}

/// The first executable file called `name` in a directory of `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// FNV-1a (64-bit) of `bytes` as 16 hex digits: the checksum column of a
/// real program's run (a digest of its stdout).
pub fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A short account of how `got` differs from `want`: the first differing
/// line of each.
pub fn first_difference(want: &[u8], got: &[u8]) -> String {
    let want = String::from_utf8_lossy(want);
    let got = String::from_utf8_lossy(got);
    let (mut w, mut g) = (want.lines(), got.lines());
    for n in 1.. {
        match (w.next(), g.next()) {
            (None, None) => break,
            (a, b) if a == b => continue,
            (a, b) => {
                return format!(
                    "line {n}: expected {:?}, got {:?}",
                    a.unwrap_or("<end>"),
                    b.unwrap_or("<end>")
                );
            }
        }
    }
    "the same lines, different bytes (line endings?)".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_script_matches_the_shell_version() {
        let s = sqlite_script(3);
        let expected = "\
PRAGMA journal_mode=OFF; CREATE TABLE t(a INTEGER, b TEXT, c REAL);
BEGIN;
INSERT INTO t VALUES(1, 'row-1-919', 1.5);
INSERT INTO t VALUES(2, 'row-2-838', 2.5);
INSERT INTO t VALUES(3, 'row-3-757', 3.5);
COMMIT; CREATE INDEX ib ON t(b);
";
        assert!(s.starts_with(expected), "{s}");
        assert_eq!(s.lines().count(), 9);
    }

    #[test]
    fn digest_and_difference() {
        // FNV-1a test vectors.
        assert_eq!(digest(b""), "cbf29ce484222325");
        assert_eq!(digest(b"a"), "af63dc4c8601ec8c");
        assert_eq!(
            first_difference(b"1\n2\n3\n", b"1\n2\n4\n"),
            "line 3: expected \"3\", got \"4\""
        );
        assert_eq!(
            first_difference(b"1\n", b"1\n2\n"),
            "line 2: expected \"<end>\", got \"2\""
        );
    }

    #[test]
    fn names_are_distinct() {
        for (i, p) in PROGRAMS.iter().enumerate() {
            assert!(p.default_size() > 0);
            for q in &PROGRAMS[i + 1..] {
                assert_ne!(p.name(), q.name());
            }
        }
        assert_eq!(
            PROGRAMS.iter().filter(|p| p.reports()).collect::<Vec<_>>(),
            [&Program::IdleReturn]
        );
    }

    /// idle-return compiles and speaks the protocol (at 4 MiB, no idle
    /// time: its second argument, which the suite never passes).
    #[test]
    fn idle_return_compiles_and_reports() {
        let Ok(gcc) = Program::IdleReturn.locate() else {
            eprintln!("skipped: no gcc");
            return;
        };
        let work = env::temp_dir().join(format!("xtask-idle-return-{}", std::process::id()));
        fs::create_dir_all(&work).unwrap();
        let prepared = Program::IdleReturn.prepare(&gcc, &work, 4).unwrap();
        assert!(prepared.rss_file().is_none());
        let mut cmd = prepared.command(None).unwrap();
        let out = cmd.arg("0").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let report =
            super::super::protocol::parse_report(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(
            (report.workload.as_str(), report.threads, report.size),
            ("idle-return", 2, 4)
        );
        // About 4 MiB at 150-160 B an object.
        assert!((20_000..40_000).contains(&report.ops), "{report:?}");
        let retained = report.retained.unwrap();
        let peak = report.peak_rss_kib.unwrap();
        assert!(peak >= 4096, "{report:?}");
        assert!(
            retained.freed <= peak && retained.trim <= peak,
            "{report:?}"
        );
        // The same checksum again; another size, another checksum.
        let again = prepared.command(None).unwrap().arg("0").output().unwrap();
        let again =
            super::super::protocol::parse_report(&String::from_utf8_lossy(&again.stdout)).unwrap();
        assert_eq!(again.checksum, report.checksum);
        let other = Program::IdleReturn.prepare(&gcc, &work, 5).unwrap();
        let other = other.command(None).unwrap().arg("0").output().unwrap();
        let other =
            super::super::protocol::parse_report(&String::from_utf8_lossy(&other.stdout)).unwrap();
        assert_ne!(other.checksum, report.checksum);
        let _ = fs::remove_dir_all(&work);
    }
}
