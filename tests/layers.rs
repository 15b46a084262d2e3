//! The arrows point down: which module of `src/` may name which, checked
//! from the source (docs/architecture.md, "Layers and imports"). Any
//! `crate::MODULE` path counts, in code or in a doc link; test-only files
//! (`tests.rs`, `test_util.rs`) do not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module and the modules it may name. A module not listed may name
/// nothing of the crate.
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("proto", &["error"]),
    ("acl", &["proto", "error"]),
    ("buf", &[]),
    ("atomic_file", &[]),
    ("logging", &[]),
    ("passwd", &["atomic_file"]),
    // The connection table wraps frames in WebSocket messages (ws).
    ("conn", &["buf", "ws"]),
    ("certs", &["atomic_file", "conn", "proto"]),
    ("tls", &["buf", "certs", "conn"]),
    ("broker", &["acl", "conn", "error", "proto", "buf"]),
    ("auth", &["broker", "conn", "passwd"]),
    ("transport", &["buf", "conn", "tls", "ws"]),
    // The sans-IO WebSocket handshake and frames: nothing of the crate.
    ("ws", &[]),
    ("reactor", &["buf", "conn", "tls", "transport"]),
    ("client", &["certs", "conn", "error", "proto", "tls", "ws"]),
    // Direct peer messaging (protocol.md section 6): frames, ERR codes.
    ("peer", &["error", "proto"]),
    ("handler", &["acl", "broker", "conn", "proto", "reactor"]),
    ("framed", &["conn", "reactor", "buf"]),
    // UDP services: the reactor's datagram-service trait and socket options.
    ("datagram", &["reactor"]),
    ("metrics", &["broker", "conn", "reactor"]),
    // The directory's probes: the broker's requests as connections of the loop.
    ("probe", &["broker", "conn", "proto", "reactor"]),
    // Sans-IO Redis (RESP2, command and subscriber links, cluster slots).
    ("redis", &[]),
    // The cluster engine's transport: Redis connections of the loop.
    // (TLS client sessions for `rediss://`.)
    ("engine", &["conn", "reactor", "redis", "tls", "transport"]),
    // How a broker reaches the other members: other loops, or the engine.
    ("bus", &["broker", "engine", "reactor"]),
    (
        "server",
        &[
            "auth",
            "broker",
            "bus",
            "engine",
            "conn",
            "handler",
            "proto",
            "reactor",
            "tls",
            "error",
            "logging",
            "metrics",
            "probe",
            "transport",
        ],
    ),
    // Feature `fuzzing` only: the fuzz targets' check functions, beside
    // everything they drive.
    (
        "fuzzing",
        &[
            "acl",
            "broker",
            "buf",
            "client",
            "conn",
            "error",
            "passwd",
            "peer",
            "proto",
            "redis",
            "tls",
            "transport",
            "ws",
        ],
    ),
    (
        "event_loop",
        &[
            "datagram",
            "framed",
            "handler",
            "reactor",
            "server",
            "tls",
            "conn",
            "transport",
        ],
    ),
];

fn top_module(path: &Path, src: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::NAME` references in `text`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_module_names_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let Some(top) = top_module(file, &src) else {
            continue;
        };
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(top.as_str(), "lib" | "bin") || name == "tests.rs" || name == "test_util.rs" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for m in named_modules(&text) {
            if m == top {
                continue;
            }
            let ok = allowed
                .get(top.as_str())
                .is_some_and(|a| a.contains(m.as_str()));
            if !ok {
                wrong.push(format!("{} names crate::{m}", file.display()));
            }
            graph.entry(top.clone()).or_default().insert(m);
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows pointing up or sideways:\n{}",
        wrong.join("\n")
    );
    // And no cycle, whatever the table above says.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        assert!(
            !path.iter().any(|p| p == m),
            "import cycle: {} -> {m}",
            path.join(" -> ")
        );
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}
