//! Property test: every Slack surface greenlight renders, fed adversarial text in every
//! field a requester or reviewer controls, stays within every documented limit
//! ([`limits`]) after escaping, with no entity cut and nothing unescaped.
//!
//! Surfaces: the pending message (with votes and the high-risk confirm dialog), the
//! final message in every state, both fallback messages, the full-code and context
//! modals, the deny-reason modal, the ephemeral notes, and the uploaded file's title.
//! Texts: dense `&<>`, emoji, combining marks, right-to-left and isolate controls,
//! control and invisible characters, backtick runs, one very long line, many short
//! lines, mention and link syntax, and arbitrary Unicode, concatenated.
//!
//! `PROPTEST_CASES=5000 cargo test --lib text_props` runs a longer search.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{
    api::SlackError,
    blocks::{self, PendingExtras},
    code_view, fallback, interactions, modal,
    text::{limits, slack_len},
};
use crate::{
    approval::approvers::Refusal,
    model::{Approval, Status},
};

/// One adversarial stretch of text.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        (1usize..3000).prop_map(|n| "&".repeat(n)),
        (1usize..1000).prop_map(|n| "<>&".repeat(n)),
        (1usize..700).prop_map(|n| "😀👨\u{200D}👩\u{200D}👧".repeat(n)),
        (1usize..700).prop_map(|n| "e\u{0301}\u{0308}".repeat(n)),
        (1usize..400).prop_map(|n| "\u{202E}\u{2066}\u{200F}\u{2069}".repeat(n)),
        (1usize..400).prop_map(|n| "\u{0}\u{1B}[2J\u{200B}\u{FEFF}\u{E0041}".repeat(n)),
        (1usize..300).prop_map(|n| "`".repeat(n)),
        (1usize..3000).prop_map(|n| "&\n".repeat(n)),
        (1usize..9000).prop_map(|n| "x".repeat(n)),
        Just("<!channel> <@U0EVIL> <https://evil.example|click> *bold* ```".to_owned()),
        Just(String::new()),
        any::<String>(),
    ]
}

/// Up to four stretches, end to end.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..4).prop_map(|pieces| pieces.concat())
}

/// Who decided: real user ids, or any text (an agent's name, a corrupt row).
fn decided_by() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec("U0[A-Z0-9]{1,10}", 1..15).prop_map(|ids| ids.join(",")),
        text(),
    ]
}

#[derive(Debug, Clone)]
struct Input {
    code: String,
    title: String,
    agent: String,
    language: String,
    role: String,
    content: String,
    reason: String,
    decided_by: String,
    rule: String,
    votes: Vec<String>,
    slack_error: String,
}

fn input() -> impl Strategy<Value = Input> {
    (
        (text(), text(), text(), text()),
        (text(), text(), text(), decided_by()),
        (text(), prop::collection::vec(text(), 0..12), text()),
    )
        .prop_map(
            |(
                (code, title, agent, language),
                (role, content, reason, decided_by),
                (rule, votes, slack_error),
            )| Input {
                code,
                title,
                agent,
                language,
                role,
                content,
                reason,
                decided_by,
                rule,
                votes,
                slack_error,
            },
        )
}

fn approval(input: &Input, status: Status) -> Approval {
    let message = json!({"role": input.role, "content": input.content});
    Approval {
        title: Some(input.title.clone()),
        agent: input.agent.clone(),
        language: Some(input.language.clone()),
        context: Some(json!([
            message.clone(),
            message.clone(),
            message,
            input.content
        ])),
        requester_slack_id: Some("U0REQUESTER".into()),
        required_approvals: 10,
        message_ts: Some("1.2".into()),
        status,
        reason: input.reason.clone(),
        decided_by: (status != Status::Pending).then(|| input.decided_by.clone()),
        decided_at: (status != Status::Pending).then(chrono::Utc::now),
        ..crate::model::sample(&input.code)
    }
}

/// A failed check: which rule, where.
type Checked = Result<(), String>;

fn at_most(what: &str, value: &Value, limit: usize) -> Checked {
    let text = value.as_str().unwrap_or("");
    if slack_len(text) > limit {
        return Err(format!("{what}: {} > {limit}", slack_len(text)));
    }
    Ok(())
}

/// Mrkdwn that greenlight sends: only its own `<@U…>` mentions, `<!date^…>` dates and
/// block quotes are markup, every `&` starts a whole entity, no hidden character
/// (`crate::visible`) is left raw, and a code block holds no ``` of its own.
fn safe_mrkdwn(text: &str) -> Checked {
    // A block quote's `> ` at the start of a line is ours too.
    let unquoted = text
        .split('\n')
        .map(|line| line.strip_prefix("> ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = unquoted.as_str();
    while let Some(at) = rest.find('<') {
        let tail = &rest[at..];
        let end = tail.find('>').ok_or(format!("unclosed < in {text:?}"))?;
        let token = &tail[..=end];
        let ours = (token.starts_with("<@U") || token.starts_with("<@W"))
            && token[2..token.len() - 1]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            || token.starts_with("<!date^");
        if !ours {
            return Err(format!("markup {token:?} in {text:?}"));
        }
        rest = &tail[end + 1..];
    }
    if rest.contains('>') {
        return Err(format!("raw > in {text:?}"));
    }
    for (at, _) in text.match_indices('&') {
        let tail = &text[at..];
        if !["&amp;", "&lt;", "&gt;"]
            .iter()
            .any(|e| tail.starts_with(e))
        {
            return Err(format!("a cut or raw entity at {at} in {text:?}"));
        }
    }
    check_no_hidden(text)?;
    if let Some(inner) = text.strip_prefix("```").and_then(|t| t.strip_suffix("```")) {
        if inner.contains("```") || inner.starts_with('`') || inner.ends_with('`') {
            return Err(format!("a code block that closes early: {text:?}"));
        }
    }
    Ok(())
}

fn check_no_hidden(text: &str) -> Checked {
    // The zero-width space is greenlight's own where it breaks a run of backticks or
    // pads a code fence; one from the text would be a mark.
    let raw = text
        .chars()
        .any(|c| crate::visible::is_hidden(c) && c != '\u{200B}');
    // A made-visible control is `⟨U+XXXX⟩`; one a cut broke lacks its digits or `⟩`.
    // (A lone `⟨` is ordinary text an agent may send.)
    let half = text.match_indices("⟨U+").any(|(at, marker)| {
        let rest = &text[at + marker.len()..];
        let digits = rest.chars().take_while(char::is_ascii_hexdigit).count();
        !(4..=6).contains(&digits) || !rest[digits..].starts_with('⟩')
    });
    if raw || half {
        return Err(format!("a raw or cut hidden character in {text:?}"));
    }
    Ok(())
}

/// A text object: its length, and its escaping when it is mrkdwn.
fn text_object(what: &str, object: &Value, limit: usize) -> Checked {
    at_most(what, &object["text"], limit)?;
    let text = object["text"].as_str().unwrap_or("");
    match object["type"].as_str() {
        Some("mrkdwn") => safe_mrkdwn(text),
        _ => check_no_hidden(text),
    }
}

fn block(block: &Value) -> Checked {
    match block["type"].as_str().unwrap_or("") {
        "section" => {
            if !block["text"].is_null() {
                text_object("section text", &block["text"], limits::SECTION_TEXT)?;
                if slack_len(block["text"]["text"].as_str().unwrap_or("")) == 0 {
                    return Err("empty section text".into());
                }
            }
            let fields = block["fields"].as_array().map_or(&[][..], Vec::as_slice);
            if fields.len() > limits::SECTION_FIELDS {
                return Err(format!("{} fields", fields.len()));
            }
            fields
                .iter()
                .try_for_each(|f| text_object("field", f, limits::FIELD_TEXT))
        }
        "header" => text_object("header", &block["text"], limits::HEADER_TEXT),
        "context" => {
            let elements = block["elements"].as_array().map_or(&[][..], Vec::as_slice);
            if elements.len() > limits::CONTEXT_ELEMENTS {
                return Err(format!("{} context elements", elements.len()));
            }
            elements
                .iter()
                .try_for_each(|e| text_object("context", e, limits::CONTEXT_TEXT))
        }
        "actions" => block["elements"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .try_for_each(button),
        "input" => {
            text_object("input label", &block["label"], limits::INPUT_LABEL)?;
            text_object(
                "placeholder",
                &block["element"]["placeholder"],
                limits::PLACEHOLDER,
            )
        }
        other => Err(format!("unexpected block type {other:?}")),
    }
}

fn button(button: &Value) -> Checked {
    text_object("button", &button["text"], limits::BUTTON_TEXT)?;
    at_most("action_id", &button["action_id"], limits::ACTION_ID)?;
    at_most("value", &button["value"], limits::BUTTON_VALUE)?;
    let confirm = &button["confirm"];
    if !confirm.is_null() {
        text_object("confirm title", &confirm["title"], limits::CONFIRM_TITLE)?;
        text_object("confirm text", &confirm["text"], limits::CONFIRM_TEXT)?;
        text_object("confirm label", &confirm["confirm"], limits::CONFIRM_LABEL)?;
        text_object("deny label", &confirm["deny"], limits::CONFIRM_LABEL)?;
    }
    Ok(())
}

fn message(what: &str, rendered: &blocks::RenderedMessage) -> Checked {
    let fail = |e: String| format!("{what}: {e}");
    at_most("text", &json!(rendered.text), limits::MESSAGE_TEXT).map_err(fail)?;
    safe_mrkdwn(&rendered.text).map_err(fail)?;
    let blocks = rendered.blocks.as_array().ok_or("blocks")?;
    if blocks.len() > limits::MESSAGE_BLOCKS {
        return Err(fail(format!("{} blocks", blocks.len())));
    }
    blocks.iter().try_for_each(block).map_err(fail)
}

fn view(what: &str, view: &Value) -> Checked {
    let fail = |e: String| format!("{what}: {e}");
    for key in ["title", "submit", "close"] {
        if !view[key].is_null() {
            text_object(key, &view[key], limits::MODAL_TITLE).map_err(fail)?;
        }
    }
    at_most(
        "private_metadata",
        &view["private_metadata"],
        limits::PRIVATE_METADATA,
    )
    .map_err(fail)?;
    let blocks = view["blocks"].as_array().ok_or("blocks")?;
    if blocks.len() > limits::MODAL_BLOCKS {
        return Err(fail(format!("{} blocks", blocks.len())));
    }
    blocks.iter().try_for_each(block).map_err(fail)
}

fn ephemeral(what: &str, text: &str) -> Checked {
    at_most(what, &json!(text), limits::MESSAGE_TEXT)?;
    safe_mrkdwn(text).map_err(|e| format!("{what}: {e}"))
}

/// Renders every surface from `input` and checks each.
fn every_surface(input: &Input) -> Checked {
    let pending = approval(input, Status::Pending);
    let extras = PendingExtras {
        votes: input.votes.clone(),
        high_risk_rule: Some(input.rule.clone()),
        grant_durations: vec![1800, 3600, 604800],
    };
    message(
        "pending message",
        &blocks::pending_message_with(&pending, &extras),
    )?;
    message("pending message", &blocks::pending_message(&pending))?;
    let refused = SlackError::Api {
        method: "chat.postMessage".into(),
        code: input.slack_error.clone(),
    };
    message(
        "pending fallback",
        &fallback::minimal_message(&pending, &extras, &refused),
    )?;
    view("code modal", &code_view::code_modal(&pending).0)?;
    view("context modal", &code_view::context_modal(&pending))?;
    view("deny modal", &modal::deny_reason_view(&pending))?;
    ephemeral(
        "repeat vote note",
        &interactions::repeat_vote_note(10, &input.votes),
    )?;
    for refusal in [
        Refusal::NotApprover,
        Refusal::SelfApproval,
        Refusal::Unverified,
        Refusal::PolicyForbids,
        Refusal::GrantNotOffered,
    ] {
        ephemeral("refusal note", refusal.explain())?;
    }
    let title = code_view::file_title(&pending);
    // greenlight's words and the id only: nothing the agent sent can lengthen it.
    if slack_len(&title) > 100 || title != format!("Full code of request {}", pending.id) {
        return Err(format!("file title {title:?}"));
    }
    for status in [
        Status::Approved,
        Status::Denied,
        Status::Expired,
        Status::Cancelled,
    ] {
        let decided = approval(input, status);
        message("final message", &blocks::final_message(&decided))?;
        message(
            "final fallback",
            &fallback::minimal_message(&decided, &extras, &refused),
        )?;
        ephemeral(
            "already decided note",
            &blocks::already_decided_note(&decided),
        )?;
    }
    Ok(())
}

proptest! {
    // 96 cases in the suite (a few seconds); PROPTEST_CASES asks for more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_surface_fits_slacks_limits_after_escaping(input in input()) {
        if let Err(problem) = every_surface(&input) {
            let shown: String = problem.chars().take(600).collect();
            prop_assert!(false, "{}", shown);
        }
    }
}

#[test]
fn the_checks_catch_what_they_look_for() {
    assert!(safe_mrkdwn("a &amp; <@U0A> <!date^1^x|y>").is_ok());
    for bad in [
        "&am…",
        "<!channel>",
        "a > b",
        "⟨U+202",
        "\u{202E}",
        "```a```b```",
    ] {
        assert!(safe_mrkdwn(bad).is_err(), "{bad:?}");
    }
    let mut too_long = blocks::pending_message(&crate::model::sample("ls"));
    too_long.blocks[0]["text"]["text"] = json!("x".repeat(151));
    assert!(message("m", &too_long).is_err());
}
