//! The `mcp-connector` command line: parse, build the configuration, call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use url::Url;

use mcp_connector::crd::McpConnector;
use mcp_connector::dev::{self, DevOidc, DevOptions};
use mcp_connector::keys::SecretString;
use mcp_connector::run::{self, RunOptions};

/// Lets MCP clients log in to a Kubernetes cluster's MCP server with the company's SSO.
#[derive(Parser, Debug)]
#[command(name = "mcp-connector", version, about)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "MCP_CONNECTOR_LOG_JSON")]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator: controller, OAuth server and /mcp, metrics and probes.
    Run {
        /// Address of the OAuth server and /mcp.
        #[arg(long, env = "MCP_CONNECTOR_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,

        /// Address of /metrics, /healthz and /readyz.
        #[arg(
            long,
            env = "MCP_CONNECTOR_ADMIN_LISTEN",
            default_value = "0.0.0.0:9090"
        )]
        admin_listen: SocketAddr,

        /// Watch only this namespace (default: all).
        #[arg(long, env = "MCP_CONNECTOR_NAMESPACE")]
        namespace: Option<String>,

        /// Fetch each connector's discovery document at its public URL and report it as
        /// the `Reachable` condition.
        #[arg(
            long,
            env = "MCP_CONNECTOR_SELF_CHECK",
            default_value_t = true,
            action = clap::ArgAction::Set
        )]
        self_check: bool,

        /// Seconds open requests and event streams may take to finish after SIGTERM.
        #[arg(long, env = "MCP_CONNECTOR_DRAIN_SECONDS", default_value_t = 20)]
        drain_seconds: u64,
    },
    /// Run the OAuth server and /mcp on loopback with no cluster, for trying a client.
    Dev {
        /// Loopback address to listen on.
        #[arg(long, env = "MCP_CONNECTOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,

        /// Folder for the keys, made on the first run and reused after.
        #[arg(
            long,
            env = "MCP_CONNECTOR_STATE_DIR",
            default_value = ".mcp-connector"
        )]
        state_dir: PathBuf,

        /// MCP server /mcp proxies to (default: a built-in one with a `whoami` tool).
        #[arg(long, env = "MCP_CONNECTOR_MCP_SERVER")]
        mcp_server: Option<Url>,

        /// Speak HTTP/2 to --mcp-server from the first byte (h2c), one connection for all.
        #[arg(long, env = "MCP_CONNECTOR_MCP_SERVER_HTTP2", requires = "mcp_server")]
        mcp_server_http2: bool,

        /// Issuer URL of an OpenID provider to sign in with (default: a built-in form).
        #[arg(
            long,
            env = "MCP_CONNECTOR_UPSTREAM_OIDC_ISSUER",
            requires_all = ["upstream_oidc_client_id", "upstream_oidc_client_secret"]
        )]
        upstream_oidc_issuer: Option<Url>,

        /// Client id of the connector at that provider.
        #[arg(long, env = "MCP_CONNECTOR_UPSTREAM_OIDC_CLIENT_ID")]
        upstream_oidc_client_id: Option<String>,

        /// Client secret of the connector at that provider.
        #[arg(
            long,
            env = "MCP_CONNECTOR_UPSTREAM_OIDC_CLIENT_SECRET",
            hide_env_values = true
        )]
        upstream_oidc_client_secret: Option<String>,

        /// Sign every login in as this user, with no form (for scripted tests).
        #[arg(
            long,
            env = "MCP_CONNECTOR_AUTO_LOGIN",
            conflicts_with = "upstream_oidc_issuer"
        )]
        auto_login: Option<String>,
    },
    /// Print the McpConnector CustomResourceDefinition as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    mcp_connector::logging::init(cli.log_json);

    let result = match cli.command {
        Command::Crd => print_crd(),
        Command::Run {
            listen,
            admin_listen,
            namespace,
            self_check,
            drain_seconds,
        } => {
            let drain = std::time::Duration::from_secs(drain_seconds);
            let opts = RunOptions {
                listen,
                admin_listen,
                namespace,
                self_check,
                drain,
            };
            run::run(opts).await.map_err(|e| e.to_string())
        }
        Command::Dev {
            listen,
            state_dir,
            mcp_server,
            mcp_server_http2,
            upstream_oidc_issuer,
            upstream_oidc_client_id,
            upstream_oidc_client_secret,
            auto_login,
        } => {
            let oidc = match (
                upstream_oidc_issuer,
                upstream_oidc_client_id,
                upstream_oidc_client_secret,
            ) {
                (Some(issuer), Some(client_id), Some(secret)) => Some(DevOidc {
                    issuer,
                    client_id,
                    client_secret: SecretString::new(secret),
                }),
                _ => None,
            };
            let opts = DevOptions {
                listen,
                state_dir,
                mcp_server,
                mcp_server_http2,
                oidc,
                auto_login,
            };
            run_dev(opts).await
        }
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-connector: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_crd() -> Result<(), String> {
    let yaml = serde_saphyr::to_string(&McpConnector::crd()).map_err(|e| e.to_string())?;
    print!("{yaml}");
    Ok(())
}

async fn run_dev(opts: DevOptions) -> Result<(), String> {
    let server = dev::start(opts).await.map_err(|e| e.to_string())?;
    println!("{}", dev::banner(&server));

    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        result = server.task => result.map_err(|e| e.to_string()),
    }
}
