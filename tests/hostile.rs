//! Hostile peers from issue 2's "Bad input": a 10 MB header, a frame trickled
//! byte by byte, a peer that never reads. Each costs only its own connection.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::ServerProc;

/// A well-behaved client gets a PING answered within `limit`, several times.
#[track_caller]
fn assert_responsive(client: &mut common::Client, limit: Duration) {
    for _ in 0..5 {
        let start = Instant::now();
        client.ping();
        let took = start.elapsed();
        assert!(took < limit, "a round trip took {took:?}");
    }
}

#[test]
fn ten_megabyte_header_is_refused_and_others_go_on() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut bob = srv.login("bob");
    let mut hog = srv.login("hog");
    let mut writer = hog.stream().try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let mut header = b"PUBLISH 5 ".to_vec();
        header.resize(10 << 20, b'a');
        // The server closes mid-way; the error is expected.
        let _ = writer.write_all(&header);
    });
    hog.expect_err("bad-frame");
    assert_responsive(&mut bob, Duration::from_secs(1));
    hog.expect_closed();
    sender.join().expect("writer thread");
    assert_responsive(&mut bob, Duration::from_secs(1));
}

#[test]
fn trickled_frame_costs_only_its_own_connection() {
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut bob = srv.login("bob");
    bob.ack("SUBSCRIBE 0 1");
    let mut slow = srv.login("slow");
    let frame = b"PUBLISH 11 1\ntrickled in";
    for (i, byte) in frame.iter().enumerate() {
        slow.send(std::slice::from_ref(byte));
        std::thread::sleep(Duration::from_millis(20));
        if i % 5 == 0 {
            assert_responsive(&mut bob, Duration::from_secs(1));
        }
    }
    slow.expect_ack();
    bob.expect_published("slow", &["1"], b"trickled in");
}

#[test]
fn peer_that_never_reads_is_paused_not_served_at_others_cost() {
    const FRAMES: usize = 100_000;
    let srv = ServerProc::start(&["--group", "1=general"]);
    let mut bob = srv.login("bob");
    let mut greedy = srv.login("greedy");
    // 100,000 HELLOs pipelined without reading: about 8 MB of replies, far
    // more than socket buffers hold, so the server must stop reading it.
    let mut writer = greedy.stream().try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let burst = b"HELLO 0\n".repeat(FRAMES);
        writer.write_all(&burst).map_err(|e| e.to_string())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_responsive(&mut bob, Duration::from_secs(1));
    // Once it reads, it gets every reply, in order, none lost.
    for i in 0..FRAMES {
        let lines = greedy.expect_result_lines();
        assert!(
            lines.contains(&"server=switchboard".to_string()),
            "reply {i}: {lines:?}"
        );
    }
    sender
        .join()
        .expect("writer thread")
        .expect("all frames written");
    greedy.ping();
    assert_responsive(&mut bob, Duration::from_secs(1));
}
