//! Everything that speaks Slack: the Web API client, request signatures, Block Kit
//! rendering, the full-code and context modals (with file upload for code too long
//! for a modal), interaction payloads and the Socket Mode receiver.

pub mod api;
pub mod blocks;
pub mod code_view;
pub mod interaction;
pub mod modal;
pub mod signature;
pub mod socket_mode;
