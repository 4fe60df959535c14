#!/usr/bin/env bash
# Interop smoke test against real IdP software nobody here wrote: Debian's
# SimpleSAMLphp (1.19, served by `php -S` on loopback, no Apache) as a SAML 2.0
# IdP with exampleauth:UserPass users, and samlgate configured from the IdP's
# own metadata URL (and the IdP from samlgate's /saml/metadata, as an operator
# would). A full SP-initiated login is driven with curl (the browser-driven
# scenarios of issue #5 come next): login form, signed Response and Assertion
# (RSA-SHA256), ACS, session, identity headers at the upstream; then the same
# captured response is run through `samlgate check-response`.
#   interop/ssp-login.sh        (SAMLGATE_BIN picks the binary; default: the
#                                release build, else the debug one, else builds)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in simplesamlphp php8.2-cli php8.2-xml php8.2-mbstring php8.2-curl nginx-light; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  # Naming nginx-light (an httpd) keeps Apache out of the install.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bin=${SAMLGATE_BIN:-}
if [ -z "$bin" ]; then
  if [ -x target/release/samlgate ]; then bin=target/release/samlgate
  elif [ -x target/debug/samlgate ]; then bin=target/debug/samlgate
  else cargo build -q; bin=target/debug/samlgate; fi
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
IDP=$(port); GW=$(port); ADMIN=$(port); UP=$(port); SMTP=$(port); GW2=$(port); ADMIN2=$(port)
idp="http://127.0.0.1:$IDP"
gw="http://127.0.0.1:$GW"
gw2="http://127.0.0.1:$GW2"     # a second gateway in prior_to_sign_in mode
mkdir -p "$work"/ssp/{config,metadata,cert,data,tmp,log,sessions}
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=SimpleSAMLphp interop IdP (TEST ONLY)" \
  -keyout "$work/ssp/cert/idp.key" -out "$work/ssp/cert/idp.crt" 2>/dev/null
chmod 644 "$work/ssp/cert/idp.key"

# --- samlgate first (its metadata feeds the IdP) ---
cat > "$work/samlgate.toml" <<TOML
[listen]
public = "127.0.0.1:$GW"
admin = "127.0.0.1:$ADMIN"
[sp]
entity_id = "$gw/saml/metadata"
acs_url = "$gw/saml/acs"
key_file = "$(pwd)/certs/demo-sp.key"
cert_file = "$(pwd)/certs/demo-sp.crt"
[idp]
metadata_url = "$idp/saml2/idp/metadata.php"
[[mapping.rules]]
name = "licensed-group"
attribute = "groups"
contains = "Meetings-Licensed"
license = "licensed"
[provisioning]
associated_domains = ["example.com"]
outbox_dir = "$work/outbox"
[smtp]
host = "127.0.0.1"
port = $SMTP
tls = "none"
from = "meetings@example.com"
[store]
path = "$work/samlgate.db"
[upstream]
url = "http://127.0.0.1:$UP"
[demo]
enabled = true        # only for its upstream page showing the identity headers
TOML
# The prior_to_sign_in gateway: its own SP entity, store and admin token.
sed -e "s|127.0.0.1:$GW|127.0.0.1:$GW2|g" -e "s|127.0.0.1:$ADMIN\"|127.0.0.1:$ADMIN2\"|" \
    -e "s|$work/samlgate.db|$work/samlgate2.db|" -e "s|^enabled = true.*|enabled = true\nserve_upstream = false|" \
    -e "s|^associated_domains|mode = \"prior_to_sign_in\"\nassociated_domains|" \
    "$work/samlgate.toml" > "$work/samlgate2.toml"
printf '[admin]\ntokens = ["interop-admin-token-0123456789"]\n' >> "$work/samlgate2.toml"
sp_cert=$(grep -v -- '-----' certs/demo-sp.crt | tr -d '\n')

cat > "$work/ssp/config/config.php" <<PHP
<?php
\$config = [
  'baseurlpath' => '$idp/',
  'certdir' => '$work/ssp/cert/',
  'metadatadir' => '$work/ssp/metadata/',
  'datadir' => '$work/ssp/data/',
  'tempdir' => '$work/ssp/tmp/',
  'loggingdir' => '$work/ssp/log/',
  'attributenamemapdir' => '/etc/simplesamlphp/attributemap/',
  'secretsalt' => 'interop-test-salt-not-secret',
  'auth.adminpassword' => 'interop-admin',
  'technicalcontact_email' => 'ops@example.com',
  'timezone' => 'UTC',
  'enable.saml20-idp' => true,
  'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true],
  'store.type' => 'phpsession',
  'session.phpsession.savepath' => '$work/ssp/sessions',
  'session.phpsession.cookiename' => 'SSPIDPSESSION',
  'session.cookie.secure' => false,
  'session.cookie.samesite' => 'Lax',
  'logging.handler' => 'stderr',
  'logging.level' => SimpleSAML\Logger::WARNING,
  'metadata.sources' => [['type' => 'flatfile']],
  'showerrors' => false,
];
PHP
cat > "$work/ssp/config/authsources.php" <<'PHP'
<?php
$config = [
  'admin' => ['core:AdminPassword'],
  'example-userpass' => [
    'exampleauth:UserPass',
    'alice:alicepass' => [
      'email' => ['alice@example.com'], 'givenName' => ['Alice'], 'sn' => ['Liddell'],
      'department' => ['Engineering'], 'groups' => ['staff', 'Meetings-Licensed'],
    ],
    'bob:bobpass' => [
      'email' => ['bob@example.com'], 'givenName' => ['Bob'], 'sn' => ['Builder'],
      'department' => ['Sales'], 'groups' => ['staff'],
    ],
    'carol:carolpass' => [
      'email' => ['carol@partner.org'], 'givenName' => ['Carol'], 'sn' => ['Danvers'],
      'department' => ['Partners'], 'groups' => ['partners'],
    ],
  ],
];
PHP
cat > "$work/ssp/metadata/saml20-idp-hosted.php" <<'PHP'
<?php
$metadata['__DYNAMIC:1__'] = [
  'host' => '__DEFAULT__',
  'privatekey' => 'idp.key',
  'certificate' => 'idp.crt',
  'auth' => 'example-userpass',
  'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  'saml20.sign.assertion' => true,
  'saml20.sign.response' => true,
];
PHP
cat > "$work/ssp/metadata/saml20-sp-remote.php" <<PHP
<?php
\$metadata['$gw/saml/metadata'] = [
  'AssertionConsumerService' => '$gw/saml/acs',
  'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  'simplesaml.nameidattribute' => 'email',
  'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
  'validate.authnrequest' => true,
  'certData' => '$sp_cert',
];
\$metadata['$gw2/saml/metadata'] = [
  'AssertionConsumerService' => '$gw2/saml/acs',
  'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  'simplesaml.nameidattribute' => 'email',
  'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
  'validate.authnrequest' => true,
  'certData' => '$sp_cert',
];
PHP
# A real SMTP server for the verification mail (aiosmtpd, into a maildir).
/usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$SMTP" -c aiosmtpd.handlers.Mailbox "$work/maildir" 2>/dev/null &
pids+=($!)
SIMPLESAMLPHP_CONFIG_DIR="$work/ssp/config" php -d display_errors=0 -S "127.0.0.1:$IDP" \
  -t /usr/share/simplesamlphp/www 2>"$work/php.log" &
pids+=($!)
until curl -sf "$idp/saml2/idp/metadata.php" >/dev/null; do sleep 0.2; done
"$bin" serve --config "$work/samlgate.toml" 2>"$work/samlgate.log" &
pids+=($!)
until curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null; do sleep 0.2; done

# --- the login, as a browser would do it ---
jar="$work/cookies"
login=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$gw/saml/login?return_to=/meetings/7")
case "$login" in "$idp/saml2/idp/SSOService.php?SAMLRequest="*) ;; *) echo "FAIL: login did not go to the IdP: $login"; exit 1;; esac
form=$(curl -s -L -c "$jar" -b "$jar" "$login")
state=$(echo "$form" | grep -o 'name="AuthState" value="[^"]*"' | head -1 | sed 's/.*value="//;s/"$//' | python3 -c 'import html,sys; print(html.unescape(sys.stdin.read().strip()))')
[ -n "$state" ] || { echo "FAIL: no login form at the IdP"; echo "$form" | head -20; exit 1; }
post=$(curl -s -c "$jar" -b "$jar" "$idp/module.php/core/loginuserpass.php" \
  --data-urlencode "username=alice" --data-urlencode "password=alicepass" --data-urlencode "AuthState=$state")
resp=$(echo "$post" | grep -o 'name="SAMLResponse" value="[^"]*"' | sed 's/.*value="//;s/"$//')
relay=$(echo "$post" | grep -o 'name="RelayState" value="[^"]*"' | sed 's/.*value="//;s/"$//')
[ -n "$resp" ] || { echo "FAIL: the IdP returned no SAMLResponse"; echo "$post" | head -20; exit 1; }
echo "$resp" > "$work/response.b64"
acs=$(curl -s -D - -o /dev/null -c "$jar" -b "$jar" "$gw/saml/acs" \
  --data-urlencode "SAMLResponse=$resp" --data-urlencode "RelayState=$relay")
echo "$acs" | grep -q "^HTTP/1.1 303" || { echo "FAIL: ACS refused"; echo "$acs"; tail -5 "$work/samlgate.log"; exit 1; }
echo "$acs" | grep -qi "^location: /meetings/7" || { echo "FAIL: wrong return path"; echo "$acs"; exit 1; }
page=$(curl -s -c "$jar" -b "$jar" "$gw/meetings/7")
echo "$page" | grep -q "alice@example.com" || { echo "FAIL: identity headers missing"; echo "$page"; exit 1; }
echo "$page" | grep -q "licensed" || { echo "FAIL: license rule did not apply"; exit 1; }
echo "OK: SP-initiated login through SimpleSAMLphp reached the upstream as alice@example.com (licensed)"
# The captured response, through check-response (the request id came from the AuthnRequest).
rid=$(python3 - "$login" <<'PY'
import base64, sys, urllib.parse, zlib, re
q = urllib.parse.parse_qs(urllib.parse.urlparse(sys.argv[1]).query)
xml = zlib.decompress(base64.b64decode(q["SAMLRequest"][0]), -15).decode()
print(re.search(r'ID="([^"]+)"', xml).group(1))
PY
)
"$bin" check-response --config "$work/samlgate.toml" --request-id "$rid" "$work/response.b64" > "$work/check.json" 2>/dev/null \
  || { echo "FAIL: check-response refused the captured response"; cat "$work/check.json"; exit 1; }
python3 - "$work/check.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["decision"] == "accept", r
assert r["assertion"]["signed_by"] == "both", r["assertion"]["signed_by"]
print("OK: check-response accepts it:", r["user"]["email"], r["user"]["license"], "signed by", r["assertion"]["signed_by"])
PY
if [ -n "${SAVE_RESPONSE:-}" ]; then cp "$work/response.b64" "$SAVE_RESPONSE"; fi
echo "interop: 2 passed, 0 failed"
if [ "${BROWSER:-0}" = "1" ]; then
  need=()
  for p in chromium chromium-driver python3-selenium; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  mkdir -p target/interop-artifacts
  "$bin" serve --config "$work/samlgate2.toml" 2>"$work/samlgate2.log" &
  pids+=($!)
  until curl -sf "http://127.0.0.1:$ADMIN2/healthz" >/dev/null; do sleep 0.2; done
  GW="$gw" GW2="$gw2" ADMIN2="http://127.0.0.1:$ADMIN2" ADMIN_TOKEN="interop-admin-token-0123456789" \
  IDP="$idp" ADMIN="http://127.0.0.1:$ADMIN" MAILDIR="$work/maildir" \
    AUTHSOURCES="$work/ssp/config/authsources.php" DB="$work/samlgate.db" \
    ARTIFACTS="$(pwd)/target/interop-artifacts" /usr/bin/python3 interop/browser.py
fi
