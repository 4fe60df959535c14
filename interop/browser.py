#!/usr/bin/python3
"""Browser scenarios against SimpleSAMLphp and samlgate, in headless Chromium
(Debian's chromium + chromium-driver, driven by python3-selenium). Started by
interop/ssp-login.sh with BROWSER=1, which has already started both servers.

Each step saves a screenshot to $ARTIFACTS (kept as test artefacts).
"""
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

GW = os.environ["GW"]
IDP = os.environ["IDP"]
ART = os.environ["ARTIFACTS"]
os.makedirs(ART, exist_ok=True)
passed = failed = 0


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1100,900", f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    d.set_page_load_timeout(30)
    return d


def shot(d, name):
    d.save_screenshot(os.path.join(ART, f"{name}.png"))


def wait_for(d, cond, what, timeout=20):
    try:
        return WebDriverWait(d, timeout).until(cond)
    except Exception:
        shot(d, "failure-" + what.replace(" ", "_"))
        raise AssertionError(f"timed out waiting for {what}; at {d.current_url}: {d.page_source[:500]}")


def idp_login(d, user, password, prefix):
    wait_for(d, EC.presence_of_element_located((By.NAME, "username")), "the IdP login form")
    shot(d, f"{prefix}-1-idp-login-form")
    d.find_element(By.NAME, "username").send_keys(user)
    d.find_element(By.NAME, "password").send_keys(password)
    shot(d, f"{prefix}-2-credentials-typed")
    d.find_element(By.NAME, "password").submit()


def scenario(name, fn):
    global passed, failed
    d = browser()
    try:
        fn(d)
        passed += 1
        print(f"ok   {name}")
    except Exception as e:  # report and go on with the next scenario
        failed += 1
        print(f"FAIL {name}: {e}")
    finally:
        d.quit()


def jit_login_lands_on_the_requested_page(d):
    d.get(f"{GW}/meetings/42")
    idp_login(d, "alice", "alicepass", "jit")
    wait_for(d, lambda d: d.current_url.startswith(f"{GW}/meetings/42"), "the return to /meetings/42")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "alice@example.com"), "the identity headers")
    shot(d, "jit-3-upstream-page")
    body = d.find_element(By.TAG_NAME, "body").text
    assert "x-samlgate-license" in body and "licensed" in body, body
    # SP-initiated Single Logout: samlgate ends its session and sends a
    # signed LogoutRequest to SimpleSAMLphp, which ends its own and answers
    # with a signed LogoutResponse; the browser lands on "Signed out".
    d.get(f"{GW}/saml/logout")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Signed out"), "the signed-out page")
    wait_for(d, lambda d: d.current_url.startswith(f"{GW}/saml/slo"), "the return from the IdP's logout")
    assert "identity provider too" in d.find_element(By.TAG_NAME, "body").text, d.page_source[:500]
    shot(d, "jit-4-signed-out-of-samlgate-and-the-idp")
    # The IdP forgot alice too: the protected page asks for her password.
    d.get(f"{GW}/meetings/43")
    idp_login(d, "alice", "alicepass", "jit-again")
    wait_for(d, lambda d: d.current_url.startswith(f"{GW}/meetings/43"), "the return to /meetings/43")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "alice@example.com"), "headers after signing in again")
    shot(d, "jit-5-signed-in-again")


def wrong_password_stays_at_the_idp(d):
    d.get(f"{GW}/meetings/1")
    idp_login(d, "bob", "wrong", "badpw")
    time.sleep(1)
    shot(d, "badpw-3-still-at-idp")
    assert d.current_url.startswith(IDP), d.current_url
    assert "x-samlgate-email" not in d.page_source


def changed_attribute_is_updated_on_the_next_login(d):
    # alice logged in before (first scenario); her IdP record changes.
    path = os.environ["AUTHSOURCES"]
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text.replace("'sn' => ['Liddell']", "'sn' => ['Liddell-Hargreaves']"))
    # Past any 2-second file-time granularity in PHP's caches.
    time.sleep(2.5)
    d.get(f"{GW}/meetings/44")
    idp_login(d, "alice", "alicepass", "update")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "Liddell-Hargreaves"), "the updated last name")
    shot(d, "update-3-new-last-name")


def outside_user_verifies_email_then_signs_in(d):
    import email
    import glob
    d.get(f"{GW}/meetings/45")
    idp_login(d, "carol", "carolpass", "verify")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "pending_verification"), "the verify-your-email page")
    shot(d, "verify-3-refused-pending")
    assert "email verification" in d.find_element(By.TAG_NAME, "body").text
    files = []
    for _ in range(50):
        files = glob.glob(os.path.join(os.environ["MAILDIR"], "new", "*"))
        if files:
            break
        time.sleep(0.1)
    assert files, "no verification mail arrived at the SMTP sink"
    msg = email.message_from_binary_file(open(files[0], "rb"))
    assert msg["To"] == "carol@partner.org", msg["To"]
    body = msg.get_payload(decode=True).decode()
    link = next(w for w in body.split() if "/saml/verify?token=" in w)
    d.get(link)
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Email verified"), "the verified page")
    shot(d, "verify-4-verified")
    d.get(f"{GW}/meetings/45")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "carol@partner.org"), "carol at the upstream")
    shot(d, "verify-5-signed-in")


def prior_to_sign_in_refuses_until_sso_create(d):
    import json
    import urllib.request
    gw2 = os.environ["GW2"]
    d.get(f"{gw2}/meetings/46")
    idp_login(d, "bob", "bobpass", "prior")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "not_provisioned"), "the not-provisioned page")
    shot(d, "prior-3-not-provisioned")
    assert "has not been provisioned" in d.find_element(By.TAG_NAME, "body").text
    req = urllib.request.Request(
        f"{os.environ['ADMIN2']}/api/v2/users",
        data=json.dumps({"action": "ssoCreate", "user_info": {
            "email": "bob@example.com", "type": 1, "first_name": "Bob", "last_name": "Builder"}}).encode(),
        headers={"Authorization": f"Bearer {os.environ['ADMIN_TOKEN']}", "Content-Type": "application/json"},
        method="POST")
    with urllib.request.urlopen(req) as r:
        assert r.status == 201, r.status
    # The IdP remembers bob: no form; straight back and in.
    d.get(f"{gw2}/meetings/46")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "bob@example.com"), "bob at the upstream")
    shot(d, "prior-4-signed-in-after-ssocreate")


def console_sign_in(d):
    d.get(f"{os.environ['ADMIN']}/console/")
    wait_for(d, EC.presence_of_element_located((By.ID, "token")), "the console sign-in form")
    shot(d, "console-1-sign-in")
    d.find_element(By.ID, "token").send_keys(os.environ["ADMIN_TOKEN"])
    d.find_element(By.ID, "token").submit()
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Accounts"), "the accounts page")
    shot(d, "console-2-accounts")


def console_prior_to_sign_in_refuses_then_admits_after_sso_create(d):
    acct = os.environ["ACCT"]
    admin = os.environ["ADMIN"]
    console_sign_in(d)
    d.find_element(By.CSS_SELECTOR, 'a[href="/console/a/acme/sso"]').click()
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Just-in-Time"), "acme's Single Sign-On page")
    shot(d, "console-3-sso-page")
    d.find_element(By.LINK_TEXT, "Edit").click()
    wait_for(d, EC.presence_of_element_located((By.CSS_SELECTOR, 'input[value="prior_to_sign_in"]')), "the edit form")
    d.find_element(By.CSS_SELECTOR, 'input[value="prior_to_sign_in"]').click()
    shot(d, "console-4-prior-to-sign-in-chosen")
    d.find_element(By.XPATH, '//button[text()="Save"]').click()
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Saved."), "the saved page")
    assert "Prior to Sign-In" in d.find_element(By.TAG_NAME, "main").text
    shot(d, "console-5-saved")
    # A new user of acme's IdP is refused now.
    d.get(f"{acct}/meetings/60")
    idp_login(d, "erin", "erinpass", "console-erin")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "not_provisioned"), "erin refused")
    shot(d, "console-6-erin-not-provisioned")
    # User Management: add erin as Licensed; her next sign-in is admitted.
    d.get(f"{admin}/console/a/acme/users")
    wait_for(d, EC.presence_of_element_located((By.ID, "email")), "the ssoCreate form")
    d.find_element(By.ID, "email").send_keys("erin@acme.example")
    d.find_element(By.ID, "first_name").send_keys("Erin")
    d.find_element(By.ID, "last_name").send_keys("Acme")
    d.find_element(By.CSS_SELECTOR, 'select#type option[value="2"]').click()
    shot(d, "console-7-sso-create-form")
    started = time.time()
    d.find_element(By.XPATH, '//button[text()="Add user"]').click()
    wait_for(d, lambda d: "?created" in d.current_url, "the new user's page")
    print(f"     (ssoCreate answered in {time.time() - started:.1f} s)")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "The user was added."), "the added notice")
    shot(d, "console-8-user-added")
    d.get(f"{acct}/meetings/61")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "erin@acme.example"), "erin at the upstream")
    body = d.find_element(By.TAG_NAME, "body").text
    assert "licensed" in body, body
    shot(d, "console-9-erin-signed-in")
    # Back to Just-in-Time, through the console again.
    d.get(f"{admin}/console/a/acme/sso?edit")
    wait_for(d, EC.presence_of_element_located((By.CSS_SELECTOR, 'input[value="jit"]')), "the edit form again")
    d.find_element(By.CSS_SELECTOR, 'input[value="jit"]').click()
    d.find_element(By.XPATH, '//button[text()="Save"]').click()
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Saved."), "the second save")
    assert "Just-in-Time" in d.find_element(By.TAG_NAME, "main").text


def console_import_with_bad_rows_reads_the_report(d):
    admin = os.environ["ADMIN"]
    path = os.path.join(tempfile.mkdtemp(), "acme-users.csv")
    with open(path, "w") as f:
        f.write("email,first_name,last_name,department\n")
        for i in range(2000):
            f.write(f"imported{i}@acme.example,Imp,Orted{i},R&D\n")
        f.write("not-an-email,Bad,Row,\n")
        f.write("imported7@acme.example,Dup,Licate,\n")
    console_sign_in(d)
    d.get(f"{admin}/console/a/acme/import")
    wait_for(d, EC.presence_of_element_located((By.ID, "file")), "the import form")
    d.find_element(By.ID, "file").send_keys(path)
    d.find_element(By.CSS_SELECTOR, 'input[name="license"][value="licensed"]').click()
    shot(d, "console-import-1-form")
    d.find_element(By.XPATH, '//button[text()="Upload and import"]').click()
    # The script streams the file and follows the progress to the report.
    wait_for(d, lambda d: "/console/a/acme/import/" in d.current_url, "the import report")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "bad rows"), "the report's summary")
    text = d.find_element(By.TAG_NAME, "main").text
    shot(d, "console-import-2-report")
    assert "2000 created" in text, text
    assert "2 bad rows" in text, text
    assert "invalid email" in text and "duplicate" in text, text


def console_mapping_preview_save_then_sso_admin_sees_only_acme(d):
    import json
    import urllib.request
    acct = os.environ["ACCT"]
    admin = os.environ["ADMIN"]
    # Logins update the license from the mapping in this account.
    req = urllib.request.Request(
        f"{admin}/api/v2/accounts/acme",
        data=json.dumps({"provisioning": {"update_on_login": [
            "first_name", "last_name", "department", "groups", "license"]}}).encode(),
        headers={"Authorization": f"Bearer {os.environ['ADMIN_TOKEN']}", "Content-Type": "application/json"},
        method="PATCH")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200, r.status
    console_sign_in(d)
    # dave signed in to acme before (ssp-login.sh): his attributes are kept.
    d.get(f"{admin}/console/a/acme/mapping")
    wait_for(d, EC.presence_of_element_located((By.ID, "mapping")), "the mapping editor")
    rules = ('{"rules": [{"name": "staff", "attribute": "groups", "contains": "acme-staff", "license": "licensed"},'
             ' {"name": "console", "attribute": "groups", "contains": "acme-staff", "role": "admin"}]}')
    box = d.find_element(By.ID, "mapping")
    box.clear()
    box.send_keys(rules)
    d.find_element(By.XPATH, '//button[text()="Preview impact"]').click()
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "would change license"), "the preview")
    text = d.find_element(By.TAG_NAME, "main").text
    shot(d, "console-mapping-1-preview")
    assert "dave@acme.example" in text, text
    assert "0 users would change license" not in text, text
    d.find_element(By.XPATH, '//button[text()="Save"]').click()
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Saved."), "the saved mapping")
    shot(d, "console-mapping-2-saved")
    # dave signs in: licensed upstream.
    d.get(f"{acct}/meetings/70")
    idp_login(d, "dave", "davepass", "console-dave")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "dave@acme.example"), "dave at the upstream")
    body = d.find_element(By.TAG_NAME, "body").text
    assert "licensed" in body, body
    shot(d, "console-mapping-3-dave-licensed")
    # The mapping made him an admin of acme's console, through its SSO.
    d.get(f"{acct}/console/")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Identity provider"), "acme's console")
    assert "Signed in as dave@acme.example" in d.find_element(By.TAG_NAME, "body").text
    shot(d, "console-sso-admin-1-acme")
    d.find_element(By.LINK_TEXT, "User Management").click()
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "User Management"), "acme's users")
    # Another account does not exist for him.
    d.get(f"{acct}/console/a/default/sso")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "no such page"), "the other account refused")
    shot(d, "console-sso-admin-2-other-account-not-found")
    d.get(f"{acct}/console/accounts")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "no such page"), "no accounts list")


def metric(admin, name):
    """The value of one sample in a gateway's /metrics (0 when absent)."""
    import urllib.request
    with urllib.request.urlopen(f"{admin}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


def get_status(url, cookie):
    """Status of an API-style GET carrying a session cookie."""
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, headers={"Cookie": f"samlgate_session={cookie}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def expired_session_goes_back_through_the_idp(d):
    admin = os.environ["ADMIN"]
    started = 'samlgate_authn_requests_total'
    accepted = 'samlgate_logins_total{outcome="accept",code=""}'
    d.get(f"{GW}/meetings/50")
    idp_login(d, "alice", "alicepass", "expiry")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "alice@example.com"), "the first login")
    old = d.get_cookie("samlgate_session")["value"]
    before = (metric(admin, started), metric(admin, accepted))
    # The interop gateway's session.idle_timeout_secs is 30: stay idle past it.
    time.sleep(32)
    status, body = get_status(f"{GW}/meetings/50", old)
    assert status == 401 and "unauthenticated" in body, (status, body)
    d.get(f"{GW}/meetings/51")
    # The IdP still knows alice: no form, straight back through the ACS.
    wait_for(d, lambda d: d.current_url.startswith(f"{GW}/meetings/51"), "the return after the expired session")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "alice@example.com"), "headers after re-login")
    shot(d, "expiry-3-back-through-the-idp")
    new = d.get_cookie("samlgate_session")["value"]
    assert new != old, "the expired session cookie was reused"
    after = (metric(admin, started), metric(admin, accepted))
    assert after == (before[0] + 1, before[1] + 1), (before, after)


def idp_initiated_logout_lands_on_the_other_replica(d):
    import urllib.parse
    front, r1 = os.environ["FRONT"], os.environ["R1"]
    d.get(f"{front}/meetings/70")
    idp_login(d, "bob", "bobpass", "idpslo")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "bob@example.com"), "bob via the front")
    shot(d, "idpslo-3-signed-in-via-front")
    cookie = d.get_cookie("samlgate_session")["value"]
    # Replica 1 serves (and caches) the session.
    for _ in range(3):
        status, body = get_status(f"{r1}/meetings/71", cookie)
        assert status == 200 and "bob@example.com" in body, (status, body[:200])
    # Logout started at SimpleSAMLphp: it sends a LogoutRequest through the
    # browser to the front, which hands /saml/slo to replica 2; samlgate
    # answers, and the IdP returns the browser to ReturnTo.
    ret = urllib.parse.quote(f"{front}/meetings/72", safe="")
    d.get(f"{IDP}/saml2/idp/SingleLogoutService.php?ReturnTo={ret}")
    # Back at the front without a session: sent to sign in, and the IdP asks
    # for the password (its session ended too).
    wait_for(d, EC.presence_of_element_located((By.NAME, "username")), "the IdP login form after the IdP-initiated logout")
    shot(d, "idpslo-4-signed-out-everywhere")
    # Replica 1, which cached the session, no longer honours it.
    status, body = get_status(f"{r1}/meetings/73", cookie)
    assert status == 401, (status, body[:200])


def scale_out_login_crosses_replicas_and_survives_one_dying(d):
    import signal
    front, r1, r2 = os.environ["FRONT"], os.environ["R1"], os.environ["R2"]
    a1, a2 = os.environ["R1ADMIN"], os.environ["R2ADMIN"]
    started = 'samlgate_authn_requests_total'
    accepted = 'samlgate_logins_total{outcome="accept",code=""}'
    before = [metric(a, m) for a in (a1, a2) for m in (started, accepted)]
    # nginx sends /saml/login to replica 1 and /saml/acs to replica 2: the
    # login starts on one replica and finishes on the other.
    d.get(f"{front}/meetings/60")
    idp_login(d, "alice", "alicepass", "scale")
    wait_for(d, lambda d: d.current_url.startswith(f"{front}/meetings/60"), "the return through the front")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "alice@example.com"), "alice via the front")
    shot(d, "scale-3-logged-in-via-front")
    after = [metric(a, m) for a in (a1, a2) for m in (started, accepted)]
    # replica 1 started one login and finished none; replica 2 the reverse.
    delta = [b - a for a, b in zip(before, after)]
    assert delta == [1, 0, 0, 1], f"(r1 started, r1 accepted, r2 started, r2 accepted) grew by {delta}"
    cookie = d.get_cookie("samlgate_session")
    assert cookie, d.get_cookies()
    for replica in (r1, r2):
        status, body = get_status(f"{replica}/meetings/61", cookie["value"])
        assert status == 200 and "alice@example.com" in body, (replica, status, body[:200])
    # Replica 1 dies mid-session: the front fails over and the session lives on.
    os.kill(int(os.environ["R1PID"]), signal.SIGKILL)
    for i in range(4):
        d.get(f"{front}/meetings/{62 + i}")
        wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "alice@example.com"), "the session after a replica died")
    shot(d, "scale-4-after-replica-1-died")


scenario("JIT login lands on the requested page; Single Logout through the IdP; sign in again", jit_login_lands_on_the_requested_page)
scenario("prior_to_sign_in refuses, then admits after ssoCreate", prior_to_sign_in_refuses_until_sso_create)
scenario("JIT updates a changed attribute on the next login", changed_attribute_is_updated_on_the_next_login)
scenario("a user outside the associated domains verifies her email, then signs in", outside_user_verifies_email_then_signs_in)
scenario("a wrong password never reaches the gateway", wrong_password_stays_at_the_idp)
scenario("console: switch acme to Prior to Sign-In, a new user is refused, ssoCreate in User Management admits her",
         console_prior_to_sign_in_refuses_then_admits_after_sso_create)
scenario("console: import a CSV with bad rows (streamed, with progress) and read the report",
         console_import_with_bad_rows_reads_the_report)
scenario("console: edit acme's mapping, preview dave moving to Licensed, save; he signs in licensed and, made an admin by it, sees only acme's console",
         console_mapping_preview_save_then_sso_admin_sees_only_acme)
scenario("an expired session goes back through the IdP", expired_session_goes_back_through_the_idp)
scenario("IdP-initiated logout lands on the other replica and ends the session there too",
         idp_initiated_logout_lands_on_the_other_replica)
scenario("scale-out: login crosses replicas; one replica dies, the session lives",
         scale_out_login_crosses_replicas_and_survives_one_dying)
print(f"browser: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
