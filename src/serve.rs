//! The HTTP server of `run` and `dev`: hyper's HTTP/1.1 and HTTP/2 connections over an
//! accept loop of our own, because `axum::serve` sets none of what a server facing MCP
//! clients needs:
//! - a bound on a client that connects and then sends nothing, or sends a request head a
//!   byte at a time (slowloris): [`HEADER_READ_TIMEOUT`];
//! - a bound on what one request head may buffer, [`MAX_HEAD`];
//! - HTTP/2 pings, so that a dead HTTP/2 client is noticed;
//! - `TCP_NODELAY`: a response written in pieces (headers, then each event) otherwise
//!   waits for the client's delayed ACK, about 40 ms a piece.
//!
//! Each request carries the peer's address as axum's `ConnectInfo<SocketAddr>`.
//!
//! The protocol is told from the first bytes of a connection, peeked and left in the socket
//! (`is_http2`). hyper-util's automatic builder reads them instead and hands them to
//! hyper as a read of their own, after which hyper's HTTP/1.1 read buffer has to double:
//! 8 KiB more for every connection, so for every event stream held open over HTTP/1.1
//! (`bench/RESULTS.md`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures::future::Either;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

/// The bound on a request head, above nginx's 32 KiB so that whatever passes an ingress
/// fits: over HTTP/2, the size of its header list; over HTTP/1.1, what hyper buffers while
/// a head is incomplete (its default is about 400 KiB). The HTTP/1.1 buffer starts at
/// 8 KiB and only grows for a larger head; a head that arrives in one large read may be
/// up to twice this before it is refused.
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

/// The connection builders of one server, shared by its connections.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: Limits) -> Builders {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(MAX_HEAD);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(60))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_header_list_size(MAX_HEAD as u32);
        Builders { http1, http2 }
    }
}

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the first bytes of a connection, as many as have arrived, are HTTP/2's preface.
/// Two bytes tell: no HTTP/1.1 method starts with `PR` but WebDAV's, which we do not
/// serve. A lone `P` is taken as HTTP/1.1, as HTTP/2 clients write the preface at once.
fn is_http2(first: &[u8]) -> bool {
    let n = first.len().min(HTTP2_PREFACE.len());
    n >= 2 && first[..n] == HTTP2_PREFACE[..n]
}

/// [`serve`] with other [`Limits`].
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
    limits: Limits,
) {
    let builders = Arc::new(Builders::new(limits));
    let graceful = GracefulShutdown::new();
    // Tells the connections still waiting for their first byte that the server stops: they
    // are not hyper's yet, so its graceful shutdown would wait for their timeout.
    let (closing, closed) = tokio::sync::watch::channel(());
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
        let (builders, watcher) = (builders.clone(), graceful.watcher());
        let (first_bytes, mut closed) = (limits.header_read_timeout, closed.clone());
        tokio::spawn(async move {
            // The protocol is told from the first bytes, before hyper's own timer starts.
            let mut first = [0u8; HTTP2_PREFACE.len()];
            let peeked = tokio::select! {
                peeked = tokio::time::timeout(first_bytes, socket.peek(&mut first)) => peeked,
                _ = closed.changed() => return,
            };
            let n = match peeked {
                Ok(Ok(n)) if n > 0 => n,
                _ => {
                    tracing::debug!(%peer, "closing a connection that sent nothing");
                    return;
                }
            };

            // An HTTP/2 connection's state is boxed, so that the far more common HTTP/1.1
            // connection's task is not as large.
            let io = TokioIo::new(socket);
            let connection = if is_http2(&first[..n]) {
                let connection = builders.http2.serve_connection(io, service);
                Either::Right(Box::pin(watcher.watch(connection)))
            } else {
                Either::Left(watcher.watch(builders.http1.serve_connection(io, service)))
            };

            // The connection's task also drives the connections `/mcp` opens to the MCP
            // server for it (`proxy::local`), and drops them when it ends.
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                () = driver.run() => {}
            }
        });
    }

    drop(listener);
    let _ = closing.send(());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_is_told_from_the_first_bytes() {
        assert!(is_http2(HTTP2_PREFACE));
        assert!(is_http2(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"));
        assert!(is_http2(b"PRI * HT"));

        for http1 in [
            &b"POST /mcp HTTP/1.1\r\n"[..],
            b"PUT /",
            b"PATCH",
            b"P",
            b"GET / HTTP/1.1",
        ] {
            assert!(!is_http2(http1), "{}", String::from_utf8_lossy(http1));
        }
    }
}
