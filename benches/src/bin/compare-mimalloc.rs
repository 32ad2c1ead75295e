//! The comparison workloads ([`gomalloc_benches::workloads`]) on mimalloc
//! (the `mimalloc` crate, no features).

/// The allocator compared.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gomalloc_benches::workloads::main()
}
