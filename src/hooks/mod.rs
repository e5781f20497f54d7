//! Coding agents asking through greenlight: Claude Code's and Codex's permission hooks.
//!
//! Both hosts send the same hook input (Claude Code's hooks reference; Codex's
//! `codex-rs/hooks` schema): `session_id`, `transcript_path`, `cwd`, `permission_mode`,
//! `hook_event_name`, `tool_name`, `tool_input`, `tool_use_id`. greenlight reads the
//! `PreToolUse` and `PermissionRequest` events, turns the tool call into an approval
//! request a person can read on a phone ([`render`]), lets the policy and Slack decide
//! it like any other request, and answers in the shape the host parses
//! ([`claude_code`], [`codex`]).
//!
//! Hooks fail open (a hook that times out, crashes or answers garbage lets the tool
//! run: claude-code #84656, codex #41979), so everything here ends in an explicit
//! answer: a decision, or a deny that names what went wrong.
//!
//! # Layout
//! - [`input`]: the hook input, parsed and checked.
//! - [`render`]: tool call → code, language, title and context for the reviewer.
//! - [`claude_code`], [`codex`]: each host's answer JSON.
//! - [`command`]: `greenlight hook claude-code|codex`, the command hooks.

pub mod claude_code;
pub mod codex;
pub mod command;
pub mod input;
pub mod render;

use serde_json::Value;

pub use input::{Event, HookInput};

/// The agent hosts greenlight answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Claude Code: a `command` hook (`greenlight hook claude-code`) or an `http`
    /// hook (`POST /v1/hooks/claude-code`).
    ClaudeCode,
    /// Codex CLI: a `command` hook (`greenlight hook codex`) on `PermissionRequest`;
    /// its parser refuses unknown fields in the answer.
    Codex,
}

impl Host {
    /// The name the reviewer reads ("Claude Code wants to …").
    pub fn display_name(self) -> &'static str {
        match self {
            Host::ClaudeCode => "Claude Code",
            Host::Codex => "Codex",
        }
    }

    /// The name stored in the request's context (`context.host`), for policy rules.
    pub fn slug(self) -> &'static str {
        match self {
            Host::ClaudeCode => "claude-code",
            Host::Codex => "codex",
        }
    }

    /// The host's answer JSON for `verdict` on `event`.
    pub fn answer(self, event: Event, verdict: &Verdict) -> Value {
        match self {
            Host::ClaudeCode => claude_code::answer(event, verdict),
            Host::Codex => codex::answer(event, verdict),
        }
    }
}

/// What the host is told: allow or deny, and why (shown to the model or the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `true` only for an approved request; every other outcome, greenlight's own
    /// failures included, is a deny.
    pub allow: bool,
    /// Becomes `permissionDecisionReason` (`PreToolUse`), a deny's `message`
    /// (`PermissionRequest`), or a command hook's stderr. Greenlight's own reasons
    /// start `greenlight:` and name the request id when there is one.
    pub reason: String,
}

impl Verdict {
    /// An allow with `reason` as given. Claude Code shows a `PreToolUse` allow's
    /// reason to the user; a `PermissionRequest` allow carries no reason at all.
    pub fn allow(reason: impl Into<String>) -> Self {
        Self {
            allow: true,
            reason: reason.into(),
        }
    }

    /// A deny because greenlight could not get a decision: the reason says so, and
    /// that the tool was blocked on purpose (fail closed).
    pub fn blocked(problem: impl std::fmt::Display) -> Self {
        Self {
            allow: false,
            reason: format!("greenlight: {problem}; blocked (fail closed)"),
        }
    }

    /// The verdict for a request's final state: only `approved` allows. The reason
    /// names the request id so a person can find it in Slack and the audit trail.
    pub fn of(status: &str, reason: &str, id: &str) -> Self {
        let allow = status == "approved";
        let reason = match status {
            "approved" => format!("greenlight: {reason} (request {id})"),
            // A reviewer's own words ("keep the old rounding") need the verdict before
            // them; the service's own reasons already start with it.
            "denied" if reason.starts_with("Denied") => {
                format!("greenlight: {reason} (request {id})")
            }
            "denied" => format!("greenlight: denied: {reason} (request {id})"),
            "expired" => format!(
                "greenlight: nobody decided in time, so it is denied: {reason} (request {id})"
            ),
            other => format!("greenlight: {other}: {reason} (request {id})"),
        };
        Self { allow, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_approval_allows_and_every_reason_names_the_request() {
        assert!(Verdict::of("approved", "Approved in Slack by <@U1>", "r1").allow);
        for status in ["denied", "expired", "cancelled", "pending", "weird"] {
            let verdict = Verdict::of(status, "why", "r1");
            assert!(!verdict.allow, "{status}");
            assert!(verdict.reason.contains("(request r1)"), "{verdict:?}");
        }
        assert_eq!(
            Verdict::of("denied", "not on a Friday", "r1").reason,
            "greenlight: denied: not on a Friday (request r1)"
        );
        assert_eq!(
            Verdict::of("denied", "Denied in Slack by <@U1>", "r1").reason,
            "greenlight: Denied in Slack by <@U1> (request r1)"
        );
        assert!(Verdict::of("expired", "Timed out", "r1")
            .reason
            .contains("nobody decided in time"));
        let blocked = Verdict::blocked("the service is unreachable");
        assert!(!blocked.allow);
        assert!(blocked.reason.ends_with("blocked (fail closed)"));
    }
}
