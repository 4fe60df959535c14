//! The console: server-rendered pages where operators and account admins
//! do what the admin API does, by the steps they know ("Single Sign-On →
//! Edit → Provision User: Prior to Sign-In → Save", "User Management").
//!
//! Served at `/console/` on the admin listener, for the gateway's
//! operators: they sign in with an admin token (or an account's `users`
//! token, which limits them to that account), exchanged for a console
//! cookie (`samlgate_console`: random, `HttpOnly`, `SameSite=Strict`, path
//! `/console`, 30 minutes, kept in the store so every replica knows it),
//! separate from the session cookie.
//!
//! Security: every form carries the console session's CSRF token (the
//! sign-in form a double-submitted one), compared in constant time; a POST
//! whose `Origin` names another host, or whose `Sec-Fetch-Site` says
//! `cross-site`, is refused; pages are sent with a CSP that allows no
//! inline script or style, `frame-ancestors 'none'` and `no-store`; no
//! secret is rendered; every change is an audit event naming who made it
//! (`by = console:{who}`).

mod activity;
pub mod form;
mod import;
mod mapping;
mod sso;
mod users;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use maud::{DOCTYPE, Markup, html};
use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::admin::{Admin, Principal};
use crate::provisioning::token_hash;
use crate::server::{Body, full};
use crate::store::{Ephemeral, StoreError};
use form::Form;

/// Where the console lives (on the admin listener).
pub const BASE: &str = "/console";
/// The console cookie.
pub const COOKIE: &str = "samlgate_console";
/// The sign-in form's double-submitted CSRF cookie.
const LOGIN_COOKIE: &str = "samlgate_console_login";
/// How long a console sign-in lasts.
pub const TTL: Duration = Duration::from_secs(30 * 60);
/// Largest form body (a pasted or uploaded metadata file).
pub const MAX_FORM: usize = 2 * 1024 * 1024;

const CSS: &str = include_str!("console.css");
const IMPORT_JS: &str = include_str!("import.js");

/// Who is signed in to the console (as stored, by the cookie's hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signed {
    /// For audit events and the page header (`operator`, or the account
    /// token's account).
    pub who: String,
    /// The one account they may see (none: every account).
    pub account: Option<String>,
    /// The session's CSRF token.
    pub csrf: String,
    /// Unix seconds: the end of the sign-in.
    pub expires: i64,
}

/// A request's context once signed in.
pub struct Ctx<'a> {
    admin: &'a Arc<Admin>,
    signed: Signed,
}

impl Ctx<'_> {
    /// `console:{who}`, as audit events name the console's changes.
    fn by(&self) -> String {
        format!("console:{}", self.signed.who)
    }

    /// Account `id`, when this sign-in may see it (another account's is
    /// "not found", as if it did not exist).
    fn account(&self, id: &str) -> Option<Arc<Account>> {
        if self.signed.account.as_deref().is_some_and(|a| a != id) {
            return None;
        }
        self.admin.accounts.get(id)
    }
}

fn random_token() -> String {
    crate::gateway::session::new_session_id()
}

/// An HTML page with the console's security headers.
pub fn respond(status: StatusCode, page: Markup) -> Response<Body> {
    let mut r = Response::new(full(page.into_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

fn secure_headers(h: &mut http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: with `no-referrer` a browser sends
    // `Origin: null` on the console's own form posts, which the
    // cross-site check refuses.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
}

/// 303 to `location` (a console path).
pub fn redirect(location: &str) -> Response<Body> {
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(r.headers_mut());
    r
}

/// The page frame: header with the signed-in user, navigation for
/// `account` when the page is about one.
fn page(title: &str, signed: Option<&Signed>, account: Option<&Account>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · samlgate console" }
                link rel="stylesheet" href={ (BASE) "/static/console.css" };
            }
            body {
                header.top {
                    a.brand href={ (BASE) "/" } { "samlgate console" }
                    @if let Some(s) = signed {
                        span.who { "Signed in as " strong { (s.who) } }
                        form.inline method="post" action={ (BASE) "/logout" } {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if let Some(a) = account {
                    nav aria-label="Account" {
                        @if signed.is_some_and(|s| s.account.is_none()) {
                            a href={ (BASE) "/accounts" } { "All accounts" }
                            " › "
                        }
                        @if a.name.is_empty() { strong { (a.id) } } @else { strong { (a.name) " (" (a.id) ")" } }
                        ul {
                            li { a href={ (BASE) "/a/" (a.id) "/sso" } { "Single Sign-On" } }
                            li { a href={ (BASE) "/a/" (a.id) "/mapping" } { "Attribute mapping" } }
                            li { a href={ (BASE) "/a/" (a.id) "/users" } { "User Management" } }
                            li { a href={ (BASE) "/a/" (a.id) "/import" } { "Import" } }
                            li { a href={ (BASE) "/a/" (a.id) "/activity" } { "Sign-in activity" } }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An error page: the code, a plain sentence.
fn error_page(
    status: StatusCode,
    code: &str,
    message: &str,
    signed: Option<&Signed>,
) -> Response<Body> {
    respond(
        status,
        page(
            "Something went wrong",
            signed,
            None,
            html! {
                p.error role="alert" { (message) }
                p.muted { "Code: " code { (code) } }
                p { a href={ (BASE) "/" } { "Back to the console" } }
            },
        ),
    )
}

/// The config file's account is changed in the config file.
fn config_file_account(signed: &Signed) -> Response<Body> {
    error_page(
        StatusCode::CONFLICT,
        "config_file_account",
        "This account comes from the config file: change it there.",
        Some(signed),
    )
}

fn store_error_page(e: &StoreError, signed: Option<&Signed>) -> Response<Body> {
    tracing::error!(error = %e, "store error in the console");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        e.code(),
        "The user store is unavailable; try again in a minute.",
        signed,
    )
}

fn not_found(signed: Option<&Signed>) -> Response<Body> {
    error_page(
        StatusCode::NOT_FOUND,
        "not_found",
        "There is no such page here.",
        signed,
    )
}

fn cookie_value<'r>(req: &'r Request<Incoming>, name: &str) -> Option<&'r str> {
    crate::gateway::find_cookie(
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        name,
    )
}

fn set_cookie(r: &mut Response<Body>, name: &str, value: &str, max_age: u64, secure: bool) {
    let c = format!(
        "{name}={value}; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Equal tokens, in constant time (both non-empty).
fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && openssl::memcmp::eq(a.as_bytes(), b.as_bytes())
}

/// A POST from elsewhere: the browser says `Sec-Fetch-Site` other than
/// `same-origin` or `none` (`same-site` too: an account host on the same
/// domain proxies upstream pages), or its `Origin` names another host than
/// the request's (or is `null`, as from a sandboxed frame).
fn cross_site(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    if h.get("sec-fetch-site").is_some_and(|v| {
        !(v.as_bytes().eq_ignore_ascii_case(b"same-origin")
            || v.as_bytes().eq_ignore_ascii_case(b"none"))
    }) {
        return true;
    }
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    !origin_host.eq_ignore_ascii_case(host)
}

/// Reads the request's form (at most [`MAX_FORM`] bytes).
async fn read_form(req: Request<Incoming>) -> Result<Form, Response<Body>> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = crate::server::read_body(req.into_body(), MAX_FORM)
        .await
        .map_err(|r| {
            let status = r.status();
            error_page(status, "too_large", "The form is too large.", None)
        })?;
    Form::parse(&ct, &body).map_err(|e| {
        error_page(
            StatusCode::BAD_REQUEST,
            "invalid_form",
            &e.to_string(),
            None,
        )
    })
}

/// Who the request's console cookie names, if anyone (still valid).
async fn signed_in(admin: &Admin, req: &Request<Incoming>) -> Result<Option<Signed>, StoreError> {
    let Some(id) = cookie_value(req, COOKIE).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let Some(raw) = admin
        .store
        .get_ephemeral(Ephemeral::Console, &token_hash(id))
        .await?
    else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Signed>(&raw)
        .ok()
        .filter(|s| s.expires > admin.clock.now().timestamp()))
}

/// The query string's fields.
pub fn query(req_query: Option<&str>) -> Form {
    form::urlencoded(req_query.unwrap_or("").as_bytes()).unwrap_or_default()
}

/// Which door a request came through.
pub enum Door<'a> {
    /// The admin listener: operators, signed in with a token.
    Operators,
    /// An account's host: that account's admins, signed in through its
    /// SSO (a mapping rule gave them `role = "admin"`).
    Account {
        /// The account the host names.
        acct: &'a Arc<Account>,
        /// The request's live SSO session on it, if any.
        session: Option<Arc<crate::gateway::session::SessionData>>,
        /// Served over TLS (the console cookie is then `Secure`).
        tls: bool,
        /// The account's SAML login path (`/saml/login`).
        login: String,
        /// The account's SAML logout path (where signing out goes).
        logout: String,
    },
}

/// Handles `/console` and below on the admin listener.
pub(crate) async fn handle(admin: &Arc<Admin>, req: Request<Incoming>) -> Response<Body> {
    serve(admin, req, Door::Operators).await
}

/// Mints a console sign-in for `who` (limited to `account`, if given).
async fn mint(
    admin: &Admin,
    who: String,
    account: Option<String>,
) -> Result<(String, Signed), StoreError> {
    let signed = Signed {
        who,
        account,
        csrf: random_token(),
        expires: admin.clock.now().timestamp() + i64::try_from(TTL.as_secs()).unwrap_or(1800),
    };
    let id = random_token();
    let json = serde_json::to_vec(&signed).unwrap_or_default();
    admin
        .store
        .put_ephemeral(Ephemeral::Console, &token_hash(&id), &json, TTL)
        .await?;
    tracing::info!(target: "audit", event = "console_login", by = %format!("console:{}", signed.who), account = ?signed.account);
    Ok((id, signed))
}

/// Handles `/console` and below, for `door`.
pub(crate) async fn serve(
    admin: &Arc<Admin>,
    req: Request<Incoming>,
    door: Door<'_>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix(BASE).unwrap_or("").to_owned();
    let method = req.method().clone();
    let asset = match rest.as_str() {
        "/static/console.css" => Some((CSS, "text/css; charset=utf-8")),
        "/static/import.js" => Some((IMPORT_JS, "text/javascript; charset=utf-8")),
        _ => None,
    };
    if let Some((text, ct)) = asset {
        let mut r = Response::new(full(text));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        r.headers_mut().insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=3600"),
        );
        return r;
    }
    if method == Method::POST && cross_site(&req) {
        tracing::warn!(target: "audit", event = "console_refused", reason = "cross_site", path = %path);
        return error_page(
            StatusCode::FORBIDDEN,
            "cross_site",
            "This form was sent from another site.",
            None,
        );
    }
    let mut signed = match signed_in(admin, &req).await {
        Ok(s) => s,
        Err(e) => return store_error_page(&e, None),
    };
    let q = query(req.uri().query());
    // The account door: a console sign-in lasts only while its holder's
    // SSO session lives and makes them an admin of this account; without
    // one, that session mints it. The console cookie is SameSite=Strict:
    // right after the IdP's cross-site POST the browser does not send it,
    // so a minted sign-in's page is served at once with the new cookie
    // (a redirect would arrive without it and mint again).
    let mut minted: Option<String> = None;
    let mut secure = false;
    if let Door::Account {
        acct,
        session,
        tls,
        login,
        ..
    } = &door
    {
        secure = *tls;
        let live = session
            .as_ref()
            .filter(|s| s.admin && s.account == acct.id && s.user.account == acct.id);
        signed = signed.filter(|s| {
            s.account.as_deref() == Some(acct.id.as_str()) && live.is_some_and(|l| l.email == s.who)
        });
        match (&method, rest.as_str()) {
            (&Method::GET, "" | "/") if live.is_some() => {
                return redirect(&format!("{BASE}/a/{}/sso", acct.id));
            }
            (_, "/login" | "/accounts") => return not_found(signed.as_ref()),
            _ => {}
        }
        if signed.is_none() {
            match live {
                Some(l) if method == Method::GET => {
                    match mint(admin, l.email.clone(), Some(acct.id.clone())).await {
                        Ok((id, s)) => {
                            minted = Some(id);
                            signed = Some(s);
                        }
                        Err(e) => return store_error_page(&e, None),
                    }
                }
                Some(_) => {
                    return error_page(
                        StatusCode::UNAUTHORIZED,
                        "signed_out",
                        "Your console sign-in has ended; reload the page.",
                        None,
                    );
                }
                None if session.is_some() => {
                    tracing::warn!(target: "audit", event = "console_refused", reason = "not_console_admin", account = %acct.id,
                        email = session.as_ref().map_or("", |s| s.email.as_str()));
                    return error_page(
                        StatusCode::FORBIDDEN,
                        "not_console_admin",
                        "Your sign-in does not make you an administrator of this account (a mapping rule gives role = \"admin\").",
                        None,
                    );
                }
                None if method == Method::GET => {
                    let back = if rest.is_empty() || rest == "/" {
                        format!("{BASE}/")
                    } else {
                        path.clone()
                    };
                    return redirect(&format!(
                        "{login}?return_to={}",
                        crate::gateway::url_encode(&back)
                    ));
                }
                None => {
                    return error_page(
                        StatusCode::UNAUTHORIZED,
                        "signed_out",
                        "Sign in again.",
                        None,
                    );
                }
            }
        }
    }
    let mut r = route(admin, req, &door, signed, &rest, &q).await;
    if let Some(id) = minted {
        set_cookie(&mut r, COOKIE, &id, TTL.as_secs(), secure);
    }
    r
}

async fn route(
    admin: &Arc<Admin>,
    req: Request<Incoming>,
    door: &Door<'_>,
    signed: Option<Signed>,
    rest: &str,
    q: &Form,
) -> Response<Body> {
    let method = req.method().clone();
    match (&method, rest, signed) {
        (&Method::GET, "" | "/", None) => login_page(None),
        (&Method::GET, "" | "/", Some(s)) => match &s.account {
            Some(a) => redirect(&format!("{BASE}/a/{a}/sso")),
            None => redirect(&format!("{BASE}/accounts")),
        },
        (&Method::POST, "/login", _) => login(admin, req).await,
        (&Method::GET, _, None) => redirect(&format!("{BASE}/")),
        (_, _, None) => error_page(
            StatusCode::UNAUTHORIZED,
            "signed_out",
            "Your console sign-in has ended; sign in again.",
            None,
        ),
        (&Method::GET, _, Some(signed)) => get(&Ctx { admin, signed }, rest, q).await,
        (&Method::POST, _, Some(signed)) => {
            let ctx = Ctx { admin, signed };
            // The streamed import: the file is the body, the CSRF token a
            // header.
            if let Some((id, "import/upload")) = account_path(rest) {
                let token = req
                    .headers()
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !same_token(token, &ctx.signed.csrf) {
                    tracing::warn!(target: "audit", event = "console_refused", reason = "csrf", by = %ctx.by(), path = %rest);
                    return error_page(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "This upload did not come from the console; reload the page and try again.",
                        Some(&ctx.signed),
                    );
                }
                let Some(acct) = ctx.account(id) else {
                    return not_found(Some(&ctx.signed));
                };
                return import::upload(&ctx, &acct, q, req.into_body()).await;
            }
            let cookie = cookie_value(&req, COOKIE).unwrap_or("").to_owned();
            let form = match read_form(req).await {
                Ok(f) => f,
                Err(r) => return r,
            };
            if !same_token(form.text("csrf"), &ctx.signed.csrf) {
                tracing::warn!(target: "audit", event = "console_refused", reason = "csrf", by = %ctx.by(), path = %rest);
                return error_page(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "This form has expired or did not come from the console; go back, reload the page and try again.",
                    Some(&ctx.signed),
                );
            }
            if rest == "/logout" {
                // An account's admin signs out of its SSO too.
                let next = match door {
                    Door::Account { logout, .. } => logout.clone(),
                    Door::Operators => format!("{BASE}/"),
                };
                return logout_to(&ctx, &cookie, &next).await;
            }
            post(&ctx, rest, &form).await
        }
        (_, _, Some(signed)) => error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Use the console's links and forms.",
            Some(&signed),
        ),
    }
}

/// `/a/{id}/{page...}`: the account id and the rest.
fn account_path(rest: &str) -> Option<(&str, &str)> {
    let r = rest.strip_prefix("/a/")?;
    Some(r.split_once('/').unwrap_or((r, "")))
}

async fn get(ctx: &Ctx<'_>, rest: &str, q: &Form) -> Response<Body> {
    if rest == "/accounts" {
        return accounts_page(ctx);
    }
    let Some((id, page)) = account_path(rest) else {
        return not_found(Some(&ctx.signed));
    };
    let Some(acct) = ctx.account(id) else {
        return not_found(Some(&ctx.signed));
    };
    match page {
        "sso" => sso::page_of(ctx, &acct, q).await,
        "sp-metadata" => {
            let mut r = crate::gateway::sp_metadata(&ctx.admin.config, &acct);
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"{}-sp-metadata.xml\"",
                acct.id
            )) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        "users" => users::list(ctx, &acct, q).await,
        "activity" => activity::page_of(ctx, &acct, q).await,
        "mapping" => mapping::page_of(ctx, &acct, q).await,
        "import" => import::page_of(ctx, &acct),
        p => match (p.strip_prefix("users/"), p.strip_prefix("import/")) {
            (Some(email), _) => users::detail(ctx, &acct, &decode_segment(email), q).await,
            (_, Some(job)) => import::job_page(ctx, &acct, job).await,
            _ => not_found(Some(&ctx.signed)),
        },
    }
}

async fn post(ctx: &Ctx<'_>, rest: &str, form: &Form) -> Response<Body> {
    let Some((id, page)) = account_path(rest) else {
        return not_found(Some(&ctx.signed));
    };
    let Some(acct) = ctx.account(id) else {
        return not_found(Some(&ctx.signed));
    };
    match page {
        "sso" => sso::save(ctx, &acct, form).await,
        "users" => users::create(ctx, &acct, form).await,
        "mapping" => mapping::act(ctx, &acct, form).await,
        "import" => import::from_form(ctx, &acct, form).await,
        p => match p.strip_prefix("users/") {
            Some(email) => users::act(ctx, &acct, &decode_segment(email), form).await,
            None => not_found(Some(&ctx.signed)),
        },
    }
}

/// A percent-encoded path segment (an email in a user's URL).
fn decode_segment(s: &str) -> String {
    crate::email::lookup_key(&String::from_utf8_lossy(
        &crate::saml::decode::percent_decode(s.as_bytes()),
    ))
}

/// An email as a path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'-' | b'_' | b'+') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn login_page(problem: Option<&str>) -> Response<Body> {
    let token = random_token();
    let status = if problem.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let mut r = respond(
        status,
        page(
            "Sign in",
            None,
            None,
            html! {
                @if let Some(p) = problem {
                    p.error role="alert" { (p) }
                }
                form method="post" action={ (BASE) "/login" } {
                    input type="hidden" name="csrf" value=(token);
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="off" required;
                    p.muted { "An admin token ([admin] tokens) sees every account; an account's users token sees that account." }
                    button type="submit" { "Sign in" }
                }
            },
        ),
    );
    set_cookie(&mut r, LOGIN_COOKIE, &token, 900, false);
    r
}

async fn login(admin: &Admin, req: Request<Incoming>) -> Response<Body> {
    let expected = cookie_value(&req, LOGIN_COOKIE).unwrap_or("").to_owned();
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if !same_token(form.text("csrf"), &expected) {
        tracing::warn!(target: "audit", event = "console_refused", reason = "csrf", path = "/console/login");
        return login_page(Some(
            "The sign-in form expired or did not come from this console; try again.",
        ));
    }
    let principal = match admin.principal(form.text("token")).await {
        Ok(p) => p,
        Err(e) => return store_error_page(&e, None),
    };
    let (who, account) = match principal {
        Some(Principal::Admin) => ("operator".to_owned(), None),
        Some(Principal::Account { account, scope }) if scope == "users" => {
            (format!("{account} admin"), Some(account))
        }
        _ => {
            tracing::warn!(target: "audit", event = "console_login_failed");
            return login_page(Some("That token is not valid here."));
        }
    };
    let (id, _) = match mint(admin, who, account).await {
        Ok(m) => m,
        Err(e) => return store_error_page(&e, None),
    };
    let mut r = redirect(&format!("{BASE}/"));
    set_cookie(&mut r, COOKIE, &id, TTL.as_secs(), false);
    set_cookie(&mut r, LOGIN_COOKIE, "", 0, false);
    r
}

async fn logout_to(ctx: &Ctx<'_>, cookie: &str, next: &str) -> Response<Body> {
    if let Err(e) = ctx
        .admin
        .store
        .delete_ephemeral(Ephemeral::Console, &token_hash(cookie))
        .await
    {
        return store_error_page(&e, Some(&ctx.signed));
    }
    tracing::info!(target: "audit", event = "console_logout", by = %ctx.by());
    let mut r = redirect(next);
    set_cookie(&mut r, COOKIE, "", 0, false);
    r
}

fn mode_name(a: &Account) -> &'static str {
    match a.provisioning.mode {
        crate::account::ProvisioningMode::Jit => "Just-in-Time",
        crate::account::ProvisioningMode::PriorToSignIn => "Prior to Sign-In",
    }
}

fn accounts_page(ctx: &Ctx<'_>) -> Response<Body> {
    if ctx.signed.account.is_some() {
        return not_found(Some(&ctx.signed));
    }
    let snap = ctx.admin.accounts.snapshot();
    let mut all: Vec<&Arc<Account>> = snap
        .default_account()
        .into_iter()
        .chain(snap.stored())
        .collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    respond(
        StatusCode::OK,
        page(
            "Accounts",
            Some(&ctx.signed),
            None,
            html! {
                @if all.is_empty() {
                    p { "No accounts yet. Create one with the admin API (PUT /api/v2/accounts/{id})." }
                } @else {
                    table {
                        thead { tr { th { "Account" } th { "Hosts" } th { "Status" } th { "Provision User" } th { "Pages" } } }
                        tbody {
                            @for a in &all {
                                tr {
                                    td { strong { (if a.name.is_empty() { &a.id } else { &a.name }) } br; span.muted { (a.id) } }
                                    td { (a.hosts.join(", ")) }
                                    td { (if a.is_active() { "active" } else { "suspended" }) }
                                    td { (mode_name(a)) }
                                    td {
                                        a href={ (BASE) "/a/" (a.id) "/sso" } { "Single Sign-On" }
                                        " · "
                                        a href={ (BASE) "/a/" (a.id) "/users" } { "User Management" }
                                    }
                                }
                            }
                        }
                    }
                }
            },
        ),
    )
}
