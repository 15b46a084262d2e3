//! Replays the committed fuzz inputs (the hand-written seeds in
//! `fuzz/seeds/<target>/` and the minimized corpus the fuzzer grew from them
//! in `fuzz/corpus/<target>/`, crash inputs included) through the
//! same check functions the fuzz targets call (`switchboard::fuzzing`), on
//! stable Rust, so a regression on any input the fuzzer once found shows up
//! in `cargo test`. See docs/fuzzing.md.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "corpus"] {
        let dir = fuzz.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        files.extend(entries.map(|e| e.expect("directory entry").path()));
    }
    files.sort();
    assert!(!files.is_empty(), "no seeds nor corpus for {target}");
    for file in files {
        let data = std::fs::read(&file).expect("corpus file");
        let name = file.display().to_string();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target}: {name} fails");
        }
    }
}

#[test]
fn cluster_notes() {
    replay("cluster_notes", switchboard::fuzzing::cluster_notes);
}

#[test]
fn frame_decoder() {
    replay("frame_decoder", switchboard::fuzzing::frame_decoder);
}

#[test]
fn broker() {
    replay("broker", switchboard::fuzzing::broker);
}

#[test]
fn tls_server() {
    replay("tls_server", switchboard::fuzzing::tls_server);
}

#[test]
fn client_session() {
    replay("client_session", switchboard::fuzzing::client_session);
}

#[test]
fn passwd_file() {
    replay("passwd_file", switchboard::fuzzing::passwd_file);
}

#[test]
fn acl_file() {
    replay("acl_file", switchboard::fuzzing::acl_file);
}

#[test]
fn ws() {
    replay("ws", switchboard::fuzzing::ws);
}

#[test]
fn peer_session() {
    replay("peer_session", switchboard::fuzzing::peer_session);
}

#[test]
fn ws_transport() {
    replay("ws_transport", switchboard::fuzzing::ws_transport);
}

#[test]
fn resp() {
    replay("resp", switchboard::fuzzing::resp);
}

/// One input, e.g. a crash the fuzzer wrote:
/// `FUZZ_TARGET=broker FUZZ_INPUT=fuzz/artifacts/broker/crash-... cargo test
/// --test fuzz_corpus one_input -- --ignored` (with `SWITCHBOARD_FUZZ_TRACE=1`
/// to see the operations).
#[test]
#[ignore = "needs FUZZ_TARGET and FUZZ_INPUT"]
fn one_input() {
    let target = std::env::var("FUZZ_TARGET").expect("FUZZ_TARGET");
    let input = std::env::var("FUZZ_INPUT").expect("FUZZ_INPUT");
    let data = std::fs::read(&input).expect("FUZZ_INPUT file");
    let check: fn(&[u8]) = match target.as_str() {
        "frame_decoder" => switchboard::fuzzing::frame_decoder,
        "broker" => switchboard::fuzzing::broker,
        "cluster_notes" => switchboard::fuzzing::cluster_notes,
        "tls_server" => switchboard::fuzzing::tls_server,
        "client_session" => switchboard::fuzzing::client_session,
        "passwd_file" => switchboard::fuzzing::passwd_file,
        "acl_file" => switchboard::fuzzing::acl_file,
        "ws" => switchboard::fuzzing::ws,
        "ws_transport" => switchboard::fuzzing::ws_transport,
        "peer_session" => switchboard::fuzzing::peer_session,
        "resp" => switchboard::fuzzing::resp,
        other => panic!("unknown target {other}"),
    };
    check(&data);
}
