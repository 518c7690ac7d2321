//! The small MCP server `dev` puts behind `/mcp` when no `--mcp-server` is given: one tool,
//! `whoami`, that answers with the identity the connector passed on, so a single command
//! is enough to log in and call a tool.

use std::net::SocketAddr;

use rmcp::handler::server::tool::Extension;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_router};

use crate::proxy::{CLIENT_HEADER, GROUPS_HEADER, SCOPE_HEADER, USER_HEADER};

/// The `whoami` MCP server.
#[derive(Clone, Debug, Default)]
pub struct Whoami;

#[tool_router(server_handler)]
impl Whoami {
    /// Answers with the verified identity of the caller.
    #[tool(description = "Returns the user, groups, client and scopes the connector verified")]
    async fn whoami(&self, Extension(parts): Extension<http::request::Parts>) -> String {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        serde_json::json!({
            "user": header(USER_HEADER),
            "groups": header(GROUPS_HEADER),
            "client_id": header(CLIENT_HEADER),
            "scope": header(SCOPE_HEADER),
        })
        .to_string()
    }
}

/// Serves the `whoami` server on `127.0.0.1` at a free port; returns its `/mcp` URL.
pub async fn spawn() -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let service = StreamableHttpService::new(
        || Ok(Whoami),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;

    let task = tokio::spawn(crate::serve::serve(listener, app, std::future::pending()));
    Ok((addr, task))
}
