#!/usr/bin/env bash
# Seeds the fuzz corpora from the generated fixtures.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/saml_response corpus/metadata corpus/mapping corpus/verifier_differential corpus/proxy_differential
cp seeds/proxy_differential/* corpus/proxy_differential/
cp ../tests/fixtures/responses/*.xml ../tests/fixtures/responses/*.b64 corpus/saml_response/
cp ../tests/fixtures/responses/*.xml ../tests/fixtures/responses/*.b64 corpus/verifier_differential/
cp ../tests/fixtures/idp-metadata.xml corpus/metadata/fixtures-idp.xml
cp ../config/idp-metadata.xml corpus/metadata/demo-idp.xml
printf 'alice@example.com\nemail=Alice@Example.com\ngroups=a|b|Meetings-Licensed\n' > corpus/mapping/basic
for t in admin_json csv_import fast_head; do
  mkdir -p corpus/$t
  cp seeds/$t/* corpus/$t/
done
