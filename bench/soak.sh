#!/usr/bin/env bash
# The soak (issue #22, scenario 5): mixed load (first and repeat logins,
# proxied requests, admin API reads, a 1,000-row CSV import every minute) at
# 80 % of the measured capacity, on Redis, for 30 minutes; per-minute rate,
# p99 latencies and RSS, and the RSS growth from minute 5 to the end.
#   bench/soak.sh [MINUTES] [FRACTION]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
cargo build --release -q --bin samlgate --example soak
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
if command -v taskset >/dev/null; then pin=(taskset -c 1); else pin=(); fi
"${pin[@]}" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
rpid=$!
cleanup() { kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"${pin[@]}" target/release/examples/soak "redis://127.0.0.1:$port" "${1:-30}" "${2:-0.8}"
