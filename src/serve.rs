//! The HTTP server of `run` and `dev`: hyper-util's connection builder over an accept loop
//! of our own, because `axum::serve` sets none of what a server facing MCP clients needs:
//! - a bound on a client that connects and then sends nothing, or sends a request head a
//!   byte at a time (slowloris): [`HEADER_READ_TIMEOUT`];
//! - a bound on what one request head may buffer, [`MAX_HEAD`];
//! - HTTP/2 pings, so that a dead HTTP/2 client is noticed;
//! - `TCP_NODELAY`: a response written in pieces (headers, then each event) otherwise
//!   waits for the client's delayed ACK, about 40 ms a piece.
//!
//! Each request carries the peer's address as axum's `ConnectInfo<SocketAddr>`.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long a client may take to send its first byte, and then each request head.
///
/// hyper also applies it to a kept-alive HTTP/1.1 connection waiting for its next request,
/// so it closes idle connections too. A proxy in front must close its idle connections
/// to us first, or a request it sends as we close fails with a 502: 620 s is above the
/// idle timeouts of ingress-nginx and AWS load balancers (60 s) and what Google's load
/// balancers ask of a backend (more than 600 s).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(620);

/// The most one HTTP/1.1 connection buffers while reading a request head (hyper's default
/// is about 400 KiB): more than nginx's 32 KiB, so that whatever passes an ingress fits.
/// The buffer starts at 8 KiB and only grows for a larger head.
pub const MAX_HEAD: usize = 64 * 1024;

/// What a connection is allowed; tests shorten it.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Serves `app` on `listener` until `stop` completes, then waits for the open connections
/// to finish (the caller bounds that wait).
pub async fn serve(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    serve_with(listener, app, stop, Limits::default()).await;
}

/// [`serve`] with other [`Limits`].
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
    limits: Limits,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(60))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);

    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }

        let app = app.clone();
        let (upstreams, driver) = crate::proxy::local::pair();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(upstreams.clone());
            app.clone().oneshot(request)
        });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let first_byte = limits.header_read_timeout;
        tokio::spawn(async move {
            // The protocol is told from the first bytes, before hyper's own timer starts.
            let mut byte = [0u8; 1];
            let waited = tokio::time::timeout(first_byte, socket.peek(&mut byte)).await;
            if !matches!(waited, Ok(Ok(n)) if n > 0) {
                tracing::debug!(%peer, "closing a connection that sent nothing");
                return;
            }

            // The connection's task also drives the connections `/mcp` opens to the MCP
            // server for it (`proxy::local`), and drops them when it ends.
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(socket), service);
            tokio::select! {
                served = watcher.watch(connection.into_owned()) => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                () = driver.run() => {}
            }
        });
    }

    drop(listener);
    graceful.shutdown().await;
}

/// A failed accept: a connection that went away before it was taken is nothing; anything
/// else (out of file descriptors) is logged, and accepting pauses so as not to spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};

    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
