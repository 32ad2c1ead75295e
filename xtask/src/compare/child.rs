//! Runs one child process and measures it: wall time from spawn to exit and
//! the child's own peak RSS.
//!
//! The peak RSS comes from `wait4` on the child's pid (`ru_maxrss`, KiB on
//! Linux), which reports that one process, not `RUSAGE_CHILDREN`'s maximum
//! over every child reaped so far. The child is waited for in two steps so
//! that a time limit can kill it safely: `waitid(…, WNOWAIT)` blocks until
//! it exits without reaping it, the watchdog thread (which sends `SIGKILL`
//! when the limit passes) is stopped and joined, and only then `wait4`
//! reaps it. Until that reap the pid cannot be reused, so the watchdog never
//! signals an unrelated process.

use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for the output pipes to close once the child is reaped
/// (shorter in the unit tests, which wait for it on purpose).
const PIPE_GRACE: Duration = if cfg!(test) {
    Duration::from_millis(200)
} else {
    Duration::from_secs(2)
};

/// How a measured child ended, and what it printed.
#[derive(Debug)]
pub struct Measured {
    /// Its exit status (after `SIGKILL` when it timed out).
    pub status: ExitStatus,
    /// Whether the time limit killed it.
    pub timed_out: bool,
    /// From just before the spawn to its exit.
    pub wall: Duration,
    /// Its peak resident set size in KiB (`ru_maxrss`).
    pub peak_rss_kib: u64,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// Spawns `cmd` with stdout and stderr captured (stdin as the caller set
/// it), waits for it, killing it after `timeout`, and measures it.
pub fn run(cmd: &mut Command, timeout: Duration) -> io::Result<Measured> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // Each pipe is read to its end by a thread that sends what it read.
    let readers: Vec<mpsc::Receiver<Vec<u8>>> = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|pipe| {
        let (send, receive) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            let _ = send.send(buf);
        });
        receive
    })
    .collect();

    let (stop, stopped) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || match stopped.recv_timeout(timeout) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // SAFETY: kill has no memory-safety preconditions. `pid` is our
            // child and is not reaped before this thread is joined, so it
            // cannot name another process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        }
        _ => false,
    });

    let waited = wait_exited(pid);
    let wall = start.elapsed();
    let _ = stop.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    waited?;
    let (status, peak_rss_kib) = reap(pid)?;
    // `child` is dropped without `Child::wait`: it was reaped above, and
    // dropping a `Child` neither waits nor signals.
    drop(child);
    // The pipes close when the child exits, unless a grandchild it left
    // behind holds them: give that one [`PIPE_GRACE`], then go on with what
    // was read (the reader thread ends when the grandchild does).
    let deadline = Instant::now() + PIPE_GRACE;
    let mut outputs = readers.into_iter().map(|r| {
        r.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    });
    let stdout = outputs.next().unwrap_or_default();
    let stderr = outputs.next().unwrap_or_default();
    Ok(Measured {
        status,
        timed_out,
        wall,
        peak_rss_kib,
        stdout,
        stderr,
    })
}

/// Blocks until child `pid` has exited, leaving it unreaped.
fn wait_exited(pid: libc::pid_t) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value (plain data).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let id = libc::id_t::try_from(pid).expect("a child's pid is positive");
        // SAFETY: `info` is a valid, writable siginfo_t for the duration of
        // the call; waitid writes nothing else.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reaps the exited child `pid`: its exit status and peak RSS in KiB.
fn reap(pid: libc::pid_t) -> io::Result<(ExitStatus, u64)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value (plain data).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `usage` are valid, writable and live for the
        // duration of the call, which writes only them.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            let kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
            return Ok((ExitStatus::from_raw(status), kib));
        }
        let err = io::Error::last_os_error();
        if rc == -1 && err.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_output_status_and_rss() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"])
            .stdin(Stdio::null());
        let m = run(&mut cmd, Duration::from_secs(30)).unwrap();
        assert_eq!(m.status.code(), Some(3));
        assert!(!m.timed_out);
        assert_eq!(m.stdout, b"out\n");
        assert_eq!(m.stderr, b"err\n");
        assert!(m.peak_rss_kib > 0);
    }

    #[test]
    fn a_grandchild_holding_the_pipes_does_not_hold_the_run() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo before; sleep 5 & exit 0"])
            .stdin(Stdio::null());
        let start = Instant::now();
        let m = run(&mut cmd, Duration::from_secs(30)).unwrap();
        assert!(m.status.success());
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn kills_at_the_time_limit() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30").stdin(Stdio::null());
        let m = run(&mut cmd, Duration::from_millis(100)).unwrap();
        assert!(m.timed_out);
        assert_eq!(m.status.signal(), Some(libc::SIGKILL));
        assert!(m.wall < Duration::from_secs(10));
    }
}
