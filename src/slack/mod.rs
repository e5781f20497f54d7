//! Everything that speaks Slack: the Web API client, request signatures, Block Kit
//! rendering, interaction payloads and the Socket Mode receiver.

pub mod api;
pub mod blocks;
pub mod code_view;
pub mod interaction;
pub mod signature;
pub mod socket_mode;
