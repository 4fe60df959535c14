#!/usr/bin/env bash
# The one-command demo: the gateway on the embedded store, with the TEST-ONLY
# development IdP (at /_demo-idp/) and a demo upstream page that shows the
# identity headers it receives. Open http://127.0.0.1:8080/ and sign in as
# alice@example.com (licensed), bob@example.com, or carol@partner.org (outside
# the associated domains: asks for email verification; the message lands in
# data/outbox/). Password: demo. The console is at
# http://127.0.0.1:9090/console/ (the script prints its admin token).
# Ctrl-C stops it.
#
#   scripts/demo.sh                      # jit provisioning
#   SAMLGATE_DEMO_MODE=prior_to_sign_in scripts/demo.sh
#       # then: curl -H 'Authorization: Bearer demo-admin-token-please-change' \
#       #   -d '{"action":"ssoCreate","user_info":{"email":"bob@example.com","type":1}}' \
#       #   http://127.0.0.1:9090/api/v2/users
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q
config=config/samlgate.toml
if [ "${SAMLGATE_DEMO_MODE:-jit}" = "prior_to_sign_in" ]; then
  config=$(mktemp --suffix=.toml)
  sed 's/^mode = "jit".*/mode = "prior_to_sign_in"/' config/samlgate.toml > "$config"
fi
export SAMLGATE_ADMIN_TOKENS=${SAMLGATE_ADMIN_TOKENS:-demo-admin-token-please-change}
cat <<EOF
samlgate demo
  sign in:  http://127.0.0.1:8080/   (alice@example.com, bob@example.com, carol@partner.org; password: demo)
  console:  http://127.0.0.1:9090/console/   (admin token: ${SAMLGATE_ADMIN_TOKENS%%,*})
EOF
exec target/release/samlgate serve --config "$config"
