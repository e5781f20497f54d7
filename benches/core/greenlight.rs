//! The greenlight child processes: one per replica, all with the same settings and
//! the same database, each with its own working directory and log.

use super::*;

/// The settings every replica gets: the stand-in Slack, one agent token, the bench
/// policy (written into `dir`), the database at `database_url`, limits that never
/// refuse and a week's timeout.
pub fn greenlight_env(
    slack: &StandInSlack,
    dir: &Path,
    database_url: &str,
) -> Vec<(&'static str, String)> {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, BENCH_POLICY).expect("write the bench policy");
    vec![
        ("GREENLIGHT_POLICY", policy.display().to_string()),
        ("SLACK_BOT_TOKEN", "xoxb-bench-not-a-real-token".into()),
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET.into()),
        ("SLACK_CHANNEL_ID", CHANNEL.into()),
        ("SLACK_API_BASE_URL", format!("http://{}", slack.addr)),
        ("GREENLIGHT_API_TOKENS", format!("bench:{API_TOKEN}")),
        ("GREENLIGHT_DATABASE_URL", database_url.to_owned()),
        ("GREENLIGHT_LISTEN", "127.0.0.1:0".into()),
        // One agent sends everything: its limits must not be what is measured.
        ("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "1000000".into()),
        ("GREENLIGHT_MAX_PENDING_PER_AGENT", "1000000".into()),
        // Nothing may expire during a run.
        ("GREENLIGHT_DEFAULT_TIMEOUT_SECS", "604800".into()),
    ]
}

pub struct Greenlight {
    pub addr: SocketAddr,
    child: std::process::Child,
    log: PathBuf,
}

pub struct Restart {
    /// From the kill to the new process's "listening" line.
    pub listening: Duration,
    /// From the kill to the first `/healthz` 200.
    pub healthy: Duration,
}

impl Greenlight {
    /// `greenlight serve` in `dir` (no `.env`, no policy file there), with exactly `env`
    /// plus PATH; stderr (its log) appended to `dir/greenlight.log`.
    pub async fn start(env: &[(&'static str, String)], dir: &Path) -> Self {
        let log = dir.join("greenlight.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_greenlight"));
        command
            .arg("serve")
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let mut child = command.spawn().expect("start greenlight");
        let line = first_line(&mut child, "greenlight").await;
        let Some(addr) = line.trim().strip_prefix("greenlight listening on http://") else {
            let _ = child.kill();
            panic!(
                "greenlight printed {line:?}; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let addr = addr.parse().expect("greenlight's address");
        Self { addr, child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size from /proc/<pid>/status, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("greenlight's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("a VmRSS line")
    }

    /// SIGKILL, then the same command on the same database; times both to the
    /// listening line and to the first `/healthz` 200.
    pub async fn kill9_and_restart(
        &mut self,
        env: &[(&'static str, String)],
        dir: &Path,
    ) -> Restart {
        let killed = Instant::now();
        self.child.kill().expect("kill -9 greenlight");
        self.child.wait().expect("reap greenlight");
        let next = Self::start(env, dir).await;
        let listening = killed.elapsed();
        loop {
            if let Ok(tcp) = TcpStream::connect(next.addr).await {
                let mut conn = Conn::from_stream(next.addr, tcp).await;
                let (status, _) = conn.send(get(next.addr, "/healthz")).await;
                if status == StatusCode::OK {
                    break;
                }
            }
            if killed.elapsed() > Duration::from_secs(120) {
                panic!("the restarted greenlight did not answer /healthz 200 within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let healthy = killed.elapsed();
        *self = next;
        Restart { listening, healthy }
    }
}

impl Drop for Greenlight {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("greenlight's last log lines:");
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
        }
    }
}

/// `BENCH_REPLICAS` greenlight processes on one database and one stand-in Slack. The
/// first replica runs in `dir` itself (as the single process always has); replica
/// `i > 0` in `dir/replica-{i+1}`, each with its own log. They start one after the
/// other: the first migrates, the others find the schema in place.
pub struct Fleet {
    pub replicas: Vec<Greenlight>,
    dirs: Vec<PathBuf>,
}

impl Fleet {
    pub async fn start(env: &[(&'static str, String)], dir: &Path, count: usize) -> Self {
        let mut replicas = Vec::with_capacity(count);
        let mut dirs = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let replica_dir = if i == 0 {
                dir.to_path_buf()
            } else {
                dir.join(format!("replica-{}", i + 1))
            };
            std::fs::create_dir_all(&replica_dir).expect("a replica's directory");
            replicas.push(Greenlight::start(env, &replica_dir).await);
            dirs.push(replica_dir);
        }
        Self { replicas, dirs }
    }

    /// Every replica's address and pid: where the load generator spreads its
    /// connections, and whose CPU time it counts.
    pub fn target(&self) -> Target {
        Target {
            addrs: self.replicas.iter().map(|r| r.addr).collect(),
            pids: self.replicas.iter().map(Greenlight::pid).collect(),
        }
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|r| r.addr).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.replicas.iter().map(Greenlight::pid).collect()
    }

    /// Each replica's resident set size, in KiB.
    pub fn rss_kib(&self) -> Vec<u64> {
        self.replicas.iter().map(Greenlight::rss_kib).collect()
    }

    /// kill -9 the first replica and start it again on the same database (the others,
    /// if any, keep serving); see [`Greenlight::kill9_and_restart`].
    pub async fn kill9_and_restart_first(&mut self, env: &[(&'static str, String)]) -> Restart {
        self.replicas[0].kill9_and_restart(env, &self.dirs[0]).await
    }
}
