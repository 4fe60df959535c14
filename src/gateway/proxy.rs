//! The reverse proxy: strip, then inject. Every client-supplied header that
//! could pass for an identity header is removed (names compared after
//! lowercasing and treating `_` as `-`), hop-by-hop headers are dropped,
//! the gateway's own cookie is removed, `X-Forwarded-*` are set, and the
//! verified identity is added. Bodies stream both ways; WebSocket upgrades
//! are spliced once the upstream answers 101.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::{Body, BoxError, json_error};
use crate::store::UserRecord;

use super::upstream;

/// Bodies up to this size (with a Content-Length) are buffered, not streamed.
const SMALL_BODY: usize = 64 * 1024;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How identity header names are compared: lowercase ASCII letters and
/// digits only, every separator dropped, so `X-Samlgate-Email`,
/// `x_samlgate_email`, `X.Samlgate.Email` and `XSamlgateEmail` are one name
/// (upstream frameworks map `_` and `.` to `-` or drop them; PHP and CGI
/// turn every one into `_`). The config's `strip_names` and `strip_prefix`
/// are kept in this form.
fn squash(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase())
}

/// The forwarding family: headers through which a proxy tells the upstream
/// who the client is or what it asked for. Only a trusted proxy may send
/// them; from anyone else they are removed (the gateway sets
/// `X-Forwarded-For/Proto/Host` itself).
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-host",
    "x-original-forwarded-for",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether the (lowercase) header `n` belongs to the forwarding family
/// ([`FORWARDING`] or any `X-Forwarded-*`).
pub(crate) fn is_forwarding(n: &str) -> bool {
    // Every name of the family starts with one of these (most headers a
    // browser sends do not: one comparison for them).
    matches!(n.as_bytes().first(), Some(b'x' | b'f' | b't' | b'c'))
        && (n.starts_with("x-forwarded-") || FORWARDING.contains(&n))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The header names a Connection header lists (lowercased), from its values.
pub(crate) fn connection_named<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether the (lowercase) header name `n` is hop-by-hop: a fixed one or
/// one the Connection header lists (an upgrade's `Connection` and `Upgrade`
/// are written by the gateway afterwards).
pub(crate) fn is_hop_by_hop(n: &str, named: &[String]) -> bool {
    HOP_BY_HOP.contains(&n) || named.iter().any(|c| c == n)
}

/// What the Connection headers of `h` name (lowercased).
fn connection_options(h: &HeaderMap) -> Vec<String> {
    connection_named(
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// Removes, in one pass over the names present, the hop-by-hop headers,
/// those the Connection header names (`named`, from
/// [`connection_options`]), and whatever `also` picks.
fn strip_where(h: &mut HeaderMap, named: &[String], mut also: impl FnMut(&str) -> bool) {
    let mut gone: Vec<HeaderName> = Vec::new();
    for k in h.keys() {
        let n = k.as_str();
        let hop = is_hop_by_hop(n, named);
        // `also` sees every name (it may count what it picks).
        let other = also(n);
        if hop || other {
            gone.push(k.clone());
        }
    }
    for k in gone {
        h.remove(k);
    }
}

/// Whether a client header could impersonate an identity header: one of
/// the configured names or under the configured prefix, compared after
/// normalisation (header names are already lowercase; `_` counts as `-`).
pub(crate) fn is_identity(n: &str, cfg: &Config) -> bool {
    let up = &cfg.upstream;
    let prefix = up.strip_prefix.as_bytes();
    let mut it = squash(n);
    // Starts with the prefix (no allocation: most names differ at once).
    let mut starts = true;
    for &p in prefix {
        if it.next() != Some(p) {
            starts = false;
            break;
        }
    }
    starts || up.strip_names.iter().any(|s| squash(n).eq(s.bytes()))
}

/// Header value text from arbitrary text: control characters become
/// spaces, surrounding whitespace goes. Borrowed when it is clean (nearly
/// always). Whatever is left is a valid header value.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let t = s.trim();
    // Control characters are C0, DEL and C1 (U+0080..U+009F, which UTF-8
    // encodes as 0xC2 0x80..0x9F): bytes that cannot start one skip the
    // character-wise check.
    if !t.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) || !t.chars().any(char::is_control) {
        return t.into();
    }
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clean.trim().to_owned().into()
}

/// Adds the identity headers (and the signed one when configured).
fn inject_identity(h: &mut HeaderMap, cfg: &Config, user: &UserRecord, now: i64) {
    each_identity(cfg, user, now, |name, v| {
        if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
            h.insert(name.clone(), v);
        }
    });
}

/// Calls `f` with each identity header for `user` (and the signed one when
/// configured), values cleaned of control characters ([`clean`]).
pub(crate) fn each_identity(
    cfg: &Config,
    user: &UserRecord,
    now: i64,
    mut f: impl FnMut(&HeaderName, &str),
) {
    use std::borrow::Cow;
    let mut signed_parts: Vec<Cow<'_, str>> = Vec::new();
    let signing = cfg.upstream.signed_header_key.is_some();
    for (field, name) in &cfg.upstream.header_names {
        let v: Cow<'_, str> = match field.as_str() {
            "email" => Cow::Borrowed(&user.email),
            "first_name" => Cow::Borrowed(&user.first_name),
            "last_name" => Cow::Borrowed(&user.last_name),
            "department" => Cow::Borrowed(&user.department),
            "groups" => Cow::Owned(user.groups.join(",")),
            "license" => Cow::Borrowed(user.license.as_str()),
            "vanity" => Cow::Borrowed(user.vanity.as_deref().unwrap_or("")),
            "account" => Cow::Borrowed(user.account.as_str()),
            _ => continue,
        };
        f(name, &clean(&v));
        // The signed message: the seven user fields, and the account when
        // it is not the default one (so a signature made before accounts
        // existed reads the same).
        if signing && (field != "account" || user.account != crate::account::DEFAULT_ID) {
            signed_parts.push(v);
        }
    }
    if let Some(key) = &cfg.upstream.signed_header_key {
        // t=<unix>,v1=<hex HMAC-SHA256(key, t \n email \n first \n ... \n vanity)>
        let msg = format!("{now}\n{}", signed_parts.join("\n"));
        if let Some(mac) = hmac_sha256(key.as_bytes(), msg.as_bytes()) {
            let name = format!("{}Signature", cfg.upstream.identity_header_prefix);
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                f(&n, &format!("t={now},v1={mac}"));
            }
        }
    }
}

/// HMAC-SHA256 as hex.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Option<String> {
    let pkey = openssl::pkey::PKey::hmac(key).ok()?;
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).ok()?;
    signer.update(msg).ok()?;
    let mac = signer.sign_to_vec().ok()?;
    Some(mac.iter().map(|b| format!("{b:02x}")).collect())
}

/// The Cookie header to forward: the cookies of `values` (every Cookie
/// header's value, in order) but the gateway's own (each of `cookie_names`
/// and its `_authn` request cookie), joined; `None` when nothing is left.
pub(crate) fn kept_cookies<'a>(
    values: impl Iterator<Item = &'a str>,
    cookie_names: &[&str],
) -> Option<String> {
    // Borrowed: most requests carry only the session cookie, and then
    // nothing is allocated or rebuilt.
    let kept: Vec<&str> = values
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| {
            let name = c.split('=').next().unwrap_or("");
            let ours = |n: &str| cookie_names.contains(&n);
            !c.is_empty() && !ours(name) && !name.strip_suffix("_authn").is_some_and(ours)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Removes the gateway's session cookie from the Cookie header(s).
fn strip_cookie(h: &mut HeaderMap, cookie_names: &[&str]) {
    let rebuilt = kept_cookies(
        h.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        cookie_names,
    );
    h.remove(header::COOKIE);
    if let Some(v) = rebuilt.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::COOKIE, v);
    }
}

/// Whether the session behind a WebSocket tunnel is still live (checked
/// every `session.recheck_secs`; a store failure counts as no).
pub type SessionCheck = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync,
>;

/// Relays a WebSocket tunnel until either side closes it or its session
/// ends (logout, deactivation, expiry: checked every `every`). Writes that
/// stall end it too (`listen.write_timeout_secs` on the client's socket).
async fn tunnel<C, U>(mut client: C, mut upstream: U, every: Duration, alive: SessionCheck)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut copy => return,
            _ = tick.tick() => {
                if !alive().await {
                    crate::metrics::CONNECTIONS.closed(
                        crate::metrics::Listener::Public,
                        crate::metrics::CloseReason::TunnelEnded,
                    );
                    tracing::info!(target: "audit", event = "tunnel_ended", reason = "session_ended", "WebSocket tunnel closed: its session ended");
                    return;
                }
            }
        }
    }
}

/// `r` with `Connection: close` (ignored by HTTP/2).
fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Forwards `req` for `user` to the upstream. `session_check` builds the
/// check a WebSocket tunnel runs while it lasts (only called for one).
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    cfg: &Config,
    metrics: &Metrics,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    user: &UserRecord,
    cookie_names: &[&str],
    now: i64,
    session_check: &(dyn Fn() -> SessionCheck + Sync),
) -> Response<Body> {
    // What the client's Connection header names (hop-by-hop for it).
    let named = connection_options(req.headers());
    // A WebSocket upgrade: GET, `Upgrade: websocket`, and Connection
    // naming `upgrade` (RFC 6455 §4.1; without it, Upgrade is just a
    // hop-by-hop header and is dropped).
    let is_upgrade = req.method() == http::Method::GET
        && named.iter().any(|n| n == "upgrade")
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    // Origin-form (`/path?query`) under the upstream's base path; an
    // incoming request already in that form with no base path is sent as is.
    let (authority, base) = cfg.upstream.target();
    let origin_form = req.uri().scheme().is_none() && req.uri().authority().is_none();
    let uri: Option<Uri> = if base.is_empty() && origin_form {
        None
    } else {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        match format!("{base}{path}").parse() {
            Ok(u) => Some(u),
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    "the request path is not valid",
                    None,
                );
            }
        }
    };
    let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    // A tunnel keeps its connection's slot (the cap, the metrics, the drain).
    let slot = is_upgrade
        .then(|| {
            req.extensions()
                .get::<crate::server::conn::ConnSlot>()
                .cloned()
        })
        .flatten();
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let h = &mut parts.headers;
    // X-Forwarded-*: appended to only when the peer is a trusted proxy.
    let trusted = cfg.upstream.trusted_proxies.contains(&peer.ip());
    // A forwarding header the client's Connection names is hop-by-hop:
    // as if absent (as on the fast path).
    let prev_xff = if trusted && !named.iter().any(|n| n == "x-forwarded-for") {
        h.get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    } else {
        None
    };
    // One pass: hop-by-hop, identity look-alikes, and forwarding headers an
    // untrusted client may not set.
    let mut stripped = 0usize;
    // Every hop-by-hop header goes, the client's Connection and Upgrade
    // included: an upgrade gets the two written by the gateway below.
    strip_where(h, &named, |n| {
        if is_identity(n, cfg) {
            stripped += 1;
            return true;
        }
        !trusted && is_forwarding(n)
    });
    if stripped > 0 {
        tracing::warn!(target: "security", event = "identity_header_stripped", count = stripped, remote = %peer.ip(), "client sent identity headers; removed");
    }
    strip_cookie(h, cookie_names);
    let xff = match prev_xff {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(X_FORWARDED_FOR, v);
    }
    if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
    }
    if let Some(host) = host.clone()
        && !h.contains_key(&X_FORWARDED_HOST)
    {
        h.insert(X_FORWARDED_HOST, host);
    }
    match HeaderValue::from_str(authority) {
        Ok(v) => h.insert(header::HOST, v),
        Err(_) => h.remove(header::HOST),
    };
    // The framing is the gateway's: a Content-Length is re-written from the
    // length hyper framed the body with (the same number, canonical digits).
    if h.contains_key(header::CONTENT_LENGTH) {
        match hyper::body::Body::size_hint(&body).exact() {
            Some(n) => {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
            None => {
                h.remove(header::CONTENT_LENGTH);
            }
        }
    }
    if is_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    inject_identity(h, cfg, user, now);
    if let Some(uri) = uri {
        parts.uri = uri;
    }
    parts.version = http::Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    let start = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(cfg.upstream.timeout_secs),
        upstream::send(authority, upstream_req),
    )
    .await;
    metrics.upstream_latency.observe(start.elapsed());
    let (mut resp, lease) = match result {
        Ok(Ok(r)) => r,
        // The client's connection closes after these, as on the fast path
        // (which may not have read the whole request body when it gives up).
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream request failed");
            metrics.proxied(502);
            return closing(json_error(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the meeting platform did not answer",
                None,
            ));
        }
        Err(_) => {
            metrics.proxied(504);
            return closing(json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the meeting platform took too long",
                None,
            ));
        }
    };
    // An answer whose Connection names its own framing (or Host) cannot be
    // relayed faithfully: 502, this upstream connection is dropped (the
    // lease with it) and the client's connection closes after the answer.
    let answer_named = connection_options(resp.headers());
    let unframable = super::head::forbidden_option(&answer_named).map(str::to_owned);
    let unasked_101 = resp.status() == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none();
    if unframable.is_some() || unasked_101 {
        drop(lease);
        let why = unframable.map_or_else(
            || "101 without an upgrade".to_owned(),
            |n| format!("Connection names {n}"),
        );
        tracing::warn!(target: "security", event = "upstream_answer_refused", reason = %why, "upstream answer cannot be framed");
        metrics.proxied(502);
        return closing(json_error(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "the meeting platform's answer could not be relayed",
            None,
        ));
    }
    metrics.proxied(resp.status().as_u16());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let alive = session_check();
        let every = Duration::from_secs(cfg.session.recheck_secs);
        tokio::spawn(async move {
            let _slot = slot;
            match (client_upgrade.await, upstream_upgrade.await) {
                (Ok(c), Ok(u)) => tunnel(TokioIo::new(c), TokioIo::new(u), every, alive).await,
                (c, u) => tracing::debug!(
                    client = c.is_ok(),
                    upstream = u.is_ok(),
                    "websocket upgrade failed"
                ),
            }
        });
        // The connection now belongs to the WebSocket: never pooled again.
        drop(lease);
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, crate::server::full(""));
    }
    let (mut parts, body) = resp.into_parts();
    strip_where(&mut parts.headers, &answer_named, |_| false);
    // Small bodies of known length are read whole and sent with the head in
    // one write (one TCP segment instead of two on the way back); anything
    // else streams.
    let small = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= SMALL_BODY);
    if small {
        return match http_body_util::Limited::new(body, SMALL_BODY)
            .collect()
            .await
        {
            Ok(c) => {
                lease.release_read();
                Response::from_parts(parts, crate::server::full(c.to_bytes()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream body failed");
                closing(json_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the meeting platform's answer broke off",
                    None,
                ))
            }
        };
    }
    // Back in the pool once the streamed body has been read to its end.
    lease.release();
    Response::from_parts(parts, body.map_err(|e| -> BoxError { Box::new(e) }).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_stripped_whatever_their_spelling() {
        let cfg = crate::config::Config::from_toml(
            "[sp]\nentity_id=\"https://sp\"\nacs_url=\"https://sp/saml/acs\"\n[idp]\nmetadata_file=\"tests/fixtures/idp-metadata.xml\"\n[upstream]\nheaders = { email = \"X-User\" }\n",
            std::path::Path::new("."),
            &|_| None,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-samlgate-email", "a"),
            ("X_Samlgate_Email", "b"),
            ("x-samlgate-whatever", "c"),
            ("x_user", "d"),
            ("X-User", "e"),
            ("x.samlgate.email", "f"),
            ("xsamlgateemail", "g"),
            ("x--samlgate--license", "h"),
            ("x-other", "keep"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        let mut stripped = 0;
        strip_where(&mut h, &[], |n| {
            let hit = is_identity(n, &cfg);
            stripped += usize::from(hit);
            hit
        });
        assert_eq!(stripped, 8);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-other"));
    }

    #[test]
    fn cookie_is_removed_others_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; samlgate_session=secret; b=2"),
        );
        strip_cookie(&mut h, &["samlgate_session"]);
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-ok", HeaderValue::from_static("1"));
        let named = connection_options(&h);
        strip_where(&mut h, &named, |_| false);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn control_characters_never_reach_a_header() {
        assert_eq!(clean("a\r\nInjected: yes"), "a  Injected: yes");
        assert_eq!(clean(" a\u{85}b "), "a b");
        assert_eq!(clean("Zoë"), "Zoë");
    }
}
