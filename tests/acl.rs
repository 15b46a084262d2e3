//! Authorization with the real binary (cli.md `--acl`, SIGHUP): the ACL
//! refuses with `ERR forbidden` and leaves others alone; SIGHUP reloads the
//! password and ACL files without dropping anyone, refuses a bad new file and
//! keeps the old one, and reopens the log file.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

const RELOAD: Duration = Duration::from_secs(10);

/// Waits until the server's log holds `needle` `count` times.
#[track_caller]
fn wait_log_count(srv: &ServerProc, needle: &str, count: usize) {
    let ok = wait_until(RELOAD, || srv.log_text().matches(needle).count() >= count);
    assert!(
        ok,
        "no {needle:?} (x{count}) in the log:\n{}",
        srv.log_text()
    );
}

#[test]
fn a_user_forbidden_to_publish_gets_forbidden_and_others_are_unaffected() {
    let dir = TempDir::new("acl");
    let acl = dir.join("acl");
    fs::write(
        &acl,
        "# everyone may do everything but mallory publish\n\
         default: subscribe * ; publish * ; watch * ; send yes\n\
         user mallory: publish none\n",
    )
    .unwrap();
    let srv = ServerProc::start(&["--acl", path_str(&acl), "--group", "1=general"]);
    let mut alice = srv.login("alice");
    alice.send_line("SUBSCRIBE 0 1");
    alice.expect_ack();
    let mut mallory = srv.login("Mallory");
    mallory.send_frame("PUBLISH", &["1"], b"spam");
    let err = mallory.expect_err("forbidden");
    assert!(err.text().contains("group 1"), "{}", err.text());
    // Mallory's session goes on, and may still do what it is allowed.
    mallory.send_line("SUBSCRIBE 0 1");
    mallory.expect_ack();
    let mut bob = srv.login("bob");
    bob.send_frame("PUBLISH", &["1"], b"hello");
    bob.expect_ack();
    alice.expect_published("bob", &["1"], b"hello");
    mallory.expect_published("bob", &["1"], b"hello");
    alice.expect_quiet("nothing from mallory");
}

#[test]
fn sighup_lets_a_new_user_log_in_and_keeps_sessions() {
    let dir = TempDir::new("hup-passwd");
    let file = dir.join("passwd");
    passwd(&file, "alice", "wonderland");
    let mut srv = ServerProc::start(&[
        "--auth",
        "password",
        "--passwd",
        path_str(&file),
        "--group",
        "1=general",
    ]);
    let mut alice = srv.login_password("alice", "wonderland");
    alice.send_line("SUBSCRIBE 0 1");
    alice.expect_ack();
    // Not yet in the file.
    let mut early = srv.connect();
    early.send_line("USER 0 bob");
    early.expect_ack();
    early.send_line("PASS 0 builder");
    early.expect_err("auth-failed");
    passwd(&file, "bob", "builder");
    srv.signal("HUP");
    wait_log_count(&srv, "password file", 1);
    let mut bob = srv.login_password("bob", "builder");
    bob.send_frame("PUBLISH", &["1"], b"after reload");
    bob.expect_ack();
    alice.expect_published("bob", &["1"], b"after reload");
    alice.ping();
    srv.assert_running();
}

#[test]
fn a_broken_acl_on_sighup_is_refused_and_the_old_rules_apply() {
    let dir = TempDir::new("hup-acl");
    let acl = dir.join("acl");
    fs::write(
        &acl,
        "default: subscribe * ; publish * ; send yes\nuser mallory: publish none\n",
    )
    .unwrap();
    let mut srv = ServerProc::start(&["--acl", path_str(&acl), "--group", "1=general"]);
    let mut mallory = srv.login("mallory");
    mallory.send_frame("PUBLISH", &["1"], b"x");
    mallory.expect_err("forbidden");
    // A broken file: refused with a log line naming the file and line.
    fs::write(&acl, "default: publish *\nuser mallory: publish 0-3\n").unwrap();
    srv.signal("HUP");
    wait_log_count(&srv, "keeping the ACL loaded before", 1);
    let log = srv.log_text();
    let line = log.lines().find(|l| l.contains("keeping the ACL")).unwrap();
    assert!(
        line.contains(path_str(&acl)) && line.contains("line 2"),
        "{line}"
    );
    mallory.send_frame("PUBLISH", &["1"], b"x");
    mallory.expect_err("forbidden");
    // A good file: its rules apply to the same session.
    fs::write(&acl, "default: publish *\n").unwrap();
    srv.signal("HUP");
    wait_log_count(&srv, "reloaded (rules for 0 users", 1);
    mallory.send_frame("PUBLISH", &["1"], b"now");
    mallory.expect_ack();
    // Subscribe is not granted by the new file.
    mallory.send_line("SUBSCRIBE 0 1");
    mallory.expect_err("forbidden");
    srv.assert_running();
}

#[test]
fn a_bad_acl_file_stops_the_start_with_one_line() {
    let dir = TempDir::new("acl-bad");
    let acl = dir.join("acl");
    fs::write(&acl, "# ok\ndefault: send yes\nuser alice: publish 5-2\n").unwrap();
    let out = expect_start_failure(&serve_args(&["--acl", path_str(&acl)]));
    let lines = out.stderr_lines();
    let line = lines
        .iter()
        .find(|l| l.contains("ACL file"))
        .unwrap_or_else(|| panic!("no ACL line:\n{}", out.stderr));
    assert!(line.contains(path_str(&acl)), "{line}");
    assert!(
        line.contains("line 3") && line.contains("backwards"),
        "{line}"
    );
    let missing = dir.join("missing");
    let out = expect_start_failure(&serve_args(&["--acl", path_str(&missing)]));
    assert!(out.stderr.contains(path_str(&missing)), "{}", out.stderr);
}

#[test]
fn sighup_reopens_the_log_file() {
    let dir = TempDir::new("hup-log");
    let log = dir.join("server.log");
    let rotated = dir.join("server.log.1");
    let mut srv = ServerProc::start(&["--log-file", path_str(&log)]);
    let _alice = srv.login("alice");
    // Lines are written by the log's own thread: rotate once they are in
    // the file (lines still queued at the rename may land in either file).
    let written = wait_until(RELOAD, || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("logged in as alice"))
    });
    assert!(written, "the log file never had the login");
    fs::rename(&log, &rotated).unwrap();
    srv.signal("HUP");
    let ok = wait_until(RELOAD, || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("SIGHUP: reloading"))
    });
    assert!(ok, "no new log file; log:\n{}", srv.log_text());
    let old = fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("listening on"), "{old}");
    srv.assert_running();
}
