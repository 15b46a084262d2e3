//! The session (protocol.md section 3, section 6 keep-alive frames): login
//! with `--auth none` and `--auth password`, HELLO, QUIT, PING/PONG, what is
//! allowed before login, user names; and `switchboard passwd` (cli.md).

mod common;

use std::time::Duration;

use common::*;

#[track_caller]
fn check_hello(lines: &[String], auth: &str, max_payload: &str) {
    let m = hello_map(lines);
    assert_eq!(
        m.get("server").map(String::as_str),
        Some("switchboard"),
        "{lines:?}"
    );
    assert_eq!(
        m.get("protocol").map(String::as_str),
        Some("1"),
        "{lines:?}"
    );
    assert_eq!(m.get("auth").map(String::as_str), Some(auth), "{lines:?}");
    assert_eq!(
        m.get("max_payload").map(String::as_str),
        Some(max_payload),
        "{lines:?}"
    );
    let version = m
        .get("version")
        .unwrap_or_else(|| panic!("HELLO has no version= line: {lines:?}"));
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    assert!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "version={version} is not a semver"
    );
}

#[test]
fn server_sends_nothing_first() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.connect();
    c.expect_silence(Duration::from_millis(300));
    c.ping();
}

#[test]
fn hello_before_and_after_login() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.connect();
    let lines = c.result("HELLO 0");
    check_hello(&lines, "none", "1048576");
    c.ack("USER 0 alice");
    let lines = c.result("HELLO 0");
    check_hello(&lines, "none", "1048576");
    // No cluster (several loops of one process count as one node); the
    // node is named by --node, or by the host name and the listen port.
    assert!(lines.iter().any(|l| l == "cluster=off"), "{lines:?}");
    let port = srv.addr.port();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("node=") && l.ends_with(&format!(":{port}"))),
        "{lines:?}"
    );
    let named = ServerProc::start(&["--node", "edge-7"]);
    let lines = named.connect().result("HELLO 0");
    assert!(lines.iter().any(|l| l == "node=edge-7"), "{lines:?}");
}

#[test]
fn login_with_auth_none_and_pass_is_ignored() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut c = srv.connect();
    c.ack("USER 0 alice");
    c.ack("PASS 0 whatever");
    c.send(b"PASS 9\nsome text");
    c.expect_ack();
    assert_eq!(c.result("WHO 0"), ["alice"]);
    c.ack("SUBSCRIBE 0 1");
}

#[test]
fn user_again_same_name_is_ack_other_name_forbidden() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.login("alice");
    c.ack("USER 0 alice");
    c.err("USER 0 bob", "forbidden");
    // Still alice, and only alice.
    assert_eq!(c.result("WHO 0"), ["alice"]);
    c.send_frame("SEND", &["alice"], b"me");
    c.expect_ack();
    c.expect_message("alice", b"me");
    // Names compare case-insensitively: this is the same name.
    c.ack("USER 0 ALICE");
}

#[test]
fn user_names() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.connect();
    let long65 = "a".repeat(65);
    for name in ["al!ce", "@server", "a:b", "a/b", "al*", long65.as_str()] {
        c.err(&format!("USER 0 {name}"), "bad-args");
    }
    // The session goes on, not logged in.
    c.err("GROUPS 0", "auth-required");
    let long64 = "Z".repeat(64);
    c.ack(&format!("USER 0 {long64}"));
    let mut d = srv.connect();
    d.ack("USER 0 A.b_c-9");
    let who = d.result("WHO 0");
    assert_eq!(who, ["A.b_c-9", long64.as_str()]);
    let mut e = srv.connect();
    e.ack("USER 0 x");
}

#[test]
fn quit_acks_then_closes() {
    let srv = ServerProc::start(&[]);
    let mut before = srv.connect();
    before.ack("QUIT 0");
    before.expect_closed();
    let mut after = srv.login("alice");
    after.ack("QUIT 0");
    after.expect_closed();
    // Pipelined after QUIT: nothing more is read or answered.
    let mut c = srv.login("bob");
    c.send(b"QUIT 0\nPING 0\n");
    c.expect_ack();
    c.expect_closed();
}

#[test]
fn quit_flushes_what_it_owes() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut carol = srv.login("carol");
    let mut c = srv.login("dave");
    c.ack("SUBSCRIBE 0 1");
    let big = vec![b'q'; 200_000];
    let mut batch = frame("PUBLISH", &["1"], &big);
    batch.extend_from_slice(&frame("SEND", &["carol"], b"bye carol"));
    batch.extend_from_slice(b"QUIT 0\n");
    c.send(&batch);
    c.expect_ack(); // PUBLISH
    c.expect_ack(); // SEND
    c.expect_ack(); // QUIT
    c.expect_published("dave", &["1"], &big);
    c.expect_closed();
    carol.expect_message("dave", b"bye carol");
}

#[test]
fn ping_gets_pong_and_pong_gets_nothing() {
    let srv = ServerProc::start(&[]);
    let mut c = srv.connect();
    c.ping();
    c.send(b"PONG 0\nPONG 0\n");
    c.expect_quiet("PONG gets no reply");
    c.ack("USER 0 alice");
    c.ping();
    c.send(b"PONG 0\n");
    c.expect_quiet("PONG gets no reply after login either");
}

#[test]
fn before_login_only_the_session_commands_are_allowed() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    bob.ack("WATCH 0 1");
    let mut c = srv.connect();
    let mut batch = Vec::new();
    batch.extend_from_slice(b"GROUPS 0\nSUBSCRIBE 0 1\nUNSUBSCRIBE 0 1\n");
    batch.extend_from_slice(b"PUBLISH 5 1\nhelloSEND 5 bob\nhelloWHO 0\nWHO 0 1\n");
    batch.extend_from_slice(b"WATCH 0 1\nUNWATCH 0 1\nFOO 5\nhello");
    c.send(&batch);
    for what in [
        "GROUPS",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "PUBLISH",
        "SEND",
        "WHO",
        "WHO g",
        "WATCH",
        "UNWATCH",
        "FOO (unknown)",
    ] {
        c.label = format!("not logged in, {what}");
        c.expect_err("auth-required");
    }
    c.label = String::from("anon");
    // The allowed ones work, and the session goes on.
    c.ping();
    c.send(b"PONG 0\n");
    let lines = c.result("HELLO 0");
    check_hello(&lines, "none", "1048576");
    bob.expect_quiet("nothing was published, sent or subscribed before login");
    c.ack("USER 0 alice");
    c.ack("SUBSCRIBE 0 1");
    let joined = bob.push();
    assert!(joined.is("JOINED", &["alice", "1"]), "{joined:?}");
}

// ---------------------------------------------------------------------------
// --auth password
// ---------------------------------------------------------------------------

/// A password file with `users` (name, password) and a server using it.
fn password_server(dir: &TempDir, users: &[(&str, &str)], extra: &[&str]) -> ServerProc {
    let file = dir.join("passwd");
    for (u, p) in users {
        passwd(&file, u, p);
    }
    let mut args = vec!["--auth", "password", "--passwd", path_str(&file)];
    args.extend_from_slice(extra);
    ServerProc::start(&args)
}

#[test]
fn lecture_transcript_with_password_auth() {
    let dir = TempDir::new("lecture");
    let srv = password_server(
        &dir,
        &[("corrado", "mypass"), ("alice", "pw")],
        &["--group", "1=general", "--group", "2=random"],
    );
    let mut corrado = Client::connect(srv.addr, "corrado");
    corrado.ack("USER 0 corrado");
    corrado.ack("PASS 0 mypass");
    let hello = corrado.result("HELLO 0");
    check_hello(&hello, "password", "1048576");
    assert_eq!(corrado.result("GROUPS 0"), ["1,general", "2,random"]);
    corrado.ack("SUBSCRIBE 0 1");

    let mut alice = Client::connect(srv.addr, "alice");
    alice.ack("USER 0 alice");
    alice.send(b"PASS 2\npw");
    alice.expect_ack();
    alice.ack("SUBSCRIBE 0 1 2");
    assert_eq!(alice.result("WHO 0"), ["alice", "corrado"]);
    assert_eq!(alice.result("WHO 0 2"), ["alice"]);

    alice.send_frame("PUBLISH", &["1"], b"hello everyone");
    alice.expect_ack();
    corrado.expect_published("alice", &["1"], b"hello everyone");
    alice.expect_published("alice", &["1"], b"hello everyone");

    corrado.send_frame("SEND", &["alice"], b"welcome, alice");
    corrado.expect_ack();
    alice.expect_message("corrado", b"welcome, alice");

    corrado.send_frame("PUBLISH", &["1", "2"], b"class starts");
    corrado.expect_ack();
    alice.expect_published("corrado", &["1", "2"], b"class starts");
    corrado.expect_published("corrado", &["1", "2"], b"class starts");

    corrado.ack("QUIT 0");
    corrado.expect_closed();
    alice.expect_quiet("everything was delivered once");
}

#[test]
fn password_as_payload_with_spaces() {
    let dir = TempDir::new("pwspace");
    let srv = password_server(&dir, &[("bob", "correct horse battery")], &[]);
    let mut c = Client::connect(srv.addr, "bob");
    c.ack("USER 0 bob");
    c.send_frame("PASS", &[], b"correct horse battery");
    c.expect_ack();
    assert_eq!(c.result("WHO 0"), ["bob"]);
}

#[test]
fn wrong_password_or_unknown_user_fails_and_closes() {
    let dir = TempDir::new("pwfail");
    let srv = password_server(&dir, &[("alice", "secret")], &[]);
    let mut wrong = Client::connect(srv.addr, "alice (wrong password)");
    wrong.ack("USER 0 alice");
    wrong.err("PASS 0 Secret", "auth-failed");
    wrong.expect_closed();

    let mut wrong_payload = Client::connect(srv.addr, "alice (wrong payload password)");
    wrong_payload.ack("USER 0 alice");
    wrong_payload.send(b"PASS 7\nsecre t");
    wrong_payload.expect_err("auth-failed");
    wrong_payload.expect_closed();

    // An unknown user is not told apart at USER time.
    let mut unknown = Client::connect(srv.addr, "mallory (unknown)");
    unknown.ack("USER 0 mallory");
    unknown.err("PASS 0 secret", "auth-failed");
    unknown.expect_closed();

    // The server goes on.
    let mut ok = srv.login_password("alice", "secret");
    ok.ping();
}

#[test]
fn pass_before_user_and_commands_before_pass_need_auth() {
    let dir = TempDir::new("pwseq");
    let srv = password_server(&dir, &[("alice", "secret")], &["--group", "1=general"]);
    let mut c = Client::connect(srv.addr, "alice");
    c.err("PASS 0 secret", "auth-required");
    c.ack("USER 0 alice");
    // USER alone does not log in.
    c.err("GROUPS 0", "auth-required");
    c.err("SUBSCRIBE 0 1", "auth-required");
    c.ping();
    let hello = c.result("HELLO 0");
    check_hello(&hello, "password", "1048576");
    c.ack("PASS 0 secret");
    assert_eq!(c.result("GROUPS 0"), ["1,general"]);
}

#[test]
fn password_user_name_is_case_insensitive() {
    let dir = TempDir::new("pwcase");
    let srv = password_server(&dir, &[("corrado", "mypass")], &[]);
    let mut c = Client::connect(srv.addr, "CORRADO");
    c.ack("USER 0 CORRADO");
    c.ack("PASS 0 mypass");
    c.ping();
}

#[test]
fn login_timeout_applies_until_pass() {
    let dir = TempDir::new("pwtimeout");
    let srv = password_server(&dir, &[("alice", "secret")], &["--login-timeout", "1"]);
    let mut c = Client::connect(srv.addr, "alice (USER, no PASS)");
    c.ack("USER 0 alice");
    c.expect_err("timeout");
    c.expect_closed();
}

#[test]
fn passwd_command_adds_replaces_deletes() {
    let dir = TempDir::new("passwdcli");
    let file = dir.join("users");
    passwd(&file, "alice", "first-pw");
    passwd_stdin(&file, "bob", "bob pw from stdin");
    passwd(&file, "carol", "carol-pw");
    passwd(&file, "alice", "second-pw");
    passwd_delete(&file, "carol");

    // Readable by its owner only, and no password in clear.
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "password file mode is {mode:o}, should be readable by its owner only"
        );
    }
    let content = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let text = String::from_utf8_lossy(&content);
    for pw in ["first-pw", "second-pw", "bob pw from stdin", "carol-pw"] {
        assert!(
            !text.contains(pw),
            "the password file holds {pw:?} in clear:\n{text}"
        );
    }

    let srv = ServerProc::start(&["--auth", "password", "--passwd", path_str(&file)]);
    let mut a = Client::connect(srv.addr, "alice (old password)");
    a.ack("USER 0 alice");
    a.err("PASS 0 first-pw", "auth-failed");
    a.expect_closed();
    srv.login_password("alice", "second-pw").ping();

    let mut b = Client::connect(srv.addr, "bob");
    b.ack("USER 0 bob");
    b.send_frame("PASS", &[], b"bob pw from stdin");
    b.expect_ack();

    let mut c = Client::connect(srv.addr, "carol (deleted)");
    c.ack("USER 0 carol");
    c.err("PASS 0 carol-pw", "auth-failed");
    c.expect_closed();
}
