//! Bad agent input always gets a clear JSON error and changes nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{request, spawn_app, AGENT_TOKEN, OTHER_AGENT_TOKEN};

fn assert_error(answer: &crate::helpers::Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{:?}", answer.body);
    assert!(answer.body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let app = spawn_app().await;
    let none = app
        .post_raw(
            "/v1/approvals",
            None,
            "application/json",
            request("ls").to_string().into_bytes(),
        )
        .await;
    assert_error(&none, StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong = app
        .submit_as("ci-token-0123456789abcdeX", "", request("ls"))
        .await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    let prefix = app.submit_as(&AGENT_TOKEN[..10], "", request("ls")).await;
    assert_error(&prefix, StatusCode::UNAUTHORIZED, "unauthorized");
    let get = app
        .http
        .get(app.url("/v1/approvals"))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), StatusCode::UNAUTHORIZED);
    // Only the start-up token check (readiness) may have reached Slack.
    assert!(
        app.slack.calls().iter().all(|c| c.method == "auth.test"),
        "nothing reached Slack"
    );
}

#[tokio::test]
async fn malformed_and_invalid_bodies_name_the_problem() {
    let app = spawn_app().await;
    let broken = app
        .post_raw(
            "/v1/approvals",
            Some(AGENT_TOKEN),
            "application/json",
            b"{\"code\": ".to_vec(),
        )
        .await;
    assert_error(&broken, StatusCode::BAD_REQUEST, "malformed_json");

    let missing = app.submit(json!({"language": "python"})).await;
    assert_error(
        &missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert_eq!(
        missing.body["error"]["message"],
        "invalid request body: code is required"
    );

    for (body, field) in [
        (json!({"code": "   "}), "code"),
        (json!({"code": 5}), "code"),
        (json!({"code": "ls", "timeout_secs": 0}), "timeout_secs"),
        (json!({"code": "ls", "timeout_secs": -3}), "timeout_secs"),
        (json!({"code": "ls", "timeout": 5}), "timeout"),
        (
            json!({"code": "ls", "requester_slack_id": "<!channel>"}),
            "requester_slack_id",
        ),
        (json!({"code": "ls", "title": "x".repeat(201)}), "title"),
        (json!({"code": "ls", "language": "py<script>"}), "language"),
        (json!(["code"]), "JSON object"),
    ] {
        let answer = app.submit(body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        let message = answer.body["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{body}: {message}");
        // The API's terms, not Rust's or serde's.
        for leak in [
            "SubmitBody",
            "struct",
            "u64",
            "`",
            "missing field",
            "unknown field",
            "line 1",
        ] {
            assert!(!message.contains(leak), "{leak:?} in {message}");
        }
    }
    let bad_wait = app
        .submit_as(AGENT_TOKEN, "?wait=forever", request("ls"))
        .await;
    assert_error(
        &bad_wait,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    // Only the start-up token check (readiness) may have reached Slack.
    assert!(
        app.slack.calls().iter().all(|c| c.method == "auth.test"),
        "nothing reached Slack"
    );
    assert_eq!(app.get("/v1/approvals").await.body["approvals"], json!([]));
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = spawn_app().await;
    let huge = json!({"code": "x".repeat(1024 * 1024 + 1)})
        .to_string()
        .into_bytes();
    let answer = app
        .post_raw("/v1/approvals", Some(AGENT_TOKEN), "application/json", huge)
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let interaction = app
        .post_raw(
            "/slack/interactions",
            None,
            "application/x-www-form-urlencoded",
            vec![b'a'; 1024 * 1024 + 1],
        )
        .await;
    assert_eq!(interaction.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unknown_ids_and_routes_are_404() {
    let app = spawn_app().await;
    let unknown = app
        .get(&format!("/v1/approvals/{}", uuid::Uuid::new_v4()))
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    let junk = app.get("/v1/approvals/not-an-id").await;
    assert_error(&junk, StatusCode::NOT_FOUND, "not_found");
    // Invalid percent-encoding in the path is still a JSON error, not plain text.
    for path in ["/v1/approvals/%FF", "/v1/approvals/%FF/events"] {
        let bad = app.get(path).await;
        assert_error(&bad, StatusCode::NOT_FOUND, "not_found");
    }
    let route = app.get("/v2/nothing").await;
    assert_error(&route, StatusCode::NOT_FOUND, "not_found");
    let method = app
        .http
        .delete(app.url("/v1/approvals"))
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(method.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn health_needs_no_auth_and_says_nothing_of_config() {
    let app = spawn_app().await;
    let answer = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(answer.status(), StatusCode::OK);
    let text = answer.text().await.expect("body");
    assert_eq!(text, r#"{"status":"ok"}"#);
}

/// An agent long-polling one submission (`?wait=`) can still submit another at once:
/// the per-agent admission check is not held through the wait.
#[tokio::test]
async fn a_long_polled_submission_does_not_block_the_next() {
    let app = spawn_app().await;
    let first = app.submit_as(AGENT_TOKEN, "?wait=30", request("sleep 1"));
    let second = async {
        // Let the first one get to its wait.
        app.slack.nth_call("chat.postMessage", 1).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), app.submit(request("ls")))
            .await
            .expect("the second submission was not held up by the first's long-poll")
    };
    tokio::select! {
        answer = second => assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body),
        _ = first => panic!("the first long-poll ended before the second submission"),
    }
}

#[tokio::test]
async fn an_agent_reads_only_its_own_requests() {
    let app = spawn_app().await;
    let answer = app.submit(request("cat ~/.aws/credentials")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let id = answer.body["id"].as_str().expect("id").to_owned();
    for path in [
        format!("/v1/approvals/{id}"),
        format!("/v1/approvals/{id}?wait=5"),
        format!("/v1/approvals/{id}/events"),
    ] {
        let other = app.get_as(OTHER_AGENT_TOKEN, &path).await;
        assert_eq!(
            other.status,
            StatusCode::FORBIDDEN,
            "{path}: {:?}",
            other.body
        );
        assert_eq!(other.body["error"]["code"], "forbidden", "{path}");
        assert!(
            !other.body.to_string().contains("credentials"),
            "{path}: {:?}",
            other.body
        );
    }
    let others = app.get_as(OTHER_AGENT_TOKEN, "/v1/approvals").await;
    assert_eq!(others.status, StatusCode::OK);
    assert_eq!(others.body["approvals"], json!([]), "{:?}", others.body);
    let own = app.get("/v1/approvals").await;
    assert_eq!(
        own.body["approvals"][0]["id"],
        id.as_str(),
        "{:?}",
        own.body
    );
    assert_eq!(
        app.get(&format!("/v1/approvals/{id}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/v1/approvals/{id}/events")).await.status,
        StatusCode::OK
    );
}

/// A NUL (U+0000) anywhere in a request's text is refused with 422 naming the field,
/// on every backend: PostgreSQL cannot store it, and answered 500 (found in a trial).
#[tokio::test]
async fn a_nul_character_is_refused_naming_the_field() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"code": "rm -rf /tmp/x\u{0}"}), "code"),
        (json!({"code": "ls", "title": "t\u{0}"}), "title"),
        (
            json!({"code": "ls", "context": {"env": ["prod", {"k": "v\u{0}"}]}}),
            "context",
        ),
    ] {
        let answer = app.submit(body).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("{field} must not contain the NUL character")),
            "{message}"
        );
    }
    // A batch's own title too (it is stored with the batch, not with an item).
    let batch = app
        .post_raw(
            "/v1/batches",
            Some(AGENT_TOKEN),
            "application/json",
            serde_json::to_vec(&json!({"title": "t\u{0}", "actions": [{"code": "ls"}]}))
                .expect("json"),
        )
        .await;
    assert_error(&batch, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let list = app.get("/v1/approvals").await.body;
    assert_eq!(list["approvals"], json!([]), "nothing was stored");
}
