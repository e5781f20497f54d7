//! Socket Mode: clicks delivered over a WebSocket that greenlight opens to Slack, for
//! installations that have no public URL for `/slack/interactions`.
//!
//! `apps.connections.open` (app-level `xapp-` token) returns a one-time `wss://` URL;
//! Slack then sends `hello` and envelopes, and each envelope must be acked with its
//! `envelope_id` within 3 seconds. There is no request signature: the URL itself is the
//! credential, so it is never logged.
//!
//! Connections are replaced rather than repaired. On `disconnect` after a stable
//! connection (Slack rotates connections every few hours and warns before restarting
//! a server) a new connection is opened at once while the old one keeps draining
//! until Slack closes it. Anything else — no connection, a lost link, or a
//! `disconnect` within seconds of connecting, as Slack does to every new connection
//! when the app already holds its maximum (`too_many_websockets`) — is a failed
//! attempt: the supervisor waits with the shared [`Backoff`] (doubling, capped,
//! jittered) and warns once per backoff step, not once per attempt.
//!
//! Slack may deliver the same click twice (an envelope redelivered after a lost ack,
//! two overlapping connections). That needs no bookkeeping here: the click is handed
//! to [`Interactions::handle`], whose store write is conditional on the request still
//! being pending, so the second delivery is recorded as an ignored click and acked
//! like any other.

use std::{fmt, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    task::JoinSet,
    time::{sleep, sleep_until, Instant},
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{self, Message},
    MaybeTlsStream, WebSocketStream,
};

use super::interactions::Interactions;
use super::{
    api::{RetryPolicy, SlackClient},
    interaction::Payload,
};
use crate::{
    backoff::{Backoff, Retrying},
    metrics::Metrics,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Slack shows the clicker an error if the ack takes longer than this.
const ACK_DEADLINE: Duration = Duration::from_secs(3);

/// Timings of one connection. The defaults suit Slack; tests shorten them.
#[derive(Debug, Clone)]
pub struct Timings {
    /// How long the WebSocket handshake may take.
    pub connect_timeout: Duration,
    /// How often we ping. Slack answers pings, so a live link is never silent for
    /// longer than this.
    pub ping_interval: Duration,
    /// No frame at all for this long means the link is dead (a half-open TCP
    /// connection never reports an error by itself).
    pub idle_timeout: Duration,
    /// How long a connection Slack asked us to replace may still deliver envelopes
    /// before we close it ourselves. Slack normally closes it within seconds.
    pub drain_timeout: Duration,
    /// On shutdown, how long to wait for clicks being recorded to be acked.
    pub shutdown_grace: Duration,
    /// A connection that lived this long did useful work: its end resets the backoff,
    /// and a `disconnect` after it is Slack's planned rotation, followed at once.
    /// One that ends sooner, whatever the reason, counts as a failed attempt: Slack
    /// answering every new connection with `hello` then `disconnect`
    /// (`too_many_websockets`) must slow us down, not speed us up.
    pub stable_after: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            drain_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
            stable_after: Duration::from_secs(30),
        }
    }
}

/// Reconnect delays, derived from the Web API retry policy so that tests which make
/// Slack calls fast make reconnects fast too. The cap is four times the Web API's:
/// reconnecting hard against a Slack outage, or against Slack refusing one more
/// connection (`too_many_websockets`), helps nobody.
pub fn reconnect_backoff(retry: &RetryPolicy) -> Backoff {
    Backoff::new(retry.base_backoff, retry.max_backoff.saturating_mul(4))
}

/// The Socket Mode receiver: built at start-up, run as a background task.
pub struct SocketMode {
    /// A Web API client holding the app-level token: only `apps.connections.open`
    /// accepts it.
    app_client: SlackClient,
    interactions: Interactions,
    backoff: Backoff,
    timings: Timings,
    metrics: Metrics,
}

impl fmt::Debug for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `app_client` redacts its own token.
        f.debug_struct("SocketMode")
            .field("app_client", &self.app_client)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// How a connection ended, or that it asked to be replaced.
#[derive(Debug)]
enum Ended {
    /// Slack sent `disconnect` with this reason: open a new connection; this one
    /// keeps draining.
    Replace { reason: String },
    /// The connection is gone.
    Lost,
}

/// What the supervisor does after a connection ended (or could not be opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    /// The `cause` label of `greenlight_slack_socket_reconnects_total`.
    cause: &'static str,
    /// Whether it counts as a failed attempt (back off) or reconnects at once.
    failed: bool,
}

/// A planned rotation (Slack asking for a new connection after a stable one) is
/// followed at once; everything else is a failed attempt. `stable`: the connection
/// lived [`Timings::stable_after`].
fn verdict(ended: &Ended, stable: bool) -> Verdict {
    match ended {
        Ended::Replace { reason } if stable && reason != "link_disabled" => Verdict {
            cause: "planned",
            failed: false,
        },
        Ended::Replace { .. } => Verdict {
            cause: "disconnected",
            failed: true,
        },
        Ended::Lost => Verdict {
            cause: "lost",
            failed: true,
        },
    }
}

/// Logs at info normally, at debug while the supervisor is backing off (its own
/// warning, once per backoff step, speaks for those connections).
macro_rules! note {
    ($quiet:expr, $($arg:tt)+) => {
        if $quiet { tracing::debug!($($arg)+) } else { tracing::info!($($arg)+) }
    };
}

impl SocketMode {
    /// `app_client` must hold the app-level token (`xapp-…`, scope
    /// `connections:write`), not the bot token; `backoff` spaces failed attempts
    /// ([`reconnect_backoff`] in production). Nothing connects until
    /// [`run`](Self::run).
    pub fn new(
        app_client: SlackClient,
        interactions: Interactions,
        backoff: Backoff,
        timings: Timings,
        metrics: Metrics,
    ) -> Self {
        Self {
            app_client,
            interactions,
            backoff,
            timings,
            metrics,
        }
    }

    /// Keeps one connection open (two while one is being replaced) until `shutdown`
    /// turns true or its sender is dropped, then lets every connection ack what it is
    /// recording and close.
    ///
    /// Every new connection after the first is counted in
    /// `greenlight_slack_socket_reconnects_total`. Attempts that did no useful work
    /// (no connection, or one that ended within [`Timings::stable_after`]) back off
    /// with jitter up to the cap, with one warning per backoff step.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut connections = JoinSet::new();
        let mut retrying = Retrying::new(self.backoff);
        let mut next_id: u64 = 0;
        tracing::info!("Socket Mode: starting");
        loop {
            let opened = tokio::select! {
                opened = self.open() => opened,
                _ = stopped(&mut shutdown) => break,
            };
            let (verdict, why) = match opened {
                Ok(socket) => {
                    next_id += 1;
                    let (ended_tx, mut ended_rx) = oneshot::channel();
                    let connection = Connection {
                        id: next_id,
                        interactions: self.interactions.clone(),
                        timings: self.timings.clone(),
                        quiet: retrying.failures() > 0,
                        ended: Some(ended_tx),
                    };
                    connections.spawn(connection.run(socket, shutdown.clone()));
                    let stable_at = Instant::now() + self.timings.stable_after;
                    let mut stable = false;
                    let ended = loop {
                        tokio::select! {
                            ended = &mut ended_rx => break Some(ended.unwrap_or(Ended::Lost)),
                            _ = sleep_until(stable_at), if !stable => {
                                stable = true;
                                if retrying.failures() > 0 {
                                    tracing::info!(
                                        connection = next_id,
                                        failed_attempts = retrying.failures(),
                                        "Socket Mode: connected and stable again"
                                    );
                                }
                                retrying.succeeded();
                            }
                            _ = stopped(&mut shutdown) => break None,
                        }
                    };
                    let Some(ended) = ended else { break };
                    let why = match &ended {
                        Ended::Replace { reason } => format!("Slack sent disconnect ({reason})"),
                        Ended::Lost => "the connection ended".to_owned(),
                    };
                    (verdict(&ended, stable), why)
                }
                Err(error) => (
                    Verdict {
                        cause: "connect_failed",
                        failed: true,
                    },
                    error,
                ),
            };
            // Forget connections that have finished draining.
            while connections.try_join_next().is_some() {}
            self.metrics.socket_reconnect(verdict.cause);
            if !verdict.failed {
                continue;
            }
            let step = retrying.failed();
            if step.log {
                tracing::warn!(
                    cause = verdict.cause,
                    error = %why,
                    failed_attempts = step.failures,
                    retry_in_ms = step.delay.as_millis() as u64,
                    "Socket Mode: no stable connection; backing off before reconnecting"
                );
            }
            tokio::select! {
                _ = sleep(step.delay) => {}
                _ = stopped(&mut shutdown) => break,
            }
        }
        // Each connection saw the same shutdown and is acking what it has in hand;
        // give them that long, plus a little, then drop whatever is left.
        let grace = self.timings.shutdown_grace + Duration::from_secs(1);
        let _ = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        tracing::info!("Socket Mode: stopped");
    }

    /// Asks Slack for a WebSocket URL and connects to it.
    async fn open(&self) -> Result<Socket, String> {
        let answer = self
            .app_client
            .call("apps.connections.open", &json!({}), None)
            .await
            .map_err(|error| error.to_string())?;
        let url = answer
            .get("url")
            .and_then(Value::as_str)
            .filter(|url| url.starts_with("wss://") || url.starts_with("ws://"))
            .ok_or_else(|| "apps.connections.open answered without a WebSocket URL".to_owned())?;
        match tokio::time::timeout(self.timings.connect_timeout, connect_async(url)).await {
            Err(_) => Err("the WebSocket handshake timed out".to_owned()),
            Ok(Err(error)) => Err(describe(&error)),
            Ok(Ok((socket, _response))) => Ok(socket),
        }
    }
}

/// Resolves once shutdown is requested, or the server that owns the sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

/// A WebSocket error, phrased without the URL: some variants embed it, and the
/// URL's ticket lets anyone receive this app's interactions.
fn describe(error: &tungstenite::Error) -> String {
    use tungstenite::Error as E;
    match error {
        E::Url(_) => "the WebSocket URL was rejected or unreachable".to_owned(),
        E::Io(io) => format!("I/O error: {}", io.kind()),
        E::Http(response) => format!("the WebSocket handshake got HTTP {}", response.status()),
        E::ConnectionClosed | E::AlreadyClosed => "the connection was closed".to_owned(),
        E::Protocol(problem) => format!("WebSocket protocol error: {problem}"),
        E::Tls(_) => "TLS error".to_owned(),
        _ => "WebSocket error".to_owned(),
    }
}

/// A text frame from Slack, as far as greenlight cares.
#[derive(Debug, PartialEq)]
enum Frame {
    Hello {
        connections: Option<u64>,
    },
    Disconnect {
        reason: String,
    },
    /// Anything carrying an `envelope_id`: every one must be acked, even of a type we
    /// do not use, or Slack redelivers it.
    Envelope {
        envelope_id: String,
        kind: String,
        payload: Value,
    },
    Other,
}

impl Frame {
    fn parse(text: &str) -> Frame {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Frame::Other;
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        if let Some(envelope_id) = value.get("envelope_id").and_then(Value::as_str) {
            return Frame::Envelope {
                envelope_id: envelope_id.to_owned(),
                kind: kind.to_owned(),
                payload: value.get("payload").cloned().unwrap_or(Value::Null),
            };
        }
        match kind {
            "hello" => Frame::Hello {
                connections: value.get("num_connections").and_then(Value::as_u64),
            },
            "disconnect" => Frame::Disconnect {
                reason: value
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned(),
            },
            _ => Frame::Other,
        }
    }
}

/// The ack Slack expects: the envelope id, plus the interaction's answer when there
/// is one (a modal's field errors, for instance).
fn ack_body(envelope_id: &str, payload: Option<Value>) -> String {
    match payload {
        Some(payload) => json!({ "envelope_id": envelope_id, "payload": payload }),
        None => json!({ "envelope_id": envelope_id }),
    }
    .to_string()
}

/// Handles one envelope; `None` means "do not ack" (recording failed, so Slack
/// should show the clicker an error rather than pretend the click counted).
async fn process(
    interactions: &Interactions,
    envelope_id: &str,
    kind: &str,
    payload: Value,
) -> Option<String> {
    if kind != "interactive" {
        tracing::debug!(
            kind,
            "Socket Mode: acked an envelope greenlight does not use"
        );
        return Some(ack_body(envelope_id, None));
    }
    let payload = match Payload::from_json(payload) {
        Ok(payload) => payload,
        Err(error) => {
            // Redelivery would not make it parse: ack so Slack stops sending it.
            tracing::warn!(%error, "Socket Mode: unreadable interaction payload");
            return Some(ack_body(envelope_id, None));
        }
    };
    match interactions.handle(&payload).await {
        Ok(answer) => Some(ack_body(envelope_id, answer)),
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "Socket Mode: could not record an interaction; not acking it"
            );
            None
        }
    }
}

/// One WebSocket connection: reads envelopes, records each in its own task, and
/// writes the acks as they come back, so a slow database write never delays the ack
/// of an unrelated click.
struct Connection {
    id: u64,
    interactions: Interactions,
    timings: Timings,
    /// Opened while the supervisor backs off: its routine lines go to debug.
    quiet: bool,
    /// Tells the supervisor to replace this connection, or that it ended.
    ended: Option<oneshot::Sender<Ended>>,
}

impl Connection {
    async fn run(mut self, mut socket: Socket, mut shutdown: watch::Receiver<bool>) {
        let (id, quiet) = (self.id, self.quiet);
        note!(quiet, connection = id, "Socket Mode: connected");
        // `None` frees an in-flight slot without acking.
        let (acks_tx, mut acks) = mpsc::unbounded_channel::<Option<String>>();
        let mut in_flight: usize = 0;
        let mut stopping = false;
        // When set, the connection closes itself at this instant.
        let mut close_at: Option<Instant> = None;
        let mut last_seen = Instant::now();
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.timings.ping_interval,
            self.timings.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let result: Result<(), String> = loop {
            if stopping && in_flight == 0 {
                break Ok(());
            }
            tokio::select! {
                frame = socket.next(), if !stopping => {
                    let message = match frame {
                        None => break Ok(()),
                        Some(Err(error)) => break Err(describe(&error)),
                        Some(Ok(message)) => message,
                    };
                    last_seen = Instant::now();
                    let Message::Text(text) = message else {
                        // Pings are answered by tungstenite; a Close is followed by the
                        // end of the stream.
                        continue;
                    };
                    match Frame::parse(text.as_str()) {
                        Frame::Hello { connections } => {
                            note!(quiet, connection = id, open_connections = ?connections, "Socket Mode: hello");
                        }
                        Frame::Disconnect { reason } => {
                            note!(quiet, connection = id, %reason, "Socket Mode: Slack asked for a new connection");
                            if reason == "link_disabled" && !quiet {
                                tracing::warn!("Socket Mode was turned off in the Slack app's settings; reconnecting will fail until it is turned back on");
                            }
                            if let Some(ended) = self.ended.take() {
                                let _ = ended.send(Ended::Replace { reason });
                            }
                            close_at.get_or_insert(Instant::now() + self.timings.drain_timeout);
                        }
                        Frame::Envelope { envelope_id, kind, payload } => {
                            in_flight += 1;
                            let interactions = self.interactions.clone();
                            let acks = acks_tx.clone();
                            tokio::spawn(async move {
                                let started = Instant::now();
                                let ack = process(&interactions, &envelope_id, &kind, payload).await;
                                let took = started.elapsed();
                                if took > ACK_DEADLINE {
                                    tracing::warn!(took_ms = took.as_millis() as u64, "Socket Mode: ack later than Slack's 3 s limit");
                                }
                                let _ = acks.send(ack);
                            });
                        }
                        Frame::Other => {
                            tracing::debug!(connection = id, "Socket Mode: ignored a frame");
                        }
                    }
                }
                Some(ack) = acks.recv() => {
                    in_flight = in_flight.saturating_sub(1);
                    if let Some(ack) = ack {
                        if let Err(error) = socket.send(Message::text(ack)).await {
                            break Err(describe(&error));
                        }
                    }
                }
                _ = ping.tick(), if !stopping => {
                    if last_seen.elapsed() > self.timings.idle_timeout {
                        break Err("no traffic from Slack; the link is presumed dead".to_owned());
                    }
                    if let Err(error) = socket.send(Message::Ping(Vec::new().into())).await {
                        break Err(describe(&error));
                    }
                }
                _ = sleep_until(close_at.unwrap_or_else(Instant::now)), if close_at.is_some() => {
                    if stopping {
                        tracing::warn!(connection = id, unacked = in_flight, "Socket Mode: closing with clicks still being recorded");
                    }
                    break Ok(());
                }
                _ = stopped(&mut shutdown), if !stopping => {
                    // Stop reading (Slack redelivers what we never saw), but ack what
                    // is being recorded.
                    stopping = true;
                    let grace = Instant::now() + self.timings.shutdown_grace;
                    close_at = Some(close_at.map_or(grace, |at| at.min(grace)));
                }
            }
        };

        match &result {
            Ok(()) => note!(quiet, connection = id, "Socket Mode: connection closed"),
            Err(error) if quiet => {
                tracing::debug!(connection = id, %error, "Socket Mode: connection lost")
            }
            Err(error) => tracing::warn!(connection = id, %error, "Socket Mode: connection lost"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(Ended::Lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_recognised() {
        assert_eq!(
            Frame::parse(r#"{"type":"hello","num_connections":2,"debug_info":{}}"#),
            Frame::Hello {
                connections: Some(2)
            }
        );
        assert_eq!(
            Frame::parse(r#"{"type":"disconnect","reason":"refresh_requested"}"#),
            Frame::Disconnect {
                reason: "refresh_requested".into()
            }
        );
        assert_eq!(
            Frame::parse(
                r#"{"envelope_id":"e1","type":"interactive","payload":{"type":"block_actions"},"accepts_response_payload":false}"#
            ),
            Frame::Envelope {
                envelope_id: "e1".into(),
                kind: "interactive".into(),
                payload: json!({"type": "block_actions"}),
            }
        );
        // Unused envelope types still need their ack.
        assert!(matches!(
            Frame::parse(r#"{"envelope_id":"e2","type":"events_api","payload":{}}"#),
            Frame::Envelope { .. }
        ));
        assert_eq!(Frame::parse("not json"), Frame::Other);
        assert_eq!(Frame::parse(r#"{"type":"something_new"}"#), Frame::Other);
    }

    #[test]
    fn acks_carry_the_envelope_id_and_any_answer() {
        let plain: Value = serde_json::from_str(&ack_body("e1", None)).expect("json");
        assert_eq!(plain, json!({"envelope_id": "e1"}));
        let answered: Value =
            serde_json::from_str(&ack_body("e2", Some(json!({"response_action": "errors"}))))
                .expect("json");
        assert_eq!(
            answered,
            json!({"envelope_id": "e2", "payload": {"response_action": "errors"}})
        );
    }

    #[test]
    fn only_a_planned_disconnect_after_a_stable_connection_reconnects_at_once() {
        let replace = |reason: &str| Ended::Replace {
            reason: reason.into(),
        };
        let planned = verdict(&replace("refresh_requested"), true);
        assert_eq!(
            planned,
            Verdict {
                cause: "planned",
                failed: false
            }
        );
        assert!(!verdict(&replace("warning"), true).failed);
        // Slack refusing one more connection: hello, then disconnect, at once.
        for reason in ["too_many_websockets", "refresh_requested", "warning"] {
            let early = verdict(&replace(reason), false);
            assert_eq!(early.cause, "disconnected");
            assert!(early.failed, "{reason} right after connecting is a failure");
        }
        assert!(verdict(&replace("link_disabled"), true).failed);
        assert!(verdict(&Ended::Lost, true).failed);
        assert_eq!(verdict(&Ended::Lost, false).cause, "lost");
    }

    #[test]
    fn reconnects_back_off_from_the_web_api_base_to_four_times_its_cap() {
        let retry = RetryPolicy::default();
        let backoff = reconnect_backoff(&retry);
        assert_eq!(backoff.first, retry.base_backoff);
        assert_eq!(backoff.max, retry.max_backoff * 4);
        assert!(backoff.jitter > 0.0);
    }

    #[test]
    fn errors_never_print_the_url() {
        let url = "wss://wss-primary.slack.com/link/?ticket=SECRET-TICKET&app_id=A1";
        let error = tungstenite::Error::Url(tungstenite::error::UrlError::UnableToConnect(
            url.to_owned(),
        ));
        assert!(error.to_string().contains("SECRET-TICKET"), "premise");
        assert!(!describe(&error).contains("SECRET-TICKET"));
    }
}
