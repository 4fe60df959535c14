//! The public listener: SAML endpoints and the authenticated reverse proxy.
//!
//! The request path, in order (each step can answer on its own):
//!
//! 1. `{prefix}/metadata`, `/login`, `/acs`, `/logout`, `/verify`: the SAML
//!    endpoints, before any session check (they are how a session starts).
//! 2. `/_demo-idp/...`: the test-only development IdP, only with `[demo] enabled`.
//! 3. Session cookie → session (store, cached per replica for `recheck_secs`).
//!    None: a browser navigation is redirected to login, anything else gets 401.
//! 4. Strip client identity headers, inject the verified ones, forward upstream.

pub(crate) mod fast;
pub mod head;
pub mod pages;
pub mod pool;
pub mod proxy;
pub mod session;
pub mod slo;
pub mod upstream;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use base64::Engine;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::account::registry::{LocalView, Registry};
use crate::account::{Account, DEFAULT_ID};
use crate::clock::Clock;
use crate::config::Config;
use crate::devidp::{DevIdp, random_id};
use crate::mapping::Trace;
use crate::metrics::Metrics;
use crate::provisioning::{self, Refusal};
use crate::saml::{self, SamlError, decode::percent_decode, xml};
use crate::server::{Body, Handler, HandlerFuture, json_error, read_body, text};
use crate::store::{Ephemeral, Store, StoreError};
use pages::{esc, html, refusal};
use session::Sessions;

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The response was refused.
    #[error(transparent)]
    Saml(#[from] SamlError),
    /// The login decision refused the user.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The verification pool could not run the check.
    #[error(transparent)]
    Pool(#[from] pool::PoolError),
    /// The account is suspended.
    #[error("account {0} is suspended: its sign-ins are turned off")]
    Suspended(String),
    /// The POST is larger than any SAMLResponse the gateway accepts.
    #[error("the POST body is over {0} bytes")]
    TooLarge(usize),
}

impl LoginError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Saml(e) => e.code(),
            Self::Refused(r) => r.code(),
            Self::Store(e) => e.code(),
            Self::Pool(e) => e.code(),
            Self::Suspended(_) => "account_suspended",
            Self::TooLarge(_) => "too_large",
        }
    }

    /// The email the refusal is about, when one is known.
    pub fn email(&self) -> Option<&str> {
        match self {
            Self::Refused(r) => r.email(),
            _ => None,
        }
    }

    /// 400 malformed, 403 refused, 503 store outage.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Saml(e) if e.is_malformed() => StatusCode::BAD_REQUEST,
            Self::Store(_)
            | Self::Refused(Refusal::Store(_))
            | Self::Pool(pool::PoolError::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Pool(pool::PoolError::Lost) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// What a successful login produced.
struct LoginDone {
    session_id: String,
    /// Where the browser goes next (a same-origin path).
    target: String,
    email: String,
    name_id: Option<String>,
    /// The request answered (`None`: unsolicited).
    answered: Option<String>,
    /// The attributes received (kept as the user's last login's, for the
    /// console's mapping preview; empty when nothing records them).
    attributes: Vec<crate::mapping::SamlAttribute>,
}

/// The public side of one gateway process.
pub struct Gateway {
    config: RwLock<Arc<Config>>,
    /// The accounts this replica serves (this worker's view).
    accounts: LocalView,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Its write-behind handle, where it has one (see
    /// [`Store::write_behind`]): a login's writes before its session's.
    write_behind: Option<Arc<dyn Store>>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    sessions: Arc<Sessions>,
    /// This gateway's shard of the session cache (its worker's index).
    shard: usize,
    tls: bool,
    dev_idp: Option<DevIdp>,
    /// Where login decisions go for the console's sign-in activity.
    activity: Option<Arc<crate::activity::Activity>>,
}

/// The value of the first cookie called `name` in `values` (every Cookie
/// header's value, in order).
pub(crate) fn find_cookie<'a>(
    values: impl Iterator<Item = &'a str>,
    name: &str,
) -> Option<&'a str> {
    values
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn tracking_id() -> String {
    let mut b = [0u8; 8];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses `application/x-www-form-urlencoded` (or a query string): pairs
/// split at `&` (empty ones skipped), each at its first `=`. The separators
/// are found with SIMD: an ACS POST is one ~7 KB field.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut from = 0;
    for end in memchr::memchr_iter(b'&', body).chain(std::iter::once(body.len())) {
        let pair = body.get(from..end).unwrap_or_default();
        from = end + 1;
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match memchr::memchr(b'=', pair) {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &b""[..]),
        };
        pairs.push((utf8_lossy(percent_decode(k)), utf8_lossy(percent_decode(v))));
    }
    pairs
}

/// `String::from_utf8_lossy`, without its slower scan and its copy when the
/// bytes are valid UTF-8 (a form value nearly always is).
fn utf8_lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A same-origin path to return to, or None. Refuses absolute URLs,
/// scheme-relative `//host`, backslashes (browsers read `/\host` as a host),
/// control characters and whitespace.
pub fn safe_return_path(p: &str) -> Option<String> {
    let ok = p.starts_with('/')
        && !p.starts_with("//")
        && !p.contains('\\')
        && !p.chars().any(|c| c.is_control() || c.is_whitespace())
        && p.len() <= 2048;
    ok.then(|| p.to_owned())
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = text(status, "");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn deflate_b64(xml_text: &str) -> String {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(xml_text.as_bytes());
    let bytes = enc.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The host a request was sent to: the target's authority (HTTP/2's
/// `:authority`, an absolute-form target), else the Host header.
pub(crate) fn request_host(req: &Request<Incoming>) -> Option<&str> {
    req.uri()
        .authority()
        .map(http::uri::Authority::as_str)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        })
}

/// How many started logins one browser's request cookie remembers (one per
/// tab a user might start a sign-in in; the oldest is forgotten first).
const MAX_BOUND_REQUESTS: usize = 4;

/// The AuthnRequest ids a request cookie names: `.`-separated ids of the
/// shape [`random_id`] makes (`_` and 32 hex digits); anything else in it is
/// ignored.
fn bound_request_ids(value: &str) -> Vec<String> {
    value
        .split('.')
        .filter(|id| {
            id.len() == 33
                && id.starts_with('_')
                && id.bytes().skip(1).all(|c| c.is_ascii_hexdigit())
        })
        .take(MAX_BOUND_REQUESTS)
        .map(str::to_owned)
        .collect()
}

impl Gateway {
    /// Builds the public handler. `tls` says whether it is served over TLS
    /// (Secure, `__Host-` cookies).
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        tls: bool,
    ) -> Result<Self, String> {
        let dev_idp = if config.demo {
            let key = std::fs::read("certs/demo-idp.key")
                .map_err(|e| format!("[demo] needs certs/demo-idp.key: {e}"))?;
            let cert = std::fs::read("certs/demo-idp.crt")
                .map_err(|e| format!("[demo] needs certs/demo-idp.crt: {e}"))?;
            let idp = config
                .account
                .as_ref()
                .ok_or("[demo] needs the default account ([idp])")?;
            Some(DevIdp::new(&idp.idp.metadata.entity_id, &key, &cert)?)
        } else {
            None
        };
        let registry = Arc::new(Registry::new(config.account.clone()));
        Ok(Self {
            // Its own copy (see `reload`).
            config: RwLock::new(Arc::new((*config).clone())),
            accounts: LocalView::new(registry),
            write_behind: store.write_behind(),
            store,
            clock,
            metrics,
            sessions: Arc::new(Sessions::default()),
            shard: 0,
            tls,
            dev_idp,
            activity: None,
        })
    }

    /// Sends this gateway's login decisions to `activity` (the console's
    /// sign-in activity).
    #[must_use]
    pub fn with_activity(mut self, activity: Arc<crate::activity::Activity>) -> Self {
        self.activity = Some(activity);
        self
    }

    /// Like [`Gateway::new`], sharing a session cache and the accounts
    /// with the other gateways of the same process (one per worker
    /// thread); `shard` is this worker's index, its shard of that cache.
    #[allow(clippy::too_many_arguments)]
    pub fn with_sessions(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        tls: bool,
        sessions: Arc<Sessions>,
        shard: usize,
        accounts: Arc<Registry>,
    ) -> Result<Self, String> {
        let mut g = Self::new(config, store, clock, metrics, tls)?;
        g.sessions = sessions;
        g.shard = shard;
        g.accounts = LocalView::new(accounts);
        Ok(g)
    }

    /// The accounts this gateway serves.
    pub fn accounts(&self) -> &Arc<Registry> {
        self.accounts.registry()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Replaces the config (hot reload), the default account with it.
    /// Sessions are untouched. Each gateway keeps its own copy, so taking it
    /// per request touches no reference count another worker's core also
    /// writes. (Gateways sharing a registry: `serve` updates the default
    /// account once, with [`Registry::apply`], and calls
    /// [`Gateway::reload_config`] on each.)
    pub fn reload(&self, new: Arc<Config>) {
        self.accounts.registry().apply([match &new.account {
            Some(a) => crate::account::registry::Change::Put(Arc::new(a.clone())),
            None => crate::account::registry::Change::Remove(DEFAULT_ID.to_owned()),
        }]);
        self.reload_config(new);
    }

    /// Replaces the gateway settings only (see [`Gateway::reload`]).
    pub fn reload_config(&self, new: Arc<Config>) {
        let new = Arc::new((*new).clone());
        match self.config.write() {
            Ok(mut c) => *c = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    fn cookie_name<'c>(&self, cfg: &'c Config) -> std::borrow::Cow<'c, str> {
        if self.tls {
            format!("__Host-{}", cfg.session.cookie_name).into()
        } else {
            cfg.session.cookie_name.as_str().into()
        }
    }

    fn session_cookie<'a>(&self, req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
        find_cookie(
            req.headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            name,
        )
    }

    /// The cookie binding started logins to the browser that started them:
    /// `{session cookie name}_authn` (`__Host-` over TLS).
    fn request_cookie_name(&self, cfg: &Config) -> String {
        format!("{}_authn", self.cookie_name(cfg))
    }

    /// Sets the request cookie to `ids` (cleared when empty). Over TLS it is
    /// `SameSite=None; Secure`, so the IdP's cross-site POST carries it; over
    /// plain HTTP browsers refuse `SameSite=None` without `Secure`, so it is
    /// `Lax` and reaches the ACS only from a same-site IdP.
    fn set_request_cookie(
        &self,
        r: &mut Response<Body>,
        cfg: &Config,
        acct: &Account,
        ids: &[String],
    ) {
        let attrs = if self.tls {
            "; Secure; SameSite=None"
        } else {
            "; SameSite=Lax"
        };
        let max_age = if ids.is_empty() {
            0
        } else {
            acct.sp.request_ttl_secs
        };
        let c = format!(
            "{}={}; Path=/; HttpOnly; Max-Age={max_age}{attrs}",
            self.request_cookie_name(cfg),
            ids.join(".")
        );
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }

    fn set_cookie(&self, r: &mut Response<Body>, cfg: &Config, value: &str, max_age: u64) {
        let secure = if self.tls { "; Secure" } else { "" };
        let c = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
            self.cookie_name(cfg)
        );
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let cfg = self.config();
        if let Some(refused) = self.check_head(&cfg, &req) {
            return refused;
        }
        let path = req.uri().path();
        // The demo IdP is the default account's.
        if let Some(idp) = &self.dev_idp
            && path.starts_with("/_demo-idp/")
        {
            let snap = self.accounts.snapshot();
            if let Some(acct) = snap.default_account() {
                return self.demo_idp(idp, acct, req).await;
            }
        }
        // Which account? Asked on any host, the unknown ones included.
        if path.strip_prefix(cfg.path_prefix.as_str()) == Some("/discover") {
            return self.discover(&cfg, &req);
        }
        // Every other request is one account's: the one its host names.
        let snap = self.accounts.snapshot();
        let Some(acct) = snap.for_host(request_host(&req)) else {
            self.metrics.request_refused("unknown_host");
            return json_error(
                StatusCode::NOT_FOUND,
                "unknown_host",
                "no account is served at this host name",
                None,
            );
        };
        // SCIM, for the account's IdP's provisioning connector.
        if path == crate::scim::BASE
            || path
                .strip_prefix(crate::scim::BASE)
                .is_some_and(|r| r.starts_with('/'))
        {
            let base = format!(
                "{}://{}{}",
                if self.tls { "https" } else { "http" },
                request_host(&req).unwrap_or_default(),
                crate::scim::BASE
            );
            let ctx = crate::scim::Ctx {
                store: self.store.as_ref(),
                cfg: &cfg,
                acct,
                snapshot: snap.as_ref(),
                clock: self.clock.as_ref(),
                sessions: &self.sessions,
                metrics: &self.metrics,
                base,
            };
            return crate::scim::serve(&ctx, req, peer.ip()).await;
        }
        // The account's console, for its admins (signed in through SSO).
        if path == crate::console::BASE
            || path
                .strip_prefix(crate::console::BASE)
                .is_some_and(|r| r.starts_with('/'))
        {
            return self.console(&cfg, acct, req).await;
        }
        let prefix = cfg.path_prefix.as_str();
        if let Some(rest) = path.strip_prefix(prefix) {
            match (req.method(), rest) {
                (&Method::GET, "/metadata") => return self.metadata(&cfg, acct),
                (&Method::GET, "/login") => return self.login(&cfg, acct, &req).await,
                (&Method::POST, "/acs") => return self.acs(&cfg, acct, req, peer).await,
                (&Method::GET | &Method::POST, "/logout") => {
                    return self.logout(&cfg, acct, &req).await;
                }
                (&Method::GET | &Method::POST, "/slo") => {
                    return self.slo(&cfg, acct, req).await;
                }
                (&Method::GET, "/verify") => return self.verify(&cfg, req.uri().query()).await,
                (_, "/metadata" | "/login" | "/acs" | "/logout" | "/slo" | "/verify") => {
                    return json_error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        "wrong method",
                        None,
                    );
                }
                _ => {}
            }
        }
        self.protected(&cfg, acct, req, peer).await
    }

    /// The rules of `head.rs`; a refusal closes the connection (a client
    /// that sends such a head cannot be trusted to frame the next one).
    fn check_head(&self, cfg: &Config, req: &Request<Incoming>) -> Option<Response<Body>> {
        let version = match req.version() {
            http::Version::HTTP_2 | http::Version::HTTP_3 => head::Version::Http2,
            http::Version::HTTP_11 => head::Version::Http11,
            _ => head::Version::Http10,
        };
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()));
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let Err(e) = head::check(
            req.method().as_str(),
            target,
            version,
            req.uri().authority().is_some(),
            headers,
            cfg.listen.limits.max_body_bytes,
        ) else {
            return None;
        };
        tracing::warn!(target: "security", event = "request_refused", code = e.code(), reason = %e, "request head refused");
        self.metrics.request_refused(e.code());
        let mut r = json_error(e.status(), e.code(), &e.to_string(), None);
        if version != head::Version::Http2 {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Some(r)
    }

    /// `/saml/discover`: a work email, a company domain or an account id
    /// → that account's login (at the origin of its own ACS: never a URL
    /// the request chose); unknown → the same page, saying so.
    fn discover(&self, cfg: &Config, req: &Request<Incoming>) -> Response<Body> {
        let q = form_pairs(req.uri().query().unwrap_or("").as_bytes());
        let asked = field(&q, "q").map(str::trim).unwrap_or("");
        let return_to = field(&q, "return_to").and_then(safe_return_path);
        let form = |message: &str, value: &str| {
            format!(
                "{message}<form method=\"get\"><p><label>Work email or company domain <input name=\"q\" value=\"{}\" autocomplete=\"email\" autofocus required maxlength=\"320\"></label></p>{}<button type=\"submit\">Continue</button></form>",
                esc(value),
                return_to
                    .as_deref()
                    .map(|r| format!(
                        "<input type=\"hidden\" name=\"return_to\" value=\"{}\">",
                        esc(r)
                    ))
                    .unwrap_or_default()
            )
        };
        if asked.is_empty() {
            return html(StatusCode::OK, "Sign in", &form("", ""));
        }
        if asked.len() > 320 {
            return html(
                StatusCode::BAD_REQUEST,
                "Sign in",
                &form(
                    "<p class=\"error\">That is too long for an email address or a domain.</p>",
                    "",
                ),
            );
        }
        let key = asked.to_ascii_lowercase();
        let domain = key.rsplit_once('@').map_or(key.as_str(), |(_, d)| d);
        let snap = self.accounts.snapshot();
        let mut found: Vec<&Arc<Account>> = snap.by_domain(domain).iter().collect();
        if found.is_empty()
            && let Some(a) = snap.by_id(&key)
        {
            found.push(a);
        }
        found.retain(|a| a.is_active());
        let login_of = |a: &Account| {
            let origin = crate::provisioning::origin_of(&a.sp.acs_url);
            let mut url = format!("{origin}{}/login", cfg.path_prefix);
            if let Some(r) = &return_to {
                url.push_str("?return_to=");
                url.push_str(&url_encode(r));
            }
            url
        };
        match found.as_slice() {
            [one] => redirect(StatusCode::FOUND, &login_of(one)),
            [] => html(
                StatusCode::NOT_FOUND,
                "Sign in",
                &form(
                    &format!(
                        "<p class=\"error\">No account signs in <strong>{}</strong> here. Check the address, or ask your administrator for your company's sign-in page.</p>",
                        esc(asked)
                    ),
                    asked,
                ),
            ),
            many => {
                let links: String = many
                    .iter()
                    .map(|a| {
                        let name = if a.name.is_empty() { &a.id } else { &a.name };
                        format!(
                            "<li><a href=\"{}\">{}</a></li>",
                            esc(&login_of(a)),
                            esc(name)
                        )
                    })
                    .collect();
                html(
                    StatusCode::OK,
                    "Sign in",
                    &format!(
                        "<p>Several accounts use {}: choose yours.</p><ul>{links}</ul>",
                        esc(domain)
                    ),
                )
            }
        }
    }

    fn metadata(&self, gw: &Config, cfg: &Account) -> Response<Body> {
        sp_metadata(gw, cfg)
    }

    async fn login(&self, cfg: &Config, acct: &Account, req: &Request<Incoming>) -> Response<Body> {
        let login_path = format!("{}/login", cfg.path_prefix);
        if !acct.is_active() {
            return refusal(
                StatusCode::FORBIDDEN,
                "account_suspended",
                &tracking_id(),
                &login_path,
            );
        }
        let q = form_pairs(req.uri().query().unwrap_or("").as_bytes());
        let return_to = field(&q, "return_to")
            .and_then(safe_return_path)
            .unwrap_or_else(|| "/".into());
        let Some(sso) = acct.idp.metadata.redirect_sso_url() else {
            tracing::error!("IdP metadata has no HTTP-Redirect SingleSignOnService");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in unavailable",
                "<p>The identity provider's metadata has no HTTP-Redirect sign-in endpoint.</p>",
            );
        };
        let id = random_id();
        let ttl = std::time::Duration::from_secs(acct.sp.request_ttl_secs);
        if let Err(e) = self
            .store
            .put_ephemeral(
                Ephemeral::RequestId,
                &acct.scoped(&id),
                return_to.as_bytes(),
                ttl,
            )
            .await
        {
            self.metrics.store_error();
            tracing::error!(error = %e, "cannot store the AuthnRequest id");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                e.code(),
                &tracking_id(),
                &login_path,
            );
        }
        let now = self
            .clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let request = format!(
            "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" \
ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"{dest}\" AssertionConsumerServiceURL=\"{acs}\" \
ProtocolBinding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\"><saml:Issuer>{eid}</saml:Issuer>\
<samlp:NameIDPolicy AllowCreate=\"true\"/></samlp:AuthnRequest>",
            dest = esc(sso),
            acs = esc(&acct.sp.acs_url),
            eid = esc(&acct.sp.entity_id),
        );
        let mut qs = format!(
            "SAMLRequest={}&RelayState={}",
            url_encode(&deflate_b64(&request)),
            url_encode(&id)
        );
        if acct.sp.sign_authn_requests {
            qs.push_str("&SigAlg=");
            qs.push_str(&url_encode(
                "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            ));
            // The IdP was told to expect signed requests: never send an
            // unsigned one instead (fail closed).
            let sig = match &acct.sp.key {
                Some(key) => {
                    openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)
                        .and_then(|mut s| {
                            s.update(qs.as_bytes())?;
                            s.sign_to_vec()
                        })
                        .map_err(|e| e.to_string())
                }
                None => Err("sp.sign_authn_requests is set but no [sp] key_file".into()),
            };
            match sig {
                Ok(sig) => {
                    qs.push_str("&Signature=");
                    qs.push_str(&url_encode(
                        &base64::engine::general_purpose::STANDARD.encode(sig),
                    ));
                }
                Err(e) => {
                    let tracking = tracking_id();
                    tracing::error!(error = %e, tracking_id = %tracking, "cannot sign the AuthnRequest; none sent");
                    return refusal(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "authn_request_signing_failed",
                        &tracking,
                        &login_path,
                    );
                }
            }
        }
        self.metrics.authn_request();
        let sep = if sso.contains('?') { '&' } else { '?' };
        let mut r = redirect(StatusCode::FOUND, &format!("{sso}{sep}{qs}"));
        // Bind the request to this browser: the newest id first, a few
        // earlier ones kept (sign-ins started in other tabs).
        let earlier = self
            .session_cookie(req, &self.request_cookie_name(cfg))
            .map(bound_request_ids)
            .unwrap_or_default();
        let ids: Vec<String> = std::iter::once(id)
            .chain(earlier)
            .take(MAX_BOUND_REQUESTS)
            .collect();
        self.set_request_cookie(&mut r, cfg, acct, &ids);
        r
    }

    async fn acs(
        &self,
        cfg: &Arc<Config>,
        acct: &Arc<Account>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let tracking = tracking_id();
        // `None`: the POST came without the request cookie.
        let bound = self
            .session_cookie(&req, &self.request_cookie_name(cfg))
            .map(bound_request_ids);
        let limit = cfg.security.max_response_bytes.saturating_mul(2) + 16 * 1024;
        let h2 = req.version() == http::Version::HTTP_2;
        let body = match crate::server::read_body_draining(req.into_body(), limit).await {
            Ok(b) => b,
            Err(why) => {
                let e = match why {
                    crate::server::BodyError::TooLarge => LoginError::TooLarge(limit),
                    crate::server::BodyError::Unreadable => LoginError::Saml(
                        SamlError::MalformedXml("the POST body could not be read".into()),
                    ),
                };
                let mut r = self.refuse(cfg, acct, &e, &tracking, peer, None);
                // What is left of the body is not read: close after the
                // answer (HTTP/2 resets just the stream).
                if !h2 {
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                return r;
            }
        };
        let start = Instant::now();
        // Kept for the console's Test when this login is refused.
        let kept = self.activity.as_ref().map(|_| body.clone());
        let result = if acct.is_active() {
            self.login_flow(cfg, acct, body, bound.as_deref()).await
        } else {
            Err(LoginError::Suspended(acct.id.clone()))
        };
        self.metrics.verify_latency.observe(start.elapsed());
        match result {
            Ok(mut done) => {
                self.metrics.account_login(&acct.id, "accept", "");
                let binding = match (&done.answered, &bound) {
                    (None, _) => "unsolicited",
                    (Some(_), Some(_)) => "cookie",
                    (Some(_), None) => "absent",
                };
                tracing::info!(target: "audit", event = "login", decision = "accept", tracking_id = %tracking,
                    account = %acct.id, idp = %acct.idp.metadata.entity_id, name_id = done.name_id.as_deref().unwrap_or(""), email = %done.email,
                    request_binding = binding, remote = %peer.ip());
                if let Some(a) = &self.activity {
                    let decision =
                        self.decision(acct, Some(&done.email), None, "", &tracking, peer);
                    let kept = crate::activity::LastLogin::new(
                        &acct.id,
                        &done.email,
                        done.name_id.as_deref(),
                        std::mem::take(&mut done.attributes),
                        decision.at,
                    );
                    a.admitted(decision, kept);
                }
                let mut r = redirect(StatusCode::SEE_OTHER, &done.target);
                self.set_cookie(&mut r, cfg, &done.session_id, acct.session.lifetime_secs);
                // The answered request leaves the browser's cookie.
                if let (Some(id), Some(ids)) = (&done.answered, &bound) {
                    let rest: Vec<String> = ids.iter().filter(|b| *b != id).cloned().collect();
                    self.set_request_cookie(&mut r, cfg, acct, &rest);
                }
                r
            }
            Err(e) => {
                // Not when the gateway failed (store, pool): only responses
                // the checks or the login decision refused.
                if let (Some(a), Some(body)) = (&self.activity, kept)
                    && !matches!(
                        e,
                        LoginError::Store(_)
                            | LoginError::Pool(_)
                            | LoginError::Refused(Refusal::Store(_))
                            | LoginError::TooLarge(_)
                    )
                {
                    a.failed_response(&acct.id, body);
                }
                self.refuse(cfg, acct, &e, &tracking, peer, None)
            }
        }
    }

    /// A login decision as the sign-in activity keeps it, made now.
    fn decision(
        &self,
        acct: &Account,
        email: Option<&str>,
        code: Option<&str>,
        reason: &str,
        tracking: &str,
        peer: SocketAddr,
    ) -> crate::activity::Decision {
        crate::activity::Decision::new(
            self.clock.now().timestamp(),
            &acct.id,
            email,
            code,
            reason,
            tracking,
            &peer.ip().to_string(),
        )
    }

    /// Hands a refused login's decision to the sign-in activity (never
    /// waits).
    fn record(
        &self,
        acct: &Account,
        email: Option<&str>,
        code: Option<&str>,
        reason: &str,
        tracking: &str,
        peer: SocketAddr,
    ) {
        if let Some(a) = &self.activity {
            a.record(self.decision(acct, email, code, reason, tracking, peer));
        }
    }

    fn refuse(
        &self,
        cfg: &Config,
        acct: &Account,
        e: &LoginError,
        tracking: &str,
        peer: SocketAddr,
        name_id: Option<&str>,
    ) -> Response<Body> {
        let code = e.code();
        self.metrics.account_login(&acct.id, "reject", code);
        if matches!(
            e,
            LoginError::Store(_) | LoginError::Refused(Refusal::Store(_))
        ) {
            self.metrics.store_error();
        }
        tracing::warn!(target: "audit", event = "login", decision = "reject", code, reason = %e, tracking_id = %tracking,
            account = %acct.id, idp = %acct.idp.metadata.entity_id, name_id = name_id.unwrap_or(""), remote = %peer.ip());
        self.record(acct, e.email(), Some(code), &e.to_string(), tracking, peer);
        refusal(
            e.status(),
            code,
            tracking,
            &format!("{}/login", cfg.path_prefix),
        )
    }

    /// verify → request id → replay → map → provision → session.
    ///
    /// `bound`: the AuthnRequest ids the browser's request cookie names
    /// (`None` when it sent none).
    async fn login_flow(
        &self,
        cfg: &Arc<Config>,
        acct: &Arc<Account>,
        body: bytes::Bytes,
        bound: Option<&[String]>,
    ) -> Result<LoginDone, LoginError> {
        // Form, base64, parse and every check but solicitation: CPU only
        // (linear in the body), on the blocking pool (see `pool`). Nobody
        // reads a trace on the login path; the audit event says what was
        // decided, and `samlgate check-response` shows the whole trace.
        let job_cfg = Arc::clone(cfg);
        let job_acct = Arc::clone(acct);
        let clock = Arc::clone(&self.clock);
        let (unresolved, relay_state) = pool::VerifyPool::global()
            .run(move || -> Result<_, SamlError> {
                let form = form_pairs(&body);
                let raw = field(&form, "SAMLResponse")
                    .ok_or_else(|| SamlError::MalformedXml("no SAMLResponse in the POST".into()))?;
                let xml_text = saml::decode::decode_base64(
                    raw.as_bytes(),
                    job_cfg.security.max_response_bytes,
                )?;
                let parsed = saml::parse_response(&xml_text, &job_cfg.security)?;
                let unresolved = saml::verify_unresolved(
                    &xml_text,
                    &parsed,
                    &job_acct,
                    &job_cfg.security,
                    clock.as_ref(),
                    &mut Trace::off(),
                )?;
                Ok((unresolved, field(&form, "RelayState").map(str::to_owned)))
            })
            .await??;
        let now = self.clock.now();
        let mut trace = Trace::off();
        // Solicitation. The request a response answers comes from signed
        // data only; it must have been started by this browser when the
        // browser says which requests it started (the request cookie: this
        // closes login CSRF for SP-initiated logins), and it is consumed
        // exactly once.
        let (verified, target) = match unresolved.in_response_to().map(str::to_owned) {
            Some(id) => {
                match bound {
                    Some(ids) if !ids.contains(&id) => {
                        return Err(SamlError::RequestBinding(format!(
                            "the response answers request {id:?}, which this browser did not start (its request cookie names {} other request(s))",
                            ids.len()
                        ))
                        .into());
                    }
                    None if acct.sp.require_request_cookie => {
                        return Err(SamlError::RequestBinding(format!(
                            "the response answers request {id:?}, but the browser sent no request cookie ([sp] require_request_cookie = true)"
                        ))
                        .into());
                    }
                    _ => {}
                }
                // Only this account's requests: one started on another
                // account's host is not outstanding here.
                let taken = self
                    .store
                    .take_ephemeral(Ephemeral::RequestId, &acct.scoped(&id))
                    .await?;
                let outstanding: &[String] = if taken.is_some() {
                    std::slice::from_ref(&id)
                } else {
                    &[]
                };
                let verified = unresolved.resolve(outstanding, &mut trace)?;
                let target = taken
                    .and_then(|t| String::from_utf8(t).ok())
                    .and_then(|t| safe_return_path(&t))
                    .unwrap_or_else(|| "/".into());
                (verified, target)
            }
            None => {
                let verified = unresolved.resolve(&[], &mut trace)?;
                let target = relay_state
                    .as_deref()
                    .and_then(safe_return_path)
                    .unwrap_or_else(|| "/".into());
                (verified, target)
            }
        };
        // Replay cache: remembered until the assertion could no longer be used.
        let left = (verified.not_on_or_after() - now).num_seconds() + cfg.security.clock_skew_secs;
        let ttl = std::time::Duration::from_secs(u64::try_from(left.max(1)).unwrap_or(1));
        // The replay entry, and the user with its vanity name, are written
        // behind: the session's durable write below makes them durable too
        // before the login is answered (one sync for the chain). A refused
        // login answers nothing they would have to back.
        let behind = self.write_behind.as_deref().unwrap_or(self.store.as_ref());
        // Mapped first (no side effect), so the replay entry's write also
        // reads the user it names (one store step instead of two).
        let mapped = saml::map_user(&verified, acct, &cfg.security, &mut trace)?;
        let (fresh, user) = behind
            .insert_ephemeral_get_user(
                Ephemeral::Replay,
                &acct.scoped(verified.assertion_id()),
                b"",
                ttl,
                &mapped.email.to_ascii_lowercase(),
            )
            .await?;
        if !fresh {
            return Err(SamlError::Replayed(verified.assertion_id().to_owned()).into());
        }
        let name_id = verified.name_id().map(|n| n.value.clone());
        let nid = verified.name_id();
        let facts = session::LoginFacts {
            name_id: name_id.clone(),
            name_id_format: nid.and_then(|n| n.format.clone()),
            name_qualifier: nid.and_then(|n| n.name_qualifier.clone()),
            sp_name_qualifier: nid.and_then(|n| n.sp_name_qualifier.clone()),
            session_index: verified.session_index().map(str::to_owned),
            session_not_on_or_after: verified.session_not_on_or_after(),
            admin: mapped.admin,
        };
        // A new user's first session goes in the same durable write as the
        // user where the store has one (one hand-off and commit less).
        let first = if user.is_none() {
            session::Sessions::first_session(acct, facts.clone(), now)
        } else {
            None
        };
        let then = first.as_ref().map(|(_, keys)| Arc::clone(keys));
        let owners = self.accounts.snapshot();
        let (admission, written) = provisioning::decide_then(
            behind,
            cfg,
            acct,
            owners.as_ref(),
            &mapped,
            now,
            true,
            Some(user),
            then,
        )
        .await?;
        let email = admission.user.email.clone();
        let session_id = match first {
            Some((id, _)) if written => id,
            _ => {
                self.sessions
                    .create(self.store.as_ref(), acct, admission.user, facts, now)
                    .await?
            }
        };
        Ok(LoginDone {
            session_id,
            target,
            email,
            name_id,
            answered: verified.in_response_to().map(str::to_owned),
            attributes: if self.activity.is_some() {
                verified.attributes().to_vec()
            } else {
                Vec::new()
            },
        })
    }

    async fn verify(&self, cfg: &Config, query: Option<&str>) -> Response<Body> {
        let q = form_pairs(query.unwrap_or("").as_bytes());
        let token = field(&q, "token").unwrap_or("");
        match provisioning::verify_token(self.store.as_ref(), token, self.clock.now()).await {
            Ok(Some(u)) => {
                tracing::info!(target: "audit", event = "email_verified", email = %u.email);
                html(
                    StatusCode::OK,
                    "Email verified",
                    &format!(
                        "<p>Thank you: {} is verified.</p><p><a href=\"{}/login\">Sign in</a></p>",
                        esc(&u.email),
                        esc(&cfg.path_prefix)
                    ),
                )
            }
            Ok(None) => html(
                StatusCode::BAD_REQUEST,
                "Link not valid",
                "<p>This verification link is unknown, already used or expired. Sign in again to receive a new one, or ask your administrator.</p>",
            ),
            Err(e) => refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                e.code(),
                &tracking_id(),
                &format!("{}/login", cfg.path_prefix),
            ),
        }
    }

    /// The request's live session on `acct` (none without a cookie); the
    /// error is the 503 to answer when the store fails.
    async fn session_of(
        &self,
        cfg: &Config,
        acct: &Account,
        req: &Request<Incoming>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Arc<session::SessionData>>, Box<Response<Body>>> {
        let name = self.cookie_name(cfg);
        let Some(id) = self.session_cookie(req, &name) else {
            return Ok(None);
        };
        self.sessions
            .load(self.store.as_ref(), cfg, acct, id, now, self.shard)
            .await
            .map_err(|e| {
                self.metrics.store_error();
                tracing::error!(error = %e, "session lookup failed");
                Box::new(json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.code(),
                    "sessions are temporarily unavailable",
                    None,
                ))
            })
    }

    /// `/console` on an account's host: the console for that account's
    /// admins, who sign in through its SSO (`crate::console::Door`).
    async fn console(
        &self,
        cfg: &Arc<Config>,
        acct: &Arc<Account>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let session = match self.session_of(cfg, acct, &req, self.clock.now()).await {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let admin = Arc::new(crate::admin::Admin {
            config: Arc::clone(cfg),
            accounts: Arc::clone(self.accounts.registry()),
            store: Arc::clone(&self.store),
            clock: Arc::clone(&self.clock),
            metrics: Arc::new(String::new),
            sessions: Arc::clone(&self.sessions),
        });
        let door = crate::console::Door::Account {
            acct,
            session,
            tls: self.tls,
            login: format!("{}/login", cfg.path_prefix),
            logout: format!("{}/logout", cfg.path_prefix),
        };
        crate::console::serve(&admin, req, door).await
    }

    async fn protected(
        &self,
        cfg: &Config,
        acct: &Arc<Account>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let name = self.cookie_name(cfg);
        let now = self.clock.now();
        let session = match self.session_of(cfg, acct, &req, now).await {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let Some(session) = session else {
            return self.unauthenticated(cfg, &req);
        };
        let cookie_names = [name.as_ref(), cfg.session.cookie_name.as_str()];
        let id = self
            .session_cookie(&req, &name)
            .unwrap_or_default()
            .to_owned();
        // For a WebSocket tunnel: is its session still live?
        let session_check = || -> proxy::SessionCheck {
            let (store, sessions, clock) = (
                Arc::clone(&self.store),
                Arc::clone(&self.sessions),
                Arc::clone(&self.clock),
            );
            let (id, shard) = (id.clone(), self.shard);
            let cfg = self.config();
            let registry = Arc::clone(self.accounts.registry());
            let account_id = acct.id.clone();
            Box::new(move || {
                let (store, sessions, clock, cfg, id) = (
                    Arc::clone(&store),
                    Arc::clone(&sessions),
                    Arc::clone(&clock),
                    Arc::clone(&cfg),
                    id.clone(),
                );
                // The account as now in force: a suspended or deleted
                // account ends its tunnels too.
                let acct = registry.get(&account_id);
                Box::pin(async move {
                    let Some(acct) = acct else { return false };
                    matches!(
                        sessions
                            .load(store.as_ref(), &cfg, &acct, &id, clock.now(), shard)
                            .await,
                        Ok(Some(_))
                    )
                })
            })
        };
        proxy::forward(
            cfg,
            &self.metrics,
            req,
            peer,
            self.tls,
            &session.user,
            &cookie_names,
            now.timestamp(),
            &session_check,
        )
        .await
    }

    fn unauthenticated(&self, cfg: &Config, req: &Request<Incoming>) -> Response<Body> {
        let h = req.headers();
        let accepts_html = h
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        let navigate = h.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) == Some("navigate");
        let xhr = h.contains_key("x-requested-with");
        let login = format!("{}/login", cfg.path_prefix);
        if matches!(*req.method(), Method::GET | Method::HEAD) && (accepts_html || navigate) && !xhr
        {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            return redirect(
                StatusCode::FOUND,
                &format!("{login}?return_to={}", url_encode(path)),
            );
        }
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in first",
            None,
        );
        if let Ok(v) = HeaderValue::from_str(&format!("SAML login=\"{login}\"")) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }

    async fn demo_idp(
        &self,
        idp: &DevIdp,
        cfg: &Account,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let users = [
            ("alice@example.com", "Alice", "Liddell", "Meetings-Licensed"),
            ("bob@example.com", "Bob", "Builder", "Staff"),
            ("carol@partner.org", "Carol", "Danvers", "Partners"),
        ];
        let path = req.uri().path().to_owned();
        let banner = "<p class=\"muted\"><strong>Development IdP: TEST ONLY.</strong> Its keys are public; never trust it outside a demo.</p>";
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/_demo-idp/sso") => {
                let q = form_pairs(req.uri().query().unwrap_or("").as_bytes());
                let request_id = field(&q, "SAMLRequest")
                    .and_then(|r| {
                        base64::engine::general_purpose::STANDARD
                            .decode(r.as_bytes())
                            .ok()
                    })
                    .and_then(|d| {
                        let mut s = String::new();
                        std::io::Read::read_to_string(
                            &mut std::io::Read::take(
                                flate2::read::DeflateDecoder::new(d.as_slice()),
                                64 * 1024,
                            ),
                            &mut s,
                        )
                        .ok()?;
                        xml::parse(&s).ok()?.root().attr("ID").map(str::to_owned)
                    })
                    .unwrap_or_default();
                let relay = field(&q, "RelayState").unwrap_or("");
                let options: String = users
                    .iter()
                    .map(|(e, f, l, g)| {
                        format!("<option value=\"{e}\">{f} {l} &lt;{e}&gt; ({g})</option>")
                    })
                    .collect();
                html(
                    StatusCode::OK,
                    "Demo identity provider",
                    &format!(
                        "{banner}<form method=\"post\" action=\"/_demo-idp/login\"><p><label>User <select name=\"user\">{options}</select></label></p>\
<p><label>Password <input type=\"password\" name=\"password\" value=\"demo\"></label> (every demo user's password is <code>demo</code>)</p>\
<input type=\"hidden\" name=\"request_id\" value=\"{}\"><input type=\"hidden\" name=\"relay\" value=\"{}\"><button type=\"submit\">Sign in</button></form>",
                        esc(&request_id),
                        esc(relay)
                    ),
                )
            }
            (Method::POST, "/_demo-idp/login") => {
                let body = match read_body(req.into_body(), 16 * 1024).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let f = form_pairs(&body);
                let Some((email, first, last, group)) =
                    users.iter().find(|u| Some(u.0) == field(&f, "user"))
                else {
                    return html(StatusCode::BAD_REQUEST, "Unknown user", banner);
                };
                if field(&f, "password") != Some("demo") {
                    return html(
                        StatusCode::FORBIDDEN,
                        "Wrong password",
                        &format!("{banner}<p>The demo password is <code>demo</code>.</p>"),
                    );
                }
                let irt = field(&f, "request_id")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned);
                let params = crate::devidp::ResponseParams {
                    name_id: (*email).to_owned(),
                    attributes: vec![
                        ("email".into(), vec![(*email).to_owned()]),
                        ("firstName".into(), vec![(*first).to_owned()]),
                        ("lastName".into(), vec![(*last).to_owned()]),
                        (
                            "groups".into(),
                            vec![(*group).to_owned(), "Everyone".into()],
                        ),
                    ],
                    acs_url: cfg.sp.acs_url.clone(),
                    audience: cfg.sp.entity_id.clone(),
                    in_response_to: irt,
                    now: self.clock.now(),
                    validity: chrono::Duration::minutes(5),
                    assertion_id: None,
                };
                match idp.response_b64(&params) {
                    Ok(b64) => pages::post_form(
                        &cfg.sp.acs_url,
                        &[
                            ("SAMLResponse", &b64),
                            ("RelayState", field(&f, "relay").unwrap_or("")),
                        ],
                    ),
                    Err(e) => html(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Demo IdP error",
                        &esc(&e),
                    ),
                }
            }
            _ => html(StatusCode::NOT_FOUND, "Not found", banner),
        }
    }
}

impl Handler for Gateway {
    fn call(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> HandlerFuture {
        Box::pin(async move { self.route(req, peer).await })
    }

    fn fast_path(self: Arc<Self>) -> Option<Arc<Gateway>> {
        Some(self)
    }

    /// `[listen]`'s limits; `max_connections` is shared out between the
    /// worker threads (each has its own listening socket).
    fn limits(&self) -> crate::config::ConnLimits {
        let mut l = self.config().listen.limits;
        l.max_connections = l.max_connections.div_ceil(self.sessions.shards());
        l
    }

    fn listener(&self) -> crate::metrics::Listener {
        crate::metrics::Listener::Public
    }
}

/// Account `cfg`'s SP metadata (what its IdP imports), as served at
/// `{path_prefix}/metadata` on its hosts and downloaded from the console.
pub(crate) fn sp_metadata(gw: &Config, cfg: &Account) -> Response<Body> {
    let cert = cfg.sp.cert_pem.as_deref().map(|pem| {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    });
    let keys = cert
        .map(|c| {
            format!(
                "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>\
<md:KeyDescriptor use=\"encryption\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>\
<md:EncryptionMethod Algorithm=\"http://www.w3.org/2009/xmlenc11#aes256-gcm\"/><md:EncryptionMethod Algorithm=\"http://www.w3.org/2009/xmlenc11#aes128-gcm\"/>\
<md:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#aes256-cbc\"/><md:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p\"/></md:KeyDescriptor>"
            )
        })
        .unwrap_or_default();
    // Single Logout, when the account can sign its messages.
    let slo = if slo::enabled(cfg) {
        let at = esc(&slo::slo_url(gw, cfg));
        format!(
            "<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{at}\"/>\
<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"{at}\"/>"
        )
    } else {
        String::new()
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{eid}\">\
<md:SPSSODescriptor AuthnRequestsSigned=\"{signed}\" WantAssertionsSigned=\"true\" protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{keys}{slo}\
<md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>\
<md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>\
<md:AssertionConsumerService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"{acs}\" index=\"0\" isDefault=\"true\"/>\
</md:SPSSODescriptor></md:EntityDescriptor>\n",
        eid = esc(&cfg.sp.entity_id),
        signed = cfg.sp.sign_authn_requests,
        acs = esc(&cfg.sp.acs_url),
    );
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split-based parser this module had before (the oracle).
    fn form_pairs_by_split(body: &[u8]) -> Vec<(String, String)> {
        body.split(|b| *b == b'&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let mut it = p.splitn(2, |b| *b == b'=');
                let k = percent_decode(it.next().unwrap_or_default());
                let v = percent_decode(it.next().unwrap_or_default());
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn form_pairs_agree_with_the_split_parser() {
        let alphabet = b"&&==a%2B+\xff\xc3\xa9";
        for body in crate::testutil::random_strings(0xDEAD_BEEF_1234_5678, alphabet, 20, 20_000) {
            assert_eq!(form_pairs(&body), form_pairs_by_split(&body), "{body:?}");
        }
        assert_eq!(
            form_pairs(b"&SAMLResponse=PD94%2B%3D&RelayState=a%3Db=c&flag&"),
            vec![
                ("SAMLResponse".to_owned(), "PD94+=".to_owned()),
                ("RelayState".to_owned(), "a=b=c".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn return_paths() {
        assert_eq!(
            safe_return_path("/meetings/42?x=1").as_deref(),
            Some("/meetings/42?x=1")
        );
        for bad in [
            "https://evil.example",
            "//evil.example/x",
            "/\\evil.example",
            "evil",
            "/a b",
            "/a\r\nb",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(safe_return_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn url_encoding_round_trips() {
        let s = "/a b?c=d&e=ü";
        assert_eq!(
            String::from_utf8(percent_decode(url_encode(s).as_bytes())).unwrap(),
            s
        );
    }
}
