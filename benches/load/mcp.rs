//! `/mcp`: the latency the proxy adds at a fixed rate, the throughput it keeps, and idle
//! event streams held open through it. The MCP server behind it is `dev`'s own `whoami`
//! (rmcp, sessions kept in memory), run in this process on a runtime of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::client::{Body, Conn, Conn2, Samples, request};

const PROTOCOL: &str = "2025-06-18";
const ACCEPT: &str = "application/json, text/event-stream";

/// Runs `serve` on a runtime of two threads of its own, named `name`, as the operator has;
/// the address `serve` sends once it listens.
fn on_own_runtime<F, Fut>(name: &str, serve: F) -> SocketAddr
where
    F: FnOnce(std::sync::mpsc::Sender<SocketAddr>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve(tx));
    });
    rx.recv().unwrap()
}

/// Starts the `whoami` MCP server on a runtime of its own threads; its address.
pub fn upstream() -> SocketAddr {
    on_own_runtime("whoami", |tx| async move {
        let (addr, task) = mcp_connector::dev::whoami::spawn().await.unwrap();
        tx.send(addr).unwrap();
        let _ = task.await;
    })
}

/// A bare TCP relay in front of `up`, on a runtime of two threads as the operator has:
/// the least any proxy costs on this machine, one more hop of sockets and wake-ups with no
/// HTTP, no token and no copy of headers. Its address.
pub fn relay(up: SocketAddr) -> SocketAddr {
    on_own_runtime("relay", move |tx| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tx.send(listener.local_addr().unwrap()).unwrap();
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(up).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    })
}

/// Where requests go: straight to the MCP server, or through `/mcp` with a token.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub bearer: Option<String>,
    /// Headers sent on every call besides the MCP ones: the identity `/mcp` adds, when the
    /// MCP server is called directly as `/mcp` would call it.
    pub extra: Vec<(String, String)>,
}

impl Target {
    fn post(&self, session: Option<&str>, body: String) -> http::Request<Body> {
        let mut req = request(Method::POST, self.addr, &self.path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, ACCEPT)
            .header("mcp-protocol-version", PROTOCOL);
        if let Some(token) = &self.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(id) = session {
            req = req.header("mcp-session-id", id);
        }
        for (name, value) in &self.extra {
            req = req.header(name, value);
        }
        req.body(Full::new(Bytes::from(body))).unwrap()
    }

    /// The GET that opens a session's event stream.
    pub fn stream_request(&self, session: &str, absolute: bool) -> http::Request<Body> {
        let uri = if absolute {
            format!("http://{}{}", self.addr, self.path)
        } else {
            self.path.clone()
        };
        let mut req = http::Request::get(uri)
            .header(header::ACCEPT, "text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .header("mcp-session-id", session);
        if !absolute {
            req = req.header(header::HOST, self.addr.to_string());
        }
        if let Some(token) = &self.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        req.body(Full::default()).unwrap()
    }
}

/// Initializes an MCP session; its id.
pub async fn session(conn: &mut Conn, target: &Target) -> String {
    let init = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "load driver", "version": "0"},
        },
    });
    let answer = conn
        .call(target.post(None, init.to_string()))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let id = answer.headers["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();

    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let answer = conn
        .call(target.post(Some(&id), initialized.into()))
        .await
        .unwrap();
    assert!(answer.status.is_success(), "{:?}", answer.body);
    id
}

/// One `tools/call` of `whoami`; whether it answered with a result.
async fn call_whoami(conn: &mut Conn, target: &Target, session: &str, id: u64) -> bool {
    let call = serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}},
    });
    let body = call.to_string();
    match conn.call(target.post(Some(session), body)).await {
        Ok(a) => a.status == 200 && a.body.windows(8).any(|w| w == b"\"result\""),
        Err(_) => false,
    }
}

/// The identity headers `/mcp` at `target` sends the MCP server, as `whoami` reports them.
pub async fn identity(target: &Target) -> Vec<(String, String)> {
    use mcp_connector::proxy::{CLIENT_HEADER, GROUPS_HEADER, SCOPE_HEADER, USER_HEADER};

    let mut conn = Conn::open(target.addr).await.unwrap();
    let id = session(&mut conn, target).await;
    let call = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}},
    });
    let answer = conn
        .call(target.post(Some(&id), call.to_string()))
        .await
        .unwrap();
    // The event whose data is the JSON-RPC answer (rmcp sends an empty one first); the
    // tool's text is a JSON object.
    let text = String::from_utf8_lossy(&answer.body);
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find(|d| !d.trim().is_empty())
        .unwrap_or_else(|| panic!("no event in {text:?}"));
    let message: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
    let tool_text = message["result"]["content"][0]["text"].as_str().unwrap();
    let who: serde_json::Value = serde_json::from_str(tool_text).unwrap();
    [
        (USER_HEADER, "user"),
        (GROUPS_HEADER, "groups"),
        (CLIENT_HEADER, "client_id"),
        (SCOPE_HEADER, "scope"),
    ]
    .into_iter()
    .map(|(header, field)| (header.to_string(), who[field].as_str().unwrap().to_string()))
    .collect()
}

/// Calls `whoami` at `rate` a second in total for `duration`, from `workers` connections
/// with a session each; latency is measured from the moment each call is sent.
pub async fn fixed_rate(target: &Target, rate: f64, workers: usize, duration: Duration) -> Samples {
    let mut sessions = Vec::new();
    for _ in 0..workers {
        let mut conn = Conn::open(target.addr).await.unwrap();
        let id = session(&mut conn, target).await;
        sessions.push((conn, id));
    }
    let interval = Duration::from_secs_f64(workers as f64 / rate);
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + duration;

    let mut tasks = Vec::new();
    for (i, (mut conn, id)) in sessions.into_iter().enumerate() {
        let target = target.clone();
        // Workers are spread over the interval, so that calls do not come in bursts.
        let offset = interval.mul_f64(i as f64 / workers as f64);
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut next = start + offset;
            let mut n = 1;
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                let sent = Instant::now();
                if call_whoami(&mut conn, &target, &id, n).await {
                    samples.micros.push(sent.elapsed().as_micros() as u32);
                } else {
                    samples.errors += 1;
                }
                n += 1;
                next += interval;
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await.unwrap());
    }
    all.elapsed = duration;
    all
}

/// Calls `whoami` as fast as `workers` connections allow, for `duration`.
pub async fn max_rate(target: &Target, workers: usize, duration: Duration) -> Samples {
    let mut sessions = Vec::new();
    for _ in 0..workers {
        let mut conn = Conn::open(target.addr).await.unwrap();
        let id = session(&mut conn, target).await;
        sessions.push((conn, id));
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (mut conn, id) in sessions {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut n = 1;
            while Instant::now() < deadline {
                let sent = Instant::now();
                if call_whoami(&mut conn, &target, &id, n).await {
                    samples.micros.push(sent.elapsed().as_micros() as u32);
                } else {
                    samples.errors += 1;
                }
                n += 1;
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await.unwrap());
    }
    all.elapsed = start.elapsed();
    all
}

/// Initializes `count` sessions straight at the MCP server, `workers` at a time.
pub async fn sessions(direct: &Target, count: usize, workers: usize) -> Vec<String> {
    let per = count.div_ceil(workers);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let direct = direct.clone();
            let n = per.min(count.saturating_sub(w * per));
            tokio::spawn(async move {
                let mut conn = Conn::open(direct.addr).await.unwrap();
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(session(&mut conn, &direct).await);
                }
                ids
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Streams held open; dropping it closes them.
pub struct OpenStreams {
    pub opened: usize,
    pub failed: usize,
    pub took: Duration,
    _held: Vec<Box<dyn Send>>,
}

fn is_event_stream(response: &Response<Incoming>) -> bool {
    response.status() == 200
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Opens one event stream per session, each on its own HTTP/1.1 connection, at most
/// `in_flight` connections being set up at once.
pub async fn open_http1(target: &Target, sessions: Vec<String>, in_flight: usize) -> OpenStreams {
    let start = Instant::now();
    let target = Arc::new(target.clone());
    let results: Vec<Option<(Conn, Response<Incoming>)>> = futures::stream::iter(sessions)
        .map(|id| {
            let target = target.clone();
            async move {
                let mut conn = Conn::open(target.addr).await.ok()?;
                let response = conn.send(target.stream_request(&id, false)).await.ok()?;
                is_event_stream(&response).then_some((conn, response))
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    held(results, start)
}

/// Opens one event stream per session over HTTP/2 connections of `per_conn` streams each.
pub async fn open_http2(target: &Target, sessions: Vec<String>, per_conn: usize) -> OpenStreams {
    let start = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..sessions.len().div_ceil(per_conn) {
        conns.push(Conn2::open(target.addr).await.unwrap());
    }
    let target = Arc::new(target.clone());
    let results: Vec<Option<(Conn2, Response<Incoming>)>> =
        futures::stream::iter(sessions.into_iter().enumerate())
            .map(|(i, id)| {
                let target = target.clone();
                let mut conn = conns[i / per_conn].clone();
                async move {
                    let response = conn.send(target.stream_request(&id, true)).await.ok()?;
                    is_event_stream(&response).then_some((conn, response))
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
    held(results, start)
}

fn held<C: Send + 'static>(
    results: Vec<Option<(C, Response<Incoming>)>>,
    start: Instant,
) -> OpenStreams {
    let failed = results.iter().filter(|r| r.is_none()).count();
    let held: Vec<Box<dyn Send>> = results
        .into_iter()
        .flatten()
        .map(|pair| Box::new(pair) as Box<dyn Send>)
        .collect();
    OpenStreams {
        opened: held.len(),
        failed,
        took: start.elapsed(),
        _held: held,
    }
}
