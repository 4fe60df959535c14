//! SCIM 2.0 (RFC 7643/7644) on each account's host, at `/scim/v2`, for the
//! IdP's provisioning connector (Okta, Entra ID): `Users`, `Groups` and the
//! discovery endpoints, authenticated by a bearer token of scope `scim` of
//! that account.
//!
//! A SCIM user is a platform user (source `scim`) under the account's rules:
//! the email is `userName`, unique across the gateway; a user outside the
//! associated domains starts `pending_verification` (our extension's
//! `status`, while `active` stays the administrative switch); a licensed
//! user gets a vanity name. `active=false` and DELETE end the user's live
//! sessions on every replica before the answer is sent
//! ([`Sessions::revoke`]).
//!
//! Errors use the SCIM error schema (`status`, `scimType`, `detail`).

pub mod filter;
pub mod group;
pub mod user;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::account::Account;
use crate::account::registry::Snapshot;
use crate::clock::Clock;
use crate::config::Config;
use crate::gateway::session::Sessions;
use crate::mapping::License;
use crate::metrics::Metrics;
use crate::provisioning::{assign_vanities, new_record, send_verification};
use crate::server::{Body, full};
use crate::store::{DocSpace, Store, StoreError, UserRecord, UserSource, UserStatus};

use user::UserInput;

/// The SCIM base path.
pub const BASE: &str = "/scim/v2";
/// The error schema.
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// The list response schema.
pub const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// The PATCH schema.
pub const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The search request schema.
pub const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// Largest request body.
pub const MAX_BODY: usize = 256 * 1024;
/// Default and largest page (`count`).
pub const DEFAULT_COUNT: usize = 100;
/// Largest page a client may ask for.
pub const MAX_COUNT: usize = 1000;
/// Most users a filtered listing examines (beyond: `tooMany`).
pub const MAX_SCAN: usize = 1_000_000;
/// Failed authentications per client address and account per minute
/// before further attempts are refused with 429.
pub const MAX_AUTH_FAILURES: u32 = 20;

/// A weak ETag (`W/"..."`) over `bytes`: the first 8 bytes of their
/// SHA-256, hex.
pub fn weak_etag(bytes: &[u8]) -> String {
    let d = openssl::sha::sha256(bytes);
    let h: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("W/\"{h}\"")
}

/// 16 bytes in the UUID form (8-4-4-4-12 hex digits).
pub fn uuid_form(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or(""),
        h.get(8..12).unwrap_or(""),
        h.get(12..16).unwrap_or(""),
        h.get(16..20).unwrap_or(""),
        h.get(20..32).unwrap_or("")
    )
}

/// A SCIM error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// HTTP status.
    pub status: u16,
    /// `scimType` (400 and 409 errors).
    pub scim_type: Option<&'static str>,
    /// For people.
    pub detail: String,
}

impl ScimError {
    /// A 400 with `scimType`.
    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: 400,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }

    /// An error without `scimType`.
    pub fn status(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type: None,
            detail: detail.into(),
        }
    }

    fn store(e: &StoreError) -> Self {
        tracing::error!(error = %e, "store error on SCIM");
        Self::status(503, format!("{}: the user store is unavailable", e.code()))
    }

    fn not_found(what: &str) -> Self {
        Self::status(404, format!("{what} not found"))
    }

    /// The response.
    pub fn response(&self) -> Response<Body> {
        let mut v = json!({
            "schemas": [ERROR],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let (Some(t), Some(o)) = (self.scim_type, v.as_object_mut()) {
            o.insert("scimType".into(), json!(t));
        }
        scim_json(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            &v,
        )
    }
}

impl From<StoreError> for ScimError {
    fn from(e: StoreError) -> Self {
        Self::store(&e)
    }
}

type Result<T> = std::result::Result<T, ScimError>;

/// A JSON response of media type `application/scim+json`.
pub fn scim_json(status: StatusCode, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json; charset=utf-8"),
    );
    r
}

/// A resource response with its `ETag` and (on create) `Location`.
fn resource(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = scim_json(status, v);
    if let Some(Ok(etag)) = v
        .pointer("/meta/version")
        .and_then(Value::as_str)
        .map(HeaderValue::from_str)
    {
        r.headers_mut().insert(header::ETAG, etag);
    }
    if status == StatusCode::CREATED
        && let Some(Ok(loc)) = v
            .pointer("/meta/location")
            .and_then(Value::as_str)
            .map(HeaderValue::from_str)
    {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Failed authentications per (client address, account) in the current
/// minute. Process-wide; bounded (cleared when full).
static FAILURES: Mutex<BTreeMap<(IpAddr, String), (u32, Instant)>> = Mutex::new(BTreeMap::new());
const FAILURES_MAX: usize = 10_000;

fn failures_blocked(peer: IpAddr, account: &str) -> bool {
    let Ok(m) = FAILURES.lock() else { return false };
    m.get(&(peer, account.to_owned()))
        .is_some_and(|(n, since)| {
            *n >= MAX_AUTH_FAILURES && since.elapsed() < Duration::from_secs(60)
        })
}

fn count_failure(peer: IpAddr, account: &str) {
    let Ok(mut m) = FAILURES.lock() else { return };
    if m.len() >= FAILURES_MAX {
        m.clear();
    }
    let e = m
        .entry((peer, account.to_owned()))
        .or_insert((0, Instant::now()));
    if e.1.elapsed() >= Duration::from_secs(60) {
        *e = (0, Instant::now());
    }
    e.0 += 1;
}

/// What a SCIM request works with.
pub struct Ctx<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The gateway's config.
    pub cfg: &'a Config,
    /// The account whose host was asked.
    pub acct: &'a Account,
    /// Every account (whose domains are whose).
    pub snapshot: &'a Snapshot,
    /// The clock.
    pub clock: &'a dyn Clock,
    /// Sessions (deprovisioning ends them).
    pub sessions: &'a Sessions,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// `scheme://host/scim/v2`, for `meta.location`.
    pub base: String,
}

/// Answers a request under `/scim/v2` on `ctx.acct`'s host.
pub async fn serve(ctx: &Ctx<'_>, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix(BASE).unwrap_or("").to_owned();
    // Discovery says only what this server supports (as the SP metadata
    // does): served without a token, so a connector or a conformance tool
    // can read it before its credentials are set up.
    let discovery = method == Method::GET
        && ["/ServiceProviderConfig", "/Schemas", "/ResourceTypes"]
            .iter()
            .any(|d| rest == *d || rest.starts_with(&format!("{d}/")));
    if !discovery && let Err(e) = authenticate(ctx, &req, peer).await {
        ctx.metrics.scim(method_name(&method), e.status);
        let mut r = e.response();
        if e.status == 401 {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            );
        }
        if e.status == 429 {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        return r;
    }
    let r = match route(ctx, req, &method, &rest).await {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    ctx.metrics.scim(method_name(&method), r.status().as_u16());
    r
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

async fn authenticate(ctx: &Ctx<'_>, req: &Request<Incoming>, peer: IpAddr) -> Result<()> {
    if failures_blocked(peer, &ctx.acct.id) {
        ctx.metrics.scim_auth_failure("rate_limited");
        return Err(ScimError::status(
            429,
            "too many failed authentications; try again in a minute",
        ));
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .and_then(|_| v.get(7..))
        })
        .map(str::trim)
        .unwrap_or("");
    if presented.is_empty() {
        ctx.metrics.scim_auth_failure("missing");
        count_failure(peer, &ctx.acct.id);
        return Err(ScimError::status(
            401,
            "a bearer token of scope scim is required",
        ));
    }
    let hash = crate::provisioning::token_hash(presented);
    let token = ctx
        .store
        .token_by_hash(&hash)
        .await?
        .filter(|t| openssl::memcmp::eq(t.hash.as_bytes(), hash.as_bytes()));
    match token {
        None => {
            ctx.metrics.scim_auth_failure("unknown");
            count_failure(peer, &ctx.acct.id);
            Err(ScimError::status(401, "the bearer token is not valid"))
        }
        Some(t) if t.account != ctx.acct.id => {
            ctx.metrics.scim_auth_failure("other_account");
            count_failure(peer, &ctx.acct.id);
            Err(ScimError::status(
                403,
                "this token belongs to another account",
            ))
        }
        Some(t) if t.scope != "scim" => {
            ctx.metrics.scim_auth_failure("scope");
            Err(ScimError::status(403, "this token's scope is not scim"))
        }
        Some(_) => Ok(()),
    }
}

async fn body_json(req: Request<Incoming>) -> Result<Value> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(ScimError::status(
                413,
                format!("the body is larger than {MAX_BODY} bytes"),
            ));
        }
        Err(_) => {
            return Err(ScimError::bad(
                "invalidSyntax",
                "the body could not be read",
            ));
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ScimError::bad("invalidSyntax", format!("the body is not JSON: {e}")))
}

fn if_match(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// 412 unless `If-Match` (when sent) names `current`.
fn check_if_match(want: Option<&str>, current: &str) -> Result<()> {
    let Some(want) = want else { return Ok(()) };
    let strip = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    };
    let cur = strip(current);
    if want.split(',').any(|w| w.trim() == "*" || strip(w) == cur) {
        Ok(())
    } else {
        Err(ScimError::status(
            412,
            "the resource changed: its version no longer matches If-Match",
        ))
    }
}

async fn route(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
    method: &Method,
    rest: &str,
) -> Result<Response<Body>> {
    let query = query_pairs(req.uri().query());
    let (head, id) = match rest.trim_start_matches('/').split_once('/') {
        Some((h, i)) => (
            h.to_owned(),
            Some(
                String::from_utf8_lossy(&crate::saml::decode::percent_decode(i.as_bytes()))
                    .into_owned(),
            ),
        ),
        None => (rest.trim_start_matches('/').to_owned(), None),
    };
    match (head.as_str(), id.as_deref(), method) {
        ("ServiceProviderConfig", None, &Method::GET) => Ok(scim_json(
            StatusCode::OK,
            &discovery::service_provider_config(&ctx.base),
        )),
        ("Schemas", None, &Method::GET) => Ok(scim_json(
            StatusCode::OK,
            &list_of(discovery::schemas(&ctx.base)),
        )),
        ("Schemas", Some(urn), &Method::GET) => {
            one_by_id(discovery::schemas(&ctx.base), urn, "schema")
        }
        ("ResourceTypes", None, &Method::GET) => Ok(scim_json(
            StatusCode::OK,
            &list_of(discovery::resource_types(&ctx.base)),
        )),
        ("ResourceTypes", Some(name), &Method::GET) => {
            one_by_id(discovery::resource_types(&ctx.base), name, "resource type")
        }
        ("Users", None, &Method::GET) => {
            let q = ListQuery::from_pairs(&query)?;
            users_list(ctx, &q).await
        }
        ("Users", Some(".search"), &Method::POST) => {
            let body = body_json(req).await?;
            let q = ListQuery::from_search(&body)?;
            users_list(ctx, &q).await
        }
        ("Users", None, &Method::POST) => {
            let body = body_json(req).await?;
            user_create(ctx, &body).await
        }
        ("Users", Some(id), &Method::GET) => {
            let u = user_by_id(ctx, id).await?;
            let (attrs, excluded) = projection(&query);
            let v = user::project(render_user(ctx, &u).await?, &attrs, &excluded);
            Ok(resource(StatusCode::OK, &v))
        }
        ("Users", Some(id), &Method::PUT) => {
            let want = if_match(&req);
            let body = body_json(req).await?;
            user_replace(ctx, id, &body, want.as_deref()).await
        }
        ("Users", Some(id), &Method::PATCH) => {
            let want = if_match(&req);
            let body = body_json(req).await?;
            user_patch(ctx, id, &body, want.as_deref()).await
        }
        ("Users", Some(id), &Method::DELETE) => {
            let want = if_match(&req);
            user_delete(ctx, id, want.as_deref()).await
        }
        ("Groups", None, &Method::GET) => {
            let q = ListQuery::from_pairs(&query)?;
            group::list(ctx, &q).await
        }
        ("Groups", Some(".search"), &Method::POST) => {
            let body = body_json(req).await?;
            let q = ListQuery::from_search(&body)?;
            group::list(ctx, &q).await
        }
        ("Groups", None, &Method::POST) => {
            let body = body_json(req).await?;
            group::create(ctx, &body).await
        }
        ("Groups", Some(id), &Method::GET) => {
            let (attrs, excluded) = projection(&query);
            group::get(ctx, id, &attrs, &excluded).await
        }
        ("Groups", Some(id), &Method::PUT) => {
            let want = if_match(&req);
            let body = body_json(req).await?;
            group::replace(ctx, id, &body, want.as_deref()).await
        }
        ("Groups", Some(id), &Method::PATCH) => {
            let want = if_match(&req);
            let body = body_json(req).await?;
            group::patch(ctx, id, &body, want.as_deref()).await
        }
        ("Groups", Some(id), &Method::DELETE) => {
            let want = if_match(&req);
            group::delete(ctx, id, want.as_deref()).await
        }
        ("ServiceProviderConfig" | "Schemas" | "ResourceTypes" | "Users" | "Groups", _, _) => {
            Err(ScimError::status(405, "this method is not supported here"))
        }
        ("Bulk", _, _) => Err(ScimError::status(501, "bulk operations are not supported")),
        ("Me", _, _) => Err(ScimError::status(501, "/Me is not supported")),
        _ => Err(ScimError::not_found("endpoint")),
    }
}

/// The discovery resource whose `id` is `id` (any case), or 404.
fn one_by_id(all: Vec<Value>, id: &str, what: &str) -> Result<Response<Body>> {
    all.into_iter()
        .find(|s| s["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
        .map(|s| scim_json(StatusCode::OK, &s))
        .ok_or_else(|| ScimError::not_found(what))
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    crate::gateway::form_pairs(q.unwrap_or("").as_bytes())
}

fn projection(query: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let list = |k: &str| -> Vec<String> {
        query
            .iter()
            .filter(|(a, _)| a.eq_ignore_ascii_case(k))
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_owned()))
            .filter(|s| !s.is_empty())
            .take(64)
            .collect()
    };
    (list("attributes"), list("excludedAttributes"))
}

/// A listing's parameters.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// The filter.
    pub filter: Option<filter::Filter>,
    /// 1-based index of the first result.
    pub start: usize,
    /// Results per page.
    pub count: usize,
    /// `attributes`.
    pub attributes: Vec<String>,
    /// `excludedAttributes`.
    pub excluded: Vec<String>,
}

impl ListQuery {
    fn build(
        filter: Option<&str>,
        start: Option<&str>,
        count: Option<&str>,
        attributes: Vec<String>,
        excluded: Vec<String>,
    ) -> Result<Self> {
        let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => Some(filter::parse(f).map_err(|e| ScimError::bad("invalidFilter", e.0))?),
            None => None,
        };
        // RFC 7644 §3.4.2.4: startIndex below 1 is 1; a negative count is 0.
        let start = match start {
            None => 1,
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| ScimError::bad("invalidValue", "startIndex must be an integer"))?
                .max(1),
        };
        let count = match count {
            None => DEFAULT_COUNT as i64,
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| ScimError::bad("invalidValue", "count must be an integer"))?
                .max(0),
        };
        Ok(Self {
            filter,
            start: usize::try_from(start).unwrap_or(usize::MAX),
            count: usize::try_from(count).unwrap_or(0).min(MAX_COUNT),
            attributes,
            excluded,
        })
    }

    fn from_pairs(q: &[(String, String)]) -> Result<Self> {
        let get = |k: &str| {
            q.iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let (attributes, excluded) = projection(q);
        Self::build(
            get("filter"),
            get("startIndex"),
            get("count"),
            attributes,
            excluded,
        )
    }

    fn from_search(body: &Value) -> Result<Self> {
        let s = |k: &str| -> Option<String> {
            filter::get_ci(body, k).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let list = |k: &str| -> Vec<String> {
            match filter::get_ci(body, k) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .take(64)
                    .collect(),
                Some(Value::String(s)) => s.split(',').map(|x| x.trim().to_owned()).collect(),
                _ => Vec::new(),
            }
        };
        Self::build(
            s("filter").as_deref(),
            s("startIndex").as_deref(),
            s("count").as_deref(),
            list("attributes"),
            list("excludedAttributes"),
        )
    }
}

fn list_of(resources: Vec<Value>) -> Value {
    let n = resources.len();
    json!({
        "schemas": [LIST],
        "totalResults": n,
        "startIndex": 1,
        "itemsPerPage": n,
        "Resources": resources,
    })
}

fn list_page(total: usize, start: usize, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// The account's user with SCIM id `id` (404 when none, or another
/// account's).
async fn user_by_id(ctx: &Ctx<'_>, id: &str) -> Result<UserRecord> {
    if id.is_empty() || id.len() > 128 {
        return Err(ScimError::not_found("user"));
    }
    let Some(email) = ctx.store.get_doc(DocSpace::ScimUser, id).await? else {
        return Err(ScimError::not_found("user"));
    };
    let email = String::from_utf8_lossy(&email).into_owned();
    match ctx.store.get_user(&email).await? {
        Some(u) if u.account == ctx.acct.id && user::id_of(&u) == id => Ok(u),
        _ => Err(ScimError::not_found("user")),
    }
}

/// Makes sure `u`'s SCIM id can be looked up (a user created by another
/// source gets its derived id stored the first time SCIM shows it).
async fn ensure_id(ctx: &Ctx<'_>, u: &mut UserRecord) -> Result<()> {
    if u.scim.as_ref().is_some_and(|s| !s.id.is_empty()) {
        return Ok(());
    }
    let id = user::derived_id(u);
    // Deterministic: concurrent first showings write the same pair.
    ctx.store
        .put_doc(DocSpace::ScimUser, &id, u.email.as_bytes(), false)
        .await?;
    let mut fields = u.scim.clone().unwrap_or_default();
    fields.id = id;
    u.scim = Some(fields);
    ctx.store.put_users(std::slice::from_ref(u)).await?;
    Ok(())
}

/// Forgets a deleted user's SCIM id (nothing to do when it never had one).
pub async fn forget_id(store: &dyn Store, user: &UserRecord) {
    if let Some(s) = user.scim.as_ref().filter(|s| !s.id.is_empty()) {
        // A leftover entry is harmless (a lookup checks the user's own
        // id); the removal is tidiness.
        let _ = store.delete_doc(DocSpace::ScimUser, &s.id).await;
    }
}

async fn render_user(ctx: &Ctx<'_>, u: &UserRecord) -> Result<Value> {
    Ok(user::render(u, &ctx.base, group::groups_of(u, &ctx.base)))
}

async fn users_list(ctx: &Ctx<'_>, q: &ListQuery) -> Result<Response<Body>> {
    let mut matched: Vec<UserRecord> = Vec::new();
    let mut total = 0usize;
    let want = q.start.saturating_sub(1)..q.start.saturating_sub(1).saturating_add(q.count);
    let by_name = q
        .filter
        .as_ref()
        .and_then(|f| filter::equality_on(f, "userName"));
    let by_id = q.filter.as_ref().and_then(|f| filter::equality_on(f, "id"));
    if let Some(name) = by_name {
        // Okta's and Entra ID's probe before every create: one read.
        let key = crate::email::lookup_key(name);
        if let Some(u) = ctx.store.get_user(&key).await?
            && u.account == ctx.acct.id
        {
            total = 1;
            if want.contains(&0) {
                matched.push(u);
            }
        }
    } else if let Some(id) = by_id {
        match user_by_id(ctx, id).await {
            Ok(u) => {
                total = 1;
                if want.contains(&0) {
                    matched.push(u);
                }
            }
            Err(e) if e.status == 404 => {}
            Err(e) => return Err(e),
        }
    } else {
        // Everything else: a scan of the account's users, in email order.
        let mut cursor: Option<String> = None;
        let mut seen = 0usize;
        loop {
            let (page, next) = ctx
                .store
                .list_account_users(&ctx.acct.id, cursor.as_deref(), 500)
                .await?;
            for u in page {
                seen += 1;
                if seen > MAX_SCAN {
                    return Err(ScimError::bad(
                        "tooMany",
                        format!(
                            "the account has more than {MAX_SCAN} users; narrow the filter to userName eq"
                        ),
                    ));
                }
                let hit = match &q.filter {
                    Some(f) => filter::matches(f, &render_user(ctx, &u).await?),
                    None => true,
                };
                if hit {
                    if want.contains(&total) {
                        matched.push(u);
                    }
                    total += 1;
                }
            }
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
    }
    let mut resources = Vec::with_capacity(matched.len());
    for mut u in matched {
        ensure_id(ctx, &mut u).await?;
        let v = render_user(ctx, &u).await?;
        resources.push(user::project(v, &q.attributes, &q.excluded));
    }
    Ok(scim_json(
        StatusCode::OK,
        &list_page(total, q.start, resources),
    ))
}

/// 409 `uniqueness`.
fn conflict(detail: &str) -> ScimError {
    ScimError {
        status: 409,
        scim_type: Some("uniqueness"),
        detail: detail.to_owned(),
    }
}

/// 409 `uniqueness` for an email that exists (here or in another account).
fn taken(existing: &UserRecord, acct: &Account) -> ScimError {
    conflict(if existing.account == acct.id {
        "a user with this userName exists"
    } else {
        "this userName belongs to another account of this gateway (user_in_other_account)"
    })
}

fn canonical_email(ctx: &Ctx<'_>, user_name: &str) -> Result<String> {
    crate::email::canonical(user_name, ctx.cfg.security.allow_international_email)
        .map_err(|e| ScimError::bad("invalidValue", format!("userName: {e}")))
}

fn apply_input(u: &mut UserRecord, i: &UserInput, full_replace: bool) {
    u.first_name = i.given.clone();
    u.last_name = i.family.clone();
    u.department = i.department.clone();
    let mut fields = u.scim.clone().unwrap_or_default();
    if let Some(l) = i.license {
        if l != u.license {
            // Set by the client: no longer the groups' to take back.
            fields.license_from_groups = false;
        }
        u.license = l;
    }
    if let Some(f) = &i.features {
        u.features = f.clone();
    }
    fields.external_id = i.external_id.clone();
    fields.display_name = i.display_name.clone();
    if full_replace || !i.emails.is_empty() {
        fields.emails = i.emails.clone();
    }
    u.scim = Some(fields);
}

async fn user_create(ctx: &Ctx<'_>, body: &Value) -> Result<Response<Body>> {
    let input = user::read(body)?;
    let email = canonical_email(ctx, &input.user_name)?;
    if let Some(existing) = ctx.store.get_user(&email).await? {
        return Err(taken(&existing, ctx.acct));
    }
    if crate::provisioning::domain_of_other_account(ctx.snapshot, ctx.acct, &email) {
        return Err(conflict(
            "the email's domain is an associated domain of another account of this gateway (user_in_other_account)",
        ));
    }
    let license = input.license.unwrap_or(ctx.acct.mapping.default_license);
    let now = ctx.clock.now();
    let mut u = new_record(&email, UserSource::Scim, license, ctx.acct, now);
    u.sso_only = true;
    if input.features.is_none() {
        u.features = ctx.acct.mapping.default_features.clone();
    }
    apply_input(&mut u, &input, true);
    let id = user::derived_id(&u);
    if let Some(f) = u.scim.as_mut() {
        f.id = id.clone();
    }
    if input.active == Some(false) {
        if let Some(f) = u.scim.as_mut() {
            f.was_pending = u.status == UserStatus::PendingVerification;
        }
        u.status = UserStatus::Deactivated;
    }
    if u.license == License::Licensed {
        assign_vanities(ctx.store, std::slice::from_mut(&mut u)).await?;
    }
    // The id first: a user is never findable by email without its id.
    ctx.store
        .put_doc(DocSpace::ScimUser, &id, email.as_bytes(), false)
        .await?;
    let inserted = ctx.store.insert_users(std::slice::from_ref(&u)).await?;
    if inserted.first() != Some(&true) {
        // Lost a race with another create of this email.
        let winner = ctx.store.get_user(&email).await?;
        if let Some(name) = &u.vanity {
            let _ = crate::provisioning::give_back_vanity(ctx.store, name, &email, winner.as_ref())
                .await;
        }
        return Err(match winner {
            Some(w) => taken(&w, ctx.acct),
            None => conflict("a user with this userName exists"),
        });
    }
    if u.status == UserStatus::PendingVerification {
        send_verification(ctx.store, ctx.cfg, ctx.acct, &email).await?;
    }
    tracing::info!(target: "audit", event = "user_created", source = "scim", account = %ctx.acct.id, email = %email, scim_id = %id, status = ?u.status);
    let v = render_user(ctx, &u).await?;
    Ok(resource(StatusCode::CREATED, &v))
}

/// Writes `updated` over `old` (same SCIM id): a new userName moves the
/// record to its new email; a deactivation or rename ends the user's live
/// sessions everywhere before this returns.
async fn write_update(
    ctx: &Ctx<'_>,
    old: &UserRecord,
    mut updated: UserRecord,
    active: Option<bool>,
) -> Result<UserRecord> {
    // The administrative switch.
    match (old.status, active) {
        (UserStatus::Deactivated, Some(true)) => {
            let was_pending = updated.scim.as_ref().is_some_and(|s| s.was_pending);
            updated.status = if was_pending {
                UserStatus::PendingVerification
            } else {
                UserStatus::Active
            };
            if let Some(s) = updated.scim.as_mut() {
                s.was_pending = false;
            }
        }
        (UserStatus::Active | UserStatus::PendingVerification, Some(false)) => {
            if let Some(s) = updated.scim.as_mut() {
                s.was_pending = old.status == UserStatus::PendingVerification;
            }
            updated.status = UserStatus::Deactivated;
        }
        _ => {}
    }
    if updated.license == License::Licensed && updated.vanity.is_none() {
        assign_vanities(ctx.store, std::slice::from_mut(&mut updated)).await?;
    }
    updated.updated_at = ctx.clock.now().to_rfc3339();
    let renamed = updated.email != old.email;
    if renamed {
        if let Some(existing) = ctx.store.get_user(&updated.email).await? {
            return Err(taken(&existing, ctx.acct));
        }
        if crate::provisioning::domain_of_other_account(ctx.snapshot, ctx.acct, &updated.email) {
            return Err(conflict(
                "the new userName's domain is an associated domain of another account of this gateway",
            ));
        }
        // A new email outside the associated domains must be verified.
        if updated.status == UserStatus::Active
            && !crate::provisioning::in_associated_domain(&updated.email, ctx.acct)
        {
            updated.status = UserStatus::PendingVerification;
        }
        let inserted = ctx
            .store
            .insert_users(std::slice::from_ref(&updated))
            .await?;
        if inserted.first() != Some(&true) {
            return Err(conflict("a user with this userName exists"));
        }
        let id = user::id_of(&updated);
        ctx.store
            .put_doc(DocSpace::ScimUser, &id, updated.email.as_bytes(), false)
            .await?;
        if let Some(name) = &updated.vanity {
            ctx.store.release_vanity(name, &old.email).await?;
            let claimed = ctx
                .store
                .claim_vanities(&[(name.clone(), updated.email.clone())])
                .await?;
            if claimed.first() != Some(&true) {
                updated.vanity = None;
                assign_vanities(ctx.store, std::slice::from_mut(&mut updated)).await?;
                ctx.store.put_users(std::slice::from_ref(&updated)).await?;
            }
        }
        crate::activity::forget_user(ctx.store, &ctx.acct.id, &old.email).await?;
        ctx.store.delete_user(&old.email).await?;
        if updated.status == UserStatus::PendingVerification {
            send_verification(ctx.store, ctx.cfg, ctx.acct, &updated.email).await?;
        }
        ctx.sessions
            .revoke(ctx.store, std::slice::from_ref(&old.email))
            .await?;
        tracing::info!(target: "audit", event = "user_renamed", source = "scim", account = %ctx.acct.id, email = %updated.email, old_email = %old.email, scim_id = %id);
    } else {
        ctx.store.put_users(std::slice::from_ref(&updated)).await?;
    }
    if old.status == UserStatus::Active && updated.status != UserStatus::Active && !renamed {
        ctx.sessions
            .revoke(ctx.store, std::slice::from_ref(&updated.email))
            .await?;
    }
    let event = match (old.status, updated.status) {
        (a, UserStatus::Deactivated) if a != UserStatus::Deactivated => "user_deactivated",
        (UserStatus::Deactivated, b) if b != UserStatus::Deactivated => "user_reactivated",
        _ => "user_updated",
    };
    tracing::info!(target: "audit", event, source = "scim", account = %ctx.acct.id, email = %updated.email, scim_id = %user::id_of(&updated), status = ?updated.status);
    Ok(updated)
}

async fn user_replace(
    ctx: &Ctx<'_>,
    id: &str,
    body: &Value,
    want: Option<&str>,
) -> Result<Response<Body>> {
    let old = user_by_id(ctx, id).await?;
    check_if_match(want, &user::version(&old))?;
    let input = user::read(body)?;
    if input.id.as_deref().is_some_and(|i| i != id) {
        return Err(ScimError::bad("mutability", "id cannot be changed"));
    }
    let email = canonical_email(ctx, &input.user_name)?;
    let mut updated = old.clone();
    updated.email = email;
    let mut fields = updated.scim.clone().unwrap_or_default();
    fields.id = id.to_owned();
    updated.scim = Some(fields);
    apply_input(&mut updated, &input, true);
    let u = write_update(ctx, &old, updated, input.active).await?;
    let v = render_user(ctx, &u).await?;
    Ok(resource(StatusCode::OK, &v))
}

async fn user_patch(
    ctx: &Ctx<'_>,
    id: &str,
    body: &Value,
    want: Option<&str>,
) -> Result<Response<Body>> {
    let old = user_by_id(ctx, id).await?;
    check_if_match(want, &user::version(&old))?;
    let mut v = render_user(ctx, &old).await?;
    user::apply_patch(&mut v, body, &["emails"])?;
    let input = user::read(&v)?;
    let email = canonical_email(ctx, &input.user_name)?;
    let mut updated = old.clone();
    updated.email = email;
    let mut fields = updated.scim.clone().unwrap_or_default();
    fields.id = id.to_owned();
    updated.scim = Some(fields);
    apply_input(&mut updated, &input, true);
    // The rendered form shows the login email when none was set: keep it
    // implicit unless the client changed the list.
    if updated.scim.as_ref().is_some_and(|s| {
        s.emails.len() == 1
            && s.emails.first().is_some_and(|e| {
                e.value == old.email && e.kind.as_deref() == Some("work") && e.primary
            })
    }) && old.scim.as_ref().is_none_or(|s| s.emails.is_empty())
        && let Some(s) = updated.scim.as_mut()
    {
        s.emails.clear();
    }
    let u = write_update(ctx, &old, updated, input.active).await?;
    let v = render_user(ctx, &u).await?;
    Ok(resource(StatusCode::OK, &v))
}

async fn user_delete(ctx: &Ctx<'_>, id: &str, want: Option<&str>) -> Result<Response<Body>> {
    let old = user_by_id(ctx, id).await?;
    check_if_match(want, &user::version(&old))?;
    crate::activity::forget_user(ctx.store, &ctx.acct.id, &old.email).await?;
    if !ctx.store.delete_user(&old.email).await? {
        return Err(ScimError::not_found("user"));
    }
    ctx.sessions
        .revoke(ctx.store, std::slice::from_ref(&old.email))
        .await?;
    group::remove_member_everywhere(ctx, &old).await?;
    let _ = ctx.store.delete_doc(DocSpace::ScimUser, id).await;
    tracing::info!(target: "audit", event = "user_deleted", source = "scim", account = %ctx.acct.id, email = %old.email, scim_id = %id);
    Ok(no_content())
}

pub mod discovery;
