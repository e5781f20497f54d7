//! A tool call as a reviewer reads it on a phone: what will run or change, in a code
//! block with the right highlighting, and the facts around it.
//!
//! - `Bash` → the command itself, language `bash`.
//! - `Edit`, `MultiEdit`, `Write` → a unified diff (language `diff`) with the file path
//!   in its header. `Edit` and `MultiEdit` send only the replaced fragment, so the diff
//!   is of the fragment (hunk line numbers count from its start); `Write` sends the
//!   whole new content, shown as added to `/dev/null` (the host does not say whether
//!   the file exists, and the service cannot read the agent's disk).
//! - Any other tool → its input as pretty JSON.
//!
//! Context: the host, event, tool name, session id, `cwd`, permission mode, tool use
//! id, and for Bash the agent's own description (kept out of the title: it is the
//! model's words, not what will run).

use serde_json::{json, Map, Value};
use similar::TextDiff;

use super::{HookInput, Host};

/// The most code one hook request may show: past it the tool call is denied as too
/// large to review (a request must fit the agent API's 1 MiB body once JSON-escaped,
/// and nobody reviews half a megabyte on a phone).
pub const MAX_CODE_BYTES: usize = 512 * 1024;
/// The API's bound on a title.
const MAX_TITLE_CHARS: usize = 200;

/// The approval request made from one tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// What the reviewer reads: the Bash command, a unified diff, or the input as
    /// pretty JSON; at most [`MAX_CODE_BYTES`] bytes.
    pub code: String,
    /// `bash`, `diff` or `json`, for highlighting.
    pub language: &'static str,
    /// e.g. "Claude Code wants to run a command": at most 200 characters, one line. A
    /// whole sentence with the host as its subject, so whatever shows it shows it as
    /// it is (Slack's notification: "Approval needed: claude-code — Claude Code wants
    /// to run a command"), never after words of its own such as "wants to".
    pub title: String,
    /// A JSON object; `tool_name` is what policy rules' `tool` matches.
    pub context: Value,
}

/// Renders a tool call; `Err` (one line) when it is too large to review.
pub fn render(host: Host, input: &HookInput) -> Result<Rendered, String> {
    let args = &input.tool_input;
    let text = |key: &str| args.get(key).and_then(Value::as_str);
    let mut extra = Map::new();
    let (code, language, what) = match (input.tool_name.as_str(), text("file_path")) {
        ("Bash", _) if text("command").is_some_and(|c| !c.trim().is_empty()) => {
            if let Some(description) = text("description") {
                extra.insert("description".into(), description.into());
            }
            let command = text("command").unwrap_or_default().to_owned();
            (command, "bash", "run a command".to_owned())
        }
        ("Edit", Some(path)) if text("old_string").is_some() && text("new_string").is_some() => {
            extra.insert("file_path".into(), path.into());
            if args.get("replace_all") == Some(&Value::Bool(true)) {
                extra.insert("replace_all".into(), true.into());
            }
            let diff = diff(
                path,
                path,
                text("old_string").unwrap_or_default(),
                text("new_string").unwrap_or_default(),
            );
            (diff, "diff", format!("edit {path}"))
        }
        ("MultiEdit", Some(path)) if multi_edits(args).is_some() => {
            extra.insert("file_path".into(), path.into());
            let diffs: Vec<String> = multi_edits(args)
                .unwrap_or_default()
                .into_iter()
                .map(|(old, new)| diff(path, path, old, new))
                .collect();
            (diffs.concat(), "diff", format!("edit {path}"))
        }
        ("Write", Some(path)) if text("content").is_some() => {
            extra.insert("file_path".into(), path.into());
            let diff = diff("/dev/null", path, "", text("content").unwrap_or_default());
            (diff, "diff", format!("write {path}"))
        }
        (tool, _) => {
            let pretty = serde_json::to_string_pretty(args).unwrap_or_else(|_| args.to_string());
            (pretty, "json", format!("use {tool}"))
        }
    };
    if code.len() > MAX_CODE_BYTES {
        return Err(format!(
            "the {} call is too large to review ({} bytes as shown to a reviewer; greenlight's limit is {MAX_CODE_BYTES})",
            input.tool_name,
            code.len()
        ));
    }
    Ok(Rendered {
        code,
        language,
        title: title(&format!("{} wants to {what}", host.display_name())),
        context: context(host, input, extra),
    })
}

/// `(old_string, new_string)` of every MultiEdit edit, or `None` if any is malformed.
fn multi_edits(args: &Value) -> Option<Vec<(&str, &str)>> {
    let edits = args.get("edits")?.as_array()?;
    if edits.is_empty() {
        return None;
    }
    edits
        .iter()
        .map(|edit| {
            Some((
                edit.get("old_string")?.as_str()?,
                edit.get("new_string")?.as_str()?,
            ))
        })
        .collect()
}

/// A unified diff with three lines of context, headed `--- from` / `+++ to`.
fn diff(from: &str, to: &str, old: &str, new: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}

/// At most [`MAX_TITLE_CHARS`], on one line.
fn title(raw: &str) -> String {
    let line: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() <= MAX_TITLE_CHARS {
        return line;
    }
    let mut short: String = line.chars().take(MAX_TITLE_CHARS - 1).collect();
    short.push('…');
    short
}

fn context(host: Host, input: &HookInput, extra: Map<String, Value>) -> Value {
    let mut context = json!({
        "host": host.slug(),
        crate::model::HOOK_EVENT_KEY: input.event.as_str(),
        crate::policy::tool::TOOL_NAME_KEY: input.tool_name,
    });
    if let Some(object) = context.as_object_mut() {
        for (key, value) in [
            ("session_id", &input.session_id),
            ("cwd", &input.cwd),
            ("permission_mode", &input.permission_mode),
            ("tool_use_id", &input.tool_use_id),
        ] {
            if let Some(value) = value {
                object.insert(key.into(), value.clone().into());
            }
        }
        object.extend(extra);
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Event;

    fn input(tool: &str, tool_input: Value) -> HookInput {
        HookInput {
            event: Event::PreToolUse,
            tool_name: tool.into(),
            tool_input,
            session_id: Some("s1".into()),
            cwd: Some("/repo".into()),
            permission_mode: Some("default".into()),
            tool_use_id: Some("toolu_1".into()),
        }
    }

    #[test]
    fn bash_is_the_command_and_the_description_stays_in_the_context() {
        let r = render(
            Host::ClaudeCode,
            &input(
                "Bash",
                json!({"command": "npm test", "description": "Harmless"}),
            ),
        )
        .expect("renders");
        assert_eq!((r.code.as_str(), r.language), ("npm test", "bash"));
        assert_eq!(r.title, "Claude Code wants to run a command");
        assert_eq!(r.context["description"], "Harmless");
        assert_eq!(r.context["tool_name"], "Bash");
        assert_eq!(r.context["cwd"], "/repo");
        assert_eq!(r.context["session_id"], "s1");
    }

    #[test]
    fn an_edit_is_a_unified_diff_of_the_fragment() {
        let r = render(
            Host::Codex,
            &input(
                "Edit",
                json!({"file_path": "/repo/src/a.rs", "old_string": "fn a() {\n    1\n}\n",
                       "new_string": "fn a() {\n    2\n}\n"}),
            ),
        )
        .expect("renders");
        assert_eq!(r.language, "diff");
        assert_eq!(r.title, "Codex wants to edit /repo/src/a.rs");
        assert_eq!(
            r.code,
            "--- /repo/src/a.rs\n+++ /repo/src/a.rs\n@@ -1,3 +1,3 @@\n fn a() {\n-    1\n+    2\n }\n"
        );
    }

    #[test]
    fn a_multi_edit_shows_every_edit_and_a_write_is_all_added() {
        let r = render(
            Host::ClaudeCode,
            &input(
                "MultiEdit",
                json!({"file_path": "f", "edits": [{"old_string": "a", "new_string": "b"},
                                                   {"old_string": "c", "new_string": "d"}]}),
            ),
        )
        .expect("renders");
        assert_eq!(r.code.matches("--- f\n+++ f\n").count(), 2, "{}", r.code);
        assert!(r.code.contains("-a") && r.code.contains("+d"), "{}", r.code);
        let w = render(
            Host::ClaudeCode,
            &input(
                "Write",
                json!({"file_path": "/r/new.txt", "content": "one\ntwo\n"}),
            ),
        )
        .expect("renders");
        assert_eq!(
            w.code,
            "--- /dev/null\n+++ /r/new.txt\n@@ -0,0 +1,2 @@\n+one\n+two\n"
        );
        assert_eq!(w.title, "Claude Code wants to write /r/new.txt");
    }

    #[test]
    fn other_tools_and_malformed_inputs_are_pretty_json() {
        for (tool, args) in [
            (
                "mcp__github__create_issue",
                json!({"title": "x", "body": "y"}),
            ),
            ("Bash", json!({"command": "  "})),
            ("Edit", json!({"file_path": "f"})),
            (
                "MultiEdit",
                json!({"file_path": "f", "edits": [{"old_string": 1}]}),
            ),
        ] {
            let r = render(Host::ClaudeCode, &input(tool, args.clone())).expect("renders");
            assert_eq!(r.language, "json", "{tool}");
            assert_eq!(r.code, serde_json::to_string_pretty(&args).expect("json"));
            assert_eq!(r.title, format!("Claude Code wants to use {tool}"));
        }
    }

    #[test]
    fn huge_inputs_are_refused_and_long_titles_cut() {
        let big = "x".repeat(MAX_CODE_BYTES + 1);
        let err = render(Host::ClaudeCode, &input("Bash", json!({"command": big})))
            .expect_err("too large");
        assert!(err.contains("too large to review"), "{err}");
        let long_path = format!("/{}", "d/".repeat(200));
        let r = render(
            Host::ClaudeCode,
            &input("Write", json!({"file_path": long_path, "content": ""})),
        )
        .expect("renders");
        assert_eq!(r.title.chars().count(), MAX_TITLE_CHARS);
        assert!(r.title.ends_with('…'));
    }
}
