//! An in-memory Kubernetes API server for integration tests.
//!
//! It speaks the real HTTP API over plain HTTP on a random loopback port, well enough
//! for a real `kube::Client`, kube-runtime's `watcher`, `reflector` and `Controller`, and
//! kubectl's discovery. What it keeps: objects with `uid`, one global monotonic
//! `resourceVersion`, `generation`, `creationTimestamp`; a change history that watches
//! replay; owner-reference cascade on delete; finalizers that hold a deletion.
//!
//! Watches follow Kubernetes: from revision N they send only later changes, from a
//! compacted N a single `ERROR` event with a 410 Status; without a revision (or "0", or
//! with `sendInitialEvents`) they start with every current object as `ADDED`.
//!
//! Kinds with a `/status` subresource (custom kinds, deployments, pods, services,
//! namespaces) drop `status` on create and keep the stored status on other writes, as a
//! real cluster does: a test that plays a kubelet or a Deployment controller writes the
//! status through `/status`.
//!
//! What it leaves out, so a test cannot show it: field ownership (server-side apply is a
//! JSON merge of the applied object, lists replaced whole), strategic merge by list keys,
//! admission, schema and CEL validation, RBAC, namespaces that must exist, defaulting
//! beyond Secret `type` and Namespace `status.phase`, paging (`limit` is ignored and a
//! list is always whole), foreground deletion (dependents go at once, whatever the
//! policy but `Orphan`), protobuf bodies, and the OpenAPI documents (kubectl's `apply`
//! and `create -f` need `--validate=false`).

#![allow(dead_code)]

mod discovery;
mod error;
mod patch;
mod resource;
mod select;
mod store;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::Method;
use http::request::Parts;

use error::ApiError;
use store::{Kind, Store};

/// Bodies larger than this are refused; Kubernetes' own limit is about 3 MiB.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// A running double; it stops serving when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Starts on 127.0.0.1:0 with built-in kinds registered.
    #[allow(
        clippy::expect_used,
        reason = "a test cannot go on without its API server"
    )]
    pub async fn start() -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the API server double to a loopback port");
        let address = listener
            .local_addr()
            .expect("read the double's local address");

        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            down: AtomicBool::new(false),
            log: Mutex::new(Log::default()),
            endings: tokio::sync::watch::channel(0).0,
            address: address.to_string(),
        });

        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });

        ApiServer {
            shared,
            address,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A real `kube::Client` pointed at [`ApiServer::url`], default namespace `default`.
    ///
    /// Its retry of 503 answers is off, so a fault test sees the failure at once instead
    /// of after kube's backoff; build a client from `url()` to get kube's defaults.
    #[allow(clippy::expect_used, reason = "a test cannot go on without its client")]
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().expect("the double's URL is a valid URI");
        let mut config = kube::Config::new(url);
        config.default_retry = false;
        kube::Client::try_from(config).expect("build a kube client for the double")
    }

    /// Count of write requests (POST/PUT/PATCH/DELETE) received, whatever their outcome.
    pub fn writes(&self) -> usize {
        self.shared.log().writes.len()
    }

    /// Count of write requests received for one plural name, its `/status` included.
    pub fn writes_to(&self, plural: &str) -> usize {
        let log = self.shared.log();
        log.writes
            .iter()
            .filter(|written| written.as_deref() == Some(plural))
            .count()
    }

    /// Every request seen as (method, path-with-query); for RBAC-style checks.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.log().requests.clone()
    }

    /// Makes the server answer 503 to everything while `down` is true (fault tests).
    /// Going down also ends open watches, as a restarting server would.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.end_watches();
        }
    }

    /// Registers a custom resource kind (group, version, kind, plural, namespaced),
    /// served with a `/status` subresource and `metadata.generation`.
    pub fn register(&self, group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) {
        let mut kind = Kind::new(group, version, kind, plural, namespaced);
        kind.status = true;
        kind.generation = true;
        self.shared.store().register(kind);
    }

    /// Drops all stored watch history so that old resourceVersions get 410.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Ends every open watch stream, so watchers reconnect from their last revision.
    pub fn end_watches(&self) {
        self.shared.endings.send_modify(|ending| *ending += 1);
    }

    /// The current global `resourceVersion`.
    pub fn revision(&self) -> u64 {
        self.shared.store().revision()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.server.abort();
        self.end_watches();
    }
}

struct Shared {
    store: Mutex<Store>,
    down: AtomicBool,
    log: Mutex<Log>,
    /// Bumped to end every open watch.
    endings: tokio::sync::watch::Sender<u64>,
    address: String,
}

#[derive(Default)]
struct Log {
    requests: Vec<(String, String)>,
    /// The plural each write request addressed, if it addressed one.
    writes: Vec<Option<String>>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a request path names.
enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    Resources { group: String, version: String },
    Resource(Address),
    Unknown,
}

/// A collection, an object or an object's status, by the parts of its path.
struct Address {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    status: bool,
}

impl Route {
    fn parse(path: &str) -> Route {
        let segments: Vec<&str> = path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .collect();

        let (group, version, rest) = match segments.as_slice() {
            ["version"] => return Route::Version,
            ["api"] => return Route::CoreVersions,
            ["apis"] => return Route::Groups,
            ["apis", group] => return Route::Group(group.to_string()),
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Route::Unknown,
        };
        let (group, version) = (group.to_string(), version.to_string());
        if rest.is_empty() {
            return Route::Resources { group, version };
        }

        // `namespaces/{name}/status` is the Namespace's own subresource, not a collection.
        let (namespace, rest) = match rest {
            ["namespaces", namespace, plural, ..] if *plural != "status" => {
                (Some(namespace.to_string()), &rest[2..])
            }
            _ => (None, rest),
        };

        let (plural, name, status) = match rest {
            [plural] => (plural, None, false),
            [plural, name] => (plural, Some(name.to_string()), false),
            [plural, name, "status"] => (plural, Some(name.to_string()), true),
            _ => return Route::Unknown,
        };

        let plural = plural.to_string();
        Route::Resource(Address {
            group,
            version,
            namespace,
            plural,
            name,
            status,
        })
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let route = Route::parse(parts.uri.path());
    record(&shared, &parts, &route);

    if shared.down.load(Ordering::SeqCst) {
        return ApiError::unavailable().into_response();
    }

    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(error) => return ApiError::bad_request(error.to_string()).into_response(),
    };

    respond(&shared, &parts, &route, &body).unwrap_or_else(IntoResponse::into_response)
}

fn record(shared: &Shared, parts: &Parts, route: &Route) {
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |path| path.as_str());
    let mut log = shared.log();
    log.requests
        .push((parts.method.to_string(), path.to_string()));

    let write = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(&parts.method);
    if write {
        let plural = match route {
            Route::Resource(address) => Some(address.plural.clone()),
            _ => None,
        };
        log.writes.push(plural);
    }
}

fn respond(
    shared: &Shared,
    parts: &Parts,
    route: &Route,
    body: &[u8],
) -> Result<Response, ApiError> {
    let json = |value: serde_json::Value| axum::Json(value).into_response();

    match route {
        Route::Version => Ok(json(discovery::version())),
        Route::CoreVersions => Ok(json(discovery::core_versions(&shared.address))),
        Route::Groups => Ok(json(discovery::groups(shared.store().kinds()))),
        Route::Group(name) => {
            let group = discovery::group(shared.store().kinds(), name);
            group.map(json).ok_or_else(ApiError::no_route)
        }
        Route::Resources { group, version } => {
            let resources = discovery::resources(shared.store().kinds(), group, version);
            resources.map(json).ok_or_else(ApiError::no_route)
        }
        Route::Resource(address) => resource::serve(shared, parts, address, body),
        Route::Unknown => Err(ApiError::no_route()),
    }
}
