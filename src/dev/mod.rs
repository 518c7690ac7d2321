//! `mcp-connector dev`: the whole OAuth server and `/mcp` proxy on loopback with no cluster.
//! Keys live in a local folder, made on the first run and reused after, so sessions survive
//! a restart.

pub mod whoami;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::Url;

use crate::base_url::BaseUrl;
use crate::clock::Clock;
use crate::crd::{DevUserSpec, McpConnectorSpec, McpServerSpec, OidcUpstreamSpec, SecretKeyRef};
use crate::grants::file::FileGrants;
use crate::keys::store::Entry;
use crate::keys::{Connector, KeyKind, KeyStore, Keys, Keyset, SecretString, random_token};
use crate::oauth::{AppState, router};
use crate::settings::Settings;
use crate::upstream::{OidcUpstream, Upstream};

/// The connector id `dev` serves under.
pub const DEV_CONNECTOR: &str = "dev";

/// How `dev` was asked to run.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Where to listen; loopback only.
    pub listen: SocketAddr,
    /// Where keys are kept.
    pub state_dir: PathBuf,
    /// What `/mcp` proxies to; the built-in `whoami` server when `None`.
    pub mcp_server: Option<Url>,
    /// HTTP/2 from the first byte to `mcp_server`.
    pub mcp_server_http2: bool,
    /// Upstream OpenID provider, instead of the built-in login form.
    pub oidc: Option<DevOidc>,
    /// Sign every login in as this user, with no form.
    pub auto_login: Option<String>,
}

/// An upstream OpenID provider given on the command line.
#[derive(Clone)]
pub struct DevOidc {
    /// Issuer URL.
    pub issuer: Url,
    /// Our client id there.
    pub client_id: String,
    /// Our client secret there.
    pub client_secret: SecretString,
}

impl std::fmt::Debug for DevOidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevOidc")
            .field("issuer", &self.issuer.as_str())
            .finish_non_exhaustive()
    }
}

/// Why `dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// `--listen` is not a loopback address.
    #[error("dev listens on loopback only; {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    /// The state folder could not be used.
    #[error("state folder {path}: {why}")]
    StateDir { path: PathBuf, why: String },
    /// The configuration does not validate.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listener or built-in MCP server could not start.
    #[error("could not listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// A running `dev` server.
pub struct DevServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its base URL.
    pub base_url: String,
    /// The development user's name and password, when the login form is used.
    pub dev_user: Option<(String, SecretString)>,
    /// Whether every login signs in the `--auto-login` user.
    pub auto_login: bool,
    /// The store, so tests can look at or replace keys.
    pub store: KeyStore,
    /// The clock the server uses.
    pub clock: Clock,
    /// Serves until aborted.
    pub task: tokio::task::JoinHandle<()>,
    _mcp: Option<tokio::task::JoinHandle<()>>,
}

/// Reads a keyset from the state folder, or makes and writes one.
fn load_or_create(
    dir: &Path,
    file: &str,
    kind: KeyKind,
    clock: &Clock,
) -> Result<Keyset, DevError> {
    let path = dir.join(file);
    let err = |why: String| DevError::StateDir {
        path: path.clone(),
        why,
    };

    match std::fs::read(&path) {
        Ok(bytes) => {
            let set = Keyset::from_bytes(Some(&bytes)).map_err(|e| err(e.to_string()))?;
            kind.validate(&set).map_err(|e| err(e.to_string()))?;
            Ok(set)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = kind.generate(clock.now()).map_err(|e| err(e.to_string()))?;
            let set = Keyset { keys: vec![key] };
            write_private(&path, &set.to_bytes()).map_err(|e| err(e.to_string()))?;
            Ok(set)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(bytes)
}

fn dev_password(dir: &Path) -> Result<SecretString, DevError> {
    let path = dir.join("dev-password");
    match std::fs::read_to_string(&path) {
        Ok(p) if !p.trim().is_empty() => Ok(SecretString::new(p.trim())),
        _ => {
            let password = random_token::<12>().map_err(|e| DevError::Config(e.to_string()))?;
            let _ = std::fs::remove_file(&path);
            write_private(&path, password.as_bytes()).map_err(|e| DevError::StateDir {
                path,
                why: e.to_string(),
            })?;
            Ok(SecretString::new(password))
        }
    }
}

/// Starts `dev`: keys, the built-in MCP server if needed, and the HTTP server.
pub async fn start(opts: DevOptions) -> Result<DevServer, DevError> {
    if !opts.listen.ip().is_loopback() {
        return Err(DevError::NotLoopback(opts.listen));
    }
    std::fs::create_dir_all(&opts.state_dir).map_err(|e| DevError::StateDir {
        path: opts.state_dir.clone(),
        why: e.to_string(),
    })?;

    let clock = Clock::system();
    let dcr = load_or_create(&opts.state_dir, "dcr-keys.json", KeyKind::Seal, &clock)?;
    let signing = load_or_create(
        &opts.state_dir,
        "signing-keys.json",
        KeyKind::Signing,
        &clock,
    )?;
    let keys = Keys::from_keysets(&dcr, &signing).map_err(|e| DevError::Config(e.to_string()))?;

    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let base = BaseUrl::parse(&format!("http://{addr}"), "--listen")
        .map_err(|e| DevError::Config(e.to_string()))?;

    let (mcp_url, mcp_task) = match &opts.mcp_server {
        Some(url) => (url.clone(), None),
        None => {
            let (mcp_addr, task) = whoami::spawn().await?;
            let url = Url::parse(&format!("http://{mcp_addr}/mcp"))
                .map_err(|e| DevError::Config(e.to_string()))?;
            (url, Some(task))
        }
    };

    let (upstream, dev_user) = upstream(&opts)?;
    let spec = McpConnectorSpec {
        base_url: Some(base.as_str().to_string()),
        mcp_server: Some(McpServerSpec {
            url: Some(mcp_url.to_string()),
            http2: opts.mcp_server_http2.then_some(true),
            ..Default::default()
        }),
        upstream: placeholder_upstream(&upstream),
        ..serde_json::from_value(serde_json::json!({"upstream": {}}))
            .map_err(|e| DevError::Config(e.to_string()))?
    };
    let settings =
        Settings::from_spec("default", &spec).map_err(|e| DevError::Config(e.to_string()))?;

    let connector = Connector {
        id: DEV_CONNECTOR.to_string(),
        base: base.clone(),
        settings,
        upstream,
        keys: Arc::new(keys),
        loopback_aliases: true,
    };
    let store = KeyStore::new();
    store.upsert(DEV_CONNECTOR, Entry::Serving(Arc::new(connector)));

    // Revocations and refresh generations are kept beside the keys, so a restart of dev
    // neither logs anyone out nor brings a revoked token back.
    let grants = FileGrants::open(&opts.state_dir.join("grants.json"))
        .map_err(|e| DevError::Config(e.to_string()))?;
    let state = AppState::new(store.clone(), Arc::new(grants), clock.clone());
    let task = tokio::spawn(crate::serve::serve(
        listener,
        router(state),
        std::future::pending(),
    ));

    Ok(DevServer {
        addr,
        base_url: base.as_str().to_string(),
        dev_user,
        auto_login: opts.auto_login.is_some() && opts.oidc.is_none(),
        store,
        clock,
        task,
        _mcp: mcp_task,
    })
}

type DevUser = Option<(String, SecretString)>;

fn upstream(opts: &DevOptions) -> Result<(Upstream, DevUser), DevError> {
    if let Some(oidc) = &opts.oidc {
        let up = OidcUpstream {
            issuer_url: oidc.issuer.clone(),
            client_id: oidc.client_id.clone(),
            client_secret: oidc.client_secret.clone(),
            scopes: ["openid", "email", "profile", "groups"]
                .map(String::from)
                .to_vec(),
            username_claim: "email".into(),
            groups_claim: "groups".into(),
        };
        return Ok((Upstream::Oidc(up), None));
    }
    if let Some(user) = &opts.auto_login {
        return Ok((Upstream::AutoLogin(user.clone()), None));
    }

    let password = dev_password(&opts.state_dir)?;
    let user = DevUserSpec {
        username: "dev".into(),
        password: password.expose().to_string(),
        groups: vec!["dev".into()],
    };
    Ok((
        Upstream::DevUsers(vec![user]),
        Some(("dev".into(), password)),
    ))
}

/// The spec form of an upstream, only so the spec validates; the secrets stay in `Upstream`.
fn placeholder_upstream(up: &Upstream) -> crate::crd::UpstreamSpec {
    match up {
        Upstream::Oidc(o) => crate::crd::UpstreamSpec {
            oidc: Some(OidcUpstreamSpec {
                issuer_url: o.issuer_url.to_string(),
                client_id: o.client_id.clone(),
                client_secret_ref: SecretKeyRef {
                    name: "flag".into(),
                    key: "flag".into(),
                },
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => crate::crd::UpstreamSpec {
            dev_users: Some(vec![DevUserSpec::default()]),
            ..Default::default()
        },
    }
}

/// What `dev` prints on start: the URL and how each client connects.
pub fn banner(server: &DevServer) -> String {
    let mcp = format!("{}/mcp", server.base_url);
    let login = match &server.dev_user {
        Some((user, password)) => {
            format!(
                "Sign in with user `{user}`, password `{}`.",
                password.expose()
            )
        }
        None if server.auto_login => "Every login signs in the --auto-login user.".to_string(),
        None => format!(
            "Sign in through the configured provider; its redirect URI for this connector is \
             {}/oauth/callback.",
            server.base_url
        ),
    };
    format!(
        "mcp-connector dev is serving {mcp}\n{login}\n\n\
         Claude Code:  claude mcp add --transport http kloudfuse {mcp}\n\
         Codex CLI:    codex mcp add kloudfuse --url {mcp}   then   codex mcp login kloudfuse\n\
         Gemini CLI:   gemini mcp add --transport http kloudfuse {mcp}   then /mcp auth kloudfuse\n\
         Any client:   point it at {mcp}; it discovers the rest.\n"
    )
}
