//! The one shutdown signal every binary listens for: SIGINT (Ctrl-C) or SIGTERM (what process
//! supervisors and `docker stop` send). Libraries never listen for signals themselves; they take a
//! shutdown future or a `CancellationToken`, so tests can stop them at will.

use tokio_util::sync::CancellationToken;

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    listen().await;
}

/// A token cancelled by SIGINT or SIGTERM, for code that fans shutdown out to many tasks. The
/// handlers are installed before this returns, so call it first thing in `main`: a signal that
/// arrives while the service is still connecting then stops it cleanly instead of killing it
/// (a supervisor, or a test, may stop a process that started a moment ago).
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    let signalled = listen();
    tokio::spawn(async move {
        signalled.await;
        child.cancel();
    });
    token
}

/// Installs the handlers now and returns what resolves on the first signal.
#[cfg(unix)]
fn listen() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let wait = |stream: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
            match stream {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(error) => {
                    tracing::error!(%error, signal = name, "cannot listen for this signal; relying on the other");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = wait(interrupt, "SIGINT") => tracing::info!(signal = "SIGINT", "shutting down"),
            () = wait(terminate, "SIGTERM") => tracing::info!(signal = "SIGTERM", "shutting down"),
        }
    }
}

#[cfg(not(unix))]
fn listen() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!(signal = "SIGINT", "shutting down");
    }
}
