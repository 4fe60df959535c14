//! What the benchmark drivers under `examples/` share: a `samlgate serve`
//! process pinned to CPU 0, its CPU time and RSS, and a load generator that
//! posts pre-signed responses to its ACS from concurrent clients.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The admin token of every benchmark gateway.
pub const TOKEN: &str = "bench-admin-token-0123456789";

/// The test fixtures (IdP key and metadata).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A running `samlgate serve` (killed on drop).
pub struct Serve {
    pub child: Child,
    pub public: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the release `samlgate serve` with one worker (pinned to CPU 0
/// when `taskset` exists), listeners on free ports, the admin token, an
/// outbox in its own folder, and `extra` appended to the config (`{dir}` in
/// it is replaced by that folder).
pub fn serve(extra: &str) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    let config = dir.path().join("samlgate.toml");
    let d = dir.path().display().to_string();
    std::fs::write(
        &config,
        format!(
            "[listen]\npublic = \"127.0.0.1:{public}\"\nadmin = \"127.0.0.1:{admin}\"\n\
[admin]\ntokens = [\"{TOKEN}\"]\n{}\n",
            extra.replace("{dir}", &d)
        )
        .replace(
            "[provisioning]\n",
            &format!("[provisioning]\noutbox_dir = \"{d}/outbox\"\n"),
        ),
    )
    .unwrap();
    // SAMLGATE_BIN: another build, for an A/B run of the same benchmark.
    let bin = std::env::var_os("SAMLGATE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/samlgate"),
        PathBuf::from,
    );
    let taskset = Command::new("taskset").arg("--version").output().is_ok();
    let mut cmd = if taskset {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let child = cmd
        .args(["serve", "--config"])
        .arg(&config)
        .env("SAMLGATE_WORKERS", "1")
        .env("SAMLGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Serve {
        child,
        public: format!("http://127.0.0.1:{public}"),
        admin: format!("http://127.0.0.1:{admin}"),
        dir,
    }
}

/// A plain HTTP client.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

/// The status of GET `url` with `host`, None when it cannot be reached.
pub async fn status(url: &str, host: &str) -> Option<u16> {
    let req = http::Request::get(url)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.ok()?;
    let s = resp.status().as_u16();
    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    Some(s)
}

/// Waits until `s` serves `host`'s SP metadata; returns how long it took.
pub async fn until_served(s: &Serve, host: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while status(&format!("{}/saml/metadata", s.public), host).await != Some(200) {
        assert!(
            start.elapsed() < limit,
            "{host} not served within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Resident set of `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks (100/s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Posts every `(host, body)` to `s`'s ACS from `clients` concurrent
/// clients; each must answer 303. Returns logins per second.
pub async fn drive(s: &Serve, bodies: Vec<(String, Bytes)>, clients: usize) -> f64 {
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = client();
    let url = format!("{}/saml/acs", s.public);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, bodies, next, url) = (
            client.clone(),
            Arc::clone(&bodies),
            Arc::clone(&next),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((host, body)) = bodies.get(i) else {
                    return;
                };
                let req = http::Request::post(&url)
                    .header("host", host.as_str())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                let status = resp.status();
                let body = http_body_util::BodyExt::collect(resp.into_body()).await;
                if status != 303 {
                    let text = body.map(|b| b.to_bytes()).unwrap_or_default();
                    let text = String::from_utf8_lossy(&text);
                    let code = text
                        .split("Code: <code>")
                        .nth(1)
                        .and_then(|s| s.split('<').next())
                        .unwrap_or("?");
                    panic!("a login at {host} failed: {status} {code}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    bodies.len() as f64 / start.elapsed().as_secs_f64()
}

/// The form body of an IdP-initiated response (the test fixtures' IdP,
/// signed now, valid an hour) for a new user `email` in the group that
/// grants the licensed type, posted to `host`'s ACS.
pub fn first_login_body(
    idp: &samlgate::devidp::DevIdp,
    host: &str,
    email: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Bytes {
    let p = samlgate::devidp::ResponseParams {
        name_id: email.to_owned(),
        attributes: vec![
            ("email".into(), vec![email.to_owned()]),
            ("groups".into(), vec!["Meetings-Licensed".into()]),
        ],
        acs_url: format!("http://{host}/saml/acs"),
        audience: format!("http://{host}/saml/metadata"),
        in_response_to: None,
        now,
        validity: chrono::Duration::minutes(60),
        assertion_id: None,
    };
    let b64 = idp.response_b64(&p).unwrap();
    Bytes::from(format!(
        "SAMLResponse={}",
        samlgate::gateway::url_encode(&b64)
    ))
}

/// The median (sorts `v`).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
