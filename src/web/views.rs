//! What the page shows, as askama templates (`templates/web/`): each struct is one
//! template, checked against its fields when the crate compiles, and every `{{ … }}`
//! in them is escaped by [`VisibleHtml`] (`askama.toml`): hidden characters shown as
//! marks, then HTML-escaped by askama. The only output it does not escape is syntect's
//! highlighted code (escaped by syntect, its hidden characters marked before
//! highlighting) and fragments rendered by these same templates.

use std::fmt;

use askama::{filters::Escaper, Template};
use chrono::{DateTime, SecondsFormat, Utc};

use super::highlight::Line;
use crate::{
    model::{Approval, Status},
    store::Event,
    visible,
};

/// The templates' escaper (named in `askama.toml` for `.html` templates): every
/// control, bidirectional and invisible character becomes its mark (`⟨U+202E⟩`,
/// [`crate::visible`]), as in Slack, so no text on the page reads differently from
/// what it is ("Trojan Source"); then askama's own HTML escaping. Applying it to every
/// `{{ … }}` covers every field, present and future, that may hold request text.
#[derive(Debug, Clone, Copy)]
pub struct VisibleHtml;

impl Escaper for VisibleHtml {
    fn write_escaped_str<W: fmt::Write>(&self, dest: W, string: &str) -> fmt::Result {
        askama::filters::Html.write_escaped_str(dest, &visible::visible(string))
    }

    fn write_escaped_char<W: fmt::Write>(&self, mut dest: W, c: char) -> fmt::Result {
        if visible::is_hidden(c) {
            let mut mark = String::new();
            visible::push_mark(&mut mark, c);
            dest.write_str(&mark)
        } else {
            askama::filters::Html.write_escaped_char(dest, c)
        }
    }
}

/// What every signed-in page's header needs.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The reviewer's name, or `None` on the sign-in pages.
    pub signed_in: Option<String>,
    /// The session's CSRF token (the sign-out form), or the sign-in form's token.
    pub csrf: String,
}

/// A timestamp as the page shows it: RFC 3339 to the second, UTC.
pub fn when(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A request in a list (pending or history).
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub title: String,
    pub agent: String,
    pub status: &'static str,
    pub required: u32,
    pub created_at: String,
    pub expires_at: String,
    pub decided_by: String,
    pub reason: String,
}

impl Row {
    pub fn of(approval: &Approval) -> Self {
        Self {
            id: approval.id.to_string(),
            title: title_of(approval),
            agent: approval.agent.clone(),
            status: approval.status.as_str(),
            required: approval.required_approvals,
            created_at: when(approval.created_at),
            expires_at: when(approval.expires_at),
            decided_by: approval.decided_by.clone().unwrap_or_default(),
            reason: approval.reason.clone(),
        }
    }
}

/// The request's title, or its first line of code when it has none.
fn title_of(approval: &Approval) -> String {
    match approval.title.as_deref().map(str::trim) {
        Some(title) if !title.is_empty() => title.to_owned(),
        _ => {
            let first = approval.code.lines().next().unwrap_or("").trim();
            let short: String = first.chars().take(80).collect();
            if short.is_empty() {
                "(no title)".to_owned()
            } else {
                short
            }
        }
    }
}

/// The live list of pending requests, newest first (sent over server-sent events).
#[derive(Template)]
#[template(path = "web/pending_list.html")]
pub struct PendingList {
    pub rows: Vec<Row>,
    /// More requests are pending than the list shows (the oldest are left out).
    pub more: bool,
}

/// A live standing grant, as the pending page lists it.
#[derive(Debug, Clone)]
pub struct GrantRow {
    pub id: String,
    pub agent: String,
    pub rule: String,
    /// What it covers, on one short line (`grants::summary`).
    pub action: String,
    /// The reviewer who made it, as the page names them.
    pub granted_by: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// `GET /web`: the pending list, kept live, then the live standing grants.
#[derive(Template)]
#[template(path = "web/pending.html")]
pub struct PendingPage {
    pub chrome: Chrome,
    /// A message after an action (a revoked grant) or a refused one.
    pub note: Option<Note>,
    pub list: PendingList,
    pub grants: Vec<GrantRow>,
}

/// The decision part of a request view: status, votes, and the buttons its reader
/// may use. Re-fetched whenever the request changes.
#[derive(Template)]
#[template(path = "web/status.html")]
pub struct StatusPart {
    pub id: String,
    pub csrf: String,
    pub status: &'static str,
    pub pending: bool,
    pub required: u32,
    pub votes: Vec<String>,
    pub expires_at: String,
    pub reason: String,
    pub decided_by: String,
    pub decided_at: String,
    /// Why the reader may not approve (shown instead of the button), if so.
    pub cannot_approve: Option<&'static str>,
    /// Why the reader may not deny (shown instead of the form), if so.
    pub cannot_deny: Option<&'static str>,
}

impl StatusPart {
    pub fn of(
        approval: &Approval,
        csrf: &str,
        votes: Vec<String>,
        cannot_approve: Option<&'static str>,
        cannot_deny: Option<&'static str>,
    ) -> Self {
        Self {
            id: approval.id.to_string(),
            csrf: csrf.to_owned(),
            status: approval.status.as_str(),
            pending: approval.status == Status::Pending,
            required: approval.required_approvals,
            votes,
            expires_at: when(approval.expires_at),
            reason: approval.reason.clone(),
            decided_by: approval.decided_by.clone().unwrap_or_default(),
            decided_at: approval.decided_at.map(when).unwrap_or_default(),
            cannot_approve,
            cannot_deny,
        }
    }
}

/// One audit trail entry.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub detail: String,
}

impl EventRow {
    pub fn of(event: &Event) -> Self {
        Self {
            at: event.at.clone(),
            kind: event.kind.clone(),
            actor: event.actor.clone().unwrap_or_default(),
            detail: event.detail.to_string(),
        }
    }
}

/// A message at the top of a page, after an action.
#[derive(Debug, Clone)]
pub struct Note {
    /// `done`, `refused` or `error`: the CSS class.
    pub class: &'static str,
    /// A refusal's error code, as the API names it (`forbidden`, `already_decided`,
    /// …), on the note as `data-code` for scripts; `None` for other notes.
    pub code: Option<&'static str>,
    pub text: String,
}

/// `GET /web/requests/{id}`: everything a reviewer needs to decide.
#[derive(Template)]
#[template(path = "web/request.html")]
pub struct RequestPage {
    pub chrome: Chrome,
    pub note: Option<Note>,
    pub row: Row,
    pub language: String,
    pub lines: Vec<Line>,
    pub context: Option<String>,
    pub rule: String,
    pub high_risk_rule: Option<String>,
    pub status: StatusPart,
    pub events: Vec<EventRow>,
    /// When the request is a batch item: every item of its batch, in order (this one
    /// included), so a reviewer sees what was asked together.
    pub batch: Vec<Row>,
    /// The batch's own title, when it is a batch item and the agent gave one.
    pub batch_title: Option<String>,
}

/// A reviewer choice in the history filter.
#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// `GET /web/history`: decided (and pending) requests, filtered.
#[derive(Template)]
#[template(path = "web/history.html")]
pub struct HistoryPage {
    pub chrome: Chrome,
    pub statuses: Vec<Choice>,
    pub agent: String,
    pub reviewers: Vec<Choice>,
    pub rows: Vec<Row>,
}

/// `GET /web/signin`: the secret form, or, when no reviewer has a secret, where the
/// one-time link comes from.
#[derive(Template)]
#[template(path = "web/signin.html")]
pub struct SignInPage {
    pub chrome: Chrome,
    pub note: Option<Note>,
    /// Reviewers sign in with secrets (`Web::secrets`); otherwise only with the link.
    pub secrets: bool,
}

/// `GET /web/link/{token}`: confirm a one-time link (a GET never signs in, so a link
/// preview cannot use it up).
#[derive(Template)]
#[template(path = "web/link.html")]
pub struct LinkPage {
    pub chrome: Chrome,
    pub token: String,
    pub name: String,
}

/// A page with one message: a wrong or expired link, a missing request.
#[derive(Template)]
#[template(path = "web/message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub title: String,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample;

    fn chrome() -> Chrome {
        Chrome {
            signed_in: Some("<b>eve</b>".into()),
            csrf: "t\"oken".into(),
        }
    }

    #[test]
    fn everything_from_outside_is_escaped() {
        let evil = "<script>alert(1)</script>";
        let mut approval = sample(&format!("print(1)\n{evil}"));
        approval.title = Some(evil.into());
        approval.agent = evil.into();
        approval.reason = evil.into();
        let page = RequestPage {
            chrome: chrome(),
            note: Some(Note {
                class: "refused",
                code: Some("forbidden"),
                text: evil.into(),
            }),
            row: Row::of(&approval),
            language: evil.into(),
            lines: super::super::highlight::lines(&approval.code, Some("python")),
            context: Some(serde_json::json!({ "why": evil }).to_string()),
            rule: evil.into(),
            high_risk_rule: Some(evil.into()),
            status: StatusPart::of(&approval, "tok", vec![evil.into()], Some("no"), None),
            events: vec![EventRow {
                at: evil.into(),
                kind: evil.into(),
                actor: evil.into(),
                detail: evil.into(),
            }],
            batch: vec![Row::of(&approval), Row::of(&sample("ls"))],
            batch_title: Some(evil.into()),
        }
        .render()
        .expect("renders");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<b>eve</b>"), "{page}");
        // askama writes numeric entities (syntect's escaping is tested in `highlight`).
        assert!(page.contains("&#60;script&#62;alert(1)"), "{page}");
        assert!(page.contains("&#60;b&#62;eve&#60;/b&#62;"), "{page}");
        // The attribute cannot be broken out of either.
        assert!(!page.contains("value=\"t\"oken\""), "{page}");
        let list = PendingList {
            rows: vec![Row::of(&approval)],
            more: false,
        }
        .render()
        .expect("renders");
        assert!(!list.contains("<script>alert"), "{list}");
        assert!(!list.contains("more-pending"), "{list}");
    }

    #[test]
    fn hidden_characters_are_marked_in_every_field() {
        let hidden = "a\u{202E}\u{0}\u{1B}\u{200B}b";
        let shown = "a⟨U+202E⟩⟨U+0000⟩⟨U+001B⟩⟨U+200B⟩b";
        let mut approval = sample(&format!("print(1)\n{hidden}"));
        approval.title = Some(hidden.into());
        approval.agent = hidden.into();
        approval.reason = hidden.into();
        approval.status = Status::Denied;
        approval.decided_by = Some(hidden.into());
        let check = |page: String| {
            assert!(!page.chars().any(visible::is_hidden), "{page:?}");
            assert!(page.contains(shown), "{page}");
            page
        };
        let page = check(
            RequestPage {
                chrome: chrome(),
                note: Some(Note {
                    class: "refused",
                    code: None,
                    text: hidden.into(),
                }),
                row: Row::of(&approval),
                language: hidden.into(),
                lines: super::super::highlight::lines(&approval.code, Some("python")),
                context: Some(serde_json::json!({ "why": hidden }).to_string()),
                rule: hidden.into(),
                high_risk_rule: Some(hidden.into()),
                status: StatusPart::of(&approval, "tok", vec![hidden.into()], None, None),
                events: vec![EventRow {
                    at: hidden.into(),
                    kind: hidden.into(),
                    actor: hidden.into(),
                    detail: hidden.into(),
                }],
                batch: vec![Row::of(&approval)],
                batch_title: Some(hidden.into()),
            }
            .render()
            .expect("renders"),
        );
        assert!(page.contains(&format!("<h1>{shown}</h1>")), "{page}");
        assert!(
            page.contains(&format!("<p id=\"outcome\">{shown}</p>")),
            "{page}"
        );
        check(
            PendingList {
                rows: vec![Row::of(&approval)],
                more: false,
            }
            .render()
            .expect("renders"),
        );
        check(
            HistoryPage {
                chrome: chrome(),
                statuses: Vec::new(),
                agent: hidden.into(),
                reviewers: Vec::new(),
                rows: vec![Row::of(&approval)],
            }
            .render()
            .expect("renders"),
        );
    }

    #[test]
    fn the_sign_in_page_asks_for_a_secret_only_when_reviewers_have_one() {
        let page = |secrets| {
            SignInPage {
                chrome: Chrome {
                    signed_in: None,
                    csrf: "tok".into(),
                },
                note: None,
                secrets,
            }
            .render()
            .expect("renders")
        };
        let with = page(true);
        assert!(with.contains("id=\"secret\""), "{with}");
        assert!(!with.contains("one-time sign-in link"), "{with}");
        let without = page(false);
        assert!(!without.contains("id=\"secret\""), "{without}");
        assert!(!without.contains("reviewer secret"), "{without}");
        assert!(without.contains("one-time sign-in link"), "{without}");
    }

    #[test]
    fn a_list_that_leaves_requests_out_says_so() {
        let approval = sample("ls");
        let list = PendingList {
            rows: vec![Row::of(&approval)],
            more: true,
        }
        .render()
        .expect("renders");
        assert!(list.contains("id=\"more-pending\""), "{list}");
        assert!(list.contains("holds the newest 1."), "{list}");
    }

    #[test]
    fn buttons_follow_what_the_reader_may_do() {
        let approval = sample("ls");
        let render = |approve, deny| {
            StatusPart::of(&approval, "tok", vec![], approve, deny)
                .render()
                .expect("renders")
        };
        let both = render(None, None);
        assert!(both.contains("id=\"approve\"") && both.contains("id=\"deny\""));
        assert!(both.contains("name=\"csrf\" value=\"tok\""));
        let deny_only = render(Some("You asked for this request"), None);
        assert!(!deny_only.contains("id=\"approve\"") && deny_only.contains("id=\"deny\""));
        assert!(deny_only.contains("You asked for this request"));
        let neither = render(Some("not an approver"), Some("not an approver"));
        assert!(!neither.contains("id=\"approve\"") && !neither.contains("id=\"deny\""));
        let decided = crate::model::Approval {
            status: Status::Approved,
            ..sample("ls")
        };
        let final_part = StatusPart::of(&decided, "tok", vec![], None, None)
            .render()
            .expect("renders");
        assert!(!final_part.contains("id=\"approve\""), "{final_part}");
    }

    fn request_page(batch: Vec<Row>, batch_title: Option<String>) -> String {
        let approval = sample("ls");
        RequestPage {
            chrome: chrome(),
            note: None,
            row: Row::of(&approval),
            language: String::new(),
            lines: Vec::new(),
            context: None,
            rule: "r".into(),
            high_risk_rule: None,
            status: StatusPart::of(&approval, "tok", vec![], None, None),
            events: Vec::new(),
            batch,
            batch_title,
        }
        .render()
        .expect("renders")
    }

    #[test]
    fn a_batch_shows_its_title_and_counts_in_words() {
        let one = request_page(vec![Row::of(&sample("ls"))], Some("Deploy v2".into()));
        assert!(
            one.contains("<span id=\"batch-title\">Deploy v2</span>"),
            "{one}"
        );
        assert!(one.contains("(1 action, each"), "{one}");
        let two = request_page(vec![Row::of(&sample("ls")), Row::of(&sample("pwd"))], None);
        assert!(two.contains("(2 actions, each"), "{two}");
        assert!(!two.contains("batch-title"), "{two}");
        let none = request_page(Vec::new(), Some("unused".into()));
        assert!(!none.contains("batch-heading"), "{none}");
    }

    #[test]
    fn grants_are_listed_with_a_revoke_form_carrying_the_csrf_token() {
        let page = PendingPage {
            chrome: chrome(),
            note: None,
            list: PendingList {
                rows: Vec::new(),
                more: false,
            },
            grants: vec![GrantRow {
                id: "g-1".into(),
                agent: "ci-bot".into(),
                rule: "tests".into(),
                action: "commands starting: <cargo test>".into(),
                granted_by: "alice (U0ALICE)".into(),
                expires_at: "2030-01-01T00:00:00Z".into(),
            }],
        }
        .render()
        .expect("renders");
        assert!(page.contains("action=\"/web/grants/g-1/revoke\""), "{page}");
        assert!(page.contains("id=\"revoke-g-1\""), "{page}");
        assert!(
            page.contains("name=\"csrf\" value=\"t&#34;oken\""),
            "{page}"
        );
        assert!(page.contains("&#60;cargo test&#62;"), "{page}");
        assert!(
            page.contains("alice (U0ALICE)") && page.contains("ci-bot"),
            "{page}"
        );
        let empty = PendingPage {
            chrome: chrome(),
            note: None,
            list: PendingList {
                rows: Vec::new(),
                more: false,
            },
            grants: Vec::new(),
        }
        .render()
        .expect("renders");
        assert!(empty.contains("id=\"no-grants\""), "{empty}");
    }
}
