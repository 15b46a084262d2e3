//! Frame decode and encode throughput (issue 5, "The instruments" item 2).
//!
//! Two streams: many small frames (`PUBLISH 64 1\n` + 64 bytes, the fan-out
//! scenario's frame) and a few 64 KiB frames. `decode` walks a stream as the
//! reactor does (decode at the front, drop `consumed`, repeat); `encode`
//! appends the same frames to a reused buffer. Throughput is in stream bytes.
//!
//!     cargo bench --bench decode
//!     cargo test --benches        # smoke mode: each benchmark runs once

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard::proto::frame::{DEFAULT_MAX_PAYLOAD, encode};
use switchboard::proto::{Decoded, decode};

/// A stream case: name, payload size, frame count (about 64-128 KiB of stream).
const CASES: [(&str, usize, usize); 2] = [("64B", 64, 1024), ("64KiB", 64 << 10, 2)];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// `count` frames `PUBLISH len 1\n<payload>`, back to back.
fn stream(len: usize, count: usize) -> Vec<u8> {
    let body = payload(len);
    let mut out = BytesMut::new();
    for _ in 0..count {
        encode(&mut out, "PUBLISH", &[b"1"], &body);
    }
    out.to_vec()
}

/// Decodes every frame in `buf`; returns the number of frames and payload bytes.
fn decode_all(mut buf: &[u8]) -> (usize, usize) {
    let (mut frames, mut bytes) = (0, 0);
    loop {
        match decode(buf, DEFAULT_MAX_PAYLOAD) {
            Ok(Decoded::Frame { frame, consumed }) => {
                frames += 1;
                bytes += black_box(frame.payload()).len();
                buf = &buf[consumed..];
            }
            Ok(Decoded::Incomplete { .. }) => return (frames, bytes),
            Err(e) => panic!("bench stream does not decode: {e:?}"),
        }
    }
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, len, count) in CASES {
        let input = stream(len, count);
        assert_eq!(decode_all(&input), (count, count * len));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
            b.iter(|| decode_all(black_box(input)));
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, len, count) in CASES {
        let body = payload(len);
        let total = stream(len, count).len();
        let mut out = BytesMut::with_capacity(total);
        group.throughput(Throughput::Bytes(total as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                out.clear();
                for _ in 0..count {
                    encode(&mut out, "PUBLISH", &[b"1"], black_box(body));
                }
                black_box(out.len())
            });
        });
        assert_eq!(out.len(), total);
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
