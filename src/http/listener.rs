//! A TCP listener that can be closed from outside the server's accept loop, and says
//! when it is closed.
//!
//! At shutdown greenlight must stop accepting connections *before* it answers the open
//! long-polls, or an agent answered "pending" could reconnect to the dying process and
//! be served again. axum closes its listener only after the shutdown signal returns, on
//! its own task; this listener closes itself as soon as it is told to and reports it,
//! so the shutdown sequence can wait for that before releasing the waiters.

use std::{io, net::SocketAddr};

use axum::serve::Listener;

use crate::backoff::{Backoff, Retrying};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
};

/// Closes a [`ClosableListener`] and waits until its socket is gone.
pub struct Closer {
    close: watch::Sender<bool>,
    closed: oneshot::Receiver<()>,
}

impl Closer {
    /// Stops accepting and returns once the listening socket is closed (new
    /// connections are refused from then on).
    pub async fn close(self) {
        let _ = self.close.send(true);
        let _ = self.closed.await;
    }
}

/// The server's listener: accepts like a `TcpListener` until its [`Closer`] closes
/// it, then drops the socket and never accepts again.
pub struct ClosableListener {
    inner: Option<TcpListener>,
    addr: SocketAddr,
    close: watch::Receiver<bool>,
    closed: Option<oneshot::Sender<()>>,
    /// Failed accepts in a row (out of file descriptors): paused for with backoff.
    failing: Retrying,
}

/// Pause after a failed accept: 50 ms like axum's own listener, doubling to 1 s.
fn accept_backoff() -> Backoff {
    Backoff::new(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(1),
    )
}

impl ClosableListener {
    /// Wraps `listener`, with the [`Closer`] that closes it. Errors: the socket has no
    /// local address.
    pub fn new(listener: TcpListener) -> io::Result<(Self, Closer)> {
        let addr = listener.local_addr()?;
        let (close_tx, close_rx) = watch::channel(false);
        let (closed_tx, closed_rx) = oneshot::channel();
        Ok((
            Self {
                inner: Some(listener),
                addr,
                close: close_rx,
                closed: Some(closed_tx),
                failing: Retrying::new(accept_backoff()),
            },
            Closer {
                close: close_tx,
                closed: closed_rx,
            },
        ))
    }

    fn shut(&mut self) {
        self.inner = None;
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }
}

impl Listener for ClosableListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(inner) = &self.inner else {
                return std::future::pending().await;
            };
            let accepted = tokio::select! {
                _ = self.close.wait_for(|close| *close) => None,
                accepted = inner.accept() => Some(accepted),
            };
            match accepted {
                None => self.shut(),
                Some(Ok(connection)) => {
                    self.failing.succeeded();
                    return connection;
                }
                Some(Err(error)) => {
                    // As axum's own listener does: a failed accept (out of file
                    // descriptors) is retried after a pause, not fatal; the pause
                    // grows while accepts keep failing, with a line per step.
                    let step = self.failing.failed();
                    if step.log {
                        tracing::warn!(%error, failed_accepts = step.failures, "accept failed");
                    }
                    tokio::time::sleep(step.delay).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
