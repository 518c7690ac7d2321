//! HTTP/2 connections to MCP servers (`spec.mcpServer.http2`), counted by open stream.
//!
//! An HTTP/2 client keeps one connection per server and, when the server's limit of
//! concurrent streams is reached, makes further requests wait for a stream to close
//! (hyper's pool does not open another connection, RFC 9113 9.1). MCP event streams stay
//! open for hours, so past the limit every new request, a `tools/call` too, would hang.
//! Here each connection carries at most [`STREAMS_PER_CONNECTION`] requests at a time, the
//! smallest limit RFC 9113 6.5.2 recommends a server to allow, and another connection is
//! opened when all are that busy.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// Requests one connection carries at once.
pub const STREAMS_PER_CONNECTION: usize = 100;

struct Connection {
    client: reqwest::Client,
    open: Arc<AtomicUsize>,
}

/// HTTP/2 clients, each with one connection per server, and their open streams.
pub struct Http2Clients {
    connections: Mutex<Vec<Connection>>,
    build: fn() -> reqwest::Client,
    per_connection: usize,
}

/// One open stream on a connection, held until its response body is done or dropped.
pub struct Stream {
    open: Arc<AtomicUsize>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Http2Clients {
    /// No connection yet; `build` makes the client of each new one.
    pub fn new(build: fn() -> reqwest::Client, per_connection: usize) -> Http2Clients {
        Http2Clients {
            connections: Mutex::new(Vec::new()),
            build,
            per_connection: per_connection.max(1),
        }
    }

    /// A client whose connection has a stream free, and that stream.
    pub fn checkout(&self) -> (reqwest::Client, Stream) {
        if let Some(taken) = self.take_free() {
            return taken;
        }

        // Building a client reads the system's CA certificates: not under the lock.
        let client = (self.build)();
        let open = Arc::new(AtomicUsize::new(1));
        let stream = Stream { open: open.clone() };
        self.lock().push(Connection {
            client: client.clone(),
            open,
        });
        (client, stream)
    }

    fn take_free(&self) -> Option<(reqwest::Client, Stream)> {
        let connections = self.lock();
        let connection = connections
            .iter()
            .find(|c| c.open.load(Ordering::Acquire) < self.per_connection)?;

        connection.open.fetch_add(1, Ordering::AcqRel);
        let stream = Stream {
            open: connection.open.clone(),
        };
        Some((connection.client.clone(), stream))
    }

    /// Clients made so far, one connection each per server.
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    /// Each change under the lock is one push; a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A response body that holds its stream until it ends or is dropped.
pub struct Counted {
    inner: Body,
    stream: Option<Stream>,
}

impl Counted {
    /// `inner`, holding `stream` open while it lasts.
    pub fn new(inner: Body, stream: Stream) -> Counted {
        Counted {
            inner,
            stream: Some(stream),
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.stream = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_connection_opens_another_and_a_closed_stream_frees_its_place() {
        let clients = Http2Clients::new(reqwest::Client::new, 2);

        let first = clients.checkout().1;
        let _second = clients.checkout().1;
        assert_eq!(clients.connections(), 1);
        let _third = clients.checkout().1;
        assert_eq!(clients.connections(), 2);

        drop(first);
        let _fourth = clients.checkout().1;
        assert_eq!(clients.connections(), 2, "the freed stream is reused");
        let _fifth = clients.checkout().1;
        assert_eq!(clients.connections(), 2);
        let _sixth = clients.checkout().1;
        assert_eq!(clients.connections(), 3);
    }
}
