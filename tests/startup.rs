//! Starting `switchboard serve` (cli.md `serve`, docs/operations.md
//! "Starting"): the start banner, `--config` errors and the sample
//! `examples/switchboard.toml`, settings refused at start, `--auth cert` and
//! the plain TCP listener, development certificates in the per-user data
//! directory, and password-protected (PKCS#8) server keys made by `openssl`
//! and by `switchboard certs`, from a file or typed at a prompt.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use common::*;

/// The sample configuration.
fn sample_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/switchboard.toml")
}

// ---------------------------------------------------------------------------
// A server started with its own environment, whatever its listeners
// ---------------------------------------------------------------------------

/// A `switchboard serve` run in its own directory with extra environment,
/// started once it has logged its banner (so it may have no plain TCP
/// listener, which [`ServerProc`] waits for); killed on drop, its log printed
/// if the test is failing.
struct Started {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    cwd: TempDir,
}

impl Started {
    /// Runs the binary with `args` in `cwd`, with `env` set (a `None` value
    /// removes the variable), and waits for the banner line `switchboard
    /// VERSION started`.
    #[track_caller]
    fn spawn(cwd: TempDir, args: &[&str], env: &[(&str, Option<&Path>)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(cwd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            match value {
                Some(v) => command.env(name, v),
                None => command.env_remove(name),
            };
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN} {args:?}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr piped");
        let reader = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut v) = log.lock() {
                        v.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            })
        };
        let started = format!("switchboard {} started", env!("CARGO_PKG_VERSION"));
        let deadline = Instant::now() + START_TIMEOUT;
        let mut this = Self {
            child,
            log,
            reader: Some(reader),
            cwd,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(&started) => return this,
                Ok(_) => {}
                Err(e) => {
                    kill_and_reap(&mut this.child);
                    if let Some(r) = this.reader.take() {
                        let _ = r.join();
                    }
                    panic!(
                        "no `{started}` line ({e:?}); args {args:?}\noutput:\n{}",
                        this.text()
                    );
                }
            }
        }
    }

    fn text(&self) -> String {
        self.log.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// The first log line containing `needle`, waiting for it (bounded).
    #[track_caller]
    fn line(&self, needle: &str) -> String {
        let mut found = None;
        wait_until(READ_TIMEOUT, || {
            found = self
                .text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no log line contains {needle:?}; log:\n{}", self.text()))
    }

    /// The address in the `KIND listening on ADDR` line, if any.
    fn listening(&self, kind: &str) -> Option<SocketAddr> {
        let marker = format!("{kind} listening on ");
        self.text().lines().find_map(|l| {
            let at = l.find(&marker)?;
            l[at + marker.len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    #[track_caller]
    fn tls_addr(&self) -> SocketAddr {
        self.listening("tls")
            .unwrap_or_else(|| panic!("no TLS listener; log:\n{}", self.text()))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if thread::panicking() {
            eprintln!("---- server output ----\n{}\n----", self.text());
        }
    }
}

/// Asserts that exactly one stderr line is the start error (`switchboard:
/// ...`) and that it mentions every one of `needles`; returns it.
#[track_caller]
fn one_error_line(out: &RunOutput, needles: &[&str]) -> String {
    let errors: Vec<_> = out
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("switchboard: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one start error line expected; stderr:\n{}",
        out.stderr
    );
    for n in needles {
        assert!(
            errors[0].contains(n),
            "the start error should mention {n:?}: {}",
            errors[0]
        );
    }
    errors[0].to_owned()
}

/// A TLS session that logs in as `user` (auth none) and asks `WHO 0`.
#[track_caller]
fn tls_login_works(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, user: &str) {
    let mut c = TlsClient::connect(addr, config, user);
    c.ack(&format!("USER 0 {user}"));
    assert!(c.result("WHO 0").contains(&user.to_owned()));
}

// ---------------------------------------------------------------------------
// The banner
// ---------------------------------------------------------------------------

#[test]
fn banner_names_version_pid_listeners_auth_groups_and_dev_certs() {
    let srv = Started::spawn(
        TempDir::new("banner"),
        &serve_tls_args(&[
            "--group",
            "1=general",
            "--group",
            "2=random",
            "--metrics-listen",
            "127.0.0.1:0",
        ]),
        &[],
    );
    let tcp = srv.listening("tcp").expect("tcp listener");
    let tls = srv.tls_addr();
    let metrics = srv.listening("metrics").expect("metrics listener");
    let version = env!("CARGO_PKG_VERSION");
    let first = srv.line(&format!("switchboard {version} started"));
    for part in [
        format!("pid {}", srv.child.id()),
        format!("tcp {tcp}"),
        format!("tls {tls}"),
        format!("metrics {metrics}"),
    ] {
        assert!(first.contains(&part), "banner without {part:?}: {first}");
    }
    let auth = srv.line("auth none");
    assert!(
        auth.contains("groups: 1=general, 2=random") && auth.contains("ACL none"),
        "{auth}"
    );
    let dev = srv.line("development certificates in certs");
    assert!(
        dev.contains("for development only") && dev.contains("clients should trust certs/ca.pem"),
        "{dev}"
    );
    let config = tls_client_config(&srv.cwd.join("certs/ca.pem"), None, TLS_ANY);
    tls_login_works(tls, &config, "alice");

    // Password auth, an ACL, no groups; no TLS, so no certificates.
    let dir = TempDir::new("banner-password");
    let passwd_file = dir.join("users.passwd");
    passwd(&passwd_file, "alice", "pw");
    let acl = dir.join("acl");
    std::fs::write(&acl, "default: subscribe *\n").expect("write acl");
    let srv = Started::spawn(
        TempDir::new("banner2"),
        &serve_args(&[
            "--auth",
            "password",
            "--passwd",
            path_str(&passwd_file),
            "--acl",
            path_str(&acl),
        ]),
        &[],
    );
    let auth = srv.line("auth password");
    for part in [
        format!("1 user in {}", passwd_file.display()),
        format!("ACL {}", acl.display()),
        "groups: none registered".into(),
    ] {
        assert!(auth.contains(&part), "banner without {part:?}: {auth}");
    }
    assert!(!srv.text().contains("development certificates"));
}

// ---------------------------------------------------------------------------
// --config: errors and the sample file
// ---------------------------------------------------------------------------

#[test]
fn config_errors_give_toml_reason_and_position() {
    let dir = TempDir::new("config-errors");
    let cases = [
        (
            "listen = \"127.0.0.1:0\"\nmax_payload = \"ten\"\n",
            &["line 2", "invalid type", "expected"][..],
        ),
        (
            "listn = \"127.0.0.1:0\"\n",
            &["line 1", "unknown field `listn`"],
        ),
        ("listen = \"127.0.0.1:0\n", &["line 1", "string"]),
        ("group = [1, 2]\n", &["line 1", "invalid type: integer"]),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let file = dir.join(&format!("bad{i}.toml"));
        std::fs::write(&file, text).expect("write config");
        let out = expect_start_failure(&["serve", "--config", path_str(&file)]);
        let mut needles = needles.to_vec();
        needles.push(path_str(&file));
        let line = one_error_line(&out, &needles);
        eprintln!("config error: {line}");
    }
}

/// `serve --help`: each flag (without `--config` and `--help`) with its
/// `[default: ...]`, if it shows one.
fn help_flags() -> BTreeMap<String, Option<String>> {
    let out = run_bin_ok(&["serve", "--help"], None, "");
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut finish = |cur: Option<(String, String)>| {
        if let Some((flag, text)) = cur {
            let default = text.find("[default: ").map(|at| {
                let rest = &text[at + "[default: ".len()..];
                rest[..rest.find(']').unwrap_or(rest.len())].to_owned()
            });
            flags.insert(flag, default);
        }
    };
    for line in out.stdout.lines() {
        let trimmed = line.trim_start();
        let flag = trimmed
            .strip_prefix("-h, ")
            .unwrap_or(trimmed)
            .strip_prefix("--")
            .filter(|_| line.starts_with("  ") && !line.starts_with("          "));
        if let Some(flag) = flag {
            finish(current.take());
            let name = flag.split_whitespace().next().unwrap_or("").to_owned();
            current = Some((name, String::new()));
        } else if let Some((_, text)) = &mut current {
            text.push(' ');
            text.push_str(trimmed);
        }
    }
    finish(current);
    flags.remove("help");
    flags.remove("config");
    flags
}

/// The sample's keys (set, or commented out as `# key = value`) with their
/// values as written.
fn sample_keys() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(sample_config()).expect("read the sample config");
    let mut keys = BTreeMap::new();
    for line in text.lines() {
        let line = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        let is_key = key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        // A comment line that merely starts like one (`auth = "cert". ...`)
        // does not hold a TOML value.
        if is_key && toml::from_str::<toml::Table>(line).is_ok() {
            keys.insert(key.to_owned(), value.trim().to_owned());
        }
    }
    keys
}

#[test]
fn sample_config_has_every_serve_flag_with_its_default() {
    let flags = help_flags();
    assert!(
        flags.len() > 20,
        "parsed too few flags from --help: {flags:?}"
    );
    let keys = sample_keys();
    let as_keys: BTreeSet<String> = flags.keys().map(|f| f.replace('-', "_")).collect();
    let in_sample: BTreeSet<String> = keys.keys().cloned().collect();
    let missing: Vec<_> = as_keys.difference(&in_sample).collect();
    let unknown: Vec<_> = in_sample.difference(&as_keys).collect();
    assert!(
        missing.is_empty(),
        "serve flags without a key in examples/switchboard.toml: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "keys in examples/switchboard.toml that serve does not have: {unknown:?}"
    );
    for (flag, default) in &flags {
        let Some(default) = default else { continue };
        let value = &keys[&flag.replace('-', "_")];
        assert_eq!(
            value.trim_matches('"'),
            default,
            "examples/switchboard.toml: {flag} should show its default"
        );
    }
    // Every line, the commented-out keys too, is valid TOML.
    let text = std::fs::read_to_string(sample_config()).expect("read");
    let all: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if toml::from_str::<toml::Table>(rest).is_ok() => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let table: toml::Table = toml::from_str(&all).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(table.len(), keys.len());
}

#[test]
fn sample_config_starts() {
    let sample = sample_config();
    let srv = ServerProc::start_raw(&[
        "serve",
        "--config",
        path_str(&sample),
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--ws-listen",
        "127.0.0.1:0",
        "--wss-listen",
        "127.0.0.1:0",
    ]);
    let mut c = srv.login("alice");
    let hello = c.result("HELLO 0");
    assert!(
        hello.contains(&"max_payload=1048576".to_owned()),
        "{hello:?}"
    );
    assert!(srv.wait_log("started, pid", READ_TIMEOUT).is_some());
}

// ---------------------------------------------------------------------------
// Settings refused at start
// ---------------------------------------------------------------------------

#[test]
fn settings_that_make_no_sense_are_refused_with_one_line() {
    let dir = TempDir::new("nonsense");
    let passwd_file = dir.join("users.passwd");
    passwd(&passwd_file, "alice", "pw");
    let pw = path_str(&passwd_file);
    let config = |name: &str, text: &str| {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write config");
        file
    };
    let dup = config(
        "dup.toml",
        "group = [\"1=general\", \"2=x\", \"1=random\"]\n",
    );
    let off = config(
        "off.toml",
        "listen = \"off\"\ntls_listen = \"off\"\nws_listen = \"off\"\nwss_listen = \"off\"\n",
    );
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            serve_args(&["--group", "1=general", "--group", "1=random"]),
            vec![
                "--group",
                "1=random",
                "group 1 is already registered",
                "general",
            ],
        ),
        (
            vec!["serve", "--config", path_str(&dup)],
            vec!["group 1 is already registered"],
        ),
        (
            serve_args(&["--passwd", pw]),
            vec!["--passwd", pw, "--auth password"],
        ),
        (
            serve_args(&["--auth", "none", "--passwd", pw]),
            vec!["--passwd", "--auth password"],
        ),
        (
            vec![
                "serve",
                "--listen",
                "off",
                "--tls-listen",
                "off",
                "--ws-listen",
                "off",
                "--wss-listen",
                "off",
            ],
            vec!["every listener is off"],
        ),
        (
            vec!["serve", "--config", path_str(&off)],
            vec!["every listener is off"],
        ),
    ];
    for (args, needles) in &cases {
        let out = expect_start_failure(args);
        let line = one_error_line(&out, needles);
        eprintln!("refused: {line}");
    }
}

#[test]
fn auth_cert_keeps_plain_tcp_off_unless_asked_for() {
    let certs = CertDir::new(&["alice"]);
    let mut mutual = certs.server_args();
    mutual.extend(["--client-ca".into(), certs.arg("ca.pem")]);
    let mutual: Vec<&str> = mutual.iter().map(String::as_str).collect();
    let mut args = vec![
        "serve",
        "--tls-listen",
        "127.0.0.1:0",
        "--ws-listen",
        "off",
        "--wss-listen",
        "off",
        "--auth",
        "cert",
    ];
    args.extend_from_slice(&mutual);

    let srv = Started::spawn(TempDir::new("cert-only"), &args, &[]);
    assert_eq!(srv.listening("tcp"), None, "no plain TCP listener expected");
    srv.line("--auth cert: no plain TCP listener");
    let banner = srv.line("started, pid");
    assert!(
        banner.contains(&format!(
            "listeners: tls {} (client certificates required)",
            srv.tls_addr()
        )),
        "{banner}"
    );
    let config = certs.client_config_as("alice", TLS_ANY);
    let mut alice = TlsClient::connect(srv.tls_addr(), &config, "alice");
    assert!(alice.result("WHO 0").contains(&"alice".to_owned()));
    drop(srv);

    // Asked for on the command line, or in a config file: on, with a warning.
    let dir = TempDir::new("cert-plain");
    let file = dir.join("plain.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\n").expect("write config");
    for extra in [["--listen", "127.0.0.1:0"], ["--config", path_str(&file)]] {
        let mut with_plain = args.clone();
        with_plain.extend_from_slice(&extra);
        let srv = Started::spawn(TempDir::new("cert-plain"), &with_plain, &[]);
        assert!(
            srv.listening("tcp").is_some(),
            "{extra:?}: plain TCP expected"
        );
        srv.line("nobody can log in over the plain TCP listener");
    }
}

// ---------------------------------------------------------------------------
// Development certificates in the per-user data directory
// ---------------------------------------------------------------------------

#[test]
fn dev_certs_go_to_the_user_data_dir_when_certs_cannot_be_written() {
    let home = TempDir::new("home");
    let xdg = home.join("xdg");
    // `./certs` is a file: nothing can be written under it.
    let blocked = || {
        let cwd = TempDir::new("blocked");
        std::fs::write(cwd.join("certs"), b"not a directory").expect("write");
        cwd
    };
    for (env, dir) in [
        (
            vec![("XDG_DATA_HOME", Some(xdg.as_path())), ("HOME", None)],
            xdg.join("switchboard/certs"),
        ),
        (
            vec![("XDG_DATA_HOME", None), ("HOME", Some(home.path()))],
            home.join(".local/share/switchboard/certs"),
        ),
    ] {
        let srv = Started::spawn(blocked(), &serve_tls_args(&[]), &env);
        srv.line(&format!("using {} instead", dir.display()));
        let banner = srv.line("development certificates in");
        let ca = dir.join("ca.pem");
        assert!(
            banner.contains(&format!("development certificates in {},", dir.display()))
                && banner.contains(&format!("clients should trust {}", ca.display())),
            "{banner}"
        );
        let config = tls_client_config(&ca, None, TLS_ANY);
        tls_login_works(srv.tls_addr(), &config, "bob");
        // A second start reuses them.
        let before = std::fs::read(&ca).expect("read ca.pem");
        drop(srv);
        let srv = Started::spawn(blocked(), &serve_tls_args(&[]), &env);
        assert_eq!(std::fs::read(&ca).expect("read ca.pem"), before);
        tls_login_works(srv.tls_addr(), &config, "bob");
    }

    // Without any per-user directory: one line, and what to do.
    let out_dir = blocked();
    let out = Command::new(BIN)
        .args(serve_tls_args(&[]))
        .current_dir(out_dir.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("HOME")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let err = stderr
        .lines()
        .find(|l| l.starts_with("switchboard: "))
        .unwrap_or_else(|| panic!("no start error:\n{stderr}"));
    assert!(
        err.contains("cannot write development certificates") && err.contains("--cert"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Password-protected keys
// ---------------------------------------------------------------------------

const PASSWORD: &str = "correct horse battery";

/// `openssl ARGS` in `dir`, asserting success; `false` (after a SKIP line)
/// when openssl is not installed.
#[track_caller]
fn openssl(dir: &Path, args: &[&str]) -> bool {
    if !have_program("openssl") {
        eprintln!("SKIP: openssl is not installed (.ci/run installs it)");
        return false;
    }
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// A directory with a development CA (`switchboard certs`), the password in
/// `pass`, and `NAME.key` (encrypted by `openssl genpkey` with the
/// `algorithm` options) with `NAME.pem` for localhost and 127.0.0.1 signed
/// by that CA. `None` without openssl.
fn openssl_encrypted_server(name: &str, algorithm: &[&str]) -> Option<CertDir> {
    let certs = CertDir::new(&[]);
    let dir = certs.dir();
    std::fs::write(dir.join("pass"), format!("{PASSWORD}\n")).expect("write");
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    let key = format!("{name}.key");
    let mut genpkey = vec!["genpkey"];
    genpkey.extend_from_slice(algorithm);
    genpkey.extend(["-aes-256-cbc", "-pass", "file:pass", "-out", &key]);
    if !openssl(dir, &genpkey) {
        return None;
    }
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    let req = [
        "req",
        "-new",
        "-key",
        &key,
        "-passin",
        "file:pass",
        "-subj",
        "/CN=localhost",
        "-out",
        &csr,
    ];
    assert!(openssl(dir, &req));
    let sign = [
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        &pem,
    ];
    assert!(openssl(dir, &sign));
    let text = std::fs::read_to_string(dir.join(&key)).expect("read key");
    assert!(
        text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{text}"
    );
    Some(certs)
}

#[test]
fn server_keys_encrypted_by_openssl_serve_tls() {
    let cases: [(&str, &[&str]); 2] = [
        (
            "ec",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
        (
            "rsa",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
    ];
    for (name, algorithm) in cases {
        let Some(certs) = openssl_encrypted_server(name, algorithm) else {
            return;
        };
        let (pem, key, pass) = (
            certs.arg(&format!("{name}.pem")),
            certs.arg(&format!("{name}.key")),
            certs.arg("pass"),
        );
        let srv =
            ServerProc::start_tls(&["--cert", &pem, "--key", &key, "--key-password-file", &pass]);
        let config = certs.client_config(TLS_ANY);
        tls_login_works(srv.tls_addr(), &config, "alice");
        assert!(
            !srv.log_text().contains("is not used"),
            "{}",
            srv.log_text()
        );
    }
}

#[test]
fn encrypted_key_start_errors_are_one_line() {
    let Some(certs) = openssl_encrypted_server(
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    ) else {
        return;
    };
    let dir = certs.dir();
    std::fs::write(dir.join("wrong"), "not the password\n").expect("write");
    std::fs::write(dir.join("empty"), "\n").expect("write");
    // openssl reads one file given to both -passin and -passout line by line.
    std::fs::copy(dir.join("pass"), dir.join("pass2")).expect("copy");
    // OpenSSL's legacy PEM encryption of the same key.
    assert!(openssl(
        dir,
        &[
            "ec",
            "-in",
            "ec.key",
            "-passin",
            "file:pass",
            "-aes256",
            "-passout",
            "file:pass2",
            "-out",
            "legacy.key",
        ],
    ));
    let (pem, key) = (certs.arg("ec.pem"), certs.arg("ec.key"));
    let legacy = certs.arg("legacy.key");
    let missing = certs.arg("no-such-file");
    let (wrong, empty) = (certs.arg("wrong"), certs.arg("empty"));
    let pair = ["--cert", pem.as_str(), "--key", key.as_str()];
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        // No password, and standard input is not a terminal.
        (vec![], vec![&key, "is encrypted", "--key-password-file"]),
        (
            vec!["--key-password-file", &wrong],
            vec![&key, "wrong password"],
        ),
        (
            vec!["--key-password-file", &missing],
            vec!["--key-password-file", &missing],
        ),
        (vec!["--key-password-file", &empty], vec![&empty, "empty"]),
    ];
    for (extra, needles) in &cases {
        let mut args = serve_tls_args(&pair);
        args.extend_from_slice(extra);
        let out = expect_start_failure(&args);
        eprintln!("refused: {}", one_error_line(&out, needles));
    }
    let pass = certs.arg("pass");
    let out = expect_start_failure(&serve_tls_args(&[
        "--cert",
        &pem,
        "--key",
        &legacy,
        "--key-password-file",
        &pass,
    ]));
    eprintln!(
        "refused: {}",
        one_error_line(&out, &[&legacy, "legacy", "openssl pkcs8"])
    );
}

#[test]
fn keys_encrypted_by_switchboard_certs_serve_mutual_tls() {
    let dir = TempDir::new("certs-encrypted");
    let pass = dir.join("pass");
    std::fs::write(&pass, format!("{PASSWORD}\n")).expect("write");
    let out_dir = dir.join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "certs",
            path_str(&out_dir),
            "--key-password-file",
            path_str(&pass),
        ];
        args.extend_from_slice(extra);
        run_bin_ok(&args, None, "")
    };
    run(&["--client", "alice"]);
    for key in ["ca.key", "server.key", "alice.key"] {
        let text = std::fs::read_to_string(out_dir.join(key)).expect("read");
        assert!(
            text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{key}: {text}"
        );
    }
    // A client later: the encrypted CA key is decrypted with the password,
    // and refused without it.
    let out = run_bin(
        &["certs", path_str(&out_dir), "--client", "bob"],
        None,
        EXIT_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("ca.key") && out.stderr.contains("--key-password-file"),
        "{}",
        out.stderr
    );
    run(&["--client", "bob"]);
    if have_program("openssl") {
        let passin = format!("file:{}", path_str(&pass));
        let key = out_dir.join("bob.key");
        assert!(openssl(
            dir.path(),
            &["pkey", "-in", path_str(&key), "-passin", &passin, "-noout"]
        ));
    }

    let ca = out_dir.join("ca.pem");
    let srv = ServerProc::start_tls(&[
        "--cert",
        path_str(&out_dir.join("server.pem")),
        "--key",
        path_str(&out_dir.join("server.key")),
        "--key-password-file",
        path_str(&pass),
        "--client-ca",
        path_str(&ca),
        "--auth",
        "cert",
    ]);
    for name in ["alice", "bob"] {
        let cert = out_dir.join(format!("{name}.pem"));
        let key = switchboard::certs::load_key_with_password(
            &out_dir.join(format!("{name}.key")),
            Some(PASSWORD.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let chain = switchboard::certs::load_certs(&cert).unwrap_or_else(|e| panic!("{e}"));
        let roots = switchboard::certs::load_roots(&ca).unwrap_or_else(|e| panic!("{e}"));
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate");
        let mut c = TlsClient::connect(srv.tls_addr(), &Arc::new(config), name);
        assert!(c.result("WHO 0").contains(&name.to_owned()));
    }
}

/// The prompt: on a terminal (a pty made by Python's `pty` module) the server
/// asks for the password without a password file; a wrong one is a start
/// error.
#[test]
fn encrypted_key_password_typed_at_a_terminal_prompt() {
    if !have_program("python3") {
        eprintln!("SKIP: python3 is not installed (.ci/run installs it)");
        return;
    }
    let Some(certs) = openssl_encrypted_server(
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    ) else {
        return;
    };
    const SCRIPT: &str = r#"
import os, pty, select, sys, termios, time
password, want = sys.argv[1].encode(), sys.argv[2].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[3], sys.argv[3:])
buf = b""
def read_until(needle):
    global buf
    deadline = time.time() + 20
    while needle not in buf:
        if time.time() > deadline:
            sys.exit("timed out waiting for %r; got %r" % (needle, buf))
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                sys.exit("end of output waiting for %r; got %r" % (needle, buf))
            buf += data
read_until(b"Password for key file")
# Type only once the server has turned echo off, as a person would see it.
deadline = time.time() + 20
while termios.tcgetattr(fd)[3] & termios.ECHO:
    if time.time() > deadline:
        sys.exit("echo is still on after the prompt")
    time.sleep(0.02)
os.write(fd, password + b"\n")
read_until(want)
try:
    os.kill(pid, 15)
except ProcessLookupError:
    pass
os.waitpid(pid, 0)
sys.stdout.write(buf.decode("utf-8", "replace"))
"#;
    let (pem, key) = (certs.arg("ec.pem"), certs.arg("ec.key"));
    let mut server = vec![BIN];
    server.extend(serve_tls_args(&["--cert", &pem, "--key", &key]));
    for (password, want) in [
        (PASSWORD, "tls listening on"),
        ("Tr0ub4dor&3", "wrong password"),
    ] {
        let mut args = vec!["-c", SCRIPT, password, want];
        args.extend_from_slice(&server);
        let out = Command::new("python3")
            .args(&args)
            .current_dir(certs.dir())
            .output()
            .expect("run python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "typing {password:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !stdout.contains(password),
            "the password was echoed: {stdout}"
        );
    }
}
