#!/usr/bin/env bash
# apps.sh measures what "apps in control" costs, in one run, the
# configurations taking turns so that the machine's noise falls on all alike:
#
#   bench/apps.sh ROUNDS OUTDIR BINARY
#
# Each round, on a fresh server and db file each:
#   joins-open   -auth open,                       tincan bench -workload joins -count $JOINS (150000)
#   joins-hs256  -auth jwt -jwt-secret,            ... -jwt hs256
#   joins-es256  -auth jwt -jwt-public-key P-256,  ... -jwt es256 (tokens pre-minted)
#   calls-plain  calls at -rooms $CALLS (default 50), no webhooks
#   calls-hooks  the same with -webhook-url to the bench's own receiver (-webhook-listen)
# DURATION each (default 15s). JSON results go to OUTDIR/<round>-<name>.json; the
# server's /proc/<pid>/io at its end to OUTDIR/<round>-<name>.io; a summary
# line per run to stdout. Keys are made with openssl in OUTDIR.
set -euo pipefail
rounds=$1 out=$2 bin=$3
dur=${DURATION:-15s}
port=${PORT:-18080}
hport=${HOOK_PORT:-18090}
conc=${JOIN_CONC:-32}
calls=${CALLS:-50}
joins=${JOINS:-150000}
mkdir -p "$out"
url=http://127.0.0.1:$port
secret=$(openssl rand -hex 32)
openssl ecparam -genkey -name prime256v1 -noout -out "$out/es256.key" 2>/dev/null
openssl ec -in "$out/es256.key" -pubout -out "$out/es256.pub" 2>/dev/null
whsec=whsec_$(openssl rand -base64 32)
run_one() { # name "server flags" bench args...
  local name=$1 sflags=$2
  shift 2
  local db
  db=$(mktemp -d)/b.db
  # shellcheck disable=SC2086
  TINCAN_JWT_SECRET= "$bin" -turn=false -rate-limit 0 -member-rate-limit 0 -max-streams-per-ip 0 -max-room-messages 0 \
    -addr 127.0.0.1:$port -db "$db" $sflags >"$out/$round-$name.log" 2>&1 &
  local pid=$!
  until curl -sf -o /dev/null $url/healthz; do sleep 0.05; done
  local file=$out/$round-$name.json
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  TINCAN_JWT_SECRET=$secret timeout 120 "$bin" bench -url $url -progress 0 -json -duration "$dur" "$@" >"$file" || true
  cat /proc/$pid/io >"$out/$round-$name.io" 2>/dev/null || true
  kill $pid; wait $pid || true
  rm -rf "$(dirname "$db")"
  python3 - "$file" "$name" "$round" "$load" "$out/$round-$name.io" <<'PY'
import json, sys
f, name, rnd, load, iof = sys.argv[1:]
r = json.load(open(f))
io = dict(l.split(': ') for l in open(iof).read().split('\n') if ': ' in l) if iof else {}
s = r.get('server') or {}
line = f"round {rnd} {name:12s} load {load}: "
if r['workload'] == 'joins':
    j = r['join']
    line += f"{r.get('joins',0)} joins {r.get('joins_per_s',0):.0f}/s join p50 {j['p50_ms']} p99 {j['p99_ms']} ms, server cpu {r.get('server_cpu_us_per_op',0)} us/join+leave ({s.get('cpu_cores',0)} cores), bench {r['bench_cpu_cores']} cores, mint {r['setup_s']} s"
else:
    st = r['setup']
    line += f"{r.get('calls',0)} calls {r.get('calls_per_s',0):.1f}/s setup p50 {st['p50_ms']} p99 {st['p99_ms']} ms, server cpu {r.get('server_cpu_us_per_op',0)} us/call ({s.get('cpu_cores',0)} cores), commits {s.get('commits',0):.0f} ({s.get('writes_per_commit',0)} w/c, mean {s.get('commit_mean_ms',0)} ms), bench {r['bench_cpu_cores']} cores"
    if io and r.get('calls'):
        line += f", server wrote {int(io['write_bytes'])/r['calls']/1024:.1f} KiB/call (write_bytes, whole life)"
    w = r.get('webhooks')
    if w:
        line += f"; hooks {w['received']} in run {w['received_per_s']}/s, total {w['received_total']} {w['by_type']}, lag p50 {w['lag']['p50_ms']} p99 {w['lag']['p99_ms']} max {w['lag']['max_ms']} ms, hist mean {w['hist_mean_ms']} ms, pending end {w['pending_at_end']:.0f} -> {w['pending_after']:.0f} after {w['drain_s']} s, dups {w['duplicates']}"
line += f"; errors {r['errors']} {r.get('error_kinds') or ''}"
print(line, flush=True)
PY
}
for round in $(seq 1 "$rounds"); do
  run_one joins-open "" -workload joins -rooms "$conc" -count "$joins"
  run_one joins-hs256 "-auth jwt -jwt-secret $secret" -workload joins -rooms "$conc" -count "$joins" -jwt hs256
  run_one joins-es256 "-auth jwt -jwt-public-key $out/es256.pub" -workload joins -rooms "$conc" -count "$joins" -jwt es256 -jwt-key "$out/es256.key"
  run_one calls-plain "" -workload calls -rooms "$calls"
  run_one calls-hooks "-webhook-url http://127.0.0.1:$hport/hooks -webhook-secret $whsec" -workload calls -rooms "$calls" -webhook-listen 127.0.0.1:$hport -webhook-drain 60s
done
