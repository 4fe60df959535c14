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
. bench/redis.sh
"${pin[@]}" target/release/examples/soak "redis://127.0.0.1:$port" "${1:-30}" "${2:-0.8}"
