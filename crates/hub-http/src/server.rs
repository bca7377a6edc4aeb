//! Serving a router on a TCP listener so that slow or greedy clients cannot exhaust the process:
//! a deadline for the request head and one for the body, a cap on open connections and a cap on
//! requests in flight.
//!
//! axum's own `serve` gives hyper no timer, so hyper's header timeout never fires; this accept
//! loop builds each connection with a timer and the limits itself.

use crate::router::error_response;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use hub_core::error::{ErrorCode, PublicError};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{debug, warn};

/// What one listener tolerates from its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From the connection's first byte (or the end of the previous request) to the end of the
    /// request head. A client that sends half a head is disconnected after this.
    pub header_timeout: Duration,
    /// From the end of the head to the last byte of the body: a body trickled slower than this
    /// is answered `408 request_timeout`.
    pub body_timeout: Duration,
    /// Open connections at most; further clients wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Requests being handled at once at most; more are answered `503 overloaded`.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_in_flight: 256,
        }
    }
}

/// When the request body must have arrived; set on every request this server handles and
/// honoured by the handlers that read a body.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline(pub tokio::time::Instant);

/// How long open requests get to finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Adds the body deadline and the in-flight cap to `app`.
pub fn with_limits(app: Router, limits: &Limits) -> Router {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let body_timeout = limits.body_timeout;
    app.layer(axum::middleware::from_fn(move |mut req: Request, next: Next| {
        let in_flight = in_flight.clone();
        async move {
            // Shedding, not queueing: a queue would hold the connection (and its body) anyway.
            let Ok(_permit) = in_flight.try_acquire_owned() else {
                return error_response(&PublicError::new(
                    ErrorCode::Overloaded,
                    "too many requests in flight; retry later",
                ));
            };
            req.extensions_mut().insert(BodyDeadline(tokio::time::Instant::now() + body_timeout));
            next.run(req).await
        }
    }))
}

/// Serves `app` (already wrapped by [`with_limits`]) on `listener` until `shutdown` resolves,
/// then lets open requests finish for a short grace period.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        // The permit is taken before accepting: over the cap, new clients wait in the backlog.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let svc = app.clone().map_request(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => warn!("open connections cut at shutdown"),
    }
    Ok(())
}
