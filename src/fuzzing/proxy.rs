//! The forwarding differential (issue #23): the same client byte stream
//! through the fast path and through the general (hyper) path, each to its
//! own recording upstream; any difference in what the upstreams receive
//! (request boundaries, methods, targets, headers, identity, bodies) or
//! bytes left unparsed on an upstream connection is a disagreement.
//!
//! Inputs are not raw HTTP: the fuzzer's bytes drive a small grammar of
//! requests (methods, targets, versions, line endings, blank lines, every
//! framing header in valid and smuggling shapes, every hop-by-hop and
//! `Connection` combination, identity and forwarding look-alikes, bodies
//! that match their framing or do not, whole requests hidden in bodies),
//! then a few raw byte mutations. The session cookie is real, so most
//! requests reach the forwarding code of both paths.
//!
//! Both gateways share one store and session cache and run on one
//! current-thread runtime; the upstream connection pools persist from one
//! input to the next, so an input that leaves a pooled connection
//! desynchronised shows up as unparsed bytes at its end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::account::registry::Registry;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::session::{LoginFacts, Sessions};
use crate::metrics::Metrics;
use crate::store::embedded::EmbeddedStore;
use crate::store::{Store, UserRecord};

/// One request as an upstream parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Request target.
    pub target: String,
    /// Header fields, lowercased names, sorted; framing headers left out
    /// (see `framing`).
    pub headers: Vec<(String, String)>,
    /// `length` or `chunked` (or `none` for an empty body without either).
    pub framing: String,
    /// The body, decoded.
    pub body: Vec<u8>,
}

/// What one upstream saw of one input.
#[derive(Debug, Default, Clone)]
struct Recorder {
    seen: Vec<Seen>,
    /// Bytes an upstream connection could not parse as a request.
    garbage: Vec<String>,
}

struct Harness {
    rt: tokio::runtime::Runtime,
    fast: Arc<Gateway>,
    general: Arc<Gateway>,
    rec_fast: Arc<Mutex<Recorder>>,
    rec_general: Arc<Mutex<Recorder>>,
    /// Bytes waiting, unparsed, on each upstream's open connections.
    pending_fast: Arc<Mutex<std::collections::HashMap<u64, usize>>>,
    pending_general: Arc<Mutex<std::collections::HashMap<u64, usize>>>,
    cookie: String,
    _dir: tempfile::TempDir,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The upstream's answer to `path`: several framings, some of them ones
/// the gateway must refuse to relay.
fn answer(path: &str, method: &str) -> (Vec<u8>, bool) {
    let (a, close): (&[u8], bool) = match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        "/close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil close", true),
        "/cl-named" => (
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/double" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
            false,
        ),
        "/early" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/upgrade" => (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            true,
        ),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    };
    let mut a = a.to_vec();
    if method == "HEAD" {
        // Heads only: a 1xx (if any), then the final head.
        let mut end = find(&a, b"\r\n\r\n").map_or(a.len(), |e| e + 4);
        if a.starts_with(b"HTTP/1.1 1")
            && !a.starts_with(b"HTTP/1.1 101")
            && let Some(e) = a.get(end..).and_then(|rest| find(rest, b"\r\n\r\n"))
        {
            end += e + 4;
        }
        a.truncate(end);
    }
    (a, close)
}

/// Reads one strictly framed request from `buf` (refilled from `s`).
/// `Ok(None)`: the connection closed cleanly between requests.
async fn read_request(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    pending: &Mutex<std::collections::HashMap<u64, usize>>,
    id: u64,
) -> Result<Option<Seen>, String> {
    async fn more(
        s: &mut tokio::net::TcpStream,
        buf: &mut Vec<u8>,
        pending: &Mutex<std::collections::HashMap<u64, usize>>,
        id: u64,
    ) -> Result<bool, String> {
        if let Ok(mut p) = pending.lock() {
            p.insert(id, buf.len());
        }
        let mut tmp = [0u8; 16 * 1024];
        let n = s.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if let Ok(mut p) = pending.lock() {
            p.remove(&id);
        }
        buf.extend_from_slice(tmp.get(..n).unwrap_or_default());
        Ok(n > 0)
    }
    let head_len = loop {
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => break n,
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("unparsable request head ({e})")),
        }
        if !more(s, buf, pending, id).await? {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err("closed mid-head".into())
            };
        }
    };
    let mut hs = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut hs);
    let _ = req.parse(buf);
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("").to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    let (mut length, mut chunked, mut lengths) = (None::<usize>, false, 0);
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = String::from_utf8_lossy(h.value).into_owned();
        match name.as_str() {
            "content-length" => {
                lengths += 1;
                length = Some(value.parse().map_err(|_| format!("bad length {value:?}"))?);
            }
            "transfer-encoding" => {
                if value != "chunked" || chunked {
                    return Err(format!("transfer-encoding {value:?}"));
                }
                chunked = true;
            }
            // Each gateway has its own upstream address.
            "host" if value.starts_with("127.0.0.1:") => {
                headers.push((name, "{upstream}".into()));
            }
            _ => headers.push((name, value)),
        }
    }
    if lengths > 1 || (chunked && length.is_some()) {
        return Err("ambiguous framing".into());
    }
    headers.sort();
    buf.drain(..head_len);
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                if !more(s, buf, pending, id).await? {
                    return Err("closed in a chunk".into());
                }
            };
            let line =
                String::from_utf8_lossy(buf.get(..line_end).unwrap_or_default()).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !more(s, buf, pending, id).await? {
                    return Err("closed in a chunk".into());
                }
            }
            if size == 0 {
                // No trailers from the gateways.
                if buf.get(..2) != Some(b"\r\n") {
                    return Err("trailers".into());
                }
                buf.drain(..2);
                break body;
            }
            body.extend_from_slice(buf.get(..size).unwrap_or_default());
            if buf.get(size..size + 2) != Some(b"\r\n") {
                return Err("bad chunk end".into());
            }
            buf.drain(..size + 2);
        }
    } else {
        let len = length.unwrap_or(0);
        while buf.len() < len {
            if !more(s, buf, pending, id).await? {
                return Err("closed in a body".into());
            }
        }
        buf.drain(..len).collect()
    };
    let framing = match (chunked, length) {
        (true, _) => "chunked".to_owned(),
        (false, Some(n)) if n > 0 => "length".to_owned(),
        _ => "none".to_owned(),
    };
    Ok(Some(Seen {
        method,
        target,
        headers,
        framing,
        body,
    }))
}

async fn recorder(
    rec: Arc<Mutex<Recorder>>,
    pending: Arc<Mutex<std::collections::HashMap<u64, usize>>>,
) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        let mut next_id = 0u64;
        while let Ok((mut s, _)) = l.accept().await {
            next_id += 1;
            let id = next_id;
            let (rec, pending) = (Arc::clone(&rec), Arc::clone(&pending));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    match read_request(&mut s, &mut buf, &pending, id).await {
                        Ok(None) => return,
                        Ok(Some(seen)) => {
                            let path = seen.target.split('?').next().unwrap_or("").to_owned();
                            let (a, close) = answer(&path, &seen.method);
                            if let Ok(mut r) = rec.lock() {
                                r.seen.push(seen);
                            }
                            if s.write_all(&a).await.is_err() || close {
                                return;
                            }
                        }
                        // A request cut short by the gateway closing the
                        // connection (its client went away mid-body): the
                        // upstream discards it. One path may have started
                        // sending it and the other not; neither is a
                        // framing disagreement.
                        Err(e) if e.starts_with("closed") => return,
                        Err(e) => {
                            if let Ok(mut r) = rec.lock() {
                                r.garbage.push(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn harness() -> Option<&'static Mutex<Harness>> {
    static H: OnceLock<Option<Mutex<Harness>>> = OnceLock::new();
    H.get_or_init(|| build().ok().map(Mutex::new)).as_ref()
}

fn build() -> Result<Harness, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cfg = Config::load(&fixtures.join("config.toml")).map_err(|e| e.to_string())?;
    cfg.provisioning.outbox_dir = dir.path().join("outbox");
    cfg.upstream.timeout_secs = 2;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&dir.path().join("s.db"), Arc::clone(&clock))
            .map_err(|e| e.to_string())?,
    );
    let rec_fast = Arc::new(Mutex::new(Recorder::default()));
    let rec_general = Arc::new(Mutex::new(Recorder::default()));
    let pending_fast = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let pending_general = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let (fast, general, cookie) = rt.block_on(async {
        let up_fast = recorder(Arc::clone(&rec_fast), Arc::clone(&pending_fast))
            .await
            .map_err(|e| e.to_string())?;
        let up_general = recorder(Arc::clone(&rec_general), Arc::clone(&pending_general))
            .await
            .map_err(|e| e.to_string())?;
        let sessions = Arc::new(Sessions::sharded(1));
        let metrics = Arc::new(Metrics::default());
        // The default account (host gw.test and anything unknown), and
        // acme at acme.test: a default session is none there, on both paths.
        let accounts = Arc::new(Registry::new(cfg.account.clone().into_iter().chain(
            cfg.account.clone().map(|mut a| {
                a.id = "acme".into();
                a.hosts = vec!["acme.test".into()];
                a
            }),
        )));
        let make = |up: SocketAddr, fast_path: bool| {
            let mut c = cfg.clone();
            c.upstream.url = format!("http://{up}");
            c.upstream.fast_path = fast_path;
            Gateway::with_sessions(
                Arc::new(c),
                Arc::clone(&store),
                Arc::clone(&clock),
                Arc::clone(&metrics),
                false,
                Arc::clone(&sessions),
                0,
                Arc::clone(&accounts),
            )
            .map(Arc::new)
        };
        let fast = make(up_fast, true)?;
        let general = make(up_general, false)?;
        let now = clock.now();
        let user = UserRecord {
            email: "alice@example.com".into(),
            account: crate::account::DEFAULT_ID.into(),
            first_name: "Alice".into(),
            last_name: "Doe".into(),
            department: String::new(),
            groups: Vec::new(),
            license: crate::mapping::License::Basic,
            features: Vec::new(),
            sso_only: true,
            status: crate::store::UserStatus::Active,
            vanity: None,
            source: crate::store::UserSource::Api,
            created_at: now.to_rfc3339(),
            updated_at: now.to_rfc3339(),
            scim: None,
        };
        store
            .put_users(std::slice::from_ref(&user))
            .await
            .map_err(|e| e.to_string())?;
        let default = accounts
            .get(crate::account::DEFAULT_ID)
            .ok_or("the harness config has no default account")?;
        let id = sessions
            .create(store.as_ref(), &default, user, LoginFacts::default(), now)
            .await
            .map_err(|e| e.to_string())?;
        let cookie = format!("{}={id}", fast.config().session.cookie_name);
        Ok::<_, String>((fast, general, cookie))
    })?;
    Ok(Harness {
        rt,
        fast,
        general,
        rec_fast,
        rec_general,
        pending_fast,
        pending_general,
        cookie,
        _dir: dir,
    })
}

/// The fuzzer's bytes, read from the front.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        let i = usize::from(self.byte()) % from.len().max(1);
        from.get(i).copied().unwrap_or("")
    }
}

const METHODS: &[&str] = &[
    "GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "get",
    "TRACE",
];
const TARGETS: &[&str] = &[
    "/",
    "/a/b?c=1",
    "/chunked",
    "/close",
    "/cl-named",
    "/double",
    "/early",
    "/upgrade",
    "/saml/metadata",
    "http://elsewhere/x",
    "*",
    "/%2e%2e/x",
    "//x",
    "/a b",
    "/x#frag",
];
const VERSIONS: &[&str] = &[
    "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.2",
];
/// Header lines; `{len}` is the body's length, `{C}` the session cookie,
/// `{H}` the Host.
const HEADERS: &[&str] = &[
    "Host: {H}",
    "Host: {H}",
    "Host: other.example",
    "Host: acme.test",
    "Host: ACME.Test:8080",
    "Host: acme.test.",
    "Host: acme.test\t",
    "Host: acme.t\u{e9}st",
    "Host: [::1]:80",
    "Host: ",
    "Host: a@{H}",
    "Cookie: {C}",
    "Cookie: {C}",
    "Cookie: {C}",
    "Cookie: a=1; {C}; b=2",
    "Content-Length: {len}",
    "Content-Length: {len}",
    "Content-Length: {len}",
    "Content-Length: 0{len}",
    "Content-Length: {len}, {len}",
    "Content-Length: 1{len}",
    "Content-Length: -1",
    "Content-Length: +{len}",
    "Content-Length: 18446744073709551615",
    "Content-Length:  {len} ",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: Chunked",
    "Transfer-Encoding: chunked, identity",
    "Transfer-Encoding: identity, chunked",
    "Transfer-Encoding: xchunked",
    "Transfer-Encoding :chunked",
    "Transfer-Encoding:\tchunked",
    "Connection: close",
    "Connection: keep-alive",
    "Connection: content-length",
    "Connection: Content-Length",
    "Connection: close, transfer-encoding",
    "Connection: host",
    "Connection: x-samlgate-email",
    "Connection: cookie",
    "Connection: upgrade",
    "Connection: te, keep-alive",
    "Connection: x-forwarded-for",
    "Connection: date, x-drop",
    "X-Drop: 1",
    "Upgrade: websocket",
    "Upgrade: h2c",
    "Expect: 100-continue",
    "X-Samlgate-Email: mallory@evil",
    "X_Samlgate_Email: mallory@evil",
    "X.Samlgate.Email: mallory@evil",
    "x-samlgate-license: licensed",
    "X-Forwarded-For: 6.6.6.6",
    "X-Forwarded-Host: evil.example",
    "X-Real-IP: 6.6.6.6",
    "Forwarded: for=6.6.6.6",
    "Keep-Alive: timeout=5",
    "TE: trailers",
    "Trailer: X-T",
    "Proxy-Connection: close",
    "X-Fold: a\r\n b",
    "X-Bare: a\rb",
    "Bad Header: x",
    "X-Empty:",
];
/// Headers that leave a request forwardable (framing that matches).
const COMMON: &[&str] = &[
    "Content-Length: {len}",
    "Content-Length: {len}",
    "Cookie: a=1; {C}; b=2",
    "Connection: close",
    "Connection: keep-alive",
    "Connection: te, keep-alive",
    "Connection: date, x-drop",
    "Connection: x-samlgate-email",
    "Connection: cookie",
    "Connection: x-forwarded-for",
    "X-Drop: 1",
    "X-Samlgate-Email: mallory@evil",
    "X_Samlgate_Email: mallory@evil",
    "X.Samlgate.Email: mallory@evil",
    "x-samlgate-license: licensed",
    "X-Forwarded-For: 6.6.6.6",
    "X-Forwarded-Host: evil.example",
    "X-Real-IP: 6.6.6.6",
    "Forwarded: for=6.6.6.6",
    "Keep-Alive: timeout=5",
    "TE: trailers",
    "Trailer: X-T",
    "Proxy-Connection: close",
    "X-Empty:",
    "Accept: */*",
];
/// A whole request with forged identity, to hide in a body.
const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: up\r\nX-Samlgate-Email: alice@example.com\r\nX-Samlgate-License: licensed\r\n\r\n";

/// Builds the client byte stream for `data`.
fn stream(data: &[u8], cookie: &str) -> Vec<u8> {
    let mut c = Cursor { data, pos: 0 };
    let mut out: Vec<u8> = Vec::new();
    let requests = 1 + usize::from(c.byte() % 4);
    for _ in 0..requests {
        // Byte 0 (an exhausted input) always picks the common case.
        let eol: &[u8] = if c.byte() % 16 == 15 { b"\n" } else { b"\r\n" };
        // Blank lines before the request line: mostly none, sometimes a
        // few, sometimes many (CRLF or LF).
        let blank = match c.byte() {
            0..=199 => 0,
            200..=239 => 1 + usize::from(c.byte() % 3),
            b => usize::from(b - 230) * 3,
        };
        for _ in 0..blank {
            out.extend_from_slice(eol);
        }
        // The body first: headers name its length.
        let body: Vec<u8> = match c.byte() % 6 {
            0 | 1 => Vec::new(),
            2 => SMUGGLED.as_bytes().to_vec(),
            3 => b"GET /admin HTTP/1.1\r\nX-Pad: ".to_vec(),
            _ => {
                let n = usize::from(c.byte() % 40);
                (0..n).map(|_| c.byte()).collect()
            }
        };
        let method = c.pick(METHODS);
        let target = c.pick(TARGETS);
        let version = c.pick(VERSIONS);
        out.extend_from_slice(format!("{method} {target} {version}").as_bytes());
        out.extend_from_slice(eol);
        // Host and the session cookie, unless the input says otherwise;
        // then up to eight more header lines.
        let usual = c.byte();
        if usual % 8 != 7 {
            out.extend_from_slice(b"Host: gw.test");
            out.extend_from_slice(eol);
        }
        if usual % 8 != 6 {
            out.extend_from_slice(format!("Cookie: {cookie}").as_bytes());
            out.extend_from_slice(eol);
        }
        let n = c.byte() % 9;
        let mut chunked = false;
        for _ in 0..n {
            // Mostly headers a request may well carry, else any.
            let h = if c.byte() < 160 {
                c.pick(COMMON)
            } else {
                c.pick(HEADERS)
            };
            chunked |= h.to_ascii_lowercase().contains("chunked");
            let line = h
                .replace("{len}", &body.len().to_string())
                .replace("{C}", cookie)
                .replace("{H}", "gw.test");
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(eol);
        match c.byte() % 4 {
            // As framed (chunked when a chunked header was sent).
            0 | 1 if chunked => {
                if !body.is_empty() {
                    out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    out.extend_from_slice(&body);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            0 | 1 => out.extend_from_slice(&body),
            // Raw, whatever the headers say.
            2 => out.extend_from_slice(&body),
            _ => {}
        }
    }
    // A few raw mutations, when the input asks for them.
    let mutations = if c.byte().is_multiple_of(3) {
        c.byte() % 4
    } else {
        0
    };
    for _ in 0..mutations {
        let (at, b) = (usize::from(c.byte()) * 7, c.byte());
        if out.is_empty() {
            break;
        }
        let at = at % out.len();
        match c.byte() % 3 {
            0 => {
                if let Some(x) = out.get_mut(at) {
                    *x = b;
                }
            }
            1 => out.insert(at, b),
            _ => {
                out.remove(at);
            }
        }
    }
    out
}

/// Sends `bytes` on one connection to `gw` (then shuts down its sending
/// side) and reads until the gateway closes it.
async fn run_one(gw: &Arc<Gateway>, bytes: &[u8]) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let handler: Arc<dyn crate::server::Handler> = Arc::clone(gw) as _;
    let peer: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let serve = crate::server::serve_connection(server, peer, handler, stop);
    let (mut r, mut w) = tokio::io::split(client);
    let write = async {
        let _ = w.write_all(bytes).await;
        let _ = w.shutdown().await;
    };
    let read = async {
        let mut out = Vec::new();
        let _ = r.read_to_end(&mut out).await;
        out
    };
    let (_, _, out) = tokio::join!(serve, write, read);
    out
}

/// Runs one input through both paths: how many requests reached the
/// upstream (each path), or a description of a disagreement.
pub fn proxy_differential(data: &[u8]) -> Result<usize, String> {
    let Some(h) = harness() else {
        return Ok(0);
    };
    let Ok(h) = h.lock() else {
        return Ok(0);
    };
    let bytes = stream(data, &h.cookie);
    h.rt.block_on(async {
        for r in [&h.rec_fast, &h.rec_general] {
            if let Ok(mut r) = r.lock() {
                *r = Recorder::default();
            }
        }
        let limit = Duration::from_secs(20);
        let fast = tokio::time::timeout(limit, run_one(&h.fast, &bytes)).await;
        let general = tokio::time::timeout(limit, run_one(&h.general, &bytes)).await;
        if fast.is_err() || general.is_err() {
            return Err(format!(
                "a connection did not finish (fast {}, general {})",
                fast.is_ok(),
                general.is_ok()
            ));
        }
        // Let the upstreams finish reading what was sent.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        let take = |r: &Mutex<Recorder>| r.lock().map(|r| r.clone()).unwrap_or_default();
        let (f, g) = (take(&h.rec_fast), take(&h.rec_general));
        let pend = |p: &Mutex<std::collections::HashMap<u64, usize>>| {
            p.lock()
                .map(|p| p.values().filter(|&&n| n > 0).count())
                .unwrap_or(0)
        };
        let (pf, pg) = (pend(&h.pending_fast), pend(&h.pending_general));
        if f.seen != g.seen || f.garbage != g.garbage || pf != pg {
            return Err(format!(
                "input {:?}\nfast path upstream saw {:#?} (garbage {:?}, connections with unparsed bytes {pf})\ngeneral path upstream saw {:#?} (garbage {:?}, connections with unparsed bytes {pg})",
                String::from_utf8_lossy(&bytes),
                f.seen,
                f.garbage,
                g.seen,
                g.garbage
            ));
        }
        // Whatever the path, the identity is only ever alice's.
        if let Some(s) = f.seen.iter().find(|s| {
            s.headers
                .iter()
                .any(|(k, v)| k.starts_with("x-samlgate-email") && v != "alice@example.com")
        }) {
            return Err(format!("a forged identity reached the upstream: {s:?}"));
        }
        Ok(f.seen.len())
    })
}

/// The fast path's request-head reader on raw bytes (`@S` in the input
/// stands for the harness's session cookie, so heads reach the forwarding
/// code). Panics when a forwarded head breaks what the upstream relies
/// on: it must parse as one complete request head, name the configured
/// upstream's host once, and carry no identity header from the client.
/// True when the head was forwarded.
pub fn fast_head(data: &[u8]) -> bool {
    let Some(h) = harness() else {
        return false;
    };
    let Ok(h) = h.lock() else {
        return false;
    };
    let mut input = Vec::with_capacity(data.len() + 64);
    let mut rest = data;
    while let Some(i) = find(rest, b"@S") {
        input.extend_from_slice(rest.get(..i).unwrap_or_default());
        input.extend_from_slice(h.cookie.as_bytes());
        rest = rest.get(i + 2..).unwrap_or_default();
    }
    input.extend_from_slice(rest);
    let peer = SocketAddr::from(([192, 0, 2, 7], 40_000));
    let Some(mut out) = crate::gateway::fast::fuzz_inspect(&h.fast, &input, peer) else {
        return false;
    };
    out.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(&out);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(n)) if n == out.len()),
        "the upstream head is one whole request: {parsed:?} {:?}",
        String::from_utf8_lossy(&out)
    );
    let cfg = h.fast.config();
    let mut hosts = 0;
    for hd in req.headers.iter() {
        let n = hd.name.to_ascii_lowercase();
        assert!(
            !crate::gateway::proxy::is_identity(&n, &cfg),
            "a client's identity header {n:?} reached the upstream"
        );
        hosts += usize::from(n == "host");
    }
    assert_eq!(hosts, 1, "one Host: {:?}", String::from_utf8_lossy(&out));
    true
}
