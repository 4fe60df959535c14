#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks that the committed
# fixtures are what tests/fixtures/gen.py produces, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
# Fixtures are generated, never hand-edited: regenerate into a scratch copy
# and compare (encrypted and ECDSA fixtures carry fresh randomness, so they are
# compared by name only).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r tests/fixtures "$tmp/fixtures"
/usr/bin/python3 "$tmp/fixtures/gen.py" >/dev/null
for f in tests/fixtures/responses/*; do
  name=$(basename "$f")
  [ -e "$tmp/fixtures/responses/$name" ] || { echo "fixture $name is not produced by gen.py" >&2; exit 1; }
  case "$name" in *encrypted*|*ecdsa*) continue ;; esac
  cmp -s "$f" "$tmp/fixtures/responses/$name" || { echo "fixture $name differs from gen.py output: rerun tests/fixtures/gen.py" >&2; exit 1; }
done
# The processes that test servers run as; those running now are not ours.
ours() {
  ps -eo pid=,comm= | awk '$2 ~ /^(redis-server|redis-cli|php|php[0-9.]*|nginx|chromium|chrome|chrome_crashpad|chromedriver|samlgate|xmlsec1)$/ {print $1}' | sort
}
before=$(ours)
cargo test --all-targets "$@"
# Interop with IdP software nobody here wrote: a full SP-initiated login
# through Debian's SimpleSAMLphp, driven with curl, then in headless Chromium
# (screenshots in target/interop-artifacts/).
BROWSER=1 SAMLGATE_BIN=target/debug/samlgate interop/ssp-login.sh
# Nothing this run started may outlive it (a test or script that leaves a
# server behind fails the run). A few seconds' grace for processes that are
# exiting.
for _ in $(seq 20); do
  left=$(comm -13 <(echo "$before") <(ours))
  [ -z "$left" ] && break
  sleep 0.5
done
if [ -n "$left" ]; then
  echo "FAIL: processes started by the tests are still running:" >&2
  for p in $left; do ps -o pid=,args= -p "$p" >&2 || true; done
  exit 1
fi
echo "no process left behind"
