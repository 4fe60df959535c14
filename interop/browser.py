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
    # Logout, then the protected page goes back through the IdP (which
    # remembers alice: no form this time) and lands on the page again.
    d.get(f"{GW}/saml/logout")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Signed out"), "the signed-out page")
    shot(d, "jit-4-signed-out")
    d.get(f"{GW}/meetings/43")
    wait_for(d, lambda d: d.current_url.startswith(f"{GW}/meetings/43"), "single sign-on back to /meetings/43")
    wait_for(d, EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "alice@example.com"), "headers after SSO")
    shot(d, "jit-5-back-through-the-idp")


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
    open(path, "w").write(text.replace("'sn' => ['Liddell']", "'sn' => ['Liddell-Hargreaves']"))
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


scenario("JIT login lands on the requested page; logout; SSO back", jit_login_lands_on_the_requested_page)
scenario("prior_to_sign_in refuses, then admits after ssoCreate", prior_to_sign_in_refuses_until_sso_create)
scenario("JIT updates a changed attribute on the next login", changed_attribute_is_updated_on_the_next_login)
scenario("a user outside the associated domains verifies her email, then signs in", outside_user_verifies_email_then_signs_in)
scenario("a wrong password never reaches the gateway", wrong_password_stays_at_the_idp)
print(f"browser: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
