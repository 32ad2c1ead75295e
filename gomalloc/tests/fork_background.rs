//! `fork` while gomalloc's background thread works (and another thread
//! allocates): every child must be able to allocate and free (no allocator
//! lock copied held), and gets a background thread of its own again.
//! gomalloc registers its fork handlers when it starts the thread.

#![cfg(target_os = "linux")]

use gomalloc::GoMalloc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: GoMalloc = GoMalloc;

/// Waits for `pid` for at most `limit`; its exit status, or `None` (then
/// it is killed).
fn wait_for(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: a valid out-pointer; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if start.elapsed() > limit {
            // SAFETY: our child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn fork_while_the_background_thread_works() {
    let mut o = gomalloc::options();
    // Every free page is released at once: the background thread and the
    // slow paths take the heap lock all the time.
    o.scavenge_delay_ms = Some(0);
    o.retain_min_bytes = 0;
    o.background_thread = true;
    gomalloc::set_options(o).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let big = vec![n as u8; 3 << 20];
                let small: Vec<Box<[u64; 40]>> = (0..2000).map(|i| Box::new([i; 40])).collect();
                n += big[12345] as u64 + small[7][3];
                drop(small);
                drop(big);
            }
            n
        })
    };
    let start = Instant::now();
    while !gomalloc::background_thread_running() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        gomalloc::background_thread_running(),
        "no background thread"
    );

    for round in 0..40 {
        // SAFETY: the child only allocates through gomalloc (whose fork
        // handlers leave every lock free), checks, and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut ok = true;
            for i in 0..200u64 {
                let v: Vec<u64> = (0..(i * 37 % 5000)).collect();
                ok &= v.iter().sum::<u64>()
                    == v.len() as u64 * (v.len() as u64).saturating_sub(1) / 2;
                let big = vec![7u8; 1 << 20];
                ok &= big[1 << 19] == 7;
            }
            // The child's own background thread starts again.
            let t = Instant::now();
            while !gomalloc::background_thread_running() && t.elapsed() < Duration::from_secs(2) {
                drop(vec![1u8; 2 << 20]);
                std::thread::sleep(Duration::from_millis(1));
            }
            ok &= gomalloc::background_thread_running();
            // SAFETY: leaves the child without running the parent's exit
            // handlers twice.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let status = wait_for(pid, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("child {round} hung (a lock copied held?)"));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child {round} failed: status {status:#x}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    churner.join().unwrap();
}
