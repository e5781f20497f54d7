//! Everything that speaks Slack, as an adapter around the domain: the Web API client,
//! request signatures, Block Kit rendering, interaction payloads and what greenlight
//! does with them, the full-code and context modals (with file upload for code too
//! long for a modal), the outbox worker that posts and rewrites messages, and the
//! Socket Mode receiver. The domain (`crate::approval`) imports none of this.

pub mod api;
pub mod blocks;
pub mod code_view;
pub mod interaction;
pub mod interactions;
pub mod modal;
pub mod outbox;
pub mod pacing;
pub mod signature;
pub mod socket_mode;
pub mod views;
