//! The allocators `cargo xtask compare` knows: how each one is put under a
//! Rust workload (which `compare-*` binary, what to preload) and under a
//! real program (what to preload), and the colour it has in the chart.

use std::path::{Path, PathBuf};

/// Where Debian puts the peers' shared libraries.
const LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// A shared library put in `LD_PRELOAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// `libgomalloc.so` from the workspace's `target/release`.
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
    /// build it).
    pub fn locate(self, release_dir: &Path) -> Result<PathBuf, String> {
        match self {
            Library::Gomalloc => {
                let path = release_dir.join("libgomalloc.so");
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(format!(
                        "{} is missing (cargo build --release -p gomalloc-capi)",
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

/// One allocator of the comparison: a column of the table.
#[derive(Debug, PartialEq, Eq)]
pub struct Allocator {
    /// Its name on the command line and in every output.
    pub name: &'static str,
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

/// Every allocator, in column order: gomalloc first, then the peers.
pub const ALLOCATORS: &[Allocator] = &[
    Allocator {
        name: "gomalloc",
        colour: "#0072B2",
        binary: "compare-gomalloc",
        rust_preload: None,
        program_preload: Some(Library::Gomalloc),
    },
    Allocator {
        name: "system",
        colour: "#7F7F7F",
        binary: "compare-system",
        rust_preload: None,
        program_preload: None,
    },
    Allocator {
        name: "mimalloc",
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
        colour: "#CC79A7",
        binary: "compare-system",
        rust_preload: Some(TCMALLOC),
        program_preload: Some(TCMALLOC),
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
        assert!(by_name(REFERENCE).is_some());
        assert!(by_name("nope").is_none());
    }
}
