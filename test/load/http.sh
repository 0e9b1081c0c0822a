#!/usr/bin/env bash
# HTTP load comparison on loopback: the same 1 KiB upstream (nginx serving a
# static file) measured directly, through vulcan, through nginx and through
# HAProxy configured as equivalent reverse proxies (keep-alive to the upstream,
# X-Forwarded-For), interleaved in rounds so that machine noise hits all alike.
#
#   test/load/http.sh                 3 rounds of 10 s each per target
#   ROUNDS=5 DURATION=15s CONNS=64 THREADS=1 test/load/http.sh
#
# Needs wrk, nginx and haproxy (Debian packages) and a built ./vulcan (make build).
# Traffic goes only to 127.0.0.1; every run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
VULCAN=${VULCAN:-./vulcan}
for tool in wrk nginx haproxy; do
	command -v $tool >/dev/null || { echo "load: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done
[[ -x $VULCAN ]] || go build -o "$VULCAN" ./cmd/vulcan

work=$(mktemp -d)
chmod 755 "$work" # nginx workers run as another user
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); NGX=$(port); HAP=$(port); VH=$(port); VA=$(port); VG=$(port)

head -c 1024 /dev/zero | tr '\0' 'x' > "$work/index.html"
mkdir -p "$work/up" "$work/px"
cat > "$work/up/nginx.conf" <<CONF
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
cat > "$work/px/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/px/nginx.pid;
error_log $work/px/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_buffering off;
    }
  }
}
CONF
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option forwardfor
  http-reuse always
frontend f
  bind 127.0.0.1:$HAP
  default_backend b
backend b
  server up 127.0.0.1:$UP
CONF

nginx -c "$work/up/nginx.conf" -e "$work/up/error.log" & pids+=($!)
nginx -c "$work/px/nginx.conf" -e "$work/px/error.log" & pids+=($!)
haproxy -f "$work/haproxy.cfg" -q & pids+=($!)
"$VULCAN" agent -node load -http 127.0.0.1:$VH -admin 127.0.0.1:$VA -bind 127.0.0.1:$VG -smtp "" \
	-data "$work/vulcan-data" -log-level warn & pids+=($!)

wait_http() {
	for _ in $(seq 100); do
		curl -fso /dev/null "$1" && return 0
		sleep 0.1
	done
	echo "load: $1 does not answer" >&2
	exit 1
}
wait_http "http://127.0.0.1:$VA/v1/status"
VULCAN_ADDR=http://127.0.0.1:$VA "$VULCAN" service put load >/dev/null
VULCAN_ADDR=http://127.0.0.1:$VA "$VULCAN" upstream put load up 127.0.0.1:$UP
for u in "http://127.0.0.1:$UP/" "http://127.0.0.1:$NGX/" "http://127.0.0.1:$HAP/" "http://127.0.0.1:$VH/"; do
	wait_http "$u"
done

declare -A url=([direct]="http://127.0.0.1:$UP/" [vulcan]="http://127.0.0.1:$VH/" [nginx]="http://127.0.0.1:$NGX/" [haproxy]="http://127.0.0.1:$HAP/")
order=(direct vulcan nginx haproxy)
declare -A rps p50 p99

# to_ms turns wrk's latency ("812.00us", "1.20ms", "2.01s") into milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'; }

for r in $(seq "$ROUNDS"); do
	for name in "${order[@]}"; do
		out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${url[$name]}")
		errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
		[[ -z $errs ]] || echo "round $r $name: $errs" >&2
		rps[$name]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
		p50[$name]+="$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')") "
		p99[$name]+="$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')") "
	done
	echo "round $r of $ROUNDS done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf "wrk -t%s -c%s -d%s, %s rounds, 1 KiB body; medians over rounds\n" "$THREADS" "$CONNS" "$DURATION" "$ROUNDS"
printf "%-8s %12s %10s %10s %10s %10s\n" target req/s p50_ms p99_ms x_direct x_nginx
d=$(echo "${rps[direct]}" | median); n=$(echo "${rps[nginx]}" | median)
for name in "${order[@]}"; do
	v=$(echo "${rps[$name]}" | median)
	printf "%-8s %12.0f %10.3f %10.3f %10.2f %10.2f\n" "$name" "$v" "$(echo "${p50[$name]}" | median)" \
		"$(echo "${p99[$name]}" | median)" "$(awk -v a="$v" -v b="$d" 'BEGIN{print a/b}')" "$(awk -v a="$v" -v b="$n" 'BEGIN{print a/b}')"
done
