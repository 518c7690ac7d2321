//! The HTTP server of `run` and `dev`: hyper-util's connection builder over an accept loop
//! of our own, because `axum::serve` sets none of what a server facing MCP clients needs:
//! - a bound on reading a request head, so that a client sending its headers a byte at a
//!   time (slowloris) is cut after [`HEADER_READ_TIMEOUT`];
//! - a small read buffer per HTTP/1.1 connection ([`READ_BUFFER`]), since most
//!   connections sit idle under an open event stream;
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

/// How long a client may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The most an HTTP/1.1 connection buffers while reading (hyper's least): a request head
/// must fit, as with nginx's default `large_client_header_buffers`.
pub const READ_BUFFER: usize = 8 * 1024;

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
        .max_buf_size(READ_BUFFER);
    builder.http2().timer(TokioTimer::new());
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
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(socket), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
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
