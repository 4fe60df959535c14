//! Accounts: many customers on one gateway. The admin API over real HTTP
//! (create, replace, patch, list, delete, tokens, every refusal), the
//! public listener routing by Host, and the isolation cases of the accounts
//! issue, each with its own IdP key per account.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use samlgate::account::registry::Registry;
use samlgate::admin::Admin;
use samlgate::clock::Clock;
use samlgate::config::Config;
use samlgate::devidp::{DevIdp, ResponseParams};
use samlgate::gateway::Gateway;
use samlgate::metrics::Metrics;
use samlgate::server::{Handler, serve};
use samlgate::store::Store;
use samlgate::store::embedded::EmbeddedStore;
use serde_json::{Value, json};

use super::gateway::{EchoUpstream, TestClock, code_in_page, cookie_of, spawn};
use super::http_support::{Reply, request};

pub const ADMIN: &str = "accounts-admin-token-0123456789";

/// An IdP of one test account: its own RSA-2048 key and metadata.
pub struct TestIdp {
    pub idp: DevIdp,
    pub metadata: String,
    pub key_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
}

/// A fresh key pair and self-signed certificate for `entity_id`.
pub fn new_idp(entity_id: &str) -> TestIdp {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "samlgate test account IdP (TEST ONLY)")
        .unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(365).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    idp_with_key(
        entity_id,
        key.private_key_to_pem_pkcs8().unwrap(),
        cert.to_pem().unwrap(),
    )
}

/// An IdP of `entity_id` signing with the given key.
pub fn idp_with_key(entity_id: &str, key_pem: Vec<u8>, cert_pem: Vec<u8>) -> TestIdp {
    let b64: String = String::from_utf8(cert_pem.clone())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let metadata = format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity_id}">
<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.net/sso"/>
</md:IDPSSODescriptor></md:EntityDescriptor>"#
    );
    TestIdp {
        idp: DevIdp::new(entity_id, &key_pem, &cert_pem).unwrap(),
        metadata,
        key_pem,
        cert_pem,
    }
}

/// An account document for `id` served at `host`, trusting `idp`.
pub fn doc(id: &str, host: &str, idp: &TestIdp) -> Value {
    json!({
        "id": id,
        "name": format!("{id} corp"),
        "hosts": [host],
        "sp": {
            "entity_id": format!("http://{host}/saml/metadata"),
            "acs_url": format!("http://{host}/saml/acs"),
        },
        "idp": {"metadata_xml": idp.metadata},
        "mapping": {"rules": [{"name": "lic", "attribute": "groups", "contains": "Meetings-Licensed", "license": "licensed"}]},
        "provisioning": {"mode": "jit", "associated_domains": [format!("{id}.example")]},
    })
}

/// One gateway replica: public and admin listeners over loopback sharing
/// one registry, on the given store.
pub struct Fleet {
    pub public: String,
    pub admin: String,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub clock: Arc<TestClock>,
    _guards: Vec<tokio::sync::watch::Sender<bool>>,
    _dir: tempfile::TempDir,
}

/// The config of a gateway with no default account.
pub fn bare_config() -> Config {
    Config::from_toml(
        &format!("[admin]\ntokens = [\"{ADMIN}\"]\n[session]\nrecheck_secs = 1\n"),
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap()
}

pub async fn fleet_on(store: Arc<dyn Store>, clock: Arc<TestClock>, mut cfg: Config) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let (up, g1) = spawn(Arc::new(EchoUpstream)).await;
    cfg.upstream.url = format!("http://{up}");
    cfg.provisioning.outbox_dir = dir.path().join("outbox");
    cfg.session.recheck_secs = 1;
    cfg.admin_tokens = vec![ADMIN.into()];
    let cfg = Arc::new(cfg);
    let registry = Arc::new(Registry::new(cfg.account.clone()));
    let mut sync = samlgate::account::manage::Sync::new();
    sync.poll(store.as_ref(), &cfg, &registry).await.unwrap();
    let sessions = Arc::new(samlgate::gateway::session::Sessions::default());
    let (activity, activity_rx) = samlgate::activity::Activity::new();
    let gateway = Arc::new(
        Gateway::with_sessions(
            Arc::clone(&cfg),
            Arc::clone(&store),
            clock.clone(),
            Arc::new(Metrics::default()),
            false,
            Arc::clone(&sessions),
            0,
            Arc::clone(&registry),
        )
        .unwrap()
        .with_activity(Arc::clone(&activity)),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(samlgate::activity::run(
        activity,
        Arc::clone(&store),
        activity_rx,
        rx.clone(),
    ));
    tokio::spawn(serve(
        l,
        gateway as Arc<dyn Handler>,
        rx.clone(),
        Duration::from_secs(1),
    ));
    let admin = Arc::new(Admin {
        config: Arc::clone(&cfg),
        accounts: Arc::clone(&registry),
        store: Arc::clone(&store),
        clock: clock.clone(),
        metrics: Arc::new(String::new),
        sessions: Arc::clone(&sessions),
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(serve(l, admin, rx.clone(), Duration::from_secs(1)));
    tokio::spawn(Arc::clone(&sessions).watch(Arc::clone(&store), rx.clone()));
    tokio::spawn(samlgate::serve::sync_accounts(
        sync,
        Arc::clone(&store),
        Arc::clone(&cfg),
        Arc::clone(&registry),
        rx,
    ));
    Fleet {
        public,
        admin: admin_url,
        store,
        registry,
        clock,
        _guards: vec![g1, tx],
        _dir: dir,
    }
}

/// A replica on a fresh embedded store; `cfg` decides the default account.
pub async fn fleet(cfg: Config) -> (Fleet, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("s.db"), clock.clone()).unwrap());
    (fleet_on(store, clock, cfg).await, dir)
}

impl Fleet {
    pub async fn api(&self, method: Method, path: &str, token: &str, body: Value) -> Reply {
        let auth = format!("Bearer {token}");
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        request(
            method,
            &format!("{}{path}", self.admin),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    pub async fn put(&self, id: &str, d: &Value) -> Reply {
        self.api(
            Method::PUT,
            &format!("/api/v2/accounts/{id}"),
            ADMIN,
            d.clone(),
        )
        .await
    }

    pub async fn patch(&self, id: &str, p: Value) -> Reply {
        self.api(Method::PATCH, &format!("/api/v2/accounts/{id}"), ADMIN, p)
            .await
    }

    /// A request to the public listener as if sent to `host`.
    pub async fn on(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut h = vec![("host", host)];
        h.extend_from_slice(headers);
        request(Method::GET, &format!("{}{path}", self.public), &h, "").await
    }

    pub fn params(&self, host: &str, email: &str, irt: Option<String>) -> ResponseParams {
        ResponseParams {
            name_id: email.into(),
            attributes: vec![
                ("email".into(), vec![email.into()]),
                ("firstName".into(), vec!["Ann".into()]),
                ("groups".into(), vec!["Meetings-Licensed".into()]),
            ],
            acs_url: format!("http://{host}/saml/acs"),
            audience: format!("http://{host}/saml/metadata"),
            in_response_to: irt,
            now: self.clock.now(),
            validity: chrono::Duration::minutes(5),
            assertion_id: None,
        }
    }

    /// POSTs `b64` to the ACS of `host`.
    pub async fn post_acs(&self, host: &str, b64: &str) -> Reply {
        let body = format!("SAMLResponse={}", samlgate::gateway::url_encode(b64));
        request(
            Method::POST,
            &format!("{}/saml/acs", self.public),
            &[
                ("host", host),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            body,
        )
        .await
    }

    /// An IdP-initiated login of `email` on `host` with `idp`.
    pub async fn login(&self, host: &str, idp: &TestIdp, email: &str) -> Reply {
        let b64 = idp
            .idp
            .response_b64(&self.params(host, email, None))
            .unwrap();
        self.post_acs(host, &b64).await
    }
}

fn problem_keys(r: &Reply) -> Vec<String> {
    r.json()["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["key"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Two accounts on a gateway without a default account.
pub(super) async fn two_accounts() -> (Fleet, tempfile::TempDir, TestIdp, TestIdp) {
    let (f, dir) = fleet(bare_config()).await;
    let a = new_idp("https://idp.acme.example/saml");
    let b = new_idp("https://idp.globex.example/saml");
    assert_eq!(
        f.put("acme", &doc("acme", "acme.test", &a)).await.status,
        201
    );
    assert_eq!(
        f.put("globex", &doc("globex", "globex.test", &b))
            .await
            .status,
        201
    );
    (f, dir, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_created_through_the_api_serves_logins_at_its_host() {
    let (f, _d, a, _b) = two_accounts().await;
    let r = f.login("acme.test", &a, "ann@acme.example").await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = cookie_of(&r);
    let r = f
        .on(
            "acme.test",
            "/x",
            &[("cookie", &cookie), ("accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-samlgate-account"], "acme");
    assert_eq!(r.json()["headers"]["x-samlgate-email"], "ann@acme.example");
    assert_eq!(r.json()["headers"]["x-samlgate-license"], "licensed");
    // Host matching ignores case and port.
    let r = f
        .on(
            "ACME.test:8443",
            "/x",
            &[("cookie", &cookie), ("accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, 200);
    // The user belongs to the account.
    let u = f.store.get_user("ann@acme.example").await.unwrap().unwrap();
    assert_eq!(u.account, "acme");
    // SP metadata per account.
    let md = f.on("globex.test", "/saml/metadata", &[]).await.text();
    assert!(
        md.contains("entityID=\"http://globex.test/saml/metadata\""),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_response_signed_by_a_idp_posted_to_b_is_refused() {
    let (f, _d, a, _b) = two_accounts().await;
    // A's assertion, for A's SP, posted at B's ACS.
    let b64 = a
        .idp
        .response_b64(&f.params("acme.test", "ann@acme.example", None))
        .unwrap();
    let r = f.post_acs("globex.test", &b64).await;
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
    // Signed by A's key but addressed to B in every respect: B does not
    // trust A's key.
    let b64 = a
        .idp
        .response_b64(&f.params("globex.test", "ann@acme.example", None))
        .unwrap();
    let r = f.post_acs("globex.test", &b64).await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "signature_invalid")
    );
    assert!(
        f.store
            .get_user("ann@acme.example")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_same_idp_entity_and_key_but_audience_must_be_the_accounts_own() {
    let (f, _d) = fleet(bare_config()).await;
    // Both accounts trust the same IdP (same entity id, same certificate).
    let shared = new_idp("https://idp.shared.example/saml");
    let twin = idp_with_key(
        "https://idp.shared.example/saml",
        shared.key_pem.clone(),
        shared.cert_pem.clone(),
    );
    assert_eq!(
        f.put("acme", &doc("acme", "acme.test", &shared))
            .await
            .status,
        201
    );
    assert_eq!(
        f.put("globex", &doc("globex", "globex.test", &twin))
            .await
            .status,
        201
    );
    // Addressed to B's ACS, but for A's SP (Audience A).
    let mut p = f.params("globex.test", "ann@acme.example", None);
    p.audience = "http://acme.test/saml/metadata".into();
    let r = f
        .post_acs("globex.test", &shared.idp.response_b64(&p).unwrap())
        .await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "audience_mismatch")
    );
    // Addressed to A entirely, posted to B: B's Destination check refuses.
    let p = f.params("acme.test", "ann@acme.example", None);
    let r = f
        .post_acs("globex.test", &shared.idp.response_b64(&p).unwrap())
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.header("set-cookie").is_none());
    // And the right one works.
    let p = f.params("globex.test", "gus@globex.example", None);
    let r = f
        .post_acs("globex.test", &shared.idp.response_b64(&p).unwrap())
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_a_session_cookie_is_not_a_session_on_another_accounts_host() {
    let (f, _d, a, _b) = two_accounts().await;
    let cookie = cookie_of(&f.login("acme.test", &a, "ann@acme.example").await);
    let json = [("cookie", cookie.as_str()), ("accept", "application/json")];
    assert_eq!(f.on("acme.test", "/x", &json).await.status, 200);
    let r = f.on("globex.test", "/x", &json).await;
    assert_eq!(r.status, 401, "{}", r.text());
    // A browser is sent to B's login, not let in.
    let r = f
        .on(
            "globex.test",
            "/x",
            &[("cookie", &cookie), ("accept", "text/html")],
        )
        .await;
    assert_eq!(r.status, 302);
    // And it still works on A afterwards.
    assert_eq!(f.on("acme.test", "/x", &json).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_replays_and_request_ids_do_not_cross_accounts() {
    let (f, _d, a, b) = two_accounts().await;
    // A replay of A's assertion on B (even re-signed for B it is B's key
    // that counts): refused; on A, the replay cache refuses it.
    let b64 = a
        .idp
        .response_b64(&f.params("acme.test", "ann@acme.example", None))
        .unwrap();
    assert_eq!(f.post_acs("acme.test", &b64).await.status, 303);
    assert_eq!(f.post_acs("globex.test", &b64).await.status, 403);
    let r = f.post_acs("acme.test", &b64).await;
    assert_eq!((r.status, code_in_page(&r).as_str()), (403, "replayed"));
    // An AuthnRequest id issued by A, answered at B by B's own IdP: not
    // outstanding there.
    let loc = f
        .on("acme.test", "/saml/login?return_to=/r", &[])
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let pairs = samlgate::gateway::form_pairs(loc.split_once('?').unwrap().1.as_bytes());
    let request_id = pairs
        .iter()
        .find(|(k, _)| k == "RelayState")
        .unwrap()
        .1
        .clone();
    let b64 = b
        .idp
        .response_b64(&f.params(
            "globex.test",
            "gus@globex.example",
            Some(request_id.clone()),
        ))
        .unwrap();
    let r = f.post_acs("globex.test", &b64).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.header("set-cookie").is_none());
    // The id is still A's to answer.
    let b64 = a
        .idp
        .response_b64(&f.params("acme.test", "ann@acme.example", Some(request_id)))
        .unwrap();
    assert_eq!(f.post_acs("acme.test", &b64).await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_a_login_on_b_for_an_email_of_a_is_wrong_account() {
    let (f, _d, a, b) = two_accounts().await;
    assert_eq!(
        f.login("acme.test", &a, "ann@acme.example").await.status,
        303
    );
    let before = f.store.get_user("ann@acme.example").await.unwrap().unwrap();
    let r = f.login("globex.test", &b, "ann@acme.example").await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "wrong_account")
    );
    assert!(r.header("set-cookie").is_none());
    let after = f.store.get_user("ann@acme.example").await.unwrap().unwrap();
    assert_eq!(before, after, "A's user is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sso_create_and_csv_on_b_for_an_email_of_a_are_refused() {
    let (f, _d, a, _b) = two_accounts().await;
    assert_eq!(
        f.login("acme.test", &a, "ann@acme.example").await.status,
        303
    );
    assert_eq!(
        f.patch(
            "globex",
            json!({"provisioning": {"mode": "prior_to_sign_in"}})
        )
        .await
        .status,
        200
    );
    let r = f
        .api(
            Method::POST,
            "/api/v2/accounts/globex/users",
            ADMIN,
            json!({"action": "ssoCreate", "user_info": {"email": "Ann@acme.example", "type": 1, "first_name": "A", "last_name": "B"}}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("user_in_other_account"))
    );
    let csv = "email,first_name\nann@acme.example,Ann\nnew@globex.example,New\n";
    let r = request(
        Method::POST,
        &format!(
            "{}/api/v2/accounts/globex/users/import?license=basic",
            f.admin
        ),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        csv,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rep = r.json();
    assert_eq!(rep["created"], 1);
    assert_eq!(rep["errors"][0]["line"], 2);
    assert!(
        rep["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("user_in_other_account"),
        "{rep}"
    );
    let u = f.store.get_user("ann@acme.example").await.unwrap().unwrap();
    assert_eq!(u.account, "acme");
    assert_eq!(
        f.store
            .get_user("new@globex.example")
            .await
            .unwrap()
            .unwrap()
            .account,
        "globex"
    );
    // A user of A is not found through B's users API.
    let r = f
        .api(
            Method::GET,
            "/api/v2/accounts/globex/users/ann@acme.example",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("user_not_found"))
    );
    let r = f
        .api(
            Method::DELETE,
            "/api/v2/accounts/globex/users/ann@acme.example",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("user_not_found"))
    );
    // Through A's, it is.
    let r = f
        .api(
            Method::GET,
            "/api/v2/accounts/acme/users/ann@acme.example",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        f.store
            .get_user("ann@acme.example")
            .await
            .unwrap()
            .is_some()
    );
}

/// An account's IdP (or admin) cannot take another company's people by
/// creating users in that company's associated domain first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_no_account_creates_users_in_another_accounts_associated_domain() {
    let (f, _d, a, b) = two_accounts().await;
    // A user of globex in partner.example, created while globex listed that
    // domain; then the domain moves to acme: existing users are not
    // affected.
    let mut globex = doc("globex", "globex.test", &b);
    globex["provisioning"]["associated_domains"] = json!(["globex.example", "partner.example"]);
    assert_eq!(f.put("globex", &globex).await.status, 200);
    assert_eq!(
        f.login("globex.test", &b, "old@partner.example")
            .await
            .status,
        303
    );
    assert_eq!(
        f.put("globex", &doc("globex", "globex.test", &b))
            .await
            .status,
        200
    );
    let mut acme = doc("acme", "acme.test", &a);
    acme["provisioning"]["associated_domains"] = json!(["acme.example", "partner.example"]);
    assert_eq!(f.put("acme", &acme).await.status, 200);

    // JIT on globex for an address of acme's domain: refused, nothing stored.
    let r = f.login("globex.test", &b, "eve@acme.example").await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "wrong_account")
    );
    assert!(r.header("set-cookie").is_none());
    assert!(
        f.store
            .get_user("eve@acme.example")
            .await
            .unwrap()
            .is_none()
    );
    // Case and the domain's form do not matter.
    let r = f.login("globex.test", &b, "Eve@ACME.Example").await;
    assert_eq!(code_in_page(&r), "wrong_account");
    // The existing globex user in partner.example still signs in.
    assert_eq!(
        f.login("globex.test", &b, "old@partner.example")
            .await
            .status,
        303
    );

    // ssoCreate on globex for an address of acme's domain: 409.
    assert_eq!(
        f.patch(
            "globex",
            json!({"provisioning": {"mode": "prior_to_sign_in"}})
        )
        .await
        .status,
        200
    );
    let r = f
        .api(
            Method::POST,
            "/api/v2/accounts/globex/users",
            ADMIN,
            json!({"action": "ssoCreate", "user_info": {"email": "mallory@acme.example", "type": 2, "first_name": "M", "last_name": "X"}}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("user_in_other_account")),
        "{}",
        r.text()
    );
    assert!(
        f.store
            .get_user("mallory@acme.example")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        f.store
            .claim_vanities(&[("mallory".into(), "m@globex.example".into())])
            .await
            .unwrap(),
        vec![true],
        "no vanity name was claimed for the refused user"
    );

    // CSV on globex: the row in acme's domain is refused on its line, the
    // existing globex user in partner.example is skipped as existing, the
    // others are created. Both the insert-only and the look-up path.
    for license in ["basic", "licensed"] {
        let csv = format!(
            "email,first_name\nx.{license}@acme.example,X\nok.{license}@globex.example,Ok\nold@partner.example,Old\nfree.{license}@elsewhere.example,F\n"
        );
        let r = request(
            Method::POST,
            &format!(
                "{}/api/v2/accounts/globex/users/import?license={license}",
                f.admin
            ),
            &[("authorization", &format!("Bearer {ADMIN}"))],
            csv,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let rep = r.json();
        assert_eq!(
            (&rep["created"], &rep["skipped"], &rep["error_count"]),
            (&json!(2), &json!(1), &json!(1)),
            "{license}: {rep}"
        );
        assert_eq!(rep["errors"][0]["line"], 2);
        let reason = rep["errors"][0]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("user_in_other_account") && reason.contains("associated domain"),
            "{reason}"
        );
        assert!(
            f.store
                .get_user(&format!("x.{license}@acme.example"))
                .await
                .unwrap()
                .is_none()
        );
    }

    // The rightful account creates its people as before.
    assert_eq!(
        f.login("acme.test", &a, "eve@acme.example").await.status,
        303
    );
    assert_eq!(
        f.store
            .get_user("eve@acme.example")
            .await
            .unwrap()
            .unwrap()
            .account,
        "acme"
    );

    // A domain both accounts list may be used by either.
    let mut globex = doc("globex", "globex.test", &b);
    globex["provisioning"]["associated_domains"] = json!(["globex.example", "acme.example"]);
    assert_eq!(f.put("globex", &globex).await.status, 200);
    assert_eq!(
        f.login("globex.test", &b, "shared@acme.example")
            .await
            .status,
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_a_users_token_reaches_only_its_own_account() {
    let (f, _d, _a, _b) = two_accounts().await;
    let r = f
        .api(
            Method::POST,
            "/api/v2/accounts/acme/tokens",
            ADMIN,
            json!({"scope": "users", "name": "hr sync"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let token_id = r.json()["id"].as_str().unwrap().to_owned();
    // Its own account's users: yes.
    let r = f
        .api(
            Method::GET,
            "/api/v2/accounts/acme/users",
            &token,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Another account's users, the accounts API, the default users API: no.
    for (m, path) in [
        (Method::GET, "/api/v2/accounts/globex/users"),
        (Method::GET, "/api/v2/accounts/globex"),
        (Method::GET, "/api/v2/accounts/acme"),
        (Method::GET, "/api/v2/accounts"),
        (Method::POST, "/api/v2/accounts/acme/tokens"),
        (Method::GET, "/api/v2/users"),
    ] {
        let r = f
            .api(m.clone(), path, &token, json!({"scope": "users"}))
            .await;
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (403, Some("forbidden")),
            "{m} {path}"
        );
    }
    // Listed without the secret; revoked, it opens nothing.
    let r = f
        .api(
            Method::GET,
            "/api/v2/accounts/acme/tokens",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(r.json()["tokens"][0]["id"], token_id.as_str());
    assert!(!r.text().contains(&token));
    let r = f
        .api(
            Method::DELETE,
            &format!("/api/v2/accounts/acme/tokens/{token_id}"),
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = f
        .api(
            Method::GET,
            "/api/v2/accounts/acme/users",
            &token,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 401);
    // A scim token is not a users token.
    let r = f
        .api(
            Method::POST,
            "/api/v2/accounts/acme/tokens",
            ADMIN,
            json!({"scope": "scim"}),
        )
        .await;
    let scim = r.json()["token"].as_str().unwrap().to_owned();
    let r = f
        .api(
            Method::GET,
            "/api/v2/accounts/acme/users",
            &scim,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_an_unknown_host_without_a_default_account_is_404() {
    let (f, _d, _a, _b) = two_accounts().await;
    for path in ["/saml/login", "/saml/metadata", "/x", "/saml/acs"] {
        let r = f.on("evil.test", path, &[("accept", "text/html")]).await;
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (404, Some("unknown_host")),
            "{path}"
        );
    }
    // With a default account, an unknown host is the default's.
    let mut cfg = super::support::config("config.toml");
    cfg.session.recheck_secs = 1;
    let (g, _d2) = fleet(cfg).await;
    let r = g.on("evil.test", "/saml/metadata", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("https://sp.example.com/saml/metadata"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_a_suspended_account_refuses_logins_and_ends_its_sessions() {
    let (f, _d, a, b) = two_accounts().await;
    let cookie = cookie_of(&f.login("acme.test", &a, "ann@acme.example").await);
    let other = cookie_of(&f.login("globex.test", &b, "gus@globex.example").await);
    let json = [("cookie", cookie.as_str()), ("accept", "application/json")];
    assert_eq!(f.on("acme.test", "/x", &json).await.status, 200);
    let r = f.patch("acme", json!({"status": "suspended"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Within recheck_secs (1 s here) the session is gone.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(f.on("acme.test", "/x", &json).await.status, 401);
    let r = f.login("acme.test", &a, "ann@acme.example").await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "account_suspended")
    );
    let r = f.on("acme.test", "/saml/login", &[]).await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "account_suspended")
    );
    // The other account is unaffected.
    let j2 = [("cookie", other.as_str()), ("accept", "application/json")];
    assert_eq!(f.on("globex.test", "/x", &j2).await.status, 200);
    // Reactivated: sign in again works.
    assert_eq!(
        f.patch("acme", json!({"status": "active"})).await.status,
        200
    );
    assert_eq!(
        f.login("acme.test", &a, "ann@acme.example").await.status,
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_mode_switches_live_jit_to_prior_to_sign_in_and_back() {
    let (f, _d, a, _b) = two_accounts().await;
    let sso_create = |email: &str| json!({"action": "ssoCreate", "user_info": {"email": email, "type": 2, "first_name": "P", "last_name": "Q"}});
    // JIT: ssoCreate is off, logins create users.
    let r = f
        .api(
            Method::POST,
            "/api/v2/accounts/acme/users",
            ADMIN,
            sso_create("pre@acme.example"),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("sso_create_disabled"))
    );
    assert_eq!(
        f.login("acme.test", &a, "jit@acme.example").await.status,
        303
    );
    // The seed's switch.
    let r = f
        .patch(
            "acme",
            json!({"provisioning": {"mode": "prior_to_sign_in"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["provisioning"]["mode"], "prior_to_sign_in");
    assert_eq!(
        r.json()["provisioning"]["associated_domains"][0],
        "acme.example",
        "a merge patch keeps the other keys"
    );
    let r = f.login("acme.test", &a, "new@acme.example").await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "not_provisioned")
    );
    assert!(
        f.store
            .get_user("new@acme.example")
            .await
            .unwrap()
            .is_none()
    );
    let r = f
        .api(
            Method::POST,
            "/api/v2/accounts/acme/users",
            ADMIN,
            sso_create("pre@acme.example"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["account"], "acme");
    assert_eq!(
        f.login("acme.test", &a, "pre@acme.example").await.status,
        303
    );
    // Existing users still sign in.
    assert_eq!(
        f.login("acme.test", &a, "jit@acme.example").await.status,
        303
    );
    // Back to JIT.
    assert_eq!(
        f.patch("acme", json!({"provisioning": {"mode": "jit"}}))
            .await
            .status,
        200
    );
    assert_eq!(
        f.login("acme.test", &a, "new@acme.example").await.status,
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_documents_with_problems_are_refused_whole_and_change_nothing() {
    let (f, _d, a, b) = two_accounts().await;
    let before = f
        .api(Method::GET, "/api/v2/accounts/acme", ADMIN, Value::Null)
        .await
        .json();
    // Every problem at once, by key.
    let mut bad = doc("acme", "acme.test", &a);
    bad["colour"] = json!("red");
    bad["provisioning"]["mode"] = json!("sometimes");
    bad["mapping"]["rules"][0]["regex"] = json!("(");
    bad["mapping"]["rules"][0]["licence"] = json!("x");
    bad["session"] = json!({"lifetime_secs": "long"});
    let r = f.put("acme", &bad).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_account"))
    );
    let keys = problem_keys(&r);
    for k in [
        "colour",
        "mapping.rules[0].licence",
        "session.lifetime_secs",
    ] {
        assert!(keys.contains(&k.to_owned()), "{k} not in {keys:?}");
    }
    // Shape is fine, values are not: every value problem.
    let mut bad = doc("acme", "acme.test", &a);
    bad["provisioning"]["mode"] = json!("sometimes");
    bad["mapping"]["rules"][0]["regex"] = json!("(");
    bad["mapping"]["rules"][0]["contains"] = Value::Null;
    bad["hosts"] = json!(["acme.test", "bad host", "acme.test"]);
    bad["sp"]["acs_url"] = json!("ftp://x");
    let r = f.put("acme", &bad).await;
    let keys = problem_keys(&r);
    for k in [
        "provisioning.mode",
        "mapping.rules[0].regex",
        "hosts[1]",
        "hosts[2]",
        "sp.acs_url",
    ] {
        assert!(keys.contains(&k.to_owned()), "{k} not in {keys:?}");
    }
    // Metadata that does not parse, or has no signing key.
    let mut bad = doc("acme", "acme.test", &a);
    bad["idp"]["metadata_xml"] = json!("<not-metadata");
    assert_eq!(
        problem_keys(&f.put("acme", &bad).await),
        ["idp.metadata_xml"]
    );
    let no_key = a
        .metadata
        .lines()
        .filter(|l| !l.contains("KeyDescriptor"))
        .collect::<Vec<_>>()
        .join("\n");
    bad["idp"]["metadata_xml"] = json!(no_key);
    assert_eq!(
        problem_keys(&f.put("acme", &bad).await),
        ["idp.metadata_xml"]
    );
    // A bad id, an id that differs from the path, the default's id.
    for (path_id, body_id) in [
        ("Acme", "Acme"),
        ("a", "a"),
        ("acme", "other"),
        ("default", "default"),
    ] {
        let mut d = doc(body_id, "x.test", &a);
        d["id"] = json!(body_id);
        let r = f.put(path_id, &d).await;
        assert_eq!(
            (r.status, problem_keys(&r)),
            (400, vec!["id".to_owned()]),
            "{path_id}"
        );
    }
    // Malformed JSON, a non-object.
    let r = request(
        Method::PUT,
        &format!("{}/api/v2/accounts/acme", f.admin),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        "{\"hosts\": [",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_json"))
    );
    // A host another account lists (its SP identity its own).
    let mut taker = doc("initech", "acme.test", &b);
    taker["sp"] = json!({"entity_id": "http://initech.test/saml/metadata", "acs_url": "http://initech.test/saml/acs"});
    let r = f.put("initech", &taker).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("host_taken"))
    );
    let r = f
        .patch("globex", json!({"hosts": ["globex.test", "ACME.test"]}))
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("host_taken"))
    );
    // A bad patch.
    let r = f.patch("acme", json!({"provisioning": {"mode": 7}})).await;
    assert_eq!(problem_keys(&r), ["provisioning.mode"]);
    // Nothing changed: acme as before, no initech, globex's hosts as before.
    let after = f
        .api(Method::GET, "/api/v2/accounts/acme", ADMIN, Value::Null)
        .await
        .json();
    assert_eq!(before, after);
    assert_eq!(
        f.api(Method::GET, "/api/v2/accounts/initech", ADMIN, Value::Null)
            .await
            .status,
        404
    );
    let a2 = f.login("acme.test", &a, "ann@acme.example").await;
    assert_eq!(a2.status, 303, "acme still serves its host");
    let g = f.registry.get("globex").unwrap();
    assert_eq!(g.hosts, ["globex.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_api_replace_list_dry_run_and_delete() {
    let (f, _d, a, _b) = two_accounts().await;
    // A host written in upper case is claimed (and released) as listed.
    let mut d = doc("acme", "ACME.test", &a);
    d["sp"] = json!({"entity_id": "http://acme.test/saml/metadata", "acs_url": "http://acme.test/saml/acs"});
    assert_eq!(f.put("acme", &d).await.status, 200);
    // Replace: 200, hosts moved (the old host freed).
    let mut d = doc("acme", "acme2.test", &a);
    d["name"] = json!("Acme Two");
    let r = f.put("acme", &d).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("etag").is_some());
    assert_eq!(f.on("acme.test", "/saml/metadata", &[]).await.status, 404);
    assert_eq!(f.on("acme2.test", "/saml/metadata", &[]).await.status, 200);
    // The freed host can be listed by another account.
    let c = new_idp("https://idp.initech.example/saml");
    assert_eq!(
        f.put("initech", &doc("initech", "acme.test", &c))
            .await
            .status,
        201
    );
    // dry_run validates and writes nothing.
    let r = f
        .api(
            Method::PUT,
            "/api/v2/accounts/hooli?dry_run=true",
            ADMIN,
            doc("hooli", "hooli.test", &c),
        )
        .await;
    assert_eq!((r.status, r.json()["created"].as_bool()), (200, Some(true)));
    assert_eq!(
        f.api(Method::GET, "/api/v2/accounts/hooli", ADMIN, Value::Null)
            .await
            .status,
        404
    );
    // List with a cursor.
    let r = f
        .api(Method::GET, "/api/v2/accounts?limit=2", ADMIN, Value::Null)
        .await
        .json();
    let ids: Vec<&str> = r["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "globex"]);
    assert_eq!(r["next_cursor"], "globex");
    let r = f
        .api(
            Method::GET,
            "/api/v2/accounts?limit=2&cursor=globex",
            ADMIN,
            Value::Null,
        )
        .await
        .json();
    assert_eq!(r["accounts"][0]["id"], "initech");
    assert!(r["next_cursor"].is_null());
    // Delete: refused while it has users, then purged.
    assert_eq!(
        f.login("acme2.test", &a, "ann@acme.example").await.status,
        303
    );
    let r = f
        .api(Method::DELETE, "/api/v2/accounts/acme", ADMIN, Value::Null)
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("account_not_empty"))
    );
    let r = f
        .api(
            Method::DELETE,
            "/api/v2/accounts/acme?purge=true",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(
        f.store
            .get_user("ann@acme.example")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(f.on("acme2.test", "/saml/metadata", &[]).await.status, 404);
    let r = f
        .api(Method::DELETE, "/api/v2/accounts/acme", ADMIN, Value::Null)
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("account_not_found"))
    );
    // Without a token, nothing.
    let r = f
        .api(
            Method::GET,
            "/api/v2/accounts",
            "wrong-token-0123456789",
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_deleted_while_its_users_are_signed_in_ends_their_sessions() {
    let (f, _d, a, _b) = two_accounts().await;
    let cookie = cookie_of(&f.login("acme.test", &a, "ann@acme.example").await);
    let json = [("cookie", cookie.as_str()), ("accept", "application/json")];
    assert_eq!(f.on("acme.test", "/x", &json).await.status, 200);
    let r = f
        .api(
            Method::DELETE,
            "/api/v2/accounts/acme?purge=true",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = f.on("acme.test", "/x", &json).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("unknown_host"))
    );
    // Recreated with the same host, the old cookie is no session (its
    // user is gone).
    assert_eq!(
        f.put("acme", &doc("acme", "acme.test", &a)).await.status,
        201
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(f.on("acme.test", "/x", &json).await.status, 401);
}

use super::shutdown::Proc as Replica;

/// A `samlgate serve` process with no default account on Redis `url`.
async fn replica(url: &str, upstream: &str) -> Replica {
    use super::redis_support::free_port;
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    let config = dir.path().join("samlgate.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\npublic = \"127.0.0.1:{public}\"\nadmin = \"127.0.0.1:{admin}\"\n\
[store]\nkind = \"redis\"\nurl = \"{url}\"\n[upstream]\nurl = \"{upstream}\"\n\
[provisioning]\noutbox_dir = \"{}\"\n[admin]\ntokens = [\"{ADMIN}\"]\n",
            dir.path().join("outbox").display()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_samlgate"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env("SAMLGATE_WORKERS", "1");
    super::shutdown::launch(cmd, public, admin, config, dir).await
}

/// Retries `check` every 100 ms until it holds; returns how long that took
/// (panics after 5 s: the promise is "within 5 s").
async fn within_5s<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not in effect on the other replica within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_redis_see_account_changes_within_5_seconds() {
    let (url, _redis) = super::redis_support::standalone();
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let upstream = format!("http://{up}");
    let (r1, r2) = (
        replica(&url, &upstream).await,
        replica(&url, &upstream).await,
    );
    // Unique per run: the Redis may be shared with other test runs.
    let id = format!("acme-{}", &samlgate::devidp::random_id()[1..9]);
    let host = format!("{id}.test");
    let idp = new_idp("https://idp.acme.example/saml");
    let clock = TestClock::new();
    let params = |email: &str| ResponseParams {
        name_id: email.into(),
        attributes: vec![("email".into(), vec![email.into()])],
        acs_url: format!("http://{host}/saml/acs"),
        audience: format!("http://{host}/saml/metadata"),
        in_response_to: None,
        now: clock.now(),
        validity: chrono::Duration::minutes(5),
        assertion_id: None,
    };
    let login_on = |r: &Replica, email: &str| {
        let b64 = idp.idp.response_b64(&params(email)).unwrap();
        let (url, host) = (format!("{}/saml/acs", r.public), host.clone());
        async move {
            request(
                Method::POST,
                &url,
                &[
                    ("host", host.as_str()),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                format!("SAMLResponse={}", samlgate::gateway::url_encode(&b64)),
            )
            .await
        }
    };
    let admin = |r: &Replica, m: Method, body: Value| {
        let url = format!("{}/api/v2/accounts/{id}", r.admin);
        async move {
            request(
                m,
                &url,
                &[("authorization", &format!("Bearer {ADMIN}"))],
                body.to_string(),
            )
            .await
        }
    };

    // Created through replica 1: served by replica 2.
    let r = admin(&r1, Method::PUT, doc(&id, &host, &idp)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let took = within_5s("create", || async {
        request(
            Method::GET,
            &format!("{}/saml/metadata", r2.public),
            &[("host", host.as_str())],
            "",
        )
        .await
        .status
            == 200
    })
    .await;
    eprintln!("created on replica 1, served by replica 2 after {took:?}");
    let r = login_on(&r2, &format!("jit@{id}.example")).await;
    assert_eq!(r.status, 303, "{}", r.text());

    // JIT → prior to sign-in through replica 1: replica 2 refuses newcomers.
    let r = admin(
        &r1,
        Method::PATCH,
        json!({"provisioning": {"mode": "prior_to_sign_in"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut n = 0;
    within_5s("prior_to_sign_in", || {
        n += 1;
        let f = login_on(&r2, &format!("new{n}@{id}.example"));
        async move {
            let r = f.await;
            r.status == 403 && code_in_page(&r) == "not_provisioned"
        }
    })
    .await;
    // Replica 1 applied it at once.
    let r = login_on(&r1, &format!("other@{id}.example")).await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "not_provisioned")
    );

    // Suspended through replica 1: replica 2 refuses even existing users.
    let r = admin(&r1, Method::PATCH, json!({"status": "suspended"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    within_5s("suspended", || {
        let f = login_on(&r2, &format!("jit@{id}.example"));
        async move {
            let r = f.await;
            r.status == 403 && code_in_page(&r) == "account_suspended"
        }
    })
    .await;
    // Clean up the shared Redis.
    let r = request(
        Method::DELETE,
        &format!("{}/api/v2/accounts/{id}?purge=true", r1.admin),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 204);
}

#[test]
fn command_line_accounts_put_get_list_delete_and_check_response_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("samlgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n",
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_samlgate"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cfg = config.to_str().unwrap();
    // No [idp]: a valid config without a default account.
    let (code, out, _) = run(&["config", "check", "--config", cfg]);
    assert_eq!(code, Some(0));
    assert!(out.contains("no default account"), "{out}");
    // A TOML document with a problem: refused, every problem named, nothing written.
    let idp = new_idp("https://idp.acme.example/saml");
    let toml_doc = format!(
        "id = \"acme\"\nhosts = [\"acme.test\"]\n[sp]\nentity_id = \"http://acme.test/saml/metadata\"\nacs_url = \"http://acme.test/saml/acs\"\n\
[idp]\nmetadata_xml = '''{}'''\n[provisioning]\nmode = \"{{mode}}\"\n",
        idp.metadata
    );
    let file = dir.path().join("acme.toml");
    std::fs::write(&file, toml_doc.replace("{mode}", "sometimes")).unwrap();
    let (code, _, err) = run(&["accounts", "put", "--config", cfg, file.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("provisioning.mode"), "{err}");
    // --dry-run writes nothing; the real put creates it.
    std::fs::write(&file, toml_doc.replace("{mode}", "jit")).unwrap();
    let (code, out, _) = run(&[
        "accounts",
        "put",
        "--config",
        cfg,
        "--dry-run",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        (code, out.contains("would be created")),
        (Some(0), true),
        "{out}"
    );
    let (code, _, _) = run(&["accounts", "get", "--config", cfg, "acme"]);
    assert_eq!(code, Some(1));
    let (code, out, err) = run(&["accounts", "put", "--config", cfg, file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("account acme created"), "{out}");
    let (code, out, _) = run(&["accounts", "get", "--config", cfg, "acme"]);
    assert_eq!(code, Some(0));
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["hosts"][0], "acme.test");
    let (_, out, _) = run(&["accounts", "list", "--config", cfg]);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["id"], "acme");
    // check-response as the account: the JSON names it.
    let clock = samlgate::clock::SystemClock;
    let p = ResponseParams {
        name_id: "ann@acme.example".into(),
        attributes: vec![("email".into(), vec!["ann@acme.example".into()])],
        acs_url: "http://acme.test/saml/acs".into(),
        audience: "http://acme.test/saml/metadata".into(),
        in_response_to: None,
        now: clock.now(),
        validity: chrono::Duration::minutes(5),
        assertion_id: None,
    };
    let resp = dir.path().join("r.xml");
    std::fs::write(&resp, idp.idp.response(&p).unwrap()).unwrap();
    let (code, out, err) = run(&[
        "check-response",
        "--config",
        cfg,
        "--account",
        "acme",
        resp.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let rep: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (rep["decision"].as_str(), rep["account"].as_str()),
        (Some("accept"), Some("acme"))
    );
    // Without --account there is no default account to decide with.
    let (code, out, _) = run(&["check-response", "--config", cfg, resp.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(out.contains("unknown_account"), "{out}");
    // Users of the account: import, list, delete.
    let csv = dir.path().join("u.csv");
    std::fs::write(&csv, "email\nann@acme.example\n").unwrap();
    let (code, _, err) = run(&[
        "users",
        "import",
        "--config",
        cfg,
        "--account",
        "acme",
        csv.to_str().unwrap(),
        "--license",
        "basic",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = run(&["users", "list", "--config", cfg, "--account", "acme"]);
    let users: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(users[0]["account"], "acme");
    let (code, _, _) = run(&["accounts", "delete", "--config", cfg, "acme"]);
    assert_eq!(code, Some(2), "refused while it has users");
    let (code, out, _) = run(&["accounts", "delete", "--config", cfg, "--purge", "acme"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("1 user(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_sends_a_work_email_or_domain_to_its_accounts_login() {
    let (f, _d, _a, b) = two_accounts().await;
    // Any host, an unknown one included: the form.
    let r = f.on("unknown.test", "/saml/discover", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Work email or company domain"));
    // By email, by domain, by account id (case-insensitive), with a safe return path.
    for q in ["Ann%40ACME.example", "acme.example", "acme"] {
        let r = f
            .on(
                "globex.test",
                &format!("/saml/discover?q={q}&return_to=%2Fmeetings%2F1"),
                &[],
            )
            .await;
        assert_eq!(r.status, 302, "{q}: {}", r.text());
        assert_eq!(
            r.header("location"),
            Some("http://acme.test/saml/login?return_to=%2Fmeetings%2F1"),
            "{q}"
        );
    }
    // An off-site return_to is dropped, never followed.
    let r = f
        .on(
            "acme.test",
            "/saml/discover?q=acme.example&return_to=https%3A%2F%2Fevil.test%2F",
            &[],
        )
        .await;
    assert_eq!(r.header("location"), Some("http://acme.test/saml/login"));
    // Unknown: the same page with a clear message (escaped).
    let r = f
        .on(
            "acme.test",
            "/saml/discover?q=%3Cb%3E%40nowhere.example",
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("No account signs in"), "{}", r.text());
    assert!(r.text().contains("&lt;b&gt;@nowhere.example"));
    assert!(!r.text().contains("<b>@nowhere"));
    // Two accounts claiming one domain: a choice, not a guess.
    let mut d = doc("initech", "initech.test", &b);
    d["provisioning"]["associated_domains"] = json!(["acme.example"]);
    assert_eq!(f.put("initech", &d).await.status, 201);
    let r = f
        .on("acme.test", "/saml/discover?q=acme.example", &[])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("http://acme.test/saml/login"));
    assert!(r.text().contains("http://initech.test/saml/login"));
    // A suspended account is not offered.
    assert_eq!(
        f.patch("initech", json!({"status": "suspended"}))
            .await
            .status,
        200
    );
    let r = f
        .on("acme.test", "/saml/discover?q=acme.example", &[])
        .await;
    assert_eq!(r.status, 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_by_url_per_account_fetched_refreshed_and_a_failing_one_blocks_nobody() {
    use super::metadata_url::MetadataServer;
    let (f, _d) = fleet(bare_config()).await;
    let first = new_idp("https://idp.acme.example/saml");
    let server = Arc::new(MetadataServer(std::sync::Mutex::new((
        200,
        first.metadata.clone(),
    ))));
    let (md_addr, _g) = spawn(server.clone()).await;
    // A metadata server that never answers (a stalled IdP).
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_addr = stalled.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stalled.accept().await {
            held.push(s);
        }
    });
    let mut d = doc("acme", "acme.test", &first);
    d["idp"] = json!({"metadata_url": format!("http://{md_addr}/md"), "metadata_refresh_secs": 10});
    let r = f.put("acme", &d).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        f.login("acme.test", &first, "ann@acme.example")
            .await
            .status,
        303
    );
    // A URL that cannot be fetched at creation: refused, by key.
    let mut bad = doc("globex", "globex.test", &first);
    bad["idp"] = json!({"metadata_url": format!("http://{md_addr}/md"), "entity_id": "https://nope.example"});
    let r = f.put("globex", &bad).await;
    assert_eq!(problem_keys(&r), ["idp.metadata_url"]);
    // The stalled one: refused after the fetch timeout, and meanwhile acme
    // keeps signing people in.
    let slow = {
        let f_admin = f.admin.clone();
        let mut d = doc("initech", "initech.test", &first);
        d["idp"] = json!({"metadata_url": format!("http://{stalled_addr}/md")});
        tokio::spawn(async move {
            request(
                Method::PUT,
                &format!("{f_admin}/api/v2/accounts/initech"),
                &[("authorization", &format!("Bearer {ADMIN}"))],
                d.to_string(),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.login("acme.test", &first, "bob@acme.example")
            .await
            .status,
        303
    );
    let r = slow.await.unwrap();
    assert_eq!(
        (r.status, problem_keys(&r)),
        (400, vec!["idp.metadata_url".to_owned()])
    );
    // Key rollover at the IdP: the refresher stores the new copy; the old
    // key stops working, the new one works. A failing fetch after that
    // keeps the last good copy.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(samlgate::serve::refresh_stored_metadata(
        Arc::clone(&f.store),
        Arc::new(bare_config()),
        Arc::clone(&f.registry),
        stop_rx,
    ));
    let second = new_idp("https://idp.acme.example/saml");
    *server.0.lock().unwrap() = (200, second.metadata.clone());
    let start = std::time::Instant::now();
    while f
        .login(
            "acme.test",
            &second,
            &format!("c{}@acme.example", start.elapsed().as_millis()),
        )
        .await
        .status
        != 303
    {
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "the rollover was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        f.login("acme.test", &first, "dan@acme.example")
            .await
            .status,
        403
    );
    *server.0.lock().unwrap() = (500, "down".into());
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        f.login("acme.test", &second, "eve@acme.example")
            .await
            .status,
        303
    );
    let _ = stop_tx.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_stored_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(
            &dir.path().join("s.db"),
            Arc::new(samlgate::clock::SystemClock),
        )
        .unwrap(),
    );
    let cfg = Arc::new(bare_config());
    let registry = Arc::new(Registry::loading(None));
    let admin = Arc::new(Admin {
        config: Arc::clone(&cfg),
        accounts: Arc::clone(&registry),
        store: Arc::clone(&store),
        clock: Arc::new(samlgate::clock::SystemClock),
        metrics: Arc::new(String::new),
        sessions: Arc::default(),
    });
    let (addr, _g) = spawn(admin).await;
    let r = request(Method::GET, &format!("http://{addr}/readyz"), &[], "").await;
    assert_eq!(
        (r.status, r.text().trim()),
        (503, "not ready: accounts_loading")
    );
    let mut sync = samlgate::account::manage::Sync::new();
    sync.poll(store.as_ref(), &cfg, &registry).await.unwrap();
    let r = request(Method::GET, &format!("http://{addr}/readyz"), &[], "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_cannot_share_an_sp_identity_and_logout_ends_only_its_own_accounts_session() {
    let (f, _d, a, b) = two_accounts().await;
    // initech at its own host, but claiming acme's SP entity id / ACS.
    let mut d = doc("initech", "initech.test", &b);
    d["sp"]["entity_id"] = json!("http://acme.test/saml/metadata");
    let r = f.put("initech", &d).await;
    assert_eq!(problem_keys(&r), ["sp.entity_id"]);
    let mut d = doc("initech", "initech.test", &b);
    d["sp"]["acs_url"] = json!("http://acme.test/saml/acs");
    assert_eq!(problem_keys(&f.put("initech", &d).await), ["sp.acs_url"]);
    let r = f
        .patch(
            "globex",
            json!({"sp": {"entity_id": "http://acme.test/saml/metadata"}}),
        )
        .await;
    assert_eq!(problem_keys(&r), ["sp.entity_id"]);
    // A's session presented to B's logout is not ended.
    let cookie = cookie_of(&f.login("acme.test", &a, "ann@acme.example").await);
    let json = [("cookie", cookie.as_str()), ("accept", "application/json")];
    assert_eq!(f.on("globex.test", "/saml/logout", &json).await.status, 200);
    assert_eq!(
        f.on("acme.test", "/x", &json).await.status,
        200,
        "still signed in on A"
    );
    assert_eq!(f.on("acme.test", "/saml/logout", &json).await.status, 200);
    assert_eq!(f.on("acme.test", "/x", &json).await.status, 401);
}
