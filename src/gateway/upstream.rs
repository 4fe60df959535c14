//! Keep-alive HTTP/1.1 connections to the upstream (the meeting platform).
//!
//! Each public-listener worker is a single-threaded runtime, so idle
//! connections are kept per thread: checking one out takes no lock and no
//! shared pool bookkeeping (hyper-util's general-purpose client spent a
//! noticeable share of every proxied request on both). A connection goes
//! back to its thread's pool once its response has been read to the end;
//! an upgraded (WebSocket) connection never does. A request that could not
//! even be sent on a reused connection (the upstream closed it while idle)
//! is retried once on a fresh one; nothing that reached the upstream is
//! ever sent twice.
//!
//! The forwarding fast path (`fast.rs`) keeps its own per-thread pool of
//! plain TCP connections ([`checkout_raw`], [`put_raw`]), ordered oldest
//! first, each checked before reuse.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long a connection may sit idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per worker thread.
const MAX_IDLE: usize = 256;
/// Connecting to the upstream gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Idle {
    authority: String,
    sender: SendRequest<Incoming>,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
}

/// Why the upstream could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting failed or timed out.
    #[error("connecting to the upstream {authority} failed: {reason}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// What went wrong.
        reason: String,
    },
    /// The exchange failed after connecting.
    #[error("upstream request failed: {0}")]
    Http(#[from] hyper::Error),
}

/// A connection lent for one exchange: give it back with
/// [`Lease::release_read`] once the response body has been read whole, with
/// [`Lease::release`] when the body is still streaming, or drop it (an
/// upgraded connection; closed once idle).
pub struct Lease {
    authority: String,
    sender: SendRequest<Incoming>,
}

impl Lease {
    /// Returns the connection to this thread's pool once its response body
    /// has been read whole: it is idle, or will be as soon as its task has
    /// noticed (the next checkout waits for that), with no task spawned.
    pub fn release_read(self) {
        if !self.sender.is_closed() {
            put(self.authority, self.sender);
        }
    }

    /// Returns the connection to this thread's pool when the exchange ends
    /// (the response body may still be streaming); a closed one is dropped.
    pub fn release(mut self) {
        if self.sender.is_ready() {
            put(self.authority, self.sender);
            return;
        }
        tokio::spawn(async move {
            if self.sender.ready().await.is_ok() {
                put(self.authority, self.sender);
            }
        });
    }
}

fn put(authority: String, sender: SendRequest<Incoming>) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                authority,
                sender,
                since: Instant::now(),
            });
        }
    });
}

/// The most recently used idle connection to `authority` that is still
/// open (newest first: it is the least likely to have been closed).
fn checkout(authority: &str) -> Option<SendRequest<Incoming>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let now = Instant::now();
        idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT);
        let i = idle.iter().rposition(|c| c.authority == authority)?;
        Some(idle.swap_remove(i).sender)
    })
}

/// A TCP connection to `authority` (`host[:port]`, port 80 when absent),
/// Nagle off, within [`CONNECT_TIMEOUT`].
pub(crate) async fn tcp_connect(authority: &str) -> Result<TcpStream, UpstreamError> {
    let fail = |reason: String| UpstreamError::Connect {
        authority: authority.to_owned(),
        reason,
    };
    // An authority without a port means HTTP's default.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    let target = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
    Ok(stream)
}

async fn connect(authority: &str) -> Result<SendRequest<Incoming>, UpstreamError> {
    let stream = tcp_connect(authority).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

struct IdleRaw {
    authority: String,
    stream: TcpStream,
    since: Instant,
}

thread_local! {
    static IDLE_RAW: RefCell<Vec<IdleRaw>> = const { RefCell::new(Vec::new()) };
}

/// An idle keep-alive connection to `authority` for the forwarding fast
/// path (newest first), checked to be still open: the upstream has neither
/// closed it nor sent anything since its last response.
pub(crate) fn checkout_raw(authority: &str) -> Option<TcpStream> {
    IDLE_RAW.with(|idle| {
        let mut idle = idle.borrow_mut();
        // Kept oldest first: the expired ones are at the front.
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        while let Some(i) = idle.iter().rposition(|c| c.authority == authority) {
            // Usually the last one: no shifting.
            let c = idle.remove(i);
            // Not readable since its last (short) read: nothing arrived, not
            // even the upstream's FIN, so it is open and quiet; no system
            // call. Readable: probe it; WouldBlock means open and quiet,
            // EOF, an error or unexpected bytes make it unusable.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if c.stream.poll_read_ready(&mut cx).is_pending() {
                return Some(c.stream);
            }
            let mut probe = [0u8; 1];
            if matches!(c.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                return Some(c.stream);
            }
        }
        None
    })
}

/// Returns a fast-path connection whose last response was read whole.
pub(crate) fn put_raw(authority: &str, stream: TcpStream) {
    IDLE_RAW.with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(IdleRaw {
                authority: authority.to_owned(),
                stream,
                since: Instant::now(),
            });
        }
    });
}

/// Sends `req` (origin-form URI, Host set) to `authority` on a pooled or new
/// connection.
pub async fn send(
    authority: &str,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, Lease), UpstreamError> {
    loop {
        let (mut sender, reused) = match checkout(authority) {
            Some(s) => (s, true),
            None => (connect(authority).await?, false),
        };
        // A new connection is ready once its task has run; a reused one
        // once it has finished its previous exchange.
        if !sender.is_ready()
            && let Err(e) = sender.ready().await
        {
            if reused {
                continue;
            }
            return Err(e.into());
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                return Ok((
                    resp,
                    Lease {
                        authority: authority.to_owned(),
                        sender,
                    },
                ));
            }
            Err(mut e) => match e.take_message() {
                // Never written: safe to try again on a fresh connection.
                Some(back) if reused => req = back,
                _ => return Err(e.into_error().into()),
            },
        }
    }
}
