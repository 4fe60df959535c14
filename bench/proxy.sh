#!/usr/bin/env bash
# Proxy benchmark, side by side in one run on this machine: wrk against
#   1. the upstream directly,
#   2. nginx proxy_pass to it (its own nginx process),
#   3. samlgate (with a signed-in session cookie) to it.
# The upstream is a separate nginx answering a 1 KB page, so neither proxy
# shares its process with the upstream. samlgate runs in demo mode only to
# sign in through the development IdP. Uses ports 8080 (samlgate), 9090
# (admin), 3000 (upstream), 8081 (nginx proxy).
#   [ROUNDS=3] [PERF=file] [CALLGRIND=1] bench/proxy.sh [DURATION_SECS] [CONNECTIONS]
# (ROUNDS=0 CALLGRIND=1 counts instructions only.)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
conns=${2:-64}
scripts/install-deps.sh --test
for p in wrk nginx-light; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
done
cargo build --release -q
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
sed "s|^path = \"data/samlgate.db\"|path = \"$work/samlgate.db\"|; s|^enabled = true.*|enabled = true\nserve_upstream = false|" \
  config/samlgate.toml > "$work/samlgate.toml"
page=$(python3 -c 'print("<html><body>" + "x" * 1000 + "</body></html>")')
cat > "$work/upstream.conf" <<NGINX
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:3000; location / { default_type text/html; return 200 '$page'; } }
}
NGINX
nginx -c "$work/upstream.conf" -g 'daemon off;' &
pids+=($!)
until curl -sf http://127.0.0.1:3000/ >/dev/null; do sleep 0.1; done
target/release/samlgate serve --config "$work/samlgate.toml" 2>"$work/samlgate.log" &
pids+=($!)
until curl -sf http://127.0.0.1:9090/healthz >/dev/null; do sleep 0.1; done
# Sign in through the demo IdP.
loc=$(curl -s -o /dev/null -w '%{redirect_url}' "http://127.0.0.1:8080/saml/login?return_to=/")
page=$(curl -s "$loc")
rid=$(echo "$page" | grep -o 'name="request_id" value="[^"]*"' | sed 's/.*value="//;s/"//')
relay=$(echo "$page" | grep -o 'name="relay" value="[^"]*"' | sed 's/.*value="//;s/"//')
resp=$(curl -s -X POST http://127.0.0.1:8080/_demo-idp/login --data-urlencode user=alice@example.com \
  --data-urlencode password=demo --data-urlencode "request_id=$rid" --data-urlencode "relay=$relay" \
  | grep -o 'name="SAMLResponse" value="[^"]*"' | sed 's/.*value="//;s/"//')
cookie=$(curl -s -D - -o /dev/null -X POST http://127.0.0.1:8080/saml/acs --data-urlencode "SAMLResponse=$resp" \
  | grep -i '^set-cookie' | sed 's/^[Ss]et-[Cc]ookie: //; s/;.*//' | tr -d '\r')
[ -n "$cookie" ] || { echo "login failed"; cat "$work/samlgate.log"; exit 1; }
curl -sf -H "Cookie: $cookie" http://127.0.0.1:8080/ | grep -q xxxx || { echo "session does not reach the upstream"; exit 1; }
cat > "$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:3000; keepalive 128; }
  server {
    listen 127.0.0.1:8081;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
until curl -sf http://127.0.0.1:8081/ >/dev/null; do sleep 0.1; done
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); wrk -t2 -c$conns -d${dur}s --latency; upstream: nginx, 1 worker, 1 KB page"
run() { # label url [header]
  local out
  if [ $# -eq 3 ]; then out=$(wrk -t2 -c"$conns" -d"${dur}s" --latency -H "$3" "$2"); else out=$(wrk -t2 -c"$conns" -d"${dur}s" --latency "$2"); fi
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  printf '%-28s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$rps" "$p50" "$p99"
  echo "$rps" > "$work/$(echo "$1" | tr ' ' _).rps"
}
# ROUNDS (default 3) rounds of the three targets in turn: the shared host's
# speed drifts within minutes, so each round's ratios compare like with like
# and the summary is the median round.
rounds=${ROUNDS:-3}
for round in $(seq 1 "$rounds"); do
  echo "round $round"
  run "upstream direct" http://127.0.0.1:3000/
  run "nginx proxy_pass" http://127.0.0.1:8081/
  # PERF=file records a profile of samlgate during its first run (perf record -g).
  if [ -n "${PERF:-}" ] && [ "$round" = 1 ]; then
    perf record -g -o "$PERF" -p "$(pgrep -f "samlgate serve --config $work")" -- sleep "$dur" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  run "samlgate (session check)" http://127.0.0.1:8080/ "Cookie: $cookie"
  if [ -n "${PERF:-}" ] && [ "$round" = 1 ]; then wait "$perf_pid"; fi
  for f in "$work"/*.rps; do mv "$f" "${f%.rps}.round$round"; done
done
[ "$rounds" -gt 0 ] && python3 - "$work" "$rounds" <<'PY'
import sys, statistics
w, n = sys.argv[1], int(sys.argv[2])
rows = []
for i in range(1, n + 1):
    r = {k: float(open(f"{w}/{k}.round{i}").read()) for k in ("upstream_direct", "nginx_proxy_pass", "samlgate_(session_check)")}
    d, x, s = r["upstream_direct"], r["nginx_proxy_pass"], r["samlgate_(session_check)"]
    rows.append((x / d, s / d, s / x))
    print(f"round {i}: nginx {x/d:.2f}x direct, samlgate {s/d:.2f}x direct, samlgate/nginx {s/x:.2f}x")
med = [statistics.median(c) for c in zip(*rows)]
print(f"median of {n} rounds: nginx {med[0]:.2f}x direct, samlgate {med[1]:.2f}x direct; samlgate/nginx {med[2]:.2f}x")
PY

# CALLGRIND=1: user-space instructions per proxied request, which do not
# depend on how busy the shared host is: nginx proxy_pass (one process) and
# samlgate (one worker), each under callgrind, counters zeroed after a
# warm-up, then wrk -t1 -c8 for 8 s; total instructions / requests.
if [ -n "${CALLGRIND:-}" ]; then
  command -v valgrind >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
  per_request() { # label url out-file [header]
    local n tot
    if [ $# -eq 4 ]; then wrk -t1 -c8 -d3s -H "$4" "$2" >/dev/null; else wrk -t1 -c8 -d3s "$2" >/dev/null; fi
    callgrind_control -z >/dev/null 2>&1
    if [ $# -eq 4 ]; then n=$(wrk -t1 -c8 -d8s -H "$4" "$2" | awk '/requests in/ {print $1}')
    else n=$(wrk -t1 -c8 -d8s "$2" | awk '/requests in/ {print $1}'); fi
    callgrind_control -d >/dev/null 2>&1
    sleep 1
    # The dump (counters since the zeroing) is the first numbered file.
    tot=$(callgrind_annotate "$3.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
    printf '%-28s %8s requests, %8d instructions per request (callgrind)\n' "$1" "$n" $((tot / n))
  }
  sed 's/worker_processes 2;/worker_processes 1; master_process off;/; s/8081/8082/; s|nginx.pid|nginx-cg.pid|' \
    "$work/nginx.conf" > "$work/nginx-cg.conf"
  valgrind --tool=callgrind --callgrind-out-file="$work/cg-nginx.out" nginx -c "$work/nginx-cg.conf" -g 'daemon off;' 2>/dev/null &
  vg=$!
  until curl -sf http://127.0.0.1:8082/ >/dev/null; do sleep 0.5; done
  per_request "nginx proxy_pass" http://127.0.0.1:8082/ "$work/cg-nginx.out"
  kill "$vg"; wait "$vg" 2>/dev/null || true
  # The same samlgate config and store (the session stays valid), one worker.
  sg=$(pgrep -f "samlgate serve --config $work")
  kill "$sg"; while kill -0 "$sg" 2>/dev/null; do sleep 0.1; done
  SAMLGATE_WORKERS=1 valgrind --tool=callgrind --callgrind-out-file="$work/cg-samlgate.out" \
    target/release/samlgate serve --config "$work/samlgate.toml" 2>/dev/null >/dev/null &
  vg=$!
  pids+=("$vg")
  until curl -sf http://127.0.0.1:9090/healthz >/dev/null; do sleep 0.5; done
  per_request "samlgate (session check)" http://127.0.0.1:8080/ "$work/cg-samlgate.out" "Cookie: $cookie"
  kill "$vg"; wait "$vg" 2>/dev/null || true
fi
