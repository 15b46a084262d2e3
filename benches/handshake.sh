#!/usr/bin/env bash
# Full and resumed TLS handshakes per second against a running switchboard,
# measured with a client no one here wrote (openssl s_time), plus the server's
# CPU time per handshake read from /proc/PID/stat around each run.
#
#   cargo build --release
#   ./target/release/switchboard serve --log-level warn &
#   bash benches/handshake.sh $! 127.0.0.1:7421 10
#
# (`switchboard bench handshake` will replace this script.)
set -euo pipefail
pid=${1:?server pid}; addr=${2:-127.0.0.1:7421}; secs=${3:-10}
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$pid/stat"; }
run() {
  local label=$1; shift
  local before after out n
  before=$(cpu)
  out=$(openssl s_time -connect "$addr" -time "$secs" "$@" 2>/dev/null)
  after=$(cpu)
  n=$(printf '%s\n' "$out" | awk '/connections in [0-9.]+s/ {print $1; exit}')
  rate=$(printf '%s\n' "$out" | awk '/connections\/user sec/ {print $0; exit}')
  real=$(printf '%s\n' "$out" | awk '/connections in [0-9.]+s/ {print $0; exit}')
  local us=$(( (after - before) * 1000000 / tick / (n > 0 ? n : 1) ))
  printf '%-16s %7s in %ss wall (%5s/s, client-bound)  server CPU %4s us/handshake  | s_time: %s\n' \
    "$label" "$n" "$secs" "$(( n / secs ))" "$us" "$real"
}
run "TLS1.3 full"    -new -tls1_3
run "TLS1.3 resumed" -reuse -tls1_3
run "TLS1.2 full"    -new -tls1_2
run "TLS1.2 resumed" -reuse -tls1_2
