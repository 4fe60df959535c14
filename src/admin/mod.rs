//! The admin listener: the user-management API (`/api/v2/users...`), CSV
//! import, and `/healthz`, `/readyz`, `/metrics`. Never served on the public
//! listener. Every `/api/` call needs `Authorization: Bearer <token>` with a
//! token from `[admin] tokens` or `SAMLGATE_ADMIN_TOKENS`, compared in
//! constant time; with no token configured every API call is refused.
//!
//! Errors are JSON `{"code", "message", "field"?}` with stable codes.

pub mod accounts;
pub mod body;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::account::registry::Registry;
use crate::account::{Account, DEFAULT_ID};
use crate::clock::Clock;
use crate::config::Config;
use crate::mapping::License;
use crate::provisioning::csv::{ImportOptions, import};
use crate::server::{Body, Handler, HandlerFuture, json, json_error, read_body, text};
use crate::store::{Store, StoreError, UserStatus};

/// Largest JSON body accepted.
const MAX_JSON: usize = 64 * 1024;
/// Largest CSV upload accepted (spooled to a temporary file, not memory).
const MAX_CSV: u64 = 2 * 1024 * 1024 * 1024;

/// What the admin listener needs.
pub struct Admin {
    /// The gateway's config.
    pub config: Arc<Config>,
    /// The accounts (shared with the public listener).
    pub accounts: Arc<Registry>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Prometheus text for `/metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// The public listener's sessions (deactivating or deleting a user
    /// ends theirs at once, on every replica).
    pub sessions: Arc<crate::gateway::session::Sessions>,
}

impl Handler for Admin {
    fn call(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> HandlerFuture {
        Box::pin(async move { self.route(req).await })
    }

    fn limits(&self) -> crate::config::ConnLimits {
        self.config.listen.limits
    }
}

fn store_error(e: &StoreError) -> Response<Body> {
    tracing::error!(error = %e, "store error on the admin API");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        e.code(),
        "the user store is unavailable",
        None,
    )
}

/// Why an upload could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The body could not be read.
    #[error("the upload could not be read")]
    Unreadable,
    /// Over [`MAX_CSV`].
    #[error("the CSV is over 2 GiB")]
    TooLarge,
    /// The temporary file failed.
    #[error("cannot spool the upload: {0}")]
    File(String),
}

impl SpoolError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreadable => "body_unreadable",
            Self::TooLarge => "body_too_large",
            Self::File(_) => "spool_failed",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unreadable => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::File(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Spools an upload to an anonymous temporary file (bounded memory for any
/// size, at most [`MAX_CSV`]), rewound for reading.
pub async fn spool(mut body: Incoming) -> Result<std::fs::File, SpoolError> {
    let file = tempfile::tempfile().map_err(|e| SpoolError::File(e.to_string()))?;
    let mut spool = tokio::fs::File::from_std(file);
    let mut total: u64 = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let frame = frame.map_err(|_| SpoolError::Unreadable)?;
        if let Some(data) = frame.data_ref() {
            total += data.len() as u64;
            if total > MAX_CSV {
                return Err(SpoolError::TooLarge);
            }
            tokio::io::AsyncWriteExt::write_all(&mut spool, data)
                .await
                .map_err(|e| SpoolError::File(e.to_string()))?;
        }
    }
    let mut file = spool.into_std().await;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))
        .map_err(|e| SpoolError::File(e.to_string()))?;
    Ok(file)
}

/// A refused user operation as the API answers it.
fn op_error(e: &users::UserOpError) -> Response<Body> {
    if let users::UserOpError::Store(se) = e {
        return store_error(se);
    }
    json_error(e.status(), e.code(), &e.to_string(), e.field())
}

fn bad(code: &str, message: &str, field: &str) -> Response<Body> {
    json_error(StatusCode::BAD_REQUEST, code, message, Some(field))
}

/// Constant-time comparison of a presented token with the configured ones
/// (both hashed first, so lengths leak nothing either).
fn token_ok(presented: &str, tokens: &[String]) -> bool {
    let p = openssl::sha::sha256(presented.as_bytes());
    let mut ok = false;
    for t in tokens {
        let t = openssl::sha::sha256(t.as_bytes());
        ok |= openssl::memcmp::eq(&p, &t);
    }
    ok
}

/// Who is calling the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A global admin token (`[admin] tokens`): everything.
    Admin,
    /// An account token: its scope, on its account only.
    Account {
        /// The account.
        account: String,
        /// `users` or `scim`.
        scope: String,
    },
}

impl Principal {
    /// Who made a change, as audit events name them.
    pub fn audit_name(&self) -> String {
        match self {
            Self::Admin => "admin_token".into(),
            Self::Account { account, scope } => format!("{account}/{scope}_token"),
        }
    }
}

/// `path` is `base` or below it.
fn is_under(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|r| r.is_empty() || r.starts_with('/'))
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                String::from_utf8_lossy(&crate::saml::decode::percent_decode(s.as_bytes()))
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// Reads a JSON body (at most [`MAX_JSON`] bytes) into `T`; the error is
/// the response to send (400 `invalid_json`, 413).
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Box<Response<Body>>> {
    let body = read_body(req.into_body(), MAX_JSON)
        .await
        .map_err(Box::new)?;
    serde_json::from_slice(&body).map_err(|e| {
        Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &e.to_string(),
            None,
        ))
    })
}

impl Admin {
    async fn route(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => {
                if !self.accounts.loaded() {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: accounts_loading\n",
                    );
                }
                return match self.store.ping().await {
                    Ok(()) => text(StatusCode::OK, "ready\n"),
                    Err(e) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {}\n", e.code()),
                    ),
                };
            }
            (&Method::GET, "/metrics") => {
                let mut r = text(StatusCode::OK, (self.metrics)());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                return r;
            }
            _ => {}
        }
        if is_under(&path, crate::console::BASE) {
            return crate::console::handle(self, req).await;
        }
        if !path.starts_with("/api/") {
            return json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None);
        }
        if self.config.admin_tokens.is_empty() {
            return json_error(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "no admin token is configured ([admin] tokens or SAMLGATE_ADMIN_TOKENS)",
                None,
            );
        }
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .trim()
            .to_owned();
        let principal = match self.principal(&presented).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                let mut r = json_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid bearer token is required",
                    None,
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                return r;
            }
            Err(e) => return store_error(&e),
        };
        // An account token reaches its own account's users, nothing else.
        if let Principal::Account { account, scope } = &principal {
            let own_users = format!("/api/v2/accounts/{account}/users");
            let allowed = scope == "users"
                && (is_under(&path, &own_users)
                    || (account == DEFAULT_ID && is_under(&path, "/api/v2/users")));
            if !allowed {
                return json_error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this token may only manage its own account's users",
                    None,
                );
            }
        }
        if let Some(rest) = path.strip_prefix("/api/v2/accounts")
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return self.accounts(rest, req, &principal.audit_name()).await;
        }
        // `/api/v2/users...` is the default account's.
        if let Some(rest) = path.strip_prefix("/api/v2/users")
            && (rest.is_empty() || rest.starts_with('/'))
        {
            let Some(acct) = self.accounts.get(DEFAULT_ID) else {
                return json_error(
                    StatusCode::NOT_FOUND,
                    "account_not_found",
                    "this gateway has no default account ([idp] in the config); use /api/v2/accounts/{id}/users",
                    None,
                );
            };
            return self.users(&acct, rest, req, &principal.audit_name()).await;
        }
        json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None)
    }

    /// Who presents `token`: a global admin, an account's token, or nobody.
    pub(crate) async fn principal(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        if token.is_empty() {
            return Ok(None);
        }
        if token_ok(token, &self.config.admin_tokens) {
            return Ok(Some(Principal::Admin));
        }
        let hash = crate::provisioning::token_hash(token);
        Ok(self
            .store
            .token_by_hash(&hash)
            .await?
            .filter(|t| openssl::memcmp::eq(t.hash.as_bytes(), hash.as_bytes()))
            .map(|t| Principal::Account {
                account: t.account,
                scope: t.scope,
            }))
    }

    /// `{users path}{rest}` of `acct`: ssoCreate, list, import, get, patch,
    /// delete.
    async fn users(
        &self,
        acct: &Account,
        rest: &str,
        req: Request<Incoming>,
        by: &str,
    ) -> Response<Body> {
        let method = req.method().clone();
        match (method, rest) {
            (Method::POST, "" | "/") => self.create(acct, req, by).await,
            (Method::GET, "" | "/") => self.list(acct, req.uri().query()).await,
            (Method::POST, "/import") => self.import(acct, req).await,
            (m, p) if p.len() > 1 && p.starts_with('/') => {
                let raw = p.get(1..).unwrap_or_default();
                let email = crate::email::lookup_key(&String::from_utf8_lossy(
                    &crate::saml::decode::percent_decode(raw.as_bytes()),
                ));
                match m {
                    Method::GET => self.get(acct, &email).await,
                    Method::PATCH => self.patch(acct, &email, req, by).await,
                    Method::DELETE => self.delete(acct, &email, by).await,
                    _ => json_error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        "use GET, PATCH or DELETE",
                        None,
                    ),
                }
            }
            _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None),
        }
    }

    async fn create(&self, acct: &Account, req: Request<Incoming>, by: &str) -> Response<Body> {
        let parsed: body::CreateRequest = match read_json(req).await {
            Ok(p) => p,
            Err(r) => return *r,
        };
        if parsed.action != "ssoCreate" {
            return bad("unknown_action", "action must be \"ssoCreate\"", "action");
        }
        match self.create_user(acct, parsed, by).await {
            Ok(user) => json(StatusCode::CREATED, &user),
            Err(e) => op_error(&e),
        }
    }

    async fn get(&self, acct: &Account, email: &str) -> Response<Body> {
        match self.find_user(acct, email).await {
            Ok(u) => json(StatusCode::OK, &u),
            Err(e) => op_error(&e),
        }
    }

    async fn delete(&self, acct: &Account, email: &str, by: &str) -> Response<Body> {
        match self.delete_user(acct, email, by).await {
            Ok(()) => {
                let mut r = text(StatusCode::NO_CONTENT, "");
                r.headers_mut().remove(header::CONTENT_TYPE);
                r
            }
            Err(e) => op_error(&e),
        }
    }

    async fn patch(
        &self,
        acct: &Account,
        email: &str,
        req: Request<Incoming>,
        by: &str,
    ) -> Response<Body> {
        let p: body::PatchRequest = match read_json(req).await {
            Ok(p) => p,
            Err(r) => return *r,
        };
        match self.update_user(acct, email, p, by).await {
            Ok(user) => json(StatusCode::OK, &user),
            Err(e) => op_error(&e),
        }
    }

    async fn list(&self, acct: &Account, query: Option<&str>) -> Response<Body> {
        let q = query_pairs(query);
        let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        let limit = match get("limit").map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n)) if (1..=1000).contains(&n) => n,
            Some(_) => return bad("invalid_limit", "limit must be 1..1000", "limit"),
        };
        let status = match get("status") {
            None | Some("") => None,
            Some("active") => Some(UserStatus::Active),
            Some("deactivated") => Some(UserStatus::Deactivated),
            Some("pending_verification") => Some(UserStatus::PendingVerification),
            Some(_) => {
                return bad(
                    "invalid_status",
                    "status must be active, deactivated or pending_verification",
                    "status",
                );
            }
        };
        let cursor = get("cursor").filter(|c| !c.is_empty()).map(str::to_owned);
        match self.list_users(acct, cursor, limit, status).await {
            Ok(page) => json(
                StatusCode::OK,
                &serde_json::json!({ "users": page.users, "next_cursor": page.next_cursor }),
            ),
            Err(e) => store_error(&e),
        }
    }

    async fn import(&self, acct: &Account, req: Request<Incoming>) -> Response<Body> {
        let q = query_pairs(req.uri().query());
        let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        let truthy = |k: &str| matches!(get(k), Some("true" | "1" | "yes"));
        let Some(license) = get("license").and_then(License::parse) else {
            return bad(
                "invalid_license",
                "query parameter license=basic|licensed|on_prem is required",
                "license",
            );
        };
        let opts = ImportOptions {
            license,
            features: q
                .iter()
                .filter(|(k, _)| k == "feature")
                .map(|(_, v)| v.clone())
                .collect(),
            sso_only: truthy("sso"),
            dry_run: truthy("dry_run"),
            update_existing: truthy("update_existing"),
            ..Default::default()
        };
        let file = match spool(req.into_body()).await {
            Ok(f) => f,
            Err(e) => return json_error(e.status(), e.code(), &e.to_string(), None),
        };
        let reader = std::io::BufReader::with_capacity(256 * 1024, file);
        let owners = self.accounts.snapshot();
        match import(
            self.store.as_ref(),
            &self.config,
            acct,
            owners.as_ref(),
            reader,
            &opts,
            self.clock.now(),
            &mut |_| {},
        )
        .await
        {
            Ok(report) => {
                tracing::info!(target: "audit", event = "csv_import", account = %acct.id, created = report.created, updated = report.updated, skipped = report.skipped, errors = report.error_count, interrupted = report.interrupted.is_some());
                let status = if report.interrupted.is_some() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                json(status, &report)
            }
            Err(e) => json_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string(), None),
        }
    }
}
