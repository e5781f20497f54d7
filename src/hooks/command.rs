//! `greenlight hook claude-code` and `greenlight hook codex`: command hooks.
//!
//! The host runs the command with the hook input on stdin. It asks the service the
//! way `greenlight request` does (the Rust client: `GREENLIGHT_URL`,
//! `GREENLIGHT_API_TOKEN`, an idempotent submission, long-polls that ride out
//! restarts), then prints what the host parses:
//!
//! - a decision (approved, or denied / expired / cancelled): the host's answer JSON on
//!   stdout ([`crate::hooks::claude_code`]), exit 0;
//! - no decision could be had (malformed input, no URL or token, unreachable service,
//!   rejected token, refused submission): nothing on stdout, one line on stderr ending
//!   "blocked (fail closed)", exit **2**. Claude Code blocks the tool call on exit 2
//!   and shows stderr to the model; Codex counts exit 2 with a reason on stderr as a
//!   deny. Any other exit code would be a non-blocking error, and the tool would run.

use std::{io::Read, process::ExitCode, time::Duration};

use greenlight_client::{cli::ServiceArgs, ApprovalRequest};

use super::{render::render, HookInput, Host, Verdict};
use crate::config::{DEFAULT_HOOK_BUDGET_SECS, MAX_HOOK_BUDGET_SECS};

/// The most stdin read: as much as the HTTP hook accepts.
const MAX_INPUT_BYTES: u64 = crate::http::hooks::MAX_HOOK_BODY_BYTES as u64;
/// Time allowed beyond the budget and the retry window for the last answer to arrive.
const SLACK_SECS: u64 = 5;

/// Arguments of `greenlight hook claude-code|codex`.
#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// Seconds a person has to decide; then the request expires and the hook denies.
    /// Keep budget + retry-secs + 5 below the host's hook timeout (Claude Code's
    /// default is 600 s)
    #[arg(
        long,
        value_name = "SECS",
        env = "GREENLIGHT_HOOK_BUDGET_SECS",
        default_value_t = DEFAULT_HOOK_BUDGET_SECS,
        value_parser = clap::value_parser!(u64).range(1..=MAX_HOOK_BUDGET_SECS)
    )]
    budget_secs: u64,
    #[command(flatten)]
    service: ServiceArgs,
}

/// Runs the hook for `host`: reads stdin, asks, prints. Never fails: every problem is
/// the blocking exit (see the module doc).
pub async fn run(host: Host, args: HookArgs) -> ExitCode {
    match decide(host, &args, std::io::stdin().lock()).await {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!(
                "{}",
                Verdict::blocked(one_line(&format!("{problem:#}"))).reason
            );
            ExitCode::from(2)
        }
    }
}

/// The host's answer JSON for the hook input on `stdin`, or why there is none.
///
/// A missing URL or token is reported before anything wrong with the input: it is the
/// operator's to fix, whatever the agent sent. Stdin is still read first, to its end
/// (up to the limit): a host whose write met a closed pipe would have a failed hook,
/// not the exit 2 it must see.
async fn decide(host: Host, args: &HookArgs, stdin: impl Read) -> anyhow::Result<String> {
    let bytes = read_input(stdin)?;
    let budget = Duration::from_secs(args.budget_secs);
    let client = args
        .service
        .client_builder()?
        .timeout(budget + args.service.retry() + Duration::from_secs(SLACK_SECS))
        .build()?;
    check_input(&bytes)?;
    let input = HookInput::parse(&bytes).map_err(|e| anyhow::anyhow!(e.problem))?;
    let rendered = render(host, &input).map_err(anyhow::Error::msg)?;
    let request = ApprovalRequest {
        code: rendered.code,
        language: Some(rendered.language.to_owned()),
        title: Some(rendered.title),
        context: Some(rendered.context),
        timeout_secs: Some(args.budget_secs),
        idempotency_key: input.idempotency_key(host),
        ..ApprovalRequest::default()
    };
    let decision = client.try_request_approval(request).await?;
    let verdict = Verdict::of(decision.status.as_str(), &decision.reason, &decision.id);
    Ok(host.answer(input.event, &verdict).to_string())
}

/// Stdin up to one byte over the limit, so that [`check_input`] can tell an oversized
/// input from one that fits. Err: stdin could not be read.
fn read_input(stdin: impl Read) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    stdin
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read the hook input from stdin: {e}"))?;
    Ok(bytes)
}

/// Err: the input read by [`read_input`] is over the limit, or blank.
fn check_input(bytes: &[u8]) -> anyhow::Result<()> {
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        anyhow::bail!("the hook input is larger than {MAX_INPUT_BYTES} bytes");
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        anyhow::bail!("no hook input on stdin");
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_oversized_stdin_are_refused() {
        assert!(check_input(b"  \n")
            .expect_err("empty")
            .to_string()
            .contains("no hook input"));
        let big = vec![b' '; MAX_INPUT_BYTES as usize + 2];
        let read = read_input(&big[..]).expect("read");
        assert_eq!(read.len() as u64, MAX_INPUT_BYTES + 1);
        assert!(check_input(&read)
            .expect_err("big")
            .to_string()
            .contains("larger than"));
        assert_eq!(read_input(&b"{}"[..]).expect("read"), b"{}");
        assert!(check_input(b"{}").is_ok());
    }

    #[test]
    fn errors_print_on_one_line() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
