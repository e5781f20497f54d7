//! Claude Code's hook answers (its hooks reference, "PreToolUse decision control" and
//! "PermissionRequest decision control"):
//!
//! ```json
//! {"hookSpecificOutput": {"hookEventName": "PreToolUse",
//!   "permissionDecision": "allow" | "deny", "permissionDecisionReason": "…"}}
//! {"hookSpecificOutput": {"hookEventName": "PermissionRequest",
//!   "decision": {"behavior": "allow"} | {"behavior": "deny", "message": "…"}}}
//! ```
//!
//! For `PreToolUse` the reason of a deny is shown to the model (and of an allow to the
//! user); for `PermissionRequest` the message of a deny is shown to the model. An allow
//! of a `PermissionRequest` carries no message: the reference defines `message` for
//! deny only.

use serde_json::{json, Value};

use super::{Event, Verdict};

/// The answer JSON for `verdict` on `event`.
pub fn answer(event: Event, verdict: &Verdict) -> Value {
    match event {
        Event::PreToolUse => json!({
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": if verdict.allow { "allow" } else { "deny" },
                "permissionDecisionReason": verdict.reason,
            }
        }),
        Event::PermissionRequest => {
            let decision = if verdict.allow {
                json!({ "behavior": "allow" })
            } else {
                json!({ "behavior": "deny", "message": verdict.reason })
            };
            json!({
                "hookSpecificOutput": {
                    "hookEventName": "PermissionRequest",
                    "decision": decision,
                }
            })
        }
    }
}

/// The answer when the event itself could not be read (a body that is not a hook
/// input): the universal `{"continue": false, "stopReason": …}`, which stops Claude
/// whatever the event was. A shaped deny needs the event; an HTTP error status would
/// be a non-blocking error, and the tool would run.
pub fn stop(reason: &str) -> Value {
    json!({ "continue": false, "stopReason": reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tool_use_answers_carry_decision_and_reason() {
        let allow = answer(Event::PreToolUse, &Verdict::allow("ok by <@U1>"));
        assert_eq!(
            allow,
            json!({"hookSpecificOutput": {"hookEventName": "PreToolUse",
                   "permissionDecision": "allow", "permissionDecisionReason": "ok by <@U1>"}})
        );
        let deny = answer(Event::PreToolUse, &Verdict::blocked("down"));
        assert_eq!(deny["hookSpecificOutput"]["permissionDecision"], "deny");
    }

    #[test]
    fn permission_request_answers_carry_a_behavior_and_a_deny_message() {
        assert_eq!(
            answer(Event::PermissionRequest, &Verdict::allow("ok")),
            json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
                   "decision": {"behavior": "allow"}}})
        );
        let deny = Verdict {
            allow: false,
            reason: "not on a Friday".into(),
        };
        assert_eq!(
            answer(Event::PermissionRequest, &deny),
            json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
                   "decision": {"behavior": "deny", "message": "not on a Friday"}}})
        );
    }
}
