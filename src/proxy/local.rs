//! Connections to an `http://` MCP server that belong to one client connection, driven by
//! that connection's own task.
//!
//! Through a shared pool (reqwest's), every upstream connection runs in a task of its own,
//! so each answer crosses tasks, and often threads, once for its head and once per body
//! frame. Here the task that serves a client connection (see `serve`) also polls the
//! upstream connections opened for it, so an answer is read and forwarded in one task. In
//! the benchmarks that saves about a quarter of the operator's CPU per call
//! (`bench/RESULTS.md`).
//!
//! Only HTTP/1.1 client connections have them: such a connection has one request open at a
//! time, so one upstream connection per MCP server serves all its requests in turn. They
//! close when it does, and so do their event streams; an idle one lives as long as its
//! client connection. An HTTP/2 client connection runs each request in a task of its own
//! anyway, and may have hundreds open at once, so its requests go through the shared
//! clients, as do those for HTTP/2 toward the MCP server and for `https://` MCP servers.
//! The shared clients honour `HTTPS_PROXY`; these connections never use a proxy.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::Authority;
use axum::http::{HeaderValue, Request, Response, Uri, header};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long opening a connection to the MCP server may take, as for the shared clients.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Upstream connections one client connection keeps, one per MCP server it reached last
/// (requests of one connection may be for several connectors).
const MAX_KEPT: usize = 4;

type Driven = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The upstream connections of one client connection, in its requests' extensions. Every
/// client connection has one, so it allocates nothing until a connection is opened.
#[derive(Clone)]
pub struct Upstreams {
    shared: Arc<Shared>,
}

struct Shared {
    /// Connections to reuse, each busy until the answer it carries has ended.
    kept: Mutex<VecDeque<Kept>>,
    opened: Mutex<Opened>,
    /// The driver's task, woken when a connection is opened.
    driver: AtomicWaker,
}

/// Connections opened and not yet taken by the driver, and whether the driver is gone:
/// then a connection opened is spawned instead, so that it still ends.
#[derive(Default)]
struct Opened {
    connections: Vec<Driven>,
    driver_gone: bool,
}

struct Kept {
    authority: Authority,
    sender: SendRequest<Body>,
}

/// What polls a client connection's upstream connections; its task runs [`Driver::run`]
/// beside the connection and drops it when the connection ends.
pub struct Driver {
    shared: Arc<Shared>,
}

/// Why a request did not reach the MCP server, or got no answer.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("connecting to the MCP server timed out")]
    ConnectTimeout,
    #[error("connecting to the MCP server")]
    Connect(#[source] std::io::Error),
    #[error("the MCP server's HTTP/1.1 handshake")]
    Handshake(#[source] hyper::Error),
    #[error("the exchange with the MCP server")]
    Exchange(#[source] hyper::Error),
    #[error("the MCP server's URL has no usable host")]
    NotAbsolute,
}

/// A handle for a new client connection's requests, and the driver its task runs.
pub fn pair() -> (Upstreams, Driver) {
    let shared = Arc::new(Shared {
        kept: Mutex::new(VecDeque::new()),
        opened: Mutex::new(Opened::default()),
        driver: AtomicWaker::new(),
    });
    let upstreams = Upstreams {
        shared: shared.clone(),
    };
    (upstreams, Driver { shared })
}

impl Driver {
    /// Polls every upstream connection opened for its client connection, until dropped;
    /// never returns.
    pub async fn run(self) {
        let mut connections = None::<FuturesUnordered<Driven>>;
        std::future::poll_fn(|cx| {
            self.shared.driver.register(cx.waker());
            let opened = std::mem::take(&mut lock(&self.shared.opened).connections);
            if !opened.is_empty() {
                connections
                    .get_or_insert_with(FuturesUnordered::new)
                    .extend(opened);
            }
            if let Some(connections) = connections.as_mut() {
                // Until every connection is pending (or there is none left).
                while let Poll::Ready(Some(())) = connections.poll_next_unpin(cx) {}
            }
            Poll::<()>::Pending
        })
        .await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let mut opened = lock(&self.shared.opened);
        opened.driver_gone = true;
        opened.connections.clear();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Upstreams {
    /// Sends `request` (whose URI is the MCP server's absolute URL) on a kept connection of
    /// this client connection to the same server, if one is free, or on a new one. A
    /// request a kept connection could not take, because the server had just closed it,
    /// goes on a new one.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, LocalError> {
        let (request, authority) = origin_form(request)?;

        let request = match self.take(&authority) {
            Some(mut sender) => match sender.try_send_request(request).await {
                Ok(response) => {
                    self.put(authority, sender);
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    Some(request) => request,
                    None => return Err(LocalError::Exchange(failed.into_error())),
                },
            },
            None => request,
        };

        let mut sender = self.connect(&authority).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(LocalError::Exchange)?;
        self.put(authority, sender);
        Ok(response)
    }

    fn take(&self, authority: &Authority) -> Option<SendRequest<Body>> {
        let mut kept = lock(&self.shared.kept);
        kept.retain(|k| !k.sender.is_closed());
        let at = kept
            .iter()
            .position(|k| k.authority == *authority && k.sender.is_ready())?;
        kept.remove(at).map(|k| k.sender)
    }

    fn put(&self, authority: Authority, sender: SendRequest<Body>) {
        let mut kept = lock(&self.shared.kept);
        if kept.len() >= MAX_KEPT {
            kept.pop_front();
        }
        kept.push_back(Kept { authority, sender });
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<Body>, LocalError> {
        // An IPv6 host is bracketed in the URI, and must be to connect too.
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let connecting = TcpStream::connect(address);
        let socket = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| LocalError::ConnectTimeout)?
            .map_err(LocalError::Connect)?;
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY toward the MCP server");
        }

        let (sender, connection) = http1::handshake(TokioIo::new(socket))
            .await
            .map_err(LocalError::Handshake)?;
        let driven: Driven = Box::pin(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a connection to the MCP server ended");
            }
        });
        let mut opened = lock(&self.shared.opened);
        if opened.driver_gone {
            drop(opened);
            tokio::spawn(driven);
        } else {
            opened.connections.push(driven);
            drop(opened);
            self.shared.driver.wake();
        }
        Ok(sender)
    }
}

/// The request with its URI cut to the path and query, and the `Host` the MCP server's URL
/// names; that authority. Nothing is copied but the `Host` value.
fn origin_form(request: Request<Body>) -> Result<(Request<Body>, Authority), LocalError> {
    let (mut parts, body) = request.into_parts();
    let uri = std::mem::take(&mut parts.uri).into_parts();
    let authority = uri.authority.ok_or(LocalError::NotAbsolute)?;

    let host = HeaderValue::from_str(authority.as_str()).map_err(|_| LocalError::NotAbsolute)?;
    parts.headers.insert(header::HOST, host);
    parts.uri = uri
        .path_and_query
        .map_or_else(|| Uri::from_static("/"), Uri::from);
    Ok((Request::from_parts(parts, body), authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_goes_out_in_origin_form_with_the_host_of_the_url() {
        let request = Request::post("http://kf-mcp.monitoring.svc:8080/mcp?x=1")
            .body(Body::empty())
            .unwrap();
        let (request, authority) = origin_form(request).unwrap();
        assert_eq!(request.uri(), "/mcp?x=1");
        assert_eq!(
            request.headers()[header::HOST],
            "kf-mcp.monitoring.svc:8080"
        );
        assert_eq!(authority, "kf-mcp.monitoring.svc:8080");

        let request = Request::get("http://[::1]/mcp")
            .body(Body::empty())
            .unwrap();
        let (request, authority) = origin_form(request).unwrap();
        assert_eq!(request.headers()[header::HOST], "[::1]");
        assert_eq!(authority, "[::1]");
        assert_eq!(authority.port_u16(), None);

        let relative = Request::get("/mcp").body(Body::empty()).unwrap();
        assert!(matches!(
            origin_form(relative),
            Err(LocalError::NotAbsolute)
        ));
    }
}
