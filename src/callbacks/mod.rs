//! Decision callbacks: when a request that carried a `callback_url` is decided
//! (approved, denied, expired or cancelled), or the last item of a batch with one is,
//! greenlight POSTs the decision there, signed as Standard Webhooks specifies, so an
//! application that stopped a run to ask can resume it without polling.
//!
//! The promise to call is a row the store writes in the decision's own transaction
//! (`store::callbacks`); this module holds what is not storage:
//! - [`settings`]: `GREENLIGHT_CALLBACK_*`, and the allow-list check every
//!   `callback_url` passes at submit (the defence against server-side request forgery);
//! - [`sign`]: the Standard Webhooks signature;
//! - [`worker`]: the `callbacks` worker that sends, retries and audits.

pub mod settings;
pub mod sign;
pub mod worker;

pub use settings::{CallbackSecret, CallbackSettings};
pub use worker::CallbackWorker;
