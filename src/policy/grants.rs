//! Standing grants, the policy side: which rules may offer "Approve for 30 min", and
//! what "the same action" means for a later request (pure functions, no store).
//!
//! A rule allows grants with `grant_max_secs` (the longest grant) and
//! `grant_durations_secs` (the buttons offered, each at most `grant_max_secs`).
//! `grant_match` says what a grant covers: `"exact"` (default) is the same code after
//! whitespace normalisation ([`normalise`]); `"command_prefix"` is the same command
//! prefix out of the rule's own `command_prefix` list ([`action_key`]).
//!
//! A grant also records the rule's [`fingerprint`]: a hash of everything the rule
//! matches on. A policy file change to what the rule matches gives the rule another
//! fingerprint, so the old grants no longer cover anything.

use sha2::{Digest, Sha256};

use super::tool;

/// What a grant covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantMatch {
    /// The same code after [`normalise`].
    Exact,
    /// The same prefix out of the rule's `command_prefix` list.
    CommandPrefix,
}

impl GrantMatch {
    /// The `grant_match` value as written in the policy file, and a grant's
    /// `match_kind` in `GET /v1/grants`: `exact` or `command_prefix`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantMatch::Exact => "exact",
            GrantMatch::CommandPrefix => "command_prefix",
        }
    }

    /// Reads a `grant_match` value, exactly as [`GrantMatch::as_str`] spells it (case
    /// matters); `None` for anything else, which the parser reports as an error.
    pub fn parse(raw: &str) -> Option<Self> {
        [GrantMatch::Exact, GrantMatch::CommandPrefix]
            .into_iter()
            .find(|m| m.as_str() == raw)
    }
}

/// A rule's grant settings (`grant_max_secs` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRule {
    /// `grant_max_secs`: the longest a grant may last, in seconds (1 to 604800, a
    /// week). A grant is also void once it is older than this, so lowering it in the
    /// policy file shortens existing grants.
    pub max_secs: u64,
    /// `grant_durations_secs`: the durations offered as buttons, in seconds, distinct,
    /// each at most `max_secs`, ascending, at most [`MAX_DURATIONS`]; `[max_secs]`
    /// when unset.
    pub durations_secs: Vec<u64>,
    /// `grant_match`: what one grant covers; [`GrantMatch::Exact`] when unset.
    pub matching: GrantMatch,
}

/// Slack documents at most 25 elements in an actions block; Approve, Deny and the
/// code-view buttons share it, so few durations are offered.
pub const MAX_DURATIONS: usize = 3;

/// The button's words for a duration: "Approve for 30 min", "Approve for 2 h".
pub fn duration_label(secs: u64) -> String {
    if secs.is_multiple_of(3600) {
        format!("Approve for {} h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("Approve for {} min", secs / 60)
    } else {
        format!("Approve for {secs} s")
    }
}

/// Code with whitespace normalised: runs of spaces and tabs outside quotes become one
/// space, each line is trimmed, blank lines are dropped. Line breaks stay (in a shell
/// they separate commands, so `a\nb` is not `a b`), and so does everything inside
/// single or double quotes (`echo "a  b"` prints two spaces) and every character a
/// backslash escapes (`a\ b` is one word). Only ASCII space and tab collapse: a shell
/// splits words on those, not on a no-break space or a vertical tab, so those stay.
pub fn normalise(code: &str) -> String {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut pending_space = false;
    for c in code.chars() {
        if let Some(q) = quote {
            line.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if escaped {
            escaped = false;
            line.push(c);
            continue;
        }
        match c {
            '\n' | '\r' => {
                pending_space = false;
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
            }
            ' ' | '\t' => pending_space = !line.is_empty(),
            c => {
                if pending_space {
                    line.push(' ');
                    pending_space = false;
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                escaped = c == '\\';
                line.push(c);
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines.join("\n")
}

/// What a grant made from (or checked against) a request with this code covers:
/// the normalised code, or the longest prefix of `prefixes` the command starts
/// with. `None` when the code is empty after normalising, or (`CommandPrefix`) it
/// starts with none of them (`tool::command_has_prefix`): nothing can be granted.
pub fn action_key(matching: GrantMatch, code: &str, prefixes: Option<&[String]>) -> Option<String> {
    match matching {
        GrantMatch::Exact => Some(normalise(code)).filter(|k| !k.is_empty()),
        GrantMatch::CommandPrefix => prefixes?
            .iter()
            .filter(|p| tool::command_has_prefix(code, std::slice::from_ref(p)))
            .max_by_key(|p| p.len())
            .cloned(),
    }
}

/// A stable hash (SHA-256, hex) of what a rule matches on: its name, `grant_match`
/// and each condition as written (`parts`: key and its TOML value as JSON, in a fixed
/// order). Where the rule sits in the file, its channel or approvers do not count.
pub fn fingerprint(name: &str, matching: Option<GrantMatch>, parts: &[(&str, String)]) -> String {
    let mut hash = Sha256::new();
    let mut field = |text: &str| {
        hash.update((text.len() as u64).to_be_bytes());
        hash.update(text.as_bytes());
    };
    field(name);
    field(matching.map_or("", GrantMatch::as_str));
    for (key, value) in parts {
        field(key);
        field(value);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_outside_quotes_is_normalised() {
        assert_eq!(normalise("  cargo   test\t--all  "), "cargo test --all");
        assert_eq!(normalise("cargo test --all"), "cargo test --all");
        assert_eq!(normalise("a \n\n   b  \r\n"), "a\nb");
        // Line breaks separate commands: never merged into a space.
        assert_ne!(normalise("rm x\nls"), normalise("rm x ls"));
        // Quoted text is kept as it is.
        assert_eq!(
            normalise("echo  \"a   b\"  'c  d'"),
            "echo \"a   b\" 'c  d'"
        );
        assert_eq!(normalise(r#"echo "x\"  y"   z"#), r#"echo "x\"  y" z"#);
        assert_eq!(normalise(" \n\t "), "");
    }

    #[test]
    fn only_what_a_shell_splits_on_is_normalised() {
        // A shell does not split words on these: they are not the granted command.
        for odd in ["\u{a0}", "\u{3000}\u{3000}", "\u{b}"] {
            let code = format!("cargo test{odd}--lib");
            assert_ne!(normalise(&code), normalise("cargo test --lib"), "{code:?}");
        }
        // An escaped space is part of a word: `a\ b` is one argument, `a\   b` two.
        assert_ne!(
            normalise("cargo test a\\ b"),
            normalise("cargo test a\\   b")
        );
        assert_eq!(normalise("cargo test a\\ b"), "cargo test a\\ b");
        assert_eq!(normalise("cargo  test\t a\\ b "), "cargo test a\\ b");
    }

    #[test]
    fn action_keys() {
        assert_eq!(
            action_key(GrantMatch::Exact, " cargo  test ", None).as_deref(),
            Some("cargo test")
        );
        assert_eq!(action_key(GrantMatch::Exact, "  ", None), None);
        let prefixes = vec!["git".to_owned(), "git log".to_owned(), "ls".to_owned()];
        let key = |code| action_key(GrantMatch::CommandPrefix, code, Some(&prefixes));
        // The longest prefix the command starts with.
        assert_eq!(key("git log -n 3").as_deref(), Some("git log"));
        assert_eq!(key("git status").as_deref(), Some("git"));
        assert_eq!(key("ls -la").as_deref(), Some("ls"));
        assert_eq!(key("lsblk"), None);
        assert_eq!(key("ls; rm -rf ~"), None);
        assert_eq!(action_key(GrantMatch::CommandPrefix, "ls", None), None);
    }

    #[test]
    fn fingerprints_follow_what_the_rule_matches() {
        let base = fingerprint(
            "tests",
            Some(GrantMatch::Exact),
            &[("code", "\"^cargo\"".into())],
        );
        assert_eq!(
            base,
            fingerprint(
                "tests",
                Some(GrantMatch::Exact),
                &[("code", "\"^cargo\"".into())]
            )
        );
        for other in [
            fingerprint(
                "tests",
                Some(GrantMatch::Exact),
                &[("code", "\"^cargo \"".into())],
            ),
            fingerprint(
                "tests2",
                Some(GrantMatch::Exact),
                &[("code", "\"^cargo\"".into())],
            ),
            fingerprint(
                "tests",
                Some(GrantMatch::CommandPrefix),
                &[("code", "\"^cargo\"".into())],
            ),
            fingerprint(
                "tests",
                Some(GrantMatch::Exact),
                &[("agent", "\"^cargo\"".into())],
            ),
            fingerprint("tests", Some(GrantMatch::Exact), &[]),
        ] {
            assert_ne!(base, other);
        }
        // Length-prefixed fields: moving text between fields changes the hash.
        assert_ne!(
            fingerprint("ab", None, &[("c", String::new())]),
            fingerprint("a", None, &[("bc", String::new())])
        );
    }

    #[test]
    fn labels() {
        assert_eq!(duration_label(1800), "Approve for 30 min");
        assert_eq!(duration_label(7200), "Approve for 2 h");
        assert_eq!(duration_label(45), "Approve for 45 s");
    }
}
