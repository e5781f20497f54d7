//! greenlight: approve or deny what AI agents want to do, from Slack.
//!
//! An agent submits an approval request over HTTP; greenlight posts it to Slack with
//! Approve / Deny buttons, parks the agent's call until a signed click (or the
//! deadline, which denies) decides it, and answers `{approved, reason}`.
//!
//! # Layout
//! - [`config`]: settings from the environment, validated once.
//! - [`app`]: builds the service from a listener and runs it until shutdown.
//! - [`http`]: routes: the agent API (`/v1`), Slack interactivity, health.
//! - [`model`]: what a request is, its states, reviewers, the agent-facing JSON; at
//!   the bottom, imported by everything else.
//! - [`approval`]: the domain: the service that submits, counts votes, decides,
//!   expires and cancels; approver checks; waiting long-polls; the deadline worker.
//! - [`policy`]: `config/policy.toml`: which rule a request matches and what it does
//!   (auto approve / deny, or channel, approvers, required approvals, timeout).
//! - [`store`]: SQLite persistence with group commit, the append-only audit trail and
//!   the Slack outbox; it wakes the workers when it has work for them.
//! - [`hooks`]: coding agents (Claude Code, Codex) asking through their permission
//!   hooks: the hook input, how a tool call reads in Slack, each host's answer, and
//!   the `greenlight hook` command hooks (the HTTP hook is in [`http`]).
//! - [`mcp`]: `greenlight mcp`, an MCP server with a `request_approval` tool.
//! - [`audit`]: exporting the audit trail as JSON lines.
//! - [`leases`]: how long shared work is claimed on PostgreSQL, and the fence that
//!   stops a replica sending once its claim may have lapsed.
//! - [`backoff`]: the one backoff (doubling, capped, jittered) every retry loop uses.
//! - [`slack`]: the Slack adapter: Web API client, request signatures, Block Kit,
//!   interaction payloads and handling, the outbox worker, the Socket Mode receiver.
//! - [`web`]: the web review page (`/web`): reviewers, sign-in, the pending list kept
//!   live over server-sent events, request views, Approve / Deny, history. The only
//!   surface when Slack is not configured.
//! - [`visible`]: text as it is: control, bidirectional and invisible characters shown
//!   as marks (`⟨U+202E⟩`), by Slack and the review page alike, so that no request
//!   reads differently from what it is ("Trojan Source").
//! - [`doctor`]: `greenlight doctor`, checks of a deployment's Slack setup.
//! - [`error`]: the API's JSON error type.
//! - [`cli`]: the `greenlight` command; `greenlight request` runs the gate of the Rust
//!   client, `greenlight_client` (`clients/rust`, a crate of its own so that agents do
//!   not compile the server).
//! - [`metrics`], [`readiness`], [`limits`], [`logging`]: running it in production —
//!   Prometheus metrics, the `/readyz` checks, per-agent submission limits, log format.

pub mod app;
pub mod approval;
pub mod audit;
pub mod backoff;
pub mod callbacks;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod error;
pub mod hooks;
pub mod http;
pub mod leases;
pub mod limits;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod readiness;
pub mod slack;
pub mod store;
pub mod visible;
pub mod web;
pub mod workers;
