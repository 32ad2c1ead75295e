//! The comparison workloads ([`gomalloc_benches::workloads`]) on jemalloc
//! (the `tikv-jemallocator` crate).

/// The allocator compared.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    gomalloc_benches::workloads::main()
}
