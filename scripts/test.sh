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
cargo test --all-targets "$@"
# Interop with IdP software nobody here wrote: a full SP-initiated login
# through Debian's SimpleSAMLphp, driven with curl, then in headless Chromium
# (screenshots in target/interop-artifacts/).
BROWSER=1 SAMLGATE_BIN=target/debug/samlgate interop/ssp-login.sh
