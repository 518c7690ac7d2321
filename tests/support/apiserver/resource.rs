//! The verbs on a resource collection, one object, or its `/status` subresource.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::error::ApiError;
use super::select::Filter;
use super::store::{Kind, Store, Write};
use super::watch::{self, Watch};
use super::{Address, Shared};

pub fn serve(
    shared: &Shared,
    parts: &Parts,
    address: &Address,
    body: &[u8],
) -> Result<Response, ApiError> {
    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map_err(|error| ApiError::bad_request(error.to_string()))?
        .0;

    let mut guard = shared.store();
    let kind = guard.kind(&address.group, &address.version, &address.plural)?;
    check_scope(&kind, address, &parts.method)?;

    // A dry run works on a copy that is thrown away and publishes nothing.
    let mut copy;
    let store: &mut Store = if query.get("dryRun").is_some_and(|mode| mode == "All") {
        copy = guard.dry_run_copy();
        &mut copy
    } else {
        &mut guard
    };

    let request = Request {
        kind,
        namespace: address.namespace.clone().unwrap_or_default(),
        query,
        parts,
        body,
    };
    match address.name.as_deref() {
        None => request.collection(shared, store, address),
        Some(name) => request.object(store, name, address.status),
    }
}

/// Namespaced kinds are listed across namespaces but written only inside one, and only
/// kinds with a status subresource serve `/status`.
fn check_scope(kind: &Kind, address: &Address, method: &Method) -> Result<(), ApiError> {
    let across_namespaces =
        address.namespace.is_none() && address.name.is_none() && method == Method::GET;
    let scope_fits = match &address.namespace {
        Some(_) => kind.namespaced,
        None => !kind.namespaced || across_namespaces,
    };

    if scope_fits && (kind.status || !address.status) {
        Ok(())
    } else {
        Err(ApiError::no_route())
    }
}

struct Request<'a> {
    kind: Kind,
    namespace: String,
    query: HashMap<String, String>,
    parts: &'a Parts,
    body: &'a [u8],
}

impl Request<'_> {
    fn collection(
        self,
        shared: &Shared,
        store: &mut Store,
        address: &Address,
    ) -> Result<Response, ApiError> {
        let filter = Filter::parse(address.namespace.as_deref(), &self.query)?;

        match self.parts.method {
            Method::GET if self.flag("watch") => self.watch(shared, store, filter),
            Method::GET => {
                let items = store.list(&self.kind, &filter);
                Ok(self.list(items, store.revision()))
            }
            Method::POST => {
                let object = self.json_body()?;
                let created = store.create(&self.kind, &self.namespace, object)?;
                Ok(reply(StatusCode::CREATED, created))
            }
            Method::DELETE => {
                let items = store.delete_collection(&self.kind, &filter, &self.delete_options()?);
                Ok(self.list(items, store.revision()))
            }
            _ => Err(ApiError::method_not_allowed(self.parts.method.as_str())),
        }
    }

    /// Without a `resourceVersion` (or with `sendInitialEvents`) the watch starts with
    /// every current object as `ADDED`, as Kubernetes does.
    fn watch(&self, shared: &Shared, store: &Store, filter: Filter) -> Result<Response, ApiError> {
        let watch = Watch {
            kind: self.kind.clone(),
            filter,
            bookmarks: self.flag("allowWatchBookmarks"),
            initial_events: self.flag("sendInitialEvents"),
            timeout: self.number("timeoutSeconds")?.map(Duration::from_secs),
            metadata_only: self.metadata_only(),
        };

        let from = match self.query.get("resourceVersion").map(String::as_str) {
            _ if watch.initial_events => None,
            None | Some("" | "0") => None,
            Some(_) => self.number("resourceVersion")?,
        };

        match store.open_watch(&self.kind, &watch.filter, from) {
            Ok(opening) => Ok(watch::respond(watch, opening, shared.endings.subscribe())),
            Err(error) => Ok(watch::refuse(&error)),
        }
    }

    fn object(self, store: &mut Store, name: &str, status: bool) -> Result<Response, ApiError> {
        let (kind, namespace) = (&self.kind, self.namespace.as_str());

        let (object, created) = match self.parts.method {
            Method::GET => (store.get(kind, namespace, name)?, false),
            Method::PUT => {
                let write = Write::Replace(self.json_body()?);
                (store.update(kind, namespace, name, status, write)?, false)
            }
            Method::PATCH => match self.content_type().as_str() {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    let write = Write::MergePatch(self.parse_body()?);
                    (store.update(kind, namespace, name, status, write)?, false)
                }
                "application/json-patch+json" => {
                    let write = Write::JsonPatch(self.parse_body()?);
                    (store.update(kind, namespace, name, status, write)?, false)
                }
                "application/apply-patch+yaml" => {
                    if self.query.get("fieldManager").is_none_or(String::is_empty) {
                        let message = "fieldManager: Required value: is required for apply patch";
                        return Err(ApiError::invalid(message));
                    }
                    store.apply(kind, namespace, name, status, self.object_body()?)?
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            },
            Method::DELETE => (
                store.delete(kind, namespace, name, &self.delete_options()?)?,
                false,
            ),
            _ => return Err(ApiError::method_not_allowed(self.parts.method.as_str())),
        };

        let object = if self.metadata_only() {
            watch::partial(&object)
        } else {
            object
        };
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(reply(code, object))
    }

    fn list(&self, items: Vec<Value>, revision: u64) -> Response {
        let (api_version, kind, items) = if self.metadata_only() {
            let items = items.iter().map(watch::partial).collect();
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadataList".to_string(),
                items,
            )
        } else {
            (
                self.kind.api_version(),
                format!("{}List", self.kind.kind),
                items,
            )
        };

        let list = json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"resourceVersion": revision.to_string()},
            "items": items,
        });
        reply(StatusCode::OK, list)
    }

    fn flag(&self, name: &str) -> bool {
        self.query
            .get(name)
            .is_some_and(|value| value == "true" || value == "1")
    }

    fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let Some(value) = self.query.get(name) else {
            return Ok(None);
        };
        let number = value
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid {name}: {value}")))?;
        Ok(Some(number))
    }

    fn metadata_only(&self) -> bool {
        let accept = self
            .parts
            .headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok());
        accept.is_some_and(|accept| accept.contains("as=PartialObjectMetadata"))
    }

    fn content_type(&self) -> String {
        let value = self
            .parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        let essence = value
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default();
        essence.trim().to_ascii_lowercase()
    }

    /// The body of a POST or PUT, which must be a JSON object.
    fn json_body(&self) -> Result<Value, ApiError> {
        let content_type = self.content_type();
        if content_type != "application/json" {
            return Err(ApiError::unsupported_media_type(&content_type));
        }
        self.object_body()
    }

    fn object_body(&self) -> Result<Value, ApiError> {
        let body = self.parse_body()?;
        if !body.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        Ok(body)
    }

    /// Apply bodies are read as JSON too: kube sends JSON under the YAML media type.
    fn parse_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(self.body)
            .map_err(|error| ApiError::bad_request(format!("the body is not JSON: {error}")))
    }

    /// `DeleteOptions` from the body, with `propagationPolicy` also read from the query.
    fn delete_options(&self) -> Result<Value, ApiError> {
        let mut options = if self.body.is_empty() {
            json!({})
        } else {
            self.parse_body()?
        };

        if let Some(policy) = self.query.get("propagationPolicy")
            && let Some(fields) = options.as_object_mut()
        {
            fields.insert("propagationPolicy".into(), json!(policy));
        }
        Ok(options)
    }
}

fn reply(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}
