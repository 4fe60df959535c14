//! First logins per core, the embedded store against Redis, side by side in
//! one run (`bench/logins.sh` runs it).
//!
//! Two `samlgate serve` processes with the same account (the test fixtures'
//! IdP, a rule granting the licensed type, so every new user also claims a
//! vanity name), one on the embedded store and one on Redis, each with one
//! worker pinned to CPU 0 (the load generator and Redis run on the other
//! cores). Rounds alternate between them; each round posts freshly signed
//! IdP-initiated responses, each a new user, from concurrent clients, and
//! reads the gateway's CPU time to give CPU per login.
//!
//! cargo run --release --example logins_bench -- REDIS_URL [LOGINS_PER_ROUND] [ROUNDS] [CLIENTS]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use samlgate::clock::{Clock, SystemClock};
use samlgate::devidp::DevIdp;

use common::{
    Serve, cpu_ticks, drive, first_login_body, fixtures, median, rss_kib, serve, until_served,
};

const HOST: &str = "meet.bench.test";

/// The account and store sections of a bench gateway.
fn config(store: &str) -> String {
    format!(
        "[sp]\nentity_id = \"http://{HOST}/saml/metadata\"\nacs_url = \"http://{HOST}/saml/acs\"\n\
[idp]\nmetadata_file = \"{}\"\n\
[mapping]\n[[mapping.rules]]\nname = \"lic\"\nattribute = \"groups\"\ncontains = \"Meetings-Licensed\"\nlicense = \"licensed\"\n\
[provisioning]\nassociated_domains = [\"example.com\"]\n{store}",
        fixtures().join("idp-metadata.xml").display()
    )
}

/// `count` responses, each a new user, signed on every core.
fn responses(idp: &DevIdp, count: usize, tag: &str) -> Vec<(String, Bytes)> {
    let now = SystemClock.now();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let per = count.div_ceil(cores);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..cores)
            .map(|c| {
                s.spawn(move || {
                    (c * per..((c + 1) * per).min(count))
                        .map(|i| {
                            let email = format!("bench.{tag}.{i}@example.com");
                            (HOST.to_owned(), first_login_body(idp, HOST, &email, now))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("REDIS_URL").to_owned();
    let per_round: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let rounds: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let clients: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(16);
    let keys = fixtures().join("keys");
    let idp = DevIdp::new(
        "https://idp.example.org/saml/idp",
        &std::fs::read(keys.join("idp.key")).unwrap(),
        &std::fs::read(keys.join("idp.crt")).unwrap(),
    )
    .unwrap();
    let embedded = serve(&config("[store]\npath = \"{dir}/store.db\"\n"));
    let redis = serve(&config(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{url}\"\n"
    )));
    for s in [&embedded, &redis] {
        until_served(s, HOST, Duration::from_secs(30)).await;
    }
    // For a profiler attached to one of them (`perf record -p PID`).
    println!(
        "gateways: embedded pid {}, redis pid {}",
        embedded.child.id(),
        redis.child.id()
    );
    let gateways: [(&str, &Serve); 2] = [("embedded", &embedded), ("redis", &redis)];
    // Warm-up: a round each, not counted.
    for (name, s) in gateways {
        drive(
            s,
            responses(&idp, per_round / 5, &format!("w{name}")),
            clients,
        )
        .await;
    }
    let mut rates = [vec![], vec![]];
    let mut cpus = [vec![], vec![]];
    for r in 0..rounds {
        for (k, (name, s)) in gateways.iter().enumerate() {
            let bodies = responses(&idp, per_round, &format!("r{r}{name}"));
            let c0 = cpu_ticks(s.child.id());
            let rate = drive(s, bodies, clients).await;
            let cpu_ms = (cpu_ticks(s.child.id()) - c0) as f64 * 10.0 / per_round as f64;
            println!("  round {r}: {name:<8} {rate:>6.0} logins/s, {cpu_ms:.3} ms CPU per login");
            rates[k].push(rate);
            cpus[k].push(cpu_ms);
        }
    }
    let (re, rr) = (median(&mut rates[0]), median(&mut rates[1]));
    let (ce, cr) = (median(&mut cpus[0]), median(&mut cpus[1]));
    println!(
        "first logins on one core, median of {rounds} rounds of {per_round} ({clients} clients): \
embedded {re:.0}/s ({ce:.3} ms CPU each, {:.0}/s per busy core), \
redis {rr:.0}/s ({cr:.3} ms CPU each, {:.0}/s per busy core): embedded/redis {:.3}",
        1000.0 / ce,
        1000.0 / cr,
        re / rr
    );
    println!(
        "RSS after the logins: embedded {} MiB, redis {} MiB",
        rss_kib(embedded.child.id()) / 1024,
        rss_kib(redis.child.id()) / 1024
    );
}
