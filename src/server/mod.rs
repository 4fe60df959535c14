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
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::gateway::fast::Outcome;

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

/// Serves one accepted (and, with TLS, handshaken) connection: on the
/// gateway's forwarding fast path first when `fast` is given, then (or
/// else) on the general stack, watched for graceful shutdown.
async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    handler: Arc<dyn Handler>,
    fast: Option<Arc<crate::gateway::Gateway>>,
    stop: watch::Receiver<bool>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let h = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(h.call(req, peer).await) }
    });
    let result = match fast {
        Some(gw) => match crate::gateway::fast::serve(&gw, io, peer, stop).await {
            Outcome::Done => return,
            Outcome::Handover(io) => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                watcher.watch(conn.into_owned()).await
            }
        },
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            watcher.watch(conn.into_owned()).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// Serves `handler` on `listener` until `shutdown` turns true; then stops
/// accepting, lets in-flight requests finish for up to `drain`, and returns.
/// With `tls`, every connection is a TLS handshake first (10 s limit).
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
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let fast = Arc::clone(&handler).fast_path();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = Arc::clone(&handler);
                let builder = Arc::clone(&builder);
                let watcher = graceful.watcher();
                let tls = tls.clone();
                let fast = fast.clone().filter(|g| g.config().upstream.fast_path);
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    match tls {
                        None => connection(stream, peer, handler, fast, stop, &builder, watcher).await,
                        Some(acceptor) => {
                            let tls_stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                            // HTTP/2 (ALPN) always takes the general stack.
                            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let fast = fast.filter(|_| !h2);
                            connection(tls_stream, peer, handler, fast, stop, &builder, watcher).await;
                        }
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_secs = drain.as_secs(),
            "drain deadline passed; closing remaining connections"
        );
    }
}
