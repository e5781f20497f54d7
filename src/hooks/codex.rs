//! Codex's hook answers (openai/codex `codex-rs/hooks`: the output schema and parser;
//! PR #17563 added `PermissionRequest`).
//!
//! Codex takes the same JSON as Claude Code (`hookSpecificOutput.decision.behavior`
//! plus a deny `message` for `PermissionRequest`), but its parser refuses unknown
//! fields, and a hook whose output it cannot parse gives no decision: Codex then falls
//! back to its own prompt. So the answer is exactly the documented fields and nothing
//! else, built by the same function as Claude Code's; this module exists so that a
//! divergence of the two hosts has one obvious place to go.

use serde_json::Value;

use super::{Event, Verdict};

/// The answer JSON for `verdict` on `event` (see the module doc).
pub fn answer(event: Event, verdict: &Verdict) -> Value {
    super::claude_code::answer(event, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deny_has_exactly_the_documented_fields() {
        let deny = Verdict {
            allow: false,
            reason: "no".into(),
        };
        assert_eq!(
            answer(Event::PermissionRequest, &deny),
            json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
                   "decision": {"behavior": "deny", "message": "no"}}})
        );
    }
}
