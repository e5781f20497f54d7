//! The `greenlight` binary: everything lives in the library; see `greenlight::cli`.

/// mimalloc instead of the system allocator: the server allocates small, short-lived
/// buffers on every request (JSON, SQL rows, log lines), which glibc's malloc serves
/// with locks and consolidation; see the `mimalloc` entry in `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    greenlight::cli::main()
}
