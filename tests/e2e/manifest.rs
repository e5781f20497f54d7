//! The Slack app manifests in `config/`: parsed, so a typo or a dropped scope fails
//! here rather than when someone creates an app from them.

use std::collections::BTreeSet;

use serde_json::Value;

/// Scopes greenlight's Web API calls need; a missing one fails at run time with
/// `missing_scope`.
const REQUIRED_BOT_SCOPES: [&str; 7] = [
    "chat:write",
    "chat:write.public",
    "users:read",
    "usergroups:read",
    "files:write",
    "channels:history",
    "groups:history",
];

fn load(name: &str) -> Value {
    let path = format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

fn bot_scopes(manifest: &Value) -> BTreeSet<String> {
    manifest["oauth_config"]["scopes"]["bot"]
        .as_array()
        .expect("oauth_config.scopes.bot is a list")
        .iter()
        .map(|s| s.as_str().expect("scope is a string").to_owned())
        .collect()
}

fn check_common(manifest: &Value) {
    assert_eq!(manifest["_metadata"]["major_version"], 1);
    assert!(manifest["display_information"]["name"].is_string());
    // Bot scopes are only granted to an app with a bot user.
    assert!(manifest["features"]["bot_user"]["display_name"].is_string());
    let scopes = bot_scopes(manifest);
    for scope in REQUIRED_BOT_SCOPES {
        assert!(scopes.contains(scope), "missing bot scope {scope}");
    }
    assert_eq!(manifest["settings"]["interactivity"]["is_enabled"], true);
}

#[test]
fn http_manifest_points_interactivity_at_our_endpoint() {
    let manifest = load("slack-app-manifest.yml");
    check_common(&manifest);
    assert_eq!(
        manifest["settings"]["interactivity"]["request_url"],
        "https://YOUR-HOST/slack/interactions"
    );
    assert_eq!(manifest["settings"]["socket_mode_enabled"], false);
}

#[test]
fn socket_mode_manifest_has_no_request_url() {
    let manifest = load("slack-app-manifest.socket-mode.yml");
    check_common(&manifest);
    assert_eq!(manifest["settings"]["socket_mode_enabled"], true);
    assert!(
        manifest["settings"]["interactivity"]
            .get("request_url")
            .is_none(),
        "Socket Mode apps get clicks over the WebSocket"
    );
}

#[test]
fn both_manifests_ask_for_the_same_scopes() {
    assert_eq!(
        bot_scopes(&load("slack-app-manifest.yml")),
        bot_scopes(&load("slack-app-manifest.socket-mode.yml"))
    );
}
