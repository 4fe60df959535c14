//! `cargo bench --bench login_http`: logins per second over HTTP on loopback.
//! An in-process gateway (embedded store in a temporary folder, and Redis
//! when `SAMLGATE_BENCH_REDIS_URL` is set) receives pre-signed IdP-initiated
//! responses (each a fresh assertion, so the replay cache and JIT user
//! creation run for real) from 16 concurrent clients, once with each
//! signature verifier (native, libxmlsec1).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use samlgate::clock::{Clock, SystemClock};
use samlgate::config::{Config, VerifierKind};
use samlgate::devidp::{DevIdp, ResponseParams};
use samlgate::gateway::{Gateway, url_encode};
use samlgate::metrics::Metrics;
use samlgate::store::Store;

/// Logins per run with `cargo bench`; `cargo test --all-targets` runs a
/// smoke test of 20.
fn n() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        2000
    } else {
        20
    }
}
const CONCURRENCY: usize = 16;

async fn run(
    label: &str,
    store: Arc<dyn Store>,
    fixtures: &std::path::Path,
    verifier: VerifierKind,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut cfg = Config::load(&fixtures.join("config.toml")).unwrap();
    cfg.account.as_mut().unwrap().sp.acs_url = format!("http://{addr}/saml/acs");
    cfg.provisioning.outbox_dir = std::env::temp_dir().join("samlgate-bench-outbox");
    cfg.security.verifier = verifier;
    let tag = format!("{verifier:?}").to_lowercase();
    let cfg = Arc::new(cfg);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gw = Arc::new(
        Gateway::new(
            Arc::clone(&cfg),
            store,
            Arc::clone(&clock),
            Arc::new(Metrics::default()),
            false,
        )
        .unwrap(),
    );
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(samlgate::server::serve(l, gw, rx, Duration::from_secs(1)));

    let keys = fixtures.join("keys");
    let idp = DevIdp::new(
        "https://idp.example.org/saml/idp",
        &std::fs::read(keys.join("idp.key")).unwrap(),
        &std::fs::read(keys.join("idp.crt")).unwrap(),
    )
    .unwrap();
    let now = clock.now();
    let count = n();
    let bodies: Vec<Bytes> = (0..count)
        .map(|i| {
            let email = format!("bench-{tag}-{i}@example.com");
            let p = ResponseParams {
                name_id: email.clone(),
                attributes: vec![
                    ("email".into(), vec![email]),
                    ("groups".into(), vec!["Meetings-Licensed".into()]),
                ],
                acs_url: cfg.account.as_ref().unwrap().sp.acs_url.clone(),
                audience: cfg.account.as_ref().unwrap().sp.entity_id.clone(),
                in_response_to: None,
                now,
                validity: chrono::Duration::minutes(30),
                assertion_id: None,
            };
            Bytes::from(format!(
                "SAMLResponse={}",
                url_encode(&idp.response_b64(&p).unwrap())
            ))
        })
        .collect();
    let bodies = Arc::new(bodies);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, bodies, next) = (client.clone(), Arc::clone(&bodies), Arc::clone(&next));
        let url = format!("http://{addr}/saml/acs");
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return ok };
                let req = http::Request::post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                if resp.status() == 303 {
                    ok += 1;
                }
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(ok, count, "every login must succeed");
    println!(
        "{label:<16} {tag:<11} {count} logins in {secs:.2} s: {:.0} logins/s ({CONCURRENCY} concurrent clients)",
        count as f64 / secs
    );
}

/// The login decision alone for an existing, active user (a read, no change).
async fn decision(label: &str, store: Arc<dyn Store>, fixtures: &std::path::Path) {
    let cfg = Config::load(&fixtures.join("config.toml")).unwrap();
    let mapped = samlgate::mapping::MappedUser {
        email: "decide@example.com".into(),
        first_name: "D".into(),
        last_name: "E".into(),
        department: String::new(),
        groups: vec![],
        license: samlgate::mapping::License::Basic,
        features: vec![],
        license_by_rule: false,
        admin: false,
    };
    let now = SystemClock.now();
    samlgate::provisioning::decide(
        store.as_ref(),
        &cfg,
        cfg.account.as_ref().unwrap(),
        &samlgate::provisioning::NoOtherAccounts,
        &mapped,
        now,
        true,
    )
    .await
    .unwrap();
    let n = if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        10
    };
    let start = Instant::now();
    for _ in 0..n {
        let a = samlgate::provisioning::decide(
            store.as_ref(),
            &cfg,
            cfg.account.as_ref().unwrap(),
            &samlgate::provisioning::NoOtherAccounts,
            &mapped,
            now,
            true,
        )
        .await
        .unwrap();
        assert_eq!(a.action, samlgate::provisioning::Action::Unchanged);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:<24} login decision for an existing user: {us:.1} µs (sequential, {n} runs)");
}

fn main() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = samlgate::store::embedded::EmbeddedStore::open(
            &dir.path().join("b.db"),
            Arc::new(SystemClock),
        )
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        decision("embedded store", Arc::clone(&store), &fixtures).await;
        for v in [VerifierKind::Native, VerifierKind::Libxmlsec1] {
            run("embedded store", Arc::clone(&store), &fixtures, v).await;
        }
        if let Ok(url) = std::env::var("SAMLGATE_BENCH_REDIS_URL") {
            let prefix = format!("bench{}", std::process::id());
            let store: Arc<dyn Store> = Arc::new(
                samlgate::store::redis::RedisStore::standalone(&url, &prefix)
                    .await
                    .unwrap(),
            );
            decision("redis", Arc::clone(&store), &fixtures).await;
            for v in [VerifierKind::Native, VerifierKind::Libxmlsec1] {
                run("redis", Arc::clone(&store), &fixtures, v).await;
            }
        }
    });
}
