//! The soak (issue #22, scenario 5; `bench/soak.sh` runs it): a `samlgate
//! serve` on Redis, one worker pinned to CPU 0, under mixed load for a long
//! time at a fraction of its measured capacity: first logins (new users),
//! repeat logins, proxied requests, admin API reads, and a CSV import of
//! 1,000 rows every minute. Every request must succeed; it prints, per
//! minute, the rate, p99 latency per kind and the gateway's RSS, and at the
//! end the RSS growth between minute 5 and the last minute.
//!
//! cargo run --release --example soak -- REDIS_URL [MINUTES] [FRACTION]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use samlgate::clock::{Clock, SystemClock};
use samlgate::devidp::DevIdp;

use common::{TOKEN, client, first_login_body, fixtures, rss_kib, serve, until_served};

const HOST: &str = "soak.bench.test";

fn config(url: &str) -> String {
    format!(
        "[sp]\nentity_id = \"http://{HOST}/saml/metadata\"\nacs_url = \"http://{HOST}/saml/acs\"\n\
[idp]\nmetadata_file = \"{}\"\n\
[mapping]\n[[mapping.rules]]\nname = \"lic\"\nattribute = \"groups\"\ncontains = \"Meetings-Licensed\"\nlicense = \"licensed\"\n\
[provisioning]\nassociated_domains = [\"example.com\"]\n\
[store]\nkind = \"redis\"\nurl = \"{url}\"\n[demo]\nenabled = true\nserve_upstream = true\n[upstream]\nurl = \"http://127.0.0.1:{}\"\n",
        fixtures().join("idp-metadata.xml").display(),
        common::free_port(),
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    FirstLogin,
    RepeatLogin,
    Proxied,
    AdminRead,
}

const KINDS: [Kind; 4] = [
    Kind::FirstLogin,
    Kind::RepeatLogin,
    Kind::Proxied,
    Kind::AdminRead,
];

/// Which request the `i`-th one is: 20 % first logins, 10 % repeat
/// logins, 65 % proxied requests, 5 % admin API reads.
fn kind_of(i: u64) -> Kind {
    match i % 20 {
        0..=3 => Kind::FirstLogin,
        4 | 5 => Kind::RepeatLogin,
        6 => Kind::AdminRead,
        _ => Kind::Proxied,
    }
}

struct Shared {
    public: String,
    admin: String,
    idp: DevIdp,
    cookies: std::sync::Mutex<Vec<String>>,
    next_user: AtomicUsize,
    errors: AtomicU64,
}

/// Sends one request of `kind`; Ok(latency) or Err(what went wrong).
async fn one(s: &Shared, kind: Kind, i: u64) -> Result<Duration, String> {
    let c = client();
    let t0 = Instant::now();
    let (req, want) = match kind {
        Kind::FirstLogin | Kind::RepeatLogin => {
            let n = if kind == Kind::FirstLogin {
                s.next_user.fetch_add(1, Ordering::Relaxed)
            } else {
                (i as usize * 7919) % s.next_user.load(Ordering::Relaxed).max(1)
            };
            let email = format!("soak.{n}@example.com");
            let body = first_login_body(&s.idp, HOST, &email, SystemClock.now());
            (
                http::Request::post(format!("{}/saml/acs", s.public))
                    .header("host", HOST)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(body))
                    .unwrap(),
                303,
            )
        }
        Kind::Proxied => {
            let cookie = {
                let v = s.cookies.lock().unwrap();
                v[(i as usize) % v.len()].clone()
            };
            (
                http::Request::get(format!("{}/meetings/{i}", s.public))
                    .header("host", HOST)
                    .header("cookie", cookie)
                    .header("accept", "application/json")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
                200,
            )
        }
        Kind::AdminRead => (
            http::Request::get(format!("{}/api/v2/users?limit=10", s.admin))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
            200,
        ),
    };
    let resp = c.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status != want {
        return Err(format!(
            "{kind:?} answered {status}: {}",
            String::from_utf8_lossy(&body.to_bytes())
                .chars()
                .take(200)
                .collect::<String>()
        ));
    }
    if let (Kind::FirstLogin, Some(c)) = (kind, set_cookie) {
        let mut v = s.cookies.lock().unwrap();
        if v.len() < 10_000 {
            v.push(c);
        } else {
            let at = (i as usize) % v.len();
            v[at] = c;
        }
    }
    Ok(t0.elapsed())
}

/// A CSV import of 1,000 new rows through the admin API.
async fn import(s: &Shared, round: u64) -> Result<Duration, String> {
    let mut csv = String::from("email,first_name,last_name,department,user group\n");
    for r in 0..1000 {
        csv.push_str(&format!("imp.{round}.{r}@example.com,Im,Port,Ops,staff\n"));
    }
    let t0 = Instant::now();
    let req = http::Request::post(format!(
        "{}/api/v2/users/import?license=basic&sso=true",
        s.admin
    ))
    .header("authorization", format!("Bearer {TOKEN}"))
    .header("content-type", "text/csv")
    .body(Full::new(Bytes::from(csv)))
    .unwrap();
    let resp = client().request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    if status != 200 {
        return Err(format!("import answered {status}"));
    }
    Ok(t0.elapsed())
}

/// Runs requests at `rate` per second for `dur` from `workers` tasks;
/// returns (latencies by kind, errors).
async fn run(
    s: &Arc<Shared>,
    rate: f64,
    dur: Duration,
    workers: usize,
    counter: &Arc<AtomicU64>,
) -> ([Vec<Duration>; 4], u64) {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (s, counter) = (Arc::clone(s), Arc::clone(counter));
        tasks.push(tokio::spawn(async move {
            let mut lat: [Vec<Duration>; 4] = Default::default();
            let mut errors = 0u64;
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                // Paced: request i is sent at i × interval from the start.
                let at = start + interval.mul_f64(i as f64);
                if at > start + dur || start.elapsed() > dur {
                    break;
                }
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                let k = kind_of(i);
                match one(&s, k, i).await {
                    Ok(d) => lat[KINDS.iter().position(|x| *x == k).unwrap()].push(d),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("error: {e}");
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut lat: [Vec<Duration>; 4] = Default::default();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        for (a, b) in lat.iter_mut().zip(l) {
            a.extend(b);
        }
        errors += e;
    }
    (lat, errors)
}

fn p99(v: &mut [Duration]) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("REDIS_URL").to_owned();
    let minutes: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(30);
    let fraction: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0.8);
    let keys = fixtures().join("keys");
    let idp = DevIdp::new(
        "https://idp.example.org/saml/idp",
        &std::fs::read(keys.join("idp.key")).unwrap(),
        &std::fs::read(keys.join("idp.crt")).unwrap(),
    )
    .unwrap();
    let g = serve(&config(&url));
    until_served(&g, HOST, Duration::from_secs(30)).await;
    let s = Arc::new(Shared {
        public: g.public.clone(),
        admin: g.admin.clone(),
        idp,
        cookies: std::sync::Mutex::new(Vec::new()),
        next_user: AtomicUsize::new(0),
        errors: AtomicU64::new(0),
    });
    // Sessions to proxy with.
    for i in 0..50u64 {
        one(&s, Kind::FirstLogin, i).await.unwrap();
    }
    // Capacity: the same mix, unpaced, from 32 tasks for 20 s.
    let counter = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let (_, errors) = run(&s, 1e9, Duration::from_secs(20), 32, &counter).await;
    let capacity = counter.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(errors, 0, "errors while measuring capacity");
    let rate = capacity * fraction;
    println!(
        "capacity {capacity:.0} requests/s of the mix; soaking at {rate:.0}/s ({:.0} %) for {minutes} min, a 1,000-row CSV import every minute",
        fraction * 100.0
    );
    println!(
        "minute  rate/s  p99 first-login  p99 repeat-login  p99 proxied  p99 admin  import  RSS MiB  errors"
    );
    let pid = g.child.id();
    let mut rss = Vec::new();
    let mut total_errors = 0;
    let mut p99s = Vec::new();
    for m in 1..=minutes {
        let counter = Arc::new(AtomicU64::new(0));
        let imp = {
            let s = Arc::clone(&s);
            tokio::spawn(async move { import(&s, m).await })
        };
        let t0 = Instant::now();
        let (mut lat, errors) = run(&s, rate, Duration::from_secs(60), 32, &counter).await;
        let done = counter.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
        let imp = imp.await.unwrap();
        let imp_errors = u64::from(imp.is_err());
        total_errors += errors + imp_errors;
        let r = rss_kib(pid) / 1024;
        rss.push(r);
        let ps: Vec<Duration> = lat.iter_mut().map(|v| p99(v)).collect();
        p99s.push(ps[2]);
        println!(
            "{m:>6}  {done:>6.0}  {:>15.1?}  {:>16.1?}  {:>11.1?}  {:>9.1?}  {:>6.1?}  {r:>7}  {}",
            ps[0],
            ps[1],
            ps[2],
            ps[3],
            imp.as_ref().map(|d| *d).unwrap_or_default(),
            errors + imp_errors
        );
        s.errors.fetch_add(errors, Ordering::Relaxed);
    }
    let at5 = rss.get(4).copied().unwrap_or(0).max(1);
    let last = rss.last().copied().unwrap_or(0);
    println!(
        "soak of {minutes} min: {total_errors} errors; RSS minute 5 {at5} MiB, last {last} MiB ({:+.1} %); proxied p99 minute 5 {:?}, last {:?}",
        (last as f64 - at5 as f64) * 100.0 / at5 as f64,
        p99s.get(4).copied().unwrap_or_default(),
        p99s.last().copied().unwrap_or_default()
    );
}
