#!/usr/bin/env bash
# ab.sh compares tincan binaries in one run, taking turns, so that the
# machine's noise falls on all of them alike:
#
#   bench/ab.sh ROUNDS OUTDIR BINARY...
#
# Each round runs, for every binary in turn, on a fresh server and db file:
# pingpong over SSE, pingpong over long-poll, and calls at concurrency 50,
# DURATION each (default 15s). Results are JSON files OUTDIR/<binary>-<round>-<workload>.json
# (the bench's -json output); a summary line per run goes to stdout.
set -euo pipefail
rounds=$1 out=$2
shift 2
dur=${DURATION:-15s}
port=${PORT:-18080}
mkdir -p "$out"
url=http://127.0.0.1:$port
run_one() { # binary workload args...
  local bin=$1 name=$2
  shift 2
  local db
  db=$(mktemp -d)/b.db
  # Binaries from before the per-member limits do not know their flag.
  local member=()
  if "$bin" -h 2>&1 | grep -q -- -member-rate-limit; then member=(-member-rate-limit 0); fi
  "$bin" -turn=false -rate-limit 0 "${member[@]}" -max-streams-per-ip 0 -max-room-messages 0 \
    -addr 127.0.0.1:$port -db "$db" >/dev/null 2>&1 &
  local pid=$!
  until curl -sf -o /dev/null $url/healthz; do sleep 0.05; done
  local file
  file=$out/$(basename "$bin")-$round-$name.json
  timeout 120 "$bin" bench -url $url -progress 0 -json -duration "$dur" "$@" >"$file" || true
  kill $pid; wait $pid || true
  rm -rf "$(dirname "$db")"
  printf '%s %s round %s: %s\n' "$(basename "$bin")" "$name" "$round" "$(head -c 400 "$file" | tr -d '\n')"
}
for round in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    run_one "$bin" sse -rooms 100 -k 1000000
    run_one "$bin" poll -rooms 100 -k 1000000 -transport poll
    run_one "$bin" calls -workload calls -rooms 50
  done
done
