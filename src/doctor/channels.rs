//! `doctor`'s check of the channels the policy names besides `SLACK_CHANNEL_ID`: a
//! rule's own `channel` and its `escalate_channel`. Each gets the same check as the
//! main channel (it exists, is not archived, the bot is a member), since a request
//! routed or escalated there fails the same way: the post is refused and nobody sees it.

use std::collections::BTreeMap;

use super::{channel, Check};
use crate::{
    config::{Config, SlackSettings},
    policy::Action,
    slack::api::SlackClient,
};

/// One line per distinct channel the policy names (other than `SLACK_CHANNEL_ID`),
/// named "rule channel" or "escalation channel". A policy that does not load yields
/// nothing here: the policy check reports it.
pub(super) async fn check(bot: &SlackClient, config: &Config, slack: &SlackSettings) -> Vec<Check> {
    let Ok(policy) = crate::policy::load(config.policy_path.as_deref()) else {
        return Vec::new();
    };
    // channel id → (check name, the setting to fix), first mention wins.
    let mut named: BTreeMap<String, (&'static str, String)> = BTreeMap::new();
    for rule in &policy.rules {
        let Action::Route(route) = &rule.action else {
            continue;
        };
        let mentions = [
            (route.channel.as_ref(), "rule channel", "channel"),
            (
                route.nudges.escalate_channel.as_ref(),
                "escalation channel",
                "escalate_channel",
            ),
        ];
        for (id, name, key) in mentions {
            let Some(id) = id.filter(|id| **id != slack.channel_id) else {
                continue;
            };
            named.entry(id.clone()).or_insert_with(|| {
                (
                    name,
                    format!(
                        "set {key} of rule \"{}\" in {} to",
                        rule.name, policy.source
                    ),
                )
            });
        }
    }
    let mut checks = Vec::new();
    for (id, (name, fix)) in &named {
        checks.push(channel(bot, slack, id, name, fix).await);
    }
    checks
}
