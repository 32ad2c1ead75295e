//! The `hardened` feature's detections, each proven in a child process.
//!
//! Every misuse test re-runs this test binary (`current_exe`) with only the
//! `scenario_child` test selected and the scenario named in
//! `GOMALLOC_HARDENED_SCENARIO`. The child allocates a few objects through
//! `GoMalloc` (called directly: this binary's global allocator stays the
//! system's, so nothing else touches gomalloc's heap in the child and the
//! scenario is deterministic), fills them with patterns and verifies them,
//! prints [`MARKER`], does the one bad operation, and prints `survived` if
//! it was not stopped. The parent asserts that the child died of `SIGABRT`,
//! that stderr holds `gomalloc: fatal:` and the message of that check, and
//! that the marker was printed and `survived` was not (so the abort came
//! from the bad operation, not from the set-up).
//!
//! Run with `cargo test -p gomalloc --features hardened --target-dir
//! target/hardened --test hardened`.

#![cfg(feature = "hardened")]

use gomalloc::GoMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

/// The environment variable that names the child's scenario.
const SCENARIO: &str = "GOMALLOC_HARDENED_SCENARIO";

/// What a child prints once its objects are set up and verified, right
/// before the bad operation.
const MARKER: &str = "hardened-scenario: set up and verified, misusing now";

/// What a child prints if the bad operation returned.
const SURVIVED: &str = "hardened-scenario: survived";

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("valid layout")
}

/// The byte at `i` of the pattern of object `k`.
fn pattern(k: usize, i: usize) -> u8 {
    (k.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8
}

/// Allocates `n` objects of `l` through `GoMalloc`, fills each with its
/// pattern and verifies them all.
fn patterned(l: Layout, n: usize) -> Vec<*mut u8> {
    let objs: Vec<*mut u8> = (0..n)
        .map(|k| {
            // SAFETY: non-zero size.
            let p = unsafe { GoMalloc.alloc(l) };
            assert!(!p.is_null(), "allocation {k} of {l:?} failed");
            for i in 0..l.size() {
                // SAFETY: `p` is a live block of `l.size()` bytes.
                unsafe { p.add(i).write(pattern(k, i)) };
            }
            p
        })
        .collect();
    for (k, &p) in objs.iter().enumerate() {
        for i in 0..l.size() {
            // SAFETY: as above.
            let b = unsafe { p.add(i).read() };
            assert_eq!(b, pattern(k, i), "object {k} byte {i}");
        }
    }
    objs
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// Runs scenario `name` (in the child).
fn run_scenario(name: &str) {
    let a = GoMalloc;
    // SAFETY: every operation before the marker is a valid use of live
    // blocks; the one after it is the misuse under test, which the
    // allocator must stop before it does harm.
    unsafe {
        match name {
            "double_free_small" => {
                let l = layout(64);
                let objs = patterned(l, 16);
                a.dealloc(objs[5], l);
                say(MARKER);
                a.dealloc(objs[5], l);
            }
            "double_free_large" => {
                let l = layout(100_000);
                let objs = patterned(l, 4);
                a.dealloc(objs[1], l);
                say(MARKER);
                a.dealloc(objs[1], l);
            }
            "interior_pointer" => {
                let l = layout(96);
                let objs = patterned(l, 8);
                say(MARKER);
                a.dealloc(objs[3].add(16), l);
            }
            "wrong_layout_class" => {
                let objs = patterned(layout(64), 8);
                say(MARKER);
                a.dealloc(objs[2], layout(128));
            }
            "large_overflow" => {
                let l = layout(100_000);
                let objs = patterned(l, 4);
                say(MARKER);
                // One byte past the end, changed (an off-by-one write).
                let past = objs[2].add(l.size());
                past.write(!past.read());
                a.dealloc(objs[2], l);
            }
            "large_overflow_realloc" => {
                let l = layout(100_000);
                let objs = patterned(l, 4);
                say(MARKER);
                let past = objs[0].add(l.size());
                past.write(!past.read());
                let q = a.realloc(objs[0], l, 300_000);
                say(&format!("realloc returned {q:p}"));
            }
            "corrupt_link" => {
                let l = layout(256);
                let objs = patterned(l, 8);
                // The freed object heads the cache's free list...
                a.dealloc(objs[7], l);
                say(MARKER);
                // ...and a use after free points its link at a live object
                // (classic free-list poisoning: the next allocations would
                // hand `objs[0]` out a second time).
                objs[7].cast::<usize>().write(objs[0] as usize);
                let p = a.alloc(l);
                let q = a.alloc(l);
                say(&format!("allocated {p:p} and {q:p}"));
            }
            "corrupt_stash_link" => {
                // 64 objects of 512 bytes fill four spans; the first one's
                // object is not in the current span, so its free goes to
                // the cache's stash (objects of any span, checked with the
                // alignment and address-range test only).
                let l = layout(512);
                let objs = patterned(l, 64);
                a.dealloc(objs[0], l);
                say(MARKER);
                objs[0].cast::<usize>().write(objs[1] as usize);
                let p = a.alloc(l);
                let q = a.alloc(l);
                say(&format!("allocated {p:p} and {q:p}"));
            }
            other => panic!("unknown scenario {other}"),
        }
    }
    say(SURVIVED);
}

/// The child: runs the scenario named in the environment, if any (in a
/// normal test run it has nothing to do).
#[test]
fn scenario_child() {
    if let Ok(name) = std::env::var(SCENARIO) {
        run_scenario(&name);
    }
}

/// Runs scenario `name` in a child and asserts it died of `SIGABRT` with
/// `message` on stderr, after its set-up.
fn expect_abort(name: &str, message: &str) {
    let exe = std::env::current_exe().expect("the test executable");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "scenario_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(SCENARIO, name)
    .env("RUST_BACKTRACE", "0");
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setrlimit, which is async-signal-safe and does not allocate.
    unsafe {
        cmd.pre_exec(|| {
            // No core files from a child that is meant to abort.
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    let out = cmd.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let describe = format!(
        "scenario {name}: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(MARKER),
        "the child did not reach its bad operation\n{describe}"
    );
    assert!(
        !stdout.contains(SURVIVED),
        "the bad operation was not stopped\n{describe}"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "expected death by SIGABRT\n{describe}"
    );
    assert!(
        stderr.contains("gomalloc: fatal: ") && stderr.contains(message),
        "stderr lacks \"gomalloc: fatal: \" and {message:?}\n{describe}"
    );
}

#[test]
fn double_free_of_a_small_object_aborts() {
    expect_abort("double_free_small", "double free");
}

#[test]
fn double_free_of_a_large_object_aborts() {
    expect_abort("double_free_large", "double free");
}

#[test]
fn dealloc_of_an_interior_pointer_aborts() {
    expect_abort("interior_pointer", "not at its start");
}

#[test]
fn dealloc_with_a_layout_of_another_class_aborts() {
    expect_abort("wrong_layout_class", "layout of another size class");
}

#[test]
fn a_write_past_a_large_object_is_caught_at_dealloc() {
    expect_abort("large_overflow", "heap overflow past a large object");
}

#[test]
fn a_write_past_a_large_object_is_caught_at_realloc() {
    expect_abort(
        "large_overflow_realloc",
        "heap overflow past a large object",
    );
}

#[test]
fn a_corrupted_free_list_link_is_caught_before_it_is_followed() {
    expect_abort("corrupt_link", "corrupted free list");
}

#[test]
fn a_corrupted_stash_link_is_caught_before_it_is_followed() {
    expect_abort("corrupt_stash_link", "corrupted free list");
}

/// The checks do not get in the way of correct use: every size class and a
/// few large sizes, 8-byte requests included, allocated, patterned, grown
/// and shrunk by `realloc` across classes and in place, verified and freed,
/// twice over so that every object is re-used (its tag cleared on the way).
#[test]
fn correct_use_passes_every_check() {
    let a = GoMalloc;
    let mut sizes: Vec<usize> = (1..=64).collect();
    sizes.extend((1..40).map(|i| i * 97 + 60));
    sizes.extend([4095, 4096, 8192, 32 << 10, (32 << 10) + 1, 100_000, 1 << 20]);
    for round in 0..2 {
        let mut live: Vec<(*mut u8, Layout, usize)> = Vec::new();
        for (k, &size) in sizes.iter().enumerate() {
            let l = layout(size);
            // SAFETY: non-zero size; every write stays inside the block.
            unsafe {
                let p = if k % 3 == 0 {
                    a.alloc_zeroed(l)
                } else {
                    a.alloc(l)
                };
                assert!(!p.is_null());
                for i in 0..size {
                    p.add(i).write(pattern(k + round, i));
                }
                live.push((p, l, k + round));
            }
        }
        for (p, l, k) in &mut live {
            let new_size = if l.size() % 2 == 0 {
                l.size() * 3 + 5
            } else {
                l.size() / 2 + 1
            };
            // SAFETY: `p` is live with layout `l`; the new block holds the
            // first `min(old, new)` bytes.
            unsafe {
                let q = a.realloc(*p, *l, new_size);
                assert!(!q.is_null());
                let keep = l.size().min(new_size);
                for i in 0..keep {
                    assert_eq!(
                        q.add(i).read(),
                        pattern(*k, i),
                        "size {} byte {i}",
                        l.size()
                    );
                }
                for i in keep..new_size {
                    q.add(i).write(pattern(*k, i));
                }
                *p = q;
                *l = layout(new_size);
            }
        }
        for (p, l, k) in live {
            // SAFETY: live blocks with their current layouts.
            unsafe {
                for i in 0..l.size() {
                    assert_eq!(p.add(i).read(), pattern(k, i));
                }
                a.dealloc(p, l);
            }
        }
    }
}
