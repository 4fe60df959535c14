//! Real `samlgate serve` processes: SIGTERM drains in-flight requests,
//! SIGINT stops at once, SIGHUP with a broken config keeps the old one
//! serving; two processes share sessions and the replay cache through Redis.
#![allow(clippy::disallowed_methods)] // thread::sleep while polling a child process

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gateway::{EchoUpstream, idp, spawn};
use super::http_support::request;
use super::redis_support::free_port;
use super::support::fixtures;

pub(super) struct Proc {
    pub(super) child: Child,
    pub(super) public: String,
    pub(super) admin: String,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn config_text(
    public: u16,
    admin: u16,
    upstream: &str,
    dir: &std::path::Path,
    store: &str,
) -> String {
    let f = fixtures();
    format!(
        "[listen]\npublic = \"127.0.0.1:{public}\"\nadmin = \"127.0.0.1:{admin}\"\ndrain_secs = 5\n\
[sp]\nentity_id = \"https://sp.example.com/saml/metadata\"\nacs_url = \"http://127.0.0.1:{public}/saml/acs\"\n\
[idp]\nmetadata_file = \"{}\"\n\
[mapping]\n[[mapping.rules]]\nname = \"lic\"\nattribute = \"groups\"\ncontains = \"Meetings-Licensed\"\nlicense = \"licensed\"\n\
[provisioning]\nassociated_domains = [\"example.com\"]\noutbox_dir = \"{}\"\n\
{store}\n[upstream]\nurl = \"{upstream}\"\n",
        f.join("idp-metadata.xml").display(),
        dir.join("outbox").display(),
    )
}

async fn start(upstream: &str) -> Proc {
    start_with(upstream, None, None).await
}

/// Starts a process; `redis` selects the Redis store, `acs_port` makes the
/// SP's ACS URL name another process's port (replicas share one SP identity).
async fn start_with(upstream: &str, redis: Option<&str>, acs_port: Option<u16>) -> Proc {
    start_full(upstream, redis, acs_port, None).await
}

async fn start_full(
    upstream: &str,
    redis: Option<&str>,
    acs_port: Option<u16>,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    let config = dir.path().join("samlgate.toml");
    let store = match redis {
        Some(url) => format!("[store]\nkind = \"redis\"\nurl = \"{url}\""),
        None => format!("[store]\npath = \"{}\"", dir.path().join("s.db").display()),
    };
    let mut text = config_text(public, admin, upstream, dir.path(), &store);
    if let Some(p) = acs_port {
        text = text.replace(
            &format!("127.0.0.1:{public}/saml/acs"),
            &format!("127.0.0.1:{p}/saml/acs"),
        );
    }
    if let Some((cert, key)) = tls {
        text = text.replace(
            "drain_secs = 5\n",
            &format!(
                "drain_secs = 5\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        );
    }
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_samlgate"));
    cmd.args(["serve", "--config"]).arg(&config);
    launch(cmd, public, admin, config, dir).await
}

/// A process on the store a `[store]` section names.
pub(super) async fn start_on_store(upstream: &str, store: &str) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    let config = dir.path().join("samlgate.toml");
    std::fs::write(
        &config,
        config_text(public, admin, upstream, dir.path(), store),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_samlgate"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env("SAMLGATE_WORKERS", "2");
    launch(cmd, public, admin, config, dir).await
}

/// Spawns `cmd` (a `serve` of `config`) and waits until its admin listener
/// accepts.
pub(super) async fn launch(
    mut cmd: Command,
    public: u16,
    admin: u16,
    config: std::path::PathBuf,
    dir: tempfile::TempDir,
) -> Proc {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc {
        child,
        public: format!("http://127.0.0.1:{public}"),
        admin: format!("http://127.0.0.1:{admin}"),
        config,
        _dir: dir,
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(p.admin.trim_start_matches("http://")).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "samlgate did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn login(p: &Proc) -> String {
    let acs = format!("{}/saml/acs", p.public);
    let b64 = signed(&acs);
    let r = post_acs(p, &b64).await;
    assert_eq!(r.status, 303, "{}", r.text());
    super::gateway::cookie_of(&r)
}

fn signed(acs: &str) -> String {
    signed_for(acs, "alice@example.com")
}

/// An IdP-initiated response for `email`, in the group that grants the
/// licensed type (so a first login also claims a vanity name).
pub(super) fn signed_for(acs: &str, email: &str) -> String {
    let now = samlgate::clock::Clock::now(&samlgate::clock::SystemClock);
    let params = samlgate::devidp::ResponseParams {
        name_id: email.into(),
        attributes: vec![
            ("email".into(), vec![email.into()]),
            ("groups".into(), vec!["Meetings-Licensed".into()]),
        ],
        acs_url: acs.to_owned(),
        audience: "https://sp.example.com/saml/metadata".into(),
        in_response_to: None,
        now,
        validity: chrono::Duration::minutes(5),
        assertion_id: None,
    };
    idp().response_b64(&params).unwrap()
}

async fn post_acs(p: &Proc, b64: &str) -> super::http_support::Reply {
    let body = format!("SAMLResponse={}", samlgate::gateway::url_encode(b64));
    request(
        Method::POST,
        &format!("{}/saml/acs", p.public),
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    )
    .await
}

fn wait_exit(p: &mut Proc, within: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(Some(status)) = p.child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let mut p = start(&format!("http://{up}")).await;
    let cookie = login(&p).await;
    // A kept-alive connection, idle after one proxied request.
    let addr = p.public.trim_start_matches("http://").to_owned();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(
        format!("GET /before HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let first = super::fast_path::read_response(&mut idle).await;
    let mut buf = vec![0u8; 65536];
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    let url = format!("{}/slow", p.public);
    let slow = tokio::spawn(async move {
        request(
            Method::GET,
            &url,
            &[("cookie", &cookie), ("accept", "application/json")],
            "",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&p, "-TERM");
    let signalled = Instant::now();
    // The idle connection is closed at once, not at the drain deadline (5 s).
    let eof = tokio::time::timeout(Duration::from_secs(4), idle.read(&mut buf))
        .await
        .expect("the idle kept-alive connection is closed by the drain");
    assert!(matches!(eof, Ok(0) | Err(_)), "{eof:?}");
    assert!(signalled.elapsed() < Duration::from_secs(4));
    let r = slow.await.unwrap();
    assert_eq!(
        r.status, 200,
        "the in-flight request completes during the drain"
    );
    let code = tokio::task::block_in_place(|| wait_exit(&mut p, Duration::from_secs(6)));
    assert_eq!(code, Some(0), "exit after draining");
    assert!(
        std::net::TcpStream::connect(p.public.trim_start_matches("http://")).is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_at_once() {
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let mut p = start(&format!("http://{up}")).await;
    signal(&p, "-INT");
    let code = tokio::task::block_in_place(|| wait_exit(&mut p, Duration::from_secs(3)));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_config_keeps_serving() {
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let mut p = start(&format!("http://{up}")).await;
    let cookie = login(&p).await;
    std::fs::write(&p.config, "[sp]\nthis is not toml").unwrap();
    signal(&p, "-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = request(
        Method::GET,
        &format!("{}/x", p.public),
        &[("cookie", &cookie), ("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(
        r.status, 200,
        "still serving with the old config and the session"
    );
    assert!(
        tokio::task::block_in_place(|| wait_exit(&mut p, Duration::from_millis(100))).is_none()
    );
    let m = request(Method::GET, &format!("{}/metrics", p.admin), &[], "")
        .await
        .text();
    assert!(
        m.contains("samlgate_logins_total{outcome=\"accept\",code=\"\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("samlgate_proxied_requests_total{status=\"2xx\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_sessions_and_replay_cache_through_redis() {
    let (url, _guard) = super::redis_support::standalone();
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let upstream = format!("http://{up}");
    let a = start_with(&upstream, Some(&url), None).await;
    let a_port: u16 = a.public.rsplit(':').next().unwrap().parse().unwrap();
    let b = start_with(&upstream, Some(&url), Some(a_port)).await;
    // Log in on A; the session works on B.
    let b64 = signed(&format!("{}/saml/acs", a.public));
    let r = post_acs(&a, &b64).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = super::gateway::cookie_of(&r);
    let r = request(
        Method::GET,
        &format!("{}/x", b.public),
        &[("cookie", &cookie), ("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-samlgate-email"], "alice@example.com");
    // The same assertion replayed to B is refused.
    let r = post_acs(&b, &b64).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("<code>replayed</code>"), "{}", r.text());
    // Logout on B ends the session on A within recheck_secs (default 5 s).
    request(
        Method::GET,
        &format!("{}/saml/logout", b.public),
        &[("cookie", &cookie)],
        "",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let r = request(
        Method::GET,
        &format!("{}/x", a.public),
        &[("cookie", &cookie), ("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_terminates_tls() {
    use hyper_util::rt::TokioIo;
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = super::gateway::tls::test_pki(pki.path());
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let p = start_full(&format!("http://{up}"), None, None, Some((&cert, &key))).await;
    let addr = p.public.trim_start_matches("http://").to_owned();
    let tls = super::gateway::tls::client(&ca, &addr, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/saml/metadata")
        .header("host", &addr)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// `serve` raises its soft open-files limit to the hard limit at start
/// (1,100 idle connections once stopped every accept under the usual 1,024).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_raises_its_open_files_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    let config = dir.path().join("samlgate.toml");
    let store = format!("[store]\npath = \"{}\"", dir.path().join("s.db").display());
    std::fs::write(
        &config,
        config_text(public, admin, "http://127.0.0.1:9", dir.path(), &store),
    )
    .unwrap();
    // Started with a soft limit of 256.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -S -n 256 && exec \"$0\" serve --config \"$1\"",
        env!("CARGO_BIN_EXE_samlgate"),
    ])
    .arg(&config);
    let p = launch(cmd, public, admin, config, dir).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files  SOFT  HARD  files"
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "raised from 256 to the hard limit: {line}");
}

/// The durability promise of the embedded store's group commit: a login
/// answered 303 is on disk. A burst of concurrent first logins; the process
/// is killed with SIGKILL as soon as half of them are answered (the rest
/// still in flight), then restarted on the same database: every answered
/// login's session cookie works, its user exists with its vanity name, and
/// its assertion is still refused as a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_a_burst_of_logins_loses_none_that_were_answered() {
    const BURST: usize = 120;
    let (up, _g) = spawn(Arc::new(EchoUpstream)).await;
    let mut p = start(&format!("http://{up}")).await;
    let acs = format!("{}/saml/acs", p.public);
    let signed: Vec<(String, String)> = (0..BURST)
        .map(|i| {
            let email = format!("burst.user{i}@example.com");
            (email.clone(), signed_for(&acs, &email))
        })
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (email, b64) in signed.iter().cloned() {
        let (tx, url) = (tx.clone(), acs.clone());
        tokio::spawn(async move {
            let body = format!("SAMLResponse={}", samlgate::gateway::url_encode(&b64));
            let r = super::http_support::try_request(
                Method::POST,
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                body,
            )
            .await;
            let _ = tx.send((email, b64, r));
        });
    }
    drop(tx);
    let mut answered = Vec::new();
    let mut other = 0;
    while let Some((email, b64, r)) = rx.recv().await {
        match r {
            Ok(r) if r.status == 303 => {
                answered.push((email, b64, super::gateway::cookie_of(&r)));
                if answered.len() == BURST / 2 {
                    signal(&p, "-KILL");
                }
            }
            // Cut off by the kill: no answer, so no promise.
            _ => other += 1,
        }
    }
    assert!(answered.len() >= BURST / 2, "{} answered", answered.len());
    assert!(
        other > 0,
        "the kill must land while logins are still in flight (all {BURST} were answered first)"
    );
    let code = tokio::task::block_in_place(|| wait_exit(&mut p, Duration::from_secs(5)));
    assert_eq!(code, None, "killed by a signal, no exit code");

    // Restart on the same database, ports and config.
    let port = |u: &str| u.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let (public, admin) = (port(&p.public), port(&p.admin));
    let dir = std::mem::replace(&mut p._dir, tempfile::tempdir().unwrap());
    let config = p.config.clone();
    drop(p);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_samlgate"));
    cmd.args(["serve", "--config"]).arg(&config);
    let q = launch(cmd, public, admin, config, dir).await;
    for (email, b64, cookie) in &answered {
        let r = request(
            Method::GET,
            &format!("{}/after-restart", q.public),
            &[("cookie", cookie), ("accept", "application/json")],
            "",
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{email}'s session after kill -9: {}",
            r.text()
        );
        let seen = r.json();
        let local = email.split('@').next().unwrap();
        assert_eq!(
            seen["headers"]["x-samlgate-email"],
            email.as_str(),
            "{seen}"
        );
        assert_eq!(seen["headers"]["x-samlgate-vanity"], local, "{seen}");
        let again = post_acs(&q, b64).await;
        assert_eq!(
            (again.status, super::gateway::code_in_page(&again).as_str()),
            (403, "replayed"),
            "{email}'s assertion after kill -9"
        );
    }
}
