#!/usr/bin/env bash
# Import benchmark: a generated CSV (default 1,000,000 rows, a sprinkling of
# bad rows) into a fresh embedded store and a fresh redis-server, each
# imported twice (the rerun must create nothing), as basic users and as
# licensed SSO users (a vanity name claimed for each). Prints seconds, rows/s
# and peak RSS of each run.
#   bench/import.sh [ROWS] [LICENSES...]   (default: licensed basic)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
shift || true
licenses=("${@:-licensed basic}")
read -r -a licenses <<< "${licenses[*]}"
scripts/install-deps.sh --test
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
cargo build --release -q
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
rpid=$!
trap 'kill $rpid 2>/dev/null; rm -rf "$work"' EXIT
python3 bench/gen-csv.py "$rows" > "$work/users.csv"
md=$(pwd)/tests/fixtures/idp-metadata.xml
common="[sp]
entity_id = \"https://sp.example.com/saml/metadata\"
acs_url = \"https://sp.example.com/saml/acs\"
[idp]
metadata_file = \"$md\"
[provisioning]
associated_domains = [\"example.com\"]
outbox_dir = \"$work/outbox\""
printf '%s\n[store]\npath = "%s/embedded.db"\n' "$common" "$work" > "$work/embedded.toml"
printf '%s\n[store]\nkind = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$common" "$port" > "$work/redis.toml"
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
run() { # label config license
  local start end extra=()
  [ "$3" = licensed ] && extra=(--sso)
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss" target/release/samlgate users import --config "$2" "$work/users.csv" \
    --license "$3" "${extra[@]}" --json > "$work/report.json"
  end=$(date +%s.%N)
  python3 - "$1" "$start" "$end" "$work/rss" "$work/report.json" "$rows" <<'PY'
import json, sys
label, start, end, rss, report, rows = sys.argv[1:]
r = json.load(open(report))
secs = float(end) - float(start)
print(f"{label:<22} {int(rows):>9} rows  {secs:7.1f} s  {int(rows)/secs:>9.0f} rows/s  peak RSS {int(open(rss).read().split()[-1])/1024:6.1f} MiB"
      f"  created {r['created']} skipped {r['skipped']} bad {r['error_count']}")
PY
}
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
for lic in "${licenses[@]}"; do
  rm -f "$work/embedded.db"
  redis-cli -p "$port" flushall >/dev/null
  run "embedded $lic" "$work/embedded.toml" "$lic"
  run "embedded $lic rerun" "$work/embedded.toml" "$lic"
  run "redis $lic" "$work/redis.toml" "$lic"
  run "redis $lic rerun" "$work/redis.toml" "$lic"
done
