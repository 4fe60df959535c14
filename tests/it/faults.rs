//! Under faults (issue #22, the short forms that run in CI): real
//! `samlgate serve` processes under a steady stream of first logins and
//! proxied requests while the store fails the way production stores do.
//!
//! * a standalone Redis SIGKILLed and restarted empty;
//! * a store that stalls instead of failing (a TCP proxy that stops
//!   forwarding);
//! * a Redis Cluster master SIGKILLed, its replica promoted.
//!
//! Every scenario checks the promises: a login is admitted only on a store
//! decision (303 or 503 `store_unavailable`, never another 5xx), no request
//! hangs past the store's timeouts, nothing panics, and service resumes by
//! itself. `FAULTS_SECS` lengthens the load (the long forms, `bench/faults.sh`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Method;

use super::gateway::{EchoUpstream, spawn};
use super::http_support::try_request;
use super::shutdown::{Proc, signed_for, start_on_store};

/// The longest any request may take while the store is down or stalled:
/// the store's connect/response timeouts (2 s) with its retries, and a
/// margin for a loaded CI machine. A request past it is a hang.
const HANG: Duration = Duration::from_secs(12);

/// How long the load runs around the fault (seconds; `FAULTS_SECS`).
fn load_secs(default: u64) -> u64 {
    std::env::var("FAULTS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One answered (or failed) request.
#[derive(Debug, Clone)]
struct Outcome {
    /// `login` or `proxied`.
    kind: &'static str,
    /// HTTP status; 0 when the connection failed.
    status: u16,
    /// The refusal code of a 503 (JSON or page).
    code: String,
    /// When it was sent, since the load started.
    at: Duration,
    /// How long it took.
    took: Duration,
    /// The session cookie a proxied request carried.
    cookie: Option<String>,
}

fn code_of(body: &str) -> String {
    if let Some(rest) = body.split("Code: <code>").nth(1) {
        return rest.split('<').next().unwrap_or("").to_owned();
    }
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Drives `clients` loops of first logins and proxied requests (with the
/// `cookies` of earlier logins) against `p` until `stop`.
async fn load(
    public: String,
    cookies: Arc<Vec<String>>,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Outcome> {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (public, cookies, stop, next) = (
            public.clone(),
            Arc::clone(&cookies),
            Arc::clone(&stop),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let acs = format!("{public}/saml/acs");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t0 = Instant::now();
                let (kind, cookie, r) = if i.is_multiple_of(2) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let email = format!("fault.{c}.{n}@example.com");
                    let acs2 = acs.clone();
                    let b64 = tokio::task::spawn_blocking(move || signed_for(&acs2, &email))
                        .await
                        .unwrap();
                    let body = format!("SAMLResponse={}", samlgate::gateway::url_encode(&b64));
                    let r = tokio::time::timeout(
                        HANG * 2,
                        try_request(
                            Method::POST,
                            &acs,
                            &[("content-type", "application/x-www-form-urlencoded")],
                            body,
                        ),
                    )
                    .await;
                    ("login", None, r)
                } else {
                    let cookie = cookies[i % cookies.len()].clone();
                    let r = tokio::time::timeout(
                        HANG * 2,
                        try_request(
                            Method::GET,
                            &format!("{public}/meetings/{i}"),
                            &[("cookie", cookie.as_str()), ("accept", "application/json")],
                            "",
                        ),
                    )
                    .await;
                    ("proxied", Some(cookie), r)
                };
                let (status, code) = match r {
                    Ok(Ok(r)) => (r.status, code_of(&r.text())),
                    Ok(Err(_)) | Err(_) => (0, String::new()),
                };
                out.push(Outcome {
                    kind,
                    status,
                    code,
                    at: t0.duration_since(start),
                    took: t0.elapsed(),
                    cookie,
                });
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by_key(|o| o.at);
    all
}

async fn warm_logins(p: &Proc, n: usize) -> Vec<String> {
    let acs = format!("{}/saml/acs", p.public);
    let mut cookies = Vec::new();
    for i in 0..n {
        let b64 = signed_for(&acs, &format!("warm.{i}@example.com"));
        let body = format!("SAMLResponse={}", samlgate::gateway::url_encode(&b64));
        let r = try_request(
            Method::POST,
            &acs,
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 303, "{}", r.text());
        cookies.push(super::gateway::cookie_of(&r));
    }
    cookies
}

/// Counts by (kind, status, code), for the report and the assertions.
fn tally(outcomes: &[Outcome]) -> BTreeMap<(&'static str, u16, String), usize> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        *m.entry((o.kind, o.status, o.code.clone())).or_default() += 1;
    }
    m
}

/// The promises every scenario keeps.
fn check_promises(what: &str, outcomes: &[Outcome], proxied_ok: &[u16]) {
    let t = tally(outcomes);
    eprintln!("{what}: {} requests: {t:?}", outcomes.len());
    // Per second: logins admitted / refused, proxied answered / refused.
    let mut per: BTreeMap<u64, [usize; 4]> = BTreeMap::new();
    for o in outcomes {
        let e = per.entry(o.at.as_secs()).or_default();
        let ok = o.status == 200 || o.status == 303;
        let i = match (o.kind, ok) {
            ("login", true) => 0,
            ("login", false) => 1,
            (_, true) => 2,
            (_, false) => 3,
        };
        e[i] += 1;
    }
    eprintln!(
        "{what}: second -> [logins ok, logins refused, proxied ok, proxied refused]: {per:?}"
    );
    for o in outcomes {
        assert!(o.status != 0, "{what}: a request got no answer: {o:?}");
        assert!(
            o.took < HANG,
            "{what}: a request took {:?} (a hang): {o:?}",
            o.took
        );
        match o.kind {
            "login" => assert!(
                o.status == 303 || (o.status == 503 && o.code == "store_unavailable"),
                "{what}: a login answered {} {:?}",
                o.status,
                o.code
            ),
            _ => assert!(
                proxied_ok.contains(&o.status)
                    || (o.status == 503 && o.code == "store_unavailable"),
                "{what}: a proxied request answered {} {:?}",
                o.status,
                o.code
            ),
        }
    }
}

/// How long after `from` the logins were admitted again: the start of the
/// first run of three 303s in a row.
fn recovered_after(outcomes: &[Outcome], from: Duration) -> Option<Duration> {
    let logins: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.kind == "login" && o.at >= from)
        .collect();
    logins
        .windows(3)
        .find(|w| w.iter().all(|o| o.status == 303))
        .map(|w| w[0].at.saturating_sub(from))
}

fn alive(p: &mut Proc) {
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "samlgate exited (a panic?)"
    );
}

async fn readyz(p: &Proc) -> u16 {
    try_request(Method::GET, &format!("{}/readyz", p.admin), &[], "")
        .await
        .map_or(0, |r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_standalone_redis_killed_and_restarted_empty() {
    let mut redis = super::redis_support::RedisServer::start();
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let mut p = start_on_store(
        &format!("http://{up}"),
        &format!("[store]\nkind = \"redis\"\nurl = \"{}\"", redis.url()),
    )
    .await;
    let cookies = Arc::new(warm_logins(&p, 8).await);
    let secs = load_secs(8);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let driver = tokio::spawn(load(
        p.public.clone(),
        Arc::clone(&cookies),
        4,
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(secs / 4)).await;
    let killed_at = started.elapsed();
    redis.stop();
    // /readyz says so.
    let mut saw_unready = false;
    for _ in 0..50 {
        if readyz(&p).await == 503 {
            saw_unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(secs / 4)).await;
    let restarted_at = started.elapsed();
    redis.restart();
    tokio::time::sleep(Duration::from_secs(secs / 2)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = driver.await.unwrap();
    assert!(saw_unready, "/readyz never said 503 while Redis was down");
    // Proxied: 200 before, 401 once the session's data is gone with the
    // store (sign in again), 503 while it is down.
    check_promises("redis killed", &outcomes, &[200, 401]);
    let during: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            o.kind == "login"
                && o.at > killed_at + Duration::from_millis(500)
                && o.at + Duration::from_millis(500) < restarted_at
        })
        .collect();
    assert!(
        !during.is_empty() && during.iter().all(|o| o.status == 503),
        "logins while Redis was down: {:?}",
        during.iter().map(|o| o.status).collect::<Vec<_>>()
    );
    let recovery = recovered_after(&outcomes, restarted_at).expect("logins never resumed");
    eprintln!(
        "redis killed at {killed_at:?}, restarted empty at {restarted_at:?}; logins resumed {recovery:?} after the restart"
    );
    // The sessions lived in the lost data: gone.
    for c in cookies.iter() {
        let r = try_request(
            Method::GET,
            &format!("{}/after", p.public),
            &[("cookie", c.as_str()), ("accept", "application/json")],
            "",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 401, "a session from the lost data still works");
    }
    assert_eq!(readyz(&p).await, 200);
    alive(&mut p);
}

/// A TCP proxy to `target` that forwards until `stalled` is set, then holds
/// every connection open without moving a byte (new ones too).
async fn stall_proxy(target: u16, stalled: Arc<AtomicBool>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = l.accept().await else {
                return;
            };
            let stalled = Arc::clone(&stalled);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let a = tokio::spawn(pipe(cr, sw, Arc::clone(&stalled)));
                let b = tokio::spawn(pipe(sr, cw, stalled));
                let _ = tokio::join!(a, b);
            });
        }
    });
    port
}

/// Copies `r` to `w`, holding still while `stalled` is set.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while stalled.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_a_stalled_store_answers_503_in_bounded_time_and_memory() {
    let redis = super::redis_support::RedisServer::start();
    let stalled = Arc::new(AtomicBool::new(false));
    let proxy = stall_proxy(redis.port, Arc::clone(&stalled)).await;
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let mut p = start_on_store(
        &format!("http://{up}"),
        &format!("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{proxy}\""),
    )
    .await;
    let cookies = Arc::new(warm_logins(&p, 8).await);
    let pid = p.child.id();
    let secs = load_secs(8);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let driver = tokio::spawn(load(
        p.public.clone(),
        Arc::clone(&cookies),
        8,
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(secs / 4)).await;
    let (rss0, fds0) = (rss_kib(pid), open_fds(pid));
    let stalled_at = started.elapsed();
    stalled.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs / 2)).await;
    let (rss1, fds1) = (rss_kib(pid), open_fds(pid));
    let resumed_at = started.elapsed();
    stalled.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs / 4 + 3)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = driver.await.unwrap();
    check_promises("store stalled", &outcomes, &[200]);
    let during: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            o.kind == "login"
                && o.at > stalled_at + Duration::from_millis(200)
                && o.at + HANG < resumed_at
        })
        .collect();
    assert!(
        during.iter().all(|o| o.status == 503),
        "logins during the stall: {:?}",
        during.iter().map(|o| o.status).collect::<Vec<_>>()
    );
    eprintln!(
        "stall from {stalled_at:?} to {resumed_at:?}: RSS {rss0} -> {rss1} KiB, open files {fds0} -> {fds1}; worst answer {:?}",
        outcomes.iter().map(|o| o.took).max().unwrap_or_default()
    );
    assert!(
        rss1 < rss0 + 64 * 1024,
        "RSS grew {rss0} -> {rss1} KiB during the stall"
    );
    assert!(
        fds1 < fds0 + 256,
        "open files grew {fds0} -> {fds1} during the stall"
    );
    assert!(
        recovered_after(&outcomes, resumed_at).is_some(),
        "logins never resumed after the stall"
    );
    alive(&mut p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_cluster_master_failover_under_load() {
    let mut cluster = super::redis_support::RedisCluster::start_with_replicas();
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
        .collect();
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let mut p = start_on_store(
        &format!("http://{up}"),
        &format!("[store]\nkind = \"redis\"\nnodes = [{}]", nodes.join(", ")),
    )
    .await;
    let cookies = warm_logins(&p, 12).await;
    // The master to kill: the one holding the first session's key.
    let key_of = |cookie: &str| {
        let id = cookie.split_once('=').unwrap().1;
        format!(
            "samlgate:session:{{{}}}",
            samlgate::provisioning::token_hash(id)
        )
    };
    let victim = cluster.master_of(&key_of(&cookies[0]));
    // Sessions whose session and user keys live elsewhere must keep working.
    let safe: Vec<String> = cookies
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            cluster.master_of(&key_of(c)) != victim
                && cluster.master_of(&format!("samlgate:user:{{warm.{i}@example.com}}")) != victim
        })
        .map(|(_, c)| c.clone())
        .collect();
    let cookies = Arc::new(cookies);
    let secs = load_secs(12);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let driver = tokio::spawn(load(
        p.public.clone(),
        Arc::clone(&cookies),
        4,
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(secs / 4)).await;
    let killed_at = started.elapsed();
    cluster.kill(victim);
    tokio::time::sleep(Duration::from_secs(secs * 3 / 4)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = driver.await.unwrap();
    check_promises("cluster master killed", &outcomes, &[200]);
    let recovery =
        recovered_after(&outcomes, killed_at).expect("logins never resumed after the failover");
    eprintln!(
        "master {victim} killed at {killed_at:?}; logins admitted again {recovery:?} later; {} of {} warm sessions on surviving masters",
        safe.len(),
        cookies.len()
    );
    // After the promotion every session works, the surviving masters' all along.
    for c in cookies.iter() {
        let r = try_request(
            Method::GET,
            &format!("{}/after", p.public),
            &[("cookie", c.as_str()), ("accept", "application/json")],
            "",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "a session after the failover: {}", r.text());
    }
    let safe_failures = outcomes
        .iter()
        .filter(|o| {
            o.kind == "proxied"
                && o.cookie.as_ref().is_some_and(|c| safe.contains(c))
                && o.status != 200
        })
        .count();
    eprintln!(
        "proxied requests of sessions on surviving masters that failed during the failover: {safe_failures}"
    );
    alive(&mut p);
}
