//! The comparison workloads ([`gomalloc_benches::workloads`]) on gomalloc.

/// The allocator compared.
#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

fn main() -> std::process::ExitCode {
    gomalloc_benches::workloads::main()
}
