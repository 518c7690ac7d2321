//! The `McpConnector` custom resource: its spec, its status, and the defaults of the
//! reference page (`enable-on-the-cluster`), so that a resource naming only `upstream` and a
//! host is complete.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every resource this operator defines.
pub const GROUP: &str = "mcp.kloudfuse.io";

/// Label put on every object the operator creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "mcp-connector";

/// Label naming the connector an object belongs to.
pub const CONNECTOR_LABEL: &str = "mcp.kloudfuse.io/connector";

/// Whether the operator made this Secret.
pub fn is_managed(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY)
}

/// The other connector a managed Secret is kept for, if it is not `connector`. Two
/// connectors of one namespace that name the same Secret (both left at the default names,
/// say) would otherwise take turns owning it, so that deleting one deletes the other's
/// keys, and each would sign its tokens with a key the other publishes.
pub fn kept_for_another<'a>(secret: &'a Secret, connector: &str) -> Option<&'a str> {
    let owner = secret.metadata.labels.as_ref()?.get(CONNECTOR_LABEL)?;
    (is_managed(secret) && owner != connector).then_some(owner.as_str())
}

/// What a Secret kept for another connector is refused with, by the reconcile loop and by
/// the key store alike.
pub fn in_use(name: &str, other: &str) -> String {
    format!("Secret {name} holds the keys of McpConnector {other}")
}

/// The redirect URI allowlist shipped by default: the supported CLI clients on loopback and
/// Claude's hosted callback.
pub const DEFAULT_REDIRECT_URIS: [&str; 4] = [
    "http://localhost:*",
    "http://127.0.0.1:*",
    "https://claude.ai/api/mcp/auth_callback",
    "https://claude.com/api/mcp/auth_callback",
];

/// Desired state of one MCP connector: where users reach it, how they sign in, and which
/// workloads it orders.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mcp.kloudfuse.io",
    version = "v1alpha1",
    kind = "McpConnector",
    plural = "mcpconnectors",
    shortname = "mcpc",
    namespaced,
    status = "McpConnectorStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Base URL","type":"string","jsonPath":".status.baseURL"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct McpConnectorSpec {
    /// TLS settings of the cluster's public endpoint. `https://<tls.host>` is the base URL
    /// unless `baseURL` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Explicit public base URL of the connector (an absolute https URL with no path, query
    /// or fragment). Wins over `tls.host`; needed for split-hostname deployments.
    #[serde(default, rename = "baseURL", skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/?#@\s]+/?$"))]
    pub base_url: Option<String>,

    /// Redirect URIs clients may register. An entry matches on scheme and host exactly; a `*`
    /// port matches any port; an entry without a path matches any path. A list given here
    /// replaces the default, it is not merged with it.
    #[serde(
        default,
        rename = "allowedRedirectURIs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1))]
    pub allowed_redirect_uris: Option<Vec<String>>,

    /// `resource_name` shown to users in the protected-resource metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,

    /// The MCP server workload that `/mcp` is proxied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_server: Option<McpServerSpec>,

    /// Workloads that read connector state at start-up and so must start after the MCP
    /// server is Ready. Default: `[{deployment: user-mgmt-service}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependents: Option<Vec<DependentSpec>>,

    /// How users sign in: exactly one of `oidc`, `proxy` or `devUsers`.
    pub upstream: UpstreamSpec,

    /// Names and rotation periods of the two Secrets the operator keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsSpec>,

    /// Scopes the connector grants. Default: `[mcp]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,

    /// Browser origins, beyond the base URL's own and loopback, allowed to call `/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,

    /// Lifetimes of access tokens, refresh tokens and authorization codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokensSpec>,
}

/// TLS settings of the public endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TlsSpec {
    /// The hostname users reach the cluster on, such as `kloudfuse.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The MCP server workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpServerSpec {
    /// Name of the MCP server's Deployment. Default: `kf-mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,

    /// Label selector of the MCP server's Pods. Default:
    /// `{matchLabels: {app.kubernetes.io/name: kf-mcp}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelectorSpec>,

    /// In-cluster URL that `/mcp` is proxied to. Default:
    /// `http://<deployment>.<namespace>.svc:8080/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Speak HTTP/2 to the MCP server from the first byte (h2c for an `http` URL), so
    /// that one connection carries many open event streams instead of one connection per
    /// stream. Each connection carries at most 100 requests at once (the least RFC 9113
    /// recommends a server to allow) and more connections open as needed. Only for a server
    /// that accepts HTTP/2 this way. Default: false (HTTP/1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
}

/// A label selector by equality only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorSpec {
    /// Labels a Pod must carry, all of them.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// A workload restarted after the MCP server is Ready.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct DependentSpec {
    /// Name of the dependent Deployment, in the connector's namespace.
    pub deployment: String,
}

/// How users sign in. Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "[has(self.oidc), has(self.proxy), has(self.devUsers)].filter(x, x).size() == 1"
).message("set exactly one of oidc, proxy or devUsers"))]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// Sign in with an OpenID Connect provider (Okta, Entra ID, Google, Keycloak, Dex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcUpstreamSpec>,

    /// Trust identity headers set by an authenticating proxy in front of the connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyUpstreamSpec>,

    /// Development users with passwords, accepted only for a loopback base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_users: Option<Vec<DevUserSpec>>,
}

/// An upstream OpenID Connect provider, to which the connector is one confidential client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcUpstreamSpec {
    /// Issuer URL of the provider; its discovery document is read from there.
    #[serde(rename = "issuerURL")]
    pub issuer_url: String,

    /// Client id of the connector at the provider.
    #[serde(rename = "clientID")]
    pub client_id: String,

    /// Secret key holding the client secret of the connector at the provider.
    pub client_secret_ref: SecretKeyRef,

    /// Scopes asked of the provider. Default: `[openid, email, profile, groups]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,

    /// ID token claim holding the user name. Default: `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,

    /// ID token claim holding the user's groups. Default: `groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
}

/// An authenticating proxy in front of `/authorize` that sets identity headers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyUpstreamSpec {
    /// Header carrying the user name, such as `X-Auth-Request-Email`.
    pub user_header: String,

    /// Header carrying the user's groups, comma separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_header: Option<String>,

    /// Header in which the proxy presents the shared secret. Default: `X-Auth-Proxy-Secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_header: Option<String>,

    /// Secret key holding the shared secret the proxy proves itself with.
    pub shared_secret_ref: SecretKeyRef,
}

/// A development user; only for loopback base URLs.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, JsonSchema)]
pub struct DevUserSpec {
    /// User name, passed on as the identity.
    pub username: String,

    /// Password of the built-in login form.
    pub password: String,

    /// Groups passed on with the identity.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl std::fmt::Debug for DevUserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevUserSpec")
            .field("username", &self.username)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// A key of a Secret in the connector's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,

    /// Key within the Secret's data.
    pub key: String,
}

/// The two Secrets the operator keeps.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretsSpec {
    /// The Secret sealing client registrations, codes and refresh tokens. Default name:
    /// `kfuse-mcp-oauth-dcr-secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcr: Option<ManagedSecretSpec>,

    /// The Secret holding the access-token signing key. Default name:
    /// `kfuse-mcp-oauth-signing-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<ManagedSecretSpec>,
}

/// One managed Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedSecretSpec {
    /// Name of the Secret in the connector's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,

    /// How often the key rotates, as a duration such as `720h`. The previous key keeps
    /// verifying until everything it signed has expired. Default: `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_every: Option<String>,
}

/// Token lifetimes, as durations such as `1h`, `720h`, `60s`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokensSpec {
    /// Lifetime of an access token. Default: `1h`.
    #[serde(default, rename = "accessTTL", skip_serializing_if = "Option::is_none")]
    pub access_ttl: Option<String>,

    /// Lifetime of a refresh token; each refresh issues a new one. Default: `720h`.
    #[serde(
        default,
        rename = "refreshTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_ttl: Option<String>,

    /// Lifetime of an authorization code. Default: `60s`.
    #[serde(default, rename = "codeTTL", skip_serializing_if = "Option::is_none")]
    pub code_ttl: Option<String>,
}

/// Observed state of a connector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpConnectorStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The resolved public base URL, when there is one.
    #[serde(default, rename = "baseURL", skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,

    /// The issuer advertised to clients, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,

    /// Key id of the current access-token signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_id: Option<String>,

    /// Identity of the Secrets in use, so a deletion is noticed as a forced re-auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsStatus>,

    /// What the restart ordering last did, per dependent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<DependentStatus>,

    /// Conditions: `Ready`, `BaseURLResolved`, `SecretsReady`, `McpServerReady`,
    /// `DependentsOrdered`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The Secrets a connector used at the last reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretsStatus {
    /// UID of the DCR Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcr_uid: Option<String>,

    /// UID of the signing-key Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_uid: Option<String>,

    /// When either Secret was last created with fresh keys (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regenerated_at: Option<String>,
}

/// The restart ordering's record for one dependent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependentStatus {
    /// Name of the dependent Deployment.
    pub deployment: String,

    /// The cause of the last restart, such as `mcp-server:<revision>` or
    /// `secrets:<time>`; one cause never restarts twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cause: Option<String>,

    /// When the last restart was asked for (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
}

/// A condition in the shape of `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, such as `Ready`.
    #[serde(rename = "type")]
    pub type_: String,

    /// `True`, `False` or `Unknown`.
    pub status: String,

    /// Machine-readable reason in CamelCase.
    pub reason: String,

    /// What is wrong and what to do about it, for people.
    pub message: String,

    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,

    /// The generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl McpConnector {
    /// The connector's condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn the_committed_crd_is_what_the_binary_prints() {
        let printed = serde_saphyr::to_string(&McpConnector::crd()).unwrap();
        let committed = include_str!("../crds/mcpconnector.yaml");

        assert!(
            printed == committed,
            "crds/mcpconnector.yaml is stale: run `cargo run -- crd > crds/mcpconnector.yaml`"
        );
    }

    #[test]
    fn the_crd_teaches_and_validates() {
        let crd = serde_json::to_value(McpConnector::crd()).unwrap();
        let version = &crd["spec"]["versions"][0];
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];

        assert_eq!(crd["spec"]["names"]["shortNames"][0], "mcpc");
        assert!(version["subresources"]["status"].is_object());
        assert_eq!(
            version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert_eq!(spec["required"], serde_json::json!(["upstream"]));
        for (name, field) in spec["properties"].as_object().unwrap() {
            assert!(
                field["description"].is_string(),
                "spec.{name} has no description"
            );
        }
        let rules = &spec["properties"]["upstream"]["x-kubernetes-validations"];
        assert!(rules[0]["rule"].as_str().unwrap().contains("size() == 1"));
        assert!(spec["properties"]["baseURL"]["pattern"].is_string());
    }
}
