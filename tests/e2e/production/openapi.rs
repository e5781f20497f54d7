//! The served OpenAPI document matches the checked-in `docs/openapi.json`, and covers
//! the whole agent API.
//!
//! When an API change makes this fail on purpose, regenerate the file with
//! `cargo run --quiet -- openapi > docs/openapi.json` and review the diff.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

#[tokio::test]
async fn served_document_matches_docs_openapi_json() {
    let app = spawn_app().await;
    // No auth needed.
    let response = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(response.status(), StatusCode::OK);
    let served: Value = response.json().await.expect("JSON");
    let file = std::fs::read_to_string(CHECKED_IN).expect("docs/openapi.json exists");
    let checked_in: Value = serde_json::from_str(&file).expect("docs/openapi.json is JSON");
    assert!(
        served == checked_in,
        "docs/openapi.json is out of date with the code; regenerate it with \
         `cargo run --quiet -- openapi > docs/openapi.json` and commit the diff"
    );
    // And the CLI prints exactly the checked-in text (so regenerating is a no-op now).
    assert_eq!(greenlight::http::openapi::document(), file);
}

#[tokio::test]
async fn document_covers_the_agent_api() {
    let doc: Value =
        serde_json::from_str(&greenlight::http::openapi::document()).expect("JSON document");
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/v1/approvals", "post"),
        ("/v1/approvals", "get"),
        ("/v1/approvals/{id}", "get"),
        ("/v1/approvals/{id}/cancel", "post"),
        ("/v1/approvals/{id}/events", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        assert_eq!(
            operation["security"],
            serde_json::json!([{"bearer": []}]),
            "{method} {path} needs the bearer token"
        );
        assert!(
            operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
                == "#/components/schemas/ErrorBody",
            "{method} {path} documents the error body"
        );
    }
    let submit = &doc["paths"]["/v1/approvals"]["post"];
    assert_eq!(
        submit["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/SubmitBody"
    );
    assert!(submit["responses"]["429"]["headers"]["Retry-After"].is_object());
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["SubmitBody"]["required"],
        serde_json::json!(["code"])
    );
    assert_eq!(schemas["SubmitBody"]["additionalProperties"], false);
    for field in [
        "id",
        "status",
        "approved",
        "reason",
        "decided_by",
        "decided_at",
        "created_at",
        "expires_at",
        "agent",
        "title",
        "language",
        "channel",
        "message_ts",
    ] {
        assert!(
            schemas["ApprovalView"]["properties"][field].is_object(),
            "approval object has {field}"
        );
    }
    assert_eq!(
        schemas["Status"]["enum"],
        serde_json::json!(["pending", "approved", "denied", "expired", "cancelled"])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// Every path and method of the document is served by the running server: none falls
/// through to the router's "no such endpoint" 404 or its 405. (The other direction,
/// every mounted route being documented, is the unit test in `src/http/openapi.rs`.)
#[tokio::test]
async fn every_documented_route_is_served() {
    let app = spawn_app().await;
    let doc: Value =
        serde_json::from_str(&greenlight::http::openapi::document()).expect("JSON document");
    let paths = doc["paths"].as_object().expect("paths");
    for required in [
        "/v1/grants",
        "/v1/grants/{id}",
        "/v1/batches",
        "/v1/batches/{id}",
    ] {
        assert!(paths.contains_key(required), "{required} is documented");
    }
    for (path, item) in paths {
        let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        for method in item.as_object().expect("path item").keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                .expect("an HTTP method");
            let response = app
                .http
                .request(method.clone(), app.url(&concrete))
                .bearer_auth(crate::helpers::AGENT_TOKEN)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
            assert!(
                !body.contains("no such endpoint"),
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }
}
