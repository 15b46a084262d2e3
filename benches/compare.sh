#!/usr/bin/env bash
# Side-by-side: switchboard, Mosquitto, Redis and NATS measured by one tool
# (`switchboard bench`) in one way, on loopback, each server started fresh with
# a config written here and stopped by its process id. Each is measured over
# plain TCP, then fanned out to over TLS (every connection, with switchboard's
# development certificates). Writes the tables into docs/benchmarks.md between
# the compare markers, and the raw JSON into target/compare/.
#
#   bash benches/compare.sh [SECONDS_PER_FANOUT]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
out=target/compare
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.err

need=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || need+=(mosquitto)
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || need+=(nats-server)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

cargo build --release -q
B=$PWD/target/release/switchboard
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
# Like wait_port, but gives up at once if the server ($pid) has exited.
wait_up() {
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

scenarios() { # name target addr
  local name=$1 target=$2 addr=$3
  "$B" bench density --target "$target" "$addr" --connections 10000 --server-pid "$pid" --json > "$out/$name-density.json"
  "$B" bench fanout --target "$target" "$addr" --subscribers 100 --payload 64 --duration "$secs" --server-pid "$pid" --json > "$out/$name-fanout100.json"
  "$B" bench fanout --target "$target" "$addr" --subscribers 1000 --payload 64 --duration "$secs" --server-pid "$pid" --json > "$out/$name-fanout1000.json"
  "$B" bench fanout --target "$target" "$addr" --subscribers 1000 --payload 64 --duration "$secs" --rate 1000 --server-pid "$pid" --json > "$out/$name-rate1000.json"
  "$B" bench fanout --target "$target" "$addr" --subscribers 1000 --payload 64 --duration "$secs" --rate 100 --server-pid "$pid" --json > "$out/$name-rate100.json"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
ca=$work/certs/ca.pem
# Fan-out to 1,000 subscribers, every connection over TLS. A run that fails
# is recorded (its error in place of the figures), not fatal: the table says so.
tls_fanout() { # name target addr
  "$B" bench fanout --target "$2" "$3" --tls --ca "$ca" --subscribers 1000 --payload 64 --duration "$secs" --server-pid "$pid" --json > "$out/$1-tls-fanout1000.json" 2> "$out/$1-tls-fanout1000.err" \
    || note "$1" "failed: $(head -1 "$out/$1-tls-fanout1000.err")"
}
# Records why there are no TLS figures for $1.
note() { python3 -c 'import json, sys; print(json.dumps({"note": sys.argv[1]}))' "$2" > "$out/$1-tls-fanout1000.json"; }
# Starts a peer with TLS (the command after the first four arguments, its
# output to LOG) and runs tls_fanout; a build without TLS refuses the
# configuration and exits, which the table reports.
peer_tls() { # name target port log command...
  local name=$1 target=$2 port=$3 log=$4; shift 4
  "$@" > "$log" 2>&1 & pid=$!
  if wait_up "$port"; then
    tls_fanout "$name" "$target" "127.0.0.1:$port"; stop
  else
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
    note "$name" "did not start with TLS (no TLS in this build?): $(grep -v '^\s*$' "$log" | tail -1)"
  fi
}

# switchboard (plain, then TLS density and handshakes)
(cd "$work" && exec "$B" serve --log-level warn --group 1=general --max-connections 20000) & pid=$!
wait_port 7420; wait_port 7421
scenarios switchboard switchboard 127.0.0.1:7420
# A fresh server for TLS density: heap freed by the fan-out runs would be
# reused by the new connections and hide part of their cost.
stop
(cd "$work" && exec "$B" serve --log-level warn --group 1=general --max-connections 20000) & pid=$!
wait_port 7420; wait_port 7421
"$B" bench density 127.0.0.1:7421 --tls --ca "$work/certs/ca.pem" --connections 10000 --server-pid "$pid" --json > "$out/switchboard-tls-density.json"
# Handshakes 16 at a time, so the server's CPU per handshake is a busy
# server's, not mostly waking up for each flight of one client.
hs() { "$B" bench handshake 127.0.0.1:7421 --ca "$work/certs/ca.pem" --duration "$secs" --concurrency 16 --server-pid "$pid" --json "$@"; }
hs > "$out/switchboard-handshake.json"
hs --resume > "$out/switchboard-resume.json"
hs --tls12 > "$out/switchboard-handshake12.json"
hs --tls12 --resume > "$out/switchboard-resume12.json"
tls_fanout switchboard switchboard 127.0.0.1:7421
stop

# switchboard over WebSocket (issue 12): idle connections on fresh servers,
# as for TLS, then fan-out to 1,000 subscribers with every connection over
# ws, then over wss.
sb() { (cd "$work" && exec "$B" serve --log-level warn --group 1=general --max-connections 20000) & pid=$!; wait_port 7422; wait_port 7423; }
sb; "$B" bench density --ws 127.0.0.1:7422 --connections 10000 --server-pid "$pid" --json > "$out/switchboard-ws-density.json"; stop
sb; "$B" bench density --ws --tls 127.0.0.1:7423 --ca "$ca" --server-name localhost --connections 10000 --server-pid "$pid" --json > "$out/switchboard-wss-density.json"; stop
sb
"$B" bench fanout --ws 127.0.0.1:7422 --subscribers 1000 --payload 64 --duration "$secs" --server-pid "$pid" --json > "$out/switchboard-ws-fanout1000.json"
"$B" bench fanout --ws --tls 127.0.0.1:7423 --ca "$ca" --server-name localhost --subscribers 1000 --payload 64 --duration "$secs" --server-pid "$pid" --json > "$out/switchboard-wss-fanout1000.json"
stop

# Several loops and two nodes (issue 15): the bench starts these servers
# itself (`serve --threads N`, and redis-server with two `--cluster` nodes),
# on free loopback ports, and stops them.
for n in 100 1000; do
  "$B" bench fanout --threads 1 --subscribers "$n" --payload 64 --duration "$secs" --json > "$out/threads1-fanout$n.json"
  for layout in spread same cross; do
    "$B" bench fanout --threads 2 --layout "$layout" --subscribers "$n" --payload 64 --duration "$secs" --json > "$out/threads2-$layout-fanout$n.json"
  done
done
"$B" bench cluster --subscribers 100 --payload 64 --duration "$secs" --json > "$out/cluster.json"
"$B" bench cluster --subscribers 100 --payload 64 --duration "$secs" --rate 1000 --json > "$out/cluster-rate1000.json"

# Mosquitto (MQTT 3.1.1, QoS 0)
printf 'listener 18830 127.0.0.1\nallow_anonymous true\nmax_connections -1\n' > "$work/mosquitto.conf"
"$mosquitto_bin" -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 & pid=$!
wait_port 18830; scenarios mosquitto mqtt 127.0.0.1:18830; stop
# Mosquitto reads its certificate after dropping root for `user` (default
# mosquitto, who cannot read $work): it stays the user running this script.
printf 'user %s\nlistener 18831 127.0.0.1\ncertfile %s\nkeyfile %s\nallow_anonymous true\nmax_connections -1\n' \
  "$(id -un)" "$work/certs/server.pem" "$work/certs/server.key" > "$work/mosquitto-tls.conf"
peer_tls mosquitto mqtt 18831 "$work/mosquitto-tls.log" "$mosquitto_bin" -c "$work/mosquitto-tls.conf"

# Redis (RESP SUBSCRIBE/PUBLISH)
redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --maxclients 20000 > "$work/redis.log" 2>&1 & pid=$!
wait_port 16379; scenarios redis redis 127.0.0.1:16379; stop
peer_tls redis redis 16380 "$work/redis-tls.log" redis-server --tls-port 16380 --port 0 --bind 127.0.0.1 \
  --tls-cert-file "$work/certs/server.pem" --tls-key-file "$work/certs/server.key" \
  --tls-ca-cert-file "$ca" --tls-auth-clients no --save '' --appendonly no --dir "$work" --maxclients 20000

# NATS (text protocol)
"$nats_bin" -a 127.0.0.1 -p 14222 > "$work/nats.log" 2>&1 & pid=$!
wait_port 14222; scenarios nats nats 127.0.0.1:14222; stop
# nats-server 2.9 sends its INFO in plaintext and the client starts TLS after
# it (the bench does).
printf 'listen: 127.0.0.1:14223\ntls {\n  cert_file: "%s"\n  key_file: "%s"\n}\n' \
  "$work/certs/server.pem" "$work/certs/server.key" > "$work/nats-tls.conf"
peer_tls nats nats 14223 "$work/nats-tls.log" "$nats_bin" -c "$work/nats-tls.conf"

versions="switchboard $("$B" --version | awk '{print $2}'), $("$mosquitto_bin" -h 2>/dev/null | head -1 | sed 's/ is an MQTT.*//'), redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), nats-server $("$nats_bin" --version | awk '{print $2}')"
python3 - "$out" "$secs" "$versions" <<'PY'
import json, os, re, sys
out, secs, versions = sys.argv[1], sys.argv[2], sys.argv[3]
def load_all(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        text = f.read()
    return json.loads(text) if text.strip() else {}
def load(name):
    return load_all(name).get("results", {})
def get(d, *keys):
    for k in keys:
        if k in d:
            return d[k]
    return None
def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3f}{unit}" if v < 10 else f"{v:,.0f}{unit}"
    return f"{v:,}{unit}"
def latency(d, rate):
    # A server that cannot keep up with the rate is measured queueing:
    # say what it managed.
    text = f"{fmt(get(d, 'latency_p50_us'))} / {fmt(get(d, 'latency_p99_us'))}"
    achieved = get(d, "messages_per_s")
    if achieved is not None and achieved < 0.95 * rate:
        text += f" (only {achieved:,.0f} msg/s)"
    return text
rows = []
for name in ["switchboard", "mosquitto", "redis", "nats"]:
    d = load(f"{name}-density")
    f100, f1000, r = load(f"{name}-fanout100"), load(f"{name}-fanout1000"), load(f"{name}-rate1000")
    r100 = load(f"{name}-rate100")
    rows.append("| {} | {} | {} / {} | {} / {} | {} | {} | {} |".format(
        name,
        fmt(get(d, "server_bytes_per_connection")),
        fmt(get(f100, "deliveries_per_s")), fmt(get(f1000, "deliveries_per_s")),
        fmt(get(f100, "server_cpu_us_per_delivery")), fmt(get(f1000, "server_cpu_us_per_delivery")),
        latency(r100, 100), latency(r, 1000),
        fmt(sum(get(x, "loss") or 0 for x in (f100, f1000, r100, r))),
    ))
tls_rows = []
for name in ["switchboard", "mosquitto", "redis", "nats"]:
    t = load_all(f"{name}-tls-fanout1000")
    res, par, plain = t.get("results", {}), t.get("parameters", {}), load(f"{name}-fanout1000")
    if not res:
        why = t.get("note", "not run").replace("|", "/").replace("\n", " ")
        tls_rows.append(f"| {name} | {why} | | | |")
        continue
    tls_rows.append("| {} | {} / {} | {} / {} | {} | {} |".format(
        name,
        fmt(get(res, "deliveries_per_s")), fmt(get(plain, "deliveries_per_s")),
        fmt(get(res, "server_cpu_us_per_delivery")), fmt(get(plain, "server_cpu_us_per_delivery")),
        par.get("tls_cipher_suite", "–"),
        fmt(get(res, "loss")),
    ))
tls = load("switchboard-tls-density")
plain_d, plain_f = load("switchboard-density"), load("switchboard-fanout1000")
tls_f = load_all("switchboard-tls-fanout1000").get("results", {})
ws_d, wss_d = load("switchboard-ws-density"), load("switchboard-wss-density")
ws_f, wss_f = load("switchboard-ws-fanout1000"), load("switchboard-wss-fanout1000")
def over(a, b, key):
    x, y = get(a, key), get(b, key)
    return "–" if x is None or y is None else f"{x - y:+,.0f}"
def ratio(a, b, key):
    x, y = get(a, key), get(b, key)
    return "–" if not x or not y else f"{x / y:.2f}x"
ws_rows = [
    "| ws | {} B ({} B over plain TCP) | {} ({} of plain TCP's {}) | {} |".format(
        fmt(get(ws_d, "server_bytes_per_connection")), over(ws_d, plain_d, "server_bytes_per_connection"),
        fmt(get(ws_f, "server_cpu_us_per_delivery")), ratio(ws_f, plain_f, "server_cpu_us_per_delivery"),
        fmt(get(plain_f, "server_cpu_us_per_delivery")), fmt(get(ws_f, "deliveries_per_s"))),
    "| wss | {} B ({} B over TLS) | {} ({} of TLS's {}) | {} |".format(
        fmt(get(wss_d, "server_bytes_per_connection")), over(wss_d, tls, "server_bytes_per_connection"),
        fmt(get(wss_f, "server_cpu_us_per_delivery")), ratio(wss_f, tls_f, "server_cpu_us_per_delivery"),
        fmt(get(tls_f, "server_cpu_us_per_delivery")), fmt(get(wss_f, "deliveries_per_s"))),
]
loop_rows = []
for n in (100, 1000):
    for name, label in [("threads1", "1"), ("threads2-spread", "2, spread"), ("threads2-same", "2, all on loop 0"), ("threads2-cross", "2, publisher on loop 0, subscribers on loop 1")]:
        d = load(f"{name}-fanout{n}")
        loop_rows.append("| {} | {} | {} | {} | {} / {} | {} |".format(
            label, f"{n:,}", fmt(get(d, "deliveries_per_s")), fmt(get(d, "server_cpu_us_per_delivery")),
            fmt(get(d, "loop0_cpu_us_per_delivery")), fmt(get(d, "other_loops_cpu_us_per_delivery")),
            fmt(get(d, "loss"))))
cluster_rows = []
for name, label in [("cluster", "flat out"), ("cluster-rate1000", "1,000 msg/s")]:
    d = load(name)
    cluster_rows.append("| {} | one node, 200 subscribers | {} | {} / {} | | {} | {} |".format(
        label, fmt(get(d, "single_deliveries_per_s")), fmt(get(d, "single_latency_p50_us")),
        fmt(get(d, "single_latency_p99_us")), fmt(get(d, "single_cpu_us_per_delivery")), fmt(get(d, "single_loss"))))
    cluster_rows.append("| {} | nodes A + B, 100 + 100 | {} | {} / {} | {} / {} | {} (A {}, B {}, Redis {} ms; extra per cross-node delivery {}) | {} |".format(
        label, fmt(get(d, "deliveries_per_s")), fmt(get(d, "node_a_latency_p50_us")), fmt(get(d, "node_a_latency_p99_us")),
        fmt(get(d, "node_b_latency_p50_us")), fmt(get(d, "node_b_latency_p99_us")), fmt(get(d, "cpu_us_per_delivery")),
        fmt((get(d, "node_a_cpu_us") or 0) / 1000), fmt((get(d, "node_b_cpu_us") or 0) / 1000), fmt((get(d, "redis_cpu_us") or 0) / 1000),
        fmt(get(d, "extra_cpu_us_per_cross_node_delivery")), fmt(get(d, "loss"))))
hs, rs = load("switchboard-handshake"), load("switchboard-resume")
hs12, rs12 = load("switchboard-handshake12"), load("switchboard-resume12")
table = "\n".join([
    f"One run of `bash benches/compare.sh {secs}` ({versions}); 64-byte payloads; fan-out runs {secs} s each, flat out; latency at 1,000 subscribers x 100 and x 1,000 msg/s.",
    "",
    "| server | idle connection, 10,000 (B) | deliveries/s, 100 / 1,000 subscribers | server CPU µs per delivery, 100 / 1,000 | latency p50 / p99 µs at 1,000 x 100/s | latency p50 / p99 µs at 1,000 x 1,000/s | loss |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    *rows,
    "",
    f"Fan-out over TLS: 1,000 subscribers and the publisher, every connection over TLS (the server's certificate from `switchboard certs`; the load generator's TLS is rustls, offering its default cipher suites; each server picked the one shown), flat out, {secs} s; plain TCP from the table above beside it. Mosquitto and Redis use OpenSSL, NATS Go's crypto/tls.",
    "",
    "| server | deliveries/s, TLS / plain | server CPU µs per delivery, TLS / plain | cipher suite | loss over TLS |",
    "| --- | --- | --- | --- | --- |",
    *tls_rows,
    "",
    f"switchboard over WebSocket: idle connections at 10,000 (fresh servers), and fan-out to 1,000 subscribers with the publisher and every subscriber over WebSocket (each frame one message; the load generator parses frames in place), flat out, {secs} s.",
    "",
    "| transport | idle connection, 10,000 | server CPU µs per delivery, 1,000 subscribers | deliveries/s |",
    "| --- | --- | --- | --- |",
    *ws_rows,
    "",
    f"switchboard over several loops (issue 15): `bench fanout --threads N` starts `serve --threads N` itself; with `--layout` it puts each connection on a chosen loop. 64-byte payloads, flat out, {secs} s. The load generator (one thread) shares the 2 cores with the server's loops.",
    "",
    "| --threads | subscribers | deliveries/s | server CPU µs per delivery | loop 0 / other loops, µs per delivery | loss |",
    "| --- | --- | --- | --- | --- | --- |",
    *loop_rows,
    "",
    f"switchboard across two nodes (issue 15): `bench cluster` starts a redis-server and two `--cluster` nodes, the publisher on A; beside it the same load on one node. 64-byte payloads, {secs} s each. CPU: both nodes and redis-server together.",
    "",
    "| load | configuration | deliveries/s | latency p50 / p99 µs (A, or the one node) | latency p50 / p99 µs on B | CPU µs per delivery | loss |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    *cluster_rows,
    "",
    "switchboard TLS: idle TLS connection at 10,000: {} B. Server CPU per handshake, 16 clients at once: TLS 1.3 full {} µs ({} /s), resumed {} µs ({} /s); TLS 1.2 full {} µs ({} /s), resumed {} µs ({} /s).".format(
        fmt(get(tls, "server_bytes_per_connection")),
        fmt(get(hs, "server_cpu_us_per_handshake")), fmt(get(hs, "handshakes_per_s")),
        fmt(get(rs, "server_cpu_us_per_handshake")), fmt(get(rs, "handshakes_per_s")),
        fmt(get(hs12, "server_cpu_us_per_handshake")), fmt(get(hs12, "handshakes_per_s")),
        fmt(get(rs12, "server_cpu_us_per_handshake")), fmt(get(rs12, "handshakes_per_s"))),
])
path = "docs/benchmarks.md"
with open(path) as f:
    doc = f.read()
begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
block = f"{begin}\n{table}\n{end}"
if begin in doc:
    doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, doc, flags=re.S)
else:
    doc = doc.replace("## Machine", "## Side by side\n\n" + block + "\n\n## Machine", 1)
with open(path, "w") as f:
    f.write(doc)
print(table)
PY
