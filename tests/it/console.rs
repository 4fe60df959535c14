//! The console over real HTTP on the admin listener: sign-in with a
//! token, the console cookie, CSRF and cross-site refusals, security
//! headers, the Single Sign-On page (view, edit, validation by field) and
//! User Management (search, ssoCreate, deactivate, delete), and an account
//! token's console limited to its account.

use http::Method;
use serde_json::json;

use super::accounts::{ADMIN, Fleet, TestIdp, doc, idp_with_key, new_idp, two_accounts};
use super::gateway::{code_in_page, cookie_of};
use super::http_support::{Reply, request};

/// A browser's view of the console: its cookie and the page's CSRF token.
struct Browser {
    base: String,
    cookie: String,
    csrf: String,
}

fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    page.split(&marker)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no hidden {name} in {page}"))
        .to_owned()
}

fn set_cookie<'r>(r: &'r Reply, name: &str) -> Option<&'r str> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
}

fn urlencode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                samlgate::gateway::url_encode(k),
                samlgate::gateway::url_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn multipart(fields: &[(&str, &str)]) -> (String, String) {
    let b = "----samlgateTestBoundary7MA4YWxk";
    let mut body = String::new();
    for (k, v) in fields {
        let file = if *k == "metadata_file" {
            "; filename=\"idp.xml\"\r\nContent-Type: text/xml"
        } else {
            ""
        };
        body.push_str(&format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"{k}\"{file}\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!("--{b}--\r\n"));
    (format!("multipart/form-data; boundary={b}"), body)
}

async fn sign_in(base: &str, token: &str) -> Result<Browser, Reply> {
    let r = request(Method::GET, &format!("{base}/console/"), &[], "").await;
    assert_eq!(r.status, 200);
    let login_cookie = set_cookie(&r, "samlgate_console_login").unwrap();
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"),
        "{login_cookie}"
    );
    let csrf = hidden(&r.text(), "csrf");
    let cookie = login_cookie.split(';').next().unwrap().to_owned();
    let r = request(
        Method::POST,
        &format!("{base}/console/login"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookie),
        ],
        urlencode(&[("csrf", &csrf), ("token", token)]),
    )
    .await;
    if r.status != 303 {
        return Err(r);
    }
    let c = set_cookie(&r, "samlgate_console").unwrap();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/console"),
        "{c}"
    );
    let mut b = Browser {
        base: base.to_owned(),
        cookie: c.split(';').next().unwrap().to_owned(),
        csrf: String::new(),
    };
    let landing = r.header("location").unwrap().to_owned();
    let r = b.get(&landing).await;
    let r = if r.status == 303 {
        b.get(r.header("location").unwrap()).await
    } else {
        r
    };
    assert_eq!(r.status, 200, "{}", r.text());
    b.csrf = hidden(&r.text(), "csrf");
    Ok(b)
}

impl Browser {
    async fn get(&self, path: &str) -> Reply {
        request(
            Method::GET,
            &format!("{}{path}", self.base),
            &[("cookie", &self.cookie)],
            "",
        )
        .await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        request(
            Method::POST,
            &format!("{}{path}", self.base),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &self.cookie),
            ],
            urlencode(&all),
        )
        .await
    }

    async fn post_multipart(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        let (ct, body) = multipart(&all);
        request(
            Method::POST,
            &format!("{}{path}", self.base),
            &[("content-type", &ct), ("cookie", &self.cookie)],
            body,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_cookie_csrf_cross_site_and_security_headers() {
    let (f, _d, _a, _b) = two_accounts().await;
    // The sign-in page and its headers: no inline script or style allowed.
    let r = request(Method::GET, &format!("{}/console/", f.admin), &[], "").await;
    assert_eq!(r.status, 200);
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    // The import page's script talks to the console (found by Chromium:
    // without connect-src its upload failed).
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(!r.text().contains("<script") && !r.text().contains("style="));
    let css = request(
        Method::GET,
        &format!("{}/console/static/console.css", f.admin),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (css.status, css.header("content-type")),
        (200, Some("text/css; charset=utf-8"))
    );

    // A wrong token, and a sign-in form without its cookie.
    let r = sign_in(&f.admin, "not-a-token").await.err().unwrap();
    assert_eq!(r.status, 401);
    assert!(r.text().contains("not valid"));
    assert!(set_cookie(&r, "samlgate_console").is_none());
    let r = request(
        Method::POST,
        &format!("{}/console/login", f.admin),
        &[("content-type", "application/x-www-form-urlencoded")],
        urlencode(&[("csrf", "guess"), ("token", ADMIN)]),
    )
    .await;
    assert_eq!(r.status, 401, "a login CSRF: no double-submitted cookie");
    assert!(set_cookie(&r, "samlgate_console").is_none());

    // Signed in: the accounts list.
    let b = sign_in(&f.admin, ADMIN).await.unwrap();
    let r = b.get("/console/accounts").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("acme corp") && r.text().contains("globex corp"));
    assert!(r.text().contains("Signed in as <strong>operator</strong>"));
    // The token is never rendered.
    assert!(!r.text().contains(ADMIN));

    // A form without the CSRF token, with another's, and from another site.
    let form = [("mode", "prior_to_sign_in")];
    let no_csrf = request(
        Method::POST,
        &format!("{}/console/a/acme/sso", f.admin),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &b.cookie),
        ],
        urlencode(&form),
    )
    .await;
    assert_eq!(
        (no_csrf.status, code_in_page(&no_csrf).as_str()),
        (403, "csrf")
    );
    let other = sign_in(&f.admin, ADMIN).await.unwrap();
    assert_ne!(other.csrf, b.csrf);
    let wrong = Browser {
        base: b.base.clone(),
        cookie: b.cookie.clone(),
        csrf: other.csrf.clone(),
    };
    let r = wrong.post("/console/a/acme/sso", &form).await;
    assert_eq!((r.status, code_in_page(&r).as_str()), (403, "csrf"));
    let r = request(
        Method::POST,
        &format!("{}/console/a/acme/sso", f.admin),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &b.cookie),
            ("origin", "https://evil.example"),
        ],
        urlencode(&[("csrf", &b.csrf), ("mode", "prior_to_sign_in")]),
    )
    .await;
    assert_eq!((r.status, code_in_page(&r).as_str()), (403, "cross_site"));
    for (h, v) in [
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let r = request(
            Method::POST,
            &format!("{}/console/a/acme/sso", f.admin),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &b.cookie),
                (h, v),
            ],
            urlencode(&[("csrf", &b.csrf), ("mode", "prior_to_sign_in")]),
        )
        .await;
        assert_eq!(
            (r.status, code_in_page(&r).as_str()),
            (403, "cross_site"),
            "{h}: {v}"
        );
    }
    // The browser's own same-origin post passes the check (and the CSRF
    // token's): a bad mode, refused by field, not as cross-site.
    let origin = f.admin.clone();
    let host = origin.trim_start_matches("http://").to_owned();
    let r = request(
        Method::POST,
        &format!("{}/console/a/acme/sso", f.admin),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &b.cookie),
            ("origin", &origin),
            ("host", &host),
            ("sec-fetch-site", "same-origin"),
        ],
        urlencode(&[("csrf", &b.csrf), ("mode", "sometimes")]),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("referrer-policy"), Some("same-origin"));
    // None of them changed anything.
    let acct = f.registry.get("acme").unwrap();
    assert_eq!(
        acct.provisioning.mode,
        samlgate::account::ProvisioningMode::Jit
    );

    // Without the cookie: back to sign-in; a POST is refused.
    let r = request(
        Method::GET,
        &format!("{}/console/accounts", f.admin),
        &[],
        "",
    )
    .await;
    assert_eq!((r.status, r.header("location")), (303, Some("/console/")));
    let r = request(
        Method::POST,
        &format!("{}/console/a/acme/users", f.admin),
        &[("content-type", "application/x-www-form-urlencoded")],
        urlencode(&[("csrf", &b.csrf), ("email", "x@acme.example")]),
    )
    .await;
    assert_eq!(r.status, 401);

    // Sign out ends the console session in the store, not just the cookie.
    let r = b.post("/console/logout", &[]).await;
    assert_eq!(r.status, 303);
    assert!(
        set_cookie(&r, "samlgate_console")
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = b.get("/console/accounts").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/console/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_switches_an_account_to_prior_to_sign_in_and_a_new_login_is_refused() {
    let (f, _d, a, _b) = two_accounts().await;
    let b = sign_in(&f.admin, ADMIN).await.unwrap();
    // The page shows what the IdP metadata says.
    let r = b.get("/console/a/acme/sso").await;
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(t.contains("https://idp.acme.example/saml"), "{t}");
    assert!(t.contains("Just-in-Time"));
    assert!(t.contains("https://idp.example.net/sso"));
    let fp = f.registry.get("acme").unwrap().idp.metadata.signing_certs[0]
        .fingerprint
        .clone();
    assert!(t.contains(&fp), "the certificate's fingerprint");
    assert!(
        !t.contains("expires in"),
        "a certificate valid for a year is not flagged"
    );
    let md = b.get("/console/a/acme/sp-metadata").await;
    assert_eq!(md.status, 200);
    assert!(
        md.text()
            .contains("entityID=\"http://acme.test/saml/metadata\"")
    );
    assert!(
        md.header("content-disposition")
            .unwrap()
            .contains("acme-sp-metadata.xml")
    );

    // Edit → Provision User: Prior to Sign-In → Save.
    let r = b.get("/console/a/acme/sso?edit").await;
    assert!(r.text().contains("name=\"mode\" value=\"jit\" checked"));
    let r = b
        .post_multipart(
            "/console/a/acme/sso",
            &[
                ("mode", "prior_to_sign_in"),
                ("domains", "acme.example\nacme-corp.example"),
                ("idp_initiated", "1"),
                ("metadata_xml", ""),
                ("metadata_url", ""),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/console/a/acme/sso?saved"));
    let acct = f.registry.get("acme").unwrap();
    assert_eq!(
        acct.provisioning.mode,
        samlgate::account::ProvisioningMode::PriorToSignIn
    );
    assert_eq!(
        acct.provisioning.associated_domains,
        ["acme.example", "acme-corp.example"]
    );
    let r = f.login("acme.test", &a, "new@acme.example").await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "not_provisioned")
    );

    // ssoCreate from User Management, then that user signs in.
    let r = b
        .post(
            "/console/a/acme/users",
            &[
                ("email", "Pre@Acme.example"),
                ("first_name", "Pre"),
                ("last_name", "Vision"),
                ("type", "2"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let detail = b.get(r.header("location").unwrap()).await;
    assert!(detail.text().contains("pre@acme.example") && detail.text().contains("licensed"));
    assert_eq!(
        f.login("acme.test", &a, "pre@acme.example").await.status,
        303
    );
    // The same email again: the API's conflict, on the form.
    let r = b
        .post(
            "/console/a/acme/users",
            &[("email", "pre@acme.example"), ("type", "1")],
        )
        .await;
    assert_eq!(r.status, 409);
    assert!(r.text().contains("user_exists"));
    let r = b
        .post(
            "/console/a/acme/users",
            &[("email", "not an email"), ("type", "1")],
        )
        .await;
    assert_eq!(r.status, 400);

    // Bad metadata: refused by field, nothing saved.
    let r = b
        .post_multipart(
            "/console/a/acme/sso",
            &[
                ("mode", "jit"),
                ("domains", "acme.example"),
                ("metadata_xml", "<not-metadata/>"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("idp.metadata_xml"), "{}", r.text());
    assert!(r.text().contains("Nothing was saved"));
    assert_eq!(
        f.registry.get("acme").unwrap().provisioning.mode,
        samlgate::account::ProvisioningMode::PriorToSignIn
    );
    // Two ways at once.
    let r = b
        .post_multipart(
            "/console/a/acme/sso",
            &[
                ("mode", "jit"),
                ("metadata_file", &a.metadata),
                ("metadata_url", "https://idp.acme.example/md"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("one way"));
    // A metadata file upload replaces the IdP.
    let new = new_idp("https://idp2.acme.example/saml");
    let r = b
        .post_multipart(
            "/console/a/acme/sso",
            &[
                ("mode", "jit"),
                ("domains", "acme.example"),
                ("metadata_file", &new.metadata),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        f.registry.get("acme").unwrap().idp.metadata.entity_id,
        "https://idp2.acme.example/saml"
    );
    // A bad mode value.
    let r = b
        .post_multipart("/console/a/acme/sso", &[("mode", "sometimes")])
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("provisioning.mode"));
}

/// An IdP whose certificate ends in `days`.
fn idp_expiring_in(entity_id: &str, days: u32) -> TestIdp {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "expiring test IdP")
        .unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    idp_with_key(
        entity_id,
        key.private_key_to_pem_pkcs8().unwrap(),
        b.build().to_pem().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_user_management_and_an_account_tokens_console_sees_only_its_account() {
    let (f, _d, a, _b) = two_accounts().await;
    let soon = idp_expiring_in("https://idp.globex.example/saml", 10);
    assert_eq!(
        f.put("globex", &doc("globex", "globex.test", &soon))
            .await
            .status,
        200
    );
    let b = sign_in(&f.admin, ADMIN).await.unwrap();
    let r = b.get("/console/a/globex/sso").await;
    assert!(
        r.text().contains("expires in 9 days") || r.text().contains("expires in 10 days"),
        "{}",
        r.text()
    );

    // Users from logins, searched by prefix and status.
    let signed = f.login("acme.test", &a, "ann@acme.example").await;
    assert_eq!(signed.status, 303);
    let session = cookie_of(&signed);
    for e in ["bob@acme.example", "bea@acme.example", "carl@acme.example"] {
        assert_eq!(f.login("acme.test", &a, e).await.status, 303);
    }
    let r = b.get("/console/a/acme/users?q=b").await;
    let t = r.text();
    assert!(
        t.contains("bob@acme.example") && t.contains("bea@acme.example"),
        "{t}"
    );
    assert!(
        !t.contains("ann@acme.example") && !t.contains("carl@acme.example"),
        "{t}"
    );
    let r = b.get("/console/a/acme/users?q=ann%40acme.example").await;
    assert!(r.text().contains("ann@acme.example"));
    assert!(
        b.get("/console/a/acme/users")
            .await
            .text()
            .contains("carl@acme.example")
    );

    // Deactivate ends the live session before the page answers.
    assert_eq!(
        f.on("acme.test", "/app", &[("cookie", &session)])
            .await
            .status,
        200
    );
    let r = b
        .post(
            "/console/a/acme/users/ann%40acme.example",
            &[("action", "deactivate")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_ne!(
        f.on("acme.test", "/app", &[("cookie", &session)])
            .await
            .status,
        200,
        "the deactivated user's session ended"
    );
    let detail = b.get("/console/a/acme/users/ann%40acme.example").await;
    assert!(detail.text().contains("deactivated") && detail.text().contains("Reactivate"));
    let r = b.get("/console/a/acme/users?status=deactivated").await;
    assert!(r.text().contains("ann@acme.example") && !r.text().contains("bob@acme.example"));
    let r = b
        .post(
            "/console/a/acme/users/ann%40acme.example",
            &[("action", "reactivate")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        f.login("acme.test", &a, "ann@acme.example").await.status,
        303
    );
    // Delete asks for confirmation.
    let r = b
        .post(
            "/console/a/acme/users/bob%40acme.example",
            &[("action", "delete")],
        )
        .await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (400, "confirm_required")
    );
    assert!(
        f.store
            .get_user("bob@acme.example")
            .await
            .unwrap()
            .is_some()
    );
    let r = b
        .post(
            "/console/a/acme/users/bob%40acme.example",
            &[("action", "delete"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(
        f.store
            .get_user("bob@acme.example")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        b.get("/console/a/acme/users/bob%40acme.example")
            .await
            .status,
        404
    );

    // An account's users token: its own account only, as if others did
    // not exist.
    let r = f
        .api(
            Method::POST,
            "/api/v2/accounts/acme/tokens",
            ADMIN,
            json!({"scope": "users"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let scoped = sign_in(&f.admin, &token).await.unwrap();
    let r = scoped.get("/console/").await;
    assert_eq!(r.header("location"), Some("/console/a/acme/sso"));
    assert_eq!(scoped.get("/console/a/acme/users").await.status, 200);
    for path in [
        "/console/accounts",
        "/console/a/globex/sso",
        "/console/a/globex/users",
        "/console/a/globex/sp-metadata",
    ] {
        assert_eq!(scoped.get(path).await.status, 404, "{path}");
    }
    let r = scoped
        .post(
            "/console/a/globex/users",
            &[("email", "x@globex.example"), ("type", "1")],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = scoped
        .post_multipart("/console/a/globex/sso", &[("mode", "prior_to_sign_in")])
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        f.registry.get("globex").unwrap().provisioning.mode,
        samlgate::account::ProvisioningMode::Jit
    );
    // A SCIM token does not open the console.
    let r = f
        .api(
            Method::POST,
            "/api/v2/accounts/acme/tokens",
            ADMIN,
            json!({"scope": "scim"}),
        )
        .await;
    let scim = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(sign_in(&f.admin, &scim).await.err().unwrap().status, 401);
}

/// Polls `check` for up to 5 s (the activity is written off the request
/// path, within milliseconds).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_user_search_pages_through_a_prefix_and_stops_past_it() {
    let (f, _d, _a, _b) = two_accounts().await;
    // 55 users under the prefix "pg", one before it and two after it.
    let mut csv = String::from("email,first_name,last_name\n");
    for i in 0..55 {
        csv.push_str(&format!("pg{i:02}@acme.example,P,G\n"));
    }
    for e in ["pa@acme.example", "ph00@acme.example", "ph01@acme.example"] {
        csv.push_str(&format!("{e},P,H\n"));
    }
    // An email that is a prefix of 49 others, then two past them.
    csv.push_str("pq@acme.example,P,Q\n");
    for i in 0..49 {
        csv.push_str(&format!("pq@acme.example.x{i:02},P,Q\n"));
    }
    csv.push_str("pr@acme.example,P,R\nps@acme.example,P,S\n");
    let r = request(
        Method::POST,
        &format!(
            "{}/api/v2/accounts/acme/users/import?license=basic",
            f.admin
        ),
        &[
            ("authorization", &format!("Bearer {ADMIN}")),
            ("content-type", "text/csv"),
        ],
        csv,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = sign_in(&f.admin, ADMIN).await.unwrap();
    let listed = |t: &str| {
        t.match_indices("@acme.example</a>")
            .map(|(at, _)| {
                let start = t[..at].rfind('>').unwrap() + 1;
                t[start..at].to_owned()
            })
            .collect::<Vec<_>>()
    };
    let next = |t: &str| {
        t.split("href=\"")
            .filter_map(|h| h.split('"').next())
            .find(|h| h.contains("cursor="))
            .map(|h| h.replace("&amp;", "&"))
    };
    // A full first page, then the rest, then no further page: the
    // listing runs past the prefix.
    let first = b.get("/console/a/acme/users?q=pg").await.text();
    let want: Vec<String> = (0..50).map(|i| format!("pg{i:02}")).collect();
    assert_eq!(listed(&first), want, "{first}");
    let more = next(&first).expect("a next page");
    let second = b.get(&more).await.text();
    let want: Vec<String> = (50..55).map(|i| format!("pg{i:02}")).collect();
    assert_eq!(listed(&second), want, "{second}");
    assert_eq!(next(&second), None, "{second}");
    // A prefix with fewer users than a page: no next page either.
    let few = b.get("/console/a/acme/users?q=ph").await.text();
    assert_eq!(listed(&few), ["ph00", "ph01"]);
    assert_eq!(next(&few), None);
    // An exact email is listed once, first.
    let exact = b
        .get("/console/a/acme/users?q=pg07%40acme.example")
        .await
        .text();
    assert_eq!(listed(&exact), ["pg07"]);
    assert_eq!(next(&exact), None);
    // The exact email first, then the 49 it prefixes; the page's last row
    // is past the prefix, so there is no next page (though the page is
    // full and the exact row makes the matches as many as the rows).
    let full = b
        .get("/console/a/acme/users?q=pq%40acme.example")
        .await
        .text();
    assert_eq!(full.matches(">pq@acme.example").count(), 50, "{full}");
    assert!(!full.contains(">pr@acme.example"), "{full}");
    assert_eq!(next(&full), None, "{full}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_activity_answers_why_bob_cannot_sign_in() {
    let (f, _d, a, b_idp) = two_accounts().await;
    assert_eq!(
        f.login("acme.test", &a, "ann@acme.example").await.status,
        303
    );
    assert_eq!(
        f.patch(
            "acme",
            json!({"provisioning": {"mode": "prior_to_sign_in"}})
        )
        .await
        .status,
        200
    );
    let refused = f.login("acme.test", &a, "bob@acme.example").await;
    assert_eq!(code_in_page(&refused), "not_provisioned");
    let tracking = refused
        .text()
        .split("Tracking id: <code>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .map(str::to_owned);
    // A response signed by globex's IdP posted to acme: refused before
    // any email is known.
    let foreign = b_idp
        .idp
        .response_b64(&f.params("acme.test", "eve@acme.example", None))
        .unwrap();
    assert_eq!(f.post_acs("acme.test", &foreign).await.status, 403);
    assert_eq!(
        f.login("globex.test", &b_idp, "gil@globex.example")
            .await
            .status,
        303
    );

    let b = sign_in(&f.admin, ADMIN).await.unwrap();
    eventually("three acme decisions in the activity", async || {
        let t = b.get("/console/a/acme/activity").await.text();
        t.contains("3 of the 3 most recent")
    })
    .await;
    let t = b.get("/console/a/acme/activity").await.text();
    assert!(
        t.contains("ann@acme.example") && t.contains("admitted"),
        "{t}"
    );
    assert!(
        t.contains("bob@acme.example") && t.contains("not_provisioned"),
        "{t}"
    );
    assert!(
        !t.contains("gil@globex.example"),
        "another account's sign-ins are not here"
    );
    let id = tracking.expect("a tracking id on the refusal page");
    assert!(t.contains(&id), "the refusal page's tracking id: {id}");
    // "Why can't Bob sign in?": filtered by his email, and by code.
    let t = b.get("/console/a/acme/activity?q=bob").await.text();
    assert!(
        t.contains("1 of the 3") && t.contains("has not been provisioned"),
        "{t}"
    );
    let t = b.get("/console/a/acme/activity?code=admitted").await.text();
    assert!(
        t.contains("ann@acme.example") && !t.contains("bob@acme.example"),
        "{t}"
    );
    let t = b
        .get("/console/a/acme/activity?code=not_provisioned")
        .await
        .text();
    assert!(
        t.contains("bob@acme.example") && !t.contains("ann@acme.example"),
        "{t}"
    );
    // Ann's page lists her sign-in.
    let t = b
        .get("/console/a/acme/users/ann%40acme.example")
        .await
        .text();
    assert!(
        t.contains("Recent sign-ins") && t.contains("admitted"),
        "{t}"
    );
    // The last refused response (eve's, signed by globex's IdP) is kept
    // briefly for Test a SAMLResponse.
    let mapping = json!({"rules": [{"name": "lic", "attribute": "groups", "contains": "Meetings-Licensed", "license": "licensed"}]}).to_string();
    eventually("the refused response kept", async || {
        samlgate::activity::last_failed(f.store.as_ref(), "acme")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let r = b
        .post(
            "/console/a/acme/mapping",
            &[("mapping", &mapping), ("do", "last")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("<span class=\"warn\">reject</span>"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("Trace"), "{}", r.text());
    let r = b
        .post(
            "/console/a/globex/mapping",
            &[("mapping", &mapping), ("do", "last")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("no sign-in was refused"), "{}", r.text());
    // Deleting the account deletes its activity.
    let r = f
        .api(
            Method::DELETE,
            "/api/v2/accounts/globex?purge=true",
            ADMIN,
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(
        samlgate::activity::recent(f.store.as_ref(), "globex", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `email`'s IdP-initiated response on `host` with `groups`.
fn response_with_groups(
    f: &Fleet,
    idp: &TestIdp,
    host: &str,
    email: &str,
    groups: &[&str],
) -> String {
    let mut p = f.params(host, email, None);
    p.attributes.retain(|(n, _)| n != "groups");
    p.attributes.push((
        "groups".into(),
        groups.iter().map(|g| g.to_string()).collect(),
    ));
    idp.idp.response_b64(&p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_mapping_test_preview_impact_save_and_the_user_signs_in_licensed() {
    let (f, _d, a, _b) = two_accounts().await;
    for (email, groups) in [
        ("ann@acme.example", &["Meetings-Licensed"][..]),
        ("bob@acme.example", &["Sales"][..]),
        ("cat@acme.example", &["Sales", "Eng"][..]),
        ("dan@acme.example", &["Eng"][..]),
    ] {
        let r = f
            .post_acs(
                "acme.test",
                &response_with_groups(&f, &a, "acme.test", email, groups),
            )
            .await;
        assert_eq!(r.status, 303, "{email}");
    }
    let basic = |e: &'static str| {
        let store = std::sync::Arc::clone(&f.store);
        async move { store.get_user(e).await.unwrap().unwrap().license }
    };
    assert_eq!(
        basic("bob@acme.example").await,
        samlgate::mapping::License::Basic
    );
    let b = sign_in(&f.admin, ADMIN).await.unwrap();
    // The last logins are kept off the request path.
    eventually("four last logins kept", async || {
        samlgate::activity::last_logins(f.store.as_ref(), "acme", None, 10)
            .await
            .unwrap()
            .len()
            == 4
    })
    .await;
    let r = b.get("/console/a/acme/mapping").await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("Meetings-Licensed"),
        "the current rules: {}",
        r.text()
    );

    // Preview: Sales becomes licensed, Meetings-Licensed no longer is.
    let edited = json!({"rules": [{"name": "sales", "attribute": "groups", "contains": "Sales", "license": "licensed"}]})
        .to_string();
    // While logins do not update the license (the default), no existing
    // user's license would change, and the page says why.
    let r = b
        .post(
            "/console/a/acme/mapping",
            &[("mapping", &edited), ("do", "preview")],
        )
        .await;
    assert!(
        r.text()
            .contains("<strong>0</strong> users would change license"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("not in provisioning.update_on_login"),
        "{}",
        r.text()
    );
    let r = f
        .patch(
            "acme",
            json!({"provisioning": {"update_on_login": ["first_name", "last_name", "groups", "license"]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = b
        .post(
            "/console/a/acme/mapping",
            &[("mapping", &edited), ("do", "preview")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    assert!(
        t.contains("<strong>3</strong> users would change license"),
        "{t}"
    );
    assert!(t.contains("<strong>0</strong> would change groups"), "{t}");
    assert!(t.contains("of 4 users with a kept last login"), "{t}");
    assert!(
        t.contains("bob@acme.example")
            && t.contains("cat@acme.example")
            && t.contains("ann@acme.example")
    );
    assert!(
        !t.contains(">dan@acme.example<"),
        "dan does not change: {t}"
    );
    // Nothing saved by a preview.
    assert!(
        b.get("/console/a/acme/mapping")
            .await
            .text()
            .contains("Meetings-Licensed")
    );

    // Test a SAMLResponse with the edited mapping.
    let bob = response_with_groups(&f, &a, "acme.test", "bob@acme.example", &["Sales"]);
    let r = b
        .post(
            "/console/a/acme/mapping",
            &[("mapping", &edited), ("do", "test"), ("response", &bob)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    assert!(t.contains("<dd>accept</dd>"), "{t}");
    assert!(t.contains("licensed (by a rule)"), "{t}");
    assert!(t.contains("Trace") && t.contains("signature"), "{t}");
    let r = b
        .post(
            "/console/a/acme/mapping",
            &[
                ("mapping", &edited),
                ("do", "test"),
                ("response", "bm90IFhNTA=="),
            ],
        )
        .await;
    assert!(r.text().contains("reject"), "{}", r.text());

    // Problems by key, nothing saved.
    let r = b
        .post(
            "/console/a/acme/mapping",
            &[("mapping", "{not json"), ("do", "save")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not JSON"));
    let bad = json!({"rules": [{"name": "x", "attribute": "groups", "regex": "(", "license": "licensed"}]}).to_string();
    let r = b
        .post(
            "/console/a/acme/mapping",
            &[("mapping", &bad), ("do", "save")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("mapping.rules"), "{}", r.text());
    assert!(
        b.get("/console/a/acme/mapping")
            .await
            .text()
            .contains("Meetings-Licensed")
    );

    // Save; bob's next sign-in carries the licensed header upstream.
    let r = b
        .post(
            "/console/a/acme/mapping",
            &[("mapping", &edited), ("do", "save")],
        )
        .await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/console/a/acme/mapping?saved"))
    );
    let r = f.post_acs("acme.test", &bob).await;
    assert_eq!(r.status, 303);
    let up = f
        .on("acme.test", "/app", &[("cookie", &cookie_of(&r))])
        .await;
    assert_eq!(up.status, 200);
    assert!(
        up.text().contains(r#""x-samlgate-license":"licensed""#),
        "{}",
        up.text()
    );

    // Deleting a user deletes their kept attributes.
    let r = b
        .post(
            "/console/a/acme/users/dan%40acme.example",
            &[("action", "delete"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status, 303);
    let kept = samlgate::activity::last_logins(f.store.as_ref(), "acme", None, 10)
        .await
        .unwrap();
    assert!(
        kept.iter().all(|l| l.email != "dan@acme.example"),
        "{kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_import_with_bad_rows_shows_the_report_and_its_csv() {
    let (f, _d, _a, _b) = two_accounts().await;
    let b = sign_in(&f.admin, ADMIN).await.unwrap();
    let r = b.get("/console/a/acme/import").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("src=\"/console/static/import.js\""));
    let js = request(
        Method::GET,
        &format!("{}/console/static/import.js", f.admin),
        &[],
        "",
    )
    .await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );

    // The form without JavaScript: the file inside it.
    let csv = "email,first_name,last_name\n\
               ann@acme.example,Ann,A\n\
               not-an-email,Bad,Row\n\
               bob@acme.example,Bob,B\n\
               ann@acme.example,Ann,Again\n\
               cat@acme.example,Cat,C,extra\n";
    let r = b
        .post_multipart(
            "/console/a/acme/import",
            &[
                ("file", csv),
                ("license", "licensed"),
                ("feature", "webinar, large_meetings"),
                ("sso", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let report = r.header("location").unwrap().to_owned();
    let job_json = format!("{report}.json");
    eventually("the import ends", async || {
        b.get(&job_json).await.json()["state"] == "done"
    })
    .await;
    let t = b.get(&report).await.text();
    assert!(
        t.contains("2 created, 0 updated, 0 already there, 3 bad rows"),
        "{t}"
    );
    assert!(
        t.contains("licensed, SSO User, features: webinar, large_meetings"),
        "{t}"
    );
    for (line, why) in [("3", "invalid email"), ("5", "duplicate"), ("6", "fields")] {
        assert!(t.contains(&format!("<td>{line}</td>")), "line {line}: {t}");
        assert!(t.contains(why), "{why}: {t}");
    }
    let c = b.get(&format!("{report}.csv")).await;
    assert_eq!(c.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<String> = c.text().lines().map(str::to_owned).collect();
    assert_eq!(lines[0], "line,reason");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[1].starts_with("3,"), "{lines:?}");
    let ann = f.store.get_user("ann@acme.example").await.unwrap().unwrap();
    assert_eq!(ann.license, samlgate::mapping::License::Licensed);
    assert!(ann.sso_only);
    assert_eq!(ann.features, ["webinar", "large_meetings"]);
    assert_eq!(ann.account, "acme");

    // The streamed upload (what the page's script does): the CSRF token in
    // a header, refused without it.
    let url = format!(
        "{}/console/a/acme/import/upload?license=on_prem&sso=1",
        f.admin
    );
    let body = "email\ndee@acme.example\n";
    let r = request(
        Method::POST,
        &url,
        &[("cookie", &b.cookie), ("content-type", "text/csv")],
        body,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = request(
        Method::POST,
        &url,
        &[
            ("cookie", &b.cookie),
            ("content-type", "text/csv"),
            ("x-csrf-token", &b.csrf),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let status = r.json()["status"].as_str().unwrap().to_owned();
    eventually("the streamed import ends", async || {
        let s = b.get(&status).await.json();
        s["state"] == "done" && s["read"] == s["size"]
    })
    .await;
    assert_eq!(
        f.store
            .get_user("dee@acme.example")
            .await
            .unwrap()
            .unwrap()
            .license,
        samlgate::mapping::License::OnPrem
    );
    // A bad license choice, and another account's job.
    let r = b
        .post_multipart(
            "/console/a/acme/import",
            &[("file", csv), ("license", "gold")],
        )
        .await;
    assert_eq!(r.status, 400);
    let other = report.replace("/a/acme/", "/a/globex/");
    assert_eq!(b.get(&other).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_admin_signs_in_to_the_console_through_sso_and_sees_only_that_account() {
    let (f, _d, a, b_idp) = two_accounts().await;
    let mut d = doc("acme", "acme.test", &a);
    d["mapping"]["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "console", "attribute": "groups", "contains": "Console-Admins", "role": "admin"}));
    assert_eq!(f.put("acme", &d).await.status, 200);
    let bad = {
        let mut d = d.clone();
        d["mapping"]["rules"][1]["role"] = json!("owner");
        d
    };
    let r = f.put("acme", &bad).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("mapping.rules[1].role"), "{}", r.text());

    // No session: the account's SSO first, back to the console after.
    let r = f.on("acme.test", "/console/", &[]).await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/saml/login?return_to=%2Fconsole%2F")
    );
    assert!(!r.text().contains("\"path\""), "never the upstream's");

    // A user the mapping makes an admin.
    let login = f
        .post_acs(
            "acme.test",
            &response_with_groups(
                &f,
                &a,
                "acme.test",
                "root@acme.example",
                &["Console-Admins"],
            ),
        )
        .await;
    assert_eq!(login.status, 303);
    let session = cookie_of(&login);
    let r = f
        .on("acme.test", "/console/", &[("cookie", &session)])
        .await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/console/a/acme/sso"))
    );
    // The first page mints the console sign-in and sets its own cookie.
    let r = f
        .on("acme.test", "/console/a/acme/sso", &[("cookie", &session)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = set_cookie(&r, "samlgate_console").expect("a console cookie");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/console"),
        "{c}"
    );
    assert!(
        r.text()
            .contains("Signed in as <strong>root@acme.example</strong>")
    );
    assert!(!r.text().contains("All accounts"), "no operator navigation");
    let both = format!("{session}; {}", c.split(';').next().unwrap());
    let csrf = hidden(&r.text(), "csrf");
    // Its own account's pages; nobody else's.
    assert_eq!(
        f.on("acme.test", "/console/a/acme/users", &[("cookie", &both)])
            .await
            .status,
        200
    );
    for p in [
        "/console/a/globex/sso",
        "/console/a/globex/users",
        "/console/accounts",
    ] {
        assert_eq!(
            f.on("acme.test", p, &[("cookie", &both)]).await.status,
            404,
            "{p}"
        );
    }
    // The operator's sign-in form is not on an account's host.
    let r = request(
        Method::POST,
        &format!("{}/console/login", f.public),
        &[
            ("host", "acme.test"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        urlencode(&[("csrf", "x"), ("token", ADMIN)]),
    )
    .await;
    assert_eq!(r.status, 404);
    // A change, with the console cookie and its CSRF token.
    let (ct, body) = multipart(&[
        ("csrf", &csrf),
        ("mode", "prior_to_sign_in"),
        ("domains", "acme.example"),
        ("idp_initiated", "1"),
    ]);
    let r = request(
        Method::POST,
        &format!("{}/console/a/acme/sso", f.public),
        &[
            ("host", "acme.test"),
            ("content-type", &ct),
            ("cookie", &both),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        f.registry.get("acme").unwrap().provisioning.mode,
        samlgate::account::ProvisioningMode::PriorToSignIn
    );
    // Another account's change is refused even with a valid token.
    let (ct, body) = multipart(&[("csrf", &csrf), ("mode", "prior_to_sign_in")]);
    let r = request(
        Method::POST,
        &format!("{}/console/a/globex/sso", f.public),
        &[
            ("host", "acme.test"),
            ("content-type", &ct),
            ("cookie", &both),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        f.registry.get("globex").unwrap().provisioning.mode,
        samlgate::account::ProvisioningMode::Jit
    );
    // The acme session is no session on globex's host.
    let r = f
        .on("globex.test", "/console/a/globex/sso", &[("cookie", &both)])
        .await;
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().starts_with("/saml/login"));

    // A user the mapping does not make an admin.
    assert_eq!(
        f.patch("acme", json!({"provisioning": {"mode": "jit"}}))
            .await
            .status,
        200
    );
    let plain = f
        .post_acs(
            "acme.test",
            &response_with_groups(&f, &a, "acme.test", "joe@acme.example", &["Sales"]),
        )
        .await;
    assert_eq!(plain.status, 303, "{}", plain.text());
    let r = f
        .on(
            "acme.test",
            "/console/a/acme/sso",
            &[("cookie", &cookie_of(&plain))],
        )
        .await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "not_console_admin")
    );
    // Globex's admins are not acme's.
    let _ = b_idp;

    // Deactivating the admin ends the console sign-in with the session.
    let r = f
        .api(
            Method::PATCH,
            "/api/v2/accounts/acme/users/root%40acme.example",
            ADMIN,
            json!({"status": "deactivated"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = f
        .on("acme.test", "/console/a/acme/users", &[("cookie", &both)])
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.header("location").unwrap().starts_with("/saml/login"));
}
