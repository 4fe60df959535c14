//! The forwarding fast path (`src/gateway/fast.rs`) against the general
//! path (hyper server + client, `upstream.fast_path = false`), side by side:
//! the same raw requests through two gateways sharing one store and one
//! recording upstream; what the upstream receives and what the client gets
//! back must be the same. Then what only the fast path does: pipelining,
//! handing a connection over mid-way, stale kept-alive upstream
//! connections, bad, slow and absent upstreams, slow clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use samlgate::store::Store;
use samlgate::store::embedded::EmbeddedStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::gateway::{Gw, TestClock, gateway_with};

/// What the upstream received: method, target, headers (lowercased names,
/// sorted), body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of header `name` (lowercase), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A raw upstream that records every request and answers by path.
pub(super) struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    /// For each connection the gateway closed between requests, the path
    /// of the last request it carried.
    pub closed_after: Arc<Mutex<Vec<String>>>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads from `s` into `buf` until it holds a CRLF; returns where.
async fn crlf(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = find(buf, b"\r\n") {
            return Some(i);
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Reads a chunked body from `buf` (refilling from `s`); returns it decoded.
async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let i = crlf(s, buf).await?;
        let line = String::from_utf8_lossy(&buf[..i]).to_string();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).ok()?;
        buf.drain(..i + 2);
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                let i = crlf(s, buf).await?;
                buf.drain(..i + 2);
                if i == 0 {
                    return Some(body);
                }
            }
        }
        while buf.len() < size + 2 {
            let mut tmp = [0u8; 65536];
            let n = s.read(&mut tmp).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

fn answer(path: &str) -> Vec<u8> {
    match path {
        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: c\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
        "/close" => b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Up: close\r\n\r\nuntil the end".to_vec(),
        "/early" => b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        "/204" => b"HTTP/1.1 204 No Content\r\nX-Up: none\r\n\r\n".to_vec(),
        "/304" => b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec(),
        "/named" => b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: s\r\nX-Kept: k\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        "/reason" => b"HTTP/1.1 299 Custom Reason\r\nContent-Length: 0\r\n\r\n".to_vec(),
        "/cookies" => b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n".to_vec(),
        "/big" => {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
            r.extend((0..1_048_576u32).map(|i| (i % 251) as u8));
            r
        }
        "/huge" => {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n".to_vec();
            r.resize(r.len() + 67_108_864, b'h');
            r
        }
        "/big-chunked" => {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for k in 0..40u32 {
                let chunk: Vec<u8> = (0..(7000 + k * 13)).map(|i| (i % 241) as u8).collect();
                r.extend(format!("{:X}\r\n", chunk.len()).as_bytes());
                r.extend(chunk);
                r.extend(b"\r\n");
            }
            r.extend(b"0\r\n\r\n");
            r
        }
        "/conflict" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
        "/both" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        "/gzip-te" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx".to_vec(),
        "/slow-body" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        "/ws" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_vec(),
        "/upgrade" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_vec(),
        // Framing an intermediary may not remove: the answer cannot be relayed.
        "/cl-named" => b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil".to_vec(),
        "/te-named" => b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        // Two answers to one request: the second must never reach anyone.
        "/double" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello".to_vec(),
    }
}

async fn upstream() -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let closed_after: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s2, c2, ca2) = (
        Arc::clone(&seen),
        Arc::clone(&connections),
        Arc::clone(&closed_after),
    );
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&s2);
            let closed_after = Arc::clone(&ca2);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut last = String::new();
                loop {
                    while find(&buf, b"\r\n\r\n").is_none() {
                        let mut tmp = [0u8; 65536];
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => {
                                if buf.is_empty() && !last.is_empty() {
                                    closed_after.lock().unwrap().push(last);
                                }
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
                    let mut hs = [httparse::EMPTY_HEADER; 128];
                    let mut req = httparse::Request::new(&mut hs);
                    req.parse(&buf[..end]).unwrap();
                    let method = req.method.unwrap().to_owned();
                    let target = req.path.unwrap().to_owned();
                    let mut headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    headers.sort();
                    buf.drain(..end);
                    let header =
                        |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                    let body = if header("transfer-encoding").is_some() {
                        match read_chunked(&mut s, &mut buf).await {
                            Some(b) => b,
                            None => return,
                        }
                    } else {
                        let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
                        while buf.len() < len {
                            let mut tmp = [0u8; 65536];
                            match s.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        }
                        buf.drain(..len).collect()
                    };
                    let path = target.split('?').next().unwrap().to_owned();
                    last.clone_from(&path);
                    seen.lock().unwrap().push(Seen {
                        method: method.clone(),
                        target: target.clone(),
                        headers: headers.clone(),
                        body,
                    });
                    if path == "/slow" {
                        tokio::time::sleep(Duration::from_millis(2500)).await;
                    }
                    // Who asked what: the answer names the request it answers.
                    let mut a = if path == "/whoami" {
                        let email = headers
                            .iter()
                            .find(|(k, _)| k == "x-samlgate-email")
                            .map_or("-", |(_, v)| v.as_str());
                        let body = format!("{method} {target} {email}");
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .into_bytes()
                    } else {
                        answer(&path)
                    };
                    if method == "HEAD" {
                        // A HEAD answer has heads only (a 1xx, then the
                        // final one).
                        let mut end = find(&a, b"\r\n\r\n").unwrap() + 4;
                        if a.starts_with(b"HTTP/1.1 1") {
                            end += find(&a[end..], b"\r\n\r\n").unwrap() + 4;
                        }
                        a.truncate(end);
                    }
                    if s.write_all(&a).await.is_err() {
                        return;
                    }
                    if path == "/slow-body" {
                        // A body that trickles for longer than an idle
                        // timeout of one second.
                        for _ in 0..4 {
                            tokio::time::sleep(Duration::from_millis(600)).await;
                            if s.write_all(b"1\r\nx\r\n").await.is_err() {
                                return;
                            }
                        }
                        if s.write_all(b"0\r\n\r\n").await.is_err() {
                            return;
                        }
                        continue;
                    }
                    if path == "/ws" {
                        // A tunnel: echo whatever comes, until closed.
                        let (mut r, mut w) = s.split();
                        if !buf.is_empty() && w.write_all(&buf).await.is_err() {
                            return;
                        }
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        return;
                    }
                    if path == "/close"
                        || path == "/conflict"
                        || path == "/both"
                        || path == "/gzip-te"
                    {
                        return;
                    }
                    if path == "/bye" {
                        // Kept alive in words, closed soon after in deed.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return;
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        seen,
        connections,
        closed_after,
    }
}

pub(super) fn addr_of(g: &Gw) -> String {
    g.base.trim_start_matches("http://").to_owned()
}

/// A client's view of one response: status line, headers (lowercased,
/// sorted, without Date), body (de-chunked).
#[derive(PartialEq, Eq)]
pub(super) struct Got {
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let cut: String = body.chars().take(300).collect();
        write!(
            f,
            "{} {:?} [{} bytes] {cut:?}",
            self.status_line,
            self.headers,
            self.body.len()
        )
    }
}

/// Sends `req` on a new connection and reads everything until the server
/// closes it (requests here say `Connection: close`).
pub(super) async fn exchange_raw(addr: &str, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .ok();
    out
}

/// Reads one response with a Content-Length body, whole, from a kept-alive
/// connection.
pub async fn read_response(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
        let mut tmp = [0u8; 65536];
        let n = s.read(&mut tmp).await.unwrap();
        assert!(
            n > 0,
            "connection closed mid-response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Splits raw response bytes into responses (`head_only`: answers to HEAD).
pub(super) fn parse_responses(mut raw: &[u8], head_only: bool) -> Vec<Got> {
    let mut all = Vec::new();
    while !raw.is_empty() {
        let end = find(raw, b"\r\n\r\n").expect("a complete head") + 4;
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap().to_owned();
        let mut headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        raw = &raw[end..];
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let code: u16 = status_line[9..12].parse().unwrap();
        let body: Vec<u8> = if head_only || code == 204 || code == 304 || (100..200).contains(&code)
        {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            loop {
                let i = find(raw, b"\r\n").unwrap();
                let size = usize::from_str_radix(
                    std::str::from_utf8(&raw[..i])
                        .unwrap()
                        .split(';')
                        .next()
                        .unwrap(),
                    16,
                )
                .unwrap();
                raw = &raw[i + 2..];
                if size == 0 {
                    let j = find(raw, b"\r\n\r\n").map_or(2, |j| j + 4);
                    let j = if raw.starts_with(b"\r\n") { 2 } else { j };
                    raw = &raw[j..];
                    break;
                }
                body.extend_from_slice(&raw[..size]);
                raw = &raw[size + 2..];
            }
            body
        } else if let Some(l) = get("content-length") {
            let l: usize = l.parse().unwrap();
            let b = raw[..l].to_vec();
            raw = &raw[l..];
            b
        } else {
            let b = raw.to_vec();
            raw = &[];
            b
        };
        headers.retain(|(k, _)| k != "date");
        headers.sort();
        all.push(Got {
            status_line,
            headers,
            body,
        });
    }
    all
}

pub(super) struct Pair {
    pub fast: Gw,
    pub general: Gw,
    pub up: Upstream,
    pub cookie: String,
    _dir: tempfile::TempDir,
}

pub(super) async fn pair(tune: impl Fn(&mut samlgate::config::Config) + Clone) -> Pair {
    let up = upstream().await;
    let clock = TestClock::new();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("s.db"), clock.clone()).unwrap());
    let url = format!("http://{}", up.addr);
    let (u1, t1) = (url.clone(), tune.clone());
    let fast = gateway_with(Arc::clone(&store), clock.clone(), move |c| {
        t1(c);
        c.upstream.url = u1;
        c.upstream.fast_path = true;
    })
    .await;
    let general = gateway_with(Arc::clone(&store), clock.clone(), move |c| {
        tune(c);
        c.upstream.url = url;
        c.upstream.fast_path = false;
    })
    .await;
    // One session, good on both (same store).
    let cookie = fast.login("alice@example.com").await;
    Pair {
        fast,
        general,
        up,
        cookie,
        _dir: dir,
    }
}

impl Pair {
    /// Sends `req` (with `{host}` and `{cookie}` filled in) to both, and
    /// returns (fast, general) as the client saw them and as the upstream
    /// saw them.
    async fn both(
        &self,
        req: &str,
        head_only: bool,
    ) -> ((Vec<Got>, Vec<Seen>), (Vec<Got>, Vec<Seen>)) {
        let mut out = Vec::new();
        for g in [&self.fast, &self.general] {
            let addr = addr_of(g);
            let bytes = req
                .replace("{host}", &addr)
                .replace("{cookie}", &self.cookie);
            self.up.seen.lock().unwrap().clear();
            let raw = exchange_raw(&addr, bytes.as_bytes()).await;
            let mut got = parse_responses(&raw, head_only);
            // Pages that name the gateway's own address (SP metadata).
            for r in &mut got {
                let text = String::from_utf8_lossy(&r.body).to_string();
                if text.contains(&addr) {
                    r.body = text.replace(&addr, "{host}").into_bytes();
                    r.headers.retain(|(k, _)| k != "content-length");
                }
            }
            let mut seen = self.up.seen.lock().unwrap().clone();
            // The Host each client sent differs (two gateways); so does the
            // X-Forwarded-Host derived from it.
            for s in &mut seen {
                for (k, v) in &mut s.headers {
                    if k == "x-forwarded-host" && *v == addr {
                        *v = "{host}".into();
                    }
                }
            }
            out.push((got, seen));
        }
        let general = out.pop().unwrap();
        let fast = out.pop().unwrap();
        (fast, general)
    }

    async fn same(&self, what: &str, req: &str, head_only: bool) -> (Vec<Got>, Vec<Seen>) {
        let (fast, general) = self.both(req, head_only).await;
        assert_eq!(
            fast.1, general.1,
            "{what}: the upstream received different requests (left: fast path)"
        );
        assert_eq!(
            fast.0, general.0,
            "{what}: the client got different answers (left: fast path)"
        );
        fast
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_forwards_what_the_general_path_forwards() {
    let p = pair(|_| {}).await;
    let big: String = "q".repeat(200_000);
    let cases: Vec<(&str, String, bool)> = vec![
        ("plain GET", "GET / HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("query and escapes", "GET /a/b%20c?x=1&y=%2F#frag HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".replace("#frag", ""), false),
        (
            "identity headers spoofed in every spelling",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Samlgate-Email: mallory@evil\r\nX_SAMLGATE_EMAIL: m2\r\nx-samlgate-groups: admins\r\nX-Samlgate-Whatever: w\r\nx_samlgate_first_name: M\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(),
            false,
        ),
        (
            "hop-by-hop and Connection-named headers",
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close, X-Drop, keep-alive\r\nX-Drop: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nTrailer: X\r\nProxy-Authorization: Basic x\r\nProxy-Connection: keep-alive\r\nX-Keep: 2\r\nCookie: {cookie}\r\n\r\n".into(),
            false,
        ),
        (
            "forwarding headers from an untrusted peer",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(),
            false,
        ),
        (
            "other cookies kept, the gateway's removed",
            "GET / HTTP/1.1\r\nHost: {host}\r\nCookie: a=1; {cookie}; b=2\r\nCookie: c=3\r\nConnection: close\r\n\r\n".into(),
            false,
        ),
        ("header name case and odd spacing", "GET / HTTP/1.1\r\nhOsT: {host}\r\nX-Mixed-CASE:   v  \r\nAccept: */*\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("POST with a small body", "POST /api/meetings HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 11\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n{\"a\":\"bc\"}\n".into(), false),
        ("POST with a 200 KB body", format!("PUT /upload HTTP/1.1\r\nHost: {{host}}\r\nContent-Length: {}\r\nCookie: {{cookie}}\r\nConnection: close\r\n\r\n{big}", big.len()), false),
        ("empty body with Content-Length: 0", "DELETE /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("HEAD", "HEAD /cl HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), true),
        ("chunked answer, extensions and trailers", "GET /chunked HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("answer delimited by close", "GET /close HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("1xx before the answer", "GET /early HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("204", "GET /204 HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("304", "GET /304 HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("answer's Connection-named headers", "GET /named HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("custom reason phrase", "GET /reason HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("several Set-Cookie", "GET /cookies HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("1 MB answer", "GET /big HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("long chunked answer", "GET /big-chunked HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        // Handed over to the general stack: the same by construction, and
        // proven so.
        ("chunked upload (handed over)", "POST /up HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n".into(), false),
        ("HTTP/1.0 (handed over)", "GET / HTTP/1.0\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n".into(), false),
        ("no session: API (handed over)", "GET /api HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".into(), false),
        ("no session: browser (handed over)", "GET /page HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\nConnection: close\r\n\r\n".into(), false),
        ("unknown session (handed over)", "GET / HTTP/1.1\r\nHost: {host}\r\nCookie: samlgate_session=forged\r\nConnection: close\r\n\r\n".into(), false),
        ("SAML endpoint (handed over)", "GET /saml/metadata HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("two Content-Length (handed over)", "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nContent-Length: 2\r\nCookie: {cookie}\r\nConnection: close\r\n\r\nab".into(), false),
        ("Content-Length and Transfer-Encoding (handed over)", "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n0\r\n\r\n".into(), false),
        ("absolute-form target (handed over)", "GET http://elsewhere.example/x HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".into(), false),
        ("garbage (handed over)", "GET / HTTP/1.1\r\nHost: {host}\r\nBad Header: x\r\nCookie: {cookie}\r\n\r\n".into(), false),
    ];
    for (what, req, head_only) in &cases {
        let (got, _) = p.same(what, req, *head_only).await;
        assert!(!got.is_empty(), "{what}: no answer");
    }
    // And the spoofed identity really is replaced, not merely the same on both.
    let (got, seen) = p
        .same(
            "spoof",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Samlgate-Email: mallory@evil\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
    assert!(got[0].status_line.starts_with("HTTP/1.1 200"));
    assert_eq!(seen[0].all("x-samlgate-email"), ["alice@example.com"]);
    assert!(
        !seen[0]
            .headers
            .iter()
            .any(|(k, v)| k == "cookie" && v.contains("samlgate_session")),
        "the session cookie never reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_matches_with_a_trusted_proxy_and_a_signed_header() {
    let p = pair(|c| {
        c.upstream.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.upstream.signed_header_key = Some("k".repeat(40));
    })
    .await;
    let (_, seen) = p
        .same(
            "trusted X-Forwarded-*",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: meet.example\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
    let h = |n: &str| seen[0].all(n).first().map(|v| v.to_string());
    assert_eq!(h("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
    assert_eq!(h("x-forwarded-proto").unwrap(), "https");
    assert_eq!(h("x-forwarded-host").unwrap(), "meet.example");
    assert!(h("x-samlgate-signature").unwrap().starts_with("t="));
    // Only the first X-Forwarded-For counts, and only if it is text.
    let (_, seen) = p
        .same(
            "first X-Forwarded-For not text",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: caf\u{e9}\r\nX-Forwarded-For: 10.0.0.2\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
    assert_eq!(seen[0].all("x-forwarded-for"), ["127.0.0.1"]);
    let (_, seen) = p
        .same(
            "two X-Forwarded-For",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 10.0.0.3\r\nX-Forwarded-For: 10.0.0.4\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
    assert!(
        seen[0]
            .headers
            .contains(&("x-forwarded-for".into(), "10.0.0.3, 127.0.0.1".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upstream_answers_are_502_on_both_paths() {
    let p = pair(|_| {}).await;
    for path in ["/conflict", "/upgrade", "/gzip-te"] {
        for g in [&p.fast, &p.general] {
            let addr = addr_of(g);
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
                p.cookie
            );
            let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
            let fast = std::ptr::eq(g, &p.fast);
            if fast || path == "/conflict" {
                assert!(
                    got[0].status_line.starts_with("HTTP/1.1 502"),
                    "{path} (fast: {fast}): {got:?}"
                );
            }
            if fast {
                assert!(String::from_utf8_lossy(&got[0].body).contains("upstream_unavailable"));
            }
        }
    }
    // Content-Length and Transfer-Encoding together: refused by the fast
    // path (a smuggling shape), never passed on.
    let addr = addr_of(&p.fast);
    let req = format!(
        "GET /both HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        p.cookie
    );
    let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
    assert!(got[0].status_line.starts_with("HTTP/1.1 502"), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_share_one_upstream_connection_and_hand_over_mid_way() {
    let p = pair(|_| {}).await;
    let addr = addr_of(&p.fast);
    let c = &p.cookie;
    let before = p.up.connections.load(Ordering::SeqCst);
    // Three forwarded requests in one write, then a SAML endpoint (handed
    // over to the general stack with the connection), then close.
    let req = format!(
        "GET /1 HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\n\r\n\
POST /2 HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\nContent-Length: 3\r\n\r\nxyz\
GET /chunked HTTP/1.1\r\nHost: {addr}\r\nCookie: {c}\r\n\r\n\
GET /saml/metadata HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0].body, b"hello");
    assert_eq!(got[1].body, b"hello");
    assert_eq!(got[2].body, b"hello world");
    assert!(
        got[3].status_line.starts_with("HTTP/1.1 200"),
        "{:?}",
        got[3]
    );
    assert!(String::from_utf8_lossy(&got[3].body).contains("EntityDescriptor"));
    let seen = p.up.seen.lock().unwrap().clone();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, ["/1", "/2", "/chunked"]);
    assert_eq!(seen[1].body, b"xyz");
    assert_eq!(
        p.up.connections.load(Ordering::SeqCst) - before,
        1,
        "one upstream connection for three requests"
    );
    let metrics = p.fast.gateway.metrics.render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("samlgate_proxied_requests_total{status=\"2xx\"}")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_kept_alive_upstream_connections_are_not_used() {
    let p = pair(|_| {}).await;
    let addr = addr_of(&p.fast);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    for i in 0..4 {
        // The upstream closes each connection 100 ms after answering /bye
        // (without saying so); the next request must not fail on it, GET
        // or POST.
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let req = format!(
            "{method} /bye HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nContent-Length: 0\r\n\r\n",
            p.cookie
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&got).to_string();
        assert!(text.starts_with("HTTP/1.1 200"), "request {i}: {text}");
        assert!(text.ends_with("hello"), "request {i}: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_absent_upstreams_and_slow_clients() {
    let p = pair(|c| c.upstream.timeout_secs = 1).await;
    let addr = addr_of(&p.fast);
    let req = format!(
        "GET /slow HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\n\r\n",
        p.cookie
    );
    let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
    assert!(got[0].status_line.starts_with("HTTP/1.1 504"), "{got:?}");
    assert!(String::from_utf8_lossy(&got[0].body).contains("upstream_timeout"));

    // A head sent a byte at a time.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET /drip HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        p.cookie
    );
    for b in req.as_bytes() {
        s.write_all(&[*b]).await.unwrap();
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let got = parse_responses(&out, false);
    assert_eq!(got[0].body, b"hello", "{got:?}");

    // Nothing listening upstream: 502 with the stable code.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let clock = TestClock::new();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("s.db"), clock.clone()).unwrap());
    let g = gateway_with(store, clock, move |c| {
        c.upstream.url = format!("http://{dead_addr}")
    })
    .await;
    let cookie = g.login("alice@example.com").await;
    let addr = addr_of(&g);
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n");
    let got = parse_responses(&exchange_raw(&addr, req.as_bytes()).await, false);
    assert!(got[0].status_line.starts_with("HTTP/1.1 502"), "{got:?}");
    assert!(String::from_utf8_lossy(&got[0].body).contains("upstream_unavailable"));
}

/// Requests assembled at random (fixed seed) from header pieces that
/// matter to the proxy: every one must reach the upstream, and come back,
/// the same on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_header_mixes_are_forwarded_alike() {
    use rand::{Rng, SeedableRng};
    let p = pair(|c| c.upstream.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let pieces = [
        "X-Samlgate-Email: spoof@evil",
        "x_samlgate_groups: admins",
        "X-SAMLGATE-LICENSE: pro",
        "X-Samlgate-Anything: x",
        "Connection: keep-alive",
        "Connection: X-Named",
        "X-Named: gone",
        "Keep-Alive: 5",
        "TE: trailers",
        "Upgrade-Insecure-Requests: 1",
        "Proxy-Authorization: Basic eA==",
        "X-Forwarded-For: 10.1.1.1",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: a.example",
        "Forwarded: for=1.2.3.4",
        "Cookie: other=1",
        "Cookie: {cookie}; tail=2",
        "Accept: text/html",
        "X-Requested-With: XMLHttpRequest",
        "Sec-Fetch-Mode: navigate",
        "Content-Type: application/json",
        "X-Empty:",
        "X-Tab: a\tb",
        "X-Obs: caf\u{e9}",
        "Authorization: Bearer abc",
    ];
    let paths = [
        "/", "/a?b=c", "/chunked", "/close", "/named", "/204", "/early",
    ];
    let methods = ["GET", "POST", "HEAD", "OPTIONS", "PATCH"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261129);
    for i in 0..400 {
        let method = methods[rng.random_range(0..methods.len())];
        let path = paths[rng.random_range(0..paths.len())];
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        let mut lines: Vec<String> = vec!["Host: {host}".into(), "Cookie: {cookie}".into()];
        for _ in 0..rng.random_range(0..8) {
            let piece = pieces[rng.random_range(0..pieces.len())];
            // Random header-name case.
            let (name, value) = piece.split_once(':').unwrap();
            let name: String = name
                .chars()
                .map(|c| {
                    if rng.random_bool(0.3) {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect();
            lines.insert(rng.random_range(0..=lines.len()), format!("{name}:{value}"));
        }
        let body = if method == "POST" || method == "PATCH" {
            "x".repeat(rng.random_range(0..3000))
        } else {
            String::new()
        };
        if !body.is_empty() || rng.random_bool(0.2) {
            lines.push(format!("Content-Length: {}", body.len()));
        }
        lines.push("Connection: close".into());
        for l in &lines {
            req.push_str(l);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.push_str(&body);
        p.same(
            &format!("random request {i}: {req:?}"),
            &req,
            method == "HEAD",
        )
        .await;
    }
}
