#!/usr/bin/env bash
# callgrind.sh counts the server's instructions per message with valgrind's
# callgrind, a CPU-per-message figure that does not depend on the machine's
# speed (issue 20):
#
#   bench/callgrind.sh TRANSPORT MESSAGES [OUTDIR]
#
# TRANSPORT is sse or poll; MESSAGES is the message count N of the short run.
# The server (built from the current tree, or $BIN) runs twice under
# callgrind on loopback, each time on a fresh db: once driven by the pingpong
# bench (ROOMS rooms, default 10) for about N messages, once for about 2N.
# Instructions per message is the slope
#   (Ir(2N run) - Ir(N run)) / (messages(2N run) - messages(N run)),
# which removes startup, setup and shutdown. The messages are those the bench
# reports delivered. The raw totals per run are printed as well.
# Callgrind output files stay in OUTDIR (default a temporary directory).
# FLOOR=direct or FLOOR=r3labs counts bench/floor (the API's pingpong subset
# with nothing else, its -frames set so) instead of tincan, the bench still
# being tincan's ($BENCH_BIN, else $BIN or the one built from the tree).
set -euo pipefail
transport=${1:?transport: sse or poll}
msgs=${2:?message count}
out=${3:-$(mktemp -d /tmp/callgrind.XXXXXX)}
rooms=${ROOMS:-10}
port=${PORT:-18390}
url=http://127.0.0.1:$port
mkdir -p "$out"
bin=${BIN:-}
if [[ -z $bin ]]; then
  bin=$out/tincan
  (cd "$(dirname "$0")/.." && go build -o "$bin" .)
fi
benchbin=$bin
server=("$bin" -turn=false -rate-limit 0 -member-rate-limit 0 -max-streams-per-ip 0 -max-room-messages 0 -addr 127.0.0.1:$port)
if [[ -n ${FLOOR:-} ]]; then
  benchbin=${BENCH_BIN:-$bin}
  floorbin=$out/floor
  (cd "$(dirname "$0")/.." && go build -o "$floorbin" ./bench/floor)
  server=("$floorbin" -frames "$FLOOR" -addr 127.0.0.1:$port)
fi
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install -y valgrind)" >&2; exit 1; }

# run_one NAME MESSAGES: prints "IR DELIVERED"
run_one() {
  local name=$1 n=$2
  local k=$(( (n + 2*rooms - 1) / (2*rooms) )) # a round trip is 2 messages
  local db
  db=$(mktemp -d)/b.db
  # asyncpreemptoff: callgrind asserts on the runtime's preemption signals (SIGURG).
  local args=("${server[@]}")
  [[ -n ${FLOOR:-} ]] || args+=(-db "$db")
  GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file="$out/$name.cg" \
    "${args[@]}" >"$out/$name.server.log" 2>&1 &
  local pid=$!
  local tries=0
  until curl -sf -o /dev/null $url/healthz; do
    kill -0 $pid 2>/dev/null || { echo "server died, see $out/$name.server.log" >&2; exit 1; }
    sleep 0.2
    tries=$((tries + 1))
    if (( tries > 600 )); then echo "server did not start" >&2; kill $pid; exit 1; fi
  done
  "$benchbin" bench -url $url -progress 0 -json -transport "$transport" -rooms "$rooms" \
    -k "$k" -timeout 60s -duration 10m >"$out/$name.json"
  # Callgrind (3.19) asserts when Go's signal handler runs (SIGTERM too), so
  # the counts are dumped through vgdb and the server is then killed.
  rm -f "$out/$name.cg"*
  callgrind_control -d "$pid" >/dev/null
  kill -KILL $pid
  wait $pid 2>/dev/null || true
  rm -rf "$(dirname "$db")"
  local ir delivered errs
  local cg
  cg=$(ls "$out/$name.cg"* | head -1)
  ir=$(grep -m1 '^summary:' "$cg" | awk '{print $2}')
  delivered=$(grep -m1 '"messages":' "$out/$name.json" | tr -dc 0-9)
  errs=$(grep -E '"(errors|lost|duplicates)":' "$out/$name.json" | tr -d ' ,\n')
  echo "$name: ir=$ir messages=$delivered $errs" >&2
  echo "$ir $delivered"
}

read -r ir1 m1 < <(run_one "$transport-n" "$msgs")
read -r ir2 m2 < <(run_one "$transport-2n" $((2 * msgs)))
awk -v a="$ir1" -v b="$ir2" -v ma="$m1" -v mb="$m2" -v t="$transport" 'BEGIN {
  printf "%s: %d msgs %.0f Ir (%.0f Ir/msg raw); %d msgs %.0f Ir (%.0f Ir/msg raw)\n", t, ma, a, a/ma, mb, b, b/mb
  printf "%s: instructions/message (slope) = %.0f\n", t, (b - a) / (mb - ma)
}'
echo "callgrind files: $out/$transport-n.cg* $out/$transport-2n.cg*" >&2
