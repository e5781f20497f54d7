//! Everything that speaks Slack, as an adapter around the domain: the Web API client,
//! request signatures, Block Kit rendering (every text escaped and fitted to Slack's
//! limits by `text`), interaction payloads and what greenlight does with them, the
//! full-code and context modals (with file upload for code too long for a modal), the
//! outbox worker that posts and rewrites messages (with `fallback` for a message Slack
//! refuses for its content), and the Socket Mode receiver. The domain
//! (`crate::approval`) imports none of this.

pub mod api;
pub mod batch_card;
pub mod blocks;
pub mod code_view;
pub mod fallback;
pub mod grant_blocks;
pub mod history;
pub mod interaction;
pub mod interactions;
pub mod modal;
pub mod outbox;
pub mod pacing;
pub mod signature;
pub mod socket_mode;
pub mod text;
#[cfg(test)]
mod text_props;
pub mod views;
