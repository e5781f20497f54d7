//! The policy parser (`src/policy/parse.rs`): an operator's file, so not hostile as
//! such, but a typo or a pasted regex must never crash start-up or `policy check`:
//! every refusal is one line `policy.toml:line:col: problem` pointing into the file.

use greenlight::policy::{self, Defaults, Requested, Subject};
use proptest::prelude::*;
use serde_json::json;

use crate::{assert_clear, fuzz};

const FILE: &str = "policy.toml";

const KEYS: &[&str] = &[
    "name",
    "action",
    "agent",
    "language",
    "code",
    "context.env",
    "context.region",
    "context",
    "reason",
    "notify",
    "channel",
    "approvers",
    "required_approvals",
    "timeout_secs",
    "high_risk",
    "unknown_key",
];

/// Strings a rule might hold, including regexes that are hard on the regex crate.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("route".to_owned()),
        Just("auto_approve".to_owned()),
        Just("auto_deny".to_owned()),
        Just("C0PROD".to_owned()),
        Just("U0ALICE".to_owned()),
        Just("S0SRE".to_owned()),
        Just("(a*)*b".to_owned()),
        Just("(x+x+)+y".to_owned()),
        Just("a{1000}{1000}".to_owned()),
        Just("x{4294967295}".to_owned()),
        Just("[[:alpha:]".to_owned()),
        Just("\\p{Greek}+".to_owned()),
        Just("(?i)^\\s*(ls|pwd)\\s*$".to_owned()),
        Just("((((((((((a))))))))))".repeat(30)),
        "[a-zA-Z0-9_ -]{0,70}",
        "\\PC{0,40}",
    ]
}

/// A TOML basic string literal holding `s` (escaped), or a literal string.
fn quoted(s: &str, literal: bool) -> String {
    if literal && !s.contains('\'') && !s.contains('\n') {
        format!("'{s}'")
    } else {
        toml_escape(s)
    }
}

fn toml_escape(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML value of any type a key might (wrongly) get.
fn value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        (string(), any::<bool>()).prop_map(|(s, literal)| quoted(&s, literal)),
        any::<i64>().prop_map(|n| n.to_string()),
        (-3i64..20).prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1.5".to_owned()),
        Just("inf".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ];
    scalar.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            (string(), any::<bool>())
                .prop_map(|(s, literal)| format!("{{ regex = {} }}", quoted(&s, literal))),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..3).prop_map(|pairs| {
                let body: Vec<String> = pairs
                    .into_iter()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

/// A file of `[[rule]]` tables with keys from the real set, then a few random
/// character edits (a typo, a stray quote, a cut line).
fn policy_file() -> impl Strategy<Value = String> {
    let rule =
        prop::collection::vec((prop::sample::select(KEYS), value()), 0..8).prop_map(|lines| {
            let mut text = String::from("[[rule]]\n");
            for (key, value) in lines {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text
        });
    (
        prop::collection::vec(rule, 0..5),
        prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 0..4),
    )
        .prop_map(|(rules, edits)| {
            let mut chars: Vec<char> = rules.concat().chars().collect();
            for (at, c, op) in edits {
                let i = at.index(chars.len() + 1);
                match op {
                    0 => chars.insert(i, c),
                    1 if i < chars.len() => {
                        chars.remove(i);
                    }
                    _ if i < chars.len() => chars[i] = c,
                    _ => chars.push(c),
                }
            }
            chars.into_iter().collect()
        })
}

/// Parses `source`; a refusal must be one line naming the file and, when it has a
/// place, a line and column inside the file. A policy that loads must answer
/// requests, hostile ones included.
fn judge(source: &str) -> Result<(), TestCaseError> {
    match policy::parse(source, FILE) {
        Err(error) => {
            let text = error.to_string();
            assert_clear(&text);
            prop_assert!(text.starts_with(&format!("{FILE}:")), "{}", text);
            prop_assert!(!error.problem.trim().is_empty());
            if let Some((line, col)) = error.position {
                let lines = source.split('\n').count();
                prop_assert!(
                    line >= 1 && line <= lines,
                    "line {} of {}: {}",
                    line,
                    lines,
                    text
                );
                prop_assert!(col >= 1, "{}", text);
            }
        }
        Ok(policy) => {
            let context = json!({"env": "prod", "region": "eu-west-1", "n": 1});
            let code = "a".repeat(3000) + "x(a*)*b kubectl apply ls";
            for language in [None, Some("bash"), Some("")] {
                let subject = Subject {
                    agent: Some("deploy-bot"),
                    language,
                    code: &code,
                    context: Some(&context),
                };
                let _ = policy.plan(
                    &subject,
                    Requested {
                        required_approvals: 1,
                        timeout_secs: 300,
                    },
                    &Defaults {
                        channel: "C0DEFAULT".into(),
                        approvers: None,
                    },
                );
            }
        }
    }
    Ok(())
}

#[test]
fn generated_policy_files() {
    fuzz("policy: generated file", policy_file(), |source| {
        judge(&source)
    });
}

#[test]
fn any_text_as_a_policy_file() {
    fuzz("policy: any text", "\\PC{0,400}|(?s).{0,400}", |source| {
        judge(&source)
    });
}

#[test]
fn deeply_nested_values_are_refused_not_overflowed() {
    for depth in [100, 1_000, 10_000] {
        let source = format!(
            "[[rule]]\nname = \"n\"\nlanguage = {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        judge(&source).expect("judged");
        let source = format!(
            "[[rule]]\nname = \"n\"\ncontext = {}{}\n",
            "{ a = ".repeat(depth),
            "}".repeat(depth)
        );
        judge(&source).expect("judged");
    }
}

/// Found by this fuzzer: toml reports a bare carriage return with an empty message.
#[test]
fn a_stray_carriage_return_is_named() {
    for source in ["\r", "\r0", "[[rule]]\r"] {
        let error = policy::parse(source, FILE).expect_err("not TOML");
        assert!(!error.problem.is_empty(), "{source:?}: {error:?}");
        assert_eq!(error.position.map(|(line, _)| line), Some(1));
    }
}
