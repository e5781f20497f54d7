//! Slack's documented Block Kit and message limits, checked by the fake Slack on every
//! message and view it receives, so every end-to-end test also checks that greenlight
//! never sends what Slack would refuse. The numbers are those of
//! `shared/docs/slack-platform.md` ("Block Kit limits") and, where it is silent, of
//! Slack's Block Kit reference (modal title 24, context elements 10, input label 2000,
//! placeholder 150, message text 40,000).
//!
//! Lengths are counted in characters (Unicode scalar values), as Slack words it.

use serde_json::Value;

/// What Slack would answer, and why, for a call that breaks a limit.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The error code Slack answers with.
    pub code: &'static str,
    pub what: String,
}

fn len(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

/// Checks one Web API call's body; empty when Slack would accept it.
pub fn check(method: &str, body: &Value) -> Vec<Violation> {
    let mut found = Vec::new();
    match method {
        "chat.postMessage" | "chat.update" | "chat.postEphemeral" => {
            if len(&body["text"]) > 40_000 {
                found.push(Violation {
                    code: "msg_too_long",
                    what: format!("text of {} characters (max 40000)", len(&body["text"])),
                });
            }
            if let Some(blocks) = body["blocks"].as_array() {
                let mut out = Vec::new();
                if blocks.len() > 50 {
                    out.push(format!("{} blocks in a message (max 50)", blocks.len()));
                }
                blocks.iter().for_each(|b| block(b, &mut out));
                found.extend(out.into_iter().map(|what| Violation {
                    code: "invalid_blocks",
                    what,
                }));
            }
        }
        "views.open" | "views.update" | "views.push" => {
            let mut out = Vec::new();
            let view = &body["view"];
            for key in ["title", "submit", "close"] {
                max(&mut out, &format!("view {key}"), &view[key]["text"], 24);
            }
            max(
                &mut out,
                "private_metadata",
                &view["private_metadata"],
                3000,
            );
            if let Some(blocks) = view["blocks"].as_array() {
                if blocks.len() > 100 {
                    out.push(format!("{} blocks in a modal (max 100)", blocks.len()));
                }
                blocks.iter().for_each(|b| block(b, &mut out));
            }
            found.extend(out.into_iter().map(|what| Violation {
                code: "invalid_arguments",
                what,
            }));
        }
        _ => {}
    }
    found
}

fn max(out: &mut Vec<String>, what: &str, value: &Value, limit: usize) {
    if len(value) > limit {
        out.push(format!("{what} of {} characters (max {limit})", len(value)));
    }
}

fn block(block: &Value, out: &mut Vec<String>) {
    let kind = block["type"].as_str().unwrap_or("?");
    match kind {
        "section" => {
            if !block["text"].is_null() {
                let n = len(&block["text"]["text"]);
                if n == 0 || n > 3000 {
                    out.push(format!("section text of {n} characters (1 to 3000)"));
                }
            }
            if let Some(fields) = block["fields"].as_array() {
                if fields.len() > 10 {
                    out.push(format!("{} fields (max 10)", fields.len()));
                }
                for field in fields {
                    max(out, "field", &field["text"], 2000);
                }
            }
        }
        "header" => max(out, "header", &block["text"]["text"], 150),
        "context" => {
            let elements = block["elements"].as_array().map_or(&[][..], Vec::as_slice);
            if elements.len() > 10 {
                out.push(format!("{} context elements (max 10)", elements.len()));
            }
            for element in elements {
                max(out, "context text", &element["text"], 3000);
            }
        }
        "actions" => {
            let elements = block["elements"].as_array().map_or(&[][..], Vec::as_slice);
            if elements.len() > 25 {
                out.push(format!(
                    "{} elements in an actions block (max 25)",
                    elements.len()
                ));
            }
            for element in elements {
                max(out, "button text", &element["text"]["text"], 75);
                max(out, "action_id", &element["action_id"], 255);
                max(out, "button value", &element["value"], 2000);
                let confirm = &element["confirm"];
                if !confirm.is_null() {
                    max(out, "confirm title", &confirm["title"]["text"], 100);
                    max(out, "confirm text", &confirm["text"]["text"], 300);
                    max(out, "confirm label", &confirm["confirm"]["text"], 30);
                    max(out, "deny label", &confirm["deny"]["text"], 30);
                }
            }
        }
        "input" => {
            max(out, "input label", &block["label"]["text"], 2000);
            max(
                out,
                "placeholder",
                &block["element"]["placeholder"]["text"],
                150,
            );
        }
        _ => {}
    }
}
