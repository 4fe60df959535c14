//! The gateway over real sockets: SP- and IdP-initiated logins, sessions,
//! the proxy and its identity headers, replay, open redirects, revocation,
//! WebSockets, two replicas on one Redis.

use crate::DefaultAccount;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use samlgate::clock::Clock;
use samlgate::config::{Config, ProvisioningMode};
use samlgate::devidp::{DevIdp, ResponseParams};
use samlgate::gateway::Gateway;
use samlgate::metrics::Metrics;
use samlgate::server::{Handler, HandlerFuture, json, serve};
use samlgate::store::embedded::EmbeddedStore;
use samlgate::store::redis::RedisStore;
use samlgate::store::{Store, UserStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::http_support::{Reply, request};
use super::redis_support::{RedisServer, standalone, unique_prefix};
use super::support::{config, fixtures};

/// A clock tests can move.
pub struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(samlgate::clock::SystemClock.now())))
    }
    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// An upstream that answers with the headers it received (as JSON), echoes
/// WebSocket-style upgrades byte for byte, and sleeps on `/slow`.
pub struct EchoUpstream;

impl Handler for EchoUpstream {
    fn call(self: Arc<Self>, mut req: Request<Incoming>, peer: SocketAddr) -> HandlerFuture {
        Box::pin(async move {
            if req.headers().contains_key(http::header::UPGRADE) {
                let up = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(io) = up.await {
                        let mut io = hyper_util::rt::TokioIo::new(io);
                        let mut buf = [0u8; 64];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                });
                let mut r = Response::new(samlgate::server::full(""));
                *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                r.headers_mut()
                    .insert(http::header::UPGRADE, "websocket".parse().unwrap());
                r.headers_mut()
                    .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
                return r;
            }
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into()),
                    )
                })
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "path": req.uri().to_string(),
                    "headers": headers,
                    "peer": peer.to_string(),
                }),
            )
        })
    }
}

pub async fn spawn(handler: Arc<dyn Handler>) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(l, handler, rx, Duration::from_secs(2)));
    (addr, tx)
}

pub fn idp() -> DevIdp {
    let k = fixtures().join("keys");
    DevIdp::new(
        "https://idp.example.org/saml/idp",
        &std::fs::read(k.join("idp.key")).unwrap(),
        &std::fs::read(k.join("idp.crt")).unwrap(),
    )
    .unwrap()
}

pub struct Gw {
    pub base: String,
    pub cfg: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<TestClock>,
    pub gateway: Arc<Gateway>,
    _guards: Vec<tokio::sync::watch::Sender<bool>>,
    _dir: tempfile::TempDir,
    _store_dir: Option<tempfile::TempDir>,
}

pub async fn gateway_with(
    store: Arc<dyn Store>,
    clock: Arc<TestClock>,
    tune: impl FnOnce(&mut Config),
) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let (up, g1) = spawn(Arc::new(EchoUpstream)).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut cfg = config("config.toml");
    cfg.acct_mut().sp.acs_url = format!("http://{addr}/saml/acs");
    cfg.upstream.url = format!("http://{up}");
    cfg.provisioning.outbox_dir = dir.path().join("outbox");
    cfg.session.recheck_secs = 1;
    tune(&mut cfg);
    let cfg = Arc::new(cfg);
    let gateway = Arc::new(
        Gateway::new(
            Arc::clone(&cfg),
            Arc::clone(&store),
            clock.clone(),
            Arc::new(Metrics::default()),
            false,
        )
        .unwrap(),
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(
        l,
        Arc::clone(&gateway) as Arc<dyn Handler>,
        rx,
        Duration::from_secs(2),
    ));
    Gw {
        base: format!("http://{addr}"),
        cfg,
        store,
        clock,
        gateway,
        _guards: vec![g1, tx],
        _dir: dir,
        _store_dir: None,
    }
}

pub async fn gateway(tune: impl FnOnce(&mut Config)) -> Gw {
    let clock = TestClock::new();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("s.db"), clock.clone()).unwrap());
    let mut g = gateway_with(store, clock, tune).await;
    g._store_dir = Some(dir);
    g
}

impl Gw {
    pub fn params(&self, email: &str, in_response_to: Option<String>) -> ResponseParams {
        ResponseParams {
            name_id: email.into(),
            attributes: vec![
                ("email".into(), vec![email.into()]),
                ("firstName".into(), vec!["Alice".into()]),
                ("groups".into(), vec!["Meetings-Licensed".into()]),
            ],
            acs_url: self.cfg.acct().sp.acs_url.clone(),
            audience: self.cfg.acct().sp.entity_id.clone(),
            in_response_to,
            now: self.clock.now(),
            validity: chrono::Duration::minutes(5),
            assertion_id: None,
        }
    }

    pub async fn post_acs(&self, b64: &str, relay: Option<&str>) -> Reply {
        let mut body = format!("SAMLResponse={}", samlgate::gateway::url_encode(b64));
        if let Some(r) = relay {
            body.push_str(&format!("&RelayState={}", samlgate::gateway::url_encode(r)));
        }
        request(
            Method::POST,
            &format!("{}/saml/acs", self.base),
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(Method::GET, &format!("{}{path}", self.base), headers, "").await
    }

    /// IdP-initiated login; returns the cookie pair `name=value`.
    pub async fn login(&self, email: &str) -> String {
        let b64 = idp().response_b64(&self.params(email, None)).unwrap();
        let r = self.post_acs(&b64, None).await;
        assert_eq!(r.status, 303, "{}", r.text());
        cookie_of(&r)
    }
}

pub fn cookie_of(r: &Reply) -> String {
    let c = r.header("set-cookie").expect("a session cookie");
    c.split(';').next().unwrap().to_owned()
}

/// The refusal code on an error page.
pub(super) fn code_in_page(r: &Reply) -> String {
    let t = r.text();
    t.split("Code: <code>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_initiated_login_end_to_end() {
    let g = gateway(|_| {}).await;
    // 1. a browser without a session is sent to login, keeping its path
    let r = g
        .get("/meetings/42?tab=chat", &[("accept", "text/html")])
        .await;
    assert_eq!(r.status, 302);
    let login = r.header("location").unwrap().to_owned();
    assert_eq!(login, "/saml/login?return_to=%2Fmeetings%2F42%3Ftab%3Dchat");
    // 2. login redirects to the IdP with a signed AuthnRequest
    let r = g.get(&login, &[]).await;
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap().to_owned();
    assert!(
        loc.starts_with("https://idp.example.org/saml/sso?SAMLRequest="),
        "{loc}"
    );
    let q = loc.split_once('?').unwrap().1;
    let pairs = samlgate::gateway::form_pairs(q.as_bytes());
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(get("SAMLRequest"))
        .unwrap();
    let mut xml = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::DeflateDecoder::new(deflated.as_slice()),
        &mut xml,
    )
    .unwrap();
    assert!(xml.contains(&format!(
        "AssertionConsumerServiceURL=\"{}\"",
        g.cfg.acct().sp.acs_url
    )));
    let doc = samlgate::saml::xml::parse(&xml).unwrap();
    let id = doc.root().attr("ID").unwrap().to_owned();
    assert!(id.len() >= 33, "request ids carry 128 random bits: {id}");
    // the redirect signature verifies with the SP certificate
    let signed = q.split("&Signature=").next().unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(get("Signature"))
        .unwrap();
    let cert =
        openssl::x509::X509::from_pem(&std::fs::read(fixtures().join("keys/sp.crt")).unwrap())
            .unwrap();
    let pk = cert.public_key().unwrap();
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &pk).unwrap();
    v.update(signed.as_bytes()).unwrap();
    assert!(v.verify(&sig).unwrap(), "AuthnRequest redirect signature");
    // 3. the IdP answers; the ACS creates a session and returns to the page
    let b64 = idp()
        .response_b64(&g.params("alice@example.com", Some(id.clone())))
        .unwrap();
    let r = g.post_acs(&b64, Some(&get("RelayState"))).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/meetings/42?tab=chat"));
    let set = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "no Secure flag over plain http");
    let cookie = cookie_of(&r);
    // 4. the session reaches the upstream with identity headers; spoofs are stripped
    let r = g
        .get(
            "/meetings/42",
            &[
                ("cookie", &format!("theme=dark; {cookie}")),
                ("x-samlgate-email", "ceo@example.com"),
                ("X_Samlgate_License", "on_prem"),
                ("x-samlgate-anything", "x"),
                ("x-forwarded-for", "6.6.6.6"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-samlgate-email"], "alice@example.com");
    assert_eq!(h["x-samlgate-license"], "licensed");
    assert_eq!(h["x-samlgate-vanity"], "alice");
    assert!(h.get("x-samlgate-anything").is_none());
    assert!(h.get("x_samlgate_license").is_none());
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "client XFF is not trusted by default"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["cookie"], "theme=dark",
        "the session cookie never reaches the upstream"
    );
    // 5. the same response again: the request id is spent
    let r = g.post_acs(&b64, None).await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_initiated_login_and_relay_state_is_never_an_open_redirect() {
    let g = gateway(|_| {}).await;
    for (relay, want) in [
        (Some("/room/7"), "/room/7"),
        (Some("https://evil.example/phish"), "/"),
        (Some("//evil.example/phish"), "/"),
        (Some("/\\evil.example"), "/"),
        (None, "/"),
    ] {
        let b64 = idp()
            .response_b64(&g.params("alice@example.com", None))
            .unwrap();
        let r = g.post_acs(&b64, relay).await;
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some(want), "{relay:?}");
    }
    // login?return_to= is filtered the same way
    for bad in ["https://evil.example", "//evil.example", "/%5Cevil"] {
        let r = g
            .get(
                &format!(
                    "/saml/login?return_to={}",
                    samlgate::gateway::url_encode(bad)
                ),
                &[],
            )
            .await;
        let loc = r.header("location").unwrap();
        let relay = samlgate::gateway::form_pairs(loc.split_once('?').unwrap().1.as_bytes())
            .into_iter()
            .find(|(k, _)| k == "RelayState")
            .unwrap()
            .1;
        let b64 = idp()
            .response_b64(&g.params("alice@example.com", Some(relay.clone())))
            .unwrap();
        let r = g.post_acs(&b64, Some(&relay)).await;
        let want = if bad == "/%5Cevil" { "/%5Cevil" } else { "/" };
        assert_eq!(r.header("location"), Some(want), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_assertion_is_refused() {
    let g = gateway(|_| {}).await;
    let b64 = idp()
        .response_b64(&g.params("alice@example.com", None))
        .unwrap();
    assert_eq!(g.post_acs(&b64, None).await.status, 303);
    let r = g.post_acs(&b64, None).await;
    assert_eq!(r.status, 403);
    assert_eq!(code_in_page(&r), "replayed");
    assert!(
        r.header("set-cookie").is_none(),
        "a refusal sets no session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_codes_statuses_and_no_session() {
    let g = gateway(|_| {}).await;
    let r = g.post_acs("!!!not-base64", None).await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (400, "malformed_base64")
    );
    let mut p = g.params("alice@example.com", None);
    p.audience = "https://other.example".into();
    let r = g.post_acs(&idp().response_b64(&p).unwrap(), None).await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "audience_mismatch")
    );
    assert!(r.text().contains("Tracking id"));
    assert!(!r.text().contains("Audience"), "no internals on the page");
    let r = request(Method::GET, &format!("{}/saml/acs", g.base), &[], "").await;
    assert_eq!(r.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_api_calls_get_401_and_browsers_a_redirect() {
    let g = gateway(|_| {}).await;
    let r = g.get("/api/rooms", &[("accept", "application/json")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "unauthenticated");
    let r = g
        .get(
            "/rooms",
            &[
                ("accept", "text/html"),
                ("x-requested-with", "XMLHttpRequest"),
            ],
        )
        .await;
    assert_eq!(r.status, 401);
    let r = request(
        Method::POST,
        &format!("{}/rooms", g.base),
        &[("accept", "text/html")],
        "x",
    )
    .await;
    assert_eq!(r.status, 401, "only GET navigations are redirected");
    let r = g.get("/rooms", &[("sec-fetch-mode", "navigate")]).await;
    assert_eq!(r.status, 302);
    let r = g
        .get(
            "/rooms",
            &[
                ("accept", "text/html"),
                ("cookie", "samlgate_session=forged-session-id"),
            ],
        )
        .await;
    assert_eq!(r.status, 302, "an unknown session id is no session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivated_or_deleted_users_lose_their_sessions_within_recheck_secs() {
    let g = gateway(|_| {}).await;
    let cookie = g.login("alice@example.com").await;
    let json = [("cookie", cookie.as_str()), ("accept", "application/json")];
    assert_eq!(g.get("/x", &json).await.status, 200);
    let mut u = g
        .store
        .get_user("alice@example.com")
        .await
        .unwrap()
        .unwrap();
    u.status = UserStatus::Deactivated;
    g.store.put_users(&[u]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // recheck_secs = 1
    assert_eq!(g.get("/x", &json).await.status, 401);

    let cookie = g.login("bob@example.com").await;
    let json = [("cookie", cookie.as_str()), ("accept", "application/json")];
    assert_eq!(g.get("/x", &json).await.status, 200);
    g.store.delete_user("bob@example.com").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(g.get("/x", &json).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_logout_ends_them() {
    let g = gateway(|c| {
        c.acct_mut().session.lifetime_secs = 3600;
        c.acct_mut().session.idle_timeout_secs = 600;
    })
    .await;
    let cookie = g.login("alice@example.com").await;
    let json = [("cookie", cookie.as_str()), ("accept", "application/json")];
    assert_eq!(g.get("/x", &json).await.status, 200);
    g.clock.advance(chrono::Duration::seconds(601));
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the replica cache
    assert_eq!(g.get("/x", &json).await.status, 401, "idle timeout");

    let cookie = g.login("alice@example.com").await;
    let json = [("cookie", cookie.as_str()), ("accept", "application/json")];
    for _ in 0..7 {
        g.clock.advance(chrono::Duration::seconds(500));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            g.get("/x", &json).await.status,
            200,
            "activity keeps the session alive"
        );
    }
    g.clock.advance(chrono::Duration::seconds(200));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        g.get("/x", &json).await.status,
        401,
        "absolute lifetime (3600 s) reached"
    );

    let cookie = g.login("alice@example.com").await;
    let r = g.get("/saml/logout", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        g.get("/x", &[("cookie", &cookie), ("accept", "application/json")])
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prior_to_sign_in_refuses_until_provisioned() {
    let g = gateway(|c| c.acct_mut().provisioning.mode = ProvisioningMode::PriorToSignIn).await;
    let b64 = idp()
        .response_b64(&g.params("newbie@example.com", None))
        .unwrap();
    let r = g.post_acs(&b64, None).await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "not_provisioned")
    );
    assert!(r.text().contains("has not been provisioned"));
    assert_eq!(
        g.store.get_user("newbie@example.com").await.unwrap(),
        None,
        "nothing created"
    );
    let mut u = super::store_conformance::user("newbie@example.com");
    u.license = samlgate::mapping::License::Basic;
    g.store.insert_users(&[u]).await.unwrap();
    assert!(!g.login("newbie@example.com").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_verification_and_the_verification_link() {
    let g = gateway(|_| {}).await;
    let b64 = idp()
        .response_b64(&g.params("dana@partner.org", None))
        .unwrap();
    let r = g.post_acs(&b64, None).await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (403, "pending_verification")
    );
    let outbox = g.cfg.provisioning.outbox_dir.clone();
    let mail = std::fs::read_dir(&outbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let link = std::fs::read_to_string(mail)
        .unwrap()
        .split("/saml/verify?")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let r = g.get(&format!("/saml/verify?{link}"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        g.get(&format!("/saml/verify?{link}"), &[]).await.status,
        400,
        "single use"
    );
    g.login("dana@partner.org").await;
}

#[tokio::test]
async fn an_authn_request_that_cannot_be_signed_is_never_sent_unsigned() {
    // Config loading refuses this combination; a hot-reloaded or otherwise
    // broken key must still fail closed at /saml/login.
    let g = gateway(|c| {
        c.acct_mut().sp.sign_authn_requests = true;
        c.acct_mut().sp.key = None;
    })
    .await;
    let r = g.get("/saml/login?return_to=/x", &[]).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.header("location").is_none(), "no redirect to the IdP");
    assert!(
        r.text().contains("authn_request_signing_failed"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn upstream_base_path_host_and_kept_alive_connections() {
    let g = gateway(|c| c.upstream.url = format!("{}/platform/", c.upstream.url)).await;
    let cookie = g.login("alice@example.com").await;
    let (authority, _) = g.cfg.upstream.target();
    let mut peers = std::collections::HashSet::new();
    for i in 0..5 {
        let r = g
            .get(&format!("/meetings/{i}?x=1"), &[("cookie", &cookie)])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["path"], format!("/platform/meetings/{i}?x=1"));
        assert_eq!(j["headers"]["host"], authority, "Host names the upstream");
        assert_eq!(
            j["headers"]["x-forwarded-host"],
            g.base.trim_start_matches("http://"),
            "the client's Host travels as X-Forwarded-Host"
        );
        peers.insert(j["peer"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        peers.len(),
        1,
        "five sequential requests on one worker reuse one upstream connection: {peers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    let g = gateway(|_| {}).await;
    let cookie = g.login("alice@example.com").await;
    let addr = g.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping-frame").await.unwrap();
    let mut echo = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping-frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_metadata_describes_the_sp() {
    let g = gateway(|_| {}).await;
    let r = g.get("/saml/metadata", &[]).await;
    assert_eq!(r.status, 200);
    let md = r.text();
    assert!(md.contains("entityID=\"https://sp.example.com/saml/metadata\""));
    assert!(md.contains(&format!("Location=\"{}\"", g.cfg.acct().sp.acs_url)));
    assert!(md.contains("AuthnRequestsSigned=\"true\""));
    assert!(md.contains("use=\"encryption\""));
    samlgate::saml::xml::parse(&md).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_at_login_is_503_and_no_session() {
    let mut server = RedisServer::start();
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::standalone(&server.url(), "gw-outage")
            .await
            .unwrap(),
    );
    let g = gateway_with(store, TestClock::new(), |_| {}).await;
    server.stop();
    let b64 = idp()
        .response_b64(&g.params("alice@example.com", None))
        .unwrap();
    let r = g.post_acs(&b64, None).await;
    assert_eq!(
        (r.status, code_in_page(&r).as_str()),
        (503, "store_unavailable")
    );
    assert!(r.header("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_sessions_and_the_replay_cache_through_redis() {
    let (url, _guard) = standalone();
    let prefix = unique_prefix("replicas");
    let clock = TestClock::new();
    let a = gateway_with(
        Arc::new(RedisStore::standalone(&url, &prefix).await.unwrap()),
        clock.clone(),
        |_| {},
    )
    .await;
    // Replica B answers at its own address but shares the SP identity (ACS) with A.
    let acs = a.cfg.acct().sp.acs_url.clone();
    let b = gateway_with(
        Arc::new(RedisStore::standalone(&url, &prefix).await.unwrap()),
        clock.clone(),
        |c| {
            c.acct_mut().sp.acs_url = acs.clone();
        },
    )
    .await;
    // SP-initiated: start on A, finish on B.
    let loc = a
        .get("/saml/login?return_to=/r", &[])
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let pairs = samlgate::gateway::form_pairs(loc.split_once('?').unwrap().1.as_bytes());
    let relay = pairs
        .iter()
        .find(|(k, _)| k == "RelayState")
        .unwrap()
        .1
        .clone();
    let b64 = idp()
        .response_b64(&a.params("alice@example.com", Some(relay.clone())))
        .unwrap();
    let r = b.post_acs(&b64, Some(&relay)).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = cookie_of(&r);
    // The session made on B works on A.
    let r = a
        .get("/x", &[("cookie", &cookie), ("accept", "application/json")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-samlgate-email"], "alice@example.com");
    // An IdP-initiated assertion used on A is refused on B.
    let b64 = idp()
        .response_b64(&a.params("alice@example.com", None))
        .unwrap();
    assert_eq!(a.post_acs(&b64, None).await.status, 303);
    let r = b.post_acs(&b64, None).await;
    assert_eq!((r.status, code_in_page(&r).as_str()), (403, "replayed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_mapping_and_keeps_sessions() {
    let g = gateway(|_| {}).await;
    let cookie = g.login("alice@example.com").await;
    let mut next = (*g.cfg).clone();
    next.acct_mut().mapping.rules.clear(); // no rule grants "licensed" any more
    g.gateway.reload(Arc::new(next));
    let json = [("cookie", cookie.as_str()), ("accept", "application/json")];
    assert_eq!(
        g.get("/x", &json).await.status,
        200,
        "sessions survive a reload"
    );
    g.login("erin@example.com").await;
    let erin = g.store.get_user("erin@example.com").await.unwrap().unwrap();
    assert_eq!(
        erin.license,
        samlgate::mapping::License::Basic,
        "the new mapping is in force"
    );
}

pub mod tls {
    use super::*;
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_rustls::rustls;

    /// A test CA and a leaf for 127.0.0.1 signed by it (webpki refuses a
    /// self-signed CA certificate as the server's own). Returns (ca, leaf, key).
    pub fn test_pki(
        dir: &std::path::Path,
    ) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let (ca, cak, c, k) = (
            dir.join("ca.crt"),
            dir.join("ca.key"),
            dir.join("tls.crt"),
            dir.join("tls.key"),
        );
        let run = |args: Vec<std::ffi::OsString>| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let os = |s: &str| std::ffi::OsString::from(s);
        run(vec![
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("2"),
            os("-subj"),
            os("/CN=samlgate test CA"),
            os("-keyout"),
            cak.clone().into(),
            os("-out"),
            ca.clone().into(),
        ]);
        run(vec![
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("2"),
            os("-CA"),
            ca.clone().into(),
            os("-CAkey"),
            cak.into(),
            os("-subj"),
            os("/CN=localhost"),
            os("-addext"),
            os("subjectAltName=IP:127.0.0.1,DNS:localhost"),
            os("-addext"),
            os("basicConstraints=critical,CA:FALSE"),
            os("-keyout"),
            k.clone().into(),
            os("-out"),
            c.clone().into(),
        ]);
        (ca, c, k)
    }

    pub async fn client(
        cert: &std::path::Path,
        addr: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_file(cert).unwrap())
            .unwrap();
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(
                rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                tcp,
            )
            .await
            .unwrap()
    }

    /// An HTTP/2 client connection over TLS (offering `alpn`; h2 must win).
    async fn h2(
        ca: &std::path::Path,
        addr: &str,
        alpn: &[&[u8]],
    ) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
        let tls = client(ca, addr, alpn).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        send
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_with_h2_and_secure_host_cookies() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = test_pki(dir.path());
        let acceptor = samlgate::server::tls::acceptor(&cert, &key).unwrap();
        let clock = TestClock::new();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("s.db"), clock.clone()).unwrap());
        let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut cfg = config("config.toml");
        cfg.acct_mut().sp.acs_url = format!("https://{addr}/saml/acs");
        cfg.upstream.url = format!("http://{up}");
        let cfg = Arc::new(cfg);
        let gw = Arc::new(
            Gateway::new(
                Arc::clone(&cfg),
                store,
                clock.clone(),
                Arc::new(Metrics::default()),
                true,
            )
            .unwrap(),
        );
        let (_tx, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            samlgate::server::serve_tls(l, gw, Some(acceptor), &mut rx, Duration::from_secs(1))
                .await;
        });

        // HTTP/2 over TLS, negotiated by ALPN
        let mut send = h2(&ca, &addr.to_string(), &[b"h2", b"http/1.1"]).await;
        let req = Request::builder()
            .uri(format!("https://{addr}/saml/metadata"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);

        // HTTP/1.1 over TLS: the ACS sets a Secure, __Host- cookie
        let tls = client(&ca, &addr.to_string(), &[b"http/1.1"]).await;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let p = ResponseParams {
            name_id: "alice@example.com".into(),
            attributes: vec![("email".into(), vec!["alice@example.com".into()])],
            acs_url: cfg.acct().sp.acs_url.clone(),
            audience: cfg.acct().sp.entity_id.clone(),
            in_response_to: None,
            now: clock.now(),
            validity: chrono::Duration::minutes(5),
            assertion_id: None,
        };
        let body = format!(
            "SAMLResponse={}",
            samlgate::gateway::url_encode(&idp().response_b64(&p).unwrap())
        );
        let req = Request::builder()
            .method("POST")
            .uri("/saml/acs")
            .header("host", addr.to_string())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 303);
        let c = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
        assert!(c.starts_with("__Host-samlgate_session="), "{c}");
        assert!(c.contains("; Secure"), "{c}");
        assert!(c.contains("Path=/"), "{c}");
        let cookie = c.split(';').next().unwrap().to_owned();

        // The request cookie of a started login: SameSite=None so the
        // IdP's cross-site POST carries it, hence Secure, and __Host-.
        send.ready().await.unwrap();
        let req = Request::builder()
            .uri("/saml/login")
            .header("host", addr.to_string())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 302);
        let c = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
        assert!(c.starts_with("__Host-samlgate_session_authn=_"), "{c}");
        for attr in [
            "; Secure",
            "; SameSite=None",
            "; HttpOnly",
            "Path=/",
            "Max-Age=600",
        ] {
            assert!(c.contains(attr), "{attr}: {c}");
        }

        // Proxied over TLS: HTTP/1.1 (the forwarding fast path, two requests
        // on one connection) and HTTP/2 (the general stack) alike.
        let tls = client(&ca, &addr.to_string(), &[b"http/1.1"]).await;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        for i in 0..2 {
            let req = Request::builder()
                .uri(format!("/room/{i}"))
                .header("host", addr.to_string())
                .header("cookie", format!("{cookie}; theme=dark"))
                .header("x-samlgate-email", "mallory@evil.example")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            // The client connection is ready for the next request once it
            // has seen the previous one end (an error here: the gateway
            // closed the kept-alive connection).
            send.ready().await.unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(j["path"], format!("/room/{i}"));
            assert_eq!(j["headers"]["x-forwarded-proto"], "https");
            assert_eq!(j["headers"]["x-samlgate-email"], "alice@example.com");
            assert_eq!(
                j["headers"]["cookie"], "theme=dark",
                "the session cookie stays here"
            );
        }
        let mut send = h2(&ca, &addr.to_string(), &[b"h2"]).await;
        let req = Request::builder()
            .uri(format!("https://{addr}/room/h2"))
            .header("cookie", &cookie)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["headers"]["x-forwarded-proto"], "https");
        assert_eq!(j["headers"]["x-samlgate-email"], "alice@example.com");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acs_answers_an_oversized_post_with_413_that_the_client_reads() {
    let g = gateway(|_| {}).await;
    let addr = g.base.trim_start_matches("http://").to_owned();
    let big = vec![b'A'; 3 * 1024 * 1024];
    // Declared (Content-Length) and undeclared (chunked) alike: the client
    // writes its whole body without a reset and then reads the refusal.
    for chunked in [false, true] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = if chunked {
            "POST /saml/acs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
        } else {
            format!(
                "POST /saml/acs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                big.len() + 13
            )
        };
        s.write_all(head.as_bytes()).await.unwrap();
        let mut body = b"SAMLResponse=".to_vec();
        body.extend_from_slice(&big);
        let reader = tokio::spawn({
            let (mut rd, mut wr) = s.into_split();
            let body = body.clone();
            let writer = tokio::spawn(async move {
                for part in body.chunks(64 * 1024) {
                    if chunked {
                        wr.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                            .await?;
                        wr.write_all(part).await?;
                        wr.write_all(b"\r\n").await?;
                    } else {
                        wr.write_all(part).await?;
                    }
                }
                if chunked {
                    wr.write_all(b"0\r\n\r\n").await?;
                }
                Ok::<_, std::io::Error>(wr)
            });
            async move {
                let mut out = Vec::new();
                let _ = rd.read_to_end(&mut out).await;
                (out, writer.await.unwrap().map(|_| ()))
            }
        });
        let (out, wrote) = reader.await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "chunked={chunked}: {text:.200}"
        );
        assert!(text.contains("too_large"), "{text:.400}");
        assert!(text.to_ascii_lowercase().contains("connection: close"));
        assert!(
            wrote.is_ok(),
            "chunked={chunked}: the client's write failed: {wrote:?}"
        );
    }
    // Python's http.client, as an ordinary client does it.
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection('{addr}', timeout=30)\n\
c.request('POST', '/saml/acs', body=b'SAMLResponse=' + b'A' * (3 * 1024 * 1024), headers={{'Content-Type': 'application/x-www-form-urlencoded'}})\n\
r = c.getresponse()\nprint(r.status, r.read().decode())\n"
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("413"), "{stdout}");
    assert!(stdout.contains("too_large"), "{stdout}");
}
