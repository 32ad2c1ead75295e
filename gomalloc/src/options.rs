//! Options: the `GOMALLOC_*` environment variables, read once at the first
//! allocation without allocating, and the same settings from Rust
//! ([`set_options`]).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GOMALLOC_ARENA_SIZE` | address space reserved from the OS at a time (power of two, ≥ 8K) | `64M` |
//! | `GOMALLOC_SCAVENGE_DELAY_MS` | free memory idle this long goes back to the OS; `never` | `1000` |
//! | `GOMALLOC_RETAIN_PERCENT` | free memory kept beyond the floor, in % of memory in use | `10` |
//! | `GOMALLOC_RETAIN_MIN` | free memory always kept (the floor) | `4M` |
//! | `GOMALLOC_BACKGROUND_THREAD` | a thread that gives memory back while the program is idle | `1` |
//! | `GOMALLOC_MEMORY_LIMIT` | soft limit on resident heap memory; `off` | `off` |
//! | `GOMALLOC_RELEASE_AT_FREE` | a block at least this large goes back to the OS as it is freed; `off` | `off` |
//! | `GOMALLOC_SHOW_STATS` | print the statistics to stderr at exit | `0` |
//! | `GOMALLOC_HARDENED` | canaries on large objects and checked large frees (on in `hardened` builds) | `0` |
//!
//! Sizes take a `K`, `M` or `G` suffix (powers of 1024); booleans are
//! `1`/`0`, `on`/`off`, `true`/`false`, `yes`/`no`. A value that does not
//! parse is reported on stderr and the default kept.
//!
//! Reading: `getenv` (which does not allocate) at the first allocation of
//! the process, or at the first call of [`options`] / [`set_options`],
//! whichever comes first. Nothing here allocates.

use crate::global::HEAP;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use mheap::sync::LeafMutex;
use mheap::{HeapConfig, ScavengePolicy};

/// gomalloc's settings. `Options::DEFAULT` are the defaults;
/// [`Options::from_env`] reads the environment over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Bytes of address space the heap reserves from the OS at a time (a
    /// power of two, at least 8 KiB). Takes effect only before the heap's
    /// first reservation.
    pub arena_size: usize,
    /// How long free memory stays resident before it goes back to the OS,
    /// in milliseconds; `None`: never by age (the retained bound and the
    /// memory limit still apply).
    pub scavenge_delay_ms: Option<u64>,
    /// Free memory kept resident beyond `retain_min_bytes`, in percent of
    /// the memory in use.
    pub retain_percent: u32,
    /// Free memory always allowed to stay resident, in bytes.
    pub retain_min_bytes: usize,
    /// Whether a background thread gives memory back while the program is
    /// idle. Off: only allocation and free slow paths (and explicit calls)
    /// do.
    pub background_thread: bool,
    /// Soft limit on the heap's resident memory, in bytes: near it, free
    /// memory goes back to the OS at once. `None`: no limit.
    pub memory_limit: Option<usize>,
    /// A block (a large object's span) at least this many bytes long goes
    /// back to the OS as it is freed, whatever the delay and the retained
    /// bound. `None` (the default): only by those rules.
    pub release_at_free_bytes: Option<usize>,
    /// Print the statistics to stderr when the process exits.
    pub show_stats: bool,
    /// The hardened checks that are cheap at run time: canaries on large
    /// objects and checked large frees. Always on in builds with the
    /// `hardened` feature, which adds the small-object checks.
    pub hardened: bool,
}

impl Options {
    /// The defaults (see the module docs' table).
    pub const DEFAULT: Self = Self {
        arena_size: 64 << 20,
        scavenge_delay_ms: Some(1000),
        retain_percent: 10,
        retain_min_bytes: 4 << 20,
        background_thread: true,
        memory_limit: None,
        release_at_free_bytes: None,
        show_stats: false,
        hardened: cfg!(feature = "hardened"),
    };

    /// The defaults, overridden by whichever `GOMALLOC_*` variables are
    /// set. Does not allocate.
    pub fn from_env() -> Self {
        let mut o = Self::DEFAULT;
        if let Some(v) = env_parse(c"GOMALLOC_ARENA_SIZE", parse_size) {
            if v.is_power_of_two() && v >= mheap::PAGE_SIZE {
                o.arena_size = v;
            } else {
                warn(
                    "GOMALLOC_ARENA_SIZE",
                    "must be a power of two of at least 8K",
                );
            }
        }
        if let Some(v) = env_parse(c"GOMALLOC_SCAVENGE_DELAY_MS", parse_delay) {
            o.scavenge_delay_ms = v;
        }
        if let Some(v) = env_parse(c"GOMALLOC_RETAIN_PERCENT", parse_u64) {
            o.retain_percent = v.min(u32::MAX as u64) as u32;
        }
        if let Some(v) = env_parse(c"GOMALLOC_RETAIN_MIN", parse_size) {
            o.retain_min_bytes = v;
        }
        if let Some(v) = env_parse(c"GOMALLOC_BACKGROUND_THREAD", parse_bool) {
            o.background_thread = v;
        }
        if let Some(v) = env_parse(c"GOMALLOC_MEMORY_LIMIT", parse_limit) {
            o.memory_limit = v;
        }
        if let Some(v) = env_parse(c"GOMALLOC_RELEASE_AT_FREE", parse_limit) {
            o.release_at_free_bytes = v;
        }
        if let Some(v) = env_parse(c"GOMALLOC_SHOW_STATS", parse_bool) {
            o.show_stats = v;
        }
        if let Some(v) = env_parse(c"GOMALLOC_HARDENED", parse_bool) {
            o.hardened = v || cfg!(feature = "hardened");
        }
        o
    }

    /// The scavenging policy these options ask of the page heap.
    pub fn scavenge_policy(&self) -> ScavengePolicy {
        ScavengePolicy {
            retain_percent: self.retain_percent,
            retain_min_bytes: self.retain_min_bytes,
            delay_ns: self
                .scavenge_delay_ms
                .map_or(ScavengePolicy::NEVER, |ms| ms.saturating_mul(1_000_000)),
            memory_limit: self.memory_limit,
            release_at_free_bytes: self.release_at_free_bytes.unwrap_or(usize::MAX),
            ..ScavengePolicy::DEFAULT
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why [`set_options`] refused a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionsError {
    /// The heap has already reserved memory, so its arena size is fixed;
    /// every other option was applied.
    ArenaSizeFixed,
    /// The arena size is not a power of two of at least 8 KiB; nothing was
    /// applied.
    BadArenaSize,
    /// The hardened checks can only change before the first allocation
    /// (an object allocated without a canary cannot be checked); every
    /// other option was applied.
    HardenedFixed,
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ArenaSizeFixed => "the arena size can only change before the heap maps memory",
            Self::BadArenaSize => "the arena size must be a power of two of at least 8 KiB",
            Self::HardenedFixed => {
                "the hardened checks can only change before the first allocation"
            }
        })
    }
}

impl core::error::Error for OptionsError {}

/// Not read yet / being read / in force.
const UNREAD: u8 = 0;
const READING: u8 = 1;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNREAD);
static CURRENT: LeafMutex<Options> = LeafMutex::new(Options::DEFAULT);

/// Copies of the options read on hot-ish paths, without the lock.
pub(crate) static BACKGROUND: AtomicBool = AtomicBool::new(true);
pub(crate) static SHOW_STATS: AtomicBool = AtomicBool::new(false);
pub(crate) static HARDENED: AtomicBool = AtomicBool::new(cfg!(feature = "hardened"));
/// Whether anything was allocated since the options were read (the
/// hardened option is fixed from then on).
pub(crate) static ALLOCATED: AtomicBool = AtomicBool::new(false);

/// Reads the environment and applies it, once; every allocation slow path
/// calls this (one load when done).
#[inline]
pub(crate) fn ensure() {
    if STATE.load(Ordering::Acquire) != READY {
        init_from_env();
    }
}

/// [`ensure`], from a path that is about to allocate: from here on the
/// hardened option is fixed.
#[inline]
pub(crate) fn ensure_for_alloc() {
    ensure();
    if !ALLOCATED.load(Ordering::Relaxed) {
        ALLOCATED.store(true, Ordering::Relaxed);
    }
}

#[cold]
#[inline(never)]
fn init_from_env() {
    match STATE.compare_exchange(UNREAD, READING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {
            let o = Options::from_env();
            let _ = apply(&o, true);
            *CURRENT.lock() = o;
            STATE.store(READY, Ordering::Release);
        }
        // Another thread is reading them: wait (a few microseconds; the
        // reader allocates nothing, so it cannot be waiting on us).
        Err(_) => {
            while STATE.load(Ordering::Acquire) != READY {
                core::hint::spin_loop();
            }
        }
    }
}

/// Hands `o` to the heap and the copies above. `first`: nothing has been
/// allocated, so every option may change.
fn apply(o: &Options, first: bool) -> Result<(), OptionsError> {
    let mut result = Ok(());
    let config = HeapConfig {
        arena_size: o.arena_size,
    };
    if HEAP.config() != config && !HEAP.set_config(config) {
        result = Err(OptionsError::ArenaSizeFixed);
    }
    HEAP.set_scavenge_policy(o.scavenge_policy());
    BACKGROUND.store(o.background_thread, Ordering::Relaxed);
    SHOW_STATS.store(o.show_stats, Ordering::Relaxed);
    let hardened = o.hardened || cfg!(feature = "hardened");
    if first || !ALLOCATED.load(Ordering::Relaxed) {
        HARDENED.store(hardened, Ordering::Relaxed);
    } else if HARDENED.load(Ordering::Relaxed) != hardened && result.is_ok() {
        result = Err(OptionsError::HardenedFixed);
    }
    crate::scavenger::options_changed();
    result
}

/// The options in force (read from the environment first if nothing has
/// been allocated yet).
pub fn options() -> Options {
    ensure();
    *CURRENT.lock()
}

/// Sets gomalloc's options from Rust. Call it first thing in `main` (or
/// before the first allocation) for every option to apply; later, the
/// scavenger's settings, the background thread, the memory limit and
/// `show_stats` still change at once, while the arena size (fixed once the
/// heap maps memory) and the hardened checks (fixed at the first
/// allocation) give an error and stay as they were. The environment is
/// read first, so to keep its settings start from [`options`]:
///
/// ```
/// let mut o = gomalloc::options();
/// o.scavenge_delay_ms = Some(200);
/// o.memory_limit = Some(512 << 20);
/// gomalloc::set_options(o).unwrap();
/// assert_eq!(gomalloc::options().scavenge_delay_ms, Some(200));
/// ```
pub fn set_options(o: Options) -> Result<(), OptionsError> {
    if !(o.arena_size.is_power_of_two() && o.arena_size >= mheap::PAGE_SIZE) {
        return Err(OptionsError::BadArenaSize);
    }
    ensure();
    let mut cur = CURRENT.lock();
    let r = apply(&o, false);
    let mut stored = o;
    match r {
        Err(OptionsError::ArenaSizeFixed) => stored.arena_size = cur.arena_size,
        Err(OptionsError::HardenedFixed) => stored.hardened = cur.hardened,
        _ => {}
    }
    *cur = stored;
    r
}

/// Reads variable `name` and parses it with `parse`; reports a value that
/// does not parse.
fn env_parse<T>(name: &core::ffi::CStr, parse: fn(&[u8]) -> Option<T>) -> Option<T> {
    // SAFETY: `name` is NUL-terminated; glibc's getenv reads `environ`
    // without allocating and returns null or a NUL-terminated string that
    // lives as long as the environment is not changed.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string from getenv (above).
    let bytes = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
    let parsed = parse(trim(bytes));
    if parsed.is_none() {
        warn(
            name.to_str().unwrap_or("GOMALLOC_?"),
            "value not understood",
        );
    }
    parsed
}

/// Writes `gomalloc: NAME: why, the default is kept` to stderr without
/// allocating.
fn warn(name: &str, why: &str) {
    let mut b = crate::print::StackBuf::<256>::new();
    let _ = fmt::Write::write_fmt(
        &mut b,
        format_args!("gomalloc: {name}: {why}; the default is kept\n"),
    );
    b.write_to(2);
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// A decimal number.
pub(crate) fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

/// A byte count: a number with an optional `K`, `M`, `G` or `T` (also
/// `KB`, `KiB`, any case) suffix, in powers of 1024.
pub(crate) fn parse_size(b: &[u8]) -> Option<usize> {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let n = parse_u64(&b[..digits])?;
    let suffix = &b[digits..];
    let shift = match suffix.first().map(u8::to_ascii_lowercase) {
        None => 0,
        Some(b'k') => 10,
        Some(b'm') => 20,
        Some(b'g') => 30,
        Some(b't') => 40,
        Some(_) => return None,
    };
    let rest = suffix.get(1..).unwrap_or(&[]);
    if !(rest.is_empty() || rest.eq_ignore_ascii_case(b"b") || rest.eq_ignore_ascii_case(b"ib")) {
        return None;
    }
    usize::try_from(n.checked_mul(1u64 << shift)?).ok()
}

/// A boolean.
pub(crate) fn parse_bool(b: &[u8]) -> Option<bool> {
    const ON: [&[u8]; 4] = [b"1", b"on", b"true", b"yes"];
    const OFF: [&[u8]; 4] = [b"0", b"off", b"false", b"no"];
    if ON.iter().any(|w| b.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if OFF.iter().any(|w| b.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        None
    }
}

/// A delay in milliseconds, or `never`.
fn parse_delay(b: &[u8]) -> Option<Option<u64>> {
    if b.eq_ignore_ascii_case(b"never") {
        Some(None)
    } else {
        parse_u64(b).map(Some)
    }
}

/// A size, or `off` / `0` for no limit.
fn parse_limit(b: &[u8]) -> Option<Option<usize>> {
    if b.eq_ignore_ascii_case(b"off") || b.eq_ignore_ascii_case(b"none") {
        return Some(None);
    }
    parse_size(b).map(|n| (n != 0).then_some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"64M"), Some(64 << 20));
        assert_eq!(parse_size(b"2g"), Some(2 << 30));
        assert_eq!(parse_size(b"8KiB"), Some(8 << 10));
        assert_eq!(parse_size(b"8kb"), Some(8 << 10));
        assert_eq!(parse_size(b"8X"), None);
        assert_eq!(parse_size(b"M"), None);
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"99999999999999999999"), None);
        assert_eq!(parse_size(b"-1"), None);
    }

    #[test]
    fn bools_delays_limits() {
        assert_eq!(parse_bool(b"ON"), Some(true));
        assert_eq!(parse_bool(b"0"), Some(false));
        assert_eq!(parse_bool(b"maybe"), None);
        assert_eq!(parse_delay(b"never"), Some(None));
        assert_eq!(parse_delay(b"250"), Some(Some(250)));
        assert_eq!(parse_delay(b"2s"), None);
        assert_eq!(parse_limit(b"off"), Some(None));
        assert_eq!(parse_limit(b"0"), Some(None));
        assert_eq!(parse_limit(b"1G"), Some(Some(1 << 30)));
        assert_eq!(trim(b"  12 \n"), b"12");
    }

    #[test]
    fn policy_from_options() {
        let o = Options {
            scavenge_delay_ms: Some(250),
            retain_percent: 5,
            retain_min_bytes: 1 << 20,
            memory_limit: Some(1 << 30),
            release_at_free_bytes: Some(8 << 20),
            ..Options::DEFAULT
        };
        let p = o.scavenge_policy();
        assert_eq!(p.release_at_free_bytes, 8 << 20);
        assert_eq!(p.delay_ns, 250_000_000);
        assert_eq!(p.retain_percent, 5);
        assert_eq!(p.retain_min_bytes, 1 << 20);
        assert_eq!(p.memory_limit, Some(1 << 30));
        let never = Options {
            scavenge_delay_ms: None,
            release_at_free_bytes: None,
            ..Options::DEFAULT
        };
        assert_eq!(never.scavenge_policy().delay_ns, ScavengePolicy::NEVER);
        assert_eq!(never.scavenge_policy().release_at_free_bytes, usize::MAX);
        assert_eq!(
            Options::DEFAULT.scavenge_policy().release_at_free_bytes,
            ScavengePolicy::DEFAULT.release_at_free_bytes
        );
    }
}
