#!/usr/bin/env bash
# Runs fuzz targets one after another for a set time each and appends one
# line per run to fuzz/campaign.log: date, commit, target, executions,
# seconds, outcome (ok, or the crash file). Usage:
#   fuzz/campaign.sh admin_json:1800 fast_head:1200 ...
# Build first: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O <target>.
# A crash stops that target's run; its input is left in fuzz/artifacts/.
set -uo pipefail
cd "$(dirname "$0")"
./seed.sh
commit=$(git rev-parse --short HEAD)
bin=target/x86_64-unknown-linux-gnu/release
for spec in "$@"; do
  t=${spec%%:*}
  secs=${spec##*:}
  mkdir -p "artifacts/$t"
  extra=()
  case $t in
    verifier_differential|saml_response) extra=(-max_len=65536 -detect_leaks=0) ;;
  esac
  log=$(mktemp)
  start=$(date +%s)
  "$bin/$t" "corpus/$t" -max_total_time="$secs" -close_fd_mask=3 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  outcome=ok
  if [ "$rc" -ne 0 ]; then
    outcome="crash rc=$rc $(ls -t "artifacts/$t" | head -1)"
    cp "$log" "artifacts/$t/last-run.log"
  fi
  echo "$(date -u +%FT%TZ) $commit $t runs=${runs:-0} secs=$took $outcome" | tee -a campaign.log
  rm -f "$log"
done
