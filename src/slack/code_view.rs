//! Seeing all of a request before deciding: the "View full code" and "Show context"
//! buttons, the modals they open, and the file snippet for code no modal can hold.
//!
//! A message holds 50 blocks and a section 3000 characters, so long code shows only
//! its head there. A reviewer must still be able to read every line before approving:
//! the button opens a modal (100 blocks) with the whole code split across sections,
//! escaped exactly like the message (mrkdwn control characters, ``` runs). Code beyond
//! even that is uploaded once as a file into the message's thread
//! (`files.getUploadURLExternal` → POST bytes → `files.completeUploadExternal`) and the
//! modal shows its head and points there.
//!
//! Viewing changes nothing: these clicks never touch a request's state, and anyone in
//! the channel may view.

use serde_json::{json, Value};

use super::{
    api::{SlackClient, SlackError},
    blocks::{code_preview, escape_code, fence, NAME_CHARS},
    interaction::{Payload, User},
    text::{self, fit, limits, slack_len, Escape},
};
use crate::model::{Approval, ApprovalId};

/// `block_id` of the message's `actions` block with the view buttons, kept apart from
/// the decision buttons' block.
pub const VIEW_BLOCK_ID: &str = "greenlight_view";
/// `action_id` of "View full code"; its `value` is the request id.
pub const VIEW_CODE_ACTION_ID: &str = "greenlight_view_code";
/// `action_id` of "Show context"; its `value` is the request id.
pub const VIEW_CONTEXT_ACTION_ID: &str = "greenlight_view_context";
/// `callback_id` of the full-code modal. It has no submit button, so no
/// `view_submission` comes back with it.
pub const CODE_VIEW_CALLBACK_ID: &str = "greenlight_code_view";
/// `callback_id` of the context modal; like the code modal, it is never submitted.
pub const CONTEXT_VIEW_CALLBACK_ID: &str = "greenlight_context_view";

/// Section text is at most 3000 characters ([`limits::SECTION_TEXT`]): minus the two
/// ``` fences and the two zero-width guards a chunk may get at its ends.
pub const CHUNK_CHARS: usize = limits::SECTION_TEXT - 6 - 2;
/// Blocks per modal ([`limits::MODAL_BLOCKS`]).
const MODAL_BLOCKS: usize = limits::MODAL_BLOCKS;
/// The request's title in a modal's heading, escaped.
const HEADING_TITLE_CHARS: usize = 600;

/// Which modal a click asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// "View full code": the whole code split across sections; code too long even for
    /// a modal is also uploaded as a file into the message's thread.
    Code,
    /// "Show context": the request's `context` JSON, pretty-printed.
    Context,
}

/// A click on "View full code" or "Show context".
#[derive(Debug, Clone)]
pub struct ViewRequest {
    /// The request to show, from the button's `value`.
    pub approval_id: ApprovalId,
    /// Which button, from its `action_id`.
    pub kind: ViewKind,
    /// Who clicked, when Slack says (only for logs and the audit trail).
    pub user: Option<User>,
    /// The click's `trigger_id`, never empty: `views.open` must use it within 3
    /// seconds of the click, and only once.
    pub trigger_id: String,
}

/// The view clicks in a `block_actions` payload (`Payload::clicks` keeps to the
/// deciding buttons, so these never reach the code that decides).
pub fn view_requests(payload: &Payload) -> Vec<ViewRequest> {
    if payload.kind != "block_actions" {
        return Vec::new();
    }
    // Without a trigger no modal can open.
    let Some(trigger_id) = payload.trigger_id.clone().filter(|t| !t.is_empty()) else {
        return Vec::new();
    };
    payload
        .actions
        .iter()
        .filter_map(|action| {
            let kind = match action.action_id.as_str() {
                VIEW_CODE_ACTION_ID => ViewKind::Code,
                VIEW_CONTEXT_ACTION_ID => ViewKind::Context,
                _ => return None,
            };
            Some(ViewRequest {
                approval_id: ApprovalId::parse(action.value.as_deref()?)?,
                kind,
                user: payload.user.clone(),
                trigger_id: trigger_id.clone(),
            })
        })
        .collect()
}

/// Does the message show less than the whole code?
pub fn code_is_cut(code: &str) -> bool {
    let (shown, hidden) = code_preview(code);
    let whole = code.lines().map(escape_code).collect::<Vec<_>>().join("\n");
    hidden > 0 || shown != whole.trim_end_matches('\n')
}

fn has_context(approval: &Approval) -> bool {
    match &approval.context {
        None | Some(Value::Null) => false,
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty(),
        Some(_) => true,
    }
}

/// The message's "View full code" / "Show context" buttons, when there is more to
/// see than the message shows. Their own actions block, under the code and above the
/// decision buttons: on a phone it reads "what" → "see more" → "decide".
pub fn view_actions(approval: &Approval) -> Option<Value> {
    let id = approval.id.to_string();
    let mut buttons = Vec::new();
    if code_is_cut(&approval.code) {
        buttons.push(
            json!({"type": "button", "action_id": VIEW_CODE_ACTION_ID, "value": id,
            "text": {"type": "plain_text", "text": "View full code", "emoji": true}}),
        );
    }
    if has_context(approval) {
        buttons.push(
            json!({"type": "button", "action_id": VIEW_CONTEXT_ACTION_ID, "value": id,
            "text": {"type": "plain_text", "text": "Show context", "emoji": true}}),
        );
    }
    (!buttons.is_empty())
        .then(|| json!({"type": "actions", "block_id": VIEW_BLOCK_ID, "elements": buttons}))
}

/// Splits `text` into escaped pieces of at most `max` ([`text::slack_len`]) for ```
/// sections: whole lines where they fit, a line longer than `max` cut between
/// characters by [`text::split`] (never inside `&amp;`). A piece that starts or ends
/// with a backtick gets a zero-width space there (in `blocks::fence`) so it cannot merge
/// with the fence; `max` must leave room for those two (see [`CHUNK_CHARS`]).
pub fn split_code(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    let mut current_lines = 0;
    let mut flush = |current: &mut String, len: &mut usize, lines: &mut usize| {
        if *lines > 0 {
            chunks.push(std::mem::take(current));
        }
        *len = 0;
        *lines = 0;
    };
    for line in text.lines() {
        let escaped = escape_code(line);
        let len = slack_len(&escaped);
        if len > max {
            flush(&mut current, &mut current_len, &mut current_lines);
            for piece in text::split(line, Escape::Code, max) {
                current = piece;
                current_lines = 1;
                flush(&mut current, &mut current_len, &mut current_lines);
            }
            continue;
        }
        let needed = len + usize::from(current_lines > 0);
        if current_len + needed > max {
            flush(&mut current, &mut current_len, &mut current_lines);
        }
        if current_lines > 0 {
            current.push('\n');
            current_len += 1;
        }
        current.push_str(&escaped);
        current_len += len;
        current_lines += 1;
    }
    flush(&mut current, &mut current_len, &mut current_lines);
    chunks
}

fn code_section(chunk: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": fence(chunk)}})
}

fn note(text: String) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
}

fn modal(callback_id: &str, title: &str, approval: &Approval, blocks: Vec<Value>) -> Value {
    json!({
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": approval.id.to_string(),
        "title": {"type": "plain_text", "text": title},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": blocks,
    })
}

fn heading(approval: &Approval, what: &str, lines: usize) -> Value {
    let title = approval.title.as_deref().unwrap_or("(untitled request)");
    json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(
        "*{}*\n{what} from *{}*, {lines} lines · request `{}`",
        fit(title, Escape::Mrkdwn, HEADING_TITLE_CHARS),
        fit(&approval.agent, Escape::Mrkdwn, NAME_CHARS),
        approval.id,
    )}})
}

/// The full-code modal, and whether the code was too long for it (then the caller
/// uploads it as a file into the message's thread, which the modal points to).
pub fn code_modal(approval: &Approval) -> (Value, bool) {
    let lines = approval.code.lines().count();
    let chunks = split_code(&approval.code, CHUNK_CHARS);
    let mut blocks = vec![heading(approval, "Code", lines)];
    let room = MODAL_BLOCKS - blocks.len();
    let too_long = chunks.len() > room;
    if too_long {
        // Keep one block for the note that says where the rest is.
        let shown = &chunks[..room - 1];
        let shown_lines: usize = shown.iter().map(|c| c.lines().count()).sum();
        blocks.extend(shown.iter().map(|c| code_section(c)));
        let where_ = if approval.message_ts.is_some() {
            "The whole script is attached as a file in the message's thread."
        } else {
            "The message has not been posted yet, so the whole script cannot be attached; do not approve what you have not read."
        };
        blocks.push(note(format!(
            "Showing about {shown_lines} of {lines} lines: too long for one view. {where_}"
        )));
    } else {
        blocks.extend(chunks.iter().map(|c| code_section(c)));
    }
    (
        modal(CODE_VIEW_CALLBACK_ID, "Full code", approval, blocks),
        too_long,
    )
}

/// The agent's whole context, pretty-printed and escaped like code.
pub fn context_modal(approval: &Approval) -> Value {
    let pretty = approval
        .context
        .as_ref()
        .and_then(|c| serde_json::to_string_pretty(c).ok())
        .unwrap_or_else(|| "null".to_owned());
    let lines = pretty.lines().count();
    let chunks = split_code(&pretty, CHUNK_CHARS);
    let mut blocks = vec![heading(approval, "Context", lines)];
    let room = MODAL_BLOCKS - blocks.len();
    if chunks.len() > room {
        let shown = &chunks[..room - 1];
        let shown_lines: usize = shown.iter().map(|c| c.lines().count()).sum();
        blocks.extend(shown.iter().map(|c| code_section(c)));
        blocks.push(note(format!(
            "… {} more lines of context not shown",
            lines.saturating_sub(shown_lines)
        )));
    } else {
        blocks.extend(chunks.iter().map(|c| code_section(c)));
    }
    modal(CONTEXT_VIEW_CALLBACK_ID, "Agent context", approval, blocks)
}

/// The uploaded file's title: greenlight's words and the request id only, so it is
/// short whatever the request says.
pub(crate) fn file_title(approval: &Approval) -> String {
    format!("Full code of request {}", approval.id)
}

/// A file extension for the snippet, so Slack highlights it.
fn extension(language: Option<&str>) -> &'static str {
    let first = language
        .and_then(|l| l.split(',').next())
        .map(|l| l.trim().to_ascii_lowercase());
    match first.as_deref() {
        Some("python" | "py") => "py",
        Some("bash" | "sh" | "shell" | "zsh") => "sh",
        Some("javascript" | "js" | "node") => "js",
        Some("typescript" | "ts") => "ts",
        Some("rust" | "rs") => "rs",
        Some("sql") => "sql",
        Some("powershell" | "pwsh") => "ps1",
        _ => "txt",
    }
}

/// Uploads `approval`'s code as a file into the thread of its message; returns the
/// file id. The three-step external upload is the one Slack supports for new apps.
pub async fn upload_code(
    slack: &SlackClient,
    approval: &Approval,
    thread_ts: &str,
) -> Result<String, SlackError> {
    let filename = format!(
        "greenlight-{}.{}",
        approval.id,
        extension(approval.language.as_deref())
    );
    let length = approval.code.len().to_string();
    let answer = slack
        .call_form(
            "files.getUploadURLExternal",
            &[("filename", &filename), ("length", &length)],
            None,
        )
        .await?;
    let malformed = || SlackError::Malformed {
        method: "files.getUploadURLExternal".into(),
    };
    let upload_url = answer
        .get("upload_url")
        .and_then(Value::as_str)
        .ok_or_else(malformed)?;
    let file_id = answer
        .get("file_id")
        .and_then(Value::as_str)
        .ok_or_else(malformed)?
        .to_owned();
    // The URL is pre-signed: no bot token goes with the bytes.
    let sent = slack
        .http()
        .post(upload_url)
        .header("content-type", "application/octet-stream")
        .body(approval.code.clone())
        .send()
        .await
        .map_err(|error| SlackError::Transport {
            method: "file upload".into(),
            detail: error.without_url().to_string(),
        })?;
    if !sent.status().is_success() {
        return Err(SlackError::Http {
            method: "file upload".into(),
            status: sent.status().as_u16(),
        });
    }
    let files = json!([{ "id": file_id, "title": file_title(approval) }]).to_string();
    let comment = format!(
        "Full code of this request ({} lines).",
        approval.code.lines().count()
    );
    slack
        .call_form(
            "files.completeUploadExternal",
            &[
                ("files", &files),
                ("channel_id", &approval.channel),
                ("thread_ts", thread_ts),
                ("initial_comment", &comment),
            ],
            None,
        )
        .await?;
    Ok(file_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(code: &str) -> Approval {
        Approval {
            title: Some("t".into()),
            message_ts: Some("1.2".into()),
            ..crate::model::sample(code)
        }
    }

    fn unescape(chunk: &str) -> String {
        chunk
            .replace('\u{200B}', "")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    fn sections(view: &Value) -> Vec<String> {
        view["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .filter_map(|b| b["text"]["text"].as_str())
            .filter(|t| t.starts_with("```"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn lines_are_packed_whole_and_nothing_is_lost() {
        let code: String = (1..=400)
            .map(|i| format!("echo line {i} & <x>\n"))
            .collect();
        let chunks = split_code(&code, CHUNK_CHARS);
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            assert!(chunk.chars().count() <= CHUNK_CHARS + 2, "{}", chunk.len());
            assert!(!chunk.starts_with('\n') && !chunk.ends_with('\n'));
        }
        let rejoined = chunks
            .iter()
            .map(|c| unescape(c))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(rejoined, code.trim_end());
    }

    #[test]
    fn an_enormous_line_is_cut_between_characters_not_inside_escapes() {
        let line = "a&<>`".repeat(2000);
        let chunks = split_code(&line, 100);
        assert!(chunks.len() > 10);
        for chunk in &chunks {
            assert!(chunk.chars().count() <= 102, "{chunk}");
            // No half entity at either end.
            assert!(!chunk.trim_end_matches('\u{200B}').ends_with('&'));
            assert!(!chunk.contains("```"), "{chunk}");
        }
        let rejoined: String = chunks.iter().map(|c| unescape(c)).collect();
        assert_eq!(rejoined, line);
    }

    #[test]
    fn backticks_cannot_merge_with_the_fence() {
        let chunks = split_code("```\nrm -rf /\n```", CHUNK_CHARS);
        assert_eq!(chunks.len(), 1);
        let section = fence(&chunks[0]);
        let inner = &section[3..section.len() - 3];
        assert!(!inner.contains("```"), "{inner:?}");
        assert!(inner.starts_with('\u{200B}') && inner.ends_with('\u{200B}'));
        assert_eq!(split_code("", CHUNK_CHARS), Vec::<String>::new());
        assert_eq!(split_code("\n\n", 10), vec!["\n".to_owned()]);
    }

    #[test]
    fn a_400_line_script_fits_one_modal_with_its_last_line() {
        let code: String = (1..=400).map(|i| format!("echo line {i}\n")).collect();
        let a = approval(&code);
        assert!(code_is_cut(&code));
        let (view, too_long) = code_modal(&a);
        assert!(!too_long);
        let blocks = view["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= 100);
        let texts = sections(&view);
        assert!(texts.iter().all(|t| t.chars().count() <= 3000));
        assert!(texts.last().expect("code").ends_with("echo line 400```"));
        assert_eq!(view["private_metadata"], a.id.to_string());
        assert!(view["title"]["text"].as_str().expect("title").len() <= 24);
    }

    #[test]
    fn code_beyond_a_modal_shows_its_head_and_points_to_the_thread() {
        let code: String = (1..=20_000)
            .map(|i| format!("echo padding padding line {i}\n"))
            .collect();
        let (view, too_long) = code_modal(&approval(&code));
        assert!(too_long);
        let blocks = view["blocks"].as_array().expect("blocks");
        assert_eq!(blocks.len(), 100);
        let last = blocks.last().expect("note").to_string();
        assert!(last.contains("attached as a file"), "{last}");
    }

    #[test]
    fn view_buttons_only_when_there_is_more_to_see() {
        let short = approval("ls");
        assert!(view_actions(&short).is_none());
        let mut with_context = approval("ls");
        with_context.context = Some(json!([{"role": "user", "content": "hi"}]));
        let block = view_actions(&with_context).expect("block");
        assert_eq!(block["block_id"], VIEW_BLOCK_ID);
        assert_eq!(block["elements"][0]["action_id"], VIEW_CONTEXT_ACTION_ID);
        assert_eq!(block["elements"].as_array().expect("buttons").len(), 1);
        let long = approval(&"x".repeat(5000));
        let block = view_actions(&long).expect("one huge line is cut too");
        assert_eq!(block["elements"][0]["action_id"], VIEW_CODE_ACTION_ID);
        assert_eq!(block["elements"][0]["value"], long.id.to_string());
    }

    #[test]
    fn view_clicks_are_parsed_apart_from_decisions() {
        let id = ApprovalId::new();
        let payload = Payload::from_json(json!({
            "type": "block_actions", "trigger_id": "1.2.x",
            "actions": [
                {"action_id": VIEW_CODE_ACTION_ID, "value": id.to_string()},
                {"action_id": "greenlight_approve", "value": id.to_string()},
                {"action_id": VIEW_CONTEXT_ACTION_ID, "value": "not-an-id"},
            ],
        }))
        .expect("parses");
        let views = view_requests(&payload);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].kind, ViewKind::Code);
        assert_eq!(views[0].approval_id, id);
        // No user is needed to view; no decision is hidden in a view click.
        assert!(payload.clicks().is_empty());
    }

    #[test]
    fn context_modal_is_escaped_pretty_json() {
        let mut a = approval("ls");
        a.context = Some(json!({"note": "<!channel> ```"}));
        let view = context_modal(&a);
        let texts = sections(&view);
        assert_eq!(texts.len(), 1);
        assert!(texts[0].contains("&lt;!channel&gt;"));
        assert!(!texts[0][3..texts[0].len() - 3].contains("```"));
        assert!(texts[0].contains("\n  \"note\""));
    }
}
