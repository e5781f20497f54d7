//! End-to-end tests: the real server on 127.0.0.1:0 against a fake Slack.
//! One test binary, so the server and fake are compiled once.

mod agent_api;
mod approval_loop;
mod approvers;
mod batch_limits;
mod batches;
mod callback_fairness;
mod callbacks;
mod client;
mod client_manage;
mod doctor;
mod doctor_postgres;
mod durability;
mod grants;
mod hooks;
mod manifest;
mod nudges;
mod production;
mod replica_limits;
mod replicas;
mod slack_resilience;
mod socket_mode;
mod startup;
mod text_limits;
mod web;
mod web_replicas;
// Shared test infrastructure; not every helper is used by every test module.
#[allow(dead_code)]
mod helpers;
mod policy;
