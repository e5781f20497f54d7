//! Restarting the service mid-test, as an operator would: stop it, then start a new
//! process-equivalent on the same port and the same SQLite file, with the same fake
//! Slack. Clients that were waiting must notice nothing but a short outage.

use std::time::Duration;

use greenlight::{app::Server, config::Config};
use tokio::sync::oneshot;

use super::{base_env, fast_retry, TestApp};

impl TestApp {
    /// Stops the server gracefully, keeps it down for `down_for` (so waiting clients
    /// really hit a refused connection), then serves again on the same address and
    /// database. Uses the base environment: overrides of `spawn_app_with` are not kept.
    pub async fn restart(self, down_for: Duration) -> TestApp {
        self.restart_with(down_for, &[]).await
    }

    /// As [`TestApp::restart`], with these settings over the base environment (a
    /// policy file, say, which lives in the app's temp dir and survives the restart).
    pub async fn restart_with(mut self, down_for: Duration, overrides: &[(&str, &str)]) -> TestApp {
        let addr = self.addr;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.server.take() {
            handle
                .await
                .expect("server task")
                .expect("server ran cleanly");
        }
        tokio::time::sleep(down_for).await;

        // The database lives in the temp dir: hand it to the new app instead of
        // letting this one's drop delete it.
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("temp dir"));
        let mut env = base_env(&self.slack, &super::database::url(&self.db_path));
        for (key, value) in overrides {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config is valid");
        let listener = bind_again(addr).await;
        let server = Server::build(listener, config, fast_retry())
            .await
            .expect("server rebuilds on the same database");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            slack: self.slack.clone(),
            http: self.http.clone(),
            db_path: self.db_path.clone(),
            shutdown: Some(tx),
            server: Some(handle),
            _dir: dir,
        }
    }
}

/// Binds `addr` again; the old socket may take a moment to be released.
async fn bind_again(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    let mut last_error = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {addr} again: {last_error:?}");
}
