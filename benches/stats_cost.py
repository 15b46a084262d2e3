#!/usr/bin/env python3
"""What a STATS costs the server with many users online (issue 15).

N connections log in as N distinct users; one more asks STATS 20 times, one
after the other (round trip), then 500 of the N send one STATS each at once
and the server's CPU time for them is read from /proc (10 ms ticks).

    cargo build --release
    python3 benches/stats_cost.py 1 15000   # then 2 (loops), and other N
"""
import os, resource, socket, subprocess, sys, time

resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
threads, n = sys.argv[1], int(sys.argv[2])
port = 17590
binary = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "switchboard")
srv = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--tls-listen", "off",
                        "--ws-listen", "off", "--wss-listen", "off", "--threads", threads,
                        "--max-connections", "20000", "--log-level", "warn"],
                       stderr=subprocess.DEVNULL)
try:
    time.sleep(0.5)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"USER 0 user%d\n" % i)
        socks.append(s)
    for s in socks:
        s.recv(100)
    asker = socket.create_connection(("127.0.0.1", port))
    asker.sendall(b"USER 0 asker\n")
    asker.recv(100)

    def stats(c):
        c.sendall(b"STATS 0\n")
        buf = b""
        while buf.count(b"\n") < 25:
            buf += c.recv(65536)
        return buf

    stats(asker)
    time.sleep(0.3)
    rtt = []
    for _ in range(20):
        t = time.perf_counter()
        reply = stats(asker)
        rtt.append((time.perf_counter() - t) * 1e3)
    rtt.sort()
    users = [l.decode() for l in reply.split(b"\n") if l.startswith(b"users=")]

    def cpu():
        f = open(f"/proc/{srv.pid}/stat").read().split()
        return (int(f[13]) + int(f[14])) * 1000 / os.sysconf("SC_CLK_TCK")

    c0, t = cpu(), time.perf_counter()
    for s in socks[:500]:
        s.sendall(b"STATS 0\n")
    for s in socks[:500]:
        buf = b""
        while buf.count(b"\n") < 25:
            buf += s.recv(65536)
    wall, used = (time.perf_counter() - t) * 1e3, cpu() - c0
    print(f"--threads {threads}, {n} users ({users[0]}): STATS round trip median {rtt[10]:.2f} ms, "
          f"max {rtt[-1]:.2f} ms; 500 at once: {wall:.1f} ms wall, {used:.0f} ms CPU, "
          f"{used / 500:.3f} ms CPU each")
finally:
    srv.terminate()
    srv.wait()
