#!/usr/bin/env bash
# The fault scenarios of tests/it/faults.rs in their long form: a standalone
# Redis SIGKILLed and restarted empty, a stalled store, a Redis Cluster master
# SIGKILLed under load, a replica SIGKILLed behind nginx. Prints, per scenario, what was injected and when, the
# outcome counts, the per-second timeline and the recovery time.
#   bench/faults.sh [SECONDS_OF_LOAD]   (default 60; CI runs them with 8-12)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
FAULTS_SECS="${1:-60}" cargo test --test it faults_ -- --nocapture --test-threads 1 2>&1 \
  | grep -E "^(redis killed|store stalled|stall from|cluster master killed|master [0-9]+ killed|proxied requests of|replica killed|[0-9]+ logins answered)|^test |test result"
