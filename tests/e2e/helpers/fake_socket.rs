//! A stand-in for Slack's Socket Mode WebSocket server: a real server on 127.0.0.1:0
//! (plain `ws://`) that greets every connection with `hello`, then lets the test send
//! envelopes and read what greenlight sent back. It can also turn every connection
//! away as Slack does when an app holds its maximum of connections.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone)]
pub struct FakeSocket {
    pub addr: SocketAddr,
    accepted: Arc<Mutex<mpsc::UnboundedReceiver<SocketConn>>>,
    /// When set: every connection gets `hello`, then `disconnect` with this reason,
    /// then a close.
    refuse: Arc<std::sync::Mutex<Option<String>>>,
    /// WebSocket handshakes completed so far.
    handshakes: Arc<AtomicUsize>,
}

/// One accepted connection, from Slack's side.
pub struct SocketConn {
    outgoing: mpsc::UnboundedSender<Message>,
    incoming: mpsc::UnboundedReceiver<Value>,
}

impl FakeSocket {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Socket Mode server");
        let addr = listener.local_addr().expect("addr");
        let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
        let refuse = Arc::new(std::sync::Mutex::new(None::<String>));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (refusing, counted) = (refuse.clone(), handshakes.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let (mut sink, mut stream) = ws.split();
                let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
                let (in_tx, in_rx) = mpsc::unbounded_channel::<Value>();
                tokio::spawn(async move {
                    while let Some(message) = out_rx.recv().await {
                        let close = matches!(message, Message::Close(_));
                        if sink.send(message).await.is_err() || close {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some(Ok(message)) = stream.next().await {
                        if let Message::Text(text) = message {
                            let value = serde_json::from_str(text.as_str())
                                .unwrap_or(Value::String(text.as_str().to_owned()));
                            let _ = in_tx.send(value);
                        }
                    }
                });
                let hello = json!({"type": "hello", "num_connections": 1,
                    "connection_info": {"app_id": "A0GREENLIGHT"},
                    "debug_info": {"host": "fake", "approximate_connection_time": 18060}});
                let _ = out_tx.send(Message::text(hello.to_string()));
                let refused = refusing.lock().expect("lock").clone();
                if let Some(reason) = refused {
                    let bye = json!({"type": "disconnect", "reason": reason,
                        "debug_info": {"host": "fake"}});
                    let _ = out_tx.send(Message::text(bye.to_string()));
                    let _ = out_tx.send(Message::Close(None));
                    continue;
                }
                let _ = accepted_tx.send(SocketConn {
                    outgoing: out_tx,
                    incoming: in_rx,
                });
            }
        });
        Self {
            addr,
            accepted: Arc::new(Mutex::new(accepted_rx)),
            refuse,
            handshakes,
        }
    }

    /// From now on, answers every new connection with `hello`, then
    /// `{"type":"disconnect","reason":<reason>}`, then closes it: what Slack does
    /// when the app already holds its maximum of connections
    /// (`too_many_websockets`). Refused connections are not handed to the test.
    pub fn refuse_every_connection(&self, reason: &str) {
        *self.refuse.lock().expect("lock") = Some(reason.to_owned());
    }

    /// WebSocket connections greenlight opened so far (refused ones included).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// What `apps.connections.open` hands out. The ticket stands in for the secret
    /// part of Slack's URL.
    pub fn url(&self) -> String {
        format!(
            "ws://{}/link/?ticket=fake-ticket-0001&app_id=A0GREENLIGHT",
            self.addr
        )
    }

    /// The next connection greenlight opens, failing the test after `within`.
    pub async fn next_connection(&self, within: Duration) -> SocketConn {
        let mut accepted = self.accepted.lock().await;
        tokio::time::timeout(within, accepted.recv())
            .await
            .expect("greenlight opened a Socket Mode connection in time")
            .expect("fake Socket Mode server is running")
    }

    /// True if greenlight opened another connection within `within`.
    pub async fn connects_within(&self, within: Duration) -> bool {
        let mut accepted = self.accepted.lock().await;
        matches!(
            tokio::time::timeout(within, accepted.recv()).await,
            Ok(Some(_))
        )
    }
}

impl SocketConn {
    pub fn send(&self, value: Value) {
        self.outgoing
            .send(Message::text(value.to_string()))
            .expect("connection open");
    }

    /// Delivers an `interactive` envelope carrying `payload` (a JSON string, as built
    /// by `TestApp::click_payload`).
    pub fn send_interactive(&self, envelope_id: &str, payload: &str) {
        let payload: Value = serde_json::from_str(payload).expect("payload is JSON");
        self.send(json!({
            "envelope_id": envelope_id,
            "type": "interactive",
            "payload": payload,
            "accepts_response_payload": false,
        }));
    }

    pub fn disconnect(&self, reason: &str) {
        self.send(json!({"type": "disconnect", "reason": reason,
            "debug_info": {"host": "fake"}}));
    }

    /// Closes the connection from Slack's side without warning.
    pub fn drop_link(&self) {
        let _ = self.outgoing.send(Message::Close(None));
    }

    /// True once greenlight has closed the connection (within `within`). Frames still
    /// unread are skipped.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            while self.incoming.recv().await.is_some() {}
        })
        .await
        .is_ok()
    }

    /// The next JSON frame greenlight sent, failing the test after `within`.
    pub async fn next_frame(&mut self, within: Duration) -> Value {
        tokio::time::timeout(within, self.incoming.recv())
            .await
            .expect("greenlight answered in time")
            .expect("connection still open")
    }
}
