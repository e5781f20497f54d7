//! Who may decide: approver lists and user groups, no self-approval, the two-person
//! rule, and Deny's reason modal (including when it cannot be opened).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    approval_id_of, request, spawn_app, spawn_app_with, Call, Reply, TestApp, AGENT_TOKEN,
};

fn has_buttons(call: &Call) -> bool {
    call.body["blocks"]
        .to_string()
        .contains("greenlight_approve")
}

/// The ephemeral notes `user` received.
async fn notes_for(app: &TestApp, user: &str, at_least: usize) -> Vec<String> {
    let calls = app
        .slack
        .wait_until(Duration::from_secs(10), "ephemeral notes", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postEphemeral" && c.body["user"] == user)
                .count()
                >= at_least
        })
        .await;
    calls
        .iter()
        .filter(|c| c.method == "chat.postEphemeral" && c.body["user"] == user)
        .map(|c| c.body["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Polls for the decision (long-poll up to `secs`).
async fn decided(app: &TestApp, id: &str, secs: u64) -> Value {
    app.get(&format!("/v1/approvals/{id}?wait={secs}"))
        .await
        .body
}

#[tokio::test]
async fn a_non_approver_decides_nothing_and_is_told() {
    let app = spawn_app_with(&[("GREENLIGHT_APPROVERS", "U0ALICE")]).await;
    let id = app.submit_and_post(request("make deploy")).await;

    assert_eq!(app.approve(&id, "U0MALLORY").await.status, StatusCode::OK);
    assert_eq!(app.deny(&id, "U0MALLORY").await.status, StatusCode::OK);
    let notes = notes_for(&app, "U0MALLORY", 2).await;
    assert!(
        notes
            .iter()
            .all(|n| n.contains("not an approver for this request")),
        "{notes:?}"
    );
    assert_eq!(app.approval(&id).await["status"], "pending");
    assert!(
        app.slack.calls_to("views.open").is_empty(),
        "no modal for a non-approver"
    );
    // Nor may they deny through a modal submission of their own making.
    let forged = app.submit_reason(&id, "U0MALLORY", "because").await;
    assert_eq!(
        forged.body["response_action"], "errors",
        "{:?}",
        forged.body
    );
    assert_eq!(app.approval(&id).await["status"], "pending");

    let kinds = app.event_kinds(&id).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|(k, why)| k == "click_ignored" && why == "not_approver")
            .count(),
        3,
        "{kinds:?}"
    );

    app.approve(&id, "U0ALICE").await;
    let body = app.approval(&id).await;
    assert_eq!(
        (body["status"].as_str(), body["decided_by"].as_str()),
        (Some("approved"), Some("U0ALICE"))
    );
}

#[tokio::test]
async fn user_group_members_may_approve_and_the_group_is_cached() {
    let app = spawn_app_with(&[("GREENLIGHT_APPROVERS", "U0ALICE,S0SRE")]).await;
    app.slack.set_success(
        "usergroups.users.list",
        json!({"ok": true, "users": ["U0CAROL", "W0DAVE"]}),
    );
    let first = app
        .submit_and_post(request("kubectl rollout restart"))
        .await;
    app.approve(&first, "U0EVE").await;
    assert_eq!(app.approval(&first).await["status"], "pending");
    assert!(notes_for(&app, "U0EVE", 1).await[0].contains("not an approver"));

    app.approve(&first, "U0CAROL").await;
    assert_eq!(app.approval(&first).await["decided_by"], "U0CAROL");
    let second = app.submit_and_post(request("kubectl get pods")).await;
    app.approve(&second, "W0DAVE").await;
    assert_eq!(app.approval(&second).await["status"], "approved");

    let lookups = app.slack.calls_to("usergroups.users.list");
    assert_eq!(lookups.len(), 1, "members are cached between clicks");
    assert_eq!(lookups[0].body["usergroup"], "S0SRE");
}

#[tokio::test]
async fn an_unreadable_user_group_fails_closed() {
    let app = spawn_app_with(&[("GREENLIGHT_APPROVERS", "S0SRE")]).await;
    app.slack
        .always("usergroups.users.list", Reply::Error("missing_scope"));
    let id = app.submit_and_post(request("make deploy")).await;
    assert_eq!(app.approve(&id, "U0CAROL").await.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["status"], "pending");
    let notes = notes_for(&app, "U0CAROL", 1).await;
    assert!(notes[0].contains("could not verify"), "{notes:?}");
    assert!(app
        .event_kinds(&id)
        .await
        .contains(&("click_ignored".into(), "unverified".into())));
}

#[tokio::test]
async fn the_requester_may_not_approve_but_may_deny() {
    // The requester is not on the approver list, and may deny anyway.
    let app = spawn_app_with(&[("GREENLIGHT_APPROVERS", "U0ALICE,U0REQ")]).await;
    let mut body = request("terraform destroy");
    body["requester_slack_id"] = json!("U0REQ");
    let id = app.submit_and_post(body).await;

    app.approve(&id, "U0REQ").await;
    assert_eq!(app.approval(&id).await["status"], "pending");
    assert!(notes_for(&app, "U0REQ", 1).await[0].contains("cannot approve it yourself"));
    assert!(app
        .event_kinds(&id)
        .await
        .contains(&("click_ignored".into(), "self_approval".into())));

    let ack = app.deny_with_reason(&id, "U0REQ", "changed my mind").await;
    assert_eq!(ack.status, StatusCode::OK);
    let body = app.approval(&id).await;
    assert_eq!(body["status"], "denied");
    assert_eq!(body["decided_by"], "U0REQ");
    assert_eq!(body["reason"], "changed my mind");
}

#[tokio::test]
async fn two_person_rule_counts_distinct_approvers() {
    let app = spawn_app().await;
    let mut body = request("DROP TABLE sessions");
    body["required_approvals"] = json!(2);
    let id = app.submit_and_post(body).await;
    let post = app.slack.nth_call("chat.postMessage", 1).await;
    assert!(post.body["blocks"]
        .to_string()
        .contains("Needs 2 approvals"));

    app.approve(&id, "U0ALICE").await;
    let progress = app
        .wait_for_update("the progress update", |c| {
            c.body["blocks"]
                .to_string()
                .contains("1 of 2 approvals: <@U0ALICE>")
        })
        .await;
    assert!(
        has_buttons(&progress),
        "buttons stay until enough people approve"
    );
    assert_eq!(app.approval(&id).await["status"], "pending");

    // The same person again does not count twice.
    app.approve(&id, "U0ALICE").await;
    assert_eq!(app.approval(&id).await["status"], "pending");
    assert!(notes_for(&app, "U0ALICE", 1).await[0].contains("already approved"));

    app.approve(&id, "U0BOB").await;
    let body = decided(&app, &id, 5).await;
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decided_by"], "U0ALICE,U0BOB");
    assert_eq!(body["reason"], "Approved in Slack by <@U0ALICE>, <@U0BOB>");
    let last = app
        .wait_for_update("the approved message", |c| !has_buttons(c))
        .await;
    assert!(last.body["blocks"]
        .to_string()
        .contains("<@U0ALICE>, <@U0BOB>"));
    // The final update is the last one: no progress update overtook it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let updates = app.slack.calls_to("chat.update");
    assert!(
        !has_buttons(updates.last().expect("updates")),
        "buttons came back"
    );

    let kinds = app.event_kinds(&id).await;
    for expected in [
        ("approval_vote", ""),
        ("click_ignored", "repeat_vote"),
        ("decided", ""),
    ] {
        assert!(
            kinds.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {kinds:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_approvers_yield_one_decision_with_both_votes() {
    let app = spawn_app().await;
    for round in 0..8 {
        let mut body = request(&format!("echo {round}"));
        body["required_approvals"] = json!(2);
        let id = app.submit_and_post(body).await;
        let (a, b) = tokio::join!(app.approve(&id, "U0ALICE"), app.approve(&id, "U0BOB"));
        assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
        let body = app.approval(&id).await;
        assert_eq!(body["status"], "approved", "round {round}: {body}");
        let by = body["decided_by"].as_str().expect("decided_by");
        assert!(
            by == "U0ALICE,U0BOB" || by == "U0BOB,U0ALICE",
            "round {round}: {by}"
        );
        let kinds = app.event_kinds(&id).await;
        assert_eq!(
            kinds.iter().filter(|(k, _)| k == "decided").count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|(k, _)| k == "approval_vote").count(),
            1,
            "{kinds:?}"
        );
    }
}

#[tokio::test]
async fn the_deny_reason_reaches_the_agent_verbatim() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("rm -rf build")).await;
    let poll = {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/approvals/{id}?wait=30"));
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(AGENT_TOKEN)
                .send()
                .await
                .expect("poll")
                .json::<Value>()
                .await
                .expect("json")
        })
    };
    app.deny(&id, "U0BOB").await;
    let modal = app.wait_for_modal(&id).await;
    let view = &modal.body["view"];
    assert_eq!(view["callback_id"], "greenlight_deny_reason");
    assert_eq!(view["private_metadata"], id.as_str());

    // Blank is refused in the modal, and decides nothing.
    let blank = app.submit_reason(&id, "U0BOB", "  \n ").await;
    assert_eq!(blank.status, StatusCode::OK);
    assert_eq!(blank.body["response_action"], "errors");
    assert!(blank.body["errors"]["reason"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    assert_eq!(app.approval(&id).await["status"], "pending");

    let reason = "Not on <!channel> & friends:\n  \"use a temp dir\" <@U0X>";
    assert_eq!(
        app.submit_reason(&id, "U0BOB", reason).await.body,
        Value::Null
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("long-poll woke")
        .expect("task");
    assert_eq!(answer["status"], "denied");
    assert_eq!(answer["reason"], reason, "verbatim");
    assert_eq!(answer["decided_by"], "U0BOB");
    let update = app
        .wait_for_update("the denied message", |c| !has_buttons(c))
        .await;
    let shown = update.body["blocks"].to_string();
    assert!(shown.contains("&lt;!channel&gt; &amp; friends"), "{shown}");
    assert!(
        !shown.contains("<!channel>") && !shown.contains("<@U0X>"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_modal_that_cannot_open_denies_at_once() {
    for error in ["trigger_expired", "trigger_exchanged"] {
        let app = spawn_app().await;
        app.slack.always("views.open", Reply::Error(error));
        let id = app.submit_and_post(request("make release")).await;
        assert_eq!(app.deny(&id, "U0BOB").await.status, StatusCode::OK);
        let body = decided(&app, &id, 5).await;
        assert_eq!(body["status"], "denied", "{error}: {body}");
        assert_eq!(body["decided_by"], "U0BOB");
        assert_eq!(
            body["reason"],
            "Denied in Slack by <@U0BOB>; no reason was given (the reason dialog could not be opened)"
        );
        let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
        let decided_event = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["kind"] == "decided")
            .cloned()
            .expect("decided");
        assert_eq!(decided_event["detail"]["modal_error"], error);
    }
}

#[tokio::test]
async fn a_quorum_the_listed_approvers_can_never_reach_is_refused_with_422() {
    let app = spawn_app_with(&[("GREENLIGHT_APPROVERS", "U0AAA,U0BBB")]).await;
    let refused = |required: u32, requester: &str| {
        let mut body = request("kubectl rollout restart deploy/api");
        body["required_approvals"] = json!(required);
        body["requester_slack_id"] = json!(requester);
        body
    };
    // The requester is one of the two and may not approve: two approvals never come.
    // Three approvals from two people never come either.
    for (body, names) in [
        (refused(2, "U0AAA"), "requester U0AAA is left out"),
        (refused(3, "U0CCC"), "only 2 people (U0AAA, U0BBB)"),
    ] {
        let answer = app.submit(body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:?}",
            answer.body
        );
        assert_eq!(answer.body["error"]["code"], "invalid_request");
        let message = answer.body["error"]["message"].as_str().expect("message");
        assert!(message.starts_with("required_approvals: "), "{message}");
        assert!(message.contains(names), "{message}");
    }
    // What can be reached is accepted, and is the only message ever posted: the
    // refused requests were never stored.
    let id = app.submit_and_post(refused(2, "U0CCC")).await;
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1);
    assert_eq!(approval_id_of(&posts[0]), id);
}

#[tokio::test]
async fn a_quorum_that_names_a_user_group_is_accepted_at_submit() {
    // Its size is known only to Slack: `greenlight doctor` checks it instead.
    let app = spawn_app_with(&[("GREENLIGHT_APPROVERS", "U0AAA,S0SRE")]).await;
    let mut body = request("kubectl rollout restart deploy/api");
    body["required_approvals"] = json!(3);
    body["requester_slack_id"] = json!("U0AAA");
    let answer = app.submit(body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
}
