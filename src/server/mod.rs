//! HTTP serving: the accept loop both listeners share (HTTP/1.1 and HTTP/2
//! through hyper-util's auto builder, upgrades for WebSockets), graceful
//! shutdown with a drain deadline, and small response helpers. On the
//! public listener, HTTP/1.1 connections start on the gateway's forwarding
//! fast path (`gateway::fast`), which hands them back here for anything
//! it does not forward itself.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::ConnLimits;
use crate::gateway::fast::{Outcome, Prefixed};
use crate::metrics::{CONNECTIONS, CloseReason, Listener};
use conn::{Activity, ConnSlot, Guarded, Live};

pub mod conn;
pub mod tls;

/// Error type carried by response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type of every handler.
pub type Body = BoxBody<Bytes, BoxError>;
/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Something that answers requests.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request from `peer`.
    fn call(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> HandlerFuture;

    /// The gateway, when this handler is one: plain HTTP/1.1 connections
    /// then start on its forwarding fast path (`gateway::fast`), which
    /// hands them back here for anything it does not forward itself.
    fn fast_path(self: Arc<Self>) -> Option<Arc<crate::gateway::Gateway>> {
        None
    }

    /// Connection limits and timeouts of the listener serving this.
    fn limits(&self) -> ConnLimits {
        ConnLimits::default()
    }

    /// Which listener this is (metric labels).
    fn listener(&self) -> Listener {
        Listener::Admin
    }
}

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A JSON response.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A JSON error `{"code":..,"message":..}` (plus `field` when given).
pub fn json_error(
    status: StatusCode,
    code: &str,
    message: &str,
    field: Option<&str>,
) -> Response<Body> {
    let mut r = Response::new(full(error_body(code, message, field)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The body of [`json_error`].
pub fn error_body(code: &str, message: &str, field: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({ "code": code, "message": message });
    if let (Some(f), Some(obj)) = (field, v.as_object_mut()) {
        obj.insert("field".into(), serde_json::Value::String(f.to_owned()));
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec())
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Why [`read_body_draining`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit (what was sent beyond it has been read and dropped,
    /// up to the drain bound, so the client reads the answer).
    TooLarge,
    /// The body could not be read (the client went away, bad framing).
    Unreadable,
}

/// Most bytes read and dropped after a body went over its limit.
pub const DRAIN_BYTES: usize = 8 * 1024 * 1024;
/// Longest time spent dropping them.
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a whole request body of at most `limit` bytes. A larger one (a
/// `Content-Length` over the limit, or a chunked body that grows past it)
/// is refused, but only after reading and dropping what else the client
/// sends, up to [`DRAIN_BYTES`] within [`DRAIN_TIME`]: a client that is
/// still writing its body (curl, Python's http.client, a browser) then
/// reads the refusal instead of a reset connection. The caller closes the
/// connection after answering.
pub async fn read_body_draining(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt;
    let declared = hyper::body::Body::size_hint(&body).exact();
    let mut body = body;
    if declared.is_none_or(|n| n <= limit as u64) {
        let mut buf = bytes::BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(buf.freeze()),
                Some(Err(_)) => return Err(BodyError::Unreadable),
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        if buf.len() + d.len() > limit {
                            break;
                        }
                        buf.extend_from_slice(d);
                    }
                }
            }
        }
    }
    let mut dropped = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while dropped < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(f)) => dropped += f.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
    Err(BodyError::TooLarge)
}

/// Reads a whole request body, refusing more than `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Response<Body>> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    &format!("the request body is over {limit} bytes"),
                    None,
                ))
            } else {
                Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "body_unreadable",
                    "the request body could not be read",
                    None,
                ))
            }
        }
    }
}

/// The two protocol stacks a connection can take: HTTP/1.1 only (plain
/// connections, TLS without ALPN `h2`), or HTTP/2 only (TLS with ALPN
/// `h2`). HTTP/2 in clear text (h2c, prior knowledge) is not served: the
/// HTTP/1.1 stack refuses its preface.
struct Stacks {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

/// Which of [`Stacks`] serves a connection.
#[derive(Clone, Copy)]
enum Stack {
    H1,
    H2,
}

impl Stacks {
    fn new(limits: &ConnLimits) -> Self {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(limits.header_timeout_secs))
            // The documented 64 KiB head cap (hyper answers 431 beyond it).
            .max_buf_size(MAX_HEAD)
            .max_headers(100)
            // A client that shuts down its sending side still gets the
            // answers to what it sent (as on the fast path).
            .half_close(true);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_streams)
            .max_header_list_size(MAX_HEAD as u32)
            .max_pending_accept_reset_streams(Some(20))
            .max_local_error_reset_streams(Some(256));
        Self { h1, h2 }
    }
}

/// How long an idle connection being closed may take to close.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Largest request head, either protocol (hyper's read buffer; the exact
/// rule is `gateway::head`'s).
const MAX_HEAD: usize = crate::gateway::head::MAX_HEAD;

/// Serves one accepted (and, with TLS, handshaken) connection: on the
/// gateway's forwarding fast path first when `fast` is given, then (or
/// else) on the general stack, until it ends, has had no request in flight
/// for `listen.idle_timeout_secs`, or the listener shuts down.
#[allow(clippy::too_many_arguments)]
async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    handler: Arc<dyn Handler>,
    fast: Option<Arc<crate::gateway::Gateway>>,
    mut stop: watch::Receiver<bool>,
    stacks: &Stacks,
    stack: Stack,
    limits: ConnLimits,
    listener: Listener,
    slot: Option<ConnSlot>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let act = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(slot) = &slot {
            req.extensions_mut().insert(slot.clone());
        }
        let h = Arc::clone(&handler);
        let in_flight = act.begin();
        async move {
            // In flight until its body has been written (or dropped): a
            // long download is not an idle connection.
            let resp = h.call(req, peer).await;
            Ok::<_, Infallible>(resp.map(|body| conn::Tracked::new(body, in_flight).boxed()))
        }
    });
    let io = match fast {
        Some(gw) => match crate::gateway::fast::serve(&gw, io, peer, stop.clone()).await {
            Outcome::Done => return,
            Outcome::Handover(io) => io,
        },
        None => Prefixed::new(Vec::new(), io),
    };
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    // The same loop for either stack's connection type.
    macro_rules! drive {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            // Once closing: when to stop waiting for the connection to finish.
            let mut closing: Option<tokio::time::Instant> = None;
            let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
            loop {
                let wake = closing
                    .or_else(|| activity.idle_deadline(idle))
                    .unwrap_or_else(far);
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                        return;
                    }
                    changed = stop.changed(), if closing.is_none() => {
                        if changed.is_err() || *stop.borrow() {
                            // In-flight requests finish; the listener's drain
                            // deadline bounds the wait.
                            conn.as_mut().graceful_shutdown();
                            closing = Some(far());
                        }
                    }
                    () = tokio::time::sleep_until(wake) => {
                        if closing.is_some() {
                            tracing::debug!(%peer, "connection did not close in time; dropped");
                            return;
                        }
                        // Checked again: a request may have started meanwhile.
                        if activity
                            .idle_deadline(idle)
                            .is_some_and(|d| d <= tokio::time::Instant::now())
                        {
                            tracing::debug!(%peer, idle_secs = idle.as_secs(), "idle connection closed");
                            CONNECTIONS.closed(listener, CloseReason::Idle);
                            conn.as_mut().graceful_shutdown();
                            // Nothing is in flight: the close needs no more
                            // than a moment (HTTP/2's GOAWAY handshake waits
                            // for a PING answer a silent client never sends).
                            closing = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                        }
                    }
                }
            }
        }};
    }
    match stack {
        Stack::H1 => drive!(
            stacks
                .h1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades()
        ),
        Stack::H2 => drive!(stacks.h2.serve_connection(TokioIo::new(io), service)),
    }
}

/// Serves one plain (not TLS) connection exactly as the listener would:
/// the gateway's fast path first when the handler is a gateway with
/// `upstream.fast_path` on, then the HTTP/1.1 stack. For harnesses that
/// bring their own socket (the proxy differential fuzz target).
pub async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    handler: Arc<dyn Handler>,
    stop: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = handler.limits();
    let kind = handler.listener();
    let stacks = Stacks::new(&limits);
    let fast = Arc::clone(&handler)
        .fast_path()
        .filter(|g| g.config().upstream.fast_path);
    connection(
        io,
        peer,
        handler,
        fast,
        stop,
        &stacks,
        Stack::H1,
        limits,
        kind,
        None,
    )
    .await;
}

/// Serves `handler` on `listener` until `shutdown` turns true; then stops
/// accepting, lets in-flight requests finish for up to `drain`, and returns.
/// With `tls`, every connection is a TLS handshake first. Connection limits
/// and timeouts are the handler's ([`Handler::limits`]).
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    serve_tls(listener, handler, None, &mut shutdown, drain).await;
}

/// [`serve`] with optional TLS.
pub async fn serve_tls(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    tls: Option<TlsAcceptor>,
    shutdown: &mut watch::Receiver<bool>,
    drain: Duration,
) {
    let limits = handler.limits();
    let kind = handler.listener();
    let stacks = Arc::new(Stacks::new(&limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let live = Arc::new(Live::default());
    let fast = Arc::clone(&handler).fast_path();
    let mut last_cap_warning: Option<std::time::Instant> = None;
    loop {
        // A free connection slot first: at the cap, stop accepting (the
        // kernel's backlog holds newcomers) until a connection closes.
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                CONNECTIONS.at_cap(kind);
                // Once a minute at most: under a flood this is every close.
                if last_cap_warning
                    .is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(60))
                {
                    last_cap_warning = Some(std::time::Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached; accepting again when one closes (samlgate_connections_at_cap_total counts every time)"
                    );
                }
                tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = shutdown.changed() => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, typically: back off.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let open = CONNECTIONS.accepted(kind);
                let guard = live.enter();
                let handler = Arc::clone(&handler);
                let stacks = Arc::clone(&stacks);
                let tls = tls.clone();
                let fast = fast.clone().filter(|g| g.config().upstream.fast_path);
                let stop = shutdown.clone();
                let stream = Guarded::new(stream, Duration::from_secs(limits.write_timeout_secs), kind);
                tokio::spawn(async move {
                    let slot = ConnSlot::new((permit, open, guard));
                    match tls {
                        None => connection(stream, peer, handler, fast, stop, &stacks, Stack::H1, limits, kind, Some(slot)).await,
                        Some(acceptor) => {
                            let handshake = Duration::from_secs(limits.tls_handshake_timeout_secs);
                            let tls_stream = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    CONNECTIONS.closed(kind, CloseReason::HandshakeTimeout);
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            // HTTP/2 (ALPN) always takes the general stack.
                            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let (fast, stack) = if h2 { (None, Stack::H2) } else { (fast, Stack::H1) };
                            connection(tls_stream, peer, handler, fast, stop, &stacks, stack, limits, kind, Some(slot)).await;
                        }
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, live.drained()).await.is_err() {
        tracing::warn!(
            drain_secs = drain.as_secs(),
            "drain deadline passed; closing remaining connections"
        );
    }
}
