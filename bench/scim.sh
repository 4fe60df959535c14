#!/usr/bin/env bash
# SCIM provisioning speed: an Okta-style initial sync (filter + POST per
# user), creates alone and deactivations, on Redis and on the embedded store;
# the gateway pinned to CPU 0, the driver and Redis on the rest.
#   bench/scim.sh [USERS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
cargo build --release -q --bin samlgate --example scim_bench
. bench/redis.sh
"${pin[@]}" target/release/examples/scim_bench "redis://127.0.0.1:$port" "${1:-100000}" "${2:-8}"
