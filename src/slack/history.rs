//! Finding a message greenlight already posted, so an interrupted post is not sent
//! twice.
//!
//! The outbox raises a row's `attempts` before it calls Slack (`store::outbox`), so a
//! post row claimed again with `attempts > 1` may have reached Slack before the
//! process died, without its `ts` being recorded. Every request message therefore
//! carries message metadata naming its request (Slack's message metadata:
//! `{"event_type", "event_payload"}` on `chat.postMessage`), and before posting such a
//! row again the outbox reads the channel's history since the request was created
//! (`conversations.history` with `include_all_metadata=true`; scopes
//! `channels:history`, `groups:history` for private channels). A message found there
//! is recorded as the request's message instead of posting a second one.
//!
//! When the history cannot be read (a missing scope, Slack down), the outbox posts
//! again: a duplicate message whose buttons still act on the same request is better
//! than a request no reviewer can see.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::api::{MessageRef, SlackClient, SlackError};

/// The `event_type` of greenlight's request messages.
pub const EVENT_TYPE: &str = "greenlight_request";

/// Messages per `conversations.history` page (Slack allows up to 999; it recommends
/// at most 200).
const PAGE: usize = 200;

/// Pages read at most: a post interrupted by a crash is resumed within seconds or
/// minutes, so the request's message, if any, is among the newest few hundred.
const MAX_PAGES: usize = 5;

/// The `metadata` of request `request_id`'s message.
pub fn metadata(request_id: &str) -> Value {
    json!({ "event_type": EVENT_TYPE, "event_payload": { "request_id": request_id } })
}

/// The message in `channel`, posted at or after `since`, whose metadata names
/// `request_id`; `None` when the history (newest `MAX_PAGES` × `PAGE`, 5 × 200
/// messages) has none.
pub async fn find_posted(
    slack: &SlackClient,
    channel: &str,
    since: DateTime<Utc>,
    request_id: &str,
) -> Result<Option<MessageRef>, SlackError> {
    // A second early: Slack's `ts` and our clock may differ slightly.
    let oldest = format!("{}.000000", since.timestamp() - 1);
    let mut cursor = String::new();
    for _ in 0..MAX_PAGES {
        let limit = PAGE.to_string();
        let mut form = vec![
            ("channel", channel),
            ("oldest", oldest.as_str()),
            ("include_all_metadata", "true"),
            ("limit", limit.as_str()),
        ];
        if !cursor.is_empty() {
            form.push(("cursor", cursor.as_str()));
        }
        let page = slack
            .call_form("conversations.history", &form, None)
            .await?;
        if let Some(ts) = ours(&page, request_id) {
            return Ok(Some(MessageRef {
                channel: channel.to_owned(),
                ts,
            }));
        }
        match page["response_metadata"]["next_cursor"].as_str() {
            Some(next) if !next.is_empty() && page["has_more"] == true => {
                cursor = next.to_owned();
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The `ts` of the message in one history page whose metadata names `request_id`.
fn ours(page: &Value, request_id: &str) -> Option<String> {
    page["messages"].as_array()?.iter().find_map(|message| {
        let metadata = &message["metadata"];
        (metadata["event_type"] == EVENT_TYPE
            && metadata["event_payload"]["request_id"] == request_id)
            .then(|| message["ts"].as_str().map(str::to_owned))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_message_naming_the_request_is_ours() {
        let page = json!({"ok": true, "messages": [
            {"ts": "1.1", "text": "someone else"},
            {"ts": "1.2", "metadata": {"event_type": "other_app", "event_payload": {"request_id": "R1"}}},
            {"ts": "1.3", "metadata": metadata("R2")},
            {"ts": "1.4", "metadata": metadata("R1")},
        ]});
        assert_eq!(ours(&page, "R1").as_deref(), Some("1.4"));
        assert_eq!(ours(&page, "R3"), None);
        assert_eq!(ours(&json!({"ok": true}), "R1"), None);
    }
}
