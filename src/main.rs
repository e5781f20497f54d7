//! The `greenlight` binary: everything lives in the library; see `greenlight::cli`.

fn main() -> std::process::ExitCode {
    greenlight::cli::main()
}
