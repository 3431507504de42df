#!/bin/sh
# bench/cluster.sh: BENCHMARKS §11's runs, in one go on one machine: for
# each tincan binary given, single-node bbolt, then 3 instances on a
# 3-member etcd (bench/etcdlocal, one process on loopback) with the bench
# speaking to the first instance, each under pingpong (100 rooms, SSE) and
# calls at 5 and at 50 at once; and, just before each binary's cluster
# runs, etcd's own figure for the same writes (`tincan bench -workload
# etcd` of $TOOL or the last binary, with and without waiting for a watch) at 100,
# 5 and 50 at once. Each result (-json) goes to
# $OUT/<binary's directory>-<setup>-<workload>.json, etcd's own to
# $OUT/etcd<n>-<at once>[-watch].json.
#
#	go build -o /tmp/after/tincan . && (git worktree add /tmp/b 86da04d && cd /tmp/b && go build -o /tmp/before/tincan .)
#	OUT=/tmp/cluster sh bench/cluster.sh /tmp/before/tincan /tmp/after/tincan
#
# Results are named after the binary's directory. With an etcd engine,
# <name>.before.prom and <name>.after.prom hold the server's
# tincan_etcd_request_seconds_count (etcd round trips by operation)
# before and after the run.
#
# SECONDS_PER_RUN (default 12) is each run's measured time.
set -eu
secs=${SECONDS_PER_RUN:-12}
out=${OUT:-/tmp/cluster}
mkdir -p "$out"
dir=$(mktemp -d)
go build -o "$dir/etcdlocal" ./bench/etcdlocal
"$dir/etcdlocal" -members 3 > "$dir/etcd.url" &
etcd_pid=$!
pids=""
trap 'kill $etcd_pid $pids 2>/dev/null || true; rm -rf "$dir"' EXIT
until [ -s "$dir/etcd.url" ]; do sleep 0.2; done
etcd=$(cat "$dir/etcd.url")
flags="-turn=false -rate-limit 0 -member-rate-limit 0 -max-streams-per-ip 0"

wait_up() { until curl -sf -o /dev/null "http://$1/healthz"; do sleep 0.1; done; }

one() { # binary setup url name flags...: one run, and the server's etcd round trips by operation over it
	bin=$1 url=$3 name="$out/$(basename "$(dirname "$1")")-$2-$4"
	shift 4
	curl -s "$url/metrics" | grep '^tincan_etcd_request_seconds_count' > "$name.before.prom" || true
	"$bin" bench -url "$url" -progress 0 -json "$@" -duration ${secs}s > "$name.json"
	curl -s "$url/metrics" | grep '^tincan_etcd_request_seconds_count' > "$name.after.prom" || true
}

workloads() { # binary setup url
	one "$1" "$2" "$3" pingpong -rooms 100 -k 1000000
	one "$1" "$2" "$3" calls5 -workload calls -rooms 5
	one "$1" "$2" "$3" calls50 -workload calls -rooms 50
}

eval "tool=\${TOOL:-\${$#}}" # runs -workload etcd: $TOOL, or the last binary

n=0
for bin in "$@"; do
	n=$((n + 1))
	"$bin" $flags -addr 127.0.0.1:18080 -db "$dir/b$n.db" >"$dir/bolt$n.log" 2>&1 &
	pids=$!
	wait_up 127.0.0.1:18080
	workloads "$bin" bbolt http://127.0.0.1:18080
	kill $pids; wait $pids 2>/dev/null || true
	pids=""

	# etcd's own, just before this binary's cluster runs
	for r in 100 5 50; do
		"$tool" bench -workload etcd -etcd "$etcd" -url http://127.0.0.1:1 -progress 0 -json -rooms $r -k 1000000 -duration ${secs}s > "$out/etcd$n-$r.json" 2>/dev/null
		"$tool" bench -workload etcd -etcd-watch -etcd "$etcd" -url http://127.0.0.1:1 -progress 0 -json -rooms $r -k 1000000 -duration ${secs}s > "$out/etcd$n-$r-watch.json" 2>/dev/null
	done

	for i in 1 2 3; do
		"$bin" $flags -addr 127.0.0.1:1808$i -etcd "$etcd" -etcd-prefix "/bench$n/" >"$dir/inst$n-$i.log" 2>&1 &
		pids="$pids $!"
	done
	for i in 1 2 3; do wait_up 127.0.0.1:1808$i; done
	workloads "$bin" cluster http://127.0.0.1:18081
	kill $pids; wait $pids 2>/dev/null || true
	pids=""
done

kill $etcd_pid
wait $etcd_pid 2>/dev/null || true
