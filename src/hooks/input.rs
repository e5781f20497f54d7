//! The hook input both hosts send, read leniently where hosts add fields and strictly
//! where greenlight depends on a value.
//!
//! Shape (Claude Code's hooks reference, "PreToolUse input" and "PermissionRequest
//! input"; Codex's `PermissionRequestCommandInput`, which mirrors it):
//!
//! ```json
//! {"session_id": "abc123", "transcript_path": "/home/u/.claude/projects/…/abc123.jsonl",
//!  "cwd": "/home/u/repo", "permission_mode": "default", "hook_event_name": "PreToolUse",
//!  "tool_name": "Bash", "tool_input": {"command": "npm test", "description": "Run tests"},
//!  "tool_use_id": "toolu_01…"}
//! ```
//!
//! Fields the hosts add later (`permission_suggestions`, `decision_reason`, `model`, …)
//! are ignored, so a newer host does not break the gate.

use serde::Deserialize;
use serde_json::Value;

/// The hook events greenlight decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Before every tool call; the answer is `permissionDecision`.
    PreToolUse,
    /// When the host would show its own permission prompt; the answer is
    /// `decision.behavior`.
    PermissionRequest,
}

impl Event {
    /// The host's `hook_event_name`, and the `hookEventName` of the answer:
    /// `PreToolUse` or `PermissionRequest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::PreToolUse => "PreToolUse",
            Event::PermissionRequest => "PermissionRequest",
        }
    }

    /// The event an input names in its first bytes, for an input too large to read
    /// whole. Hosts write `hook_event_name` before `tool_input`, the part that grows
    /// (agent-hosts.md lists the fields in that order), so the head of even a huge
    /// input names it. `None` when the head does not. The key is matched with its
    /// quotes, which a JSON string's contents cannot hold unescaped.
    pub fn named_in_head(head: &[u8]) -> Option<Self> {
        const KEY: &[u8] = b"\"hook_event_name\"";
        let after_key = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
        let rest = &head[after_key..];
        let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        if rest[colon] != b':' {
            return None;
        }
        let name = serde_json::Deserializer::from_slice(&rest[colon + 1..])
            .into_iter::<String>()
            .next()?
            .ok()?;
        Self::parse(&name)
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "PreToolUse" => Some(Event::PreToolUse),
            "PermissionRequest" => Some(Event::PermissionRequest),
            _ => None,
        }
    }
}

/// One hook call, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct HookInput {
    /// From `hook_event_name`; any other event is refused.
    pub event: Event,
    /// The host's `tool_name`, trimmed and never empty: `Bash`, `Edit`, `Write`, …,
    /// or `mcp__<server>__<tool>` for an MCP tool. What policy rules' `tool` matches.
    pub tool_name: String,
    /// The tool's arguments as the host sent them (an object for every known tool).
    pub tool_input: Value,
    /// The host's `session_id`; part of the idempotency key, and shown to reviewers.
    pub session_id: Option<String>,
    /// The host's `cwd`: the agent's working directory, on the agent's machine.
    pub cwd: Option<String>,
    /// The host's `permission_mode`, e.g. `default`, `acceptEdits`, `plan`,
    /// `bypassPermissions`; shown to reviewers, not interpreted.
    pub permission_mode: Option<String>,
    /// The host's `tool_use_id` (Claude Code's look like `toolu_01…`): the same for a
    /// retried hook of one tool call. `None` makes every call a new request.
    pub tool_use_id: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    hook_event_name: Option<String>,
    tool_name: Option<String>,
    tool_input: Option<Value>,
    session_id: Option<String>,
    cwd: Option<String>,
    permission_mode: Option<String>,
    tool_use_id: Option<String>,
}

/// Why a hook input cannot be decided. `event` is set when it could still be read, so
/// the answer can take that event's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The event, when `hook_event_name` named one greenlight decides; `None` when
    /// the input is not a JSON object or names no such event.
    pub event: Option<Event>,
    /// One line for the model or the user, e.g. `the hook input has no tool_name`.
    pub problem: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problem)
    }
}

impl HookInput {
    /// Parses the hook JSON. Errors name the problem in one line.
    pub fn parse(bytes: &[u8]) -> Result<Self, InputError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| InputError {
            event: None,
            problem: format!("the hook input is not valid JSON: {e}"),
        })?;
        Self::from_value(value)
    }

    /// Checks an already parsed hook JSON value.
    pub fn from_value(value: Value) -> Result<Self, InputError> {
        if !value.is_object() {
            return Err(InputError {
                event: None,
                problem: "the hook input must be a JSON object".into(),
            });
        }
        let event = value
            .get("hook_event_name")
            .and_then(Value::as_str)
            .and_then(Event::parse);
        let fail = |problem: String| InputError { event, problem };
        let raw: Raw = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let problem = crate::error::wording::api_terms(&e.into_inner().to_string());
            fail(format!(
                "the hook input has a field of the wrong type: {path}: {problem}"
            ))
        })?;
        let Some(event) = event else {
            return Err(fail(format!(
                "hook_event_name {:?} is not one greenlight decides (PreToolUse or PermissionRequest)",
                raw.hook_event_name.unwrap_or_default()
            )));
        };
        let tool_name = raw
            .tool_name
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("the hook input has no tool_name".into()))?;
        let tool_input = raw
            .tool_input
            .ok_or_else(|| fail("the hook input has no tool_input".into()))?;
        Ok(Self {
            event,
            tool_name,
            tool_input,
            session_id: raw.session_id,
            cwd: raw.cwd,
            permission_mode: raw.permission_mode,
            tool_use_id: raw.tool_use_id,
        })
    }

    /// A key that is the same for the same tool call of the same session, so a retried
    /// hook re-attaches to its request instead of asking twice. `None` without a
    /// `tool_use_id` (every call is then new).
    pub fn idempotency_key(&self, host: super::Host) -> Option<String> {
        let tool_use_id = self.tool_use_id.as_deref()?;
        let key = format!(
            "hook:{}:{}:{}:{}",
            host.slug(),
            self.event.as_str(),
            self.session_id.as_deref().unwrap_or("-"),
            tool_use_id
        );
        // The API's bound on keys; past it, asking twice beats refusing.
        (key.len() <= 200).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_huge_inputs_head_names_its_event() {
        let head = br#"{"session_id": "s", "hook_event_name" : "PermissionRequest", "tool_input": {"content": "xx"#;
        assert_eq!(Event::named_in_head(head), Some(Event::PermissionRequest));
        let quoted = br#"{"tool_input": {"content": "say \"hook_event_name\": \"PreToolUse\""#;
        assert_eq!(Event::named_in_head(quoted), None, "inside a string");
        assert_eq!(
            Event::named_in_head(br#"{"hook_event_name": "Stop"}"#),
            None
        );
        assert_eq!(
            Event::named_in_head(br#"{"hook_event_name": "PreTo"#),
            None,
            "cut"
        );
    }

    #[test]
    fn reads_the_documented_shape_and_ignores_new_fields() {
        let input = HookInput::from_value(json!({
            "session_id": "abc123", "transcript_path": "/t.jsonl", "cwd": "/repo",
            "permission_mode": "default", "hook_event_name": "PreToolUse",
            "tool_name": "Bash", "tool_input": {"command": "ls"}, "tool_use_id": "toolu_1",
            "permission_suggestions": [{"type": "addRules"}], "model": "claude"
        }))
        .expect("valid");
        assert_eq!(input.event, Event::PreToolUse);
        assert_eq!(input.tool_name, "Bash");
        assert_eq!(input.cwd.as_deref(), Some("/repo"));
        assert_eq!(
            input
                .idempotency_key(crate::hooks::Host::ClaudeCode)
                .as_deref(),
            Some("hook:claude-code:PreToolUse:abc123:toolu_1")
        );
    }

    #[test]
    fn problems_keep_the_event_when_it_could_be_read() {
        let err = HookInput::from_value(json!({"hook_event_name": "PermissionRequest",
                                               "tool_input": {}}))
        .expect_err("no tool");
        assert_eq!(err.event, Some(Event::PermissionRequest));
        assert!(err.problem.contains("no tool_name"), "{err}");
        let err = HookInput::from_value(json!({"hook_event_name": "PreToolUse",
                                               "tool_name": 3, "tool_input": {}}))
        .expect_err("wrong type");
        assert_eq!(err.event, Some(Event::PreToolUse));
        let err = HookInput::from_value(json!({"hook_event_name": "Stop"})).expect_err("event");
        assert_eq!(err.event, None);
        assert!(err.problem.contains("\"Stop\""), "{err}");
        let err = HookInput::parse(b"{not json").expect_err("json");
        assert!(
            err.problem.starts_with("the hook input is not valid JSON"),
            "{err}"
        );
        assert!(HookInput::parse(b"[1]").is_err());
    }
}
