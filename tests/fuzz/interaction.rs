//! Interaction payloads (`src/slack/interaction.rs`): the form body of
//! `POST /slack/interactions` and the JSON of a Socket Mode envelope. Only signed
//! bodies reach the parser in production, but Slack's own payloads vary, and a
//! signing secret can leak: the parser must refuse anything else cleanly.

use greenlight::slack::{code_view, interaction::Payload};
use proptest::{prelude::*, test_runner::TestCaseError};
use serde_json::{Map, Value};

use crate::{assert_clear, fuzz};

/// Keys Slack payloads use, so generated objects often hit the real fields.
const KEYS: &[&str] = &[
    "type",
    "user",
    "id",
    "username",
    "name",
    "team_id",
    "channel",
    "container",
    "message_ts",
    "channel_id",
    "trigger_id",
    "actions",
    "action_id",
    "block_id",
    "value",
    "view",
    "callback_id",
    "private_metadata",
    "state",
    "values",
    "reason",
    "reason_input",
    "response_url",
    "message",
    "blocks",
    "payload",
];

/// Values greenlight reads, or that are awkward for it.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("block_actions".to_owned()),
        Just("view_submission".to_owned()),
        Just("greenlight_approve".to_owned()),
        Just("greenlight_deny".to_owned()),
        Just("greenlight_view_code".to_owned()),
        Just("greenlight_view_context".to_owned()),
        Just("greenlight_deny_reason".to_owned()),
        Just("0190a7e4-3c1b-7cc0-9a6e-1234567890ab".to_owned()),
        Just("U0ALICE".to_owned()),
        Just(String::new()),
        "[0-9a-f-]{0,40}",
        "\\PC{0,64}",
        any::<String>(),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ]
}

/// Nested JSON with Slack's keys (and others), up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
                        1 => "\\PC{0,12}",
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A payload object: always an object, usually with a `type`.
fn payload_value() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.9, interesting_string()),
        prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..8),
    )
        .prop_map(|(kind, fields)| {
            let mut object: Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(kind) = kind {
                object.insert("type".into(), Value::String(kind));
            }
            Value::Object(object)
        })
}

/// A real-looking click form body.
fn click_form() -> String {
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": "U0ALICE", "username": "alice"},
        "channel": {"id": "C0APPROVALS"},
        "container": {"message_ts": "1700000000.000100", "channel_id": "C0APPROVALS"},
        "trigger_id": "123.456.abc",
        "actions": [{"action_id": "greenlight_approve", "block_id": "b",
                     "value": "0190a7e4-3c1b-7cc0-9a6e-1234567890ab"}],
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("encode")
}

/// Byte-level mutations of a valid body: replace, insert, delete at positions.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12).prop_map(
        move |edits| {
            let mut bytes = base.clone();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.push(byte),
                }
            }
            bytes
        },
    )
}

/// Whatever parsed must be safe to use: the click, reason and view readers run.
fn use_payload(payload: &Payload) {
    let clicks = payload.clicks();
    for click in &clicks {
        assert!(!click.user.id.is_empty() || click.user.id.is_empty());
        let _ = click.user.display();
    }
    if let Some(reason) = payload.deny_reason() {
        let _ = reason.user.display();
    }
    let _ = code_view::view_requests(payload);
}

fn judge_form(body: &[u8]) -> Result<(), TestCaseError> {
    match Payload::from_form(body) {
        Ok(payload) => use_payload(&payload),
        Err(error) => assert_clear(&error.to_string()),
    }
    Ok(())
}

#[test]
fn any_bytes_as_a_form_body() {
    fuzz(
        "interaction: any bytes",
        prop::collection::vec(any::<u8>(), 0..2048),
        |body| judge_form(&body),
    );
}

#[test]
fn mutated_click_bodies() {
    fuzz(
        "interaction: mutated click",
        mutated(click_form().into_bytes()),
        |body| judge_form(&body),
    );
}

/// The same payload over HTTP (form-encoded) and over Socket Mode (JSON) parses the
/// same way, and either way is safe to use.
#[test]
fn generated_payloads_parse_alike_over_http_and_socket_mode() {
    fuzz("interaction: generated payload", payload_value(), |value| {
        let form = serde_urlencoded::to_string([("payload", value.to_string())]).expect("encode");
        let over_http = Payload::from_form(form.as_bytes());
        let over_socket = Payload::from_json(value);
        prop_assert_eq!(over_http.is_ok(), over_socket.is_ok());
        for parsed in [over_http, over_socket] {
            match parsed {
                Ok(payload) => use_payload(&payload),
                Err(error) => assert_clear(&error.to_string()),
            }
        }
        Ok(())
    });
}

/// Deep nesting is refused by the JSON parser's depth limit, not by the stack.
#[test]
fn deeply_nested_payloads_are_refused_not_overflowed() {
    for depth in [100, 1_000, 100_000] {
        let json = format!(
            "{{\"type\":\"block_actions\",\"view\":{{\"state\":{}{}}}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let body = serde_urlencoded::to_string([("payload", json)]).expect("encode");
        let _ = judge_form(body.as_bytes());
    }
}
