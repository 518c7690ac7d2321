//! `mcp-connector`: a Kubernetes operator that lets AI clients log in to a self-hosted
//! cluster's MCP server with the company's SSO.
//!
//! - [`reconcile`] watches `McpConnector` resources and keeps their Secrets, base URL,
//!   restart ordering and status;
//! - [`oauth`] is the OAuth 2.1 authorization server MCP clients log in through;
//! - [`proxy`] is the protected `/mcp` endpoint;
//! - [`keys`] holds the key material and the store the server reads it from;
//! - [`dev`] runs the whole server on loopback with no cluster.

pub mod base_url;
pub mod clock;
pub mod crd;
pub mod dev;
pub mod grants;
pub mod keys;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod reconcile;
pub mod run;
pub mod serve;
pub mod serving;
pub mod settings;
pub mod upstream;
