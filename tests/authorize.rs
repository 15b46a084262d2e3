//! The embedding API's verdicts (`Handler::authorize`): a host program
//! refuses a login, a subscribe, a publish and a send with `ERR forbidden`;
//! everything else goes on.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;

use common::Client;
use switchboard::{Attempt, Authorize, Handler, Server, ServerConfig, Verdict};

/// Refuses: user `mallory` logging in; group 2 subscriptions; publishes
/// whose payload is `forbidden`; sends to `boss`. Records every question.
struct Gatekeeper {
    asked: Arc<Mutex<Vec<String>>>,
}

impl Handler for Gatekeeper {
    fn authorize(&mut self, r: &Authorize<'_>) -> Verdict {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(format!("{} {:?}", r.user, r.attempt));
        }
        let deny = match r.attempt {
            Attempt::Login => r.user.eq_ignore_ascii_case("mallory"),
            Attempt::Subscribe(groups) => groups.contains(&2),
            Attempt::Publish { payload, .. } => payload == b"forbidden",
            Attempt::Send { to, .. } => to.eq_ignore_ascii_case("boss"),
            _ => false,
        };
        if deny { Verdict::Deny } else { Verdict::Allow }
    }
}

fn start() -> (
    SocketAddr,
    switchboard::ServerHandle,
    Arc<Mutex<Vec<String>>>,
    thread::JoinHandle<()>,
) {
    let mut config = ServerConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        ..ServerConfig::default()
    };
    config.groups.push((1, "general".into()));
    config.groups.push((2, "secret".into()));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let handler = Gatekeeper {
        asked: Arc::clone(&asked),
    };
    let server = Server::bind(config, handler).expect("bind");
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let run = thread::spawn(move || server.run().expect("run"));
    (addr, handle, asked, run)
}

fn login(addr: SocketAddr, name: &str) -> Client {
    let mut c = Client::connect(addr, name);
    c.send_line(&format!("USER 0 {name}"));
    c.expect_ack();
    c
}

#[test]
fn the_handler_refuses_login_subscribe_publish_and_send() {
    let (addr, handle, asked, run) = start();
    let mut mallory = Client::connect(addr, "mallory");
    mallory.send_line("USER 0 Mallory");
    mallory.expect_err("forbidden");
    mallory.expect_closed();

    let mut alice = login(addr, "alice");
    let mut boss = login(addr, "boss");
    alice.send_line("SUBSCRIBE 0 1 2");
    alice.expect_err("forbidden");
    alice.send_line("SUBSCRIBE 0 1");
    alice.expect_ack();
    boss.send_line("SUBSCRIBE 0 1");
    boss.expect_ack();

    alice.send_frame("PUBLISH", &["1"], b"forbidden");
    alice.expect_err("forbidden");
    alice.send_frame("PUBLISH", &["1"], b"fine");
    alice.expect_published("alice", &["1"], b"fine");
    alice.expect_ack();
    boss.expect_published("alice", &["1"], b"fine");

    alice.send_frame("SEND", &["boss"], b"psst");
    alice.expect_err("forbidden");
    boss.send_frame("SEND", &["alice"], b"hi");
    boss.expect_ack();
    alice.expect_message("boss", b"hi");
    boss.expect_quiet("nothing refused arrived");
    alice.ping();

    let asked = asked.lock().unwrap().clone();
    for needle in [
        "alice Login",
        "Mallory Login",
        "alice Subscribe",
        "alice Publish",
        "alice Send",
    ] {
        assert!(
            asked.iter().any(|q| q.starts_with(needle)),
            "{needle}: {asked:?}"
        );
    }
    handle.stop();
    run.join().expect("server thread");
}
