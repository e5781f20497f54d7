//! The `greenlight` command line. Each subcommand is a small function; failures print
//! one line naming the problem and exit non-zero.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{app::Server, config::Config, slack::api::RetryPolicy};

#[derive(Debug, Parser)]
#[command(
    name = "greenlight",
    version,
    about = "Approve or deny what AI agents want to do, from Slack."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (configuration from the environment and .env).
    Serve,
    /// Print the agent API's OpenAPI 3.1 document (docs/openapi.json is its output).
    Openapi,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A missing .env is normal; a broken one is reported.
    if let Err(error) = dotenvy::dotenv() {
        if !error.not_found() {
            eprintln!("greenlight: cannot read .env: {error}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("greenlight: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => runtime.block_on(serve()),
        Command::Openapi => {
            print!("{}", crate::http::openapi::document());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("greenlight: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve() -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    crate::logging::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (GREENLIGHT_LISTEN)", config.listen))?;
    let server = Server::build(listener, config, RetryPolicy::default()).await?;
    let addr = server.local_addr()?;
    println!("greenlight listening on http://{addr}");
    server.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
