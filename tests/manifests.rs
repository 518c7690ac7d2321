//! The install manifests (`config/`) and the examples (`examples/`), checked as a cluster
//! would take them: every document parses into its typed Kubernetes struct with no field
//! dropped on the way, every `McpConnector` passes the CRD's own schema and the operator's
//! validation, every kustomization names files that exist, and the Deployment, Service and
//! routes are wired to each other.
//!
//! The RBAC is checked against the code in both directions: the real controller, leader
//! election and the ConfigMap grant store run a scenario on the API double through a
//! client that records every request; each request must be granted by the shipped roles,
//! and each verb they grant must have been used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

use mcp_connector::base_url;
use mcp_connector::clock::Clock;
use mcp_connector::crd::{GROUP, McpConnector};
use mcp_connector::grants::kube::KubeGrants;
use mcp_connector::grants::{GrantStore, Refresh};
use mcp_connector::keys::KeyStore;
use mcp_connector::leader::{self, LeaseConfig};
use mcp_connector::reconcile::restart::RESTART_CAUSE;
use mcp_connector::reconcile::{self, Context};
use mcp_connector::serving;
use mcp_connector::settings::{Settings, UpstreamSettings};
use support::apiserver::ApiServer;
use support::eventually;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every path the OAuth server and `/mcp` answer on (`oauth::router`); the Ingress and the
/// HTTPRoute must send each of them, and nothing else, to the operator.
const ROUTES: [&str; 12] = [
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/register",
    "/authorize",
    "/login",
    "/oauth/callback",
    "/token",
    "/revoke",
    "/jwks.json",
    "/mcp",
];

/// The listen addresses' ports of `mcp-connector run` (its `--listen` and `--admin-listen`
/// defaults).
const HTTP_PORT: i32 = 8080;
const ADMIN_PORT: i32 = 9090;

/// Granted (apiGroup, resource, verb) that the RBAC scenario is allowed not to observe, each
/// with the reason. Empty: every verb granted is used.
const UNOBSERVED_BY_DESIGN: [(&str, &str, &str, &str); 0] = [];

// ---------------------------------------------------------------------------------------
// Reading the files

/// One YAML document of one file.
struct Doc {
    file: PathBuf,
    index: usize,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }

    /// `examples/oidc.yaml#1`, for messages.
    fn at(&self) -> String {
        let rel = self.file.strip_prefix(ROOT).unwrap_or(&self.file);
        format!("{}#{}", rel.display(), self.index)
    }

    /// The document as `T`, with nothing of it lost (see [`typed`]).
    fn typed<T: DeserializeOwned + Serialize>(&self) -> T {
        typed(&self.value).unwrap_or_else(|e| panic!("{}: {e}", self.at()))
    }
}

fn root(dir: &str) -> PathBuf {
    Path::new(ROOT).join(dir)
}

/// Every `.yaml`/`.yml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The documents of one file; a document that is only comments is no document.
fn file_docs(file: &Path) -> Vec<Doc> {
    let text = std::fs::read_to_string(file).unwrap();
    let values: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
    values
        .into_iter()
        .filter(|v| !v.is_null())
        .enumerate()
        .map(|(index, value)| Doc {
            file: file.to_path_buf(),
            index,
            value,
        })
        .collect()
}

fn docs(dir: &str) -> Vec<Doc> {
    let all: Vec<Doc> = yaml_files(&root(dir))
        .iter()
        .flat_map(|f| file_docs(f))
        .collect();
    assert!(!all.is_empty(), "{dir}/ holds no YAML document");
    all
}

fn is_kustomization(doc: &Doc) -> bool {
    doc.file
        .file_name()
        .is_some_and(|n| n == "kustomization.yaml")
}

fn the<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs.iter().filter(|d| d.kind() == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind} expected in config/");
    found[0]
}

// ---------------------------------------------------------------------------------------
// Typed parsing with nothing dropped

/// Deserializes `value` as `T` and serializes it back: serde ignores fields a type does not
/// know, so a misspelt or misplaced field would parse fine and never reach the cluster.
/// Every field of `value` must come back unchanged.
fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let parsed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;

    let mut lost = Vec::new();
    dropped(value, &back, "", &mut lost);
    if lost.is_empty() {
        Ok(parsed)
    } else {
        Err(format!("the type drops or changes {}", lost.join(", ")))
    }
}

fn dropped(original: &Value, back: &Value, path: &str, lost: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, v) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(w) => dropped(v, w, &here, lost),
                    None => lost.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                dropped(v, w, &format!("{path}[{i}]"), lost);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => lost.push(format!("{path} ({a} became {b})")),
    }
}

/// A Kubernetes object of a built-in kind, typed, with its apiVersion checked.
fn builtin<T>(doc: &Doc) -> Result<(), String>
where
    T: k8s_openapi::Resource + DeserializeOwned + Serialize,
{
    let api_version = doc.value["apiVersion"].as_str().unwrap_or("");
    if api_version != T::API_VERSION {
        return Err(format!(
            "{} is served as {}, not {api_version}",
            T::KIND,
            T::API_VERSION
        ));
    }
    typed::<T>(&doc.value).map(drop)
}

/// Keys a document must have, as JSON pointers.
fn required(doc: &Doc, pointers: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = pointers
        .iter()
        .copied()
        .filter(|p| doc.value.pointer(p).is_none_or(|v| v.is_null()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {}", missing.join(", ")))
    }
}

fn http_route(doc: &Doc) -> Result<(), String> {
    required(
        doc,
        &[
            "/metadata/name",
            "/metadata/namespace",
            "/spec/parentRefs/0/name",
        ],
    )?;
    required(doc, &["/spec/hostnames/0", "/spec/rules/0"])?;
    if doc.value["apiVersion"] != "gateway.networking.k8s.io/v1" {
        return Err("HTTPRoute is served as gateway.networking.k8s.io/v1".into());
    }
    let known = [
        "name",
        "matches",
        "filters",
        "backendRefs",
        "timeouts",
        "retry",
    ];
    for (i, rule) in doc.value["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let fields = rule.as_object().ok_or("a rule is not an object")?;
        if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("rules[{i}] has an unknown field {unknown}"));
        }
        for m in rule["matches"].as_array().into_iter().flatten() {
            let kind = m["path"]["type"].as_str().unwrap_or("");
            let value = m["path"]["value"].as_str().unwrap_or("");
            if !["Exact", "PathPrefix"].contains(&kind) || !value.starts_with('/') {
                return Err(format!("rules[{i}] has a bad path match {m}"));
            }
        }
        for b in rule["backendRefs"].as_array().into_iter().flatten() {
            if !b["name"].is_string() || !b["port"].is_u64() {
                return Err(format!(
                    "rules[{i}] has a backendRef without name and port: {b}"
                ));
            }
        }
    }
    Ok(())
}

fn gateway(doc: &Doc) -> Result<(), String> {
    required(
        doc,
        &[
            "/metadata/name",
            "/spec/gatewayClassName",
            "/spec/listeners/0/name",
        ],
    )?;
    required(
        doc,
        &["/spec/listeners/0/port", "/spec/listeners/0/protocol"],
    )
}

fn kustomization(doc: &Doc) -> Result<(), String> {
    let expected = match doc.kind() {
        "Kustomization" => "kustomize.config.k8s.io/v1beta1",
        "Component" => "kustomize.config.k8s.io/v1alpha1",
        other => return Err(format!("kustomization.yaml of kind `{other}`")),
    };
    if doc.value["apiVersion"] != expected {
        return Err(format!("a {} is {expected}", doc.kind()));
    }
    Ok(())
}

/// Parses one document by its kind.
fn check_document(doc: &Doc) -> Result<(), String> {
    if is_kustomization(doc) {
        return kustomization(doc);
    }
    match doc.kind() {
        "Namespace" => builtin::<Namespace>(doc),
        "ServiceAccount" => builtin::<ServiceAccount>(doc),
        "ClusterRole" => builtin::<ClusterRole>(doc),
        "ClusterRoleBinding" => builtin::<ClusterRoleBinding>(doc),
        "Role" => builtin::<Role>(doc),
        "RoleBinding" => builtin::<RoleBinding>(doc),
        "Deployment" => builtin::<Deployment>(doc),
        "Service" => builtin::<Service>(doc),
        "PodDisruptionBudget" => builtin::<PodDisruptionBudget>(doc),
        "Ingress" => builtin::<Ingress>(doc),
        "Secret" => builtin::<Secret>(doc),
        "CustomResourceDefinition" => builtin::<CustomResourceDefinition>(doc),
        "McpConnector" => check_connector(doc),
        "HTTPRoute" => http_route(doc),
        "Gateway" => gateway(doc),
        other => Err(format!("no check knows the kind `{other}`; add one")),
    }
}

#[test]
fn every_document_parses_into_its_type_with_no_field_dropped() {
    let all: Vec<Doc> = docs("config").into_iter().chain(docs("examples")).collect();

    let failures: Vec<String> = all
        .iter()
        .filter_map(|d| check_document(d).err().map(|e| format!("{}: {e}", d.at())))
        .collect();

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_check_catches_a_misplaced_field() {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {}, "replica": 2}
    });
    let connector = json!({
        "apiVersion": "mcp.kloudfuse.io/v1alpha1", "kind": "McpConnector",
        "metadata": {"name": "x"},
        "spec": {"tls": {"hostname": "a.example.com"}, "upstream": {}}
    });

    let d = typed::<Deployment>(&deployment).unwrap_err();
    let c = typed::<McpConnector>(&connector).unwrap_err();

    assert!(d.contains(".spec.replica"), "{d}");
    assert!(c.contains(".spec.tls.hostname"), "{c}");
}

// ---------------------------------------------------------------------------------------
// McpConnectors: the CRD schema and the operator's validation

/// The CRD's openAPIV3Schema as a JSON Schema the way the API server applies it: OpenAPI's
/// `nullable` becomes a `null` type, and unknown fields are errors, as `kubectl apply`'s
/// default strict field validation makes them. CEL rules are not evaluated here; the one
/// the CRD has (exactly one upstream) is also enforced by `Settings::from_spec`.
fn crd_schema() -> Value {
    let crd = McpConnector::crd();
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == "v1alpha1")
        .unwrap();
    let schema = version
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    let mut schema = serde_json::to_value(schema).unwrap();

    let props = schema["properties"].as_object_mut().unwrap();
    props.insert("apiVersion".into(), json!({"type": "string"}));
    props.insert("kind".into(), json!({"type": "string"}));
    props.insert("metadata".into(), json!({"type": "object"}));
    structural(&mut schema);
    schema
}

fn structural(schema: &mut Value) {
    let Value::Object(map) = schema else { return };

    let closed = map.get("type") == Some(&json!("object"))
        && map.contains_key("properties")
        && !map.contains_key("additionalProperties")
        && !map.contains_key("x-kubernetes-preserve-unknown-fields");
    if closed {
        map.insert("additionalProperties".into(), json!(false));
    }
    if map.remove("nullable") == Some(json!(true))
        && let Some(Value::String(t)) = map.get("type").cloned()
    {
        map.insert("type".into(), json!([t, "null"]));
    }

    if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.values_mut().for_each(structural);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = map.get_mut(key) {
            structural(sub);
        }
    }
}

fn schema_errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn check_connector(doc: &Doc) -> Result<(), String> {
    if doc.value["apiVersion"] != "mcp.kloudfuse.io/v1alpha1" {
        return Err("an McpConnector is mcp.kloudfuse.io/v1alpha1".into());
    }
    let validator = jsonschema::validator_for(&crd_schema()).map_err(|e| e.to_string())?;
    let errors = schema_errors(&validator, &doc.value);
    if !errors.is_empty() {
        return Err(format!("the CRD schema refuses it: {}", errors.join("; ")));
    }

    let connector: McpConnector = typed(&doc.value)?;
    let namespace = connector
        .metadata
        .namespace
        .as_deref()
        .ok_or("it names no namespace")?;
    Settings::from_spec(namespace, &connector.spec).map_err(|e| e.to_string())?;
    let spec = &connector.spec;
    base_url::resolve(
        spec.base_url.as_deref(),
        spec.tls.as_ref().and_then(|t| t.host.as_deref()),
    )
    .map_err(|e| format!("no base URL: {e}"))?;
    Ok(())
}

#[test]
fn the_schema_check_refuses_what_the_api_server_would() {
    let validator = jsonschema::validator_for(&crd_schema()).unwrap();
    let good = json!({
        "apiVersion": "mcp.kloudfuse.io/v1alpha1", "kind": "McpConnector",
        "metadata": {"name": "kfuse", "namespace": "kfuse"},
        "spec": {"tls": {"host": "kloudfuse.example.com"}, "upstream": {"proxy": {
            "userHeader": "X-User", "sharedSecretRef": {"name": "s", "key": "k"}}}}
    });
    let bad: [(&str, Value, &str); 4] = [
        ("/spec/unknown", json!(1), "an unknown field"),
        (
            "/spec/baseURL",
            json!("https://kloudfuse.example.com/path"),
            "a base URL with a path",
        ),
        ("/spec/allowedRedirectURIs", json!([]), "an empty allowlist"),
        (
            "/spec/upstream/proxy/sharedSecretRef",
            json!({"name": "s"}),
            "a ref with no key",
        ),
    ];

    assert!(
        schema_errors(&validator, &good).is_empty(),
        "{:?}",
        schema_errors(&validator, &good)
    );
    for (pointer, value, why) in bad {
        let mut doc = good.clone();
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        doc.pointer_mut(parent).unwrap()[field] = value;
        assert!(
            !schema_errors(&validator, &doc).is_empty(),
            "{why} must be refused"
        );
    }
}

/// What each example is for, checked on the operator's view of it: its file, base URL,
/// upstream, and whether loopback (CLI) clients may register.
const EXAMPLES: [(&str, &str, &str, bool); 6] = [
    (
        "tls-host.yaml",
        "https://kloudfuse.example.com",
        "oidc",
        true,
    ),
    (
        "base-url-override.yaml",
        "https://kloudfuse.example.com",
        "oidc",
        true,
    ),
    (
        "split-hostname.yaml",
        "https://mcp.kloudfuse.example.com",
        "oidc",
        true,
    ),
    (
        "strict-allowlist.yaml",
        "https://kloudfuse.example.com",
        "oidc",
        false,
    ),
    ("oidc.yaml", "https://kloudfuse.example.com", "oidc", true),
    (
        "auth-proxy.yaml",
        "https://kloudfuse.example.com",
        "proxy",
        true,
    ),
];

#[test]
fn each_example_does_what_its_header_says() {
    let all = docs("examples");
    let names: BTreeSet<String> = yaml_files(&root("examples"))
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = EXAMPLES.iter().map(|e| e.0.to_string()).collect();
    assert_eq!(
        names, listed,
        "examples/ and this table list the same files"
    );

    for (name, base_url, upstream, loopback_clients) in EXAMPLES {
        let file = root("examples").join(name);
        let text = std::fs::read_to_string(&file).unwrap();
        let doc = all
            .iter()
            .find(|d| d.file == file && d.kind() == "McpConnector");
        let c: McpConnector = doc.unwrap().typed();
        let settings = Settings::from_spec("kfuse", &c.spec).unwrap();
        let tls_host = c.spec.tls.as_ref().and_then(|t| t.host.as_deref());
        let base = base_url::resolve(c.spec.base_url.as_deref(), tls_host).unwrap();
        let kind = match settings.upstream {
            UpstreamSettings::Oidc { .. } => "oidc",
            UpstreamSettings::Proxy { .. } => "proxy",
            UpstreamSettings::DevUsers(_) => "devUsers",
        };
        let allows = |uri: &str| settings.allowlist.check(uri).is_ok();

        assert!(
            text.starts_with("# "),
            "{name}: a comment says when to use it"
        );
        assert_eq!(base.as_str(), base_url, "{name}");
        assert_eq!(kind, upstream, "{name}");
        let cli = allows("http://127.0.0.1:33418/callback");
        assert_eq!(cli, loopback_clients, "{name}: loopback clients");
        assert!(
            allows("https://claude.ai/api/mcp/auth_callback"),
            "{name}: Claude"
        );
    }
}

#[test]
fn every_secret_an_example_names_is_shipped_with_that_key() {
    let all = docs("examples");
    let mut shipped = BTreeSet::new();
    for doc in all.iter().filter(|d| d.kind() == "Secret") {
        let secret: Secret = doc.typed();
        let ns = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.metadata.name.clone().unwrap_or_default();
        let keys = secret.string_data.unwrap_or_default().into_keys();
        let data_keys = secret.data.unwrap_or_default().into_keys();
        for key in keys.chain(data_keys) {
            shipped.insert((ns.clone(), name.clone(), key));
        }
    }

    for doc in all.iter().filter(|d| d.kind() == "McpConnector") {
        let c: McpConnector = doc.typed();
        let ns = c.metadata.namespace.clone().unwrap_or_default();
        let up = &c.spec.upstream;
        let refs = [
            up.oidc.as_ref().map(|o| &o.client_secret_ref),
            up.proxy.as_ref().map(|p| &p.shared_secret_ref),
        ];
        for r in refs.into_iter().flatten() {
            let wanted = (ns.clone(), r.name.clone(), r.key.clone());
            assert!(
                shipped.contains(&wanted),
                "{}: no example ships {wanted:?}",
                doc.at()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kustomize

#[test]
fn the_crd_in_config_is_the_committed_crd() {
    let committed = std::fs::read_to_string(root("crds/mcpconnector.yaml")).unwrap();
    let copy = std::fs::read_to_string(root("config/crd/mcpconnector.yaml")).unwrap();

    assert!(
        copy == committed,
        "config/crd/mcpconnector.yaml differs from crds/mcpconnector.yaml; refresh it with \
         `cp crds/mcpconnector.yaml config/crd/`"
    );
}

/// The `resources` and `components` a kustomization names.
fn entries(kustomization: &Path) -> Vec<String> {
    let doc = file_docs(kustomization).into_iter().next().unwrap();
    ["resources", "components"]
        .iter()
        .flat_map(|key| doc.value[key].as_array().cloned().unwrap_or_default())
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("{}: {v}", doc.at()))
                .to_string()
        })
        .collect()
}

/// Files reached from the kustomization in `dir`; errors for entries that do not exist.
fn reachable(dir: &Path, files: &mut BTreeSet<PathBuf>, errors: &mut Vec<String>) {
    let kustomization = dir.join("kustomization.yaml");
    files.insert(kustomization.clone());
    for entry in entries(&kustomization) {
        let path = dir.join(&entry);
        let at = format!("{}: {entry}", kustomization.display());
        if entry.contains("://") {
            errors.push(format!("{at}: a remote resource"));
        } else if path.is_dir() && path.join("kustomization.yaml").is_file() {
            reachable(&path.canonicalize().unwrap(), files, errors);
        } else if path.is_file() {
            files.insert(path.canonicalize().unwrap());
        } else {
            errors.push(format!(
                "{at}: neither a file nor a folder with a kustomization.yaml"
            ));
        }
    }
}

fn kinds_of(files: &BTreeSet<PathBuf>) -> Vec<String> {
    let mut kinds: Vec<String> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .flat_map(|f| file_docs(f))
        .map(|d| d.kind().to_string())
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn every_kustomization_entry_exists_and_every_manifest_is_in_one() {
    let config = root("config").canonicalize().unwrap();
    let mut reached = BTreeSet::new();
    let mut errors = Vec::new();
    for file in yaml_files(&config) {
        if file.file_name().is_some_and(|n| n == "kustomization.yaml") {
            reachable(file.parent().unwrap(), &mut reached, &mut errors);
        }
    }

    let orphans: Vec<PathBuf> = yaml_files(&config)
        .into_iter()
        .filter(|f| !reached.contains(f))
        .collect();

    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(orphans.is_empty(), "named by no kustomization: {orphans:?}");
}

/// What `kubectl apply -k config/<overlay>` installs.
const OVERLAYS: [(&str, &[&str]); 3] = [
    ("default", &[]),
    ("ingress-nginx", &["Ingress"]),
    ("envoy-gateway", &["HTTPRoute"]),
];

const INSTALL: [&str; 10] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "Deployment",
    "Namespace",
    "PodDisruptionBudget",
    "Role",
    "RoleBinding",
    "Service",
    "ServiceAccount",
];

#[test]
fn each_overlay_installs_everything_and_kustomize_agrees() {
    for (overlay, extra) in OVERLAYS {
        let dir = root("config").join(overlay).canonicalize().unwrap();
        let mut files = BTreeSet::new();
        let mut errors = Vec::new();
        reachable(&dir, &mut files, &mut errors);
        let mut want: Vec<String> = INSTALL.iter().chain(extra).map(|k| k.to_string()).collect();
        want.sort();

        assert!(errors.is_empty(), "{}", errors.join("\n"));
        assert_eq!(kinds_of(&files), want, "config/{overlay}");

        // kustomize itself, where kubectl is installed: its load rules and transformers.
        let rendered = match std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                eprintln!("kubectl not runnable ({e}); config/{overlay} not rendered");
                continue;
            }
        };
        let stderr = String::from_utf8_lossy(&rendered.stderr);
        assert!(
            rendered.status.success(),
            "kubectl kustomize config/{overlay}: {stderr}"
        );
        let text = String::from_utf8(rendered.stdout).unwrap();
        let values: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        let mut kinds: Vec<String> = values
            .iter()
            .filter_map(|v| v["kind"].as_str().map(String::from))
            .collect();
        kinds.sort();
        assert_eq!(kinds, want, "kubectl kustomize config/{overlay}");
    }
}

// ---------------------------------------------------------------------------------------
// The objects wired to each other

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_deployment_runs_the_operator_safely_and_the_service_reaches_it() {
    let config = docs("config");
    let deployment: Deployment = the(&config, "Deployment").typed();
    let namespace: Namespace = the(&config, "Namespace").typed();
    let service: Service = the(&config, "Service").typed();
    let pdb: PodDisruptionBudget = the(&config, "PodDisruptionBudget").typed();
    let ns = namespace.metadata.name.clone().unwrap();

    let cluster_scoped = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
    ];
    for doc in config.iter().filter(|d| !is_kustomization(d)) {
        if !cluster_scoped.contains(&doc.kind()) {
            assert_eq!(
                doc.value["metadata"]["namespace"],
                ns.as_str(),
                "{}",
                doc.at()
            );
        }
    }

    let spec = &deployment.spec;
    let pod = spec.template.spec.as_ref().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selector = spec.selector.match_labels.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert!(
        labels_match(&selector, &pod_labels),
        "the selector selects the Pods"
    );

    // Spread, so that a node going away leaves a replica.
    let spread = pod.topology_spread_constraints.clone().unwrap_or_default();
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref());
    assert!(
        !spread.is_empty() || anti.is_some(),
        "the replicas are spread"
    );
    for s in &spread {
        let sel = s
            .label_selector
            .as_ref()
            .and_then(|l| l.match_labels.clone());
        assert!(labels_match(&sel.unwrap_or_default(), &pod_labels));
    }

    // Non-root, read-only, no capabilities, the runtime's seccomp profile.
    let pod_sec = pod.security_context.clone().unwrap_or_default();
    assert_eq!(pod_sec.run_as_non_root, Some(true));
    assert!(pod_sec.run_as_user.is_some_and(|u| u != 0));
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let sec = c.security_context.clone().unwrap();
    let seccomp = sec.seccomp_profile.or(pod_sec.seccomp_profile).unwrap();
    assert_eq!(seccomp.type_, "RuntimeDefault");
    assert_eq!(sec.read_only_root_filesystem, Some(true));
    assert_eq!(sec.allow_privilege_escalation, Some(false));
    assert_eq!(
        sec.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    let resources = c.resources.clone().unwrap();
    for quantities in [resources.requests.unwrap(), resources.limits.unwrap()] {
        assert!(quantities.contains_key("cpu") && quantities.contains_key("memory"));
    }

    // The command, its identity and its ports.
    assert_eq!(c.args, Some(vec!["run".to_string()]));
    assert!(
        c.image
            .as_deref()
            .unwrap()
            .starts_with("ghcr.io/kloudfuse/mcp-connector:")
    );
    let env: BTreeMap<String, String> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let field = e.value_from?.field_ref?.field_path;
            Some((e.name, field))
        })
        .collect();
    assert_eq!(
        env.get("POD_NAME").map(String::as_str),
        Some("metadata.name")
    );
    assert_eq!(
        env.get("POD_NAMESPACE").map(String::as_str),
        Some("metadata.namespace")
    );
    let ports: BTreeMap<String, i32> = c
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([("http".into(), HTTP_PORT), ("admin".into(), ADMIN_PORT)])
    );
    for (probe, path) in [
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe.clone().unwrap().http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("admin".into()));
    }

    // The Service and the disruption budget select these Pods.
    let svc = service.spec.unwrap();
    assert!(labels_match(&svc.selector.unwrap(), &pod_labels));
    let svc_ports: BTreeMap<String, (i32, IntOrString)> = svc
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), (p.port, p.target_port.unwrap())))
        .collect();
    let target = |name: &str| IntOrString::String(name.into());
    assert_eq!(svc_ports["http"], (80, target("http")));
    assert_eq!(svc_ports["metrics"], (ADMIN_PORT, target("admin")));
    let budget = pdb.spec.unwrap();
    assert_eq!(budget.min_available, Some(IntOrString::Int(1)));
    assert!(labels_match(
        &budget.selector.unwrap().match_labels.unwrap(),
        &pod_labels
    ));
}

/// Whether a route of the server is sent on by a match of this type and path (Kubernetes
/// prefixes match whole path elements).
fn routes_to(kind: &str, path: &str, route: &str) -> bool {
    match kind {
        "Exact" => route == path,
        "Prefix" | "PathPrefix" => {
            route == path
                || route
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        _ => false,
    }
}

fn check_routing(what: &str, matches: &[(String, String)]) {
    for route in ROUTES {
        let sent = matches
            .iter()
            .any(|(kind, path)| routes_to(kind, path, route));
        assert!(sent, "{what} does not send {route} to the operator");
    }
    for (kind, path) in matches {
        let used = ROUTES.iter().any(|route| routes_to(kind, path, route));
        assert!(
            used,
            "{what} sends {kind} {path}, which the operator does not serve"
        );
    }
}

#[test]
fn the_ingress_and_the_http_route_send_every_oauth_path_to_the_service() {
    let config = docs("config");
    let service: Service = the(&config, "Service").typed();
    let service_name = service.metadata.name.clone().unwrap();
    let ports = service.spec.unwrap().ports.unwrap();

    let ingress: Ingress = the(&config, "Ingress").typed();
    let spec = ingress.spec.unwrap();
    let tls_hosts: Vec<String> = spec
        .tls
        .unwrap()
        .into_iter()
        .flat_map(|t| t.hosts.unwrap())
        .collect();
    let mut matches = Vec::new();
    for rule in spec.rules.unwrap() {
        assert!(
            tls_hosts.contains(rule.host.as_ref().unwrap()),
            "the host is served over TLS"
        );
        for p in rule.http.unwrap().paths {
            let backend = p.backend.service.unwrap();
            let port = backend.port.unwrap().name.unwrap();
            assert_eq!(backend.name, service_name);
            assert!(
                ports
                    .iter()
                    .any(|sp| sp.name.as_deref() == Some(port.as_str()))
            );
            matches.push((p.path_type, p.path.unwrap()));
        }
    }
    check_routing("the Ingress", &matches);

    let route = &the(&config, "HTTPRoute").value;
    let mut matches = Vec::new();
    for rule in route["spec"]["rules"].as_array().unwrap() {
        for b in rule["backendRefs"].as_array().unwrap() {
            assert_eq!(b["name"], service_name.as_str());
            assert!(ports.iter().any(|sp| b["port"] == sp.port));
        }
        for m in rule["matches"].as_array().unwrap() {
            let kind = m["path"]["type"].as_str().unwrap().to_string();
            matches.push((kind, m["path"]["value"].as_str().unwrap().to_string()));
        }
    }
    check_routing("the HTTPRoute", &matches);
    assert_eq!(
        route["spec"]["hostnames"],
        json!(tls_hosts),
        "one host for both"
    );
}

// ---------------------------------------------------------------------------------------
// RBAC: what the shipped roles grant, against what the operator does

/// One verb on one resource, cluster-wide (`namespace: None`) or in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    group: String,
    resource: String,
    verb: String,
    namespace: Option<String>,
}

/// The access a request to the API needs: GET of one object is `get`, of a collection
/// `list` (or `watch` with `?watch=true`); POST `create`, PUT `update`, PATCH `patch`,
/// DELETE `delete` (of a collection `deletecollection`).
fn access(method: &str, path_and_query: &str) -> Option<Access> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(*name)),
        [resource, name, sub] => (format!("{resource}/{sub}"), Some(*name)),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method, name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(Access {
        group: group.into(),
        resource,
        verb: verb.into(),
        namespace,
    })
}

/// Every (group, resource, verb) the roles bound to `account` grant, and where.
fn grants(config: &[Doc], account: (&str, &str)) -> Vec<Access> {
    let bound = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == account.1
                && s.namespace.as_deref() == Some(account.0)
        })
    };
    let cluster_roles: BTreeMap<String, Vec<PolicyRule>> = config
        .iter()
        .filter(|d| d.kind() == "ClusterRole")
        .map(|d| {
            (
                d.name().to_string(),
                d.typed::<ClusterRole>().rules.unwrap_or_default(),
            )
        })
        .collect();
    let roles: BTreeMap<(String, String), Vec<PolicyRule>> = config
        .iter()
        .filter(|d| d.kind() == "Role")
        .map(|d| {
            let role: Role = d.typed();
            let key = (
                role.metadata.namespace.unwrap(),
                role.metadata.name.unwrap(),
            );
            (key, role.rules.unwrap_or_default())
        })
        .collect();

    let mut rules: Vec<(Option<String>, PolicyRule)> = Vec::new();
    for doc in config.iter().filter(|d| d.kind() == "ClusterRoleBinding") {
        let b: ClusterRoleBinding = doc.typed();
        if bound(&b.subjects) {
            assert_eq!(b.role_ref.kind, "ClusterRole", "{}", doc.at());
            let found = cluster_roles
                .get(&b.role_ref.name)
                .expect("the bound ClusterRole");
            rules.extend(found.iter().cloned().map(|r| (None, r)));
        }
    }
    for doc in config.iter().filter(|d| d.kind() == "RoleBinding") {
        let b: RoleBinding = doc.typed();
        let ns = b.metadata.namespace.clone().unwrap();
        if bound(&b.subjects) {
            let found = match b.role_ref.kind.as_str() {
                "Role" => roles.get(&(ns.clone(), b.role_ref.name.clone())),
                _ => cluster_roles.get(&b.role_ref.name),
            };
            let found = found.expect("the bound role");
            rules.extend(found.iter().cloned().map(|r| (Some(ns.clone()), r)));
        }
    }

    let mut granted = Vec::new();
    for (namespace, rule) in rules {
        assert!(
            rule.resource_names.is_none(),
            "this check does not model resourceNames"
        );
        assert!(
            rule.non_resource_urls.is_none(),
            "the operator calls no non-resource URL"
        );
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    let wildcard = [&group, &resource, verb].iter().any(|s| s.contains('*'));
                    assert!(!wildcard, "no wildcards in the operator's roles");
                    granted.push(Access {
                        group: group.clone(),
                        resource: resource.clone(),
                        verb: verb.clone(),
                        namespace: namespace.clone(),
                    });
                }
            }
        }
    }
    granted
}

fn allows(grant: &Access, wanted: &Access) -> bool {
    grant.group == wanted.group
        && grant.resource == wanted.resource
        && grant.verb == wanted.verb
        && (grant.namespace.is_none() || grant.namespace == wanted.namespace)
}

type Log = Arc<Mutex<Vec<(String, String)>>>;

/// A client for the double that records every request it sends: the operator's own, apart
/// from the test's writes that play the cluster.
fn recording_client(api: &ApiServer, log: Log) -> kube::Client {
    let mut config = kube::Config::new(api.url().parse().unwrap());
    config.default_retry = false;
    let record =
        tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            log.lock().unwrap().push((req.method().to_string(), path));
            req
        });
    kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&record)
        .build()
}

const NS: &str = "kfuse";
const DEPENDENT: &str = "user-mgmt-service";
const DCR_SECRET: &str = "kfuse-mcp-oauth-dcr-secret";

/// The cluster around the operator, played by the test through its own client.
struct Cluster {
    client: kube::Client,
}

impl Cluster {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn deployment(&self, name: &str) {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": name}},
                    "spec": {"containers": [{"name": name, "image": "example/app"}]}
                }
            }
        }))
        .unwrap();
        self.api::<Deployment>()
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }

    /// Reports a Deployment rolled out, as its controller would.
    async fn rolled_out(&self, name: &str) {
        let d = self.api::<Deployment>().get(name).await.unwrap();
        let status = json!({"status": {
            "observedGeneration": d.metadata.generation.unwrap_or(1),
            "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
        }});
        let params = PatchParams::default();
        self.api::<Deployment>()
            .patch_status(name, &params, &Patch::Merge(&status))
            .await
            .unwrap();
    }

    async fn pod(&self, name: &str, app: &str, ready_at: Timestamp) {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": app}},
            "spec": {"containers": [{"name": app, "image": "example/app"}]}
        }))
        .unwrap();
        self.api::<Pod>()
            .create(&PostParams::default(), &p)
            .await
            .unwrap();
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": ready_at.to_string()}]}});
        let params = PatchParams::default();
        self.api::<Pod>()
            .patch_status(name, &params, &Patch::Merge(&status))
            .await
            .unwrap();
    }

    async fn replace_pods(&self, app: &str, new_pod: &str, ready_at: Timestamp) {
        let selector = format!("app.kubernetes.io/name={app}");
        let old = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        for p in old.items {
            let name = p.metadata.name.unwrap();
            self.api::<Pod>()
                .delete(&name, &DeleteParams::default())
                .await
                .unwrap();
        }
        self.pod(new_pod, app, ready_at).await;
        self.rolled_out(app).await;
    }

    async fn condition(&self, type_: &str) -> Option<String> {
        let c = self.api::<McpConnector>().get_opt("kfuse").await.ok()??;
        c.condition(type_).map(|c| c.status.clone())
    }

    async fn await_true(&self, type_: &str) {
        let what = format!("{type_} is True");
        eventually(&what, || async {
            self.condition(type_).await.as_deref() == Some("True")
        })
        .await;
    }

    async fn secret_uid(&self, name: &str) -> Option<String> {
        self.api::<Secret>()
            .get_opt(name)
            .await
            .unwrap()
            .and_then(|s| s.metadata.uid)
    }

    async fn restart_cause(&self, name: &str) -> Option<String> {
        let d = self.api::<Deployment>().get(name).await.unwrap();
        d.spec
            .template
            .metadata?
            .annotations?
            .get(RESTART_CAUSE)
            .cloned()
    }

    /// A status change of the MCP server's Deployment: starts a reconcile.
    async fn touch_mcp_server(&self, round: usize) {
        let touch = json!({"status": {"conditions": [
            {"type": "Progressing", "status": "True", "reason": format!("Touch{round}")}]}});
        let params = PatchParams::default();
        self.api::<Deployment>()
            .patch_status("kf-mcp", &params, &Patch::Merge(&touch))
            .await
            .unwrap();
    }
}

fn count(log: &Log, method: &str, path_part: &str) -> usize {
    let log = log.lock().unwrap();
    log.iter()
        .filter(|(m, p)| m == method && p.contains(path_part))
        .count()
}

#[tokio::test]
async fn the_roles_grant_exactly_what_the_operator_uses() {
    let config = docs("config");
    let deployment: Deployment = the(&config, "Deployment").typed();
    let operator_ns = deployment.metadata.namespace.clone().unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    let account = pod.service_account_name.unwrap();
    let granted = grants(&config, (&operator_ns, &account));

    let api = ApiServer::start().await;
    api.register(GROUP, "v1alpha1", "McpConnector", "mcpconnectors", true);
    let cluster = Cluster {
        client: api.client(),
    };
    let log: Log = Arc::default();
    let client = recording_client(&api, log.clone());
    // The operator's clock stands a day back, so keys it makes are older than every Pod and
    // only the MCP server's upgrade orders a restart; moving it ages the keys.
    let clock = Clock::pinned(Timestamp::now() - SignedDuration::from_hours(24));

    // kf-mcp Ready an hour ago; user-mgmt-service started now.
    let now = Timestamp::now();
    cluster.deployment("kf-mcp").await;
    cluster
        .pod("kf-mcp-1", "kf-mcp", now - SignedDuration::from_hours(1))
        .await;
    cluster.rolled_out("kf-mcp").await;
    cluster.deployment(DEPENDENT).await;
    cluster.pod("ums-1", DEPENDENT, now).await;
    cluster.rolled_out(DEPENDENT).await;

    // The auth-proxy example as shipped (its Secret is the upstream's, read by the
    // operator), its DCR key rotating hourly so that moving the clock rotates it.
    for doc in file_docs(&root("examples/auth-proxy.yaml")) {
        match doc.kind() {
            "Secret" => {
                let s: Secret = doc.typed();
                cluster
                    .api::<Secret>()
                    .create(&PostParams::default(), &s)
                    .await
                    .unwrap();
            }
            "McpConnector" => {
                let mut c: McpConnector = doc.typed();
                c.spec.secrets =
                    Some(serde_json::from_value(json!({"dcr": {"rotateEvery": "1h"}})).unwrap());
                cluster
                    .api::<McpConnector>()
                    .create(&PostParams::default(), &c)
                    .await
                    .unwrap();
            }
            other => panic!("unexpected {other}"),
        }
    }

    // The operator as `run` starts it from the shipped Deployment: every replica follows
    // the connectors for serving, and the Lease holder (in the operator's namespace, from
    // POD_NAMESPACE) runs the controller over every namespace.
    let serving = tokio::spawn(serving::run(
        client.clone(),
        KeyStore::new(),
        None,
        Arc::default(),
    ));
    let ctx = Arc::new(Context::new(
        client.clone(),
        clock.clone(),
        Some("op-0".into()),
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    let (leading, mut is_leading) = watch::channel(false);
    let election = tokio::spawn(leader::run(
        Api::<Lease>::namespaced(client.clone(), &operator_ns),
        LeaseConfig::new("mcp-connector-leader", "op-0"),
        clock.clone(),
        leading,
        move |stop| reconcile::run(ctx.clone(), None, leader::stopped(stop)),
        async move {
            let _ = stopped.await;
        },
    ));
    is_leading.wait_for(|leading| *leading).await.unwrap();

    // Applied: both Secrets are made, the upstream's is read, the connector is Ready.
    cluster.await_true("Ready").await;
    cluster.await_true("DependentsOrdered").await;

    // kf-mcp upgraded: once it is Ready, user-mgmt-service is restarted, and an Event says so.
    let upgrade = json!({
        "metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}},
        "spec": {"template": {"metadata": {"labels": {"revision": "2"}}}}
    });
    let params = PatchParams::default();
    cluster
        .api::<Deployment>()
        .patch("kf-mcp", &params, &Patch::Merge(&upgrade))
        .await
        .unwrap();
    let ready_at = Timestamp::now() + SignedDuration::from_secs(5);
    cluster.replace_pods("kf-mcp", "kf-mcp-2", ready_at).await;
    eventually("user-mgmt-service is restarted", || async {
        cluster.restart_cause(DEPENDENT).await.as_deref() == Some("mcp-server:2")
    })
    .await;
    cluster
        .replace_pods(DEPENDENT, "ums-2", Timestamp::now())
        .await;
    cluster.await_true("DependentsOrdered").await;

    // Forced re-auth: the deleted DCR Secret comes back with fresh keys.
    let old_uid = cluster.secret_uid(DCR_SECRET).await;
    let params = DeleteParams::default();
    cluster
        .api::<Secret>()
        .delete(DCR_SECRET, &params)
        .await
        .unwrap();
    eventually("the DCR Secret is regenerated", || async {
        let uid = cluster.secret_uid(DCR_SECRET).await;
        uid.is_some() && uid != old_uid
    })
    .await;
    eventually("status records the new Secret", || async {
        let c = cluster.api::<McpConnector>().get("kfuse").await.unwrap();
        let status = c.status.and_then(|s| s.secrets).and_then(|s| s.dcr_uid);
        status == cluster.secret_uid(DCR_SECRET).await
    })
    .await;

    // Rotation: the DCR key ages past rotateEvery, and is rotated in place. The same Event
    // about the same Secret again is patched as a series by kube's Recorder.
    let event_writes = || {
        count(&log, "POST", "/apis/events.k8s.io/") + count(&log, "PATCH", "/apis/events.k8s.io/")
    };
    let dcr_path = format!("/secrets/{DCR_SECRET}");
    for round in 1..=4 {
        let (rotations, events) = (count(&log, "PUT", &dcr_path), event_writes());
        clock.advance(SignedDuration::from_mins(61));
        cluster.touch_mcp_server(round).await;
        eventually("the DCR key is rotated", || async {
            count(&log, "PUT", &dcr_path) > rotations
        })
        .await;
        eventually("the rotation is an Event", || async {
            event_writes() > events
        })
        .await;
        if count(&log, "PATCH", "/apis/events.k8s.io/") > 0 {
            break;
        }
    }

    // Grant state, shared by the replicas in their namespace: a code redeemed, a grant
    // refreshed and then revoked, and the watch that feeds the revocation set.
    let grants = KubeGrants::new(client.clone(), &operator_ns);
    let watch = tokio::spawn(grants.watch());
    let (id, later) = (
        "kfuse/kfuse",
        Timestamp::now() + SignedDuration::from_hours(1),
    );
    assert!(grants.redeem_code(id, "code-1", later).await.unwrap());
    assert!(
        !grants.redeem_code(id, "code-1", later).await.unwrap(),
        "a replay"
    );
    let refreshed = grants
        .refresh(id, "grant-1", 0, Timestamp::now(), later)
        .await;
    assert_eq!(refreshed.unwrap(), Refresh::Rotated(1));
    grants.revoke(id, "grant-1", later).await.unwrap();
    eventually("the grants are watched", || async {
        count(&log, "GET", "/configmaps?") >= 2
    })
    .await;
    watch.abort();

    // Shutdown: the controller stops and the Lease is given up.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), election)
        .await
        .expect("the election ends on shutdown")
        .unwrap();
    serving.abort();

    // Every request the operator made, as the access it needs.
    let requests = log.lock().unwrap().clone();
    let unmapped: Vec<&(String, String)> = requests
        .iter()
        .filter(|(m, p)| access(m, p).is_none())
        .collect();
    assert!(
        unmapped.is_empty(),
        "requests that are no resource access: {unmapped:?}"
    );
    let mut used: BTreeMap<Access, usize> = BTreeMap::new();
    for (m, p) in &requests {
        *used.entry(access(m, p).unwrap()).or_default() += 1;
    }
    for (a, n) in &used {
        let at = a.namespace.as_deref().unwrap_or("(all)");
        println!(
            "{:>5} {:<20} {:<22} {:<7} in {at}",
            n, a.group, a.resource, a.verb
        );
    }

    let denied: Vec<&Access> = used
        .keys()
        .filter(|a| !granted.iter().any(|g| allows(g, a)))
        .collect();
    let exempt = |g: &Access| {
        UNOBSERVED_BY_DESIGN
            .iter()
            .any(|(group, resource, verb, _why)| {
                g.group == *group && g.resource == *resource && g.verb == *verb
            })
    };
    let unused: Vec<&Access> = granted
        .iter()
        .filter(|g| !used.keys().any(|a| allows(g, a)) && !exempt(g))
        .collect();

    assert!(
        denied.is_empty(),
        "the operator needs access its roles lack: {denied:#?}"
    );
    assert!(
        unused.is_empty(),
        "granted but never used (least privilege): {unused:#?}"
    );
}
