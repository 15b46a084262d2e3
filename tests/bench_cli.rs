//! `switchboard bench` (cli.md "switchboard bench", issue 5): every scenario
//! once, at a tiny size, against a real server, in `--json` mode; and the
//! one-line failure when nothing listens. Smoke tests of the code paths, not
//! measurements: no figure is checked except that nothing was lost.

mod common;

use std::time::Duration;

use common::*;

/// Bench runs are bounded by their flags; this is the test's own limit.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A minimal JSON value, enough to check the report's shape.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Self::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    #[track_caller]
    fn num(&self, section: &str, key: &str) -> f64 {
        match self.get(section).and_then(|s| s.get(key)) {
            Some(Self::Num(n)) => *n,
            other => panic!("{section}.{key} is not a number: {other:?} in {self:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        let rest = &self.s[self.i.min(self.s.len())..];
        for (word, v) in [
            ("null", Json::Null),
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
        ] {
            if rest.starts_with(word.as_bytes()) {
                self.i += word.len();
                return Ok(v);
            }
        }
        match rest.first() {
            Some(b'"') => self.string().map(Json::Str),
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    fields.push((k, self.value()?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(format!("bad object at byte {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("bad array at byte {}", self.i)),
                    }
                }
            }
            _ => {
                let len = rest
                    .iter()
                    .take_while(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
                    .count();
                let text = std::str::from_utf8(&rest[..len]).map_err(|e| e.to_string())?;
                let n = text
                    .parse::<f64>()
                    .map_err(|_| format!("bad value at byte {}", self.i))?;
                self.i += len;
                Ok(Json::Num(n))
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("bad escape")?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("bad \\u")?;
                            let code = u32::from_str_radix(
                                std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                16,
                            )
                            .map_err(|e| e.to_string())?;
                            self.i += 4;
                            let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                            out.extend_from_slice(ch.to_string().as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }
}

#[track_caller]
fn parse_json(text: &str) -> Json {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p
        .value()
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    p.ws();
    assert_eq!(
        p.i,
        text.len(),
        "trailing bytes after the JSON object: {text:?}"
    );
    v
}

/// Runs `switchboard bench ARGS --json`, asserts exit 0 and one JSON object
/// on one stdout line naming `scenario`, and returns it.
#[track_caller]
fn bench(scenario: &str, args: &[&str]) -> Json {
    let mut all = vec!["bench", scenario];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run_bin(&all, None, RUN_LIMIT);
    assert!(
        out.status.success(),
        "`switchboard {}` failed with {}\nstdout:\n{}\nstderr:\n{}",
        all.join(" "),
        out.status,
        out.stdout,
        out.stderr
    );
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line of JSON, got {:?}",
        out.stdout
    );
    let json = parse_json(lines[0]);
    assert!(matches!(json, Json::Obj(_)), "not an object: {json:?}");
    assert_eq!(json.get("scenario"), Some(&Json::Str(scenario.into())));
    assert!(matches!(json.get("parameters"), Some(Json::Obj(_))));
    assert!(matches!(json.get("results"), Some(Json::Obj(_))));
    json
}

fn tls_server(certs: &CertDir, extra: &[&str]) -> ServerProc {
    let mut args = certs.server_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProc::start_tls(&refs)
}

#[test]
fn density_plain_reports_memory_per_connection() {
    let srv = ServerProc::start(&[]);
    let (addr, pid) = (srv.addr.to_string(), srv.pid().to_string());
    let j = bench(
        "density",
        &[
            &addr,
            "--connections",
            "50",
            "--server-pid",
            &pid,
            "--settle",
            "0.1",
        ],
    );
    assert_eq!(j.num("results", "connections"), 50.0);
    j.num("results", "server_bytes_per_connection");
    assert!(j.num("results", "server_rss_after_kib") > 0.0);
}

#[test]
fn density_tls_and_mutual_tls() {
    let certs = CertDir::new(&["alice"]);
    let ca = certs.arg("ca.pem");
    let srv = tls_server(&certs, &[]);
    let addr = srv.tls_addr().to_string();
    let j = bench(
        "density",
        &[
            &addr,
            "--tls",
            "--ca",
            &ca,
            "--connections",
            "20",
            "--settle",
            "0",
        ],
    );
    assert_eq!(j.num("results", "connections"), 20.0);

    let args = certs.mutual_args("required");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mutual = ServerProc::start_tls(&refs);
    let addr = mutual.tls_addr().to_string();
    let (cert, key) = (certs.arg("alice.pem"), certs.arg("alice.key"));
    // Mutual TLS (the server requires a client certificate; login by USER).
    let j = bench(
        "density",
        &[
            &addr,
            "--tls",
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--connections",
            "3",
            "--settle",
            "0",
        ],
    );
    assert_eq!(j.num("results", "connections"), 3.0);
}

#[test]
fn fanout_loses_nothing() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let (addr, pid) = (srv.addr.to_string(), srv.pid().to_string());
    let j = bench(
        "fanout",
        &[
            &addr,
            "--subscribers",
            "5",
            "--payload",
            "64",
            "--duration",
            "0.5",
            "--server-pid",
            &pid,
        ],
    );
    let published = j.num("results", "published");
    assert!(published > 0.0, "{j:?}");
    assert_eq!(j.num("results", "deliveries"), published * 5.0, "{j:?}");
    assert_eq!(j.num("results", "loss"), 0.0, "{j:?}");
    j.num("results", "latency_p99_us");
    j.num("results", "server_cpu_us_per_delivery");

    let j = bench(
        "fanout",
        &[
            &addr,
            "--subscribers",
            "3",
            "--duration",
            "0.3",
            "--rate",
            "200",
            "--group",
            "1",
        ],
    );
    assert_eq!(j.num("results", "loss"), 0.0, "{j:?}");
}

#[test]
fn echo_plain_and_tls() {
    let certs = CertDir::new(&[]);
    let ca = certs.arg("ca.pem");
    let srv = tls_server(&certs, &[]);
    let addr = srv.addr.to_string();
    let j = bench("echo", &[&addr, "--connections", "3", "--duration", "0.3"]);
    assert!(j.num("results", "round_trips") > 0.0, "{j:?}");
    let tls_addr = srv.tls_addr().to_string();
    let j = bench(
        "echo",
        &[
            &tls_addr,
            "--tls",
            "--ca",
            &ca,
            "--connections",
            "2",
            "--duration",
            "0.3",
            "--payload",
            "100",
        ],
    );
    assert!(j.num("results", "round_trips_per_s") > 0.0, "{j:?}");
}

#[test]
fn handshake_full_and_resumed() {
    let certs = CertDir::new(&[]);
    let ca = certs.arg("ca.pem");
    let srv = tls_server(&certs, &[]);
    let (addr, pid) = (srv.tls_addr().to_string(), srv.pid().to_string());
    let j = bench(
        "handshake",
        &[
            &addr,
            "--ca",
            &ca,
            "--duration",
            "0.3",
            "--server-pid",
            &pid,
        ],
    );
    assert!(j.num("results", "handshakes") > 0.0, "{j:?}");
    assert_eq!(j.num("results", "resumed"), 0.0, "{j:?}");
    j.num("results", "server_cpu_us_per_handshake");
    let j = bench(
        "handshake",
        &[&addr, "--ca", &ca, "--duration", "0.3", "--resume"],
    );
    assert!(j.num("results", "handshakes") >= 2.0, "{j:?}");
    assert!(j.num("results", "resumed") >= 1.0, "{j:?}");
}

#[test]
fn unreachable_server_is_one_line_and_status_1() {
    // A port nothing listens on: bound, then released.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for scenario in ["density", "fanout", "echo"] {
        let out = run_bin(&["bench", scenario, &addr], None, RUN_LIMIT);
        assert_eq!(out.status.code(), Some(1), "{scenario}: {out:?}");
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "{scenario}: {lines:?}");
        assert!(lines[0].contains("cannot connect"), "{lines:?}");
        assert!(out.stdout.trim().is_empty(), "{out:?}");
    }
    let out = run_bin(
        &["bench", "handshake", &addr, "--ca", "/nonexistent/ca.pem"],
        None,
        RUN_LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stderr_lines().len(), 1, "{out:?}");
}
