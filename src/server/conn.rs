//! Connection hygiene: what bounds the time and the number of connections a
//! client can hold without using them (`[listen]` limits).
//!
//! - [`Guarded`] wraps every accepted socket: a write that makes no
//!   progress for `listen.write_timeout_secs` fails, which ends the
//!   connection (a client that stops reading an answer frees the upstream
//!   connection behind it).
//! - [`Activity`] counts a connection's requests in flight; the accept loop
//!   closes a connection with none for `listen.idle_timeout_secs`, whatever
//!   it sends meanwhile (HTTP/2 PINGs and SETTINGS, half a preface,
//!   nothing at all).
//! - [`Live`] counts a listener's connections, so a shutdown can wait for
//!   them to drain.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::metrics::{CONNECTIONS, CloseReason, Listener};

/// A socket whose writes must make progress within a time limit.
pub struct Guarded<IO> {
    inner: IO,
    write_timeout: Duration,
    /// Armed while a write is pending.
    stall: Option<Pin<Box<Sleep>>>,
    listener: Listener,
}

impl<IO> Guarded<IO> {
    /// Wraps `inner`.
    pub fn new(inner: IO, write_timeout: Duration, listener: Listener) -> Self {
        Self {
            inner,
            write_timeout,
            stall: None,
            listener,
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    /// A write is pending: fails once it has been for the write timeout.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_timeout;
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stall = None;
                CONNECTIONS.closed(self.listener, CloseReason::WriteTimeout);
                tracing::debug!(
                    timeout_secs = timeout.as_secs(),
                    "client stopped reading; closing"
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write made no progress within listen.write_timeout_secs",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, p: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match p {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.stall = None;
                ready
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(p, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(p, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(p, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(p, cx)
    }
}

/// A connection's requests in flight, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }
}

/// One request in flight until dropped.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1
            && let Ok(mut t) = self.0.idle_since.lock()
        {
            *t = Instant::now();
        }
    }
}

impl Activity {
    /// A request starts.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// When the connection will have been idle for `idle`, if it has no
    /// request in flight (`None` while one is).
    pub fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        self.idle_since.lock().ok().map(|t| *t + idle)
    }
}

/// What a connection holds while it lives (its slot under
/// `listen.max_connections`, its count in the metrics and in the drain). A
/// request carries a clone in its extensions, so a WebSocket tunnel that
/// outlives the HTTP connection it came from keeps holding them.
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<dyn std::any::Any + Send + Sync>);

impl ConnSlot {
    /// Holds `held` until the last clone is dropped.
    pub fn new<T: Send + Sync + 'static>(held: T) -> Self {
        Self(Arc::new(held))
    }
}

/// A response body that keeps its request in flight until it is done.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connections a listener has open.
#[derive(Debug, Default)]
pub struct Live {
    n: AtomicUsize,
    zero: Notify,
}

/// One live connection until dropped.
pub struct LiveGuard(Arc<Live>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl Live {
    /// Counts a connection while the guard lives.
    pub fn enter(self: &Arc<Self>) -> LiveGuard {
        self.n.fetch_add(1, Ordering::AcqRel);
        LiveGuard(Arc::clone(self))
    }

    /// Waits until no connection is left.
    pub async fn drained(&self) {
        loop {
            let notified = self.zero.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.n.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_that_makes_no_progress_fails_after_the_timeout() {
        // A peer that never reads: the pipe fills, then the write stalls.
        let (a, _b) = tokio::io::duplex(1024);
        let mut g = Guarded::new(a, Duration::from_millis(200), Listener::Admin);
        let before = CONNECTIONS.closed_count(Listener::Admin, CloseReason::WriteTimeout);
        let start = std::time::Instant::now();
        let r = g.write_all(&[0u8; 64 * 1024]).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert!(CONNECTIONS.closed_count(Listener::Admin, CloseReason::WriteTimeout) > before);
    }

    #[tokio::test]
    async fn idle_deadline_only_without_requests_in_flight() {
        let a = Arc::new(Activity::default());
        assert!(a.idle_deadline(Duration::from_secs(1)).is_some());
        let g = a.begin();
        assert!(a.idle_deadline(Duration::from_secs(1)).is_none());
        let t = Instant::now();
        drop(g);
        assert!(a.idle_deadline(Duration::from_secs(1)).unwrap() >= t + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_connection() {
        let live = Arc::new(Live::default());
        let l2 = Arc::clone(&live);
        let h = tokio::spawn(async move {
            let _g = l2.enter();
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        tokio::task::yield_now().await;
        tokio::time::timeout(Duration::from_secs(5), live.drained())
            .await
            .unwrap();
        h.await.unwrap();
    }
}
