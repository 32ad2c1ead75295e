//! The concurrency shim of the allocator crates, and a lock that never
//! allocates.
//!
//! Every allocator crate takes its atomics and its lock from here, never from
//! `std::sync` or `parking_lot` directly, for two reasons:
//!
//! 1. **Model checking.** Under the namespaced cfg `gomalloc_loom` the items
//!    below are loom's, so the loom models (`tests/loom_*.rs` of the upper
//!    crates) explore every interleaving of the real protocol code. The cfg is
//!    namespaced so that it never reaches loom-aware crates elsewhere in the
//!    dependency graph.
//! 2. **No allocation while locking.** `parking_lot::Mutex` parks a contended
//!    thread through `parking_lot_core`, which allocates its hash table the
//!    first time each thread parks; inside `GlobalAlloc` that re-enters the
//!    allocator. [`RawLock`] is a futex mutex of our own (spin briefly, then
//!    `FUTEX_WAIT`): it makes system calls but never allocates, so it is safe
//!    on every allocation path. It plugs into `lock_api`, which `parking_lot`
//!    re-exports, so guards and `Mutex<T>` have the usual API.
//!
//! ## The lock protocol (`RawLock`)
//!
//! `state` is 0 (unlocked), 1 (locked, nobody waits) or 2 (locked, someone
//! may be waiting in the kernel). `lock` moves 0→1 with one CAS; failing
//! that it spins a bounded number of times, then swaps in 2 and sleeps on the
//! futex while the previous value was not 0. `unlock` swaps in 0 and wakes
//! one sleeper if the previous value was 2. A waiter always re-marks 2 before
//! sleeping, so a wake-up is never lost.

#[cfg(not(gomalloc_loom))]
pub use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};
#[cfg(gomalloc_loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};

/// A mutual-exclusion lock around `T` that never allocates (see the module
/// docs). `Mutex::new` is `const`, so it can live in a `static`.
#[cfg(not(gomalloc_loom))]
pub type Mutex<T> = parking_lot::lock_api::Mutex<RawLock, T>;
/// The guard of a locked [`Mutex`]; the lock is released when it drops.
#[cfg(not(gomalloc_loom))]
pub type MutexGuard<'a, T> = parking_lot::lock_api::MutexGuard<'a, RawLock, T>;

/// Under loom: loom's mutex, with the same `new`/`lock` API as the real one.
#[cfg(gomalloc_loom)]
pub struct Mutex<T>(loom::sync::Mutex<T>);
/// The guard of a locked [`Mutex`] under loom.
#[cfg(gomalloc_loom)]
pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

#[cfg(gomalloc_loom)]
impl<T> Mutex<T> {
    /// A new unlocked mutex around `value`.
    pub fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    /// Locks the mutex (a poisoned loom mutex means a model already failed).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().expect("loom mutex poisoned")
    }
}

/// A lock that is never modelled by loom: the heap's leaf lock, whose
/// critical sections the models do not enter. Always the real [`RawLock`],
/// so that `MHeap::new` stays `const` under every cfg.
pub type LeafMutex<T> = parking_lot::lock_api::Mutex<RawLock, T>;

/// An `UnsafeCell` with loom's closure API (`with`, `with_mut`), so that
/// under loom every access to a cell is checked for data races, and
/// otherwise it compiles to plain pointer accesses.
#[cfg(not(gomalloc_loom))]
#[derive(Debug, Default)]
pub struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(gomalloc_loom))]
impl<T> UnsafeCell<T> {
    /// A new cell holding `value`.
    pub const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a mutable raw pointer to the contents.
    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(gomalloc_loom)]
pub use loom::cell::UnsafeCell;

/// Declares a function that is `const` in normal builds and plain under
/// loom, whose constructors are not `const` (so the same constructor serves
/// `static`s in production and models under loom).
#[macro_export]
macro_rules! const_unless_loom {
    ($(#[$m:meta])* $v:vis fn $($rest:tt)*) => {
        #[cfg(not(gomalloc_loom))]
        $(#[$m])* $v const fn $($rest)*
        #[cfg(gomalloc_loom)]
        $(#[$m])* $v fn $($rest)*
    };
}

/// Tells the scheduler (or loom) that this thread is waiting on another.
#[inline]
pub fn yield_now() {
    #[cfg(gomalloc_loom)]
    loom::thread::yield_now();
    #[cfg(not(gomalloc_loom))]
    std::thread::yield_now();
}

/// How many times a contended `lock` re-checks the lock word before it
/// sleeps in the kernel. Critical sections of the allocator are short, so a
/// short spin usually wins; a long one wastes a core on the 2-core machines
/// the project targets.
const SPIN_LIMIT: u32 = 64;

/// A raw futex mutex that never allocates. See the module docs for the
/// protocol.
///
/// Invariant: `state` ∈ {0, 1, 2}; it is non-zero exactly while some guard
/// is held.
pub struct RawLock {
    state: core::sync::atomic::AtomicU32,
}

impl RawLock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        Self {
            state: core::sync::atomic::AtomicU32::new(0),
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        use core::sync::atomic::Ordering::{Acquire, Relaxed};
        let mut spins = 0;
        while spins < SPIN_LIMIT {
            let s = self.state.load(Relaxed);
            if s == 0
                && self
                    .state
                    .compare_exchange_weak(0, 1, Acquire, Relaxed)
                    .is_ok()
            {
                return;
            }
            if s == 2 {
                // Somebody already sleeps: spinning will not help.
                break;
            }
            core::hint::spin_loop();
            spins += 1;
        }
        while self.state.swap(2, Acquire) != 0 {
            futex_wait(&self.state, 2);
        }
    }
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `lock` returns only after moving `state` from 0 to non-zero with
// Acquire ordering, `unlock` stores 0 with Release ordering, so at most one
// guard exists at a time and the critical sections are ordered.
unsafe impl parking_lot::lock_api::RawMutex for RawLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = Self::new();
    type Guard = parking_lot::lock_api::GuardSend;

    #[inline]
    fn lock(&self) -> Self::Guard {
        use core::sync::atomic::Ordering::{Acquire, Relaxed};
        if self
            .state
            .compare_exchange_weak(0, 1, Acquire, Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        parking_lot::lock_api::GuardSend::new()
    }

    #[inline]
    fn try_lock(&self) -> Option<Self::Guard> {
        use core::sync::atomic::Ordering::{Acquire, Relaxed};
        self.state
            .compare_exchange(0, 1, Acquire, Relaxed)
            .ok()
            .map(|_| parking_lot::lock_api::GuardSend::new())
    }

    #[inline]
    unsafe fn unlock(&self, _guard: Self::Guard) {
        if self.state.swap(0, core::sync::atomic::Ordering::Release) == 2 {
            futex_wake_one(&self.state);
        }
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.state.load(core::sync::atomic::Ordering::Relaxed) != 0
    }
}

/// Sleeps while `*word == expected` (spurious wake-ups are allowed).
#[cfg(target_os = "linux")]
fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which lives as
    // long as this call; a null timeout means "no timeout". The call does not
    // allocate; EAGAIN/EINTR are fine because the caller re-checks in a loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes one thread sleeping in [`futex_wait`] on `word`.
#[cfg(target_os = "linux")]
fn futex_wake_one(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key; it does not
    // dereference user memory beyond validating the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// Sleeps while `*word == expected`, for at most `timeout_ns` nanoseconds
/// (spurious and early wake-ups are allowed: callers re-check). For the
/// scavenger's background threads (`MHeap::wait_for_scavenge_work`, and
/// gomalloc's thread while it is switched off). Never allocates.
#[cfg(target_os = "linux")]
pub fn futex_wait_for(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ns: u64) {
    let timeout = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000).min(i32::MAX as u64) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: as in `futex_wait`; `timeout` is a valid relative timespec that
    // lives across the call. ETIMEDOUT, EAGAIN and EINTR are all fine.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &timeout as *const libc::timespec,
        );
    }
}

/// Wakes every thread sleeping in [`futex_wait_for`] on `word`.
#[cfg(target_os = "linux")]
pub fn futex_wake_all(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: as in `futex_wake_one`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub fn futex_wait_for(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ns: u64) {
    // No futex: poll, in slices short enough to notice a wake-up soon.
    if word.load(core::sync::atomic::Ordering::Relaxed) == expected {
        std::thread::sleep(std::time::Duration::from_nanos(timeout_ns.min(10_000_000)));
    }
}

#[cfg(not(target_os = "linux"))]
pub fn futex_wake_all(_word: &core::sync::atomic::AtomicU32) {}

#[cfg(not(target_os = "linux"))]
fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32) {
    if word.load(core::sync::atomic::Ordering::Relaxed) == expected {
        std::thread::yield_now();
    }
}

#[cfg(not(target_os = "linux"))]
fn futex_wake_one(_word: &core::sync::atomic::AtomicU32) {}

#[cfg(all(test, not(gomalloc_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn mutual_exclusion_under_contention() {
        // A non-atomic read-modify-write under the lock: lost updates would
        // show as a short count if two threads were ever inside at once.
        struct Shared(Mutex<u64>);
        let shared = Arc::new(Shared(Mutex::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        let mut g = s.0.lock();
                        let v = *g;
                        if v.is_multiple_of(1000) {
                            std::thread::yield_now();
                        }
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*shared.0.lock(), 200_000);
    }

    #[test]
    fn try_lock_fails_while_held() {
        let m = Mutex::new(());
        let g = m.lock();
        assert!(m.try_lock().is_none());
        assert!(m.is_locked());
        drop(g);
        assert!(m.try_lock().is_some());
    }
}
