//! Rule conditions for coding agents' tool calls: `tool` (the tool's name) and
//! `command_prefix` (a shell command that starts with one of a few safe commands).
//!
//! Hook requests (`crate::hooks`) carry the host's tool name in their context as
//! `context.tool_name` ("Bash", "Edit", "mcp__github__create_issue", …) and the Bash
//! command as their code, so rules read both from data every request already stores:
//! the same answer comes out at submit time, at click time and in `policy check`.

/// The key of the request's context that holds the tool name.
pub const TOOL_NAME_KEY: &str = "tool_name";

/// Characters that let one shell command line run more than one command, run a
/// command inside another, or redirect output: `;` `&` `|` `` ` `` `$` `(` `)` `<`
/// `>`, a backslash (escapes, line continuations) and line breaks. A command holding
/// any of them never matches `command_prefix`, so `ls; rm -rf ~` or `cat x > y` is
/// not "a command starting with `ls`/`cat`".
const SHELL_CONTROL: &[char] = &[
    ';', '&', '|', '`', '$', '(', ')', '<', '>', '\\', '\n', '\r',
];

/// The tool name in a request's context (`context.tool_name`), if it has one.
pub fn tool_name(context: Option<&serde_json::Value>) -> Option<&str> {
    context?.get(TOOL_NAME_KEY)?.as_str()
}

/// Does `command` run exactly one of `prefixes`, with any arguments after it?
///
/// `git status` matches `git status` and `git status -s`, never `git statusx`, and
/// never a command line that chains, nests or redirects (one holding any of `;` `&`
/// `|` `` ` `` `$` `(` `)` `<` `>` `\` or a line break; see `SHELL_CONTROL`).
pub fn command_has_prefix(command: &str, prefixes: &[String]) -> bool {
    let command = command.trim();
    if command.contains(SHELL_CONTROL) {
        return false;
    }
    prefixes
        .iter()
        .any(|prefix| match command.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with([' ', '\t']),
            None => false,
        })
}

/// Reads `command_prefix = "ls"` or `["ls", "git status"]`: non-empty commands without
/// shell control characters (they could never match).
pub fn parse_prefixes(value: &toml::Value) -> Result<Vec<String>, String> {
    const SHAPE: &str = "must be a string or a non-empty list of strings";
    let items: Vec<&str> = match value {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().ok_or(SHAPE.to_owned()))
            .collect::<Result<_, _>>()?,
        _ => return Err(SHAPE.to_owned()),
    };
    items
        .into_iter()
        .map(|item| {
            let prefix = item.trim();
            if prefix.is_empty() {
                Err("must not contain an empty command".to_owned())
            } else if prefix.contains(SHELL_CONTROL) {
                Err(format!(
                    "{prefix:?} contains a shell control character (; & | ` $ ( ) < > \\ or a line break), so it could never match"
                ))
            } else {
                Ok(prefix.to_owned())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prefixes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_prefix_matches_whole_words_with_any_arguments() {
        let p = prefixes(&["ls", "git status"]);
        for yes in [
            "ls",
            "ls -la",
            "  ls\t/tmp  ",
            "git status",
            "git status -s",
        ] {
            assert!(command_has_prefix(yes, &p), "{yes}");
        }
        for no in ["lsof", "git statusx", "git", "rm -rf /", "echo ls"] {
            assert!(!command_has_prefix(no, &p), "{no}");
        }
    }

    #[test]
    fn chained_nested_or_redirected_commands_never_match() {
        let p = prefixes(&["ls", "cat"]);
        for no in [
            "ls; rm -rf ~",
            "ls && rm -rf ~",
            "ls || rm x",
            "ls | sh",
            "ls `rm x`",
            "ls $(rm x)",
            "cat a > b",
            "cat < /etc/shadow",
            "ls \\\n; rm x",
            "ls\nrm -rf ~",
            "ls & rm x",
        ] {
            assert!(!command_has_prefix(no, &p), "{no:?}");
        }
    }

    #[test]
    fn prefixes_are_checked_when_the_policy_is_read() {
        let ok = parse_prefixes(&toml::Value::Array(vec![
            toml::Value::String(" ls ".into()),
            toml::Value::String("git log".into()),
        ]))
        .expect("valid");
        assert_eq!(ok, prefixes(&["ls", "git log"]));
        assert!(parse_prefixes(&toml::Value::String("ls | cat".into()))
            .expect_err("control")
            .contains("shell control character"));
        assert!(parse_prefixes(&toml::Value::String("  ".into())).is_err());
        assert!(parse_prefixes(&toml::Value::Array(vec![])).is_err());
        assert!(parse_prefixes(&toml::Value::Integer(3)).is_err());
    }

    #[test]
    fn the_tool_name_comes_from_the_context() {
        let context = json!({"tool_name": "Bash", "cwd": "/repo"});
        assert_eq!(tool_name(Some(&context)), Some("Bash"));
        assert_eq!(tool_name(Some(&json!({"tool_name": 3}))), None);
        assert_eq!(tool_name(Some(&json!(["Bash"]))), None);
        assert_eq!(tool_name(None), None);
    }

    #[test]
    fn rules_match_the_tool_and_the_command() {
        let policy = crate::policy::parse(
            r#"
[[rule]]
name = "read-only tools"
action = "auto_approve"
tool = ["Read", "Grep", "Glob"]

[[rule]]
name = "read-only shell"
action = "auto_approve"
tool = "Bash"
command_prefix = ["ls", "git status"]
"#,
            "p.toml",
        )
        .expect("valid");
        let rule = |code: &str, tool: &str| {
            let context = json!({ "tool_name": tool });
            let subject = crate::policy::Subject {
                agent: Some("claude"),
                language: Some("bash"),
                code,
                context: Some(&context),
            };
            policy.rule_for(&subject).name.clone()
        };
        assert_eq!(rule("{}", "Grep"), "read-only tools");
        assert_eq!(rule("ls -la", "Bash"), "read-only shell");
        assert_eq!(rule("ls -la; rm -rf ~", "Bash"), "default");
        assert_eq!(rule("ls -la", "Write"), "default");
        assert_eq!(rule("rm -rf ~", "Bash"), "default");
        let err = crate::policy::parse(
            "[[rule]]\nname = \"r\"\ncommand_prefix = \"ls;\"\n",
            "p.toml",
        )
        .expect_err("refused")
        .to_string();
        assert!(
            err.starts_with("p.toml:3:18: rule \"r\": command_prefix"),
            "{err}"
        );
    }
}
