//! Single Logout over real HTTP: SP-initiated (signed LogoutRequest out,
//! the IdP's LogoutResponse back), IdP-initiated on both bindings (every
//! session of the NameID ends, on every replica), and the attacks: unsigned
//! or wrongly signed messages, another account's IdP key, a NameID of
//! another account, replays, a response with no request, off-site
//! RelayState, DEFLATE bombs, oversized queries.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::Method;
use openssl::pkey::PKey;
use samlgate::saml::NameId;
use samlgate::saml::logout;
use serde_json::{Value, json};

use super::accounts::{Fleet, TestIdp, bare_config, fleet, fleet_on, idp_with_key, new_idp};
use super::gateway::{TestClock, cookie_of};
use super::http_support::{Reply, request};

const HOST: &str = "acme.test";
const IDP_SLO: &str = "https://idp.acme.example/slo";

/// An account's IdP whose metadata publishes a Redirect SingleLogoutService.
fn idp_with_slo(entity: &str) -> TestIdp {
    let base = new_idp(entity);
    let mut t = idp_with_key(entity, base.key_pem, base.cert_pem);
    t.metadata = t.metadata.replace(
        "<md:SingleSignOnService",
        &format!(
            "<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{IDP_SLO}\"/><md:SingleSignOnService"
        ),
    );
    t
}

/// The SP key pair of an account, as files (absolute paths).
struct SpKey {
    _dir: tempfile::TempDir,
    key_file: String,
    cert_file: String,
    cert_pem: Vec<u8>,
}

fn sp_key() -> SpKey {
    let k = new_idp("sp");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sp.key");
    let cert_file = dir.path().join("sp.crt");
    std::fs::write(&key_file, &k.key_pem).unwrap();
    std::fs::write(&cert_file, &k.cert_pem).unwrap();
    SpKey {
        _dir: dir,
        key_file: key_file.display().to_string(),
        cert_file: cert_file.display().to_string(),
        cert_pem: k.cert_pem,
    }
}

fn doc_with_slo(id: &str, host: &str, idp: &TestIdp, sp: Option<&SpKey>) -> Value {
    let mut d = super::accounts::doc(id, host, idp);
    if let Some(k) = sp {
        d["sp"]["key_file"] = json!(k.key_file);
        d["sp"]["cert_file"] = json!(k.cert_file);
    }
    d
}

struct Setup {
    idp: TestIdp,
    other: TestIdp,
    sp: SpKey,
}

async fn setup(f: &Fleet) -> Setup {
    let idp = idp_with_slo("https://idp.acme.example/saml");
    let other = idp_with_slo("https://idp.globex.example/saml");
    let sp = sp_key();
    let r = f
        .put("acme", &doc_with_slo("acme", HOST, &idp, Some(&sp)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = f
        .put(
            "globex",
            &doc_with_slo("globex", "globex.test", &other, None),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    Setup { idp, other, sp }
}

fn key_of(t: &TestIdp) -> PKey<openssl::pkey::Private> {
    PKey::private_key_from_pem(&t.key_pem).unwrap()
}

/// A login on `host` with a SessionIndex; returns the cookie.
async fn login(f: &Fleet, host: &str, idp: &TestIdp, email: &str) -> String {
    let r = f.login(host, idp, email).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = cookie_of(&r);
    assert_eq!(proxied(f, host, &cookie).await, 200);
    cookie
}

async fn proxied(f: &Fleet, host: &str, cookie: &str) -> u16 {
    f.on(
        host,
        "/x",
        &[("cookie", cookie), ("accept", "application/json")],
    )
    .await
    .status
}

fn nid(email: &str) -> NameId {
    NameId {
        value: email.into(),
        format: None,
        name_qualifier: None,
        sp_name_qualifier: None,
    }
}

/// A LogoutRequest from `idp` for `email`, as a Redirect query to acme's
/// /saml/slo.
fn idp_logout_query(
    f: &Fleet,
    idp: &TestIdp,
    email: &str,
    id: &str,
    index: Option<&str>,
) -> String {
    let xml = logout::build_request(
        id,
        f.clock_now(),
        &format!("http://{HOST}/saml/slo"),
        idp.idp.entity_id(),
        &nid(email),
        index,
    );
    let url = logout::redirect_url(
        &format!("http://{HOST}/saml/slo"),
        "SAMLRequest",
        &xml,
        Some("idp-state"),
        &key_of(idp),
    )
    .unwrap();
    url.split_once('?').unwrap().1.to_owned()
}

async fn slo_get(f: &Fleet, query: &str, cookie: Option<&str>) -> Reply {
    let mut h = vec![("host", HOST)];
    if let Some(c) = cookie {
        h.push(("cookie", c));
    }
    request(
        Method::GET,
        &format!("{}/saml/slo?{query}", f.public),
        &h,
        "",
    )
    .await
}

async fn slo_post(f: &Fleet, param: &str, xml: &str) -> Reply {
    let body = format!(
        "{param}={}&RelayState=x",
        samlgate::gateway::url_encode(&base64::engine::general_purpose::STANDARD.encode(xml))
    );
    request(
        Method::POST,
        &format!("{}/saml/slo", f.public),
        &[
            ("host", HOST),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body,
    )
    .await
}

/// The signed message a samlgate redirect carries, checked with the SP's
/// certificate: (param, XML, RelayState).
fn sent_message(location: &str, sp_cert_pem: &[u8]) -> (logout::Kind, String, Option<String>) {
    let b64: String = String::from_utf8(sp_cert_pem.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let md = format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="sp"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor></md:IDPSSODescriptor></md:EntityDescriptor>"#
    );
    let certs = samlgate::saml::metadata::IdpMetadata::parse(&md, None)
        .unwrap()
        .signing_certs;
    let query = location.split_once('?').unwrap().1;
    let sec = bare_config().security;
    let got = logout::from_redirect(query, &certs, &sec).expect("signed by the SP key");
    (got.kind, got.xml, got.relay_state)
}

fn attr<'a>(xml: &'a str, name: &str) -> &'a str {
    let start = xml.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
    let end = start + xml[start..].find('"').unwrap();
    &xml[start..end]
}

impl Fleet {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        samlgate::clock::Clock::now(self.clock.as_ref())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_is_advertised_only_with_an_sp_key() {
    let (f, _d) = fleet(bare_config()).await;
    let _s = setup(&f).await;
    let r = f.on(HOST, "/saml/metadata", &[]).await;
    let md = r.text();
    assert!(md.contains("SingleLogoutService"), "{md}");
    assert!(md.contains(&format!("Location=\"http://{HOST}/saml/slo\"")));
    assert!(md.contains("HTTP-Redirect") && md.contains("HTTP-POST"));
    assert!(md.contains("KeyDescriptor use=\"signing\""));
    // globex has no SP key: no SLO advertised, /saml/slo not served, and
    // logout stays local.
    let r = f.on("globex.test", "/saml/metadata", &[]).await;
    assert!(!r.text().contains("SingleLogoutService"));
    assert_eq!(f.on("globex.test", "/saml/slo", &[]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_sp_initiated_sends_a_signed_request_and_takes_the_idps_response() {
    let (f, _d) = fleet(bare_config()).await;
    let s = setup(&f).await;
    let cookie = login(&f, HOST, &s.idp, "ann@acme.example").await;
    let r = f
        .on(
            HOST,
            "/saml/logout?return_to=/after",
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    // The local session is gone at once, the cookie cleared.
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(proxied(&f, HOST, &cookie).await, 401);
    let location = r.header("location").unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{IDP_SLO}?SAMLRequest=")),
        "{location}"
    );
    let (kind, xml, _) = sent_message(&location, &s.sp.cert_pem);
    assert_eq!(kind, logout::Kind::Request);
    assert_eq!(attr(&xml, "Destination"), IDP_SLO);
    assert!(xml.contains(">ann@acme.example</saml:NameID>"), "{xml}");
    assert!(xml.contains("<samlp:SessionIndex>"), "{xml}");
    assert!(xml.contains(&format!(
        "<saml:Issuer>http://{HOST}/saml/metadata</saml:Issuer>"
    )));
    let request_id = attr(&xml, "ID").to_owned();
    // The IdP answers.
    let answer = |status: &str| {
        let xml = logout::build_response(
            "_resp1",
            f.clock_now(),
            &format!("http://{HOST}/saml/slo"),
            s.idp.idp.entity_id(),
            &request_id,
            status,
            None,
        );
        let url = logout::redirect_url(
            &format!("http://{HOST}/saml/slo"),
            "SAMLResponse",
            &xml,
            None,
            &key_of(&s.idp),
        )
        .unwrap();
        url.split_once('?').unwrap().1.to_owned()
    };
    let q = answer(logout::STATUS_SUCCESS);
    let r = slo_get(&f, &q, None).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/after")),
        "{}",
        r.text()
    );
    // Once only: the same response again names no outstanding logout.
    let r = slo_get(&f, &q, None).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("in_response_to_mismatch"), "{}", r.text());
    // A partial logout is said honestly.
    let cookie = login(&f, HOST, &s.idp, "ann@acme.example").await;
    let r = f.on(HOST, "/saml/logout", &[("cookie", &cookie)]).await;
    let (_, xml, _) = sent_message(r.header("location").unwrap(), &s.sp.cert_pem);
    let rid = attr(&xml, "ID").to_owned();
    let partial = logout::build_response(
        "_partial",
        f.clock_now(),
        &format!("http://{HOST}/saml/slo"),
        s.idp.idp.entity_id(),
        &rid,
        logout::STATUS_RESPONDER,
        Some(logout::STATUS_PARTIAL),
    );
    let url = logout::redirect_url(
        "http://x/saml/slo",
        "SAMLResponse",
        &partial,
        None,
        &key_of(&s.idp),
    )
    .unwrap();
    let r = slo_get(&f, url.split_once('?').unwrap().1, None).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("not every application"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_sp_initiated_never_redirects_off_site() {
    let (f, _d) = fleet(bare_config()).await;
    let s = setup(&f).await;
    let cookie = login(&f, HOST, &s.idp, "ann@acme.example").await;
    let r = f
        .on(
            HOST,
            "/saml/logout?return_to=https://evil.example/x",
            &[("cookie", &cookie)],
        )
        .await;
    let (_, xml, relay) = sent_message(r.header("location").unwrap(), &s.sp.cert_pem);
    assert_eq!(relay, None, "no RelayState is sent to the IdP");
    let rid = attr(&xml, "ID").to_owned();
    let resp = logout::build_response(
        "_r",
        f.clock_now(),
        &format!("http://{HOST}/saml/slo"),
        s.idp.idp.entity_id(),
        &rid,
        logout::STATUS_SUCCESS,
        None,
    );
    // Even a RelayState the IdP sends back is not followed.
    let url = logout::redirect_url(
        "http://x/saml/slo",
        "SAMLResponse",
        &resp,
        Some("https://evil.example/"),
        &key_of(&s.idp),
    )
    .unwrap();
    let r = slo_get(&f, url.split_once('?').unwrap().1, None).await;
    assert_eq!(r.status, 200, "{:?}", r.header("location"));
    assert!(r.text().contains("signed out"));
    // A local logout with an off-site target stays here too.
    let (f2, _d2) = fleet(bare_config()).await;
    let other = new_idp("https://idp.x/saml");
    assert_eq!(
        f2.put("acme", &super::accounts::doc("acme", HOST, &other))
            .await
            .status,
        201
    );
    let c = login(&f2, HOST, &other, "ann@acme.example").await;
    let r = f2
        .on(
            HOST,
            "/saml/logout?return_to=//evil.example/",
            &[("cookie", &c)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("location").is_none());
}

async fn idp_initiated(f: &Fleet, s: &Setup) {
    let a1 = login(f, HOST, &s.idp, "ann@acme.example").await;
    let a2 = login(f, HOST, &s.idp, "ann@acme.example").await;
    let bob = login(f, HOST, &s.idp, "bob@acme.example").await;
    let q = idp_logout_query(f, &s.idp, "ann@acme.example", "_idp1", None);
    let r = slo_get(f, &q, Some(&a1)).await;
    assert_eq!(r.status, 302, "{}", r.text());
    // Both of ann's sessions end (on every replica); bob's does not.
    assert_eq!(proxied(f, HOST, &a1).await, 401);
    assert_eq!(proxied(f, HOST, &a2).await, 401);
    assert_eq!(proxied(f, HOST, &bob).await, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    // The answer: a signed LogoutResponse to the IdP, Success, echoing
    // RelayState.
    let location = r.header("location").unwrap();
    assert!(location.starts_with(&format!("{IDP_SLO}?SAMLResponse=")));
    let (kind, xml, relay) = sent_message(location, &s.sp.cert_pem);
    assert_eq!(kind, logout::Kind::Response);
    assert_eq!(attr(&xml, "InResponseTo"), "_idp1");
    assert!(xml.contains(logout::STATUS_SUCCESS));
    assert_eq!(relay.as_deref(), Some("idp-state"));
    // Replayed: refused.
    let r = slo_get(f, &q, None).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("replayed"));
    // A NameID with no session: Success all the same.
    let q = idp_logout_query(f, &s.idp, "nobody@acme.example", "_idp2", None);
    let r = slo_get(f, &q, None).await;
    let (_, xml, _) = sent_message(r.header("location").unwrap(), &s.sp.cert_pem);
    assert!(xml.contains(logout::STATUS_SUCCESS));
    // With a SessionIndex: only that session.
    let c1 = login(f, HOST, &s.idp, "cy@acme.example").await;
    let c2 = login(f, HOST, &s.idp, "cy@acme.example").await;
    let index = session_index_of(f, &c1).await;
    let q = idp_logout_query(f, &s.idp, "cy@acme.example", "_idp3", Some(&index));
    assert_eq!(slo_get(f, &q, None).await.status, 302);
    assert_eq!(proxied(f, HOST, &c1).await, 401);
    assert_eq!(proxied(f, HOST, &c2).await, 200);
}

/// The SessionIndex the gateway stored for a session (read from the store,
/// as the IdP knows it).
async fn session_index_of(f: &Fleet, cookie: &str) -> String {
    let id = cookie.split_once('=').unwrap().1;
    let raw = f
        .store
        .get_ephemeral(
            samlgate::store::Ephemeral::Session,
            &samlgate::provisioning::token_hash(id),
        )
        .await
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_slice(&raw).unwrap();
    v["session_index"]
        .as_str()
        .expect("a SessionIndex")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_idp_initiated_ends_every_session_of_the_name_id_embedded() {
    let (f, _d) = fleet(bare_config()).await;
    let s = setup(&f).await;
    idp_initiated(&f, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_idp_initiated_ends_every_session_of_the_name_id_redis() {
    let (url, _g) = super::redis_support::standalone();
    let store = samlgate::store::redis::RedisStore::standalone(
        &url,
        &super::redis_support::unique_prefix("slo"),
    )
    .await
    .unwrap();
    let f = fleet_on(Arc::new(store), TestClock::new(), bare_config()).await;
    let s = setup(&f).await;
    idp_initiated(&f, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_logout_landing_on_another_replica_ends_the_session_cached_on_the_first() {
    let (url, _g) = super::redis_support::standalone();
    let prefix = super::redis_support::unique_prefix("slo2");
    let store = |p: String| {
        let url = url.clone();
        async move {
            Arc::new(
                samlgate::store::redis::RedisStore::standalone(&url, &p)
                    .await
                    .unwrap(),
            ) as Arc<dyn samlgate::store::Store>
        }
    };
    let r1 = fleet_on(store(prefix.clone()).await, TestClock::new(), bare_config()).await;
    let r2 = fleet_on(store(prefix).await, TestClock::new(), bare_config()).await;
    let s = setup(&r1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r2.on(HOST, "/saml/metadata", &[]).await.status != 200 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cookie = login(&r1, HOST, &s.idp, "ann@acme.example").await;
    let q = idp_logout_query(&r2, &s.idp, "ann@acme.example", "_x1", None);
    let r = slo_get(&r2, &q, None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(proxied(&r1, HOST, &cookie).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_idp_initiated_on_the_post_binding_needs_a_valid_xml_signature() {
    let (f, _d) = fleet(bare_config()).await;
    let s = setup(&f).await;
    let ann = login(&f, HOST, &s.idp, "ann@acme.example").await;
    let make = |id: &str| {
        logout::build_request(
            id,
            f.clock_now(),
            &format!("http://{HOST}/saml/slo"),
            s.idp.idp.entity_id(),
            &nid("ann@acme.example"),
            None,
        )
    };
    // Unsigned: refused, nothing ends.
    let r = slo_post(&f, "SAMLRequest", &make("_p0")).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("signature_missing"), "{}", r.text());
    assert_eq!(proxied(&f, HOST, &ann).await, 200);
    // Signed by another key (globex's IdP): refused.
    let forged = logout::sign_enveloped(&make("_p1"), &key_of(&s.other)).unwrap();
    let r = slo_post(&f, "SAMLRequest", &forged).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("signature_invalid"), "{}", r.text());
    assert_eq!(proxied(&f, HOST, &ann).await, 200);
    // Signed, then altered (signature wrapping of the NameID): refused.
    let signed = logout::sign_enveloped(&make("_p2"), &key_of(&s.idp)).unwrap();
    let wrapped = signed.replace("ann@acme.example", "bob@acme.example");
    let r = slo_post(&f, "SAMLRequest", &wrapped).await;
    assert_eq!(r.status, 400);
    // Signed by acme's IdP: accepted.
    let r = slo_post(&f, "SAMLRequest", &signed).await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(proxied(&f, HOST, &ann).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_attacks_are_refused() {
    let (f, _d) = fleet(bare_config()).await;
    let s = setup(&f).await;
    let ann = login(&f, HOST, &s.idp, "ann@acme.example").await;
    // A LogoutRequest for acme signed by globex's IdP: refused.
    let q = idp_logout_query(&f, &s.other, "ann@acme.example", "_a1", None);
    let r = slo_get(&f, &q, None).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(proxied(&f, HOST, &ann).await, 200);
    // Unsigned (signature parameters stripped): refused.
    let stripped = q.split("&SigAlg=").next().unwrap();
    let q = idp_logout_query(&f, &s.idp, "ann@acme.example", "_a2", None);
    let unsigned = q.split("&SigAlg=").next().unwrap();
    for bad in [stripped, unsigned] {
        let r = slo_get(&f, bad, None).await;
        assert_eq!(r.status, 400);
        assert!(r.text().contains("signature_missing"), "{}", r.text());
    }
    // A SHA-1 signature: refused by the algorithm policy.
    let xml = logout::build_request(
        "_a3",
        f.clock_now(),
        &format!("http://{HOST}/saml/slo"),
        s.idp.idp.entity_id(),
        &nid("ann@acme.example"),
        None,
    );
    let url = logout::redirect_url(
        "http://x/saml/slo",
        "SAMLRequest",
        &xml,
        None,
        &key_of(&s.idp),
    )
    .unwrap();
    let q = url.split_once('?').unwrap().1;
    let sha1 = q.replace(
        &samlgate::gateway::url_encode(logout::RSA_SHA256),
        &samlgate::gateway::url_encode("http://www.w3.org/2000/09/xmldsig#rsa-sha1"),
    );
    assert_ne!(sha1, q);
    let r = slo_get(&f, &sha1, None).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("algorithm_forbidden"), "{}", r.text());
    assert_eq!(proxied(&f, HOST, &ann).await, 200);
    // A LogoutResponse that answers no request of ours.
    let resp = logout::build_response(
        "_a4",
        f.clock_now(),
        &format!("http://{HOST}/saml/slo"),
        s.idp.idp.entity_id(),
        "_never_sent",
        logout::STATUS_SUCCESS,
        None,
    );
    let url = logout::redirect_url(
        "http://x/saml/slo",
        "SAMLResponse",
        &resp,
        None,
        &key_of(&s.idp),
    )
    .unwrap();
    let r = slo_get(&f, url.split_once('?').unwrap().1, None).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("in_response_to_mismatch"));
    // A NameID of another account: the other account's session stays.
    let gus = login(&f, "globex.test", &s.other, "gus@globex.example").await;
    let q = idp_logout_query(&f, &s.idp, "gus@globex.example", "_a5", None);
    assert_eq!(slo_get(&f, &q, None).await.status, 302);
    assert_eq!(proxied(&f, "globex.test", &gus).await, 200);
    // A DEFLATE bomb: stops at the size limit.
    let mut xml = logout::build_request(
        "_a6",
        f.clock_now(),
        &format!("http://{HOST}/saml/slo"),
        s.idp.idp.entity_id(),
        &nid("ann@acme.example"),
        None,
    );
    xml.push_str(&" ".repeat(40 * 1024 * 1024));
    let url = logout::redirect_url(
        "http://x/saml/slo",
        "SAMLRequest",
        &xml,
        None,
        &key_of(&s.idp),
    )
    .unwrap();
    let q = url.split_once('?').unwrap().1;
    assert!(q.len() < 200 * 1024, "{}", q.len());
    let r = slo_get(&f, q, None).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("response_too_large"), "{}", r.text());
    // An oversized query string: refused before anything is decoded (the
    // HTTP head limit answers first over the wire; from_redirect's own
    // limit is unit-tested).
    let huge = format!("SAMLRequest={}", "A".repeat(60 * 1024));
    let r = slo_get(&f, &huge, None).await;
    assert!(
        r.status == 400 || r.status == 431 || r.status == 414,
        "{}",
        r.status
    );
    assert_eq!(proxied(&f, HOST, &ann).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_answers_an_idp_with_a_post_endpoint_with_a_signed_form() {
    let (f, _d) = fleet(bare_config()).await;
    // acme's IdP publishes only an HTTP-POST SingleLogoutService.
    let base = new_idp("https://idp.acme.example/saml");
    let mut idp = idp_with_key("https://idp.acme.example/saml", base.key_pem, base.cert_pem);
    idp.metadata = idp.metadata.replace(
        "<md:SingleSignOnService",
        &format!(
            "<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"{IDP_SLO}\"/><md:SingleSignOnService"
        ),
    );
    let sp = sp_key();
    assert_eq!(
        f.put("acme", &doc_with_slo("acme", HOST, &idp, Some(&sp)))
            .await
            .status,
        201
    );
    let ann = login(&f, HOST, &idp, "ann@acme.example").await;
    let q = idp_logout_query(&f, &idp, "ann@acme.example", "_post1", None);
    let r = slo_get(&f, &q, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxied(&f, HOST, &ann).await, 401);
    // The page posts a signed LogoutResponse to the IdP, and its CSP allows
    // exactly the one script that submits it.
    let page = r.text();
    assert!(page.contains(&format!("action=\"{IDP_SLO}\"")), "{page}");
    let csp = r.header("content-security-policy").unwrap().to_owned();
    let hash = base64::engine::general_purpose::STANDARD
        .encode(openssl::sha::sha256(logout::POST_FORM_SCRIPT.as_bytes()));
    assert!(
        csp.contains(&format!("script-src 'sha256-{hash}'")),
        "{csp}"
    );
    assert!(page.contains(&format!("<script>{}</script>", logout::POST_FORM_SCRIPT)));
    let value = page
        .split("name=\"SAMLResponse\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    // The IdP's view: samlgate's signature verifies with the SP certificate.
    let b64: String = String::from_utf8(sp.cert_pem.clone())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let md = format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="sp"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor></md:IDPSSODescriptor></md:EntityDescriptor>"#
    );
    let certs = samlgate::saml::metadata::IdpMetadata::parse(&md, None)
        .unwrap()
        .signing_certs;
    let sec = bare_config().security;
    let got = logout::from_post(&[("SAMLResponse".to_owned(), value.to_owned())], &sec).unwrap();
    let resp = logout::read_response(
        &got,
        &format!("http://{HOST}/saml/metadata"),
        &certs,
        IDP_SLO,
        f.clock_now(),
        &sec,
    )
    .unwrap();
    assert_eq!(resp.in_response_to, "_post1");
    assert_eq!(resp.status, logout::STATUS_SUCCESS);
}
