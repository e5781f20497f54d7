//! The approval domain: the service that changes a request's state (submit, vote,
//! decide, expire, cancel), who may decide, where callers wait, and the deadline
//! worker. It imports the model and the store; no adapter (Slack, HTTP) is imported
//! here, and nothing here starts a task: `crate::app` runs the workers.
//!
//! # Layout
//! - [`service`]: `ApprovalService`: submit, wait, cancel, expire, and the one path
//!   that ends a request; `review`: its reviewer side (clicks, deny reasons, who may
//!   decide).
//! - `batch`: several actions submitted together, read and waited for together.
//! - [`outcomes`]: what a click did, and the wording of system decisions.
//! - [`approvers`]: approver lists and user groups.
//! - [`waiters`]: long-polls parked until a decision.
//! - [`recent`]: final requests seen lately, so repeated clicks are cheap.
//! - [`deadlines`]: the one worker that expires requests at their deadline.
//! - [`remote`]: the worker that passes other replicas' decisions (PostgreSQL) to
//!   this replica's long-polls and live views.
//! - [`nudges`]: reminders and escalation (the nudge worker's source).
//! - `grants`: standing grants ("Approve for 30 min"): offered, made, used, revoked.

pub mod approvers;
mod batch;
pub mod deadlines;
mod grants;
pub mod nudges;
pub mod outcomes;
pub mod recent;
pub mod remote;
mod review;
pub mod service;
pub mod waiters;

pub use grants::Revoked;
pub use outcomes::{Answer, ClickOutcome, ReasonOutcome};
pub use service::{ApprovalService, Progress, ServiceError};
