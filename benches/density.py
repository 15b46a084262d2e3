#!/usr/bin/env python3
"""Idle-connection footprint of a running switchboard server.

Opens N plain TCP connections, logs each in (USER 0 uNNNN), waits for every
ACK, then reads the server's resident memory from /proc/PID/status and
reports the growth per connection. Loopback only; bounded in count and time.

    cargo build --release
    ./target/release/switchboard serve --tls-listen off --ws-listen off --wss-listen off &
    python3 benches/density.py --pid $! --count 1000
    python3 benches/density.py --pid $! --count 1000 --addr 127.0.0.1:7421 --tls

(`switchboard bench density` will replace this script.)
"""
import argparse
import socket
import ssl
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.1:7420")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--tls", action="store_true", help="connect with TLS")
    ap.add_argument("--cafile", default="certs/ca.pem", help="CA to trust with --tls")
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.cafile)
    before = rss_kib(args.pid)
    conns = []
    deadline = time.time() + 120
    for i in range(args.count):
        # Spread over 127.0.0.x sources so ephemeral ports never run out.
        s = socket.socket()
        s.bind((f"127.0.0.{1 + i % 200}", 0))
        s.connect((host, int(port)))
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(b"USER 0 u%d\n" % i)
        conns.append(s)
    for s in conns:
        s.settimeout(max(1.0, deadline - time.time()))
        got = b""
        while not got.endswith(b"logged in"):
            chunk = s.recv(64)
            if not chunk:
                sys.exit("server closed a connection")
            got += chunk
    time.sleep(args.settle)
    after = rss_kib(args.pid)
    per = (after - before) * 1024 / args.count
    print(f"connections={args.count} rss_before_kib={before} rss_after_kib={after} "
          f"bytes_per_connection={per:.0f}")
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
