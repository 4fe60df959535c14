#!/usr/bin/env bash
# First logins per core, embedded store against Redis, in one run: both
# gateways pinned to CPU 0 in turn, the load generator and Redis on the rest.
#   bench/logins.sh [LOGINS_PER_ROUND] [ROUNDS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
cargo build --release -q --bin samlgate --example logins_bench
. bench/redis.sh
echo "openssl speed rsa2048 (verifies/s): $(openssl speed -seconds 2 rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $NF}')"
"${pin[@]}" target/release/examples/logins_bench "redis://127.0.0.1:$port" "${1:-5000}" "${2:-3}" "${3:-16}"
