//! The Slack card of a batch: one message for all of a batch's items, each with its
//! own Approve / Deny buttons while it is pending and its outcome once decided.
//!
//! The buttons carry the item's own request id with the usual action ids, so a click
//! goes through exactly the path a single request's click does (approver lists, the
//! two-person rule, the deny-reason dialog). Each item's buttons sit in an actions
//! block of its own, whose `block_id` is unique in the message as Block Kit requires.
//!
//! Size: Slack documents 50 blocks per message; a batch has at most 20 items
//! (`http::batches::MAX_ACTIONS`) of two blocks each, plus a header and a context
//! line. Each item's code is cut to [`ITEM_CODE_CHARS`] so its section stays far
//! below the 3,000 characters of a section text.

use serde_json::{json, Value};

use super::{
    blocks::{
        code_preview, fence, outcome_line, outcome_of, title_of, RenderedMessage,
        APPROVE_ACTION_ID, DENY_ACTION_ID,
    },
    text::{fit, limits, Escape},
};
use crate::model::Approval;

/// Characters of each item's code shown on the card; "View" on the review page
/// (`/web`) or `GET /v1/approvals/{id}` has the rest.
pub const ITEM_CODE_CHARS: usize = 1200;
/// The title's share of an item's section.
const ITEM_TITLE_CHARS: usize = 200;

/// The card for a batch titled `title` with `items` in order.
pub fn batch_card(title: Option<&str>, items: &[Approval]) -> RenderedMessage {
    let agent = items.first().map_or("an agent", |a| a.agent.as_str());
    let pending = items.iter().filter(|a| !a.status.is_final()).count();
    let heading = match title {
        Some(title) => title.to_owned(),
        None => format!("{} actions from {agent}", items.len()),
    };
    let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text",
        "text": fit(&format!("Approval needed: {heading}"), Escape::Plain, limits::HEADER_TEXT), "emoji": true}})];
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": fit(
        &format!("{agent} asks for {} actions at once; {pending} still to decide. Each is decided on its own.", items.len()),
        Escape::Mrkdwn, limits::CONTEXT_TEXT)}]}));
    for (i, item) in items.iter().enumerate() {
        blocks.push(item_section(i, item));
        if item.status.is_final() {
            let (icon, _) = outcome_of(item.status);
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
                "text": format!("{icon} {}", outcome_line(item))}]}));
        } else {
            blocks.push(item_buttons(i, item));
        }
    }
    blocks.truncate(limits::MESSAGE_BLOCKS);
    let text = fit(
        &format!(
            "Approval needed: {agent} asks for {} actions ({pending} pending)",
            items.len()
        ),
        Escape::Mrkdwn,
        150,
    );
    RenderedMessage {
        text,
        blocks: Value::Array(blocks),
    }
}

fn item_section(i: usize, item: &Approval) -> Value {
    let title = fit(&title_of(item), Escape::Mrkdwn, ITEM_TITLE_CHARS);
    let (code, more) = code_preview(&item.code);
    let code = fit_code(&code, ITEM_CODE_CHARS);
    let more = if more > 0 {
        format!("\n_… {more} more lines not shown_")
    } else {
        String::new()
    };
    json!({"type": "section", "text": {"type": "mrkdwn",
        "text": format!("*{}. {title}*\n{}{more}", i + 1, fence(&code))}})
}

/// Cuts already-escaped code to `max` characters (keeping whole lines when it can).
fn fit_code(escaped: &str, max: usize) -> String {
    if escaped.chars().count() <= max {
        return escaped.to_owned();
    }
    let cut: String = escaped.chars().take(max).collect();
    // Never end inside an entity such as `&amp;`.
    match cut.rfind('\n').or_else(|| cut.rfind('&')) {
        Some(at) if at > 0 => cut[..at].to_owned(),
        _ => cut,
    }
}

fn item_buttons(i: usize, item: &Approval) -> Value {
    let id = item.id.to_string();
    json!({"type": "actions", "block_id": format!("greenlight_batch_item_{i}"), "elements": [
        {"type": "button", "action_id": APPROVE_ACTION_ID, "style": "primary", "value": id,
         "text": {"type": "plain_text", "text": format!("Approve {}", i + 1), "emoji": true}},
        {"type": "button", "action_id": DENY_ACTION_ID, "style": "danger", "value": id,
         "text": {"type": "plain_text", "text": format!("Deny {}", i + 1), "emoji": true}},
    ]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{sample, Status};

    #[test]
    fn twenty_long_items_fit_slacks_limits_and_each_has_its_own_buttons() {
        let items: Vec<Approval> = (0..20)
            .map(|i| {
                let mut a = sample(&"echo &&& <!channel> ```\n".repeat(400));
                a.title = Some("t".repeat(500));
                if i % 3 == 0 {
                    a.status = Status::Denied;
                    a.decided_by = Some("U1".into());
                }
                a
            })
            .collect();
        let card = batch_card(Some(&"x".repeat(300)), &items);
        let blocks = card.blocks.as_array().expect("blocks");
        assert!(blocks.len() <= limits::MESSAGE_BLOCKS);
        let mut texts = Vec::new();
        super::super::blocks::mrkdwn_texts(&card.blocks, &mut texts);
        for text in &texts {
            assert!(
                super::super::text::slack_len(text) <= limits::SECTION_TEXT,
                "{}",
                text.len()
            );
        }
        let block_ids: Vec<_> = blocks
            .iter()
            .filter_map(|b| b["block_id"].as_str())
            .collect();
        let unique: std::collections::HashSet<_> = block_ids.iter().collect();
        assert_eq!(unique.len(), block_ids.len());
        assert_eq!(block_ids.len(), 13, "one actions block per pending item");
        assert!(!card.text.contains("<!channel>"));
    }
}
