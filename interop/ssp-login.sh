#!/usr/bin/env bash
# Interop against real IdP software nobody here wrote: Debian's SimpleSAMLphp
# (1.19, served by `php -S` on loopback, no Apache) as a SAML 2.0 IdP with
# exampleauth:UserPass users, and samlgate configured from the IdP's own
# metadata URL (and the IdP from samlgate's /saml/metadata, as an operator
# would). Everything it starts is stopped on exit, failure included.
#  1. an SP-initiated login driven with curl: login form, signed Response and
#     Assertion (RSA-SHA256), ACS, session, identity headers at the upstream;
#  2. the same captured response through `samlgate check-response`;
#  3. a second account created through the admin API: its own host name
#     (acme.localhost), its own SimpleSAMLphp IdP with its own key (metadata
#     by URL); an SP-initiated login there reaches the upstream as that
#     account's user, and the first account's session is none there;
#  4. scale-out: two replicas on a 3-master Redis Cluster behind an nginx
#     front; an IdP-initiated assertion used on one is refused on the other;
#  with BROWSER=1, the scenarios of interop/browser.py in headless Chromium
#  (JIT, prior_to_sign_in, email verification, SP-initiated Single Logout
#  through the IdP, IdP-initiated Single Logout landing on the other replica,
#  expired session, and the scale-out login crossing replicas while one of
#  them is killed).
#   interop/ssp-login.sh        (SAMLGATE_BIN picks the binary; default: the
#                                release build, else the debug one, else builds)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in simplesamlphp php8.2-cli php8.2-xml php8.2-mbstring php8.2-curl nginx-light redis-server redis-tools; do
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
# A process started with setsid leads its own group: the whole group goes
# (php -S forks PHP_CLI_SERVER_WORKERS workers that outlive their parent).
cleanup() { for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# Waits up to 60 s for a command to succeed.
wait_for() { for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "FAIL: timed out waiting for: $*"; exit 1; }
# Listener ports come from below the kernel's ephemeral range (32768+): a
# port the kernel handed out and took back can be given to an outgoing
# connection (curl, php, a Redis client) before the server that was to
# listen on it starts, minutes later.
port() { python3 -c '
import random, socket
while True:
    p = random.randint(12000, 19999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'; }
# A Redis Cluster node listens on its port + 10000 too, so its port must be at
# most 55535 with both free: picked below the kernel's ephemeral range.
cluster_port() { python3 -c '
import random, socket
def free(p):
    s = socket.socket()
    try: s.bind(("127.0.0.1", p)); return True
    except OSError: return False
    finally: s.close()
while True:
    p = random.randint(20000, 30000)
    if free(p) and free(p + 10000): print(p); break'; }
IDP=$(port); GW=$(port); ADMIN=$(port); UP=$(port); SMTP=$(port); GW2=$(port); ADMIN2=$(port); IDP2=$(port)
FRONT=$(port); R1=$(port); R2=$(port); R1A=$(port); R2A=$(port); C1=$(cluster_port); C2=$(cluster_port); C3=$(cluster_port)
front="http://127.0.0.1:$FRONT"   # nginx round-robin in front of two replicas
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
[session]
idle_timeout_secs = 30  # the expired-session scenario waits this out
[demo]
enabled = true        # only for its upstream page showing the identity headers
[admin]
tokens = ["interop-admin-token-0123456789"]
TOML
# The prior_to_sign_in gateway: its own SP entity, store and admin token.
sed -e "s|127.0.0.1:$GW|127.0.0.1:$GW2|g" -e "s|127.0.0.1:$ADMIN\"|127.0.0.1:$ADMIN2\"|" \
    -e "s|$work/samlgate.db|$work/samlgate2.db|" -e "s|^enabled = true.*|enabled = true\nserve_upstream = false|" \
    -e "s|^associated_domains|mode = \"prior_to_sign_in\"\nassociated_domains|" \
    "$work/samlgate.toml" > "$work/samlgate2.toml"
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
  // Where an IdP-initiated logout may return to.
  'trusted.url.domains' => ['127.0.0.1:$GW', '127.0.0.1:$GW2', '127.0.0.1:$FRONT'],
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
  // Single Logout: samlgate refuses unsigned logout messages.
  'sign.logout' => true,
];
PHP
cat > "$work/ssp/metadata/saml20-sp-remote.php" <<PHP
<?php
\$metadata['$gw/saml/metadata'] = [
  'AssertionConsumerService' => '$gw/saml/acs',
  'SingleLogoutService' => [['Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', 'Location' => '$gw/saml/slo']],
  'validate.logout' => true,
  'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  'simplesaml.nameidattribute' => 'email',
  'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
  'validate.authnrequest' => true,
  'certData' => '$sp_cert',
];
\$metadata['$gw2/saml/metadata'] = [
  'AssertionConsumerService' => '$gw2/saml/acs',
  'SingleLogoutService' => [['Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', 'Location' => '$gw2/saml/slo']],
  'validate.logout' => true,
  'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  'simplesaml.nameidattribute' => 'email',
  'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
  'validate.authnrequest' => true,
  'certData' => '$sp_cert',
];
\$metadata['$front/saml/metadata'] = [
  'AssertionConsumerService' => '$front/saml/acs',
  'SingleLogoutService' => [['Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', 'Location' => '$front/saml/slo']],
  'validate.logout' => true,
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
# No opcode cache: the browser test edits authsources.php between logins
# (a cache revalidating every 2 s could serve the old attributes).
PHP_CLI_SERVER_WORKERS=4 SIMPLESAMLPHP_CONFIG_DIR="$work/ssp/config" setsid php -d display_errors=0 -d opcache.enable=0 -d opcache.enable_cli=0 -S "127.0.0.1:$IDP" \
  -t /usr/share/simplesamlphp/www 2>"$work/php.log" &
pids+=($!)
wait_for curl --max-time 5 -sf "$idp/saml2/idp/metadata.php"
"$bin" serve --config "$work/samlgate.toml" 2>"$work/samlgate.log" &
pids+=($!)
wait_for curl --max-time 5 -sf "http://127.0.0.1:$ADMIN/healthz"

# --- the login, as a browser would do it ---
jar="$work/cookies"
login=$(curl --max-time 30 -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$gw/saml/login?return_to=/meetings/7")
case "$login" in "$idp/saml2/idp/SSOService.php?SAMLRequest="*) ;; *) echo "FAIL: login did not go to the IdP: $login"; exit 1;; esac
form=$(curl --max-time 30 -s -L -c "$jar" -b "$jar" "$login")
state=$(echo "$form" | grep -o 'name="AuthState" value="[^"]*"' | head -1 | sed 's/.*value="//;s/"$//' | python3 -c 'import html,sys; print(html.unescape(sys.stdin.read().strip()))')
[ -n "$state" ] || { echo "FAIL: no login form at the IdP"; echo "$form" | head -20; exit 1; }
post=$(curl --max-time 30 -s -c "$jar" -b "$jar" "$idp/module.php/core/loginuserpass.php" \
  --data-urlencode "username=alice" --data-urlencode "password=alicepass" --data-urlencode "AuthState=$state")
resp=$(echo "$post" | grep -o 'name="SAMLResponse" value="[^"]*"' | sed 's/.*value="//;s/"$//')
relay=$(echo "$post" | grep -o 'name="RelayState" value="[^"]*"' | sed 's/.*value="//;s/"$//')
[ -n "$resp" ] || { echo "FAIL: the IdP returned no SAMLResponse"; echo "$post" | head -20; exit 1; }
echo "$resp" > "$work/response.b64"
acs=$(curl --max-time 30 -s -D - -o /dev/null -c "$jar" -b "$jar" "$gw/saml/acs" \
  --data-urlencode "SAMLResponse=$resp" --data-urlencode "RelayState=$relay")
echo "$acs" | grep -q "^HTTP/1.1 303" || { echo "FAIL: ACS refused"; echo "$acs"; tail -5 "$work/samlgate.log"; exit 1; }
echo "$acs" | grep -qi "^location: /meetings/7" || { echo "FAIL: wrong return path"; echo "$acs"; exit 1; }
page=$(curl --max-time 30 -s -c "$jar" -b "$jar" "$gw/meetings/7")
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
assert any("verified natively" in t["detail"] for t in r["trace"]), r["trace"]
print("OK: check-response accepts it:", r["user"]["email"], r["user"]["license"], "signed by", r["assertion"]["signed_by"], "(native verifier)")
PY
# The same response through libxmlsec1, the reference verifier: same decision.
{ cat "$work/samlgate.toml"; printf '[security]\nverifier = "libxmlsec1"\n'; } > "$work/samlgate-xmlsec.toml"
"$bin" check-response --config "$work/samlgate-xmlsec.toml" --request-id "$rid" "$work/response.b64" > "$work/check-xmlsec.json" 2>/dev/null \
  || { echo "FAIL: libxmlsec1 refused what the native verifier accepted"; cat "$work/check-xmlsec.json"; exit 1; }
cmp -s <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["decision"], r["user"])' "$work/check.json") \
       <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["decision"], r["user"])' "$work/check-xmlsec.json") \
  || { echo "FAIL: the verifiers disagree on SimpleSAMLphp's response"; exit 1; }
echo "OK: libxmlsec1 decides SimpleSAMLphp's response the same way"
if [ -n "${SAVE_RESPONSE:-}" ]; then cp "$work/response.b64" "$SAVE_RESPONSE"; fi

# --- a second account, created through the admin API, with its own IdP ---
# Its own SimpleSAMLphp (own config, own key) and its own host name: curl
# resolves *.localhost to loopback, and samlgate picks the account by Host.
idp2="http://127.0.0.1:$IDP2"
acct="http://acme.localhost:$GW"
mkdir -p "$work"/ssp2/{config,metadata,cert,data,tmp,log,sessions}
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=SimpleSAMLphp interop IdP 2 (TEST ONLY)" \
  -keyout "$work/ssp2/cert/idp.key" -out "$work/ssp2/cert/idp.crt" 2>/dev/null
chmod 644 "$work/ssp2/cert/idp.key"
sed -e "s|$idp/|$idp2/|" -e "s|$work/ssp/|$work/ssp2/|g" -e "s|SSPIDPSESSION|SSPIDP2SESSION|" \
  "$work/ssp/config/config.php" > "$work/ssp2/config/config.php"
cat > "$work/ssp2/config/authsources.php" <<'PHP'
<?php
$config = [
  'admin' => ['core:AdminPassword'],
  'example-userpass' => [
    'exampleauth:UserPass',
    'dave:davepass' => [
      'email' => ['dave@acme.example'], 'givenName' => ['Dave'], 'sn' => ['Acme'],
      'groups' => ['acme-staff'],
    ],
    'erin:erinpass' => [
      'email' => ['erin@acme.example'], 'givenName' => ['Erin'], 'sn' => ['Acme'],
      'groups' => ['acme-staff'],
    ],
  ],
];
PHP
cp "$work/ssp/metadata/saml20-idp-hosted.php" "$work/ssp2/metadata/"
cat > "$work/ssp2/metadata/saml20-sp-remote.php" <<PHP
<?php
\$metadata['$acct/saml/metadata'] = [
  'AssertionConsumerService' => '$acct/saml/acs',
  'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  'simplesaml.nameidattribute' => 'email',
  'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
];
PHP
PHP_CLI_SERVER_WORKERS=2 SIMPLESAMLPHP_CONFIG_DIR="$work/ssp2/config" setsid php -d display_errors=0 -S "127.0.0.1:$IDP2" \
  -t /usr/share/simplesamlphp/www 2>"$work/php2.log" &
pids+=($!)
wait_for curl --max-time 5 -sf "$idp2/saml2/idp/metadata.php"
cat > "$work/acme.json" <<JSON
{"name": "Acme (interop)", "hosts": ["acme.localhost"],
 "sp": {"entity_id": "$acct/saml/metadata", "acs_url": "$acct/saml/acs"},
 "idp": {"metadata_url": "$idp2/saml2/idp/metadata.php"},
 "provisioning": {"mode": "jit", "associated_domains": ["acme.example"]}}
JSON
created=$(curl --max-time 30 -s -o "$work/acme-put.json" -w '%{http_code}' -X PUT "http://127.0.0.1:$ADMIN/api/v2/accounts/acme" \
  -H "Authorization: Bearer interop-admin-token-0123456789" -H "Content-Type: application/json" --data-binary "@$work/acme.json")
[ "$created" = "201" ] || { echo "FAIL: account not created ($created)"; cat "$work/acme-put.json"; exit 1; }
jar3="$work/cookies3"
login=$(curl --max-time 30 -s -c "$jar3" -b "$jar3" -o /dev/null -w '%{redirect_url}' "$acct/saml/login?return_to=/meetings/8")
case "$login" in "$idp2/saml2/idp/SSOService.php?SAMLRequest="*) ;; *) echo "FAIL: acme's login did not go to acme's IdP: $login"; exit 1;; esac
form=$(curl --max-time 30 -s -L -c "$jar3" -b "$jar3" "$login")
state=$(echo "$form" | grep -o 'name="AuthState" value="[^"]*"' | head -1 | sed 's/.*value="//;s/"$//' | python3 -c 'import html,sys; print(html.unescape(sys.stdin.read().strip()))')
[ -n "$state" ] || { echo "FAIL: no login form at acme's IdP"; echo "$form" | head -20; exit 1; }
post=$(curl --max-time 30 -s -c "$jar3" -b "$jar3" "$idp2/module.php/core/loginuserpass.php" \
  --data-urlencode "username=dave" --data-urlencode "password=davepass" --data-urlencode "AuthState=$state")
resp2=$(echo "$post" | grep -o 'name="SAMLResponse" value="[^"]*"' | sed 's/.*value="//;s/"$//')
relay2=$(echo "$post" | grep -o 'name="RelayState" value="[^"]*"' | sed 's/.*value="//;s/"$//')
[ -n "$resp2" ] || { echo "FAIL: acme's IdP returned no SAMLResponse"; echo "$post" | head -20; exit 1; }
# acme's IdP's response is not the default account's: refused at the first host.
other=$(curl --max-time 30 -s -o /dev/null -w '%{http_code}' "$gw/saml/acs" --data-urlencode "SAMLResponse=$resp2")
[ "$other" = "403" ] || { echo "FAIL: the default account took acme's response ($other)"; exit 1; }
acs=$(curl --max-time 30 -s -D - -o /dev/null -c "$jar3" -b "$jar3" "$acct/saml/acs" \
  --data-urlencode "SAMLResponse=$resp2" --data-urlencode "RelayState=$relay2")
echo "$acs" | grep -q "^HTTP/1.1 303" || { echo "FAIL: acme's ACS refused"; echo "$acs"; tail -5 "$work/samlgate.log"; exit 1; }
page=$(curl --max-time 30 -s -c "$jar3" -b "$jar3" "$acct/meetings/8")
echo "$page" | grep -q "dave@acme.example" || { echo "FAIL: acme's identity headers missing"; echo "$page"; exit 1; }
echo "$page" | grep -qi "x-samlgate-account</code></td><td>acme" || { echo "FAIL: no X-Samlgate-Account: acme"; echo "$page"; exit 1; }
# The default account's session is no session on acme's host.
alice=$(awk '$6 == "samlgate_session" {print $7}' "$jar" | head -1)
[ -n "$alice" ] || { echo "FAIL: no default-account session cookie to try"; exit 1; }
cross=$(curl --max-time 30 -s -o /dev/null -w '%{http_code}' -H "Cookie: samlgate_session=$alice" -H "Accept: application/json" "$acct/meetings/8")
[ "$cross" = "401" ] || { echo "FAIL: the default account's session opened acme's host ($cross)"; exit 1; }
echo "OK: a second account created through the API (acme.localhost, its own SimpleSAMLphp and key) signed dave@acme.example in; the first account's session is none there"

# --- scale-out: two replicas on a 3-master Redis Cluster behind nginx ---
for c in $C1 $C2 $C3; do
  mkdir -p "$work/redis-$c"
  redis-server --port "$c" --bind 127.0.0.1 --save "" --appendonly no --cluster-enabled yes \
    --cluster-config-file nodes.conf --dir "$work/redis-$c" >/dev/null 2>&1 &
  pids+=($!)
done
for c in $C1 $C2 $C3; do wait_for redis-cli -p "$c" ping; done
redis-cli --cluster create "127.0.0.1:$C1" "127.0.0.1:$C2" "127.0.0.1:$C3" --cluster-replicas 0 --cluster-yes >/dev/null
cluster_ok() { redis-cli -p "$1" cluster info | grep -q cluster_state:ok; }
for c in $C1 $C2 $C3; do wait_for cluster_ok "$c"; done
for r in 1 2; do
  pub=$R1; adm=$R1A; [ "$r" = 2 ] && { pub=$R2; adm=$R2A; }
  cat > "$work/replica$r.toml" <<TOML
[listen]
public = "127.0.0.1:$pub"
admin = "127.0.0.1:$adm"
[sp]
entity_id = "$front/saml/metadata"
acs_url = "$front/saml/acs"
key_file = "$(pwd)/certs/demo-sp.key"
cert_file = "$(pwd)/certs/demo-sp.crt"
[idp]
metadata_url = "$idp/saml2/idp/metadata.php"
[provisioning]
associated_domains = ["example.com"]
outbox_dir = "$work/outbox"
[store]
kind = "redis"
nodes = ["redis://127.0.0.1:$C1", "redis://127.0.0.1:$C2", "redis://127.0.0.1:$C3"]
[upstream]
url = "http://127.0.0.1:$UP"
TOML
  "$bin" serve --config "$work/replica$r.toml" 2>"$work/replica$r.log" &
  pids+=($!)
  echo $! > "$work/replica$r.pid"
  disown $!   # the browser test SIGKILLs replica 1: no "Killed" job notice
done
for r in 1 2; do
  adm=$R1A; [ "$r" = 2 ] && adm=$R2A
  for _ in $(seq 300); do curl --max-time 5 -sf "http://127.0.0.1:$adm/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl --max-time 5 -sf "http://127.0.0.1:$adm/readyz" >/dev/null 2>&1 \
    || { echo "FAIL: replica $r not ready"; curl --max-time 5 -s "http://127.0.0.1:$adm/readyz"; tail -20 "$work/replica$r.log"; exit 1; }
done
cat > "$work/front.conf" <<NGINX
worker_processes 1;
pid $work/front.pid;
error_log $work/front-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream replicas { server 127.0.0.1:$R1 max_fails=1 fail_timeout=30s; server 127.0.0.1:$R2 max_fails=1 fail_timeout=30s; }
  server {
    listen 127.0.0.1:$FRONT;
    proxy_set_header Host \$http_host;
    # Logins start on replica 1 and finish on replica 2; everything else alternates.
    location = /saml/login { proxy_pass http://127.0.0.1:$R1; }
    location = /saml/acs { proxy_pass http://127.0.0.1:$R2; }
    # The IdP's logout messages land on replica 2 (sessions are read on both).
    location = /saml/slo { proxy_pass http://127.0.0.1:$R2; }
    location / { proxy_pass http://replicas; proxy_next_upstream error timeout; }
  }
}
NGINX
nginx -c "$work/front.conf" -g 'daemon off;' 2>"$work/front.stderr" &
pids+=($!)
for _ in $(seq 100); do curl --max-time 30 -s -o /dev/null "$front/" && break; sleep 0.1; done
curl --max-time 30 -s -o /dev/null "$front/" || { echo "FAIL: the nginx front did not start"; cat "$work/front.stderr" "$work/front-error.log" 2>/dev/null; exit 1; }
# An IdP-initiated response used on replica 2 is refused on replica 1.
jar2="$work/cookies2"
start=$(curl --max-time 30 -s -L -c "$jar2" -b "$jar2" "$idp/saml2/idp/SSOService.php?spentityid=$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=""))' "$front/saml/metadata")")
st=$(echo "$start" | grep -o 'name="AuthState" value="[^"]*"' | head -1 | sed 's/.*value="//;s/"$//' | python3 -c 'import html,sys; print(html.unescape(sys.stdin.read().strip()))')
post=$(curl --max-time 30 -s -c "$jar2" -b "$jar2" "$idp/module.php/core/loginuserpass.php" \
  --data-urlencode "username=bob" --data-urlencode "password=bobpass" --data-urlencode "AuthState=$st")
unsolicited=$(echo "$post" | grep -o 'name="SAMLResponse" value="[^"]*"' | sed 's/.*value="//;s/"$//')
[ -n "$unsolicited" ] || { echo "FAIL: no IdP-initiated response"; echo "$post" | head; exit 1; }
code2=$(curl --max-time 30 -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$R2/saml/acs" --data-urlencode "SAMLResponse=$unsolicited")
code1=$(curl --max-time 30 -s "http://127.0.0.1:$R1/saml/acs" --data-urlencode "SAMLResponse=$unsolicited")
[ "$code2" = "303" ] || { echo "FAIL: replica 2 refused the IdP-initiated login ($code2)"; tail -3 "$work/replica2.log"; exit 1; }
echo "$code1" | grep -q "<code>replayed</code>" || { echo "FAIL: replica 1 did not refuse the replay"; echo "$code1" | head -5; exit 1; }
echo "OK: an assertion used on replica 2 is refused as replayed on replica 1 (Redis Cluster)"
echo "interop: 4 passed, 0 failed"

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
  wait_for curl --max-time 5 -sf "http://127.0.0.1:$ADMIN2/healthz"
  GW="$gw" GW2="$gw2" ADMIN2="http://127.0.0.1:$ADMIN2" ADMIN_TOKEN="interop-admin-token-0123456789" ACCT="$acct" \
  IDP="$idp" ADMIN="http://127.0.0.1:$ADMIN" MAILDIR="$work/maildir" \
    AUTHSOURCES="$work/ssp/config/authsources.php" DB="$work/samlgate.db" \
    FRONT="$front" R1="http://127.0.0.1:$R1" R2="http://127.0.0.1:$R2" \
    R1ADMIN="http://127.0.0.1:$R1A" R2ADMIN="http://127.0.0.1:$R2A" R1PID="$(cat "$work/replica1.pid")" \
    ARTIFACTS="$(pwd)/target/interop-artifacts" /usr/bin/python3 interop/browser.py
fi
