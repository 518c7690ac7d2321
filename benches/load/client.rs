//! The driver's HTTP client: one bare hyper connection per worker, so that the driver
//! spends as little of the shared CPU as it can, a cookie jar for the peer's sign-in, and
//! latency statistics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A request body.
pub type Body = Full<Bytes>;

/// One HTTP/1.1 keep-alive connection.
pub struct Conn {
    addr: SocketAddr,
    send: http1::SendRequest<Body>,
}

/// An answer read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

async fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let io = TokioIo::new(tcp(addr).await?);
        let (send, conn) = http1::handshake(io).await.map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { addr, send })
    }

    /// Sends a request and returns the answer with its body still streaming.
    pub async fn send(&mut self, request: Request<Body>) -> hyper::Result<Response<Incoming>> {
        if self.send.ready().await.is_err() {
            // The server closed an idle connection (node does after 5 s): open another.
            if let Ok(fresh) = Conn::open(self.addr).await {
                *self = fresh;
            }
        }
        self.send.send_request(request).await
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(&mut self, request: Request<Body>) -> Result<Answer, String> {
        let response = self.send(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// One HTTP/2 connection (cleartext, prior knowledge) carrying many streams.
#[derive(Clone)]
pub struct Conn2 {
    send: http2::SendRequest<Body>,
}

impl Conn2 {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn2> {
        let io = TokioIo::new(tcp(addr).await?);
        let (send, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn2 { send })
    }

    /// Sends a request and returns the answer with its body still streaming.
    pub async fn send(&mut self, request: Request<Body>) -> hyper::Result<Response<Incoming>> {
        self.send.ready().await?;
        self.send.send_request(request).await
    }
}

/// Builds a request to `addr`, HTTP/1.1 style (origin-form path and a Host header).
pub fn request(method: Method, addr: SocketAddr, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
}

/// A form body.
pub fn form(pairs: &[(&str, &str)]) -> Body {
    let text = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    Full::new(Bytes::from(text))
}

/// The cookies a server set, sent back on every later request (the peer's sign-in binds
/// its interaction and session to them).
#[derive(Clone, Default)]
pub struct Jar {
    cookies: BTreeMap<String, String>,
}

impl Jar {
    /// Takes the `Set-Cookie` headers of an answer; an empty or expired one deletes.
    pub fn take(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let Some((name, value)) = text.split(';').next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let expired = value.is_empty() || text.to_ascii_lowercase().contains("1970");
            if expired {
                self.cookies.remove(name.trim());
            } else {
                self.cookies.insert(name.trim().into(), value.trim().into());
            }
        }
    }

    /// The `Cookie` header, if any cookie is held.
    pub fn header(&self) -> Option<HeaderValue> {
        if self.cookies.is_empty() {
            return None;
        }
        let text: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        HeaderValue::from_str(&text.join("; ")).ok()
    }
}

/// Latencies of one run, and how long it took.
#[derive(Default)]
pub struct Samples {
    /// Each request's latency, microseconds.
    pub micros: Vec<u32>,
    /// Requests that failed.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// What the first failure said.
    pub first_error: Option<String>,
}

impl Samples {
    /// Adds another worker's samples.
    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// Counts a failure, keeping what the first one said.
    pub fn failed(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.micros.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..1) in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        self.micros.sort_unstable();
        let i = ((self.micros.len() - 1) as f64 * q).round() as usize;
        f64::from(self.micros[i]) / 1000.0
    }
}
