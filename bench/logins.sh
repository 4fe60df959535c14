#!/usr/bin/env bash
# First logins per core, embedded store against Redis, in one run: both
# gateways pinned to CPU 0 in turn, the load generator and Redis on the rest.
#   bench/logins.sh [LOGINS_PER_ROUND] [ROUNDS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
cargo build --release -q --bin samlgate --example logins_bench
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
if command -v taskset >/dev/null; then pin=(taskset -c 1); else pin=(); fi
"${pin[@]}" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
rpid=$!
cleanup() { kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "openssl speed rsa2048 (verifies/s): $(openssl speed -seconds 2 rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $NF}')"
"${pin[@]}" target/release/examples/logins_bench "redis://127.0.0.1:$port" "${1:-5000}" "${2:-3}" "${3:-16}"
