#!/usr/bin/env bash
# Proxy benchmark, side by side in one run on this machine: wrk against
#   1. the upstream directly,
#   2. nginx proxy_pass to it (its own nginx process),
#   3. samlgate (with a signed-in session cookie) to it.
# The upstream is a separate nginx answering a 1 KB page, so neither proxy
# shares its process with the upstream. samlgate runs in demo mode only to
# sign in through the development IdP. Uses ports 8080 (samlgate), 9090
# (admin), 3000 (upstream), 8081 (nginx proxy).
#   bench/proxy.sh [DURATION_SECS] [CONNECTIONS]
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
run "upstream direct" http://127.0.0.1:3000/
run "nginx proxy_pass" http://127.0.0.1:8081/
run "samlgate (session check)" http://127.0.0.1:8080/ "Cookie: $cookie"
python3 - "$work" <<'PY'
import sys, glob, os
w = sys.argv[1]
r = {os.path.basename(p)[:-4]: float(open(p).read()) for p in glob.glob(w + "/*.rps")}
d = r["upstream_direct"]
print(f"ratios to direct: nginx {r['nginx_proxy_pass']/d:.2f}x, samlgate {r['samlgate_(session_check)']/d:.2f}x; samlgate/nginx {r['samlgate_(session_check)']/r['nginx_proxy_pass']:.2f}x")
PY
