#!/usr/bin/env python3
"""What the views of several loops cost (issue 15, docs/scaling.md).

One session subscribes to 200,000 open groups; once every loop has built its
view of them (a session on each loop sees the user in the last group), the
server's RSS growth is printed.

    cargo build --release
    python3 benches/view_memory.py 1   # then 2, 4
"""
import os, socket, time, subprocess, sys
th=sys.argv[1]
binary=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "switchboard")
srv=subprocess.Popen([binary,"serve","--listen","127.0.0.1:17470","--tls-listen","off","--ws-listen","off","--wss-listen","off","--open-groups","--max-subscriptions","300000","--max-open-groups","300000","--threads",th,"--log-level","warn"])
time.sleep(0.5)
def rss(): return int([l for l in open(f"/proc/{srv.pid}/status") if l.startswith("VmRSS")][0].split()[1])
def conn():
    s=socket.create_connection(("127.0.0.1",17470)); return s
r0=rss()
big=conn(); big.sendall(b"USER 0 big\n")
cmds=[]; g=1
while g<=200000:
    last=min(g+63,200000); cmds.append("SUBSCRIBE 0 "+" ".join(str(x) for x in range(g,last+1))+"\n"); g=last+1
big.sendall("".join(cmds).encode()); buf=b""
while buf.count(b"ACK")<len(cmds)+1: buf+=big.recv(1<<20)
# settle: a session per loop
for i in range(int(th)):
    c=conn(); c.sendall(b"USER 0 s%d\n"%i); c.recv(100)
    while True:
        c.sendall(b"WHO 0 200000\n"); d=c.recv(1000)
        if b"big" in d: break
        time.sleep(0.05)
time.sleep(0.5)
print("threads",th,"rss growth KiB",rss()-r0)
srv.kill()
