//! `greenlight request`: the approval gate for scripts and CI.
//!
//! `greenlight request --code-file deploy.sh && ./deploy.sh` runs the script only when
//! a reviewer approved it in Slack. The exit status carries the answer: 0 approved,
//! 1 denied / expired / cancelled, 2 could not ask (bad input, no URL or token,
//! unreachable service, rejected token). Telling 1 from 2 lets a pipeline say "a human
//! said no" apart from "greenlight is down". The decision goes to stdout; an error is
//! one line on stderr, printed by whoever runs the command (the server binary's
//! `greenlight::cli::main`).
//!
//! Only `GREENLIGHT_URL` and `GREENLIGHT_API_TOKEN` are read: the server's settings
//! (`SLACK_*`, …) are not needed on the machine that asks.
//!
//! It lives with the client, behind the `cli` feature, because it is a client: it needs
//! nothing of the server, and its tests are about what it asks. A Rust program that
//! wants the same gate in its own command line can `#[command(flatten)]` [`RequestArgs`].

use std::{
    io::{IsTerminal, Read},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};

use crate::{protocol::one_line, ApprovalRequest, Client};

/// Arguments of `greenlight request`.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// Language of the code, shown in Slack [default: the code file's extension]
    #[arg(long, value_name = "LANG")]
    language: Option<String>,
    /// Read the code to approve from FILE ("-" for stdin)
    #[arg(long, value_name = "FILE", conflicts_with = "code")]
    code_file: Option<PathBuf>,
    /// The code to approve (without --code or --code-file it is read from stdin)
    #[arg(long, value_name = "CODE")]
    code: Option<String>,
    /// One-line title for the Slack message
    #[arg(long, value_name = "TITLE")]
    title: Option<String>,
    /// Seconds a reviewer has; no decision by then denies [default: the server's]
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// JSON file with context for the reviewer (any JSON value)
    #[arg(long, value_name = "FILE")]
    context_json: Option<PathBuf>,
    #[command(flatten)]
    service: ServiceArgs,
}

/// Where the service is and how to reach it: the arguments every command that asks
/// greenlight shares (`greenlight request`, `greenlight hook …`).
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// Where greenlight listens, e.g. http://127.0.0.1:8080
    #[arg(long, value_name = "URL", env = "GREENLIGHT_URL")]
    url: Option<String>,
    /// API token (prefer the environment variable: arguments are visible to other users)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "GREENLIGHT_API_TOKEN",
        hide_env_values = true
    )]
    token: Option<SecretString>,
    /// Seconds to keep retrying while the service is unreachable before giving up
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    retry_secs: u64,
}

impl ServiceArgs {
    /// A client builder for the service named by `--url`/`GREENLIGHT_URL` with the
    /// token of `--token`/`GREENLIGHT_API_TOKEN`; errors name the missing one.
    pub fn client_builder(&self) -> anyhow::Result<crate::ClientBuilder> {
        let Some(url) = self.url.as_deref().filter(|u| !u.trim().is_empty()) else {
            bail!("no service URL: pass --url or set GREENLIGHT_URL");
        };
        let Some(token) = self
            .token
            .as_ref()
            .map(|t| t.expose_secret().trim())
            .filter(|t| !t.is_empty())
        else {
            bail!("no API token: set GREENLIGHT_API_TOKEN or pass --token");
        };
        Ok(Client::builder(url, token).submit_retry(Duration::from_secs(self.retry_secs)))
    }

    /// How long an unreachable service is retried.
    pub fn retry(&self) -> Duration {
        Duration::from_secs(self.retry_secs)
    }
}

/// Runs the gate. `Err` is "could not ask" (exit 2, one line on stderr).
pub async fn request(args: RequestArgs) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let is_terminal = stdin.is_terminal();
    let approval = build_request(&args, stdin.lock(), is_terminal)?;
    let client = client(&args)?;
    let decision = client.try_request_approval(approval).await?;
    println!("{}: {}", decision.status, one_line(&decision.reason));
    println!("approval id: {}", decision.id);
    Ok(if decision.approved() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn client(args: &RequestArgs) -> anyhow::Result<Client> {
    Ok(args.service.client_builder()?.build()?)
}

/// Gathers the request from the arguments, a code file or `stdin`, checking what can
/// be checked before contacting anyone.
fn build_request(
    args: &RequestArgs,
    stdin: impl Read,
    stdin_is_terminal: bool,
) -> anyhow::Result<ApprovalRequest> {
    let code = match (&args.code, &args.code_file) {
        (Some(code), _) => code.clone(),
        (None, Some(path)) if path.as_os_str() != "-" => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the code file {}", path.display()))?,
        (None, _) => {
            if stdin_is_terminal {
                bail!("no code to approve: pass --code or --code-file, or pipe it on stdin");
            }
            read_stdin(stdin)?
        }
    };
    if code.trim().is_empty() {
        bail!("the code to approve is empty");
    }
    let context = args.context_json.as_deref().map(read_context).transpose()?;
    let language = args
        .language
        .clone()
        .or_else(|| args.code_file.as_deref().and_then(language_of));
    Ok(ApprovalRequest {
        code,
        language,
        title: args.title.clone(),
        context,
        timeout_secs: args.timeout,
        ..ApprovalRequest::default()
    })
}

fn read_stdin(mut stdin: impl Read) -> anyhow::Result<String> {
    let mut code = String::new();
    stdin
        .read_to_string(&mut code)
        .context("cannot read the code from stdin (it must be UTF-8 text)")?;
    Ok(code)
}

fn read_context(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the context file {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("the context file {} is not valid JSON", path.display()))
}

/// `deploy.sh` → `sh`: the extension is what a fence would say. Anything the server
/// would refuse as a language is dropped rather than failing the request.
fn language_of(path: &Path) -> Option<String> {
    let extension = path.extension()?.to_str()?;
    (!extension.is_empty()
        && extension.len() <= 16
        && extension.chars().all(|c| c.is_ascii_alphanumeric()))
    .then(|| extension.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        args: RequestArgs,
    }

    fn args(argv: &[&str]) -> RequestArgs {
        let argv = std::iter::once("request").chain(argv.iter().copied());
        Harness::try_parse_from(argv).expect("parses").args
    }

    #[test]
    fn inline_code_wins_and_language_is_optional() {
        let request = build_request(&args(&["--code", "ls -la"]), &b""[..], true).expect("request");
        assert_eq!(request.code, "ls -la");
        assert_eq!(request.language, None);
    }

    #[test]
    fn code_comes_from_stdin_when_piped() {
        let request = build_request(&args(&[]), &b"echo hi\n"[..], false).expect("request");
        assert_eq!(request.code, "echo hi\n");
        let dash =
            build_request(&args(&["--code-file", "-"]), &b"echo hi"[..], false).expect("request");
        assert_eq!(dash.code, "echo hi");
    }

    #[test]
    fn a_terminal_on_stdin_is_not_waited_on() {
        let error = build_request(&args(&[]), &b""[..], true).expect_err("no code");
        assert!(error.to_string().contains("no code to approve"), "{error}");
    }

    #[test]
    fn empty_code_is_refused_before_asking() {
        let error = build_request(&args(&["--code", "  \n"]), &b""[..], true).expect_err("empty");
        assert_eq!(error.to_string(), "the code to approve is empty");
    }

    #[test]
    fn code_file_and_context_are_read_and_language_inferred() {
        let dir = tempfile::tempdir().expect("dir");
        let code = dir.path().join("deploy.SH");
        std::fs::write(&code, "kubectl apply -f app.yaml").expect("write");
        let context = dir.path().join("ctx.json");
        std::fs::write(&context, r#"{"ticket": "OPS-1"}"#).expect("write");
        let argv = [
            "--code-file",
            code.to_str().expect("utf-8"),
            "--context-json",
            context.to_str().expect("utf-8"),
            "--timeout",
            "30",
        ];
        let request = build_request(&args(&argv), &b""[..], true).expect("request");
        assert_eq!(request.code, "kubectl apply -f app.yaml");
        assert_eq!(request.language.as_deref(), Some("sh"));
        assert_eq!(
            request.context,
            Some(serde_json::json!({"ticket": "OPS-1"}))
        );
        assert_eq!(request.timeout_secs, Some(30));

        std::fs::write(&context, "{not json").expect("write");
        let error = build_request(&args(&argv), &b""[..], true).expect_err("bad json");
        assert!(
            format!("{error:#}").contains("is not valid JSON"),
            "{error:#}"
        );
    }

    #[test]
    fn a_missing_code_file_is_named() {
        let error = build_request(
            &args(&["--code-file", "/nonexistent/deploy.sh"]),
            &b""[..],
            true,
        )
        .expect_err("missing");
        assert!(
            format!("{error:#}").starts_with("cannot read the code file /nonexistent/deploy.sh"),
            "{error:#}"
        );
    }

    #[test]
    fn language_comes_only_from_a_plain_extension() {
        assert_eq!(language_of(Path::new("a/b.py")).as_deref(), Some("py"));
        assert_eq!(language_of(Path::new("Makefile")), None);
        assert_eq!(language_of(Path::new("x.we!rd")), None);
    }

    #[test]
    fn code_and_code_file_conflict() {
        let argv = ["request", "--code", "ls", "--code-file", "x.sh"];
        assert!(Harness::try_parse_from(argv).is_err());
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let parsed = args(&[
            "--token",
            "tok-0123456789abcdef",
            "--url",
            "http://127.0.0.1:1",
        ]);
        assert!(!format!("{parsed:?}").contains("tok-0123456789abcdef"));
    }
}
