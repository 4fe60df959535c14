//! The admin API over a real socket: auth, ssoCreate, user management,
//! pagination, CSV upload, health endpoints.

use crate::DefaultAccount;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use samlgate::admin::Admin;
use samlgate::clock::SystemClock;
use samlgate::config::{Config, ProvisioningMode};
use samlgate::store::Store;
use samlgate::store::embedded::EmbeddedStore;

use super::http_support::request;
use super::support::config;

pub(super) const TOKEN: &str = "test-admin-token-0123456789";

pub(super) struct Running {
    pub(super) base: String,
    pub(super) store: Arc<dyn Store>,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

pub(super) async fn start(mode: ProvisioningMode, tokens: &[&str]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: Config = config("config.toml");
    cfg.acct_mut().provisioning.mode = mode;
    cfg.provisioning.outbox_dir = dir.path().join("outbox");
    cfg.admin_tokens = tokens.iter().map(|s| s.to_string()).collect();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("s.db"), Arc::new(SystemClock)).unwrap());
    let accounts = Arc::new(samlgate::account::registry::Registry::new(
        cfg.account.clone(),
    ));
    let admin = Arc::new(Admin {
        config: Arc::new(cfg),
        accounts,
        store: Arc::clone(&store),
        clock: Arc::new(SystemClock),
        metrics: Arc::new(|| "# metrics\n".to_string()),
        sessions: Arc::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(samlgate::server::serve(
        listener,
        admin,
        rx,
        Duration::from_secs(1),
    ));
    Running {
        base,
        store,
        _stop: tx,
        _dir: dir,
    }
}

fn auth() -> Vec<(&'static str, &'static str)> {
    vec![
        ("authorization", "Bearer test-admin-token-0123456789"),
        ("content-type", "application/json"),
    ]
}

pub(super) async fn create(r: &Running, body: &str) -> super::http_support::Reply {
    request(
        Method::POST,
        &format!("{}/api/v2/users", r.base),
        &auth(),
        body.to_owned(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_need_no_token() {
    let r = start(ProvisioningMode::PriorToSignIn, &[]).await;
    assert_eq!(
        request(Method::GET, &format!("{}/healthz", r.base), &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        request(Method::GET, &format!("{}/readyz", r.base), &[], "")
            .await
            .status,
        200
    );
    let m = request(Method::GET, &format!("{}/metrics", r.base), &[], "").await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_every_api_call_is_refused() {
    let r = start(ProvisioningMode::PriorToSignIn, &[]).await;
    let reply = create(
        &r,
        r#"{"action":"ssoCreate","user_info":{"email":"a@example.com","type":1}}"#,
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["code"], "admin_disabled");
    assert_eq!(r.store.get_user("a@example.com").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_401() {
    let r = start(ProvisioningMode::PriorToSignIn, &[TOKEN]).await;
    for h in [
        vec![],
        vec![("authorization", "Bearer wrong-token-xxxxxxxxxxxx")],
        vec![("authorization", TOKEN)],
    ] {
        let reply = request(Method::GET, &format!("{}/api/v2/users", r.base), &h, "").await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json()["code"], "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_create_contract() {
    let r = start(ProvisioningMode::PriorToSignIn, &[TOKEN]).await;
    let reply = create(
        &r,
        r#"{"action":"ssoCreate","user_info":{"email":"Jane.Doe@Example.com","type":2,"first_name":"Jane","last_name":"Doe"}}"#,
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let u = reply.json();
    assert_eq!(u["email"], "jane.doe@example.com");
    assert_eq!(u["license"], "licensed");
    assert_eq!(u["sso_only"], true);
    assert_eq!(u["source"], "api");
    assert_eq!(u["vanity"], "jane.doe");
    assert_eq!(u["status"], "active");

    let dup = create(
        &r,
        r#"{"action":"ssoCreate","user_info":{"email":"jane.doe@example.com","type":1}}"#,
    )
    .await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.json()["code"], "user_exists");

    for (body, field) in [
        (
            r#"{"action":"ssoCreate","user_info":{"email":"bad","type":1}}"#,
            "user_info.email",
        ),
        (
            r#"{"action":"ssoCreate","user_info":{"type":1}}"#,
            "user_info.email",
        ),
        (
            r#"{"action":"ssoCreate","user_info":{"email":"x@example.com","type":7}}"#,
            "user_info.type",
        ),
        (
            r#"{"action":"ssoCreate","user_info":{"email":"x@example.com"}}"#,
            "user_info.type",
        ),
        (
            r#"{"action":"create","user_info":{"email":"x@example.com","type":1}}"#,
            "action",
        ),
    ] {
        let reply = create(&r, body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.json()["field"], field, "{body}");
    }
    let reply = create(&r, "{not json").await;
    assert_eq!(
        (reply.status, reply.json()["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let long = format!(
        r#"{{"action":"ssoCreate","user_info":{{"email":"x@example.com","type":1,"first_name":"{}"}}}}"#,
        "a".repeat(65)
    );
    assert_eq!(
        create(&r, &long).await.json()["field"],
        "user_info.first_name"
    );
    // outside the associated domains: created pending verification
    let reply = create(
        &r,
        r#"{"action":"ssoCreate","user_info":{"email":"ext@partner.org","type":1}}"#,
    )
    .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["status"], "pending_verification");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_create_is_refused_in_jit_mode() {
    let r = start(ProvisioningMode::Jit, &[TOKEN]).await;
    let reply = create(
        &r,
        r#"{"action":"ssoCreate","user_info":{"email":"a@example.com","type":1}}"#,
    )
    .await;
    assert_eq!(reply.status, 409);
    assert_eq!(reply.json()["code"], "sso_create_disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_patch_delete_and_paginate() {
    let r = start(ProvisioningMode::PriorToSignIn, &[TOKEN]).await;
    for i in 0..7 {
        let body = format!(
            r#"{{"action":"ssoCreate","user_info":{{"email":"u{i}@example.com","type":1}}}}"#
        );
        assert_eq!(create(&r, &body).await.status, 201);
    }
    let url = |p: &str| format!("{}{p}", r.base);
    let g = request(
        Method::GET,
        &url("/api/v2/users/U3%40example.com"),
        &auth(),
        "",
    )
    .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["email"], "u3@example.com");
    let p = request(
        Method::PATCH,
        &url("/api/v2/users/u3@example.com"),
        &auth(),
        r#"{"status":"deactivated","department":"Ops"}"#,
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.text());
    assert_eq!(p.json()["status"], "deactivated");
    let p = request(
        Method::PATCH,
        &url("/api/v2/users/u3@example.com"),
        &auth(),
        r#"{"status":"gone"}"#,
    )
    .await;
    assert_eq!(
        (p.status, p.json()["field"].as_str()),
        (400, Some("status"))
    );
    let p = request(
        Method::PATCH,
        &url("/api/v2/users/u3@example.com"),
        &auth(),
        r#"{"email":"x@y.z"}"#,
    )
    .await;
    assert_eq!(p.status, 400, "the email is never patched");

    // pagination with a cursor, and a status filter
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = request(
            Method::GET,
            &url(&format!("/api/v2/users?limit=3&cursor={cursor}")),
            &auth(),
            "",
        )
        .await
        .json();
        for u in page["users"].as_array().unwrap() {
            seen.push(u["email"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let deact = request(
        Method::GET,
        &url("/api/v2/users?status=deactivated"),
        &auth(),
        "",
    )
    .await
    .json();
    assert_eq!(deact["users"].as_array().unwrap().len(), 1);

    let d = request(
        Method::DELETE,
        &url("/api/v2/users/u3@example.com"),
        &auth(),
        "",
    )
    .await;
    assert_eq!(d.status, 204);
    let d = request(
        Method::DELETE,
        &url("/api/v2/users/u3@example.com"),
        &auth(),
        "",
    )
    .await;
    assert_eq!(
        (d.status, d.json()["code"].as_str()),
        (404, Some("user_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_upload_imports_and_reports() {
    let r = start(ProvisioningMode::PriorToSignIn, &[TOKEN]).await;
    let csv = "email,first_name,last_name,department,user group\na@example.com,A,B,,\nbroken,X,Y,,\nb@example.com,B,C,,\n";
    let url = format!(
        "{}/api/v2/users/import?license=licensed&feature=recording&sso=true",
        r.base
    );
    let reply = request(
        Method::POST,
        &url,
        &[("authorization", "Bearer test-admin-token-0123456789")],
        csv,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let j = reply.json();
    assert_eq!(j["created"], 2);
    assert_eq!(j["errors"][0]["line"], 3);
    let u = r.store.get_user("a@example.com").await.unwrap().unwrap();
    assert_eq!(u.features, vec!["recording"]);
    let reply = request(
        Method::POST,
        &url,
        &[("authorization", "Bearer test-admin-token-0123456789")],
        csv,
    )
    .await;
    assert_eq!(
        (
            reply.json()["created"].as_u64(),
            reply.json()["skipped"].as_u64()
        ),
        (Some(0), Some(2))
    );
    let reply = request(
        Method::POST,
        &format!("{}/api/v2/users/import", r.base),
        &[("authorization", "Bearer test-admin-token-0123456789")],
        csv,
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["field"].as_str()),
        (400, Some("license"))
    );
}
