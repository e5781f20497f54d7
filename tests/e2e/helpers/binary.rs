//! Running the real `greenlight` binary as a child process, for what only a process
//! can show: kill -9, signals, exit codes, stdout/stderr.

use std::{collections::HashMap, net::SocketAddr, path::Path, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_greenlight");

/// A running `greenlight serve`.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Process {
    /// Starts `greenlight serve` with exactly `env` (plus PATH), in `dir` so no stray
    /// `.env` is read, and waits for its "listening" line. stderr goes to `dir/serve.log`.
    pub async fn serve(env: &HashMap<String, String>, dir: &Path) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .expect("log file");
        let mut child = command(env, dir)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn greenlight");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("greenlight started in time")
            .expect("read stdout")
            .expect("a listening line");
        let addr = line
            .strip_prefix("greenlight listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Process { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill -9");
    }
}

/// A `greenlight` command with a clean environment.
pub fn command(env: &HashMap<String, String>, dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().current_dir(dir).envs(env);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// Runs a short-lived `greenlight` command; returns (exit code, stdout, stderr).
pub async fn run(
    env: &HashMap<String, String>,
    dir: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        command(env, dir).args(args).output(),
    )
    .await
    .expect("command finished in time")
    .expect("run greenlight");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
