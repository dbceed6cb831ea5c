//! The accept loop of the public HTTP servers (ingest and api): HTTP/1.1 and h2c on one port, a
//! header-read timeout, and graceful shutdown.
//!
//! hyper's header-read timeout starts whenever a connection waits for a request head, so it also
//! closes keep-alive connections left idle between requests: one setting bounds both a client
//! that never finishes its headers (slowloris) and one that holds a connection without using it.
//! A response being streamed (server-sent events) is not waiting for a head and is not cut.

use std::{error::Error as StdError, time::Duration};

use hyper::{body::Incoming, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `service` on every connection `listener` accepts until `shutdown` is cancelled, then
/// stops accepting and returns the watcher of the connections still open: the caller decides how
/// long they may drain (`GracefulShutdown::shutdown`).
pub async fn accept_until<S, B>(
    listener: TcpListener,
    service: S,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) -> GracefulShutdown
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        stream.set_nodelay(true).ok();
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful
}
