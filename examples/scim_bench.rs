//! SCIM provisioning speed (`bench/scim.sh` runs it): a `samlgate serve` on
//! Redis (and one on the embedded store, for comparison), one worker pinned
//! to CPU 0, an account whose IdP connector pushes users the way Okta does
//! an initial sync: for each user a `GET /Users?filter=userName eq "..."`
//! (none found), then a `POST /Users`, from `CLIENTS` concurrent
//! connections. Reports users/s, CPU per user and RSS; then creates alone
//! (POST only) and deactivations (PATCH active=false, which wait out the
//! session revocation bound).
//!
//! cargo run --release --example scim_bench -- REDIS_URL [USERS] [CLIENTS]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use common::{Serve, TOKEN, client, cpu_ticks, fixtures, rss_kib, serve};

const HOST: &str = "scim.bench.test";

async fn call(
    method: http::Method,
    url: &str,
    token: &str,
    body: String,
) -> (u16, serde_json::Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("host", HOST)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/scim+json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Creates the account and a SCIM token; returns the token.
async fn account(s: &Serve) -> String {
    let metadata = std::fs::read_to_string(fixtures().join("idp-metadata.xml")).unwrap();
    let doc = serde_json::json!({
        "id": "bench",
        "name": "Bench corp",
        "hosts": [HOST],
        "sp": {"entity_id": format!("http://{HOST}/saml/metadata"), "acs_url": format!("http://{HOST}/saml/acs")},
        "idp": {"metadata_xml": metadata},
        "mapping": {"rules": [{"name": "lic", "attribute": "groups", "contains": "Meetings-Licensed", "license": "licensed"}]},
        "provisioning": {"mode": "prior_to_sign_in", "associated_domains": ["example.com"]},
    });
    // The admin listener up.
    let start = Instant::now();
    while common::status(&format!("{}/healthz", s.admin), "localhost").await != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gateway never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let put = |m: http::Method, path: &str, body: String| {
        let url = format!("{}{path}", s.admin);
        async move { call(m, &url, TOKEN, body).await }
    };
    let (st, v) = put(http::Method::PUT, "/api/v2/accounts/bench", doc.to_string()).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = put(
        http::Method::POST,
        "/api/v2/accounts/bench/tokens",
        r#"{"scope":"scim","name":"bench"}"#.into(),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    // Served (the public listener learns of the account).
    let start = Instant::now();
    while call(
        http::Method::GET,
        &format!("{}/scim/v2/ServiceProviderConfig", s.public),
        &token,
        String::new(),
    )
    .await
    .0 != 200
    {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token
}

fn user(email: &str) -> String {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": email,
        "name": {"givenName": "Bench", "familyName": "User"},
        "emails": [{"value": email, "type": "work", "primary": true}],
        "externalId": format!("00u{email}"),
        "active": true,
    })
    .to_string()
}

/// Runs `per_user(i)` for `0..n` from `clients` tasks; returns the rate.
async fn run<F, Fut>(n: usize, clients: usize, per_user: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(per_user);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, f) = (Arc::clone(&next), Arc::clone(&f));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                f(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn bench(name: &str, s: &Serve, users: usize, clients: usize) {
    let token = Arc::new(account(s).await);
    let base = Arc::new(format!("{}/scim/v2", s.public));
    let pid = s.child.id();
    // Okta's initial sync: probe, then create.
    let c0 = cpu_ticks(pid);
    let (t, b) = (Arc::clone(&token), Arc::clone(&base));
    let rate = run(users, clients, move |i| {
        let (t, b) = (Arc::clone(&t), Arc::clone(&b));
        async move {
            let email = format!("sync.{i}@example.com");
            let q = format!(
                "{b}/Users?filter=userName%20eq%20%22{}%22&startIndex=1&count=100",
                email.replace('@', "%40")
            );
            let (st, v) = call(http::Method::GET, &q, &t, String::new()).await;
            assert_eq!((st, v["totalResults"].as_u64()), (200, Some(0)), "{v}");
            let (st, v) = call(http::Method::POST, &format!("{b}/Users"), &t, user(&email)).await;
            assert_eq!(st, 201, "{v}");
        }
    })
    .await;
    let cpu = (cpu_ticks(pid) - c0) as f64 * 10.0 / users as f64;
    println!(
        "{name:<8} initial sync of {users} users (filter + POST each, {clients} clients): {rate:.0} users/s, {cpu:.3} ms CPU per user, {:.1} s in all; RSS {} MiB",
        users as f64 / rate,
        rss_kib(pid) / 1024
    );
    // Creates alone.
    let n = (users / 5).max(1);
    let c0 = cpu_ticks(pid);
    let (t, b) = (Arc::clone(&token), Arc::clone(&base));
    let rate = run(n, clients, move |i| {
        let (t, b) = (Arc::clone(&t), Arc::clone(&b));
        async move {
            let email = format!("create.{i}@example.com");
            let (st, v) = call(http::Method::POST, &format!("{b}/Users"), &t, user(&email)).await;
            assert_eq!(st, 201, "{v}");
        }
    })
    .await;
    let cpu = (cpu_ticks(pid) - c0) as f64 * 10.0 / n as f64;
    println!("{name:<8} creates alone ({n}): {rate:.0}/s, {cpu:.3} ms CPU each");
    // Deactivations (each waits out the revocation bound before answering).
    let n = 200.min(users);
    let (t, b) = (Arc::clone(&token), Arc::clone(&base));
    let rate = run(n, clients, move |i| {
        let (t, b) = (Arc::clone(&t), Arc::clone(&b));
        async move {
            let email = format!("sync.{i}@example.com");
            let q = format!(
                "{b}/Users?filter=userName%20eq%20%22{}%22",
                email.replace('@', "%40")
            );
            let (_, v) = call(http::Method::GET, &q, &t, String::new()).await;
            let id = v["Resources"][0]["id"].as_str().unwrap().to_owned();
            let patch = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}"#;
            let (st, v) = call(
                http::Method::PATCH,
                &format!("{b}/Users/{id}"),
                &t,
                patch.into(),
            )
            .await;
            assert_eq!(st, 200, "{v}");
        }
    })
    .await;
    println!("{name:<8} deactivations ({n}, lookup + PATCH active=false): {rate:.1}/s");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("REDIS_URL").to_owned();
    let users: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let clients: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(8);
    let redis = serve(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{url}\"\n[provisioning]\n"
    ));
    bench("redis", &redis, users, clients).await;
    drop(redis);
    let embedded = serve("[store]\npath = \"{dir}/store.db\"\n[provisioning]\n");
    bench("embedded", &embedded, users, clients).await;
}
