//! `libgomalloc.so` under `LD_PRELOAD`: the project's own C and C++ programs
//! (`tests/c/`) and real programs (`python3`, `sqlite3`, `git`) run with
//! gomalloc as their `malloc`.
//!
//! - `stress.c`: threads, thread churn, mixed sizes up to 4 MiB, every
//!   allocation entry point, contents verified before every free; exits 0
//!   and prints `stress ok`.
//! - `fork.c`: forks while other threads allocate; every child must
//!   allocate, free and exit 0 within 10 s; prints `fork ok`.
//! - `badptr.c`: frees or reallocs pointers gomalloc never handed out; must
//!   die of `SIGABRT` with `gomalloc: fatal: ... invalid pointer` on stderr.
//! - `maps.cpp`, `python3`, `sqlite3`, `git`: the same output with and
//!   without `LD_PRELOAD`.
//! - `hardened.c` (only with this package's `hardened` feature, which
//!   builds the library with it): a double free (small and large), a write
//!   past a large block and a poisoned free-list link must each die of
//!   `SIGABRT` with the check's message; `malloc_usable_size` of a large
//!   block is its requested size.
//!
//! The library is this package's cdylib, `target/<profile>/libgomalloc.so`,
//! with the profile and target directory read from the test executable's
//! own path. Cargo does not build a `cdylib`-only library for integration
//! tests, so the first test to need it runs `cargo build -p gomalloc-capi
//! --lib` for that profile (with `--features hardened` when this test is
//! built with it; quick when it is up to date; it also keeps a stale
//! library from being tested). `GOMALLOC_PRELOAD_LIB=path` skips the build
//! and tests that library instead. Every program
//! runs under a time limit, so a deadlock fails the test instead of hanging
//! it. `sqlite3` is optional (the test says so and passes when it is not
//! installed), as are CPython's regression test modules.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one program may run before it counts as hung.
const TIMEOUT: Duration = Duration::from_secs(60);

/// CPython's regression tests take longer (and the debug build of gomalloc
/// is slow).
const REGRTEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Building the library from scratch (the release profile included).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------
// Finding the library and building the test programs

/// The absolute path of `libgomalloc.so`.
fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(find_lib)
}

/// Builds the cdylib (cargo does not build a `cdylib`-only library for
/// integration tests, and a leftover one may be stale) with the profile and
/// into the target directory of this test executable,
/// `<target>/<profile>/deps/preload-<hash>`, and returns
/// `<target>/<profile>/libgomalloc.so`.
fn find_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("GOMALLOC_PRELOAD_LIB") {
        let p = PathBuf::from(p);
        return p.canonicalize().unwrap_or_else(|e| {
            panic!("GOMALLOC_PRELOAD_LIB={}: {e}", p.display());
        });
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    let profile_dir = deps.parent().expect("the target profile directory");
    let target_dir = profile_dir.parent().expect("the target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("no profile directory above {}", exe.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--quiet", "--package", "gomalloc-capi", "--lib"])
        .args(["--profile", profile])
        .args(if cfg!(feature = "hardened") {
            &["--features", "hardened"][..]
        } else {
            &[]
        })
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("LD_PRELOAD");
    let built = run_with(
        "cargo build -p gomalloc-capi",
        build,
        Malloc::System,
        None,
        BUILD_TIMEOUT,
    );
    built.assert_ok();
    let so = profile_dir.join("libgomalloc.so");
    assert!(
        so.is_file(),
        "`cargo build -p gomalloc-capi --profile {profile} --target-dir {}` succeeded but left \
         no {} (is the crate still `crate-type = [\"cdylib\"]` with the library name \
         `gomalloc`?); GOMALLOC_PRELOAD_LIB can point at the library instead",
        target_dir.display(),
        so.display()
    );
    so.canonicalize().expect("canonical path of libgomalloc.so")
}

/// Compiles `tests/c/<source>` (once per test process) and returns the
/// executable.
fn program(source: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(source) {
        return p.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(source);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("preload");
    std::fs::create_dir_all(&dir).expect("create the build directory");
    let stem = Path::new(source).file_stem().unwrap().to_str().unwrap();
    let exe = dir.join(stem);
    let mut cmd = if source.ends_with(".cpp") {
        let mut c = Command::new("c++");
        c.arg("-std=c++17");
        c
    } else {
        let mut c = Command::new("cc");
        c.arg("-std=c11");
        c
    };
    cmd.args(["-O2", "-g", "-pthread", "-Wall", "-Wextra", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-ldl");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C/C++ compiler for {source} ({cmd:?}): {e}"));
    assert!(
        out.status.success(),
        "compiling {source} failed ({cmd:?}):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    built.insert(source.to_owned(), exe.clone());
    exe
}

/// A fresh, empty directory under the target's temporary directory.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("preload-scratch")
        .join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear the scratch directory");
    }
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// Whether `name` can be started from `PATH` (it is asked for its version).
fn installed(name: &str) -> bool {
    match Command::new(name)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("cannot start {name}: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Running programs under a time limit

/// What a finished program left behind.
struct Run {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Everything about the run, for a failure message.
    fn describe(&self) -> String {
        format!(
            "{}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }

    /// Panics unless the program exited with status 0.
    fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "{} failed\n{}",
            self.what,
            self.describe()
        );
        self
    }
}

/// The last few KiB of `s`.
fn tail(s: &str) -> &str {
    const KEEP: usize = 8192;
    if s.len() <= KEEP {
        return s;
    }
    let mut start = s.len() - KEEP;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Whether a program runs with gomalloc preloaded or on the system malloc.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Malloc {
    System,
    Gomalloc,
}

/// Runs `cmd` (with `input` on its stdin) under `malloc`, killing its whole
/// process group if it runs longer than `timeout`.
fn run_with(
    what: &str,
    mut cmd: Command,
    malloc: Malloc,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Run {
    let what = format!("{what} [{malloc:?}]");
    cmd.env_remove("LD_PRELOAD");
    if malloc == Malloc::Gomalloc {
        cmd.env("LD_PRELOAD", lib());
    }
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setrlimit, which is async-signal-safe and does not allocate.
    unsafe {
        cmd.pre_exec(|| {
            // no core files from the programs that are meant to abort
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let writer = input.map(|bytes| {
        let mut stdin = child.stdin.take().expect("piped stdin");
        thread::spawn(move || {
            // the program may stop reading early; its exit status tells
            let _ = stdin.write_all(&bytes);
        })
    });
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > timeout => {
                timed_out = true;
                // SAFETY: kill has no memory-safety preconditions; -pid is
                // the process group the child leads (process_group(0)).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                break child.wait().expect("wait for the killed child");
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{what}: wait: {e}"),
        }
    };
    // anything the program started and left behind goes too, so the pipes
    // close
    // SAFETY: as above; the group may already be gone (ESRCH), which is fine.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let run = Run {
        what,
        status,
        stdout: String::from_utf8_lossy(&out.join().expect("stdout reader")).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned(),
    };
    assert!(
        !timed_out,
        "{} ran longer than {} s and was killed (a deadlock?)\n{}",
        run.what,
        timeout.as_secs(),
        run.describe()
    );
    if malloc == Malloc::Gomalloc {
        assert!(
            !run.stderr.contains("cannot be preloaded"),
            "the dynamic loader refused {}\n{}",
            lib().display(),
            run.describe()
        );
    }
    run
}

/// [`run_with`] with no input and the default time limit.
fn run(what: &str, cmd: Command, malloc: Malloc) -> Run {
    run_with(what, cmd, malloc, None, TIMEOUT)
}

/// Asks the dynamic loader which objects `program` would load under
/// `LD_PRELOAD` (`LD_TRACE_LOADED_OBJECTS`, what `ldd` does): a static or
/// set-user-ID program would ignore the preload and compare equal vacuously.
fn assert_preloads(program: &std::ffi::OsStr) {
    let out = Command::new(program)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .env("LD_PRELOAD", lib())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.to_string_lossy()));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(lib().to_str().expect("a UTF-8 library path")),
        "{} would not load {} under LD_PRELOAD; the loader says:\n{listing}{}",
        program.to_string_lossy(),
        lib().display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the command `make()` builds once on the system malloc and once on
/// gomalloc; both must succeed with the same stdout, which is returned.
fn same_output(what: &str, make: impl Fn() -> Command, input: Option<Vec<u8>>) -> String {
    assert_preloads(make().get_program());
    let system = run_with(what, make(), Malloc::System, input.clone(), TIMEOUT);
    system.assert_ok();
    let ours = run_with(what, make(), Malloc::Gomalloc, input, TIMEOUT);
    ours.assert_ok();
    assert!(
        ours.stdout == system.stdout,
        "{what}: the output differs under gomalloc\n{}\n=== on the system malloc ===\n{}",
        ours.describe(),
        system.describe()
    );
    ours.stdout
}

// ---------------------------------------------------------------------------
// The project's own C and C++ programs

fn c_program(source: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program(source));
    cmd.args(args)
        .current_dir(Path::new(env!("CARGO_TARGET_TMPDIR")))
        .env("EXPECT_MALLOC_FROM", "libgomalloc");
    cmd
}

fn stress(args: &[&str]) {
    let mut cmd = c_program("stress.c", args);
    cmd.env("STRESS_REQUIRE_FREE_SIZED", "1");
    let r = run(&format!("stress {}", args.join(" ")), cmd, Malloc::Gomalloc);
    r.assert_ok();
    assert_eq!(r.stdout, "stress ok\n", "{}", r.describe());
    // stress calls malloc_stats(), which must print something to stderr
    assert!(
        !r.stderr.trim().is_empty(),
        "malloc_stats() printed nothing\n{}",
        r.describe()
    );
    assert!(!r.stderr.contains("FAIL"), "{}", r.describe());
}

/// 4 threads, 4 generations of them, 30000 operations per thread.
#[test]
fn stress_c() {
    stress(&["4", "4", "30000"]);
}

/// Many short-lived threads: 16 at a time, 6 generations.
#[test]
fn stress_c_thread_churn() {
    stress(&["16", "6", "2000"]);
}

#[test]
fn fork_while_threads_allocate() {
    let r = run("fork", c_program("fork.c", &["50", "4"]), Malloc::Gomalloc);
    r.assert_ok();
    assert_eq!(r.stdout, "fork ok\n", "{}", r.describe());
}

/// `badptr MODE` must abort with gomalloc's message.
fn bad_pointer(mode: &str) {
    let r = run(
        &format!("badptr {mode}"),
        c_program("badptr.c", &[mode]),
        Malloc::Gomalloc,
    );
    assert!(
        !r.stdout.contains("survived"),
        "gomalloc accepted the bad pointer\n{}",
        r.describe()
    );
    assert_eq!(
        r.status.signal(),
        Some(libc::SIGABRT),
        "expected death by SIGABRT\n{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("gomalloc: fatal:") && r.stderr.contains("invalid pointer"),
        "stderr lacks \"gomalloc: fatal:\" / \"invalid pointer\"\n{}",
        r.describe()
    );
}

#[test]
fn bad_pointer_stack() {
    bad_pointer("stack");
}

#[test]
fn bad_pointer_interior() {
    bad_pointer("interior");
}

#[test]
fn bad_pointer_foreign_mmap() {
    bad_pointer("foreign");
}

#[test]
fn bad_pointer_realloc_stack() {
    bad_pointer("realloc");
}

#[test]
fn bad_pointer_large_interior() {
    bad_pointer("large_interior");
}

#[test]
fn bad_pointer_realloc_interior() {
    bad_pointer("realloc_interior");
}

#[test]
fn cxx_maps_same_output() {
    let out = same_output(
        "maps",
        || {
            let mut cmd = Command::new(program("maps.cpp"));
            cmd.arg("3");
            cmd
        },
        None,
    );
    assert_eq!(out.lines().count(), 13, "unexpected output:\n{out}");
    assert!(out.contains("maps total "), "unexpected output:\n{out}");
}

// ---------------------------------------------------------------------------
// Real programs

/// The real `python3` interpreter (not a wrapper script such as a pyenv
/// shim, which would run under `LD_PRELOAD` too).
fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .env_remove("LD_PRELOAD")
            .output()
            .unwrap_or_else(|e| panic!("python3 is needed for these tests: {e}"));
        assert!(out.status.success(), "python3 -c failed: {out:?}");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

fn python_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.args(args)
        .env("PYTHONMALLOC", "malloc")
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONSTARTUP")
        .current_dir(Path::new(env!("CARGO_TARGET_TMPDIR")));
    cmd
}

/// Dicts, lists, strings, big integers, JSON, regular expressions,
/// compression, reference cycles and threads, with every object from
/// `malloc` (`PYTHONMALLOC=malloc`).
const PYTHON_WORKLOAD: &str = r#"
import collections, gc, hashlib, json, math, re, threading, zlib
from fractions import Fraction

def rng(seed):
    x = seed
    while True:
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        yield x >> 17

out = []
r = rng(1)
d = {}
for i in range(150000):
    k = "k%d" % (next(r) % 40000)
    d.setdefault(k, []).append(str(i) * (i % 9))
out.append(("dict", len(d), sum(len(v) for v in d.values())))

text = json.dumps(d, sort_keys=True)
back = json.loads(text)
assert back == d
out.append(("json", len(text), hashlib.sha256(text.encode()).hexdigest()))

words = re.findall(r"\d{3}", text)
c = collections.Counter(words)
out.append(("re", len(words), c.most_common(3)))

big = [next(r) ** 7 for _ in range(20000)]
big.sort()
out.append(("bigint", hashlib.sha256(repr(big[::997]).encode()).hexdigest(),
            math.factorial(3000).bit_length()))
out.append(("fraction", str(sum(Fraction(1, k) for k in range(1, 400)))[:40]))

blob = "".join(str(x) for x in big).encode() * 3
z = zlib.compress(blob, 6)
assert zlib.decompress(z) == blob
out.append(("zlib", len(blob)))

class Node:
    def __init__(self, v):
        self.v = v
        self.next = None
        self.data = [v] * (v % 13)

nodes = [Node(i) for i in range(60000)]
for a, b in zip(nodes, nodes[1:] + nodes[:1]):
    a.next = b  # one big cycle
total = sum(n.v for n in nodes)
del nodes, a, b
gc.collect()
out.append(("cycle", total))

results = [None] * 4
shared = collections.deque()
lock = threading.Lock()

def work(t):
    g = rng(100 + t)
    local = []
    for i in range(40000):
        s = "t%d-%d-%s" % (t, i, "x" * (next(g) % 100))
        local.append(s)
        if i % 3 == 0:
            with lock:
                shared.append(s)  # freed by whichever thread pops it
        if i % 5 == 0:
            with lock:
                if shared:
                    shared.popleft()
    results[t] = hashlib.sha256("".join(sorted(local)).encode()).hexdigest()

threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
out.append(("threads", results))  # len(shared) depends on timing

ba = bytearray()
for i in range(20000):
    ba += bytes([i % 256]) * (i % 50)
out.append(("bytearray", len(ba), hashlib.md5(ba).hexdigest()))

s = set(range(0, 300000, 3)) ^ set(range(0, 300000, 5))
out.append(("set", len(s), sum(s) % 1000003))

for line in out:
    print(line)
print("python ok")
"#;

#[test]
fn python_same_output() {
    let out = same_output(
        "python3 workload",
        || python_cmd(&["-c", PYTHON_WORKLOAD]),
        None,
    );
    assert!(out.ends_with("python ok\n"), "unexpected output:\n{out}");
    assert!(out.lines().count() > 10, "unexpected output:\n{out}");

    // and the preloaded interpreter really has gomalloc mapped
    let check = "print(any('libgomalloc' in l for l in open('/proc/self/maps')))";
    let r = run(
        "python3 maps check",
        python_cmd(&["-c", check]),
        Malloc::Gomalloc,
    );
    r.assert_ok();
    assert_eq!(r.stdout, "True\n", "{}", r.describe());
}

/// CPython's own regression test modules (where the interpreter ships them).
#[test]
fn python_regrtest() {
    const MODULES: &[&str] = &[
        "test_dict",
        "test_list",
        "test_set",
        "test_deque",
        "test_sort",
        "test_json",
        "test_re",
        "test_collections",
        "test_bytes",
        "test_unicode",
        "test_str",
        "test_weakref",
        "test_itertools",
    ];
    let mut present = Vec::new();
    for m in MODULES {
        let probe = Command::new(python())
            .args(["-c", &format!("import test.{m}")])
            .env_remove("LD_PRELOAD")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run python3");
        if probe.success() {
            present.push(*m);
        }
    }
    if present.is_empty() {
        println!(
            "NOTICE: {} ships none of CPython's regression test modules \
             (Debian: libpython3.X-testsuite); skipping",
            python().display()
        );
        return;
    }
    let make = || {
        let mut args = vec!["-m", "test"];
        args.extend(&present);
        python_cmd(&args)
    };
    let summary = |r: &Run| -> Vec<String> {
        r.stdout
            .lines()
            .filter(|l| l.starts_with("Total tests:") || l.contains("tests OK"))
            .map(str::to_owned)
            .collect()
    };
    // the two runs take a while: side by side
    let (system, ours) = thread::scope(|s| {
        let system = s.spawn(|| {
            run_with(
                "python3 -m test",
                make(),
                Malloc::System,
                None,
                REGRTEST_TIMEOUT,
            )
        });
        let ours = run_with(
            "python3 -m test",
            make(),
            Malloc::Gomalloc,
            None,
            REGRTEST_TIMEOUT,
        );
        (system.join().expect("the system-malloc run"), ours)
    });
    system.assert_ok();
    ours.assert_ok();
    assert!(
        ours.stdout.contains("SUCCESS"),
        "regrtest did not report SUCCESS\n{}",
        ours.describe()
    );
    assert!(
        !summary(&ours).is_empty(),
        "no summary\n{}",
        ours.describe()
    );
    assert_eq!(
        summary(&ours),
        summary(&system),
        "regrtest results differ under gomalloc\n{}\n=== on the system malloc ===\n{}",
        ours.describe(),
        system.describe()
    );
}

/// A generated SQL workload: bulk inserts, indexes, joins, aggregates,
/// updates, deletes, JSON, blobs and a `VACUUM`.
fn sql_workload() -> String {
    let mut sql = String::from(
        "PRAGMA cache_size = -32000;\n\
         CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c REAL);\n\
         CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB);\n\
         BEGIN;\n",
    );
    sql.push_str(
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 120000)\n\
         INSERT INTO t SELECT i, (i * 7919) % 1000,\n\
           printf('name-%08d-%s', (i * 104729) % 1000003, substr('abcdefghijklmnopqrstuvwxyz', 1 + i % 26)),\n\
           i * 0.25 FROM r;\n",
    );
    // many small statements too, each parsed and prepared on its own
    for i in 0..3000u64 {
        let v = i.wrapping_mul(2654435761) % 100_000;
        let _ = writeln!(
            sql,
            "INSERT INTO blobs(data) VALUES (zeroblob({}) || x'{:02x}{:02x}');",
            v % 5000,
            i % 256,
            v % 256
        );
        if i % 100 == 0 {
            let _ = writeln!(sql, "UPDATE t SET c = c + {i} WHERE a = {};", i % 1000);
        }
    }
    sql.push_str(
        "COMMIT;\n\
         CREATE INDEX t_a ON t(a);\n\
         CREATE INDEX t_b ON t(b);\n\
         SELECT count(*), sum(a), total(c), max(b), min(b) FROM t;\n\
         CREATE TABLE u AS SELECT a, count(*) AS n, sum(c) AS s, max(length(b)) AS m FROM t GROUP BY a;\n\
         SELECT count(*), sum(n), total(s) FROM u;\n\
         SELECT count(*), total(t.c) FROM t JOIN u USING (a) WHERE u.n > 110 AND t.b LIKE 'name-00%';\n\
         SELECT a, n, printf('%.2f', s) FROM u ORDER BY s DESC, a LIMIT 5;\n\
         UPDATE t SET b = b || '-' || hex(a) WHERE id % 3 = 0;\n\
         DELETE FROM t WHERE id % 5 = 0;\n\
         SELECT count(*), sum(length(b)) FROM t;\n\
         SELECT b FROM t ORDER BY b DESC LIMIT 5;\n\
         SELECT length(group_concat(b, ',')) FROM t;\n\
         SELECT length(json_group_array(json_object('id', id, 'b', b))) FROM t WHERE id < 20000;\n\
         SELECT count(*), sum(length(data)), hex(max(data)) FROM blobs;\n\
         SELECT count(DISTINCT substr(b, 6, 3)) FROM t;\n\
         WITH w AS (SELECT a, b, row_number() OVER (PARTITION BY a ORDER BY b) AS rn FROM t)\n\
           SELECT count(*), sum(rn) FROM w WHERE rn <= 3;\n\
         DROP INDEX t_b;\n\
         VACUUM;\n\
         PRAGMA integrity_check;\n\
         SELECT 'sqlite ok';\n",
    );
    sql
}

#[test]
fn sqlite3_same_output() {
    if !installed("sqlite3") {
        println!("NOTICE: sqlite3 is not installed; skipping the sqlite3 workload");
        return;
    }
    let dir = scratch_dir("sqlite3");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let out = same_output(
        "sqlite3",
        || {
            // a fresh database file for each run
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut cmd = Command::new("sqlite3");
            cmd.arg("-bail").arg(dir.join(format!("db{n}.sqlite")));
            cmd
        },
        Some(sql_workload().into_bytes()),
    );
    assert!(
        out.contains("\nok\n"),
        "integrity_check did not say ok:\n{out}"
    );
    assert!(out.ends_with("sqlite ok\n"), "unexpected output:\n{out}");
}

/// Deterministic text for the git repository's files.
fn file_text(seed: u64, lines: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut s = String::new();
    for i in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = writeln!(
            s,
            "line {i}: {:016x} {}",
            x,
            "word ".repeat((x % 12) as usize)
        );
    }
    s
}

/// `git init`, eight commits over forty files, then `git log --stat`,
/// `git diff`, `git blame`, `git grep`, `git gc` (which runs `pack-objects`
/// and `repack`, themselves under `LD_PRELOAD`) and `git fsck`; returns the
/// transcript of everything printed to stdout.
fn git_session(malloc: Malloc, dir: &Path) -> String {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut transcript = String::new();
    let mut date = 1_600_000_000u64;
    let mut git = |args: &[&str], date: u64| {
        let mut cmd = Command::new("git");
        cmd.args([
            "-c",
            "gc.auto=0",
            "-c",
            "core.pager=cat",
            "-c",
            "color.ui=never",
        ])
        .args(args)
        .current_dir(&repo)
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Gomalloc Test")
        .env("GIT_AUTHOR_EMAIL", "test@gomalloc.invalid")
        .env("GIT_COMMITTER_NAME", "Gomalloc Test")
        .env("GIT_COMMITTER_EMAIL", "test@gomalloc.invalid")
        .env("GIT_AUTHOR_DATE", format!("@{date} +0000"))
        .env("GIT_COMMITTER_DATE", format!("@{date} +0000"))
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES");
        let r = run(&format!("git {}", args.join(" ")), cmd, malloc);
        r.assert_ok();
        let _ = writeln!(transcript, "$ git {}\n{}", args.join(" "), r.stdout);
    };
    git(&["init", "-q"], date);
    git(&["checkout", "-q", "-b", "main"], date);
    for commit in 0..8u64 {
        for f in 0..40u64 {
            // each commit rewrites some files, appends to others, adds new ones
            if (f + commit) % 3 == 0 || commit == 0 || f >= 40 - commit * 2 {
                let path = repo.join(format!("dir{}/file{f}.txt", f % 4));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let lines = 50 + ((f * 37 + commit * 11) % 400) as usize;
                let mut text = file_text(f * 1000 + commit, lines);
                if commit > 0 && f % 2 == 0 {
                    // keep a common prefix so deltas and blame have work
                    text = file_text(f * 1000, lines / 2) + &text;
                }
                std::fs::write(&path, text).unwrap();
            }
        }
        if commit == 5 {
            std::fs::remove_file(repo.join("dir1/file1.txt")).unwrap();
        }
        date += 3600;
        git(&["add", "-A"], date);
        git(&["commit", "-q", "-m", &format!("commit {commit}")], date);
        if commit == 3 {
            git(&["tag", "-a", "v1", "-m", "version 1"], date);
        }
    }
    git(&["log", "--stat"], date);
    git(&["diff", "--stat", "v1", "HEAD"], date);
    git(&["diff", "HEAD~2", "HEAD", "--", "dir2"], date);
    git(&["blame", "dir0/file0.txt"], date);
    git(&["grep", "-c", "word word word"], date);
    git(&["gc", "-q", "--aggressive", "--prune=now"], date);
    git(&["fsck", "--full", "--strict"], date);
    git(&["rev-list", "--objects", "--all"], date);
    git(&["log", "--oneline", "--decorate", "--graph"], date);
    git(&["ls-tree", "-r", "-l", "HEAD"], date);
    transcript
}

#[test]
fn git_same_output() {
    if !installed("git") {
        panic!("git is needed for this test (install it in CI)");
    }
    let system = git_session(Malloc::System, &scratch_dir("git-system"));
    let ours = git_session(Malloc::Gomalloc, &scratch_dir("git-gomalloc"));
    assert!(
        system.contains("commit 7") && system.contains("dir0/file0.txt"),
        "unexpected git output:\n{}",
        tail(&system)
    );
    if ours != system {
        let (a, b): (Vec<_>, Vec<_>) = (ours.lines().collect(), system.lines().collect());
        let first = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "git output differs under gomalloc at line {first}:\n  gomalloc: {:?}\n  system:   {:?}",
            a.get(first),
            b.get(first)
        );
    }
}

/// `hardened MODE` (library built with the `hardened` feature) must abort
/// with `message` after its set-up.
///
/// Without gomalloc's background thread: its start, on the first large
/// free, allocates a block that can take the pages just freed, at the same
/// address, and a second free of an address that was handed out again is
/// a valid free of the new block as far as any allocator can tell.
#[cfg(feature = "hardened")]
fn hardened_abort(mode: &str, message: &str) {
    let mut cmd = c_program("hardened.c", &[mode]);
    cmd.env("GOMALLOC_BACKGROUND_THREAD", "0");
    let r = run(&format!("hardened {mode}"), cmd, Malloc::Gomalloc);
    assert!(
        r.stdout.contains("hardened: misusing now"),
        "the program did not reach its bad operation\n{}",
        r.describe()
    );
    assert!(
        !r.stdout.contains("survived"),
        "gomalloc did not stop the misuse\n{}",
        r.describe()
    );
    assert_eq!(
        r.status.signal(),
        Some(libc::SIGABRT),
        "expected death by SIGABRT\n{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("gomalloc: fatal:") && r.stderr.contains(message),
        "stderr lacks \"gomalloc: fatal:\" / {message:?}\n{}",
        r.describe()
    );
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_double_free() {
    hardened_abort("double_free", "double free");
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_double_free_large() {
    hardened_abort("double_free_large", "double free");
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_large_overflow() {
    hardened_abort("large_overflow", "heap overflow past a large object");
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_corrupt_link() {
    hardened_abort("corrupt_link", "corrupted free list");
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_usable_size_is_the_requested_size() {
    let r = run(
        "hardened usable",
        c_program("hardened.c", &["usable"]),
        Malloc::Gomalloc,
    );
    r.assert_ok();
    assert_eq!(
        r.stdout,
        "hardened: usable\nhardened: usable ok\n",
        "{}",
        r.describe()
    );
}
