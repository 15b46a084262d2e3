#!/usr/bin/env python3
"""How evenly SO_REUSEPORT spreads connections over K listening sockets,
against the round-robin hand-off `--threads K` uses (issue 15: "measure
which spreads better").

The kernel picks a SO_REUSEPORT socket by a hash of the connection's
addresses and ports, so the spread is as even as the hash makes it. This
binds K sockets to one loopback port, opens N connections from 127.0.0.1
(then from N different source addresses of 127.0.0.0/8, as clients from
many hosts would), accepts each on whichever socket the kernel chose, and
reports per-socket counts. Round-robin gives every loop N/K exactly, and
two consecutive connections never the same loop.

    python3 benches/reuseport_spread.py [N] [K ...]     (default 1000; 2 4)
"""
import select
import socket
import statistics
import sys


def spread(n, k, many_sources):
    listeners = []
    port = 0
    for _ in range(k):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        port = s.getsockname()[1]
        s.listen(1024)
        s.setblocking(False)
        listeners.append(s)
    counts = [0] * k
    order = []
    for i in range(n):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if many_sources:
            c.bind((f"127.{1 + i // 65025 % 200}.{i // 255 % 255}.{1 + i % 254}", 0))
        c.connect(("127.0.0.1", port))
        # Accept it wherever the kernel queued it.
        while True:
            ready, _, _ = select.select(listeners, [], [], 1.0)
            if ready:
                break
        got = None
        for j, s in enumerate(listeners):
            try:
                a, _ = s.accept()
            except BlockingIOError:
                continue
            a.close()
            counts[j] += 1
            got = j
            break
        c.close()
        order.append(got)
    for s in listeners:
        s.close()
    same_as_previous = sum(1 for a, b in zip(order, order[1:]) if a == b)
    return counts, same_as_previous


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    ks = [int(x) for x in sys.argv[2:]] or [2, 4]
    print(f"{n} connections, one at a time, loopback")
    print("| sockets | sources | per socket | max / mean | stdev / mean | consecutive on the same socket |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k in ks:
        for many in (False, True):
            counts, same = spread(n, k, many)
            mean = n / k
            print(
                f"| {k} | {'many addresses' if many else '127.0.0.1'} | {counts} | "
                f"{max(counts) / mean:.2f} | {statistics.pstdev(counts) / mean:.3f} | "
                f"{same} of {n - 1} ({100 * same / (n - 1):.0f}%) |"
            )
        print(f"| {k} | round-robin hand-off | {[n // k + (1 if j < n % k else 0) for j in range(k)]} | "
              f"{(n // k + (1 if n % k else 0)) / (n / k):.2f} | 0.000 | 0 of {n - 1} (0%) |")


if __name__ == "__main__":
    main()
