//! `/api/v2/accounts...`: accounts (create or replace, merge-patch, get,
//! list, delete) and account tokens (create, list, revoke). Global admin
//! tokens only; an account's own `users` token reaches its users alone
//! (see [`super::Principal`]).

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, query_pairs, store_error};
use crate::account::doc::MAX_DOC_BYTES;
use crate::account::manage::{self, AccountError};
use crate::server::{Body, json, json_error, read_body, text};
use crate::store::TokenRecord;

/// Token scopes.
pub const SCOPES: &[&str] = &["users", "scim"];

/// Most tokens one account holds.
const MAX_TOKENS: usize = 50;

/// An account error as JSON; `invalid_account` lists every problem.
pub(super) fn account_error(e: &AccountError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    match e {
        AccountError::Invalid(problems) => json(
            status,
            &json!({
                "code": e.code(),
                "message": format!("the account document has {} problem(s)", problems.len()),
                "problems": problems.iter().map(|p| json!({"key": p.key, "message": p.message})).collect::<Vec<_>>(),
            }),
        ),
        AccountError::HostTaken { host, .. } => json(
            status,
            &json!({"code": e.code(), "message": format!("host {host} is already another account's"), "field": "hosts"}),
        ),
        AccountError::Store(s) => store_error(s),
        _ => json_error(status, e.code(), &e.to_string(), None),
    }
}

/// The document as answered: with its id, and its revision as an ETag.
fn document(status: StatusCode, id: &str, mut doc: Value, revision: u64) -> Response<Body> {
    if let Some(o) = doc.as_object_mut() {
        o.insert("id".into(), Value::String(id.to_owned()));
    }
    let mut r = json(status, &doc);
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{revision}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn no_content() -> Response<Body> {
    let mut r = text(StatusCode::NO_CONTENT, "");
    r.headers_mut().remove(header::CONTENT_TYPE);
    r
}

/// A JSON (or merge-patch JSON) body of at most [`MAX_DOC_BYTES`].
async fn read_doc(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let body = read_body(req.into_body(), MAX_DOC_BYTES).await?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        json_error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &e.to_string(),
            None,
        )
    })?;
    if !v.is_object() {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
            None,
        ));
    }
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    scope: String,
    #[serde(default)]
    name: String,
}

impl Admin {
    /// `/api/v2/accounts` and below (`rest` is what follows it).
    pub(super) async fn accounts(
        &self,
        rest: &str,
        req: Request<Incoming>,
        by: &str,
    ) -> Response<Body> {
        let q = query_pairs(req.uri().query());
        let flag = |k: &str| {
            q.iter()
                .any(|(a, v)| a == k && matches!(v.as_str(), "true" | "1" | "yes"))
        };
        let method = req.method().clone();
        let parts: Vec<&str> = rest.trim_start_matches('/').splitn(3, '/').collect();
        match (method, parts.as_slice()) {
            (Method::GET, [""]) => self.list_accounts(&q).await,
            (m, [id]) => {
                let dry_run = flag("dry_run");
                match m {
                    Method::PUT => match read_doc(req).await {
                        Ok(doc) => self.put_account(id, doc, dry_run).await,
                        Err(r) => r,
                    },
                    Method::PATCH => match read_doc(req).await {
                        Ok(p) => self.patch_account(id, &p, dry_run).await,
                        Err(r) => r,
                    },
                    Method::GET => match manage::get(self.store.as_ref(), id).await {
                        Ok((doc, rev)) => document(StatusCode::OK, id, doc, rev),
                        Err(e) => account_error(&e),
                    },
                    Method::DELETE => {
                        match manage::delete(
                            self.store.as_ref(),
                            Some(&self.accounts),
                            id,
                            flag("purge"),
                        )
                        .await
                        {
                            Ok(_) => no_content(),
                            Err(e) => account_error(&e),
                        }
                    }
                    _ => method_not_allowed("use PUT, PATCH, GET or DELETE"),
                }
            }
            (Method::POST, [id, "tokens"]) => self.create_token(id, req).await,
            (Method::GET, [id, "tokens"]) => self.list_tokens(id).await,
            (Method::DELETE, [id, "tokens", tid]) => match self.store.delete_token(id, tid).await {
                Ok(true) => {
                    tracing::info!(target: "audit", event = "token_revoked", account = %id, token_id = %tid);
                    no_content()
                }
                Ok(false) => json_error(
                    StatusCode::NOT_FOUND,
                    "token_not_found",
                    "no such token",
                    None,
                ),
                Err(e) => store_error(&e),
            },
            (_, [id, "users", ..]) => {
                let Some(acct) = self.accounts.get(id) else {
                    return json_error(
                        StatusCode::NOT_FOUND,
                        "account_not_found",
                        "no such account",
                        None,
                    );
                };
                let users_rest = rest
                    .trim_start_matches('/')
                    .get(id.len() + "/users".len()..)
                    .unwrap_or("");
                self.users(&acct, users_rest, req, by).await
            }
            _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None),
        }
    }

    async fn put_account(&self, id: &str, doc: Value, dry_run: bool) -> Response<Body> {
        match manage::put(
            self.store.as_ref(),
            &self.config,
            Some(&self.accounts),
            id,
            doc,
            dry_run,
        )
        .await
        {
            Ok(w) if dry_run => json(
                StatusCode::OK,
                &json!({"dry_run": true, "created": w.created, "problems": []}),
            ),
            Ok(w) => document(
                if w.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                id,
                w.doc,
                w.revision,
            ),
            Err(e) => account_error(&e),
        }
    }

    async fn patch_account(&self, id: &str, patch: &Value, dry_run: bool) -> Response<Body> {
        match manage::patch(
            self.store.as_ref(),
            &self.config,
            Some(&self.accounts),
            id,
            patch,
            dry_run,
        )
        .await
        {
            Ok(_) if dry_run => json(
                StatusCode::OK,
                &json!({"dry_run": true, "created": false, "problems": []}),
            ),
            Ok(w) => document(StatusCode::OK, id, w.doc, w.revision),
            Err(e) => account_error(&e),
        }
    }

    async fn list_accounts(&self, q: &[(String, String)]) -> Response<Body> {
        let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        let limit = match get("limit").map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n)) if (1..=1000).contains(&n) => n,
            Some(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_limit",
                    "limit must be 1..1000",
                    Some("limit"),
                );
            }
        };
        let cursor = get("cursor").filter(|c| !c.is_empty());
        match manage::list(self.store.as_ref(), cursor, limit).await {
            Ok(page) => {
                let next = (page.len() == limit)
                    .then(|| page.last().map(|(id, _, _)| id.clone()))
                    .flatten();
                let accounts: Vec<Value> = page
                    .into_iter()
                    .map(|(id, mut doc, rev)| {
                        if let Some(o) = doc.as_object_mut() {
                            o.insert("id".into(), Value::String(id));
                            o.insert("revision".into(), Value::from(rev));
                        }
                        doc
                    })
                    .collect();
                json(
                    StatusCode::OK,
                    &json!({"accounts": accounts, "next_cursor": next}),
                )
            }
            Err(e) => account_error(&e),
        }
    }

    async fn create_token(&self, id: &str, req: Request<Incoming>) -> Response<Body> {
        if self.accounts.get(id).is_none() {
            return json_error(
                StatusCode::NOT_FOUND,
                "account_not_found",
                "no such account",
                None,
            );
        }
        let t: NewToken = match super::read_json(req).await {
            Ok(t) => t,
            Err(r) => return *r,
        };
        if !SCOPES.contains(&t.scope.as_str()) {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "scope must be \"users\" or \"scim\"",
                Some("scope"),
            );
        }
        if t.name.len() > 200 || t.name.chars().any(char::is_control) {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_name",
                "name: at most 200 characters, no control characters",
                Some("name"),
            );
        }
        match self.store.list_tokens(id).await {
            Ok(list) if list.len() >= MAX_TOKENS => {
                return json_error(
                    StatusCode::CONFLICT,
                    "too_many_tokens",
                    &format!("an account holds at most {MAX_TOKENS} tokens: revoke one first"),
                    None,
                );
            }
            Ok(_) => {}
            Err(e) => return store_error(&e),
        }
        let secret = format!("sgt_{}", random_b64(32));
        let record = TokenRecord {
            id: format!("tok_{}", random_hex(8)),
            account: id.to_owned(),
            scope: t.scope,
            name: t.name,
            hash: crate::provisioning::token_hash(&secret),
            created_at: self.clock.now().to_rfc3339(),
        };
        if let Err(e) = self.store.put_token(&record).await {
            return store_error(&e);
        }
        tracing::info!(target: "audit", event = "token_created", account = %id, token_id = %record.id, scope = %record.scope);
        json(
            StatusCode::CREATED,
            &json!({"id": record.id, "token": secret, "scope": record.scope, "name": record.name, "created_at": record.created_at}),
        )
    }

    async fn list_tokens(&self, id: &str) -> Response<Body> {
        match self.store.list_tokens(id).await {
            Ok(list) => json(
                StatusCode::OK,
                &json!({"tokens": list.iter().map(|t| json!({"id": t.id, "scope": t.scope, "name": t.name, "created_at": t.created_at})).collect::<Vec<_>>()}),
            ),
            Err(e) => store_error(&e),
        }
    }
}

fn method_not_allowed(message: &str) -> Response<Body> {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
        None,
    )
}

fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::Rng::fill(&mut rand::rng(), b.as_mut_slice());
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::Rng::fill(&mut rand::rng(), b.as_mut_slice());
    b.iter().map(|x| format!("{x:02x}")).collect()
}
