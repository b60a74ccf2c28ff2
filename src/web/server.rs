//! Serving the router on a TCP listener with the limits that keep mlmon
//! up under load and against slow clients: at most `max_connections`
//! connections at once (more wait in the kernel's listen queue, as with
//! Prometheus' `--web.max-connections`), request headers within 30 s (or
//! the read timeout, if shorter) and whole requests within
//! `read_timeout`, headers at most 64 KiB in 100 fields, and a graceful
//! stop that lets requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http::tls_server::TlsServer;
use crate::live::Live;

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// Longest a client may take to send a whole request.
    pub read_timeout: Duration,
}

/// Most bytes of request line and headers.
const MAX_HEADER_BYTES: usize = 64 << 10;
/// Longest a client may take to send the request line and headers (and
/// how long an idle keep-alive connection stays open).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes; over TLS
/// while `tls` holds a setup (taken per connection, so a reload switches
/// it for the next one).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Arc<Live<Option<Arc<TlsServer>>>>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT.min(limits.read_timeout))
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(100);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(message = "Cannot accept a connection", error = %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let read_timeout = limits.read_timeout;
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let router = router.clone();
                async move {
                    let req = req.map(axum::body::Body::new);
                    Ok::<_, std::convert::Infallible>(answer(router, req, read_timeout).await)
                }
            });
        let (http, watcher) = (http.clone(), graceful.watcher());
        match tls.get().as_ref().clone() {
            None => {
                let conn = http.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    let _ = watcher.watch(conn).await;
                    drop(permit);
                });
            }
            Some(tls) => {
                let within = HEADER_TIMEOUT.min(limits.read_timeout);
                tokio::spawn(async move {
                    match tls.accept(stream, within).await {
                        Ok(stream) => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(conn).await;
                        }
                        Err(e) => tracing::debug!(message = "TLS connection refused", error = %e),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => {
            tracing::warn!(message = "Requests still running at shutdown were cut off");
        }
    }
}

/// One request through the router, its body cut off when the client
/// takes longer than `read_timeout` (from the end of its headers) to send
/// it, as Go's `ReadTimeout` does; the handler itself may take longer.
async fn answer(router: Router, req: Request, read_timeout: Duration) -> axum::response::Response {
    use tower::ServiceExt;
    let req = req.map(|body| {
        axum::body::Body::new(Deadline {
            inner: body,
            sleep: Box::pin(tokio::time::sleep(read_timeout)),
        })
    });
    match router.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// A request body that fails once its deadline passes.
struct Deadline {
    inner: axum::body::Body,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Poll::Ready(()) = this.sleep.as_mut().poll(cx) {
            return Poll::Ready(Some(Err(
                "request body not received within the read timeout".into(),
            )));
        }
        std::pin::Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
