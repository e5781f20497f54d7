//! Running greenlight in production (#7): readiness, metrics, logs, graceful shutdown,
//! the OpenAPI document and submission limits.
//!
//! Shutdown and logging are tested on the real binary (`CARGO_BIN_EXE_greenlight`):
//! signals, the global log subscriber and process exit codes only exist there.

mod health;
mod limits;
mod logs;
mod metrics;
mod openapi;
mod shutdown;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use crate::helpers::{base_env, FakeSlack};

/// The real `greenlight serve` in a child process, against a fake Slack.
pub struct Binary {
    pub addr: SocketAddr,
    child: Child,
    pub stderr_path: PathBuf,
}

impl Binary {
    /// Starts the binary with the e2e environment plus `overrides`, the database at
    /// `db_path`, and waits for its "listening on" line.
    pub async fn start(
        slack: &FakeSlack,
        dir: &Path,
        db_path: &Path,
        log_name: &str,
        overrides: &[(&str, &str)],
    ) -> Self {
        let mut env = base_env(slack, &format!("sqlite://{}", db_path.display()));
        env.insert("RUST_LOG".into(), "info".into());
        for (key, value) in overrides {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        let stderr_path = dir.join(log_name);
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = command(dir, &env)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start greenlight");
        let stdout = child.stdout.take().expect("stdout");
        let line = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                line
            }),
        )
        .await
        .expect("greenlight printed its address in time")
        .expect("reader");
        let addr = line
            .trim()
            .strip_prefix("greenlight listening on http://")
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("unexpected stdout {line:?}; stderr:\n{log}")
            })
            .parse()
            .expect("address");
        Self {
            addr,
            child,
            stderr_path,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, failing the test after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "greenlight did not exit within {within:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The binary with exactly `env` (nothing inherited that could change its behaviour)
/// and a working directory without a `.env`.
pub fn command(dir: &Path, env: &HashMap<String, String>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_greenlight"));
    command.current_dir(dir).env_clear().envs(env);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// Parses a Prometheus text scrape into `series → value` (series as written, labels
/// included).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes `/metrics` at `base`.
pub async fn scrape(http: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let response = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    parse_metrics(&response.text().await.expect("metrics text"))
}

/// One series' value, 0 when absent.
pub fn value(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}
