//! Running the real `greenlight` binary as a child process, for what only a process
//! can show: kill -9, signals, exit codes, stdout/stderr, the global log subscriber.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use super::{base_env, FakeSlack};

/// `greenlight` with exactly `env` (plus PATH; nothing inherited that could change its
/// behaviour) in `dir`, a directory without a `.env`.
pub fn command(env: &HashMap<String, String>, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_greenlight"));
    command.current_dir(dir).env_clear().envs(env);
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
    let mut command = tokio::process::Command::from(command(env, dir));
    let output = tokio::time::timeout(Duration::from_secs(60), command.args(args).output())
        .await
        .expect("command finished in time")
        .expect("run greenlight");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

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
        let mut env = base_env(slack, &super::database::url(db_path));
        env.insert("RUST_LOG".into(), "info".into());
        for (key, value) in overrides {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        Self::serve(&env, dir, log_name).await
    }

    /// Starts `greenlight serve` with exactly `env`, in `dir`, stderr to `dir/log_name`.
    pub async fn serve(env: &HashMap<String, String>, dir: &Path, log_name: &str) -> Self {
        let stderr_path = dir.join(log_name);
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = command(env, dir)
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

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// Sends `signal` (as `kill` names it: `STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
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
