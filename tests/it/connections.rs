//! Connection hygiene on the public listener (issue #23), over real
//! sockets, against both forwarding paths: idle and half-sent connections,
//! HTTP/2 that never sends a request, stalled TLS handshakes, the
//! connection cap, clients that stop reading, the head and body caps, and
//! the head rules (Host, CONNECT) both paths share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use samlgate::metrics::{CONNECTIONS, CloseReason, Listener};
use samlgate::store::Store;
use samlgate::store::embedded::EmbeddedStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fast_path::{Pair, addr_of, exchange_raw, pair, parse_responses};
use super::gateway::tls::{client, test_pki};
use super::gateway::{TestClock, gateway_with};

/// A gateway served over TLS (a test CA's certificate for 127.0.0.1).
struct OverTls {
    ca: std::path::PathBuf,
    addr: String,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn over_tls(g: &super::gateway::Gw) -> OverTls {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(dir.path());
    let acceptor = samlgate::server::tls::acceptor(&cert, &key).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let gw = Arc::clone(&g.gateway);
    tokio::spawn(async move {
        samlgate::server::serve_tls(l, gw, Some(acceptor), &mut rx, Duration::from_secs(1)).await;
    });
    OverTls {
        ca,
        addr,
        _stop: tx,
        _dir: dir,
    }
}

/// A WebSocket tunnel through the gateway at `addr` to the upstream's
/// echoing `/ws`, checked to work.
async fn open_tunnel(addr: &str, cookie: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1);
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ping");
    s
}

fn paths(p: &Pair) -> [(&'static str, String); 2] {
    [("fast", addr_of(&p.fast)), ("general", addr_of(&p.general))]
}

/// Reads from `s` until the peer closes (EOF or reset); the time it took,
/// or `None` if it stayed open for `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let r = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| (start.elapsed(), got))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_on_both_paths() {
    let p = pair(|c| {
        c.listen.limits.idle_timeout_secs = 1;
        c.listen.limits.header_timeout_secs = 1;
    })
    .await;
    let before = CONNECTIONS.closed_count(Listener::Public, CloseReason::Idle);
    for (path, addr) in paths(&p) {
        // Silent from the start.
        let mut s = TcpStream::connect(&addr).await.unwrap();
        assert!(
            closed_within(&mut s, Duration::from_secs(15))
                .await
                .is_some(),
            "{path}: a silent connection is closed"
        );
        // Silent after a complete exchange (kept alive).
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\n\r\n",
            p.cookie
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let (_, got) = closed_within(&mut s, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{path}: an idle kept-alive connection is closed"));
        assert!(got.starts_with(b"HTTP/1.1 200"), "{path}: answered first");
        // A head that never completes.
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
            .await
            .unwrap();
        assert!(
            closed_within(&mut s, Duration::from_secs(15))
                .await
                .is_some(),
            "{path}: an unfinished head is closed"
        );
    }
    assert!(CONNECTIONS.closed_count(Listener::Public, CloseReason::Idle) > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_not_served_on_the_plain_port() {
    let p = pair(|c| c.listen.limits.idle_timeout_secs = 1).await;
    // The HTTP/2 connection preface, then an empty SETTINGS frame.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    for (path, addr) in paths(&p) {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&preface).await.unwrap();
        let (_, got) = closed_within(&mut s, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{path}: the connection is closed"));
        // An HTTP/2 server answers with a SETTINGS frame (type 4 in the
        // fourth byte); HTTP/1.1 refuses the preface or says nothing.
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 4") || got.starts_with(b"HTTP/1.1 5"),
            "{path}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_and_http2_connections_that_stall_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("s.db"), clock.clone()).unwrap());
    let g = gateway_with(store, clock, |c| {
        c.listen.limits.idle_timeout_secs = 1;
        c.listen.limits.tls_handshake_timeout_secs = 1;
    })
    .await;
    let t = over_tls(&g).await;
    let (ca, addr) = (&t.ca, t.addr.clone());
    // A TCP connection that never starts its handshake.
    let before = CONNECTIONS.closed_count(Listener::Public, CloseReason::HandshakeTimeout);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(15))
            .await
            .is_some()
    );
    assert!(CONNECTIONS.closed_count(Listener::Public, CloseReason::HandshakeTimeout) > before);
    // HTTP/2 over TLS: the preface and SETTINGS, then nothing.
    let mut tls = client(ca, &addr, &[b"h2"]).await;
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    tls.write_all(&preface).await.unwrap();
    assert!(
        closed_within(&mut tls, Duration::from_secs(15))
            .await
            .is_some(),
        "an HTTP/2 connection with no request is closed"
    );
    // Half a preface.
    let mut tls = client(ca, &addr, &[b"h2"]).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(
        closed_within(&mut tls, Duration::from_secs(15))
            .await
            .is_some(),
        "half a preface is closed"
    );
    // Nothing at all after the handshake, HTTP/1.1.
    let mut tls = client(ca, &addr, &[b"http/1.1"]).await;
    assert!(
        closed_within(&mut tls, Duration::from_secs(15))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_pauses_accepting_until_one_closes() {
    let p = pair(|c| c.listen.limits.max_connections = 3).await;
    for (path, addr) in paths(&p) {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(&addr).await.unwrap());
        }
        // Give the accept loop time to take all three.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut fourth = TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            p.cookie
        );
        fourth.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 16];
        assert!(
            tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut buf))
                .await
                .is_err(),
            "{path}: not served while three connections are open"
        );
        drop(held.pop());
        let (_, got) = closed_within(&mut fourth, Duration::from_secs(15))
            .await
            .unwrap();
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{path}: served once one closed"
        );
    }
    let m = p.fast.gateway.metrics.render();
    assert!(
        m.lines().any(
            |l| l.starts_with("samlgate_connections_at_cap_total{listener=\"public\"}")
                && !l.ends_with(" 0")
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_on_both_paths() {
    let p = pair(|c| c.listen.limits.write_timeout_secs = 1).await;
    for (path, addr) in paths(&p) {
        let before = CONNECTIONS.closed_count(Listener::Public, CloseReason::WriteTimeout);
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(addr.parse().unwrap()).await.unwrap();
        let req = format!(
            "GET /huge HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\n\r\n",
            p.cookie
        );
        s.write_all(req.as_bytes()).await.unwrap();
        // Read nothing: the gateway's writes stall, then it gives up.
        let deadline = Instant::now() + Duration::from_secs(30);
        while CONNECTIONS.closed_count(Listener::Public, CloseReason::WriteTimeout) == before {
            assert!(
                Instant::now() < deadline,
                "{path}: the stalled write times out"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // What is left to read ends well before the 64 MiB answer.
        let (_, got) = closed_within(&mut s, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(got.len() < 64 * 1024 * 1024, "{path}: cut off");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_body_caps_on_both_paths() {
    let p = pair(|c| c.listen.limits.max_body_bytes = 10_000).await;
    for (path, addr) in paths(&p) {
        p.up.seen.lock().unwrap().clear();
        let c = &p.cookie;
        // A head over 64 KiB: 431.
        let pad = "a".repeat(70 * 1024);
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\nX-Pad: {pad}\r\nConnection: close\r\n\r\n"
        );
        let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.1 431"),
            "{path}: {got:?}"
        );
        assert!(
            p.up.seen.lock().unwrap().is_empty(),
            "{path}: not forwarded"
        );
        // Just under it: forwarded.
        let pad = "a".repeat(60 * 1024);
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\nX-Pad: {pad}\r\nConnection: close\r\n\r\n"
        );
        let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.1 200"),
            "{path}: {got:?}"
        );
        // Declared bodies over listen.max_body_bytes, up to 2^64-1: 413.
        for len in ["10001", "18446744073709551615"] {
            let req = format!(
                "POST / HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\nContent-Length: {len}\r\n\r\nxx"
            );
            let (_, raw) = {
                let mut s = TcpStream::connect(&addr).await.unwrap();
                s.write_all(req.as_bytes()).await.unwrap();
                closed_within(&mut s, Duration::from_secs(15))
                    .await
                    .unwrap()
            };
            let got = parse_responses(&raw, false);
            // 413 from the gateway; a length hyper cannot represent
            // (u64::MAX is its marker for chunked) is refused while parsing.
            assert!(
                got[0].status_line.starts_with("HTTP/1.1 413")
                    || (len.len() > 10 && got[0].status_line.starts_with("HTTP/1.1 4")),
                "{path} {len}: {got:?}"
            );
        }
        assert_eq!(
            p.up.seen.lock().unwrap().len(),
            1,
            "{path}: only the 60 KiB head went up"
        );
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\nContent-Length: 10000\r\nConnection: close\r\n\r\n{}",
            "b".repeat(10_000)
        );
        let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.1 200"),
            "{path}: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_method_rules_on_both_paths() {
    let p = pair(|_| {}).await;
    for (path, addr) in paths(&p) {
        let c = &p.cookie;
        let cases = [
            (
                "no Host",
                format!("GET / HTTP/1.1\r\nCookie: {c}\r\n\r\n"),
                "400",
                "host_invalid",
            ),
            (
                "two Hosts",
                format!("GET / HTTP/1.1\r\nHost: {addr}\r\nHost: other\r\nCookie: {c}\r\n\r\n"),
                "400",
                "host_invalid",
            ),
            (
                "Host with user info",
                format!("GET / HTTP/1.1\r\nHost: user@{addr}\r\nCookie: {c}\r\n\r\n"),
                "400",
                "host_invalid",
            ),
            (
                "CONNECT",
                format!(
                    "CONNECT upstream:443 HTTP/1.1\r\nHost: upstream:443\r\nCookie: {c}\r\n\r\n"
                ),
                "405",
                "method_not_allowed",
            ),
        ];
        for (what, req, status, code) in cases {
            p.up.seen.lock().unwrap().clear();
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let (_, raw) = closed_within(&mut s, Duration::from_secs(15))
                .await
                .unwrap_or_else(|| panic!("{path} {what}: the connection closes"));
            let got = parse_responses(&raw, false);
            assert!(
                got[0]
                    .status_line
                    .starts_with(&format!("HTTP/1.1 {status}")),
                "{path} {what}: {got:?}"
            );
            assert!(
                String::from_utf8_lossy(&got[0].body).contains(code),
                "{path} {what}"
            );
            assert!(
                p.up.seen.lock().unwrap().is_empty(),
                "{path} {what}: not forwarded"
            );
        }
        // HTTP/1.0 without Host is still served.
        let req = format!("GET / HTTP/1.0\r\nCookie: {c}\r\n\r\n");
        let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.0 200"),
            "{path}: {got:?}"
        );
        // A few blank lines before a request are fine.
        let req = format!(
            "\r\n\r\n\nGET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\nConnection: close\r\n\r\n"
        );
        let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.1 200"),
            "{path}: {got:?}"
        );
    }
    for (path, addr) in paths(&p) {
        // Many blank lines before a request: skipped, as hyper skips them.
        let req = format!(
            "{}GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            "\r\n".repeat(1000),
            p.cookie
        );
        let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.1 200"),
            "{path}: {got:?}"
        );
        // Over 64 KiB of them, in one piece: the same (each blank byte is
        // looked at once; the head timeout bounds a stream that never ends).
        let req = format!(
            "{}GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            "\r\n".repeat(40_000),
            p.cookie
        );
        let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.1 200"),
            "{path}: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_and_101s_on_both_paths() {
    let p = pair(|_| {}).await;
    for (path, addr) in paths(&p) {
        let c = &p.cookie;
        // A 101 nobody asked for: 502.
        let req = format!(
            "GET /upgrade HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\nConnection: close\r\n\r\n"
        );
        let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.1 502"),
            "{path}: {got:?}"
        );
        // A WebSocket upgrade: the upstream gets the gateway's Connection
        // and Upgrade, never the client's Connection list or what it names.
        p.up.seen.lock().unwrap().clear();
        let req = format!(
            "GET /upgrade HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\nConnection: Upgrade, X-Secret\r\nX-Secret: s\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 101"),
            "{path}: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        let seen = p.up.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(seen[0].all("connection"), ["upgrade"], "{path}");
        assert_eq!(seen[0].all("upgrade"), ["websocket"], "{path}");
        assert!(seen[0].all("x-secret").is_empty(), "{path}");
        assert_eq!(
            seen[0].all("x-samlgate-email"),
            ["alice@example.com"],
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_end_when_their_session_ends() {
    let p = pair(|_| {}).await;
    // Two users with a tunnel each; bob signs out, alice does not.
    let bob = p.fast.login("bob@example.com").await;
    let addr = addr_of(&p.fast);
    let mut alice_ws = open_tunnel(&addr, &p.cookie).await;
    let mut bob_ws = open_tunnel(&addr, &bob).await;
    let before = CONNECTIONS.closed_count(Listener::Public, CloseReason::TunnelEnded);
    let r = exchange_raw(
        &addr,
        format!("GET /saml/logout HTTP/1.1\r\nHost: {addr}\r\nCookie: {bob}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        r.starts_with(b"HTTP/1.1 30") || r.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    // bob's tunnel closes within the recheck interval (1 s here).
    assert!(
        closed_within(&mut bob_ws, Duration::from_secs(15))
            .await
            .is_some(),
        "the signed-out user's tunnel ends"
    );
    assert!(CONNECTIONS.closed_count(Listener::Public, CloseReason::TunnelEnded) > before);
    // alice's still works.
    alice_ws.write_all(b"pong").await.unwrap();
    let mut b = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), alice_ws.read_exact(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&b, b"pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_http2_connection_holds_at_most_h2_max_streams_upstream_connections() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    // The recording upstream of the fast-path pair (its /slow answers after
    // 2.5 s), behind a TLS gateway with 4 streams per HTTP/2 connection.
    let p = pair(|_| {}).await;
    let up = format!("http://{}", p.up.addr);
    let g = gateway_with(Arc::clone(&p.fast.store), p.fast.clock.clone(), move |c| {
        c.upstream.url = up;
        c.listen.limits.h2_max_streams = 4;
    })
    .await;
    let t = over_tls(&g).await;
    let addr = t.addr.clone();
    let tls = client(&t.ca, &addr, &[b"h2"]).await;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let before = p.up.connections.load(std::sync::atomic::Ordering::SeqCst);
    // 16 concurrent slow requests on one connection.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut send = send.clone();
        let cookie = p.cookie.clone();
        let uri = format!("https://{addr}/slow?i={i}");
        tasks.push(tokio::spawn(async move {
            let req = http::Request::builder()
                .uri(uri)
                .header("cookie", cookie)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            send.ready().await.unwrap();
            send.send_request(req).await.map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = p.up.connections.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        during <= 4,
        "{during} upstream connections opened by one HTTP/2 connection at once"
    );
    // Streams beyond the limit are served in turn, or refused with
    // REFUSED_STREAM (safe for a client to retry) when opened before the
    // client heard the limit.
    let mut served = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(status) => {
                assert_eq!(status, 200);
                served += 1;
            }
            Err(e) => assert!(format!("{e:?}").contains("REFUSED_STREAM"), "{e:?}"),
        }
    }
    assert!(served >= 4, "only {served} streams served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_streams_longer_than_the_idle_timeout_is_not_cut() {
    let p = pair(|c| c.listen.limits.idle_timeout_secs = 1).await;
    for (path, addr) in paths(&p) {
        let req = format!(
            "GET /slow-body HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            p.cookie
        );
        let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.1 200"),
            "{path}: {got:?}"
        );
        assert_eq!(got[0].body, b"xxxx", "{path}: the whole body, over 2.4 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_count_against_the_connection_cap() {
    let p = pair(|c| c.listen.limits.max_connections = 2).await;
    let addr = addr_of(&p.fast);
    // A tunnel: its HTTP connection is gone, the tunnel holds the slot.
    let ws = open_tunnel(&addr, &p.cookie).await;
    // One more connection fills the cap.
    let _idle = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        p.cookie
    );
    third.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 16];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "not served while the tunnel and the idle connection hold both slots"
    );
    drop(ws);
    let (_, got) = closed_within(&mut third, Duration::from_secs(15))
        .await
        .unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "served once the tunnel closed"
    );
}
