//! The allocators `cargo xtask compare` knows: how each one is put under a
//! Rust workload (which `compare-*` binary, from which build, what to
//! preload) and under a real program (what to preload), what it is compared
//! with, and the colour it has in the chart.

use std::path::{Path, PathBuf};

/// Where Debian puts the peers' shared libraries.
const LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// Which cargo build of the workspace an allocator's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The workspace's ordinary release build (`target/release`): every
    /// `compare-*` binary and `libgomalloc.so`.
    Release,
    /// `compare-gomalloc` and `libgomalloc.so` built with gomalloc's
    /// `hardened` feature into a target directory of their own
    /// ([`HARDENED_TARGET`]), so that the feature is neither unified into
    /// nor rebuilds the ordinary build.
    Hardened,
}

/// The target directory of [`Build::Hardened`], under the workspace's
/// target directory.
pub const HARDENED_TARGET: &str = "compare-hardened";

impl Build {
    /// Where this build's release files are, given the workspace's target
    /// directory.
    pub fn release_dir(self, target: &Path) -> PathBuf {
        match self {
            Build::Release => target.join("release"),
            Build::Hardened => target.join(HARDENED_TARGET).join("release"),
        }
    }

    /// The `cargo` arguments that build what the suite needs of this build;
    /// `target` is the workspace's target directory.
    pub fn cargo_args(self, target: &Path) -> Vec<String> {
        let args: &[&str] = match self {
            Build::Release => &[
                "build",
                "--release",
                "-p",
                "gomalloc-benches",
                "--bins",
                "-p",
                "gomalloc-capi",
            ],
            Build::Hardened => &[
                "build",
                "--release",
                "-p",
                "gomalloc-benches",
                "--bin",
                "compare-gomalloc",
                "-p",
                "gomalloc-capi",
                "--lib",
                "--features",
                "gomalloc-benches/hardened,gomalloc-capi/hardened",
                "--target-dir",
            ],
        };
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if self == Build::Hardened {
            args.push(target.join(HARDENED_TARGET).display().to_string());
        }
        args
    }
}

/// A shared library put in `LD_PRELOAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// `libgomalloc.so` from the allocator's build (see [`Build`]).
    Gomalloc,
    /// A peer's library installed by a Debian package.
    Peer {
        /// The file name in [`LIB_DIR`].
        file: &'static str,
        /// The Debian package that installs it.
        package: &'static str,
    },
}

impl Library {
    /// The library's path, or why it is not there (a hint to install or
    /// build it); `release_dir` is where the allocator's build puts its
    /// files ([`Build::release_dir`]).
    pub fn locate(self, release_dir: &Path) -> Result<PathBuf, String> {
        match self {
            Library::Gomalloc => {
                let path = release_dir.join("libgomalloc.so");
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(format!(
                        "{} is missing (cargo xtask compare builds it unless --no-build)",
                        path.display()
                    ))
                }
            }
            Library::Peer { file, package } => {
                let path = Path::new(LIB_DIR).join(file);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(format!(
                        "{} is missing (Debian package {package}: apt-get install {package})",
                        path.display()
                    ))
                }
            }
        }
    }
}

/// What an allocator is to the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// gomalloc, the allocator the suite is about ([`SUBJECT`]): its ratios
    /// are to the best peer's, and its goals are marked.
    Subject,
    /// An allocator gomalloc is measured against: its ratios are to the
    /// best peer's, and it may be the best peer.
    Peer,
    /// A variant of gomalloc (another build of it): its ratios are to plain
    /// gomalloc's (what the variant costs), it is never the best peer and
    /// has no goals.
    Variant,
}

/// One allocator of the comparison: a column of the table.
#[derive(Debug, PartialEq, Eq)]
pub struct Allocator {
    /// Its name on the command line and in every output.
    pub name: &'static str,
    /// What it is to the comparison.
    pub role: Role,
    /// The build its `compare-*` binary and `libgomalloc.so` come from.
    pub build: Build,
    /// Its colour in `compare.svg` (fixed, so charts of two runs read alike;
    /// the Okabe–Ito palette, which colour-blind readers can tell apart).
    pub colour: &'static str,
    /// The workload binary (in the bin dir) that runs Rust workloads on it.
    pub binary: &'static str,
    /// Preloaded under the Rust workloads (tcmalloc replaces the system
    /// allocator of `compare-system` this way).
    pub rust_preload: Option<Library>,
    /// Preloaded under real programs; `None` is glibc's malloc.
    pub program_preload: Option<Library>,
}

const TCMALLOC: Library = Library::Peer {
    file: "libtcmalloc_minimal.so.4",
    package: "libtcmalloc-minimal4",
};

/// Every allocator, in column order: gomalloc first, then the peers, then
/// gomalloc's variants.
pub const ALLOCATORS: &[Allocator] = &[
    Allocator {
        name: "gomalloc",
        role: Role::Subject,
        build: Build::Release,
        colour: "#0072B2",
        binary: "compare-gomalloc",
        rust_preload: None,
        program_preload: Some(Library::Gomalloc),
    },
    Allocator {
        name: "system",
        role: Role::Peer,
        build: Build::Release,
        colour: "#7F7F7F",
        binary: "compare-system",
        rust_preload: None,
        program_preload: None,
    },
    Allocator {
        name: "mimalloc",
        role: Role::Peer,
        build: Build::Release,
        colour: "#E69F00",
        binary: "compare-mimalloc",
        rust_preload: None,
        program_preload: Some(Library::Peer {
            file: "libmimalloc.so.2",
            package: "libmimalloc2.0",
        }),
    },
    Allocator {
        name: "jemalloc",
        role: Role::Peer,
        build: Build::Release,
        colour: "#009E73",
        binary: "compare-jemalloc",
        rust_preload: None,
        program_preload: Some(Library::Peer {
            file: "libjemalloc.so.2",
            package: "libjemalloc2",
        }),
    },
    Allocator {
        name: "tcmalloc",
        role: Role::Peer,
        build: Build::Release,
        colour: "#CC79A7",
        binary: "compare-system",
        rust_preload: Some(TCMALLOC),
        program_preload: Some(TCMALLOC),
    },
    Allocator {
        name: "gomalloc-hardened",
        role: Role::Variant,
        build: Build::Hardened,
        colour: "#56B4E9",
        binary: "compare-gomalloc",
        rust_preload: None,
        program_preload: Some(Library::Gomalloc),
    },
];

/// The allocator whose runs are the reference of each configuration (its
/// output is the one the others must match), so each configuration's first
/// round starts with it.
pub const REFERENCE: &str = "system";

/// The allocator the suite is about; the others are its peers.
pub const SUBJECT: &str = "gomalloc";

/// The allocator named `name`.
pub fn by_name(name: &str) -> Option<&'static Allocator> {
    ALLOCATORS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_colours_are_distinct() {
        for (i, a) in ALLOCATORS.iter().enumerate() {
            for b in &ALLOCATORS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.colour, b.colour);
            }
        }
        assert_eq!(ALLOCATORS[0].name, SUBJECT);
        assert_eq!(ALLOCATORS[0].role, Role::Subject);
        assert_eq!(by_name(REFERENCE).map(|a| a.role), Some(Role::Peer));
        assert!(by_name("nope").is_none());
        // One subject; variants come after the peers.
        assert_eq!(
            ALLOCATORS
                .iter()
                .filter(|a| a.role == Role::Subject)
                .count(),
            1
        );
        let first_variant = ALLOCATORS.iter().position(|a| a.role == Role::Variant);
        assert!(
            first_variant.is_some_and(|v| ALLOCATORS[v..].iter().all(|a| a.role == Role::Variant))
        );
    }

    #[test]
    fn builds() {
        let target = Path::new("/t");
        assert_eq!(Build::Release.release_dir(target), Path::new("/t/release"));
        assert_eq!(
            Build::Hardened.release_dir(target),
            Path::new("/t/compare-hardened/release")
        );
        let hardened = Build::Hardened.cargo_args(target).join(" ");
        assert!(
            hardened.contains("--features gomalloc-benches/hardened,gomalloc-capi/hardened"),
            "{hardened}"
        );
        assert!(
            hardened.ends_with("--target-dir /t/compare-hardened"),
            "{hardened}"
        );
        assert!(
            !Build::Release
                .cargo_args(target)
                .iter()
                .any(|a| a.contains("hardened") || a == "--target-dir")
        );
    }
}
