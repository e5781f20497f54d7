//! `greenlight policy check --request request.json [--agent NAME]`: which rule a
//! request would match and what greenlight would do with it, without posting anything
//! and without the Slack settings a server needs. A policy `serve` would refuse, or a
//! request the API would refuse because its approvals can never be reached, is an
//! error here too.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{load, parse_approver_list, quorum, Defaults, Plan, Requested, Subject};
use crate::config::{DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS};

/// The `POST /v1/approvals` body, as the API reads it (unknown fields refused alike).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    code: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    title: Option<String>,
    #[serde(default)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    requester_slack_id: Option<String>,
    #[serde(default)]
    required_approvals: Option<u32>,
    #[serde(default)]
    callback_url: Option<String>,
}

/// Reads the policy and the request, and describes the outcome. `env` looks up
/// `GREENLIGHT_POLICY`, the Slack settings (`SLACK_BOT_TOKEN`, `SLACK_SIGNING_SECRET`,
/// `SLACK_CHANNEL_ID`: with none of them `serve` runs with the review page as its only
/// surface, and so is the request explained), `GREENLIGHT_REVIEWERS`,
/// `GREENLIGHT_APPROVERS`, `GREENLIGHT_DEFAULT_TIMEOUT_SECS` and the callback settings
/// (`GREENLIGHT_CALLBACK_HOSTS`, `GREENLIGHT_CALLBACK_SECRETS`), all optional here.
/// `Err` is one line.
pub fn run(
    request: &Path,
    agent: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let get = |key: &str| {
        env(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let policy_path = get("GREENLIGHT_POLICY").map(PathBuf::from);
    let policy = load(policy_path.as_deref()).map_err(|e| e.to_string())?;
    let approvers = get("GREENLIGHT_APPROVERS")
        .map(|raw| parse_approver_list(&raw))
        .transpose()
        .map_err(|p| format!("GREENLIGHT_APPROVERS is invalid: {p}"))?;
    policy
        .check_approvers(approvers.as_deref())
        .map_err(|e| e.to_string())?;
    let default_timeout = match get("GREENLIGHT_DEFAULT_TIMEOUT_SECS") {
        None => DEFAULT_TIMEOUT_SECS,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=MAX_TIMEOUT_SECS).contains(s))
            .ok_or_else(|| format!("GREENLIGHT_DEFAULT_TIMEOUT_SECS is invalid: {raw:?}"))?,
    };
    let channel = get("SLACK_CHANNEL_ID");
    let web_only = [
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_CHANNEL_ID",
    ]
    .iter()
    .all(|key| get(key).is_none());
    let approvers_env_set = approvers.is_some();
    // Without Slack the reviewers are the approver list when GREENLIGHT_APPROVERS is
    // unset, exactly as `serve` does it (and it refuses the same policies).
    let approvers = if web_only {
        let reviewers = get("GREENLIGHT_REVIEWERS")
            .map(|raw| crate::web::reviewers::parse(&raw))
            .transpose()
            .map_err(|p| format!("GREENLIGHT_REVIEWERS is invalid: {p}"))?
            .unwrap_or_default();
        let reviewers = super::web_only::reviewer_ids(&reviewers);
        policy
            .check_web_only(approvers.as_deref(), &reviewers)
            .map_err(|e| e.to_string())?;
        approvers.or(Some(reviewers))
    } else {
        approvers
    };

    let raw = std::fs::read_to_string(request)
        .map_err(|e| format!("cannot read {}: {e}", request.display()))?;
    let body: CheckRequest = serde_json::from_str(&raw)
        .map_err(|e| format!("{} is not a valid request: {e}", request.display()))?;
    if body.code.trim().is_empty() {
        return Err(format!("{}: code must not be empty", request.display()));
    }
    let callback = body
        .callback_url
        .as_deref()
        .map(|url| super::explain::callback(url, agent, &get))
        .transpose()
        .map_err(|e| format!("{}: {e}", request.display()))?;
    let subject = Subject {
        agent,
        language: body
            .language
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty()),
        code: &body.code,
        context: body.context.as_ref().filter(|c| !c.is_null()),
    };
    let requested = Requested {
        required_approvals: body.required_approvals.unwrap_or(1),
        timeout_secs: body.timeout_secs.unwrap_or(default_timeout),
    };
    let defaults = Defaults {
        channel: channel
            .clone()
            .unwrap_or_else(|| "the default channel (SLACK_CHANNEL_ID)".into()),
        approvers: approvers.clone(),
    };
    let rule = policy.matching_rule(&subject, requested.required_approvals);
    let plan = policy.plan(&subject, requested, &defaults);

    let mut out = Vec::new();
    let place = if rule.line == 0 {
        format!("built in; no rule in {} matched", policy.source)
    } else {
        format!("{} line {}", policy.source, rule.line)
    };
    out.push(format!("rule: {} ({place})", rule.name));
    match plan {
        Plan::Auto {
            approve,
            reason,
            notify_channel,
            ..
        } => {
            out.push(format!(
                "action: {} at once, no reviewer",
                if approve { "approve" } else { "deny" }
            ));
            out.push(format!("reason: {reason}"));
            out.push(match notify_channel {
                Some(_) if web_only => {
                    "notify: no Slack message (Slack is not configured); the review page's history shows it".into()
                }
                Some(channel) => format!("notify: an FYI without buttons in {channel}"),
                None => "notify: no Slack message".into(),
            });
        }
        Plan::Route {
            channel,
            approvers,
            approvers_from_rule,
            required_approvals,
            timeout_secs,
            high_risk,
            ..
        } => {
            if let Some(short) = approvers.as_deref().and_then(|list| {
                quorum::shortfall(list, required_approvals, body.requester_slack_id.as_deref())
            }) {
                return Err(format!(
                    "{}: the API would refuse this request (422): required_approvals: {short}",
                    request.display()
                ));
            }
            if web_only {
                out.push("action: wait for a reviewer on the review page (/web); Slack is not configured, so nothing is posted".into());
            } else {
                out.push(
                    "action: post to Slack (and list on the review page) for a decision".into(),
                );
                out.push(format!("channel: {channel}"));
            }
            out.push(match &approvers {
                Some(list) => format!(
                    "approvers: {} (from {})",
                    list.join(", "),
                    if approvers_from_rule {
                        "the rule"
                    } else if web_only && !approvers_env_set {
                        "the review page's reviewers (GREENLIGHT_REVIEWERS), as Slack is not configured"
                    } else {
                        "GREENLIGHT_APPROVERS"
                    }
                ),
                None => "approvers: anyone who can click (GREENLIGHT_APPROVERS is unset)".into(),
            });
            if let Some(requester) = &body.requester_slack_id {
                out.push(format!("requester: {requester} may deny but never approve"));
            }
            out.push(format!(
                "required approvals: {required_approvals} (the request asked for {})",
                requested.required_approvals
            ));
            if required_approvals > 1
                && approvers
                    .as_deref()
                    .is_some_and(|list| list.iter().any(|a| quorum::is_group(a)))
            {
                out.push("quorum: depends on the user groups' members; `greenlight doctor` looks them up".into());
            }
            out.push(format!(
                "timeout: {timeout_secs} s (the request asked for {} s); no decision by then denies",
                requested.timeout_secs
            ));
            out.push(format!(
                "high risk: {}",
                if high_risk {
                    "yes, Approve asks for confirmation"
                } else {
                    "no"
                }
            ));
            if let super::Action::Route(route) = &rule.action {
                out.extend(super::explain::nudges(&route.nudges, web_only));
                out.push(super::explain::grants(
                    rule,
                    route,
                    &subject,
                    required_approvals,
                ));
            }
        }
    }
    out.extend(callback);
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// The Slack settings `serve` needs, so the request is explained for Slack.
    fn with_slack(mut env: HashMap<&'static str, String>) -> HashMap<&'static str, String> {
        env.insert("SLACK_BOT_TOKEN", "xoxb-test".into());
        env.insert(
            "SLACK_SIGNING_SECRET",
            "0123456789abcdef0123456789abcdef".into(),
        );
        env
    }

    fn run_with(
        request: &Path,
        agent: Option<&str>,
        env: &HashMap<&str, String>,
    ) -> Result<String, String> {
        run(request, agent, |k| env.get(k).cloned())
    }

    #[test]
    fn explains_route_and_auto_decisions() {
        let dir = tempfile::tempdir().expect("dir");
        let policy = write(
            dir.path(),
            "p.toml",
            "[[rule]]\nname = \"deny-curl\"\naction = \"auto_deny\"\ncode = \"curl\"\nreason = \"no downloads\"\n\n[[rule]]\nname = \"prod\"\nagent = \"deploy\"\nrequired_approvals = 2\ntimeout_secs = 60\nhigh_risk = true\napprovers = [\"S0SRE\"]\n",
        );
        let env = with_slack(HashMap::from([(
            "GREENLIGHT_POLICY",
            policy.display().to_string(),
        )]));
        let curl = write(dir.path(), "a.json", r#"{"code": "curl x"}"#);
        let out = run_with(&curl, None, &env).expect("ok");
        assert!(
            out.starts_with(&format!("rule: deny-curl ({} line 1)", policy.display())),
            "{out}"
        );
        assert!(
            out.contains("action: deny at once") && out.contains("reason: no downloads"),
            "{out}"
        );

        let deploy = write(
            dir.path(),
            "b.json",
            r#"{"code": "make deploy", "timeout_secs": 600, "requester_slack_id": "U0ME"}"#,
        );
        let out = run_with(&deploy, Some("deploy"), &env).expect("ok");
        for line in [
            "rule: prod (",
            "action: post to Slack (and list on the review page) for a decision",
            "channel: the default channel (SLACK_CHANNEL_ID)",
            "approvers: S0SRE (from the rule)",
            "requester: U0ME may deny but never approve",
            "required approvals: 2 (the request asked for 1)",
            "timeout: 60 s (the request asked for 600 s)",
            "high risk: yes",
        ] {
            assert!(out.contains(line), "missing {line:?} in:\n{out}");
        }
        // Without --agent the agent rule cannot match: the built-in default applies.
        let out = run_with(&deploy, None, &env).expect("ok");
        assert!(
            out.starts_with("rule: default (built in; no rule in"),
            "{out}"
        );
        assert!(out.contains("approvers: anyone who can click"), "{out}");
    }

    #[test]
    fn explains_reminders_escalation_and_grants() {
        let dir = tempfile::tempdir().expect("dir");
        let policy = write(
            dir.path(),
            "p.toml",
            "[[rule]]\nname = \"tests\"\ncode = \"^cargo\"\nremind_after_secs = 60\nremind_every_secs = 300\nescalate_after_secs = 900\nescalate_to = [\"U0CAROL\"]\nescalate_channel = \"C0ESC\"\nescalation_extends_secs = 600\ngrant_max_secs = 3600\ngrant_durations_secs = [1800]\n",
        );
        let env = with_slack(HashMap::from([(
            "GREENLIGHT_POLICY",
            policy.display().to_string(),
        )]));
        let one = write(dir.path(), "a.json", r#"{"code": "cargo  test"}"#);
        let out = run_with(&one, Some("ci"), &env).expect("ok");
        for line in [
            "reminders: after 60 s, then every 300 s",
            "escalation: after 900 s; posted to C0ESC too; U0CAROL may decide from then on; the deadline moves 600 s later (once)",
            "grants: offered for 1800 s; a grant covers requests from ci under rule \"tests\" with the code (whitespace normalised) \"cargo test\"",
        ] {
            assert!(out.contains(line), "missing {line:?} in:\n{out}");
        }
        let two = write(
            dir.path(),
            "b.json",
            r#"{"code": "cargo test", "required_approvals": 2}"#,
        );
        let out = run_with(&two, Some("ci"), &env).expect("ok");
        assert!(
            out.contains("grants: not offered (high-risk, or more than one approval needed)"),
            "{out}"
        );
    }

    #[test]
    fn a_quorum_that_can_never_be_reached_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let policy = write(
            dir.path(),
            "p.toml",
            "[[rule]]\nname = \"pair\"\napprovers = [\"U0AAA\", \"U0BBB\"]\nrequired_approvals = 2\n",
        );
        let env = with_slack(HashMap::from([(
            "GREENLIGHT_POLICY",
            policy.display().to_string(),
        )]));
        let fine = write(
            dir.path(),
            "fine.json",
            r#"{"code": "ls", "requester_slack_id": "U0CCC"}"#,
        );
        assert!(run_with(&fine, None, &env).is_ok());
        let own = write(
            dir.path(),
            "own.json",
            r#"{"code": "ls", "requester_slack_id": "U0AAA"}"#,
        );
        let err = run_with(&own, None, &env).expect_err("the requester cannot approve");
        assert!(
            err.contains("would refuse this request (422): required_approvals: 2 approvals can never be reached")
                && err.contains("requester U0AAA is left out"),
            "{err}"
        );
        let three = write(
            dir.path(),
            "three.json",
            r#"{"code": "ls", "required_approvals": 3}"#,
        );
        assert!(run_with(&three, None, &env).is_err());

        let floor = write(
            dir.path(),
            "f.toml",
            "[[rule]]\nname = \"floor\"\nrequired_approvals = 3\n",
        );
        let env = with_slack(HashMap::from([
            ("GREENLIGHT_POLICY", floor.display().to_string()),
            ("GREENLIGHT_APPROVERS", "U0AAA,U0BBB".to_owned()),
        ]));
        let err = run_with(&fine, None, &env).expect_err("refused as serve would");
        assert!(
            err.starts_with(&format!("{}:3:22: rule \"floor\"", floor.display())),
            "{err}"
        );
    }

    #[test]
    fn without_slack_the_review_page_is_the_only_surface() {
        let dir = tempfile::tempdir().expect("dir");
        let policy = write(
            dir.path(),
            "p.toml",
            "[[rule]]\nname = \"fyi\"\naction = \"auto_deny\"\ncode = \"curl\"\nreason = \"no\"\nnotify = true\n\n[[rule]]\nname = \"tests\"\ncode = \"^cargo\"\nremind_after_secs = 60\nescalate_after_secs = 120\nescalate_channel = \"C0ESC\"\n",
        );
        let env = HashMap::from([("GREENLIGHT_POLICY", policy.display().to_string())]);
        let cargo = write(dir.path(), "a.json", r#"{"code": "cargo test"}"#);
        let out = run_with(&cargo, None, &env).expect("ok");
        for line in [
            "action: wait for a reviewer on the review page (/web); Slack is not configured, so nothing is posted",
            "approvers: web:local (from the review page's reviewers (GREENLIGHT_REVIEWERS), as Slack is not configured)",
            "reminders: none sent",
            "escalation: after 120 s; not posted to C0ESC: Slack is not configured",
        ] {
            assert!(out.contains(line), "missing {line:?} in:\n{out}");
        }
        assert!(
            !out.contains("post to Slack") && !out.contains("channel:"),
            "{out}"
        );
        let curl = write(dir.path(), "b.json", r#"{"code": "curl x"}"#);
        let out = run_with(&curl, None, &env).expect("ok");
        assert!(
            out.contains("notify: no Slack message (Slack is not configured)"),
            "{out}"
        );
    }

    #[test]
    fn without_slack_a_rule_no_reviewer_can_decide_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let policy = write(
            dir.path(),
            "p.toml",
            "[[rule]]\nname = \"pair\"\napprovers = [\"web:alice\", \"web:bob\"]\nrequired_approvals = 2\n",
        );
        let ls = write(dir.path(), "a.json", r#"{"code": "ls"}"#);
        let env = HashMap::from([
            ("GREENLIGHT_POLICY", policy.display().to_string()),
            (
                "GREENLIGHT_REVIEWERS",
                "alice:aaaaaaaaaaaaaaaa,carol:cccccccccccccccc".to_owned(),
            ),
        ]);
        let err = run_with(&ls, None, &env).expect_err("only alice can sign in");
        assert!(
            err.starts_with(&format!(
                "{}:4:22: rule \"pair\": needs 2 approvals",
                policy.display()
            )) && err.contains("only 1 of its approvers is one (web:alice)")
                && !err.contains('\n'),
            "{err}"
        );
        // With Slack the same policy is fine: Slack users may decide too.
        assert!(run_with(&ls, None, &with_slack(env)).is_ok());
    }

    #[test]
    fn a_callback_url_is_accepted_and_its_host_explained() {
        let dir = tempfile::tempdir().expect("dir");
        let request = write(
            dir.path(),
            "a.json",
            r#"{"code": "ls", "title": "t", "callback_url": "https://hooks.example.com/gl"}"#,
        );
        let mut env = HashMap::from([
            ("GREENLIGHT_CALLBACK_HOSTS", "hooks.example.com".to_owned()),
            (
                "GREENLIGHT_CALLBACK_SECRETS",
                "ci:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
            ),
        ]);
        let out = run_with(&request, Some("ci"), &env).expect("ok");
        assert!(
            out.contains(
                "callback: allowed: the decision is POSTed to https://hooks.example.com/gl"
            ) && out.contains("signed with ci's secret"),
            "{out}"
        );
        let out = run_with(&request, None, &env).expect("ok");
        assert!(out.contains("callback: host allowed"), "{out}");
        let err = run_with(&request, Some("other"), &env).expect_err("no secret");
        assert!(
            err.contains("(422): callback_url: the agent other has no signing secret"),
            "{err}"
        );
        env.insert("GREENLIGHT_CALLBACK_HOSTS", "elsewhere.example.com".into());
        let err = run_with(&request, Some("ci"), &env).expect_err("host not listed");
        assert!(
            err.contains(
                "(422): callback_url: host hooks.example.com is not in GREENLIGHT_CALLBACK_HOSTS"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_input_is_one_line() {
        let dir = tempfile::tempdir().expect("dir");
        let good = write(dir.path(), "ok.json", r#"{"code": "ls"}"#);
        let broken = write(dir.path(), "bad.json", r#"{"code": "#);
        let unknown = write(dir.path(), "typo.json", r#"{"code": "ls", "timeout": 5}"#);
        let bad_policy = write(
            dir.path(),
            "p.toml",
            "[[rule]]\nname = \"x\"\naction = \"maybe\"\n",
        );
        let none = HashMap::new();
        let cases = [
            run_with(&dir.path().join("missing.json"), None, &none),
            run_with(&broken, None, &none),
            run_with(&unknown, None, &none),
            run_with(
                &good,
                None,
                &HashMap::from([("GREENLIGHT_POLICY", bad_policy.display().to_string())]),
            ),
            run_with(
                &good,
                None,
                &HashMap::from([("GREENLIGHT_APPROVERS", "alice".to_owned())]),
            ),
        ];
        for result in cases {
            let err = result.expect_err("bad input");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
