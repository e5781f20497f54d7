//! The web review page, end to end: the real binary with no Slack settings at all,
//! driven over plain HTTP (`http`) and from a real headless Chromium (`browser`).

mod browser;
mod grants_page;
mod hidden_text;
mod http;
mod late_clicks;
pub mod server;
mod sessions;
pub use server::sign_in_with_secret;
mod sign_in_pages;
mod slack_too;
