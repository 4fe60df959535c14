//! The accounts scale benchmark (`bench/accounts.sh` runs it): N accounts in
//! Redis against one, side by side in one run.
//!
//! 1. seeds N accounts into Redis database 0 and one into database 1
//!    (through `account::manage::put`, as the admin API does);
//! 2. starts `samlgate serve` on each (one worker, pinned to CPU 0 when
//!    `taskset` exists) and times start-up until the last account is served;
//!    reads their RSS;
//! 3. times host lookups in a registry of N accounts and of one;
//! 4. starts a second replica on database 0 and times how long a change made
//!    through replica 1's admin API takes to be served by replica 2;
//! 5. first logins (IdP-initiated, pre-signed, each a new user of a random
//!    account) against the N-account and the one-account gateway in
//!    alternating rounds, from 16 concurrent clients, with the gateway's
//!    CPU time per login.
//!
//! cargo run --release --example accounts_bench -- REDIS_URL [N] [LOGINS_PER_ROUND] [ROUNDS]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use samlgate::account::registry::{Change, Registry};
use samlgate::clock::{Clock, SystemClock};
use samlgate::config::Config;
use samlgate::devidp::DevIdp;
use samlgate::store::Store;
use samlgate::store::redis::RedisStore;

use common::{
    TOKEN, client, cpu_ticks, drive, first_login_body, fixtures, median, rss_kib, serve,
    until_served,
};
use serde_json::json;

const CONCURRENCY: usize = 16;

fn id(i: usize) -> String {
    format!("a{i:05}")
}

fn doc(i: usize, metadata: &str) -> serde_json::Value {
    let h = format!("{}.test", id(i));
    json!({
        "hosts": [h],
        "sp": {"entity_id": format!("http://{h}/saml/metadata"), "acs_url": format!("http://{h}/saml/acs")},
        "idp": {"metadata_xml": metadata},
        "mapping": {"rules": [{"name": "lic", "attribute": "groups", "contains": "Meetings-Licensed", "license": "licensed"}]},
        "provisioning": {"mode": "jit", "associated_domains": ["example.com"]},
    })
}

/// The config section for a Redis store at `url`.
fn store_section(url: &str) -> String {
    format!("[store]\nkind = \"redis\"\nurl = \"{url}\"\n[provisioning]\n")
}

fn bare_config() -> Config {
    Config::from_toml("", Path::new("."), &|_| None).unwrap()
}

async fn seed(store: &'static dyn Store, range: std::ops::Range<usize>, metadata: &str) {
    let cfg = bare_config();
    let mut set = tokio::task::JoinSet::new();
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(ids.len().div_ceil(8).max(1)) {
        let chunk = chunk.to_vec();
        let (cfg, md) = (cfg.clone(), metadata.to_owned());
        set.spawn(async move {
            for i in chunk {
                samlgate::account::manage::put(store, &cfg, None, &id(i), doc(i, &md), false)
                    .await
                    .unwrap();
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// `count` responses, each a new user of a random account among
/// `accounts` (every account once, in order, when `each` is set).
fn responses(
    idp: &DevIdp,
    accounts: usize,
    count: usize,
    tag: &str,
    each: bool,
) -> Vec<(String, Bytes)> {
    let now = SystemClock.now();
    (0..count)
        .map(|i| {
            let a = if accounts == 1 {
                0
            } else if each {
                i % accounts
            } else {
                rand::random_range(0..accounts)
            };
            let host = format!("{}.test", id(a));
            let body = first_login_body(idp, &host, &format!("bench-{tag}-{i}@example.com"), now);
            (host, body)
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .expect("REDIS_URL")
        .trim_end_matches('/')
        .to_owned();
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let per_round: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let rounds: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(3);
    let (many_url, one_url) = (format!("{url}/0"), format!("{url}/1"));
    let many: &'static dyn Store = Box::leak(Box::new(
        RedisStore::standalone(&many_url, "samlgate").await.unwrap(),
    ));
    let one: &'static dyn Store = Box::leak(Box::new(
        RedisStore::standalone(&one_url, "samlgate").await.unwrap(),
    ));
    let metadata = std::fs::read_to_string(fixtures().join("idp-metadata.xml")).unwrap();
    let keys = fixtures().join("keys");
    let idp = DevIdp::new(
        "https://idp.example.org/saml/idp",
        &std::fs::read(keys.join("idp.key")).unwrap(),
        &std::fs::read(keys.join("idp.crt")).unwrap(),
    )
    .unwrap();

    let t = Instant::now();
    seed(many, 0..n, &metadata).await;
    seed(one, 0..1, &metadata).await;
    println!(
        "seeded {n} accounts (+1) through account::manage::put in {:.1} s ({:.0}/s)",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64()
    );

    // Start-up and RSS.
    let t = Instant::now();
    let big = serve(&store_section(&many_url));
    let last = format!("{}.test", id(n - 1));
    let big_start = until_served(&big, &last, Duration::from_secs(300)).await;
    let t1 = Instant::now();
    let small = serve(&store_section(&one_url));
    let small_start =
        until_served(&small, &format!("{}.test", id(0)), Duration::from_secs(60)).await;
    let _ = (t, t1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_big, rss_small) = (rss_kib(big.child.id()), rss_kib(small.child.id()));
    println!(
        "start-up until the last account is served: {n} accounts {:.2} s, 1 account {:.2} s",
        big_start.as_secs_f64(),
        small_start.as_secs_f64()
    );
    println!(
        "RSS after start: {n} accounts {} MiB, 1 account {} MiB: {:.1} KiB per account",
        rss_big / 1024,
        rss_small / 1024,
        (rss_big.saturating_sub(rss_small)) as f64 / (n - 1).max(1) as f64
    );

    // Host lookup cost.
    let cfg = bare_config();
    let mut accounts = Vec::with_capacity(n);
    for (i, stored) in many
        .list_accounts(None, n + 10)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let rec: samlgate::account::doc::Record = serde_json::from_slice(&stored.1.record).unwrap();
        accounts.push(samlgate::account::manage::from_record(&cfg, &stored.0, &rec).unwrap());
        let _ = i;
    }
    for (label, list) in [
        ("N accounts", accounts.clone()),
        ("1 account", accounts[..1].to_vec()),
    ] {
        let reg = Registry::default();
        reg.apply(list.into_iter().map(|a| Change::Put(Arc::new(a))));
        let snap = reg.snapshot();
        let hosts: Vec<String> = (0..1024)
            .map(|k| {
                let i = if snap.len() == 1 { 0 } else { (k * 7919) % n };
                if k % 4 == 0 {
                    format!("{}.TEST:443", id(i))
                } else {
                    format!("{}.test", id(i))
                }
            })
            .collect();
        let rounds = 2_000_000;
        let t = Instant::now();
        let mut found = 0usize;
        for r in 0..rounds {
            found += usize::from(snap.for_host(Some(&hosts[r % hosts.len()])).is_some());
        }
        let ns = t.elapsed().as_nanos() as f64 / rounds as f64;
        assert_eq!(found, rounds);
        println!(
            "host lookup, {label:<10}: {ns:.0} ns ({} accounts in the registry)",
            snap.len()
        );
    }

    // Propagation: a change through replica 1's admin API, served by replica 2.
    let second = serve(&store_section(&many_url));
    until_served(&second, &last, Duration::from_secs(300)).await;
    let mut took = Vec::new();
    for k in 0..20 {
        let host = format!("moved{k}.test");
        let body = json!({"hosts": [format!("{}.test", id(1)), host]}).to_string();
        let req = http::Request::patch(format!("{}/api/v2/accounts/{}", big.admin, id(1)))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let t = Instant::now();
        until_served(&second, &host, Duration::from_secs(10)).await;
        took.push(t.elapsed().as_secs_f64() * 1000.0);
        // A random phase against the replicas' once-a-second poll.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
    }
    let max = took.iter().copied().fold(0.0, f64::max);
    let mean = took.iter().sum::<f64>() / took.len() as f64;
    println!(
        "change on replica 1 served by replica 2 ({} changes): mean {:.0} ms, median {:.0} ms, max {:.0} ms",
        took.len(),
        mean,
        median(&mut took),
        max
    );
    drop(second);

    // First logins, alternating rounds; each round's responses signed just
    // before it (an assertion is accepted for a few minutes after issue).
    let (mut rate_n, mut rate_1, mut cpu_n, mut cpu_1) = (vec![], vec![], vec![], vec![]);
    // Warm-up: one login on every account (each account's first login also
    // pays for its keys' first use), and as many on the single one.
    println!("warm-up: one login per account...");
    drive(&big, responses(&idp, n, n, "wn", true), CONCURRENCY).await;
    drive(
        &small,
        responses(&idp, 1, n.min(5000), "w1", true),
        CONCURRENCY,
    )
    .await;
    for r in 0..rounds * 2 {
        let which = if r % 2 == 0 { "N" } else { "1" };
        let (s, accounts) = if which == "N" { (&big, n) } else { (&small, 1) };
        let bodies = responses(&idp, accounts, per_round, &format!("r{r}"), false);
        let count = bodies.len();
        let c0 = cpu_ticks(s.child.id());
        let rate = drive(s, bodies, CONCURRENCY).await;
        let cpu_ms = (cpu_ticks(s.child.id()) - c0) as f64 * 10.0 / count as f64;
        println!(
            "  round: {which:>1} account(s) {rate:>6.0} logins/s, {cpu_ms:.3} ms CPU per login"
        );
        if which == "N" {
            rate_n.push(rate);
            cpu_n.push(cpu_ms);
        } else {
            rate_1.push(rate);
            cpu_1.push(cpu_ms);
        }
    }
    let (mn, m1) = (median(&mut rate_n), median(&mut rate_1));
    println!(
        "first logins, median of {rounds} rounds: {n} accounts {mn:.0}/s ({:.3} ms CPU each), 1 account {m1:.0}/s ({:.3} ms CPU each): ratio {:.3}",
        median(&mut cpu_n),
        median(&mut cpu_1),
        mn / m1
    );
    println!(
        "RSS after the logins: {n} accounts {} MiB, 1 account {} MiB",
        rss_kib(big.child.id()) / 1024,
        rss_kib(small.child.id()) / 1024
    );
}
