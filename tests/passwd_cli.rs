//! `switchboard passwd FILE USER` on a terminal (issue 11): the password is
//! asked for twice without echo, and two that differ are refused. The
//! terminal is a pseudo-terminal driven by Python's `pty` module; without
//! `python3` the tests print `SKIP` and pass.

mod common;

use std::fs;
use std::process::Command;

use common::{BIN, ServerProc, TempDir, have_program, passwd_stdin, path_str};

/// Runs `ARGV` on a new pseudo-terminal (its controlling terminal), answers
/// the first prompt with `PW1` and the second with `PW2`, each only once
/// the terminal's echo is off, and prints everything the terminal showed;
/// exits with the child's status.
const PTY_DRIVER: &str = r#"
import os, pty, select, sys, termios, time

argv = sys.argv[1:]
answers = [os.environ["PW1"].encode(), os.environ["PW2"].encode()]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)

shown = b""
def read_some(deadline):
    global shown
    left = deadline - time.time()
    if left <= 0:
        return False
    ready, _, _ = select.select([fd], [], [], left)
    if not ready:
        return False
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        return False
    shown += chunk
    return bool(chunk)

for prompt, answer in zip([b"New password", b"Retype the password"], answers):
    deadline = time.time() + 10
    while prompt not in shown:
        if not read_some(deadline):
            sys.stdout.write(shown.decode("utf-8", "replace"))
            sys.exit("no prompt %r" % prompt)
    # Answer only once the echo is off, as a person would after the prompt.
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.time() > deadline:
            sys.exit("the echo stayed on after %r" % prompt)
        time.sleep(0.01)
    os.write(fd, answer + b"\n")

deadline = time.time() + 10
while read_some(deadline):
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode("utf-8", "replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// `switchboard passwd FILE USER` on a terminal, answering `pw1` then
/// `pw2`: (exit code, what the terminal showed).
fn passwd_on_a_terminal(file: &str, user: &str, pw1: &str, pw2: &str) -> (i32, String) {
    let out = Command::new("python3")
        .args(["-c", PTY_DRIVER, BIN, "passwd", file, user])
        .env("PW1", pw1)
        .env("PW2", pw2)
        .output()
        .expect("python3 runs");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        out.stderr.is_empty() || code != 0,
        "driver stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, shown)
}

fn python_or_skip() -> bool {
    let ok = have_program("python3")
        && Command::new("python3")
            .args(["-c", "import pty, termios"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: needs python3 with pty and termios");
    }
    ok
}

#[test]
fn on_a_terminal_the_password_is_asked_twice_without_echo() {
    if !python_or_skip() {
        return;
    }
    let dir = TempDir::new("passwd-tty");
    let file = dir.join("users.passwd");
    let (code, shown) = passwd_on_a_terminal(path_str(&file), "alice", "s3cret-tty", "s3cret-tty");
    assert_eq!(code, 0, "terminal showed:\n{shown}");
    assert!(shown.contains("New password for alice: "), "{shown}");
    assert!(shown.contains("Retype the password for alice: "), "{shown}");
    assert!(
        !shown.contains("s3cret-tty"),
        "the password was echoed:\n{shown}"
    );
    assert!(shown.contains("added alice to"), "{shown}");

    // The password works.
    let srv = ServerProc::start(&["--auth", "password", "--passwd", path_str(&file)]);
    let mut c = srv.login_password("alice", "s3cret-tty");
    c.ping();
}

#[test]
fn on_a_terminal_two_different_passwords_are_refused() {
    if !python_or_skip() {
        return;
    }
    let dir = TempDir::new("passwd-tty-differ");
    let file = dir.join("users.passwd");
    let (code, shown) = passwd_on_a_terminal(path_str(&file), "alice", "one-thing", "another");
    assert_eq!(code, 1, "terminal showed:\n{shown}");
    assert!(shown.contains("do not match"), "{shown}");
    assert!(!file.exists(), "nothing should be written");

    // An existing file is left as it was.
    passwd_stdin(&file, "bob", "bobs-password");
    let before = fs::read(&file).expect("read");
    let (code, shown) = passwd_on_a_terminal(path_str(&file), "bob", "new-one", "new-two");
    assert_eq!(code, 1, "terminal showed:\n{shown}");
    assert_eq!(fs::read(&file).expect("read"), before, "the file changed");
}
