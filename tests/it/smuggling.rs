//! Request smuggling and connection reuse (issue #23), over real sockets,
//! each attack against both forwarding paths (the fast path and the
//! general hyper path) of two gateways sharing one store and one recording
//! upstream (`fast_path::pair`).
//!
//! The attack: a signed-in user (bob) sends `Connection: content-length`
//! with a body that is itself a whole request carrying forged identity
//! headers. A gateway that drops `Content-Length` as hop-by-hop but still
//! relays the body makes the upstream read a second request on a
//! connection it trusts. Three consequences were shown: identity forgery,
//! the hijack of the next user's request on a pooled upstream connection,
//! and response-queue poisoning. Each is a test here; so is the same rule
//! on answers and the rule that a pooled upstream connection is never
//! reused after a framing error.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fast_path::{Got, Pair, Seen, addr_of, pair, parse_responses};

/// The forged request bob hides in his body.
const FORGED: &str = "GET /admin/delete-all HTTP/1.1\r\nHost: upstream\r\nX-Samlgate-Email: alice@example.com\r\nX-Samlgate-License: licensed\r\nX-Samlgate-Groups: Admins\r\n\r\n";

/// Both gateways of the pair, named.
fn paths(p: &Pair) -> [(&'static str, String); 2] {
    [("fast", addr_of(&p.fast)), ("general", addr_of(&p.general))]
}

/// Sends `req` on a kept-alive connection and reads until the gateway
/// closes it (or 10 s pass): what came back, and whether it closed.
async fn send_and_drain(addr: &str, req: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .is_ok();
    (out, closed)
}

/// bob's smuggling request: `POST /harmless` whose `Connection` names
/// `option`, with `body` framed by Content-Length (or chunked when the
/// option is Transfer-Encoding).
fn smuggle(addr: &str, cookie: &str, option: &str, body: &str) -> String {
    if option.to_ascii_lowercase().contains("transfer-encoding") {
        format!(
            "POST /harmless HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: {option}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    } else {
        format!(
            "POST /harmless HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: {option}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

fn seen_now(p: &Pair) -> Vec<Seen> {
    p.up.seen.lock().unwrap().clone()
}

fn assert_refused(path: &str, option: &str, raw: &[u8], closed: bool) {
    let got = parse_responses(raw, false);
    assert_eq!(got.len(), 1, "{path}/{option}: one answer, got {got:?}");
    assert!(
        got[0].status_line.starts_with("HTTP/1.1 400"),
        "{path}/{option}: {got:?}"
    );
    assert!(
        String::from_utf8_lossy(&got[0].body).contains("connection_option_invalid"),
        "{path}/{option}: {got:?}"
    );
    assert!(closed, "{path}/{option}: the gateway closes the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_identity_forgery_is_refused_on_both_paths() {
    let p = pair(|_| {}).await;
    let bob = p.fast.login("bob@example.com").await;
    for (path, addr) in paths(&p) {
        for option in [
            "content-length",
            "Content-Length",
            "close, content-length",
            "keep-alive,CONTENT-LENGTH",
            "transfer-encoding",
            "keep-alive, Transfer-Encoding",
            "host",
        ] {
            p.up.seen.lock().unwrap().clear();
            let req = smuggle(&addr, &bob, option, FORGED);
            let (raw, closed) = send_and_drain(&addr, req.as_bytes()).await;
            assert_refused(path, option, &raw, closed);
            let seen = seen_now(&p);
            assert!(
                seen.is_empty(),
                "{path}/{option}: nothing reaches the upstream, it saw {seen:?}"
            );
        }
        // The control: the same bytes without the Connection option are one
        // request whose body is those bytes, under bob's identity.
        p.up.seen.lock().unwrap().clear();
        let req = format!(
            "POST /harmless HTTP/1.1\r\nHost: {addr}\r\nCookie: {bob}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{FORGED}",
            FORGED.len()
        );
        let (raw, _) = send_and_drain(&addr, req.as_bytes()).await;
        let got = parse_responses(&raw, false);
        assert!(
            got[0].status_line.starts_with("HTTP/1.1 200"),
            "{path}: {got:?}"
        );
        let seen = seen_now(&p);
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        assert_eq!(seen[0].target, "/harmless");
        assert_eq!(seen[0].body, FORGED.as_bytes());
        assert_eq!(seen[0].all("x-samlgate-email"), ["bob@example.com"]);
        assert_eq!(seen[0].all("content-length"), [FORGED.len().to_string()]);
    }
    let m = p.fast.gateway.metrics.render();
    assert!(
        m.lines().any(|l| l
            .starts_with("samlgate_requests_refused_total{code=\"connection_option_invalid\"}")),
        "{m}"
    );
}

/// alice's requests, each on its own kept-alive connection: every answer
/// must be the one to her own request.
async fn alice_asks(p: &Pair, addr: &str, rounds: usize) {
    for i in 0..rounds {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /whoami?n={i} HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            p.cookie
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
            .await
            .expect("alice gets her answer at once")
            .unwrap();
        let got: Vec<Got> = parse_responses(&raw, false);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            String::from_utf8_lossy(&got[0].body),
            format!("GET /whoami?n={i} alice@example.com"),
            "alice receives the answer to her own request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_hijack_of_another_users_request_is_impossible_on_both_paths() {
    let p = pair(|_| {}).await;
    let bob = p.fast.login("bob@example.com").await;
    // An unfinished head: on a desynchronised pooled connection, the next
    // user's request would complete it (her cookies and identity, bob's
    // method and path).
    let partial = "GET /admin/delete-all HTTP/1.1\r\nX-Pad: ";
    for (path, addr) in paths(&p) {
        p.up.seen.lock().unwrap().clear();
        for _ in 0..4 {
            let req = smuggle(&addr, &bob, "content-length", partial);
            let (raw, closed) = send_and_drain(&addr, req.as_bytes()).await;
            assert_refused(path, "content-length", &raw, closed);
        }
        alice_asks(&p, &addr, 8).await;
        let seen = seen_now(&p);
        assert_eq!(seen.len(), 8, "{path}: only alice's requests: {seen:?}");
        for s in &seen {
            assert!(s.target.starts_with("/whoami?n="), "{path}: {s:?}");
            assert_eq!(s.all("x-samlgate-email"), ["alice@example.com"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_response_queue_poisoning_is_impossible_on_both_paths() {
    let p = pair(|_| {}).await;
    let bob = p.fast.login("bob@example.com").await;
    // A smuggled request to a slow endpoint: its answer would be queued on
    // the pooled connection for the next user to receive.
    let slow = "GET /slow HTTP/1.1\r\nHost: upstream\r\n\r\n";
    for (path, addr) in paths(&p) {
        p.up.seen.lock().unwrap().clear();
        for _ in 0..4 {
            let req = smuggle(&addr, &bob, "Content-Length", slow);
            let (raw, closed) = send_and_drain(&addr, req.as_bytes()).await;
            assert_refused(path, "Content-Length", &raw, closed);
        }
        alice_asks(&p, &addr, 8).await;
        assert!(
            seen_now(&p).iter().all(|s| s.target != "/slow"),
            "{path}: the smuggled request never reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_whose_connection_names_their_framing_are_502_and_never_pooled() {
    let p = pair(|_| {}).await;
    for (path, addr) in paths(&p) {
        for bad in ["/cl-named", "/te-named"] {
            // A kept-alive client connection: the 502 closes it.
            let req = format!(
                "GET {bad} HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\n\r\n",
                p.cookie
            );
            let (raw, closed) = send_and_drain(&addr, req.as_bytes()).await;
            let got = parse_responses(&raw, false);
            assert_eq!(got.len(), 1, "{path}{bad}: {got:?}");
            assert!(
                got[0].status_line.starts_with("HTTP/1.1 502"),
                "{path}{bad}: {got:?}"
            );
            assert!(closed, "{path}{bad}: the client connection closes");
            // The upstream connection that carried it is closed by the
            // gateway, never pooled (other idle connections may be: which
            // one a later request takes is the pool's business), and the
            // bytes after its answer ("evil") reach nobody.
            let start = std::time::Instant::now();
            while !p.up.closed_after.lock().unwrap().iter().any(|c| c == bad) {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{path}{bad}: the upstream connection that carried it stays open"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            p.up.closed_after.lock().unwrap().clear();
            alice_asks(&p, &addr, 4).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_upstream_connection_is_never_shared_after_a_framing_error() {
    let p = pair(|_| {}).await;
    for (path, addr) in paths(&p) {
        // Two answers to one request: the first is relayed, the second must
        // never be taken for the answer to anyone's next request.
        for _ in 0..4 {
            let req = format!(
                "GET /double HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
                p.cookie
            );
            let (raw, _) = send_and_drain(&addr, req.as_bytes()).await;
            let got = parse_responses(&raw, false);
            assert_eq!(got.len(), 1, "{path}: {got:?}");
            assert_eq!(got[0].body, b"ok", "{path}");
            alice_asks(&p, &addr, 4).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_and_identity_spellings_never_reach_the_upstream() {
    let family = [
        "X-Real-IP: 6.6.6.6",
        "True-Client-IP: 6.6.6.6",
        "X-Client-IP: 6.6.6.6",
        "CF-Connecting-IP: 6.6.6.6",
        "X-Forwarded-Port: 1",
        "X-Forwarded-Prefix: /evil",
        "X-Forwarded-Server: evil",
        "X-Original-URL: /admin",
        "X-Rewrite-URL: /admin",
        "X-HTTP-Method-Override: DELETE",
        "Forwarded: for=6.6.6.6",
    ];
    let spellings = [
        "X.Samlgate.Email: mallory@evil",
        "XSamlgateEmail: mallory@evil",
        "x--samlgate--license: evil-license",
        "X_Samlgate_Groups: evil-admins",
    ];
    let p = pair(|_| {}).await;
    for (path, addr) in paths(&p) {
        p.up.seen.lock().unwrap().clear();
        let extra: String = family
            .iter()
            .chain(spellings.iter())
            .map(|h| format!("{h}\r\n"))
            .collect();
        let req = format!(
            "GET /whoami HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\n{extra}Connection: close\r\n\r\n",
            p.cookie
        );
        let (raw, _) = send_and_drain(&addr, req.as_bytes()).await;
        let got = parse_responses(&raw, false);
        assert_eq!(
            String::from_utf8_lossy(&got[0].body),
            "GET /whoami alice@example.com",
            "{path}"
        );
        let seen = seen_now(&p);
        assert_eq!(seen.len(), 1, "{path}");
        for (k, v) in &seen[0].headers {
            let squashed: String = k.chars().filter(char::is_ascii_alphanumeric).collect();
            assert!(
                !v.contains("6.6.6.6")
                    && !v.contains("evil")
                    && !v.contains("/admin")
                    && v != "DELETE",
                "{path}: {k}: {v} reached the upstream"
            );
            if squashed.starts_with("xsamlgate") {
                assert!(
                    k.starts_with("x-samlgate-"),
                    "{path}: {k} reached the upstream"
                );
            }
        }
        assert_eq!(seen[0].all("x-samlgate-license").len(), 1, "{path}");
    }
    // From a trusted proxy the family is kept (and X-Forwarded-For chained).
    let p = pair(|c| c.upstream.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    for (path, addr) in paths(&p) {
        p.up.seen.lock().unwrap().clear();
        let req = format!(
            "GET /whoami HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nX-Real-IP: 10.1.2.3\r\nX-Forwarded-Port: 443\r\nConnection: close\r\n\r\n",
            p.cookie
        );
        send_and_drain(&addr, req.as_bytes()).await;
        let seen = seen_now(&p);
        assert_eq!(seen[0].all("x-real-ip"), ["10.1.2.3"], "{path}");
        assert_eq!(seen[0].all("x-forwarded-port"), ["443"], "{path}");
    }
}
