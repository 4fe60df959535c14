//! The forwarding fast path: plain HTTP/1.1 requests of a signed-in user,
//! relayed to the upstream without the general HTTP stack.
//!
//! Nearly every request through the gateway is the same thing: an HTTP/1.1
//! request with a session cookie, forwarded with the identity headers to a
//! kept-alive upstream connection. This module does only that, on the
//! connection's own buffers (one parse of each head with `httparse`, the
//! upstream head written in one piece, small bodies in the same write),
//! which costs well under half of what the general stack (hyper server,
//! hyper client, header maps) spends per request (18k against 48k
//! instructions under callgrind; BENCHMARKS.md).
//!
//! Anything else is handed over, with the bytes already read, to the
//! general stack for the rest of the connection, which then answers exactly
//! as it always has: the SAML endpoints and the demo IdP, no or an unknown
//! session (redirect or 401), a store outage (503), HTTP/1.0, HTTP/2, a
//! request target that is not origin-form, `Transfer-Encoding` (chunked
//! uploads), `Expect`, `Upgrade` (WebSockets), several `Host` or
//! `Content-Length` headers, an unparsable head, more than 100 headers or a
//! head over 64 KiB. So every refusal and every unusual framing stays with
//! one well-tested implementation; this path never answers 400.
//!
//! What the upstream receives is what the general path sends (tested side
//! by side in `tests/it/fast_path.rs`): the same headers stripped
//! (hop-by-hop, those `Connection` names, identity look-alikes whatever
//! their spelling, `X-Forwarded-Proto/Host` and `Forwarded` from untrusted
//! peers, the gateway's cookie) and the same ones set (`Host`,
//! `X-Forwarded-For/Proto/Host`, the identity headers). Responses: 1xx
//! informational heads are skipped, hop-by-hop headers dropped, a body of
//! known length passed as it is, a chunked or close-delimited one
//! re-chunked (extensions and trailers dropped), `Date` added when
//! missing. An upstream answer with a bad head or conflicting lengths (both
//! refused by the general path too), with both `Content-Length` and
//! `Transfer-Encoding`, a transfer coding other than `chunked`, or a 101
//! nobody asked for is a 502; a slow one a 504, as there.
//!
//! A kept-alive upstream connection is probed before reuse (a closed or
//! chattering one is dropped); a request that still finds it closed before
//! any byte of answer is resent once on a fresh connection only when it is
//! safe (GET, HEAD, OPTIONS) and was sent whole from memory.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::session::SessionData;
use super::{Gateway, find_cookie, proxy, upstream};
use crate::config::Config;
use crate::metrics::{CONNECTIONS, CloseReason, Listener};

/// Largest request or response head handled here.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a head (hyper's default).
const MAX_HEADERS: usize = 100;
/// More Cookie headers than this: left to the general path.
const MAX_COOKIE_HEADERS: usize = 8;
/// Bodies are relayed in reads of at most this.
const CHUNK: usize = 64 * 1024;
/// Largest chunk-size line or trailer section accepted from the upstream.
const MAX_LINE: usize = 4096;

/// Most bytes of the prefix one read returns.
const PREFIX_READ: usize = 8 * 1024;

/// A connection whose first bytes were already read: they are read again
/// first. Writes go straight through.
pub struct Prefixed<IO> {
    prefix: Vec<u8>,
    pos: usize,
    inner: IO,
}

impl<IO> Prefixed<IO> {
    /// `inner`, with `prefix` to be read first.
    pub fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.pos..)
            && !rest.is_empty()
        {
            // In socket-sized pieces: the general stack sees a long head
            // arrive as from the network (and refuses one over its cap).
            let n = rest.len().min(buf.remaining()).min(PREFIX_READ);
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.pos += n;
            if this.pos >= this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The connection's one timer. Deadlines move with every request; moving a
/// timer costs a lock and a wheel update, so the timer is only moved
/// earlier when a deadline needs it, and otherwise left to fire at its old
/// time, when it is re-armed for the deadline now in force. A busy
/// connection touches the timer wheel about once per head timeout instead
/// of twice per request.
struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    at: tokio::time::Instant,
}

impl Deadline {
    fn new(after: Duration) -> Self {
        let at = tokio::time::Instant::now() + after;
        Self {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// The deadline for what runs next.
    fn set(&mut self, at: tokio::time::Instant) {
        if self.sleep.deadline() > at {
            self.sleep.as_mut().reset(at);
        }
        self.at = at;
    }

    /// Runs `f` to its end (`Some`) or until the deadline passes (`None`).
    async fn run<F: std::future::Future>(&mut self, f: F) -> Option<F::Output> {
        tokio::pin!(f);
        loop {
            tokio::select! {
                biased;
                out = &mut f => return Some(out),
                () = &mut self.sleep => {
                    if tokio::time::Instant::now() >= self.at {
                        return None;
                    }
                    let at = self.at;
                    self.sleep.as_mut().reset(at);
                }
            }
        }
    }
}

/// What the fast path did with a connection.
pub enum Outcome<IO> {
    /// It is finished with (closed by either side, or broken).
    Done,
    /// A request it leaves to the general stack, which serves the rest of
    /// the connection, starting with the bytes already read.
    Handover(Prefixed<IO>),
}

/// `HeaderValue::to_str`'s rule: visible ASCII, space and tab only.
fn visible(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// `name` lowercased in `buf` (reused: no allocation per header).
fn lowercase<'b>(buf: &'b mut String, name: &str) -> &'b str {
    buf.clear();
    buf.push_str(name);
    buf.make_ascii_lowercase();
    buf
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The client's address, and its IP as text (for X-Forwarded-For).
struct Peer {
    addr: SocketAddr,
    ip: String,
}

/// A request the fast path forwards, as read from its head.
struct Forward {
    /// Bytes of the head.
    head_len: usize,
    /// Content-Length (0 without one).
    body: usize,
    /// GET, HEAD or OPTIONS: may be resent on a fresh connection.
    safe: bool,
    /// HEAD: the answer has no body whatever its headers say.
    head_method: bool,
    /// The client asked to close after this exchange.
    close: bool,
    /// The session cookie's value.
    session: String,
    /// Identity look-alike headers removed.
    stripped: usize,
}

enum Inspect {
    /// Forward it; the upstream head (without the identity headers and the
    /// final blank line) is in `out`.
    Forward(Forward),
    /// The head is not complete yet.
    Partial,
    /// Leave it to the general stack.
    Handover,
}

/// Whether `buf` holds the end of a head (`\n\r\n` or `\n\n`), looking at
/// the bytes from `from` on (and the two before, which may start the end).
fn head_ends(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    let tail = buf.get(start..).unwrap_or_default();
    memchr::memchr_iter(b'\n', tail).any(|i| match tail.get(i + 1..i + 3) {
        Some([b'\n', _]) | Some([b'\r', b'\n']) => true,
        Some(_) => false,
        None => tail.get(i + 1) == Some(&b'\n'),
    })
}

/// Reads the request head at the start of `buf` and, when this path takes
/// it, writes the upstream request head into `out`.
fn inspect(
    gw: &Gateway,
    cfg: &Config,
    buf: &[u8],
    peer: &Peer,
    out: &mut Vec<u8>,
    lower: &mut String,
) -> Inspect {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        // Over the head cap: the general path answers 431.
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Inspect::Handover,
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Inspect::Partial,
        Err(_) => return Inspect::Handover,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Inspect::Handover;
    };
    // Origin-form only, no fragment (the general path drops it), valid as
    // the general path's URI parser has it.
    if !target.starts_with('/')
        || target.contains('#')
        || method == "CONNECT"
        || http::uri::PathAndQuery::try_from(target).is_err()
    {
        return Inspect::Handover;
    }
    let path = target.split('?').next().unwrap_or(target);
    // The gateway's own routes.
    if path.starts_with(cfg.sp.path_prefix.as_str())
        || (gw.dev_idp.is_some() && path.starts_with("/_demo-idp/"))
    {
        return Inspect::Handover;
    }
    let headers = req.headers;
    // The rules both paths share (`head.rs`): a head that breaks one is the
    // general path's to refuse.
    if super::head::check(
        method,
        target,
        super::head::Version::Http11,
        false,
        headers.iter().map(|h| (h.name, h.value)),
        cfg.listen.limits.max_body_bytes,
    )
    .is_err()
    {
        return Inspect::Handover;
    }
    // First pass: framing, what the connection asks for, the session.
    let mut length: Option<usize> = None;
    let mut hosts = 0;
    let mut named: Vec<String> = Vec::new();
    // The Cookie header values (those the general path can read as text).
    let mut cookie_values: [&str; MAX_COOKIE_HEADERS] = [""; MAX_COOKIE_HEADERS];
    let mut cookie_count = 0;
    for h in headers.iter() {
        let n = h.name;
        if n.eq_ignore_ascii_case("cookie") {
            if let Some(v) = visible(h.value) {
                let Some(slot) = cookie_values.get_mut(cookie_count) else {
                    return Inspect::Handover;
                };
                *slot = v;
                cookie_count += 1;
            }
        } else if n.eq_ignore_ascii_case("content-length") {
            let Some(v) =
                visible(h.value).filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            else {
                return Inspect::Handover;
            };
            match (length, v.parse::<usize>()) {
                (None, Ok(l)) => length = Some(l),
                _ => return Inspect::Handover,
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding")
            || n.eq_ignore_ascii_case("upgrade")
            || n.eq_ignore_ascii_case("expect")
        {
            return Inspect::Handover;
        } else if n.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if n.eq_ignore_ascii_case("connection")
            && let Some(v) = visible(h.value)
        {
            named.extend(proxy::connection_named(std::iter::once(v)));
        }
    }
    if hosts > 1 {
        return Inspect::Handover;
    }
    let cookie_name = gw.cookie_name(cfg);
    let cookies = || cookie_values.iter().take(cookie_count).copied();
    let Some(session) = find_cookie(cookies(), &cookie_name) else {
        return Inspect::Handover;
    };

    // Second pass: the upstream head, as `proxy::forward` builds it.
    let (authority, base) = cfg.upstream.target();
    let trusted = cfg.upstream.trusted_proxies.contains(&peer.addr.ip());
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(base.as_bytes());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut stripped = 0;
    let (mut has_proto, mut has_fhost) = (false, false);
    // The first X-Forwarded-For header's text (the general path reads only
    // the first one).
    let mut prev_xff: Option<Option<&str>> = None;
    let mut host: Option<&[u8]> = None;
    for h in headers.iter() {
        let n = lowercase(lower, h.name);
        if proxy::is_hop_by_hop(n, false, &named) {
            continue;
        }
        if proxy::is_identity(n, cfg) {
            stripped += 1;
            continue;
        }
        match n {
            "host" => {
                host = Some(h.value);
                continue;
            }
            // The framing is the gateway's: written below from the length
            // this path relays, never copied from the client.
            "content-length" | "cookie" => continue,
            "x-forwarded-for" => {
                if trusted && prev_xff.is_none() {
                    prev_xff = Some(visible(h.value));
                }
                continue;
            }
            _ if !trusted && proxy::is_forwarding(n) => continue,
            "x-forwarded-proto" => has_proto = true,
            "x-forwarded-host" => has_fhost = true,
            _ => {}
        }
        header_line(out, h.name.as_bytes(), h.value);
    }
    header_line(out, b"host", authority.as_bytes());
    if let Some(l) = length {
        header_line(out, b"content-length", l.to_string().as_bytes());
    }
    // Cookies named by Connection are hop-by-hop, as on the general path.
    if !named.iter().any(|c| c == "cookie")
        && let Some(kept) = proxy::kept_cookies(
            cookies(),
            &[cookie_name.as_ref(), cfg.session.cookie_name.as_str()],
        )
    {
        header_line(out, b"cookie", kept.as_bytes());
    }
    match prev_xff.flatten() {
        Some(prev) => header_line(
            out,
            b"x-forwarded-for",
            format!("{prev}, {}", peer.ip).as_bytes(),
        ),
        None => header_line(out, b"x-forwarded-for", peer.ip.as_bytes()),
    }
    if !has_proto {
        header_line(
            out,
            b"x-forwarded-proto",
            if gw.tls { b"https" } else { b"http" },
        );
    }
    if let Some(host) = host
        && !has_fhost
    {
        header_line(out, b"x-forwarded-host", host);
    }
    Inspect::Forward(Forward {
        head_len,
        body: length.unwrap_or(0),
        safe: matches!(method, "GET" | "HEAD" | "OPTIONS"),
        head_method: method == "HEAD",
        close: named.iter().any(|c| c == "close"),
        session: session.to_owned(),
        stripped,
    })
}

/// How an upstream answer's body is delimited.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Content-Length.
    Length(usize),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// Until the upstream closes.
    Close,
}

/// A final (non-1xx) upstream answer, its head rewritten for the client.
struct Answer {
    status: u16,
    head_len: usize,
    framing: Framing,
    /// The upstream connection may be reused afterwards.
    reusable: bool,
}

enum Parsed {
    Final(Answer),
    /// A 1xx informational head of this many bytes: skipped.
    Informational(usize),
    Partial,
    Bad(&'static str),
}

/// Parses the upstream answer head at the start of `rbuf`; for a final one,
/// writes the client's response head into `out`.
fn parse_answer(
    rbuf: &[u8],
    head_method: bool,
    close: bool,
    gw: &Gateway,
    out: &mut Vec<u8>,
    lower: &mut String,
) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(rbuf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad("unparsable response head"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Parsed::Bad("unparsable response head");
    };
    if status == 101 {
        return Parsed::Bad("101 without an upgrade");
    }
    if (100..200).contains(&status) {
        return Parsed::Informational(head_len);
    }
    let headers = resp.headers;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut named: Vec<String> = Vec::new();
    let mut has_date = false;
    for h in headers.iter() {
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            let l = visible(h.value)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (length, l) {
                (_, None) => return Parsed::Bad("invalid Content-Length"),
                (Some(a), Some(b)) if a != b => return Parsed::Bad("conflicting Content-Length"),
                (_, l) => length = l,
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            if chunked
                || !visible(h.value).is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"))
            {
                return Parsed::Bad("unsupported Transfer-Encoding");
            }
            chunked = true;
        } else if n.eq_ignore_ascii_case("connection") {
            if let Some(v) = visible(h.value) {
                named.extend(proxy::connection_named(std::iter::once(v)));
            }
        } else if n.eq_ignore_ascii_case("date") {
            has_date = true;
        }
    }
    if chunked && length.is_some() {
        return Parsed::Bad("both Content-Length and Transfer-Encoding");
    }
    // Its framing removable through Connection: it cannot be relayed
    // faithfully (the general path refuses it too).
    if super::head::forbidden_option(&named).is_some() {
        return Parsed::Bad("Connection names a framing header");
    }
    let has_date = has_date && !named.iter().any(|c| c == "date");
    let framing = if head_method || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::Close
    };
    let reusable = version == 1 && framing != Framing::Close && !named.iter().any(|c| c == "close");
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    // A status code is three digits (httparse checks).
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        if proxy::is_hop_by_hop(lowercase(lower, h.name), false, &named) {
            continue;
        }
        header_line(out, h.name.as_bytes(), h.value);
    }
    if matches!(framing, Framing::Chunked | Framing::Close) {
        header_line(out, b"transfer-encoding", b"chunked");
    }
    if !has_date {
        let date = gw
            .clock
            .now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        header_line(out, b"date", date.as_bytes());
    }
    if close {
        header_line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Final(Answer {
        status,
        head_len,
        framing,
        reusable,
    })
}

/// Why an exchange with the upstream failed.
enum Fail {
    /// The upstream: answered 502 (the reason is logged).
    Upstream(String),
    /// The client went away while its body was being relayed.
    Client,
}

/// Sends the request (`req`, then `remaining_body` bytes from the client)
/// and reads until a final answer head is at the start of `rbuf` (its
/// client head in `out`).
#[allow(clippy::too_many_arguments)]
async fn exchange<C: AsyncRead + Unpin>(
    gw: &Gateway,
    authority: &str,
    req: &[u8],
    client: &mut C,
    scratch: &mut Vec<u8>,
    fwd: &Forward,
    remaining_body: usize,
    close: bool,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    scratch_name: &mut String,
) -> Result<(TcpStream, Answer), Fail> {
    let mut retried = false;
    loop {
        let (mut up, reused) = match upstream::checkout_raw(authority) {
            Some(s) => (s, true),
            None => (
                upstream::tcp_connect(authority)
                    .await
                    .map_err(|e| Fail::Upstream(e.to_string()))?,
                false,
            ),
        };
        rbuf.clear();
        // Resending is possible while nothing came back, the request was
        // sent whole from memory, and it is safe to repeat.
        let may_retry = reused && !retried && fwd.safe && remaining_body == 0;
        let sent = async {
            up.write_all(req).await.map_err(|e| (true, e.to_string()))?;
            let mut remaining = remaining_body;
            while remaining > 0 {
                scratch.clear();
                scratch.resize(remaining.min(CHUNK), 0);
                let n = match client.read(scratch).await {
                    Ok(0) | Err(_) => return Err((false, String::new())),
                    Ok(n) => n,
                };
                up.write_all(scratch.get(..n).unwrap_or_default())
                    .await
                    .map_err(|e| (true, e.to_string()))?;
                remaining -= n;
            }
            Ok(())
        }
        .await;
        match sent {
            Ok(()) => {}
            Err((false, _)) => return Err(Fail::Client),
            Err((true, e)) if may_retry => {
                tracing::debug!(error = %e, "kept-alive upstream connection failed; retrying once");
                retried = true;
                continue;
            }
            Err((true, e)) => return Err(Fail::Upstream(e)),
        }
        // Something came back (a 1xx): the request reached the upstream.
        let mut answered = false;
        loop {
            match parse_answer(rbuf, fwd.head_method, close, gw, out, scratch_name) {
                Parsed::Final(a) => return Ok((up, a)),
                Parsed::Informational(n) => {
                    answered = true;
                    rbuf.drain(..n.min(rbuf.len()));
                    continue;
                }
                Parsed::Bad(why) => return Err(Fail::Upstream(why.into())),
                Parsed::Partial if rbuf.len() > MAX_HEAD => {
                    return Err(Fail::Upstream("response head too large".into()));
                }
                Parsed::Partial => {}
            }
            rbuf.reserve(16 * 1024);
            match up.read_buf(rbuf).await {
                Ok(0) | Err(_) if rbuf.is_empty() && !answered && may_retry => {
                    tracing::debug!("kept-alive upstream connection closed; retrying once");
                    retried = true;
                    break;
                }
                Ok(0) => return Err(Fail::Upstream("connection closed before an answer".into())),
                Err(e) => return Err(Fail::Upstream(e.to_string())),
                Ok(_) => {}
            }
        }
    }
}

/// Relays the answer's body (after its head in `rbuf`) to the client behind
/// the head in `out`. Returns whether the upstream connection ended clean
/// (the body read exactly to its end).
async fn relay_body<C: AsyncWrite + Unpin>(
    up: &mut TcpStream,
    client: &mut C,
    answer: &Answer,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<bool, ()> {
    rbuf.drain(..answer.head_len.min(rbuf.len()));
    match answer.framing {
        Framing::Empty => {
            client.write_all(out).await.map_err(|_| ())?;
            Ok(rbuf.is_empty())
        }
        Framing::Length(mut left) => {
            let n = left.min(rbuf.len());
            out.extend_from_slice(rbuf.get(..n).unwrap_or_default());
            left -= n;
            let extra = rbuf.len() > n;
            client.write_all(out).await.map_err(|_| ())?;
            while left > 0 {
                rbuf.clear();
                rbuf.reserve(left.min(CHUNK));
                let got = match up.read_buf(rbuf).await {
                    Ok(0) | Err(_) => return Err(()),
                    Ok(g) => g,
                };
                let take = got.min(left);
                client
                    .write_all(rbuf.get(..take).unwrap_or_default())
                    .await
                    .map_err(|_| ())?;
                left -= take;
                if got > take {
                    return Ok(false);
                }
            }
            Ok(!extra)
        }
        Framing::Close => {
            if !rbuf.is_empty() {
                chunk(out, rbuf);
            }
            client.write_all(out).await.map_err(|_| ())?;
            loop {
                rbuf.clear();
                rbuf.reserve(CHUNK);
                match up.read_buf(rbuf).await {
                    Ok(0) => break,
                    Err(_) => return Err(()),
                    Ok(_) => {}
                }
                out.clear();
                chunk(out, rbuf);
                client.write_all(out).await.map_err(|_| ())?;
            }
            client.write_all(b"0\r\n\r\n").await.map_err(|_| ())?;
            Ok(false)
        }
        Framing::Chunked => relay_chunked(up, client, rbuf, out).await,
    }
}

fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The next CRLF-terminated line of `rbuf` from `pos` (without its CRLF),
/// reading more from the upstream as needed. Lines end in CRLF only.
async fn line(
    up: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    pos: &mut usize,
) -> Result<std::ops::Range<usize>, ()> {
    loop {
        let rest = rbuf.get(*pos..).unwrap_or_default();
        if let Some(i) = memchr::memchr(b'\n', rest) {
            let start = *pos;
            let end = start + i;
            if i == 0 || rbuf.get(end - 1) != Some(&b'\r') {
                return Err(());
            }
            *pos = end + 1;
            return Ok(start..end - 1);
        }
        if rest.len() > MAX_LINE {
            return Err(());
        }
        rbuf.reserve(16 * 1024);
        match up.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(_) => {}
        }
    }
}

/// Decodes a chunked body from the upstream and re-chunks it to the client
/// (one chunk per relay; extensions and trailers dropped).
async fn relay_chunked<C: AsyncWrite + Unpin>(
    up: &mut TcpStream,
    client: &mut C,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<bool, ()> {
    let mut pos = 0usize;
    loop {
        // The chunk-size line: hex digits, then optional whitespace and
        // extensions (ignored).
        let r = line(up, rbuf, &mut pos).await?;
        let text = rbuf.get(r).unwrap_or_default();
        let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let rest = text.get(digits..).unwrap_or_default();
        if digits == 0
            || digits > 15
            || !(rest.is_empty() || matches!(rest.first(), Some(b';' | b' ' | b'\t')))
            || rest.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f))
        {
            return Err(());
        }
        let size = std::str::from_utf8(text.get(..digits).unwrap_or_default())
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or(())?;
        if size == 0 {
            // Trailer fields, up to the blank line: dropped.
            let mut total = 0usize;
            loop {
                let r = line(up, rbuf, &mut pos).await?;
                if r.is_empty() {
                    break;
                }
                total += r.len();
                if total > MAX_LINE {
                    return Err(());
                }
            }
            out.extend_from_slice(b"0\r\n\r\n");
            client.write_all(out).await.map_err(|_| ())?;
            return Ok(pos == rbuf.len());
        }
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        let mut left = size;
        while left > 0 {
            let have = rbuf.len() - pos;
            if have == 0 {
                // Pass on what we have before waiting for more.
                client.write_all(out).await.map_err(|_| ())?;
                out.clear();
                rbuf.clear();
                pos = 0;
                rbuf.reserve(left.min(CHUNK));
                match up.read_buf(rbuf).await {
                    Ok(0) | Err(_) => return Err(()),
                    Ok(_) => {}
                }
                continue;
            }
            let n = have.min(left);
            out.extend_from_slice(rbuf.get(pos..pos + n).unwrap_or_default());
            pos += n;
            left -= n;
        }
        out.extend_from_slice(b"\r\n");
        let r = line(up, rbuf, &mut pos).await?;
        if !r.is_empty() {
            return Err(());
        }
        if out.len() >= CHUNK {
            client.write_all(out).await.map_err(|_| ())?;
            out.clear();
        }
        // Keep the buffer from growing without bound on a long body.
        if pos > CHUNK {
            rbuf.drain(..pos);
            pos = 0;
        }
    }
}

/// An error answer in the general path's JSON shape, then close.
fn error_response(out: &mut Vec<u8>, status: StatusCode, code: &str, message: &str, gw: &Gateway) {
    let body = crate::server::error_body(code, message, None);
    out.clear();
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\ndate: {}\r\nconnection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
            gw.clock.now().format("%a, %d %b %Y %H:%M:%S GMT"),
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
}

/// Serves a connection for as long as its requests are ones this path
/// forwards; see the module documentation.
pub async fn serve<IO>(
    gw: &Gateway,
    mut io: IO,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Outcome<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    let mut head: Vec<u8> = Vec::with_capacity(4 * 1024);
    let mut rbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut scratch: Vec<u8> = Vec::new();
    let mut lower = String::with_capacity(64);
    let limits = gw.config().listen.limits;
    // Waiting for a request's first byte: `listen.idle_timeout_secs`; from
    // it to the head's end: `listen.header_timeout_secs`.
    let idle_timeout = Duration::from_secs(limits.idle_timeout_secs);
    let head_timeout = Duration::from_secs(limits.header_timeout_secs);
    let mut deadline = Deadline::new(idle_timeout);
    // The identity headers of the last request, with what they came from.
    let mut identity: Option<(Arc<SessionData>, Arc<Config>, Vec<u8>)> = None;
    let me = Peer {
        addr: peer,
        ip: peer.ip().to_string(),
    };
    loop {
        if *shutdown.borrow() {
            return Outcome::Done;
        }
        // A whole request head.
        let cfg = gw.config();
        let mut waiting = buf.is_empty();
        deadline
            .set(tokio::time::Instant::now() + if waiting { idle_timeout } else { head_timeout });
        let mut scanned = 0;
        let fwd = loop {
            // Blank lines before the request line are dropped as they come
            // (each byte looked at once, never parsed again), any number of
            // them, as hyper skips them; the head timeout bounds the wait.
            if scanned == 0 {
                // Whole blank lines only (CRLF or LF, as httparse skips
                // them): a lone CR stays, for the parser to refuse.
                let mut lead = 0;
                loop {
                    match buf.get(lead..lead + 2) {
                        Some([b'\r', b'\n']) => lead += 2,
                        Some([b'\n', _]) => lead += 1,
                        None if buf.get(lead) == Some(&b'\n') => lead += 1,
                        _ => break,
                    }
                }
                if lead > 0 {
                    buf.drain(..lead);
                }
            }
            // Parse only once a blank line has arrived (a head sent byte by
            // byte is scanned once, not parsed again per byte).
            let complete = head_ends(&buf, scanned);
            scanned = buf.len();
            if complete {
                match inspect(gw, &cfg, &buf, &me, &mut out, &mut lower) {
                    Inspect::Forward(f) => break f,
                    Inspect::Handover => return Outcome::Handover(Prefixed::new(buf, io)),
                    Inspect::Partial => {}
                }
            }
            if buf.len() > MAX_HEAD {
                return Outcome::Handover(Prefixed::new(buf, io));
            }
            buf.reserve(8 * 1024);
            let idle = buf.is_empty();
            let got = deadline
                .run(async {
                    let read = io.read_buf(&mut buf);
                    if !idle {
                        return Some(read.await);
                    }
                    // Between requests, a shutdown closes the connection.
                    tokio::pin!(read);
                    tokio::select! {
                        biased;
                        r = &mut read => Some(r),
                        changed = shutdown.changed() => match changed {
                            Ok(()) if *shutdown.borrow() => None,
                            _ => Some(read.await),
                        },
                    }
                })
                .await;
            match got {
                Some(None) => return Outcome::Done,
                Some(Some(Ok(0))) if buf.is_empty() => return Outcome::Done,
                // Closed mid-head, or broken: the general stack decides.
                Some(Some(Ok(0) | Err(_))) => return Outcome::Handover(Prefixed::new(buf, io)),
                Some(Some(Ok(_))) => {
                    if waiting {
                        // The first byte: the head has its own time from now.
                        waiting = false;
                        deadline.set(tokio::time::Instant::now() + head_timeout);
                    }
                }
                None => {
                    let why = if waiting {
                        CloseReason::Idle
                    } else {
                        CloseReason::HeaderTimeout
                    };
                    CONNECTIONS.closed(Listener::Public, why);
                    tracing::debug!(%peer, reason = ?why, "no request head in time; closing");
                    return Outcome::Done;
                }
            }
        };

        // The session: none, unknown or a store failure → the general
        // path answers (redirect, 401, 503).
        let now = gw.clock.now();
        let session = match gw
            .sessions
            .load(gw.store.as_ref(), &cfg, &fwd.session, now, gw.shard)
            .await
        {
            Ok(Some(s)) => s,
            _ => return Outcome::Handover(Prefixed::new(buf, io)),
        };
        if fwd.stripped > 0 {
            tracing::warn!(target: "security", event = "identity_header_stripped", count = fwd.stripped, remote = %peer.ip(), "client sent identity headers; removed");
        }
        if cfg.upstream.signed_header_key.is_some() {
            // The signed header carries the time: built per request.
            proxy::each_identity(&cfg, &session.user, now.timestamp(), |name, v| {
                header_line(&mut out, name.as_str().as_bytes(), v.as_bytes());
            });
        } else {
            // The same session (as last loaded) under the same config as
            // the previous request on this connection: the same headers.
            let fresh = identity
                .as_ref()
                .is_some_and(|(s, c, _)| Arc::ptr_eq(s, &session) && Arc::ptr_eq(c, &cfg));
            if !fresh {
                let mut block = Vec::with_capacity(256);
                proxy::each_identity(&cfg, &session.user, now.timestamp(), |name, v| {
                    header_line(&mut block, name.as_str().as_bytes(), v.as_bytes());
                });
                identity = Some((Arc::clone(&session), Arc::clone(&cfg), block));
            }
            if let Some((_, _, block)) = &identity {
                out.extend_from_slice(block);
            }
        }
        out.extend_from_slice(b"\r\n");
        let buffered = fwd.body.min(buf.len().saturating_sub(fwd.head_len));
        out.extend_from_slice(
            buf.get(fwd.head_len..fwd.head_len + buffered)
                .unwrap_or_default(),
        );
        buf.drain(..(fwd.head_len + buffered).min(buf.len()));

        // The exchange.
        let close = fwd.close || *shutdown.borrow();
        let (authority, _) = cfg.upstream.target();
        let start = Instant::now();
        deadline.set(
            tokio::time::Instant::from_std(start) + Duration::from_secs(cfg.upstream.timeout_secs),
        );
        let result = deadline
            .run(exchange(
                gw,
                authority,
                &out,
                &mut io,
                &mut scratch,
                &fwd,
                fwd.body - buffered,
                close,
                &mut rbuf,
                &mut head,
                &mut lower,
            ))
            .await
            .ok_or(());
        gw.metrics.upstream_latency.observe(start.elapsed());
        let (mut up, answer) = match result {
            Ok(Ok(r)) => r,
            Ok(Err(Fail::Client)) => return Outcome::Done,
            Ok(Err(Fail::Upstream(e))) => {
                tracing::warn!(error = %e, "upstream request failed");
                gw.metrics.proxied(502);
                error_response(
                    &mut head,
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the meeting platform did not answer",
                    gw,
                );
                let _ = io.write_all(&head).await;
                let _ = io.flush().await;
                return Outcome::Done;
            }
            Err(_) => {
                gw.metrics.proxied(504);
                error_response(
                    &mut head,
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the meeting platform took too long",
                    gw,
                );
                let _ = io.write_all(&head).await;
                let _ = io.flush().await;
                return Outcome::Done;
            }
        };
        gw.metrics.proxied(answer.status);
        let clean = match relay_body(&mut up, &mut io, &answer, &mut rbuf, &mut head).await {
            Ok(clean) => clean,
            Err(()) => return Outcome::Done,
        };
        if io.flush().await.is_err() {
            return Outcome::Done;
        }
        if clean && answer.reusable {
            upstream::put_raw(authority, up);
        }
        if close {
            let _ = io.shutdown().await;
            return Outcome::Done;
        }
    }
}
