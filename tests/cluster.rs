//! Clusters through Redis (protocol.md section 11) against real
//! `redis-server` processes on loopback, started and killed by the tests:
//! two and three switchboard nodes on one Redis (publish fan-out exactly
//! once and in order, `SEND`, `WHO`, `WATCH`, `REQUEST`, `SURVEY`,
//! `QUERY`), a node killed with SIGKILL and forgotten within the presence
//! expiry, Redis killed and restarted under running nodes
//! (`cluster=degraded`, then `ok` with the state published again), and two
//! nodes over a three-master Redis Cluster.
//!
//! `redis-server` and `redis-cli` must be on the PATH (CI installs them);
//! without them these tests fail with a message saying so.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// Redis processes
// ---------------------------------------------------------------------------

/// How long a Redis (or a Redis Cluster) may take to answer after start.
const REDIS_START: Duration = Duration::from_secs(10);
/// How long the nodes may take to see each other (state exchanged).
const CONVERGE: Duration = Duration::from_secs(10);

#[track_caller]
fn require_redis() {
    for p in ["redis-server", "redis-cli"] {
        assert!(
            have_program(p),
            "`{p}` is not on the PATH: the cluster tests need Redis 7 \
             (e.g. `apt-get install redis-server`; CI installs it)"
        );
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// One `redis-server` on 127.0.0.1, killed (SIGKILL) on drop.
struct Redis {
    port: u16,
    extra: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    /// A plain Redis on a free port.
    #[track_caller]
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// A Redis on a free port with `extra` arguments (`{dir}` in them is the
    /// Redis's own temporary directory, `{port}` its port); retried on
    /// another port if the chosen one was taken meanwhile.
    #[track_caller]
    fn start_with(extra: &[&str]) -> Self {
        require_redis();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = TempDir::new("redis");
            let extra = extra
                .iter()
                .map(|a| {
                    a.replace("{dir}", path_str(dir.path()))
                        .replace("{port}", &port.to_string())
                })
                .collect();
            let mut r = Self {
                port,
                extra,
                dir,
                child: None,
            };
            match r.spawn() {
                Ok(()) => return r,
                Err(e) => last = e,
            }
        }
        panic!("cannot start redis-server: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join("redis.log")).map_err(|e| e.to_string())?;
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            path_str(self.dir.path()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot spawn redis-server {args:?}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + REDIS_START;
        loop {
            if self.ping() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(s)) = c.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server on port {} exited with {s}:\n{}",
                        self.port,
                        self.log()
                    ));
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {REDIS_START:?}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Whether it answers `PING` with `+PONG` (or, with a password set,
    /// that it needs one).
    fn ping(&self) -> bool {
        self.command("PING\r\n")
            .is_some_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
    }

    /// Sends one inline command and returns the first reply line (or, for a
    /// bulk string, its text).
    fn command(&self, line: &str) -> Option<String> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(line.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        let mut first = String::new();
        r.read_line(&mut first).ok()?;
        if let Some(n) = first.strip_prefix('$') {
            let n: usize = n.trim().parse().ok()?;
            let mut body = vec![0; n + 2];
            r.read_exact(&mut body).ok()?;
            return Some(String::from_utf8_lossy(&body[..n]).into_owned());
        }
        Some(first)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// Starts it again on the same port (retrying while the port is not
    /// free yet).
    #[track_caller]
    fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + REDIS_START;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot restart redis on port {}: {e}", self.port)
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            eprintln!(
                "---- redis on port {} ----\n{}\n---- end of redis output ----",
                self.port,
                self.log()
            );
        }
        self.kill();
    }
}

/// Three cluster-enabled masters joined with `redis-cli --cluster create`.
struct RedisCluster {
    nodes: Vec<Redis>,
}

impl RedisCluster {
    #[track_caller]
    fn start() -> Self {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                Redis::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "{dir}/nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let mut child = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn redis-cli {args:?}: {e}"));
        match wait_child(&mut child, Duration::from_secs(20)) {
            Ok(Some(s)) if s.success() => {}
            other => {
                kill_and_reap(&mut child);
                let mut out = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                panic!("redis-cli {args:?} failed: {other:?}\n{out}");
            }
        }
        let ok = wait_until(Duration::from_secs(20), || {
            nodes.iter().all(|n| {
                n.command("CLUSTER INFO\r\n")
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            })
        });
        assert!(ok, "the Redis Cluster did not reach cluster_state:ok");
        Self { nodes }
    }
}

// ---------------------------------------------------------------------------
// Switchboard nodes
// ---------------------------------------------------------------------------

/// A switchboard node named `name` in the cluster at `url`, open groups.
#[track_caller]
fn node(url: &str, name: &str) -> ServerProc {
    ServerProc::start(&["--cluster", url, "--node", name, "--open-groups"])
}

/// `HELLO 0` as key → value.
#[track_caller]
fn hello(srv: &ServerProc) -> BTreeMap<String, String> {
    let mut c = srv.connect();
    hello_map(&c.result("HELLO 0"))
}

/// Waits (bounded) until the node's `HELLO` says `cluster=want`.
#[track_caller]
fn wait_cluster(srv: &ServerProc, want: &str, timeout: Duration) {
    let mut last = BTreeMap::new();
    let ok = wait_until(timeout, || {
        last = hello(srv);
        last.get("cluster").map(String::as_str) == Some(want)
    });
    assert!(
        ok,
        "node at {} did not say cluster={want} within {timeout:?}; HELLO: {last:?}",
        srv.addr
    );
}

/// `WHO 0 [args]` from `c`, sorted.
#[track_caller]
fn who(c: &mut Client, args: &str) -> Vec<String> {
    let mut v = c.result(&format!("WHO 0{args}"));
    v.sort();
    v
}

/// Waits (bounded) until `WHO 0 args` on each client lists exactly `want`.
#[track_caller]
fn wait_who(clients: &mut [&mut Client], args: &str, want: &[&str], timeout: Duration) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    for c in clients.iter_mut() {
        let mut last = Vec::new();
        let ok = wait_until(timeout, || {
            last = who(c, args);
            last == want
        });
        assert!(
            ok,
            "{}: `WHO 0{args}` should list {want:?} within {timeout:?}, lists {last:?}",
            c.label
        );
    }
}

/// Reads pushes until one satisfies `f`; the ones before are returned
/// with it (bounded by the client's read timeout per frame).
#[track_caller]
fn push_until(c: &mut Client, mut f: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
    let mut seen = Vec::new();
    loop {
        let p = c.push();
        let done = f(&p);
        seen.push(p);
        if done {
            return seen;
        }
        assert!(
            seen.len() < 10_000,
            "{}: no expected push in 10,000",
            c.label
        );
    }
}

// ---------------------------------------------------------------------------
// Publish across nodes
// ---------------------------------------------------------------------------

/// Every node has a subscriber to two of the three groups and one to all
/// three, and a publisher; the publishers send `per` numbered messages each
/// to random non-empty sets of groups, pipelined and interleaved. Every
/// subscriber gets each message for its groups exactly once, with the
/// groups as published, in each publisher's order, and nothing else.
fn publish_across(nodes: &[ServerProc], per: usize, seed: u64) {
    let n = nodes.len();
    let subsets: [&[u32]; 3] = [&[1, 2], &[2, 3], &[1, 3]];
    let mut subs: Vec<(Client, Vec<u32>)> = Vec::new();
    let mut names = Vec::new();
    for (i, srv) in nodes.iter().enumerate() {
        for (k, groups) in [subsets[i % 3], &[1, 2, 3][..]].into_iter().enumerate() {
            let name = format!("sub{i}x{k}");
            let mut c = srv.login(&name);
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            c.ack(&format!("SUBSCRIBE 0 {}", list.join(" ")));
            names.push(name);
            subs.push((c, groups.to_vec()));
        }
    }
    let mut pubs: Vec<Client> = (0..n)
        .map(|i| {
            let name = format!("pub{i}");
            names.push(name.clone());
            nodes[i].login(&name)
        })
        .collect();
    // Every node knows every other (in a Redis Cluster a node publishes to
    // the inboxes of the nodes it knows).
    let want: Vec<&str> = names.iter().map(String::as_str).collect();
    {
        let mut refs: Vec<&mut Client> = pubs.iter_mut().collect();
        wait_who(&mut refs, "", &want, CONVERGE);
    }

    // What each publisher sends: (payload, groups).
    let choices: [&[u32]; 7] = [&[1], &[2], &[3], &[1, 2], &[2, 3], &[1, 3], &[3, 1, 2]];
    let mut rng = Rng::new(seed);
    let plan: Vec<Vec<(String, &[u32])>> = (0..n)
        .map(|i| {
            (0..per)
                .map(|s| (format!("p{i}-{s}"), choices[rng.below(choices.len())]))
                .collect()
        })
        .collect();
    // Interleaved, pipelined in chunks.
    const CHUNK: usize = 50;
    for start in (0..per).step_by(CHUNK) {
        for (i, p) in pubs.iter_mut().enumerate() {
            let mut bytes = Vec::new();
            for (payload, groups) in &plan[i][start..(start + CHUNK).min(per)] {
                let args: Vec<String> = groups.iter().map(u32::to_string).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                bytes.extend(frame("PUBLISH", &args, payload.as_bytes()));
            }
            p.send(&bytes);
        }
        for p in pubs.iter_mut() {
            for _ in start..(start + CHUNK).min(per) {
                p.expect_ack();
            }
        }
    }
    // The check, per subscriber.
    for (c, groups) in subs.iter_mut() {
        let mut expected: Vec<(String, Vec<String>, String)> = Vec::new();
        let mut per_pub: BTreeMap<String, Vec<(Vec<String>, String)>> = BTreeMap::new();
        for (i, msgs) in plan.iter().enumerate() {
            for (payload, gs) in msgs {
                if gs.iter().any(|g| groups.contains(g)) {
                    let gs: Vec<String> = gs.iter().map(u32::to_string).collect();
                    per_pub
                        .entry(format!("pub{i}"))
                        .or_default()
                        .push((gs.clone(), payload.clone()));
                    expected.push((format!("pub{i}"), gs, payload.clone()));
                }
            }
        }
        let mut got: BTreeMap<String, Vec<(Vec<String>, String)>> = BTreeMap::new();
        for k in 0..expected.len() {
            let f = c.push();
            assert!(
                f.ty == "PUBLISHED" && !f.args.is_empty(),
                "{} (seed {seed}): message {k} of {} is not PUBLISHED: {f:?}",
                c.label,
                expected.len()
            );
            got.entry(f.args[0].clone())
                .or_default()
                .push((f.args[1..].to_vec(), f.text()));
        }
        thread::sleep(Duration::from_millis(200));
        c.expect_quiet("after every expected message arrived");
        for (p, want) in &per_pub {
            let have = got.remove(p).unwrap_or_default();
            if &have != want {
                let first = have
                    .iter()
                    .zip(want)
                    .position(|(a, b)| a != b)
                    .unwrap_or(have.len().min(want.len()));
                panic!(
                    "{} (seed {seed}): from {p}: {} messages, {} expected; first difference at {first}: got {:?}, expected {:?}",
                    c.label,
                    have.len(),
                    want.len(),
                    have.get(first),
                    want.get(first)
                );
            }
        }
        assert!(
            got.is_empty(),
            "{}: messages from unexpected senders: {got:?}",
            c.label
        );
    }
}

#[test]
fn publish_two_nodes_one_redis_exactly_once_in_order() {
    let redis = Redis::start();
    let nodes = [node(&redis.url(), "a"), node(&redis.url(), "b")];
    for n in &nodes {
        wait_cluster(n, "ok", CONVERGE);
    }
    publish_across(&nodes, 500, 0x5eed_0002);
}

#[test]
fn publish_three_nodes_one_redis_exactly_once_in_order() {
    let redis = Redis::start();
    let nodes = [
        node(&redis.url(), "a"),
        node(&redis.url(), "b"),
        node(&redis.url(), "c"),
    ];
    for n in &nodes {
        wait_cluster(n, "ok", CONVERGE);
    }
    let h = hello(&nodes[1]);
    assert_eq!(h.get("node").map(String::as_str), Some("b"), "{h:?}");
    publish_across(&nodes, 500, 0x5eed_0003);
}

// ---------------------------------------------------------------------------
// SEND, WHO, WATCH across nodes
// ---------------------------------------------------------------------------

/// `SEND` to a user with sessions on two nodes, `WHO` and `WHO g`
/// everywhere, and `WATCH` seeing another node's `JOINED`/`PARTED`.
fn send_who_watch(a: &ServerProc, b: &ServerProc) {
    let mut alice_a = a.login("alice");
    let mut alice_b = b.login("alice");
    let mut bob = b.login("bob");
    let mut carol = a.login("carol");
    carol.ack("SUBSCRIBE 0 7 8");
    bob.ack("SUBSCRIBE 0 8");
    wait_who(
        &mut [&mut alice_a, &mut bob],
        "",
        &["alice", "bob", "carol"],
        CONVERGE,
    );
    wait_who(
        &mut [&mut alice_a, &mut bob],
        " 8",
        &["bob", "carol"],
        CONVERGE,
    );
    wait_who(&mut [&mut alice_a, &mut bob], " 7", &["carol"], CONVERGE);

    // SEND from node b reaches both of alice's sessions, once each.
    bob.send_frame("SEND", &["alice"], b"to both");
    bob.expect_ack();
    alice_a.expect_message("bob", b"to both");
    alice_b.expect_message("bob", b"to both");
    // From node a (the local session and the remote one).
    carol.send_frame("SEND", &["ALICE"], b"again");
    carol.expect_ack();
    alice_a.expect_message("carol", b"again");
    alice_b.expect_message("carol", b"again");
    // A user on node b alone, from node a.
    carol.send_frame("SEND", &["bob"], b"hi bob");
    carol.expect_ack();
    bob.expect_message("carol", b"hi bob");
    // Nobody anywhere.
    carol.send_frame("SEND", &["nobody"], b"x");
    carol.expect_err("no-such-user");
    thread::sleep(Duration::from_millis(200));
    for c in [&mut alice_a, &mut alice_b, &mut bob] {
        c.expect_quiet("each SEND delivered once");
    }

    // WATCH on node a sees a session on node b join and part.
    alice_a.ack("WATCH 0 9");
    let mut dave = b.login("dave");
    dave.ack("SUBSCRIBE 0 9");
    let f = alice_a.push();
    assert!(f.is("JOINED", &["dave", "9"]), "{f:?}");
    wait_who(&mut [&mut alice_a], " 9", &["dave"], CONVERGE);
    dave.ack("UNSUBSCRIBE 0 9");
    let f = alice_a.push();
    assert!(f.is("PARTED", &["dave", "9"]), "{f:?}");
    dave.ack("SUBSCRIBE 0 9");
    let f = alice_a.push();
    assert!(f.is("JOINED", &["dave", "9"]), "{f:?}");
    // Disconnecting parts too.
    drop(dave);
    let f = alice_a.push();
    assert!(f.is("PARTED", &["dave", "9"]), "{f:?}");
    wait_who(
        &mut [&mut alice_a, &mut bob],
        "",
        &["alice", "bob", "carol"],
        CONVERGE,
    );
    // alice logs out of node a: still online through node b.
    drop(alice_a);
    wait_who(&mut [&mut carol], "", &["alice", "bob", "carol"], CONVERGE);
    carol.send_frame("SEND", &["alice"], b"still there");
    carol.expect_ack();
    alice_b.expect_message("carol", b"still there");
}

#[test]
fn send_who_watch_across_two_nodes() {
    let redis = Redis::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    wait_cluster(&a, "ok", CONVERGE);
    wait_cluster(&b, "ok", CONVERGE);
    send_who_watch(&a, &b);
}

#[test]
fn nodes_reach_a_redis_with_a_password_and_never_show_it() {
    let redis = Redis::start_with(&["--requirepass", "hunter2"]);
    let url = format!("redis://:hunter2@127.0.0.1:{}", redis.port);
    // On the command line, and (where `ps` cannot show it) in a config file.
    let a = node(&url, "a");
    let dir = TempDir::new("cluster-config");
    let config = dir.join("switchboard.toml");
    std::fs::write(&config, format!("cluster = \"{url}\"\n")).expect("write the config");
    let b = ServerProc::start(&[
        "--config",
        path_str(&config),
        "--node",
        "b",
        "--open-groups",
    ]);
    // A wrong password: the node serves its own clients, degraded, and
    // says why.
    let c = node(&format!("redis://:wrong@127.0.0.1:{}", redis.port), "c");
    wait_cluster(&a, "ok", CONVERGE);
    wait_cluster(&b, "ok", CONVERGE);
    send_who_watch(&a, &b);
    assert!(wait_until(CONVERGE, || c
        .log_text()
        .contains("AUTH refused")));
    assert_eq!(
        hello(&c).get("cluster").map(String::as_str),
        Some("degraded")
    );
    let mut alone = c.login("alone");
    alone.ping();
    assert!(who(&mut alone, "").iter().all(|u| u == "alone"));
    for srv in [&a, &b, &c] {
        let log = srv.log_text();
        assert!(!log.contains("hunter2") && !log.contains("wrong@"), "{log}");
    }
    assert!(a.log_text().contains("redis://:***@127.0.0.1"));
    // Bad URLs are refused at start, the password hidden.
    for bad in [
        "redis://bob@127.0.0.1:6379",
        "redis://bob:hunter2@127.0.0.1:6379/2",
        "redis://:hunter2%zz@127.0.0.1:6379",
    ] {
        let out = expect_start_failure(&serve_args(&["--cluster", bad]));
        assert!(
            out.stderr.contains("--cluster") && !out.stderr.contains("hunter2"),
            "{bad}: {}",
            out.stderr
        );
    }
}

#[test]
fn nodes_reach_a_redis_over_tls_with_client_certificates() {
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let file = |name: &str| certs.join(name).display().to_string();
    let tls_port = free_port();
    let _redis = Redis::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &file("server.pem"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.pem"),
        "--tls-auth-clients",
        "yes",
        "--requirepass",
        "hunter2",
    ]);
    let url = format!("rediss://:hunter2@localhost:{tls_port}");
    let tls_node = |name: &str, client: &str| {
        ServerProc::start(&[
            "--cluster",
            &url,
            "--cluster-ca",
            &file("ca.pem"),
            "--cluster-cert",
            &file(&format!("{client}.pem")),
            "--cluster-key",
            &file(&format!("{client}.key")),
            "--node",
            name,
            "--open-groups",
        ])
    };
    let a = tls_node("a", "alice");
    let b = tls_node("b", "bob");
    wait_cluster(&a, "ok", CONVERGE);
    wait_cluster(&b, "ok", CONVERGE);
    send_who_watch(&a, &b);
    assert!(a.log_text().contains("rediss://:***@localhost"));
    // Refused at start: rediss:// without a CA, half a client certificate.
    for args in [
        vec!["--cluster", url.as_str()],
        vec![
            "--cluster",
            url.as_str(),
            "--cluster-ca",
            &file("ca.pem"),
            "--cluster-cert",
            &file("alice.pem"),
        ],
        vec![
            "--cluster-cert",
            &file("alice.pem"),
            "--cluster-key",
            &file("alice.key"),
        ],
    ] {
        let out = expect_start_failure(&serve_args(&args));
        assert!(
            out.stderr.contains("--cluster") && !out.stderr.contains("hunter2"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// REQUEST, SURVEY, QUERY across nodes
// ---------------------------------------------------------------------------

#[test]
fn request_and_survey_across_three_nodes() {
    let redis = Redis::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let c = node(&redis.url(), "c");
    for n in [&a, &b, &c] {
        wait_cluster(n, "ok", CONVERGE);
    }
    let mut asker = a.login("asker");
    let mut rb = b.login("rb");
    let mut rc = c.login("rc");
    rb.ack("SUBSCRIBE 0 20 30");
    rc.ack("SUBSCRIBE 0 30");
    wait_who(&mut [&mut asker], " 20", &["rb"], CONVERGE);
    wait_who(&mut [&mut asker], " 30", &["rb", "rc"], CONVERGE);

    // A request answered on another node.
    for i in 0..5 {
        let q = format!("question {i}");
        asker.send_frame("REQUEST", &["20", "5000"], q.as_bytes());
        let f = rb.push();
        assert!(
            f.ty == "REQUESTED" && f.args.len() == 3 && f.args[..2] == ["asker", "20"],
            "{f:?}"
        );
        assert_eq!(f.payload, q.as_bytes());
        let answer = format!("answer {i}");
        rb.send_frame("REPLY", &[&f.args[2]], answer.as_bytes());
        rb.expect_ack();
        assert_eq!(asker.expect_result(), answer.as_bytes());
    }
    // Nobody anywhere.
    asker.send_frame("REQUEST", &["21"], b"anyone?");
    asker.expect_err("no-responders");

    // A survey answered from two nodes.
    asker.send_frame("SURVEY", &["30", "1500"], b"status?");
    for r in [&mut rb, &mut rc] {
        let f = r.push();
        assert!(
            f.ty == "SURVEYED" && f.args.len() == 3 && f.args[..2] == ["asker", "30"],
            "{f:?}"
        );
        let me = r.label.clone();
        r.send_frame("REPLY", &[&f.args[2]], format!("{me} fine").as_bytes());
        r.expect_ack();
    }
    let t = Instant::now();
    let result = asker.expect_result();
    let frames = parse_frames(&result, "survey result");
    let mut answers: Vec<(String, String)> = frames
        .iter()
        .map(|f| {
            assert_eq!(f.ty, "RESPONSE", "{f:?}");
            (f.args[0].clone(), f.text())
        })
        .collect();
    answers.sort();
    assert_eq!(
        answers,
        vec![
            ("rb".to_string(), "rb fine".to_string()),
            ("rc".to_string(), "rc fine".to_string())
        ]
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// Answers each `PING 0` line with `PONG 0` until the connection ends.
fn pong(sock: TcpStream) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut out) = sock.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(sock);
    let mut line = String::new();
    while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line.trim_end() == "PING 0" && out.write_all(b"PONG 0\n").is_err() {
            return;
        }
        line.clear();
    }
}

#[test]
fn query_lists_a_bind_made_on_another_node() {
    let redis = Redis::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    wait_cluster(&a, "ok", CONVERGE);
    wait_cluster(&b, "ok", CONVERGE);
    // A peer endpoint answering the probe's PING (serves until the test
    // ends; the thread is detached).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            thread::spawn(move || pong(sock));
        }
    });
    let mut asker = a.login("asker");
    let mut peer = b.login("Peer");
    peer.send_line(&format!("BIND 0 127.0.0.1 {port}"));
    let f = peer
        .read_raw(Duration::from_secs(8))
        .expect("a reply to BIND");
    assert!(f.ty == "ACK", "BIND: {f:?}");
    let want = format!("Peer,127.0.0.1,{port}");
    let mut last = Vec::new();
    let ok = wait_until(CONVERGE, || {
        last = asker.result("QUERY 0");
        last == [want.clone()]
    });
    assert!(ok, "QUERY on node a: {last:?}, expected [{want}]");
    assert_eq!(asker.result("QUERY 0 peer"), std::slice::from_ref(&want));
    // LEAVE on node b removes it on node a too.
    peer.ack("LEAVE 0");
    let ok = wait_until(CONVERGE, || {
        last = asker.result("QUERY 0");
        last.is_empty()
    });
    assert!(ok, "QUERY on node a after LEAVE: {last:?}");
}

// ---------------------------------------------------------------------------
// Failures: a node killed, Redis restarted
// ---------------------------------------------------------------------------

#[test]
fn a_killed_node_is_forgotten_within_the_expiry() {
    let redis = Redis::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    let mut victim_node = node(&redis.url(), "victim");
    for n in [&a, &b, &victim_node] {
        wait_cluster(n, "ok", CONVERGE);
    }
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    let mut victim = victim_node.login("victim");
    alice.ack("WATCH 0 9");
    wait_who(&mut [&mut alice], "", &["alice", "bob", "victim"], CONVERGE);
    victim.ack("SUBSCRIBE 0 9");
    let f = alice.push();
    assert!(f.is("JOINED", &["victim", "9"]), "{f:?}");
    wait_who(
        &mut [&mut alice, &mut bob],
        "",
        &["alice", "bob", "victim"],
        CONVERGE,
    );
    let t = Instant::now();
    victim_node.signal("KILL");
    victim_node.wait_exit(EXIT_TIMEOUT);
    // Forgotten within the expiry (15 s), plus slack.
    let limit = Duration::from_secs(15) + Duration::from_secs(4);
    wait_who(&mut [&mut alice, &mut bob], "", &["alice", "bob"], limit);
    let took = t.elapsed();
    assert!(took <= limit, "forgotten after {took:?}");
    // Its subscription is parted for the watcher.
    alice.timeout = Duration::from_secs(2);
    let f = alice.push();
    assert!(f.is("PARTED", &["victim", "9"]), "{f:?}");
    // Sending to its user now fails; the others still talk.
    alice.send_frame("SEND", &["victim"], b"x");
    alice.expect_err("no-such-user");
    alice.send_frame("SEND", &["bob"], b"still here");
    alice.expect_ack();
    bob.expect_message("alice", b"still here");
    eprintln!("killed node forgotten after {took:?}");
}

#[test]
fn redis_restart_degrades_then_recovers() {
    let mut redis = Redis::start();
    let a = node(&redis.url(), "a");
    let b = node(&redis.url(), "b");
    wait_cluster(&a, "ok", CONVERGE);
    wait_cluster(&b, "ok", CONVERGE);
    let mut alice = a.login("alice");
    let mut alice_pub = a.login("alicepub");
    let mut bob = b.login("bob");
    alice.ack("SUBSCRIBE 0 1");
    bob.ack("SUBSCRIBE 0 1");
    wait_who(
        &mut [&mut alice, &mut bob],
        "",
        &["alice", "alicepub", "bob"],
        CONVERGE,
    );
    alice_pub.send_frame("PUBLISH", &["1"], b"before");
    alice_pub.expect_ack();
    alice.expect_published("alicepub", &["1"], b"before");
    bob.expect_published("alicepub", &["1"], b"before");

    redis.kill();
    wait_cluster(&a, "degraded", CONVERGE);
    wait_cluster(&b, "degraded", CONVERGE);
    // Local clients are still served.
    alice_pub.send_frame("PUBLISH", &["1"], b"while down");
    alice_pub.expect_ack();
    alice.expect_published("alicepub", &["1"], b"while down");
    let mut late = b.login("late");
    late.ack("SUBSCRIBE 0 1");
    bob.send_frame("SEND", &["late"], b"local send");
    bob.expect_ack();
    late.expect_message("bob", b"local send");

    redis.restart();
    wait_cluster(&a, "ok", CONVERGE);
    wait_cluster(&b, "ok", CONVERGE);
    // The state is published again: node a learns of `late`, who logged in
    // on b while Redis was away (the new Redis knows nothing).
    wait_who(
        &mut [&mut alice, &mut bob],
        "",
        &["alice", "alicepub", "bob", "late"],
        CONVERGE,
    );
    wait_who(
        &mut [&mut alice, &mut bob],
        " 1",
        &["alice", "bob", "late"],
        CONVERGE,
    );
    // Cross-node delivery works again (a message published while Redis was
    // down may or may not have reached bob: at most once).
    alice_pub.send_frame("PUBLISH", &["1"], b"after");
    alice_pub.expect_ack();
    alice.expect_published("alicepub", &["1"], b"after");
    let seen = push_until(&mut bob, |f| f.payload == b"after");
    for f in &seen[..seen.len() - 1] {
        assert!(
            f.is("PUBLISHED", &["alicepub", "1"]) && f.payload == b"while down",
            "bob: unexpected {f:?} before `after`"
        );
    }
    late.expect_published("alicepub", &["1"], b"after");
    bob.send_frame("PUBLISH", &["1"], b"from b");
    bob.expect_ack();
    alice.expect_published("bob", &["1"], b"from b");
    late.expect_published("bob", &["1"], b"from b");
    alice.send_frame("SEND", &["late"], b"remote send");
    alice.expect_ack();
    late.expect_message("alice", b"remote send");
    // Presence still flows both ways.
    drop(late);
    wait_who(
        &mut [&mut alice],
        "",
        &["alice", "alicepub", "bob"],
        CONVERGE,
    );
}

// ---------------------------------------------------------------------------
// A Redis Cluster
// ---------------------------------------------------------------------------

#[test]
fn two_nodes_over_a_redis_cluster() {
    let rc = RedisCluster::start();
    // Each node is given a different seed master.
    let a = node(&rc.nodes[0].url(), "a");
    let b = node(&rc.nodes[1].url(), "b");
    wait_cluster(&a, "ok", Duration::from_secs(15));
    wait_cluster(&b, "ok", Duration::from_secs(15));
    publish_across(&[a, b], 300, 0x5eed_00c1);
}

#[test]
fn send_who_watch_over_a_redis_cluster() {
    let rc = RedisCluster::start();
    let a = node(&rc.nodes[2].url(), "a");
    let b = node(&rc.nodes[0].url(), "b");
    wait_cluster(&a, "ok", Duration::from_secs(15));
    wait_cluster(&b, "ok", Duration::from_secs(15));
    send_who_watch(&a, &b);
}
