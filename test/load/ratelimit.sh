#!/usr/bin/env bash
# Rate-limit cost on one node: wrk drives a vulcan node in front of an nginx
# upstream (a 1 KiB static file), with no limit and then with a limit that
# matches every request (threshold never reached), in interleaved rounds.
# For each run it reads the node's /metrics before and after and prints
# requests/s, latency, and what counting cost: decisions/s, deltas written
# to the counter store per second (one counter update each) and sync rounds
# per second (one batch write plus the re-reads each).
#
#   test/load/ratelimit.sh                       Cassandra from VULCAN_TEST_CASSANDRA,
#                                                else the shared node of test/cassandra
#   STORE=embedded test/load/ratelimit.sh        the embedded (bbolt) store instead
#   ROUNDS=5 DURATION=15s CONNS=64 test/load/ratelimit.sh
#
# wrk sends every request from 127.0.0.1, so all of them are one auth token
# (open mode): one counter, at most a couple of deltas per sync. For many
# tokens see TestRateLimitMeasureThroughput (VULCAN_BENCH=1) in test/.
# Needs wrk and nginx (Debian packages); traffic goes only to 127.0.0.1 and
# every run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
STORE=${STORE:-cassandra}
VULCAN=${VULCAN:-}
for tool in wrk nginx curl; do
	command -v $tool >/dev/null || { echo "ratelimit load: $tool is not installed" >&2; exit 1; }
done
store_args=()
if [[ $STORE == cassandra ]]; then
	cass=${VULCAN_TEST_CASSANDRA:-$(test/cassandra/cassandra.sh status 2>/dev/null || true)}
	[[ -n $cass ]] || { echo "ratelimit load: no Cassandra (test/cassandra/cassandra.sh start, or STORE=embedded)" >&2; exit 1; }
	store_args=(-cassandra "$cass" -keyspace "load_rl_$$_$RANDOM")
fi

work=$(mktemp -d)
chmod 755 "$work" # nginx workers run as another user
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
if [[ -z $VULCAN ]]; then # built from this checkout, not whatever ./vulcan is
	VULCAN=$work/vulcan
	go build -o "$VULCAN" ./cmd/vulcan
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); VH=$(port); VA=$(port); VG=$(port)

head -c 1024 /dev/zero | tr '\0' 'x' >"$work/index.html"
mkdir -p "$work/up"
cat >"$work/up/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/up/nginx.pid;
error_log $work/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; root $work; location / { } }
}
CONF
nginx -c "$work/up/nginx.conf" -e "$work/up/error.log" & pids+=($!)
"$VULCAN" agent -node load -http 127.0.0.1:$VH -admin 127.0.0.1:$VA -bind 127.0.0.1:$VG -smtp "" \
	-data "$work/vulcan-data" -log-level warn "${store_args[@]}" & pids+=($!)

wait_http() {
	for _ in $(seq 600); do
		curl -fso /dev/null "$1" && return 0
		sleep 0.1
	done
	echo "ratelimit load: $1 does not answer" >&2
	exit 1
}
export VULCAN_ADDR=http://127.0.0.1:$VA
wait_http "$VULCAN_ADDR/v1/status"
"$VULCAN" service put load >/dev/null
"$VULCAN" upstream put load up 127.0.0.1:$UP >/dev/null
wait_http "http://127.0.0.1:$VH/"

# metric prints an unlabelled metric of the node.
metric() { curl -fs "$VULCAN_ADDR/metrics" | awk -v m="$1" '$1==m {print $2}'; }
names=(vulcan_ratelimit_allowed_total vulcan_ratelimit_deltas_written_total vulcan_ratelimit_syncs_total vulcan_ratelimit_sync_errors_total)
snapshot() { for n in "${names[@]}"; do metric "$n"; done | tr '\n' ' '; }
to_ms() { awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'; }
secs=$(awk -v d="$DURATION" 'BEGIN { n=d+0; if (d ~ /m$/) n*=60; print n }')

declare -A rps p50 p99 dec dw syn serr
run() { # run NAME: one wrk run, its figures appended to the NAME columns
	local before after out
	before=($(snapshot))
	out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$VH/")
	after=($(snapshot))
	errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
	[[ -z $errs ]] || echo "$1: $errs" >&2
	rps[$1]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
	p50[$1]+="$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')") "
	p99[$1]+="$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')") "
	dec[$1]+="$(awk -v a="${after[0]}" -v b="${before[0]}" -v s="$secs" 'BEGIN{print (a-b)/s}') "
	dw[$1]+="$(awk -v a="${after[1]}" -v b="${before[1]}" -v s="$secs" 'BEGIN{print (a-b)/s}') "
	syn[$1]+="$(awk -v a="${after[2]}" -v b="${before[2]}" -v s="$secs" 'BEGIN{print (a-b)/s}') "
	serr[$1]+="$(awk -v a="${after[3]}" -v b="${before[3]}" 'BEGIN{print a-b}') "
}

wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$VH/" >/dev/null # warm up
for r in $(seq "$ROUNDS"); do
	run "no-limit"
	id=$("$VULCAN" limit add -period 60 -threshold 1000000000)
	run "limit"
	"$VULCAN" limit rm "$id"
	echo "round $r of $ROUNDS done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf "store %s, wrk -t%s -c%s -d%s, %s rounds, one token; medians over rounds\n" "$STORE" "$THREADS" "$CONNS" "$DURATION" "$ROUNDS"
printf "%-9s %10s %9s %9s %12s %10s %8s %11s\n" run req/s p50_ms p99_ms decisions/s deltas/s syncs/s sync_errors
for name in no-limit limit; do
	printf "%-9s %10.0f %9.3f %9.3f %12.0f %10.1f %8.1f %11.0f\n" "$name" \
		"$(echo "${rps[$name]}" | median)" "$(echo "${p50[$name]}" | median)" "$(echo "${p99[$name]}" | median)" \
		"$(echo "${dec[$name]}" | median)" "$(echo "${dw[$name]}" | median)" "$(echo "${syn[$name]}" | median)" \
		"$(echo "${serr[$name]}" | median)"
done
