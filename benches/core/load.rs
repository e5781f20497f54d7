//! The load generator: one kept-alive HTTP/1.1 connection per task, each connection
//! pinned to one server of a [`Target`] (round robin over its addresses, as keep-alive
//! connections behind a load balancer are), and the phase runner [`load`].

use super::*;

pub struct Conn {
    pub addr: SocketAddr,
    sender: http1::SendRequest<Full<Bytes>>,
    pub reconnects: usize,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Self::from_stream(addr, tcp).await
    }

    pub async fn from_stream(addr: SocketAddr, tcp: TcpStream) -> Self {
        Self {
            addr,
            sender: handshake(tcp).await,
            reconnects: 0,
        }
    }

    /// Waits until the connection can take a request; if the server closed it, opens
    /// a new one (counted: a well-behaved server keeps it alive throughout).
    async fn ready(&mut self) {
        if self.sender.ready().await.is_err() {
            let tcp = TcpStream::connect(self.addr)
                .await
                .unwrap_or_else(|e| panic!("reconnect to {}: {e}", self.addr));
            self.sender = handshake(tcp).await;
            self.reconnects += 1;
        }
    }

    /// Writes the request now; the returned future yields the answer.
    pub async fn dispatch(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> impl Future<Output = (StatusCode, Bytes)> {
        self.ready().await;
        let response = self.sender.send_request(request);
        async move {
            let response = response.await.expect("an HTTP answer");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("the answer's body")
                .to_bytes();
            (status, body)
        }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
        self.dispatch(request).await.await
    }
}

async fn handshake(tcp: TcpStream) -> http1::SendRequest<Full<Bytes>> {
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let (sender, connection) = http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

/// The servers a phase drives: connection `i` goes to `addrs[i % addrs.len()]` and
/// stays there; the CPU time of `pids` (none: not measured) is counted per answer.
#[derive(Clone)]
pub struct Target {
    pub addrs: Vec<SocketAddr>,
    pub pids: Vec<u32>,
}

impl Target {
    /// One server; `pid` when its CPU time is to be counted.
    pub fn one(addr: SocketAddr, pid: Option<u32>) -> Self {
        Self {
            addrs: vec![addr],
            pids: pid.into_iter().collect(),
        }
    }

    /// The same servers, CPU time not counted.
    pub fn unmeasured(&self) -> Self {
        Self {
            addrs: self.addrs.clone(),
            pids: Vec::new(),
        }
    }
}

/// How long a load phase runs and how many requests it may issue.
pub struct Window {
    warmup: Duration,
    measure: Duration,
    max_items: usize,
    /// Each connection waits this long after an answer before its next request.
    pause: Duration,
}

impl Window {
    pub fn timed(warmup: Duration, measure: Duration) -> Self {
        Self::limited(warmup, measure, usize::MAX)
    }

    pub fn limited(warmup: Duration, measure: Duration, max_items: usize) -> Self {
        Self {
            warmup,
            measure,
            max_items,
            pause: Duration::ZERO,
        }
    }

    pub fn paced(self, pause: Duration) -> Self {
        Self { pause, ..self }
    }
}

pub struct Load<T> {
    /// Every answer's item, warm-up included, in no particular order.
    pub items: Vec<T>,
    /// Requests issued (items `0..issued` of the supply were used).
    pub issued: usize,
    /// Answers completed inside the measured window.
    pub measured: usize,
    pub window: Duration,
    /// Latencies of the measured answers, sorted.
    pub latencies: Vec<Duration>,
    pub ran_out: bool,
    pub reconnects: usize,
    /// CPU time the server process spent over the whole phase (warm-up included).
    pub server_cpu: Duration,
}

impl<T> Load<T> {
    /// The server's CPU time per answered request, warm-up included: unlike a rate,
    /// it barely moves when other work shares the machine.
    pub fn cpu_per_op(&self) -> Duration {
        self.server_cpu / (self.items.len().max(1) as u32)
    }

    pub fn rate(&self) -> f64 {
        if self.window.is_zero() {
            return 0.0;
        }
        self.measured as f64 / self.window.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// `connections` tasks, each a sequential loop on its own connection, issuing requests
/// `request(i)` for i = 0, 1, … (shared counter) until the window closes or `max_items`
/// were issued. Counts the answers completed within [end of warm-up, end of window]; when
/// the supply runs out first, the window ends at the last answer.
pub async fn load<T, Q, A>(
    target: &Target,
    connections: usize,
    window: Window,
    request: Q,
    answer: A,
) -> Load<T>
where
    T: Send + 'static,
    Q: Fn(usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
    A: Fn(usize, StatusCode, Bytes) -> T + Send + Sync + 'static,
{
    let (request, answer) = (Arc::new(request), Arc::new(answer));
    let next = Arc::new(AtomicUsize::new(0));
    let ran_out = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(target.addrs[conns.len() % target.addrs.len()]).await);
    }
    let cpu_before = process_cpu(&target.pids);
    let started = Instant::now();
    let measure_from = started + window.warmup;
    let stop_at = measure_from + window.measure;
    let max_items = window.max_items;
    let pause = window.pause;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (request, answer, next, ran_out) = (
                request.clone(),
                answer.clone(),
                next.clone(),
                ran_out.clone(),
            );
            tokio::spawn(async move {
                let mut items = Vec::new();
                let mut timings = Vec::new();
                while Instant::now() < stop_at {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= max_items {
                        ran_out.store(true, Ordering::Relaxed);
                        break;
                    }
                    let req = request(i);
                    let sent = Instant::now();
                    let (status, body) = conn.send(req).await;
                    let done = Instant::now();
                    items.push(answer(i, status, body));
                    timings.push((done, done - sent));
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                (items, timings, conn.reconnects)
            })
        })
        .collect();
    let mut items = Vec::new();
    let mut timings = Vec::new();
    let mut reconnects = 0;
    for task in tasks {
        let (i, t, r) = task.await.expect("a load task (a wrong answer panics)");
        items.extend(i);
        timings.extend(t);
        reconnects += r;
    }
    let server_cpu = process_cpu(&target.pids).saturating_sub(cpu_before);
    let ran_out = ran_out.load(Ordering::Relaxed);
    let end = if ran_out {
        timings
            .iter()
            .map(|(done, _)| *done)
            .max()
            .unwrap_or(started)
    } else {
        stop_at
    };
    let mut latencies: Vec<Duration> = timings
        .iter()
        .filter(|(done, _)| *done >= measure_from && *done <= end)
        .map(|(_, latency)| *latency)
        .collect();
    latencies.sort();
    Load {
        issued: next.load(Ordering::Relaxed).min(max_items),
        measured: latencies.len(),
        window: end.saturating_duration_since(measure_from),
        items,
        latencies,
        ran_out,
        reconnects,
        server_cpu,
    }
}

/// CPU time (user + system) of every live thread of the processes `pids`, from
/// `/proc/<pid>/task/*/schedstat` (first field: nanoseconds on a CPU).
fn process_cpu(pids: &[u32]) -> Duration {
    pids.iter().map(|&pid| one_process_cpu(pid)).sum()
}

fn one_process_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}
