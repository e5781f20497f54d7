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
    /// Read the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Ask for approval in Slack and wait; the exit status is the answer.
    ///
    /// Exit 0 approved, 1 denied/expired/cancelled, 2 could not ask (bad input, no URL
    /// or token, unreachable service, rejected token). Reads GREENLIGHT_URL and
    /// GREENLIGHT_API_TOKEN; flags override them.
    Request(greenlight_client::cli::RequestArgs),
    /// Check the Slack app, channel, tokens and database; exit 0 if all is well,
    /// 1 if a check failed, 2 if the configuration cannot be loaded.
    Doctor,
    /// Inspect the approval policy (GREENLIGHT_POLICY or config/policy.toml).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the agent API's OpenAPI 3.1 document (docs/openapi.json is its output).
    Openapi,
    /// Answer a coding agent's permission hook: hook JSON on stdin, the host's answer
    /// on stdout.
    ///
    /// Exit 0 with the host's JSON when a decision was had (allow or deny); exit 2 with
    /// one line on stderr when none could be (bad input, no URL or token, unreachable
    /// service, rejected token): both hosts treat exit 2 as a block. Reads
    /// GREENLIGHT_URL, GREENLIGHT_API_TOKEN and GREENLIGHT_HOOK_BUDGET_SECS.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Run an MCP server over stdio with a `request_approval` tool. Reads GREENLIGHT_URL
    /// and GREENLIGHT_API_TOKEN.
    Mcp(crate::mcp::McpArgs),
}

#[derive(Debug, Subcommand)]
enum HookCommand {
    /// Claude Code's command hook (PreToolUse or PermissionRequest).
    ClaudeCode(crate::hooks::command::HookArgs),
    /// Codex's command hook (PermissionRequest).
    Codex(crate::hooks::command::HookArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print every audit event as one JSON object per line, oldest first. Reads
    /// GREENLIGHT_DATABASE_URL (default sqlite://greenlight.db).
    Export {
        /// Only events at or after this RFC 3339 time, e.g. 2026-11-25T00:00:00Z.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Show which rule a request matches and what greenlight would do with it,
    /// without posting anything or needing the Slack settings.
    Check {
        /// A JSON file with the request body, as sent to POST /v1/approvals.
        #[arg(long, value_name = "FILE")]
        request: std::path::PathBuf,
        /// The agent (token name) submitting it, for rules that match on `agent`.
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Before parsing, so flags that fall back to environment variables see `.env` too.
    // A missing .env is normal; a broken one is reported.
    if let Err(error) = dotenvy::dotenv() {
        if !error.not_found() {
            eprintln!("greenlight: cannot read .env: {error}");
            return ExitCode::from(2);
        }
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("greenlight: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => runtime.block_on(serve()),
        Command::Audit {
            command: AuditCommand::Export { since },
        } => runtime.block_on(audit_export(since)),
        Command::Request(args) => runtime.block_on(greenlight_client::cli::request(args)),
        Command::Doctor => Ok(runtime.block_on(doctor())),
        Command::Policy(PolicyCommand::Check { request, agent }) => {
            policy_check(&request, agent.as_deref())
        }
        Command::Hook(HookCommand::ClaudeCode(args)) => Ok(runtime.block_on(
            crate::hooks::command::run(crate::hooks::Host::ClaudeCode, args),
        )),
        Command::Hook(HookCommand::Codex(args)) => {
            Ok(runtime.block_on(crate::hooks::command::run(crate::hooks::Host::Codex, args)))
        }
        Command::Mcp(args) => runtime.block_on(crate::mcp::serve(args)),
        Command::Openapi => {
            print!("{}", crate::http::openapi::document());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("greenlight: {}", one_line(&error));
            ExitCode::from(2)
        }
    }
}

/// `error` and its causes on one line, joined with ": " as anyhow's `{:#}` joins them,
/// leaving out a cause whose text the error above it already holds: thiserror's
/// `#[error("database error: {0}")]` with `#[from]`, and sqlx's own errors, print their
/// source inside their message and again as the next link (a trial run saw
/// "Connection refused (os error 111)" three times in one line).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut above = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !above.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        above = text;
    }
    line
}

async fn serve() -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    crate::logging::init(config.log_format, config.log_filter.as_deref())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (GREENLIGHT_LISTEN)", config.listen))?;
    let server = Server::build(listener, config, RetryPolicy::default()).await?;
    let addr = server.local_addr()?;
    // The handlers are installed before the address is announced: a SIGTERM sent as
    // soon as the line appears must shut down gracefully, not kill the process.
    let shutdown = shutdown_signal();
    // One write for both lines, and a closed stdout is no reason to stop serving: a
    // reader that stops after the first line (a test harness, `| head -1`) must not
    // make the second fail (println! would panic on the broken pipe).
    let lines = format!(
        "greenlight listening on http://{addr}\n{}\n",
        server.review_page_line().await?
    );
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, lines.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut stdout));
    drop(stdout);
    server.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn audit_export(since: Option<String>) -> anyhow::Result<ExitCode> {
    let since = since
        .as_deref()
        .map(crate::audit::parse_since)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let url = crate::config::database_url(|key| std::env::var(key).ok())?;
    let store = crate::store::Store::open_read_only(&url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database at {} (GREENLIGHT_DATABASE_URL)",
                crate::store::redact_url(&url)
            )
        })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    crate::audit::export(&store, since, &mut out).await?;
    Ok(ExitCode::SUCCESS)
}

async fn doctor() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            println!("FAIL  configuration: {error}");
            return ExitCode::from(2);
        }
    };
    println!("ok    configuration: loaded");
    let checks = crate::doctor::run(&config).await;
    for check in &checks {
        println!("{check}");
    }
    ExitCode::from(crate::doctor::exit_code(&checks))
}

fn policy_check(request: &std::path::Path, agent: Option<&str>) -> anyhow::Result<ExitCode> {
    let report = crate::policy::check::run(request, agent, |key| std::env::var(key).ok())
        .map_err(anyhow::Error::msg)?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM. The SIGTERM handler is installed when this is
/// called, not when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let terminate = async {
            match sigterm {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_cause_its_parent_already_printed_is_left_out() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let store = crate::store::StoreError::Database(sqlx::Error::Io(io));
        let error =
            anyhow::Error::new(store).context("cannot open the database at postgres://h/db");
        assert_eq!(
            one_line(&error),
            "cannot open the database at postgres://h/db: database error: error communicating with database: Connection refused"
        );
    }

    #[test]
    fn causes_that_add_something_are_all_kept() {
        let error = anyhow::anyhow!("root cause")
            .context("middle")
            .context("top");
        assert_eq!(one_line(&error), "top: middle: root cause");
    }
}
