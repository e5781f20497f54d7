//! Everything that speaks Slack: the Web API client, request signatures, Block Kit
//! rendering and interaction payloads.

pub mod api;
pub mod blocks;
pub mod interaction;
pub mod modal;
pub mod signature;
