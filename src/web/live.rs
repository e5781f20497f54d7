//! Server-sent events for the page: `GET /web/events` sends the pending list (event
//! `pending`, the rendered list) when it connects and after every change, and
//! `request-<id>` when that request changed, so an open request view re-reads its
//! decision part. Changes come from the service's change feed, so a decision in Slack
//! shows on the page as soon as it is committed. The stream ends at shutdown.

use std::{collections::VecDeque, convert::Infallible};

use askama::Template;
use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use tokio::sync::{broadcast::error::RecvError, broadcast::Receiver, watch};

use super::{auth::SignedIn, pages::pending_list};
use crate::{http::AppState, model::ApprovalId};

/// Changes taken together into one list render, at most.
const MAX_COALESCED: usize = 64;

struct Feed {
    state: AppState,
    changes: Receiver<ApprovalId>,
    shutdown: watch::Receiver<bool>,
    queue: VecDeque<Event>,
    started: bool,
}

impl Feed {
    /// The pending list as an event; an empty list event if the store failed (the
    /// next change tries again).
    async fn list(&self) -> Event {
        let html = match pending_list(&self.state).await {
            Ok(list) => list.render().unwrap_or_default(),
            Err(_) => {
                tracing::warn!("live view: could not read the pending list");
                String::new()
            }
        };
        Event::default().event("pending").data(html)
    }

    /// Waits for the next change (taking whatever else is already queued with it);
    /// `None` at shutdown or when the service is gone.
    async fn next_changes(&mut self) -> Option<Vec<ApprovalId>> {
        if *self.shutdown.borrow() {
            return None;
        }
        let first = tokio::select! {
            change = self.changes.recv() => change,
            _ = self.shutdown.wait_for(|down| *down) => return None,
        };
        let mut ids = Vec::new();
        match first {
            Ok(id) => ids.push(id),
            // Missed some: the list is re-read anyway; open views refresh on their next change.
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return None,
        }
        while ids.len() < MAX_COALESCED {
            match self.changes.try_recv() {
                Ok(id) if !ids.contains(&id) => ids.push(id),
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        Some(ids)
    }
}

/// `GET /web/events`.
pub async fn events(
    _signed: SignedIn,
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed {
        changes: state.service.subscribe_changes(),
        shutdown: state.service.shutdown_watch(),
        state,
        queue: VecDeque::new(),
        started: false,
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(event) = feed.queue.pop_front() {
                return Some((Ok(event), feed));
            }
            if !feed.started {
                feed.started = true;
                let list = feed.list().await;
                feed.queue.push_back(list);
                continue;
            }
            let ids = feed.next_changes().await?;
            let list = feed.list().await;
            feed.queue.push_back(list);
            for id in ids {
                feed.queue.push_back(
                    Event::default()
                        .event(format!("request-{id}"))
                        .data("changed"),
                );
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
