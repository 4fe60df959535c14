//! Signals sent to a real `samlgate serve` process: SIGTERM drains
//! in-flight requests, SIGINT stops at once, SIGHUP with a broken config
//! keeps the old one serving.
#![allow(clippy::disallowed_methods)] // thread::sleep while polling a child process

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use super::gateway::{EchoUpstream, idp, spawn};
use super::http_support::request;
use super::redis_support::free_port;
use super::support::fixtures;

struct Proc {
    child: Child,
    public: String,
    admin: String,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(public: u16, admin: u16, upstream: &str, dir: &std::path::Path) -> String {
    let f = fixtures();
    format!(
        "[listen]\npublic = \"127.0.0.1:{public}\"\nadmin = \"127.0.0.1:{admin}\"\ndrain_secs = 5\n\
[sp]\nentity_id = \"https://sp.example.com/saml/metadata\"\nacs_url = \"http://127.0.0.1:{public}/saml/acs\"\n\
[idp]\nmetadata_file = \"{}\"\n[provisioning]\nassociated_domains = [\"example.com\"]\noutbox_dir = \"{}\"\n\
[store]\npath = \"{}\"\n[upstream]\nurl = \"{upstream}\"\n",
        f.join("idp-metadata.xml").display(),
        dir.join("outbox").display(),
        dir.join("s.db").display()
    )
}

async fn start(upstream: &str) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    let config = dir.path().join("samlgate.toml");
    std::fs::write(&config, config_text(public, admin, upstream, dir.path())).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_samlgate"))
        .args(["serve", "--config"])
        .arg(&config)
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
    loop {
        if std::net::TcpStream::connect(p.admin.trim_start_matches("http://")).is_ok() {
            break;
        }
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
    let now = samlgate::clock::Clock::now(&samlgate::clock::SystemClock);
    let params = samlgate::devidp::ResponseParams {
        name_id: "alice@example.com".into(),
        attributes: vec![],
        acs_url: format!("{}/saml/acs", p.public),
        audience: "https://sp.example.com/saml/metadata".into(),
        in_response_to: None,
        now,
        validity: chrono::Duration::minutes(5),
        assertion_id: None,
    };
    let body = format!(
        "SAMLResponse={}",
        samlgate::gateway::url_encode(&idp().response_b64(&params).unwrap())
    );
    let r = request(
        Method::POST,
        &format!("{}/saml/acs", p.public),
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    super::gateway::cookie_of(&r)
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
