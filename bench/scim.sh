#!/usr/bin/env bash
# SCIM provisioning speed: an Okta-style initial sync (filter + POST per
# user), creates alone and deactivations, on Redis and on the embedded store;
# the gateway pinned to CPU 0, the driver and Redis on the rest.
#   bench/scim.sh [USERS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
cargo build --release -q --bin samlgate --example scim_bench
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
if command -v taskset >/dev/null; then pin=(taskset -c 1); else pin=(); fi
"${pin[@]}" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
rpid=$!
cleanup() { kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"${pin[@]}" target/release/examples/scim_bench "redis://127.0.0.1:$port" "${1:-100000}" "${2:-8}"
