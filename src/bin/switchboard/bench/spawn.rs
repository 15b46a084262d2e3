//! Servers a scenario starts itself (`fanout --threads`, `cluster`): this
//! binary's `serve` on a free loopback port, and `redis-server`, each in a
//! temporary directory of its own, stopped (by its process id) and cleaned
//! up when dropped.
//!
//! A server is ready when its log says `tcp listening on ADDR`, not when a
//! probe connection gets through: under `--threads` the accepting loop hands
//! connections round-robin, and a scenario that places connections on loops
//! must know every connection the server has accepted.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to say it listens.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A server process this scenario started.
pub(crate) struct Spawned {
    child: Child,
    dir: PathBuf,
    /// What it logged (the last lines), for error messages.
    log: Arc<Mutex<Vec<String>>>,
    /// Its plain listener.
    pub(crate) addr: SocketAddr,
}

impl Spawned {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the server's last log lines if it has exited.
    pub(crate) fn check_running(&mut self, what: &str) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{what} exited ({status}): {}", self.tail())),
            Err(e) => Err(format!("{what}: {e}")),
        }
    }

    fn tail(&self) -> String {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let start = log.len().saturating_sub(3);
        log[start..].join(" / ")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh empty directory under the system's temporary directory.
fn temp_dir(tag: &str) -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "switchboard-bench-{tag}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A loopback port nothing listens on right now.
pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Keeps the last lines of `from` in `log`; sends each to `tx` while the
/// receiver listens.
fn drain_lines(
    from: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = log.lock() {
                if l.len() >= 50 {
                    l.remove(0);
                }
                l.push(line.clone());
            }
            let _ = tx.send(line);
        }
    });
}

/// `switchboard serve --listen 127.0.0.1:0` (no TLS, WebSocket or metrics
/// listener) plus `extra`, in a temporary directory; returns once it
/// listens.
pub(crate) fn switchboard(tag: &str, extra: &[String]) -> Result<Spawned, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = temp_dir(tag)?;
    let mut child = Command::new(&exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "off",
            "--ws-listen",
            "off",
            "--wss-listen",
            "off",
            "--log-level",
            "info",
        ])
        .args(extra)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {} serve: {e}", exe.display()))?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        drain_lines(out, log.clone(), tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        drain_lines(err, log.clone(), tx);
    }
    let mut spawned = Spawned {
        child,
        dir,
        log,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(line) => {
                if let Some(addr) = line
                    .split("tcp listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse().ok())
                {
                    spawned.addr = addr;
                    return Ok(spawned);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                spawned.check_running("switchboard serve")?;
                return Err("switchboard serve closed its output".into());
            }
        }
        spawned.check_running("switchboard serve")?;
        if left.is_zero() {
            return Err(format!(
                "switchboard serve did not listen within {START_LIMIT:?}: {}",
                spawned.tail()
            ));
        }
    }
}

/// `redis-server` on a free loopback port, without persistence; returns
/// once it accepts connections.
pub(crate) fn redis(program: &std::path::Path) -> Result<Spawned, String> {
    let dir = temp_dir("redis")?;
    let port = free_port()?;
    let mut child = Command::new(program)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {} (is it installed?): {e}", program.display()))?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, _rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        drain_lines(out, log.clone(), tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        drain_lines(err, log.clone(), tx);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut spawned = Spawned {
        child,
        dir,
        log,
        addr,
    };
    let deadline = Instant::now() + START_LIMIT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        spawned.check_running("redis-server")?;
        if Instant::now() >= deadline {
            return Err(format!(
                "redis-server did not listen on {addr} within {START_LIMIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(spawned)
}

/// CPU time (user + system, microseconds) of `pid`'s loop 0 (the main
/// thread, which runs it in `serve`) and of its other loops together (the
/// threads named `switchboard-loop-N`, which the kernel shortens to 15
/// bytes).
pub(crate) fn loop_cpu_us(pid: u32) -> (u64, u64) {
    let (mut first, mut others) = (0, 0);
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let (Some(u), Some(s)) = (field(14), field(15)) else {
            continue;
        };
        let us = (u + s) * 1_000_000 / super::proc::clock_ticks_per_second();
        if entry.file_name().to_str() == Some(pid.to_string().as_str()) {
            first += us;
        } else if name.starts_with("switchboard-loo") {
            others += us;
        }
    }
    (first, others)
}
