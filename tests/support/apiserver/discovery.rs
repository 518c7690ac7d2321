//! The legacy discovery documents kubectl and `kube::Discovery` read.

use serde_json::{Value, json};

use super::store::Kind;

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-apiserver-double",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`
pub fn core_versions(address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    })
}

/// `/apis`
pub fn groups(kinds: &[Kind]) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for kind in kinds.iter().filter(|kind| !kind.group.is_empty()) {
        if !names.contains(&kind.group.as_str()) {
            names.push(&kind.group);
        }
    }

    let groups: Vec<Value> = names.iter().filter_map(|name| group(kinds, name)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`; the first registered version is the preferred one.
pub fn group(kinds: &[Kind], name: &str) -> Option<Value> {
    let mut versions: Vec<Value> = Vec::new();
    for kind in kinds.iter().filter(|kind| kind.group == name) {
        let version = json!({"groupVersion": kind.api_version(), "version": kind.version});
        if !versions.contains(&version) {
            versions.push(version);
        }
    }

    let preferred = versions.first()?.clone();
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": versions,
        "preferredVersion": preferred,
    }))
}

/// `/api/v1` and `/apis/{group}/{version}`, with a `{plural}/status` entry where served.
pub fn resources(kinds: &[Kind], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Kind> = kinds
        .iter()
        .filter(|kind| kind.group == group && kind.version == version)
        .collect();
    let first = served.first()?;

    let mut resources = Vec::new();
    for kind in &served {
        resources.push(json!({
            "name": kind.plural,
            "singularName": kind.kind.to_lowercase(),
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "shortNames": short_names(kind),
            "verbs": [
                "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch",
            ],
        }));

        if kind.status {
            resources.push(json!({
                "name": format!("{}/status", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }

    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": first.api_version(),
        "resources": resources,
    }))
}

/// The short names kubectl resolves (`kubectl get cm`), for the built-in kinds.
fn short_names(kind: &Kind) -> &'static [&'static str] {
    match (kind.group.as_str(), kind.plural.as_str()) {
        ("", "configmaps") => &["cm"],
        ("", "events") => &["ev"],
        ("", "namespaces") => &["ns"],
        ("", "pods") => &["po"],
        ("", "serviceaccounts") => &["sa"],
        ("", "services") => &["svc"],
        ("apps", "deployments") => &["deploy"],
        ("events.k8s.io", "events") => &["ev"],
        _ => &[],
    }
}
