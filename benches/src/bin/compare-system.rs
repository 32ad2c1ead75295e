//! The comparison workloads ([`gomalloc_benches::workloads`]) on the C
//! library's `malloc` (glibc here; the driver also runs this binary with
//! tcmalloc `LD_PRELOAD`ed).

/// The allocator compared.
#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() -> std::process::ExitCode {
    gomalloc_benches::workloads::main()
}
