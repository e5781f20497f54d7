//! Block Kit rendering of approval messages.
//!
//! Three rules shape everything here. First, every byte a requester or reviewer chose
//! (code, title, context, language, reasons, names) is escaped before it reaches
//! mrkdwn, so code can never ping `<!channel>`, mention someone, inject a link or close
//! its own code block. Second, it is escaped *and cut* by [`text::fit`] against a
//! budget that keeps each text within Slack's limits after escaping ([`limits`]), so
//! Slack never refuses a message for its size. Third, the message must read well on a
//! locked phone: a short notification `text`, a header that says what is asked, and
//! the buttons last.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::text::{self, fit, limits, slack_len, Escape};
use crate::model::{
    is_user_id, Approval, Status, APPROVED_IN_SLACK, DENIED_IN_SLACK, SYSTEM_ACTOR,
};

/// `block_id` of the `actions` block holding a message's decision buttons (and the
/// Revoke button of a grant FYI).
pub const ACTIONS_BLOCK_ID: &str = "greenlight_decision";
/// `action_id` of the Approve button; its `value` is the request id.
pub const APPROVE_ACTION_ID: &str = "greenlight_approve";
/// `action_id` of the Deny button; its `value` is the request id.
pub const DENY_ACTION_ID: &str = "greenlight_deny";

/// The code preview, escaped: a section holds 3,000 ([`limits::SECTION_TEXT`]); this
/// leaves room for the two ``` fences and their zero-width guards.
const CODE_PREVIEW_CHARS: usize = 2800;
/// The notification `text`: what a locked phone shows, so short.
const NOTIFICATION_CHARS: usize = 150;
/// The agent's name in the notification `text`, escaped: the title keeps most of it.
const NOTIFICATION_AGENT_CHARS: usize = 40;
const CONTEXT_MESSAGES: usize = 3;
/// Each context message shown, escaped.
const CONTEXT_MESSAGE_CHARS: usize = 300;
/// A role in the context summary, escaped.
const CONTEXT_ROLE_CHARS: usize = 40;
/// A name shown in text (an agent, a decider that is not a Slack user), escaped.
pub(crate) const NAME_CHARS: usize = 100;
/// A policy rule's name in the confirm dialog, escaped: with the agent's name and the
/// fixed wording it stays within [`limits::CONFIRM_TEXT`].
const CONFIRM_NAME_CHARS: usize = 48;

/// A message ready for `chat.postMessage` / `chat.update`.
#[derive(Debug, Clone)]
pub struct RenderedMessage {
    /// Notification and screen-reader fallback.
    pub text: String,
    /// The Block Kit `blocks`, a JSON array: within Slack's 50 blocks per message
    /// ([`limits::MESSAGE_BLOCKS`]), every text fitted to its own limit.
    pub blocks: Value,
}

/// Escapes the three characters that make mrkdwn act on text, and makes control,
/// bidirectional and invisible characters visible ([`crate::visible`]): they can make
/// code read differently from how it runs ("Trojan Source"), and a reviewer must see
/// what will execute. Unbounded: text with a limit goes through [`text::fit`] instead.
pub fn escape_mrkdwn(text: &str) -> String {
    text::escape(text, Escape::Mrkdwn)
}

/// An escaped stretch of code inside a ``` block. A backtick right at either end would
/// merge with the fence and end the block early, so it gets a zero-width space; an
/// empty stretch becomes one, since section text must not be empty.
pub(crate) fn fence(escaped: &str) -> String {
    let mut chunk = escaped.to_owned();
    if chunk.is_empty() {
        chunk.push('\u{200B}');
    }
    if chunk.starts_with('`') {
        chunk.insert(0, '\u{200B}');
    }
    if chunk.ends_with('`') {
        chunk.push('\u{200B}');
    }
    format!("```{chunk}```")
}

/// Escapes code for a ``` block: a run of three backticks inside the code would close
/// the block, so a zero-width space goes between every third backtick.
pub(crate) fn escape_code(code: &str) -> String {
    text::escape(code, Escape::Code)
}

/// The code preview: whole lines that fit, and how many lines did not.
pub(crate) fn code_preview(code: &str) -> (String, usize) {
    let total_lines = code.lines().count();
    let mut shown = String::new();
    let mut shown_len = 0;
    let mut shown_lines = 0;
    for line in code.lines() {
        let escaped = escape_code(line);
        let len = slack_len(&escaped);
        if shown_len + len + 1 > CODE_PREVIEW_CHARS {
            if shown_lines == 0 {
                // One enormous first line: show its head rather than nothing.
                shown = fit(line, Escape::Code, CODE_PREVIEW_CHARS);
                shown_lines = 1;
            }
            break;
        }
        shown.push_str(&escaped);
        shown.push('\n');
        shown_len += len + 1;
        shown_lines += 1;
    }
    (
        shown.trim_end_matches('\n').to_owned(),
        total_lines - shown_lines,
    )
}

/// Names shown by [`mention`]: as many as a request may need approvals (10).
const MENTIONS: usize = 10;

/// `<@U…>` for user ids (comma-separated for several), escaped text otherwise (cut
/// to `NAME_CHARS`, 100 characters, each).
pub fn mention(decided_by: &str) -> String {
    if decided_by == SYSTEM_ACTOR {
        return "greenlight".to_owned();
    }
    let names = decided_by.split(',').count();
    let mut shown = decided_by
        .split(',')
        .take(MENTIONS)
        .map(|who| {
            if is_user_id(who) {
                format!("<@{who}>")
            } else {
                fit(who, Escape::Mrkdwn, NAME_CHARS)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    if names > MENTIONS {
        shown.push_str(&format!(" and {} more", names - MENTIONS));
    }
    shown
}

/// A date Slack shows in each reader's own time zone, with a UTC fallback.
fn slack_date(at: DateTime<Utc>) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        at.timestamp(),
        at.format("%Y-%m-%d %H:%M UTC")
    )
}

pub(crate) fn title_of(approval: &Approval) -> String {
    match (&approval.title, &approval.language) {
        (Some(title), _) if !title.trim().is_empty() => title.trim().to_owned(),
        (_, Some(language)) => format!("run {language} code"),
        _ => "run code".to_owned(),
    }
}

fn language_of(approval: &Approval) -> &str {
    approval.language.as_deref().unwrap_or("unspecified")
}

/// At most five fields ([`limits::SECTION_FIELDS`] is 10), each far below
/// [`limits::FIELD_TEXT`].
fn fields(approval: &Approval) -> Value {
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Agent*\n{}", fit(&approval.agent, Escape::Mrkdwn, NAME_CHARS))}),
        json!({"type": "mrkdwn", "text": format!("*Language*\n{}", fit(language_of(approval), Escape::Mrkdwn, 50))}),
    ];
    if let Some(requester) = approval
        .requester_slack_id
        .as_deref()
        .filter(|id| is_user_id(id))
    {
        fields.push(json!({"type": "mrkdwn", "text": format!("*On behalf of*\n<@{requester}>")}));
    }
    if approval.status == Status::Pending {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Expires*\n{}", slack_date(approval.expires_at))}));
    }
    fields.push(json!({"type": "mrkdwn", "text": format!("*Request*\n`{}`", approval.id)}));
    Value::Array(fields)
}

fn code_blocks(approval: &Approval) -> Vec<Value> {
    let (preview, hidden_lines) = code_preview(&approval.code);
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": fence(&preview)},
    })];
    if hidden_lines > 0 {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("… {hidden_lines} more lines not shown")}],
        }));
    }
    blocks
}

/// A short, escaped digest of the agent's context: the last few chat messages when it
/// is a list of them, otherwise compact JSON. At most about 1,100 characters, within
/// [`limits::CONTEXT_TEXT`].
fn context_summary(context: &Value) -> Option<String> {
    let line = |role: &str, content: &str| {
        format!(
            "*{}*: {}",
            fit(role, Escape::Mrkdwn, CONTEXT_ROLE_CHARS),
            fit(content, Escape::Mrkdwn, CONTEXT_MESSAGE_CHARS)
        )
    };
    match context {
        Value::Null => None,
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => {
            let start = items.len().saturating_sub(CONTEXT_MESSAGES);
            let lines: Vec<String> = items[start..]
                .iter()
                .map(|item| {
                    let role = item
                        .get("role")
                        .or_else(|| item.get("type"))
                        .or_else(|| item.get("source"))
                        .and_then(Value::as_str)
                        .unwrap_or("message");
                    match item.get("content") {
                        Some(Value::String(text)) => line(role, text),
                        Some(other) => line(role, &other.to_string()),
                        None => line(role, &item.to_string()),
                    }
                })
                .collect();
            let skipped = if start > 0 {
                format!("_{start} earlier messages_\n")
            } else {
                String::new()
            };
            Some(format!("{skipped}{}", lines.join("\n")))
        }
        other => Some(fit(
            &other.to_string(),
            Escape::Mrkdwn,
            CONTEXT_MESSAGE_CHARS * 2,
        )),
    }
}

/// The message that asks for a decision.
pub fn pending_message(approval: &Approval) -> RenderedMessage {
    pending_message_with(approval, &PendingExtras::default())
}

/// What a pending message shows beyond the request itself.
#[derive(Debug, Clone, Default)]
pub struct PendingExtras {
    /// Who has approved so far (the two-person rule), oldest first.
    pub votes: Vec<String>,
    /// The policy rule that marked this request high-risk: Approve then asks for
    /// confirmation first.
    pub high_risk_rule: Option<String>,
    /// Standing-grant durations (seconds) offered beside Approve ("Approve for 30
    /// min"); empty for none.
    pub grant_durations: Vec<u64>,
}

/// "1 of 2 approvals: <@U1>", or how many are needed before anyone has approved.
pub fn approval_progress(required: u32, votes: &[String]) -> String {
    if votes.is_empty() {
        format!("Needs {required} approvals from different people; none yet.")
    } else {
        format!(
            "{} of {required} approvals: {}",
            votes.len(),
            mention(&votes.join(","))
        )
    }
}

/// The Block Kit confirm dialog on Approve for high-risk requests. The rule's and the
/// agent's names get [`CONFIRM_NAME_CHARS`] each, so the text stays within
/// [`limits::CONFIRM_TEXT`] (a unit test holds that).
pub(crate) fn confirm_dialog(approval: &Approval, rule: &str) -> Value {
    let text = format!(
        "Policy rule \"{}\" marks this request as high-risk. Approve only if you have read the code: {} runs it as soon as enough people approve.",
        fit(rule, Escape::Mrkdwn, CONFIRM_NAME_CHARS),
        fit(&approval.agent, Escape::Mrkdwn, CONFIRM_NAME_CHARS),
    );
    json!({
        "title": {"type": "plain_text", "text": fit("Approve a high-risk request?", Escape::Plain, limits::CONFIRM_TITLE)},
        "text": {"type": "mrkdwn", "text": text},
        "confirm": {"type": "plain_text", "text": "Approve"},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": "danger",
    })
}

/// The message that asks for a decision, with approval progress and, for high-risk
/// requests, a confirm dialog on Approve.
pub fn pending_message_with(approval: &Approval, extras: &PendingExtras) -> RenderedMessage {
    let title = title_of(approval);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": fit(&format!("Approval needed: {title}"), Escape::Plain, limits::HEADER_TEXT), "emoji": true}}),
        json!({"type": "section", "fields": fields(approval)}),
    ];
    blocks.extend(code_blocks(approval));
    if let Some(summary) = approval.context.as_ref().and_then(context_summary) {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": summary}]}));
    }
    blocks.extend(super::code_view::view_actions(approval));
    if approval.required_approvals > 1 || !extras.votes.is_empty() {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": approval_progress(approval.required_approvals, &extras.votes)}]}));
    }
    blocks.push(decision_actions(approval, extras, Vec::new()));
    RenderedMessage {
        text: notification_text(approval),
        blocks: Value::Array(blocks),
    }
}

/// The top-level `text` of a request's message, for its current state: what a locked
/// phone shows and a screen reader reads first, escaped, within [`NOTIFICATION_CHARS`]
/// (150). The state comes first, then the agent, then what it asked.
///
/// A title is the requester's own one-line summary and may have any form (an API
/// client's "Clean the build cache", a coding-agent hook's "Claude Code wants to run a
/// command"), so it is shown as it is after the agent's name ("Approval needed: ci-bot
/// — Clean the build cache"), never made part of a sentence of ours; a long one is cut
/// at its end, so the state and the agent always show. Without a title the sentence is
/// ours: "Approval needed: ci-bot wants to run python code", "Approved: ci-bot wanted
/// to run python code".
pub(crate) fn notification_text(approval: &Approval) -> String {
    let state = match approval.status {
        Status::Pending => "Approval needed",
        status => outcome_of(status).1,
    };
    let agent = fit(&approval.agent, Escape::Mrkdwn, NOTIFICATION_AGENT_CHARS);
    let (head, asked) = match approval.title.as_deref().map(str::trim) {
        Some(title) if !title.is_empty() => (format!("{state}: {agent} — "), title.to_owned()),
        _ => {
            let wants = if approval.status.is_final() {
                "wanted"
            } else {
                "wants"
            };
            (format!("{state}: {agent} {wants} to "), title_of(approval))
        }
    };
    let room = NOTIFICATION_CHARS.saturating_sub(slack_len(&head));
    format!("{head}{}", fit(&asked, Escape::Mrkdwn, room))
}

/// The Approve and Deny buttons, after `before` (other buttons of the same block).
pub(crate) fn decision_actions(
    approval: &Approval,
    extras: &PendingExtras,
    mut before: Vec<Value>,
) -> Value {
    let id = approval.id.to_string();
    let mut approve = json!({"type": "button", "action_id": APPROVE_ACTION_ID, "style": "primary", "value": id,
         "text": {"type": "plain_text", "text": "Approve", "emoji": true}});
    if let Some(rule) = &extras.high_risk_rule {
        approve["confirm"] = confirm_dialog(approval, rule);
    }
    before.push(approve);
    before.extend(super::grant_blocks::grant_buttons(
        approval,
        &extras.grant_durations,
    ));
    before.push(
        json!({"type": "button", "action_id": DENY_ACTION_ID, "style": "danger", "value": id,
             "text": {"type": "plain_text", "text": "Deny", "emoji": true}}),
    );
    json!({
        "type": "actions",
        "block_id": ACTIONS_BLOCK_ID,
        "elements": before,
    })
}

/// The icon and the words for a request's state, as messages show it.
pub(crate) fn outcome_of(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Approved => ("✅", "Approved"),
        Status::Denied => ("⛔", "Denied"),
        Status::Expired => ("⌛", "Expired, denied by default"),
        Status::Cancelled => ("↩️", "Withdrawn by the agent"),
        Status::Pending => ("⏳", "Pending"),
    }
}

/// "*Denied* by <@U1> <date>": the first line of a final message.
pub(crate) fn outcome_line(approval: &Approval) -> String {
    let (_, outcome) = outcome_of(approval.status);
    let who = approval
        .decided_by
        .as_deref()
        .map(mention)
        .unwrap_or_else(|| "greenlight".into());
    let when = approval.decided_at.map(slack_date).unwrap_or_default();
    format!("*{outcome}* by {who} {when}")
}

/// The message once a request is final: outcome first, buttons gone.
pub fn final_message(approval: &Approval) -> RenderedMessage {
    let (icon, outcome) = outcome_of(approval.status);
    let title = title_of(approval);
    let mut summary = outcome_line(approval);
    let reason = shown_reason(&approval.reason);
    if !reason.is_empty() {
        // The reason gets what the section has left: shown whole when it fits after
        // escaping, cut with "…" otherwise.
        summary.push_str("\n> ");
        let room = limits::SECTION_TEXT.saturating_sub(slack_len(&summary));
        summary.push_str(&fit(reason, Escape::Quote, room));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": fit(&format!("{icon} {outcome}: {title}"), Escape::Plain, limits::HEADER_TEXT), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": summary}}),
        json!({"type": "section", "fields": fields(approval)}),
    ];
    blocks.extend(code_blocks(approval));
    RenderedMessage {
        text: notification_text(approval),
        blocks: Value::Array(blocks),
    }
}

/// The part of a reason the final message shows. greenlight's own "Approved in Slack by
/// <@U1>, <@U2>" / "Denied in Slack by <@U1>; …" clause repeats the summary line (and
/// would show as escaped markup), so only what follows it is shown; any other reason
/// (a reviewer's, a rule's, a timeout's) is shown whole.
fn shown_reason(reason: &str) -> &str {
    for clause in [APPROVED_IN_SLACK, DENIED_IN_SLACK] {
        if let Some(rest) = reason.strip_prefix(clause) {
            return rest.split_once("; ").map_or("", |(_, after)| after);
        }
    }
    reason
}

/// What a late clicker is told.
pub fn already_decided_note(approval: &Approval) -> String {
    let who = approval
        .decided_by
        .as_deref()
        .map(mention)
        .unwrap_or_else(|| "greenlight".into());
    let when = approval.decided_at.map(slack_date).unwrap_or_default();
    format!(
        "This request was already {} by {who} {when}; your click changed nothing.",
        approval.status.as_str()
    )
}

/// Every mrkdwn string in a rendered message or view, for checks that must hold
/// everywhere (nothing unescaped, no fence broken).
#[cfg(test)]
pub(crate) fn mrkdwn_texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                if let Some(text) = map.get("text").and_then(Value::as_str) {
                    out.push(text.to_owned());
                }
            }
            map.values().for_each(|v| mrkdwn_texts(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| mrkdwn_texts(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(code: &str) -> Approval {
        Approval {
            title: Some("Clean <!channel> temp".into()),
            ..crate::model::sample(code)
        }
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(
            escape_mrkdwn("a & <!channel> <@U1> <https://x|y>"),
            "a &amp; &lt;!channel&gt; &lt;@U1&gt; &lt;https://x|y&gt;"
        );
    }

    #[test]
    fn code_cannot_close_its_block_or_ping() {
        let mut a = approval("echo '<!channel>' <@U123> <https://evil|click>\n```\n*bold* ````");
        a.context = Some(json!([{"role": "user", "content": "<!here> please"}]));
        let message = pending_message(&a);
        let mut texts = Vec::new();
        mrkdwn_texts(&message.blocks, &mut texts);
        for text in &texts {
            // Our own `<!date^…>` is the only special token allowed through.
            assert!(!text.replace("<!date^", "").contains("<!"), "{text}");
            assert!(!text.contains("<@U123>"), "{text}");
            assert!(!text.contains("<https"), "{text}");
        }
        let code = texts
            .iter()
            .find(|t| t.starts_with("```"))
            .expect("code block");
        let inner = &code[3..code.len() - 3];
        assert!(!inner.contains("```"), "{inner:?}");
        assert!(!message.text.contains("<!channel>"));
    }

    #[test]
    fn code_touching_the_fence_cannot_merge_with_it() {
        for code in ["`rm -rf /tmp/*x*`", "``", "a`\n`b", "```"] {
            let message = pending_message(&approval(code));
            let mut texts = Vec::new();
            mrkdwn_texts(&message.blocks, &mut texts);
            let block = texts.iter().find(|t| t.starts_with("```")).expect("code");
            let inner = &block[3..block.len() - 3];
            assert!(
                !inner.starts_with('`') && !inner.ends_with('`'),
                "{code:?}: {block:?}"
            );
            assert!(!inner.contains("```"), "{code:?}: {block:?}");
        }
    }

    #[test]
    fn the_final_message_does_not_repeat_greenlights_own_clause() {
        assert_eq!(shown_reason("Approved in Slack by <@U0A>, <@U0B>"), "");
        assert_eq!(
            shown_reason("Denied in Slack by <@U0A>; no reason was given (the reason dialog could not be opened)"),
            "no reason was given (the reason dialog could not be opened)"
        );
        assert_eq!(
            shown_reason("not during the freeze"),
            "not during the freeze"
        );
        let mut a = approval("ls");
        a.status = Status::Denied;
        a.decided_by = Some("U0A".into());
        a.reason = "Denied in Slack by <@U0A>; no reason was given".into();
        let shown = final_message(&a).blocks.to_string();
        assert!(
            !shown.contains("&lt;@U0A&gt;") && shown.contains("no reason was given"),
            "{shown}"
        );
    }

    #[test]
    fn bidi_controls_are_made_visible() {
        let code =
            "if access_level != \"user\u{202E} \u{2066}// Check if admin\u{2069} \u{2066}\" {";
        let escaped = escape_code(code);
        assert!(!escaped
            .chars()
            .any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')));
        assert!(
            escaped.contains("⟨U+202E⟩") && escaped.contains("⟨U+2066⟩"),
            "{escaped}"
        );
    }

    #[test]
    fn pending_message_has_buttons_with_the_id() {
        let a = approval("print(1)");
        let message = pending_message(&a);
        let blocks = message.blocks.as_array().expect("array");
        assert!(blocks.len() <= 50);
        let actions = blocks.last().expect("actions");
        assert_eq!(actions["block_id"], ACTIONS_BLOCK_ID);
        assert_eq!(actions["elements"][0]["action_id"], APPROVE_ACTION_ID);
        assert_eq!(actions["elements"][0]["style"], "primary");
        assert_eq!(actions["elements"][1]["action_id"], DENY_ACTION_ID);
        assert_eq!(actions["elements"][1]["style"], "danger");
        assert_eq!(actions["elements"][1]["value"], a.id.to_string());
        assert_eq!(
            message.text,
            "Approval needed: ci-bot — Clean &lt;!channel&gt; temp"
        );
        assert!(
            blocks[0]["text"]["text"]
                .as_str()
                .expect("header")
                .chars()
                .count()
                <= 150
        );
    }

    /// A request as a coding-agent hook makes it: the title the hook renders for a
    /// Bash call, from the agent `claude-code`.
    fn hook_request() -> Approval {
        let input = crate::hooks::HookInput {
            event: crate::hooks::Event::PreToolUse,
            tool_name: "Bash".into(),
            tool_input: json!({"command": "npm test"}),
            session_id: None,
            cwd: None,
            permission_mode: None,
            tool_use_id: None,
        };
        let rendered =
            crate::hooks::render::render(crate::hooks::Host::ClaudeCode, &input).expect("render");
        Approval {
            agent: "claude-code".into(),
            language: Some(rendered.language.into()),
            title: Some(rendered.title),
            ..crate::model::sample(&rendered.code)
        }
    }

    /// `approval` in `status`, with the message its state shows.
    fn notification_in(approval: &Approval, status: Status) -> String {
        let mut a = approval.clone();
        a.status = status;
        if status.is_final() {
            a.decided_by = Some("U0ALICE".into());
            a.decided_at = Some(Utc::now());
            final_message(&a).text
        } else {
            pending_message(&a).text
        }
    }

    const STATES: [(Status, &str); 5] = [
        (Status::Pending, "Approval needed"),
        (Status::Approved, "Approved"),
        (Status::Denied, "Denied"),
        (Status::Expired, "Expired, denied by default"),
        (Status::Cancelled, "Withdrawn by the agent"),
    ];

    #[test]
    fn a_hook_requests_notification_shows_its_title_once_after_the_agent() {
        let hook = hook_request();
        for (status, state) in STATES {
            assert_eq!(
                notification_in(&hook, status),
                format!("{state}: claude-code — Claude Code wants to run a command"),
                "{status:?}"
            );
        }
    }

    #[test]
    fn an_api_requests_notification_reads_with_and_without_a_title() {
        let titled = Approval {
            title: Some("Clean the build cache".into()),
            ..crate::model::sample("rm -rf /tmp/build-cache")
        };
        let untitled = crate::model::sample("print(1)");
        let bare = Approval {
            language: None,
            ..crate::model::sample("print(1)")
        };
        for (status, state) in STATES {
            let wants = if status.is_final() { "wanted" } else { "wants" };
            assert_eq!(
                notification_in(&titled, status),
                format!("{state}: ci-bot — Clean the build cache"),
                "{status:?}"
            );
            assert_eq!(
                notification_in(&untitled, status),
                format!("{state}: ci-bot {wants} to run python code"),
                "{status:?}"
            );
            assert_eq!(
                notification_in(&bare, status),
                format!("{state}: ci-bot {wants} to run code"),
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_long_title_is_cut_at_its_end_and_the_agent_always_shows() {
        let long = Approval {
            agent: "a".repeat(300),
            title: Some("<deploy> ".repeat(40)),
            ..crate::model::sample("make deploy")
        };
        for (status, state) in STATES {
            let text = notification_in(&long, status);
            assert!(slack_len(&text) <= NOTIFICATION_CHARS, "{text}");
            assert!(text.starts_with(&format!("{state}: aaaa")), "{text}");
            assert!(
                text.contains(" — &lt;deploy&gt;") && text.ends_with('…'),
                "{text}"
            );
            assert!(!text.contains('<'), "{text}");
        }
    }

    #[test]
    fn long_code_is_cut_at_whole_lines_and_counted() {
        let code: String = (1..=400).map(|i| format!("echo line {i}\n")).collect();
        let message = pending_message(&approval(&code));
        let mut texts = Vec::new();
        mrkdwn_texts(&message.blocks, &mut texts);
        let shown = texts.iter().find(|t| t.starts_with("```")).expect("code");
        assert!(shown.chars().count() <= 3000);
        let shown_lines = shown.lines().count();
        let note = texts
            .iter()
            .find(|t| t.contains("more lines not shown"))
            .expect("note");
        assert_eq!(
            note,
            &format!("… {} more lines not shown", 400 - shown_lines)
        );
    }

    #[test]
    fn final_message_drops_buttons_and_names_decider() {
        let mut a = approval("ls");
        a.status = Status::Denied;
        a.decided_by = Some("U42".into());
        a.decided_at = Some(Utc::now());
        a.reason = "not on a <Friday>".into();
        let message = final_message(&a);
        let rendered = message.blocks.to_string();
        assert!(!rendered.contains(APPROVE_ACTION_ID));
        assert!(rendered.contains("<@U42>"));
        assert!(rendered.contains("not on a &lt;Friday&gt;"));
        assert!(message.text.starts_with("Denied"));
    }

    #[test]
    fn progress_and_confirm_dialog() {
        let mut a = approval("kubectl apply");
        a.required_approvals = 2;
        let plain = pending_message(&a).blocks.to_string();
        assert!(plain.contains("Needs 2 approvals"), "{plain}");
        assert!(!plain.contains("\"confirm\""), "no dialog unless high-risk");
        let extras = PendingExtras {
            votes: vec!["U0ALICE".into()],
            high_risk_rule: Some("prod <!here>".into()),
            grant_durations: Vec::new(),
        };
        let message = pending_message_with(&a, &extras);
        let rendered = message.blocks.to_string();
        assert!(
            rendered.contains("1 of 2 approvals: <@U0ALICE>"),
            "{rendered}"
        );
        let actions = message
            .blocks
            .as_array()
            .and_then(|b| b.last())
            .expect("actions");
        let confirm = &actions["elements"][0]["confirm"];
        assert!(
            confirm["title"]["text"]
                .as_str()
                .expect("title")
                .chars()
                .count()
                <= 100
        );
        let text = confirm["text"]["text"].as_str().expect("text");
        assert!(
            text.chars().count() <= 300 && !text.contains("<!here>"),
            "{text}"
        );
        assert!(
            actions["elements"][1].get("confirm").is_none(),
            "Deny has its own modal"
        );
    }

    #[test]
    fn mentions_only_for_real_user_ids() {
        assert_eq!(mention("U123ABC"), "<@U123ABC>");
        assert_eq!(mention("U0A1,W2X3"), "<@U0A1>, <@W2X3>");
        assert_eq!(mention("<!channel>"), "&lt;!channel&gt;");
        assert_eq!(mention(SYSTEM_ACTOR), "greenlight");
    }

    #[test]
    fn context_summary_keeps_the_last_messages() {
        let context = json!([
            {"role": "system", "content": "a"},
            {"role": "user", "content": "b"},
            {"type": "AssistantMessage", "content": "c"},
            {"role": "user", "content": "d & e"},
        ]);
        let summary = context_summary(&context).expect("summary");
        assert!(summary.starts_with("_1 earlier messages_"));
        assert!(summary.contains("*AssistantMessage*: c"));
        assert!(summary.ends_with("*user*: d &amp; e"));
        assert_eq!(context_summary(&json!([])), None);
    }
}
