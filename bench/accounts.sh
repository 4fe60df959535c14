#!/usr/bin/env bash
# Accounts at scale, side by side in one run: N accounts (default 10,000) in
# one Redis database against one account in another; start-up time, RSS per
# account, host lookup cost, the time for a change made on one replica to be
# served by another, and first-login throughput N vs 1 in alternating rounds
# (the gateway pinned to CPU 0, the load generator and Redis on the rest).
#   bench/accounts.sh [N] [LOGINS_PER_ROUND] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
cargo build --release -q --bin samlgate --example accounts_bench
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
rpid=$!
cleanup() { kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if command -v taskset >/dev/null; then pin=(taskset -c 1); else pin=(); fi
"${pin[@]}" target/release/examples/accounts_bench "redis://127.0.0.1:$port" "${1:-10000}" "${2:-5000}" "${3:-3}"
