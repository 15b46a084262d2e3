//! UDP services on the loop (issue 14): echo over loopback, oversized
//! datagrams, a flooding handler beside other services, multicast on
//! loopback (and the multicast examples inside a network namespace of the
//! test's own), and the UDP examples as processes.
//!
//! Multicast here never leaves loopback: senders set `IP_MULTICAST_IF` to
//! 127.0.0.1 and a TTL of 0, receivers join on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard::datagram::{DatagramContext, DatagramHandler, UdpOptions};
use switchboard::framed::{FramedContext, FramedHandler, Framing};
use switchboard::{ConnId, EventLoop, LoopHandle};

/// Echoes; counts oversized datagrams.
struct Echo {
    oversized: Arc<AtomicUsize>,
}

impl DatagramHandler for Echo {
    fn on_datagram(&mut self, ctx: &mut DatagramContext<'_>, from: SocketAddr, payload: &[u8]) {
        ctx.send_to(from, payload);
    }
    fn on_oversized(&mut self, _: &mut DatagramContext<'_>, _: SocketAddr, len: usize) {
        assert!(len > 1000);
        self.oversized.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs a loop built by `build` on its own thread; returns what `build`
/// returned, the handle and the thread.
fn spawn_loop<T: Send + 'static>(
    build: impl FnOnce(&mut EventLoop) -> T + Send + 'static,
) -> (T, LoopHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut event_loop = EventLoop::new().expect("loop");
        let value = build(&mut event_loop);
        tx.send((value, event_loop.handle())).expect("send");
        event_loop.run().expect("run");
    });
    let (value, handle) = rx.recv().expect("loop started");
    (value, handle, thread)
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    s
}

#[test]
fn echo_over_loopback_many_datagrams() {
    let oversized = Arc::new(AtomicUsize::new(0));
    let o = Arc::clone(&oversized);
    let (addr, handle, thread) = spawn_loop(move |l| {
        l.bind_udp(
            "127.0.0.1:0".parse().unwrap(),
            UdpOptions::default(),
            Echo { oversized: o },
        )
        .expect("bind")
    });
    let sock = client();
    sock.connect(addr).expect("connect");
    let total = 5_000u32;
    let window = 32u32;
    let started = Instant::now();
    let mut next = 0u32;
    let mut received = vec![false; total as usize];
    let mut got = 0;
    let mut buf = vec![0u8; 2048];
    let payload = |i: u32| -> Vec<u8> {
        let len = 4 + (i as usize * 7) % 1400;
        let mut v = i.to_be_bytes().to_vec();
        v.resize(len, (i % 251) as u8);
        v
    };
    while got < total {
        while next < total && next - got < window {
            sock.send(&payload(next)).expect("send");
            next += 1;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
                assert_eq!(&buf[..n], &payload(i)[..], "echo of {i} intact");
                assert!(!received[i as usize], "{i} echoed once");
                received[i as usize] = true;
                got += 1;
            }
            Err(e) => panic!("echo {got} of {total} lost on loopback: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "too slow");
    }
    assert_eq!(oversized.load(Ordering::SeqCst), 0);
    handle.stop();
    thread.join().expect("loop thread");
}

#[test]
fn oversized_datagrams_are_dropped_and_the_service_goes_on() {
    let oversized = Arc::new(AtomicUsize::new(0));
    let o = Arc::clone(&oversized);
    let (addr, handle, thread) = spawn_loop(move |l| {
        let opts = UdpOptions::default().max_datagram(1000);
        l.bind_udp("127.0.0.1:0".parse().unwrap(), opts, Echo { oversized: o })
            .expect("bind")
    });
    let sock = client();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    for len in [1001, 9000, 65_507] {
        sock.send_to(&vec![7u8; len], addr).expect("send big");
        assert!(sock.recv_from(&mut buf).is_err(), "{len} bytes not echoed");
    }
    assert_eq!(oversized.load(Ordering::SeqCst), 3);
    sock.send_to(&[9u8; 1000], addr).expect("send");
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("a datagram at the limit is echoed");
    assert_eq!((n, from), (1000, addr));
    handle.stop();
    thread.join().expect("loop thread");
}

/// Sends as much as its queue takes, to many peers, on every turn.
struct Flood {
    sinks: Vec<SocketAddr>,
    full_seen: Arc<AtomicUsize>,
}

impl DatagramHandler for Flood {
    fn on_start(&mut self, ctx: &mut DatagramContext<'_>) {
        let now = ctx.now();
        ctx.set_timer(now);
    }
    fn on_datagram(&mut self, _: &mut DatagramContext<'_>, _: SocketAddr, _: &[u8]) {}
    fn on_timer(&mut self, ctx: &mut DatagramContext<'_>) {
        let payload = [0x5au8; 1200];
        'fill: loop {
            for &to in &self.sinks {
                if !ctx.send_to(to, &payload) {
                    break 'fill;
                }
            }
        }
        self.full_seen.fetch_add(1, Ordering::SeqCst);
        // Again on the next turn.
        let now = ctx.now();
        ctx.set_timer(now);
    }
}

/// Line echo for the TCP side of the same loop.
struct Lines;

impl FramedHandler for Lines {
    fn on_message(&mut self, ctx: &mut FramedContext<'_>, conn: ConnId, message: &[u8]) {
        ctx.send(conn, message);
    }
}

#[test]
fn a_flooding_datagram_handler_does_not_block_the_loop() {
    // 64 peers that never read: their buffers fill and the kernel drops.
    let sinks: Vec<UdpSocket> = (0..64).map(|_| client()).collect();
    let sink_addrs: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
    let full_seen = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&full_seen);
    let ((tcp, udp), handle, thread) = spawn_loop(move |l| {
        let opts = UdpOptions::default().send_queue(512);
        l.bind_udp(
            "127.0.0.1:0".parse().unwrap(),
            opts,
            Flood {
                sinks: sink_addrs,
                full_seen: f,
            },
        )
        .expect("flood");
        let lines = Framing::Delimited {
            delimiter: b'\n',
            max_len: 100,
        };
        let tcp = l
            .listen("127.0.0.1:0".parse().unwrap(), None, lines, Lines)
            .expect("tcp");
        let udp = l
            .bind_udp(
                "127.0.0.1:0".parse().unwrap(),
                UdpOptions::default(),
                Echo {
                    oversized: Arc::new(AtomicUsize::new(0)),
                },
            )
            .expect("udp echo");
        (tcp, udp)
    });
    // The flood is under way (its queue filled, turn after turn).
    let deadline = Instant::now() + Duration::from_secs(10);
    while full_seen.load(Ordering::SeqCst) < 20 {
        assert!(
            Instant::now() < deadline,
            "the flood never filled its queue"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut stream = TcpStream::connect(tcp).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let sock = client();
    let mut buf = [0u8; 64];
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let t = Instant::now();
        writeln!(stream, "ping {i}").unwrap();
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("tcp echo while flooding");
        assert_eq!(line, format!("ping {i}\n"));
        sock.send_to(format!("u{i}").as_bytes(), udp).unwrap();
        let (n, _) = sock.recv_from(&mut buf).expect("udp echo while flooding");
        assert_eq!(&buf[..n], format!("u{i}").as_bytes());
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_millis(500),
        "a round trip took {worst:?} beside the flood"
    );
    let turns = full_seen.load(Ordering::SeqCst);
    handle.stop();
    thread.join().expect("loop thread");
    println!("flood filled its queue {turns} times; worst round trip {worst:?}");
    drop(sinks);
}

/// Hands every datagram to a channel; leaves its group on "leave".
struct Member {
    group: Ipv4Addr,
    tx: mpsc::Sender<Vec<u8>>,
}

impl DatagramHandler for Member {
    fn on_datagram(&mut self, ctx: &mut DatagramContext<'_>, _: SocketAddr, payload: &[u8]) {
        if payload == b"leave" {
            ctx.leave_multicast_v4(self.group, Ipv4Addr::LOCALHOST);
        }
        let _ = self.tx.send(payload.to_vec());
    }
}

/// Sends what its channel gives it to the group.
struct GroupSender {
    to: SocketAddr,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl DatagramHandler for GroupSender {
    fn on_start(&mut self, ctx: &mut DatagramContext<'_>) {
        ctx.set_timer_after(Duration::from_millis(5));
    }
    fn on_datagram(&mut self, _: &mut DatagramContext<'_>, _: SocketAddr, _: &[u8]) {}
    fn on_timer(&mut self, ctx: &mut DatagramContext<'_>) {
        while let Ok(m) = self.rx.try_recv() {
            assert!(ctx.send_to(self.to, &m));
        }
        ctx.set_timer_after(Duration::from_millis(5));
    }
}

#[test]
fn multicast_on_loopback_join_ttl_loop_and_leave() {
    let group = Ipv4Addr::new(239, 255, 91, 14);
    let (got_tx, got) = mpsc::channel();
    let (send, send_rx) = mpsc::channel::<Vec<u8>>();
    let (_, handle, thread) = spawn_loop(move |l| {
        // The receiver: any address, the group joined on loopback only.
        let port = l
            .bind_udp(
                "0.0.0.0:0".parse().unwrap(),
                UdpOptions::default()
                    .reuse_address(true)
                    .join_multicast_v4(group, Ipv4Addr::LOCALHOST),
                Member { group, tx: got_tx },
            )
            .expect("member")
            .port();
        // The sender: out by loopback, this host only, looped back.
        l.bind_udp(
            "127.0.0.1:0".parse().unwrap(),
            UdpOptions::default()
                .multicast_if_v4(Ipv4Addr::LOCALHOST)
                .multicast_ttl_v4(0)
                .multicast_loop_v4(true),
            GroupSender {
                to: SocketAddr::from((group, port)),
                rx: send_rx,
            },
        )
        .expect("sender");
    });
    for i in 0..5 {
        send.send(format!("hello {i}").into_bytes()).unwrap();
        let m = got
            .recv_timeout(Duration::from_secs(2))
            .expect("multicast datagram on loopback");
        assert_eq!(m, format!("hello {i}").into_bytes());
    }
    send.send(b"leave".to_vec()).unwrap();
    assert_eq!(got.recv_timeout(Duration::from_secs(2)).unwrap(), b"leave");
    // Left: nothing more arrives.
    std::thread::sleep(Duration::from_millis(50));
    send.send(b"after".to_vec()).unwrap();
    assert!(
        got.recv_timeout(Duration::from_millis(300)).is_err(),
        "left the group"
    );
    handle.stop();
    thread.join().expect("loop thread");
}

/// `target/<profile>/examples/<name>`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built (cargo test builds examples; or cargo build --examples)",
        path.display()
    );
    path
}

#[test]
fn udp_echo_examples() {
    let mut server = Command::new(example("udp_echo_server"))
        .args(["127.0.0.1:0", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("server starts");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    let client = Command::new(example("udp_echo_client"))
        .args([addr.as_str(), "hello", "datagram layer"])
        .output()
        .expect("client runs");
    assert!(client.status.success(), "{client:?}");
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        "echo: hello\necho: datagram layer\n"
    );
    assert!(server.wait().unwrap().success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("said \"datagram layer\""), "{rest}");
    assert!(
        rest.contains("echoed 2 datagrams") && rest.contains("stopped"),
        "{rest}"
    );

    // No server there: one plain line, exit status 1.
    let free = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = Command::new(example("udp_echo_client"))
        .args([free.to_string().as_str(), "hello"])
        .output()
        .expect("client runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("udp_echo_client: no server at {free}")),
        "{stderr}"
    );

    for name in [
        "udp_echo_server",
        "udp_echo_client",
        "udp_multicast_server",
        "udp_multicast_client",
    ] {
        let help = Command::new(example(name)).arg("--help").output().unwrap();
        assert!(help.status.success(), "{name} --help");
        assert!(String::from_utf8_lossy(&help.stdout).starts_with(&format!("usage: {name}")));
    }
}

#[test]
fn udp_echo_client_bench_mode_reports_a_rate() {
    let mut server = Command::new(example("udp_echo_server"))
        .args(["127.0.0.1:0", "3"])
        .env("UDP_ECHO_QUIET", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("server starts");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let bench = Command::new(example("udp_echo_client"))
        .args([addr.as_str(), "--bench", "1"])
        .output()
        .unwrap();
    assert!(bench.status.success(), "{bench:?}");
    let text = String::from_utf8_lossy(&bench.stdout);
    let rate: f64 = text.split_whitespace().next().unwrap().parse().unwrap();
    assert!(rate > 100.0, "{text}");
    assert!(server.wait().unwrap().success());
}

/// The multicast examples, sender and receiver, inside a network namespace
/// the test makes (`unshare -rn`: only `lo` exists there), so that nothing
/// can leave this host whatever the examples did. Skips, saying so, where
/// no namespace can be made.
#[test]
fn multicast_examples_in_a_network_namespace() {
    let probe = Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "SKIP multicast_examples_in_a_network_namespace: cannot make a network \
                 namespace (unshare -rn, ip link set lo up): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!(
                "SKIP multicast_examples_in_a_network_namespace: cannot run unshare \
                 (util-linux) : {e}"
            );
            return;
        }
    }
    let script = r#"
        ip link set lo up || exit 97
        links=$(ip -o link show | awk -F': ' '{print $2}')
        [ "$links" = lo ] || { echo "not only lo: $links" >&2; exit 98; }
        "$1" 239.255.0.9:7460 --count 3 --seconds 10 > "$3" &
        c=$!
        i=0; while ! grep -q joined "$3" && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
        "$2" 239.255.0.9:7460 --interval 50 --count 40 > /dev/null
        wait $c
    "#;
    let out_file = std::env::temp_dir().join(format!("udp-mc-{}.txt", std::process::id()));
    let run = Command::new("timeout")
        .args(["30", "unshare", "-rn", "sh", "-c", script, "sh"])
        .arg(example("udp_multicast_client"))
        .arg(example("udp_multicast_server"))
        .arg(&out_file)
        .output()
        .expect("unshare runs");
    let client = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    assert!(run.status.success(), "{run:?}\nclient: {client}");
    let messages: Vec<&str> = client
        .lines()
        .filter(|l| l.contains(": message "))
        .collect();
    assert_eq!(messages.len(), 3, "{client}");
    assert!(
        client.starts_with("joined 239.255.0.9:7460 on 127.0.0.1"),
        "{client}"
    );
    assert!(client.ends_with("stopped\n"), "{client}");
}
