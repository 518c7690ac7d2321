//! The stored objects, the global revision counter and the history that watches replay.
//!
//! Every write goes through [`Store::commit`] or [`Store::remove`], which decide whether
//! anything changed, bump `resourceVersion` (and `generation` where the kind keeps one),
//! and publish the change. Publishing happens under the store's lock, so a watch that
//! subscribes under the same lock sees each later change exactly once.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::ByteString;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::error::ApiError;
use super::patch;
use super::select::Filter;

/// One resource type the double serves.
#[derive(Clone, Debug)]
pub struct Kind {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Served with a `/status` subresource: writes to the object keep the stored status,
    /// and writes to `/status` change nothing else.
    pub status: bool,
    /// Keeps `metadata.generation`, bumped by changes outside `metadata` and `status`.
    pub generation: bool,
}

impl Kind {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Kind {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            namespaced,
            status: false,
            generation: false,
        }
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    fn with_generation(mut self) -> Self {
        self.generation = true;
        self
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn is_secret(&self) -> bool {
        self.group.is_empty() && self.plural == "secrets"
    }
}

/// The kinds a fresh double serves, before any `register`.
fn built_in_kinds() -> Vec<Kind> {
    vec![
        Kind::new("", "v1", "Namespace", "namespaces", false).with_status(),
        Kind::new("", "v1", "Secret", "secrets", true),
        Kind::new("", "v1", "ConfigMap", "configmaps", true),
        Kind::new("", "v1", "Pod", "pods", true).with_status(),
        Kind::new("", "v1", "Event", "events", true),
        Kind::new("", "v1", "ServiceAccount", "serviceaccounts", true),
        Kind::new("", "v1", "Service", "services", true).with_status(),
        Kind::new("apps", "v1", "Deployment", "deployments", true)
            .with_status()
            .with_generation(),
        Kind::new("events.k8s.io", "v1", "Event", "events", true),
        Kind::new("coordination.k8s.io", "v1", "Lease", "leases", true),
    ]
}

/// A committed change, as the watches of its resource see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub revision: u64,
    pub group: String,
    pub plural: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event: &'static str,
    pub object: Value,
    /// The object before a modification, so a selective watch can tell an object that
    /// starts matching (`ADDED`) or stops matching (`DELETED`) from one that changed.
    pub previous: Option<Value>,
}

/// What a watch replays before it follows live changes.
pub struct Opening {
    pub backlog: Vec<Change>,
    pub receiver: broadcast::Receiver<Change>,
    pub revision: u64,
}

/// How a write turns the stored object into the next one.
pub enum Write {
    Replace(Value),
    MergePatch(Value),
    JsonPatch(Value),
}

/// (group, plural, namespace or "", name)
type Key = (String, String, String, String);

pub struct Store {
    kinds: Vec<Kind>,
    objects: BTreeMap<Key, Value>,
    /// Every change after `compacted`, in revision order.
    history: Vec<Change>,
    compacted: u64,
    revision: u64,
    serial: u64,
    changes: broadcast::Sender<Change>,
}

/// Watches that fall this far behind get a 410 and relist.
const CHANGE_BUFFER: usize = 16_384;

const SERVER_OWNED: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "namespace",
];

impl Store {
    pub fn new() -> Self {
        let mut store = Store {
            kinds: built_in_kinds(),
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            revision: 0,
            serial: 0,
            changes: broadcast::channel(CHANGE_BUFFER).0,
        };

        let namespaces = Kind::new("", "v1", "Namespace", "namespaces", false).with_status();
        for name in ["default", "kube-system", "kube-public"] {
            store
                .create(&namespaces, "", json!({"metadata": {"name": name}}))
                .ok();
        }

        store
    }

    /// A copy that publishes nowhere, for `dryRun=All`.
    pub fn dry_run_copy(&self) -> Self {
        Store {
            kinds: self.kinds.clone(),
            objects: self.objects.clone(),
            history: Vec::new(),
            compacted: self.compacted,
            revision: self.revision,
            serial: self.serial,
            changes: broadcast::channel(1).0,
        }
    }

    pub fn register(&mut self, kind: Kind) {
        self.kinds.retain(|known| {
            (&known.group, &known.version, &known.plural)
                != (&kind.group, &kind.version, &kind.plural)
        });
        self.kinds.push(kind);
    }

    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    pub fn kind(&self, group: &str, version: &str, plural: &str) -> Result<Kind, ApiError> {
        self.kinds
            .iter()
            .find(|kind| kind.group == group && kind.version == version && kind.plural == plural)
            .cloned()
            .ok_or_else(ApiError::no_route)
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Forgets the history, so that watches from any earlier revision get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.revision;
    }

    pub fn get(&self, kind: &Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(kind, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&kind.plural, name))
    }

    pub fn list(&self, kind: &Kind, filter: &Filter) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((group, plural, _, _), _)| *group == kind.group && *plural == kind.plural)
            .map(|(_, object)| object)
            .filter(|object| filter.matches(object))
            .cloned()
            .collect()
    }

    /// Subscribes and reads the backlog under one lock, so no change falls between them.
    /// Without a revision the backlog is a synthetic `ADDED` for every matching object.
    pub fn open_watch(
        &self,
        kind: &Kind,
        filter: &Filter,
        from: Option<u64>,
    ) -> Result<Opening, ApiError> {
        let receiver = self.changes.subscribe();
        let same_resource =
            |change: &&Change| change.group == kind.group && change.plural == kind.plural;

        let backlog = match from {
            Some(revision) if revision < self.compacted => return Err(ApiError::gone(revision)),
            Some(revision) => {
                let start = self
                    .history
                    .partition_point(|change| change.revision <= revision);
                self.history[start..]
                    .iter()
                    .filter(same_resource)
                    .cloned()
                    .collect()
            }
            None => self
                .list(kind, filter)
                .into_iter()
                .map(|object| Change {
                    revision: self.revision,
                    group: kind.group.clone(),
                    plural: kind.plural.clone(),
                    event: "ADDED",
                    object,
                    previous: None,
                })
                .collect(),
        };

        Ok(Opening {
            backlog,
            receiver,
            revision: self.revision,
        })
    }

    pub fn create(
        &mut self,
        kind: &Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let metadata = metadata_mut(&mut object)?;
        check_namespace(metadata, namespace)?;

        let name = match (metadata.get("name"), metadata.get("generateName")) {
            (Some(Value::String(name)), _) if !name.is_empty() => name.clone(),
            (_, Some(Value::String(prefix))) => format!("{prefix}{:05x}", self.serial + 1),
            _ => {
                return Err(ApiError::invalid(
                    "metadata.name: Required value: name is required",
                ));
            }
        };

        let key = key(kind, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&kind.plural, &name));
        }

        self.serial += 1;
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            metadata.remove(field);
        }
        metadata.insert("name".into(), json!(name));
        metadata.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{:012x}", self.serial)),
        );
        metadata.insert("creationTimestamp".into(), json!(now()));
        if kind.namespaced {
            metadata.insert("namespace".into(), json!(namespace));
        } else {
            metadata.remove("namespace");
        }
        if kind.generation {
            metadata.insert("generation".into(), json!(1));
        } else {
            metadata.remove("generation");
        }

        prepare_create(kind, &mut object);
        normalize(kind, &mut object);
        self.revision += 1;
        set_revision(&mut object, self.revision);
        self.objects.insert(key, object.clone());
        self.publish(kind, "ADDED", &object, None);
        Ok(object)
    }

    /// PUT or PATCH of an object or, with `status`, of its status subresource.
    pub fn update(
        &mut self,
        kind: &Kind,
        namespace: &str,
        name: &str,
        status: bool,
        write: Write,
    ) -> Result<Value, ApiError> {
        let key = key(kind, namespace, name);
        let existing = self.get(kind, namespace, name)?;

        let candidate = match write {
            Write::Replace(body) => body,
            Write::MergePatch(body) => {
                let mut candidate = existing.clone();
                patch::merge(&mut candidate, &body);
                candidate
            }
            Write::JsonPatch(operations) => patch::json_patch(&existing, &operations)?,
        };

        let requested = candidate["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| !rv.is_empty());
        if requested.is_some_and(|rv| Some(rv) != existing["metadata"]["resourceVersion"].as_str())
        {
            return Err(ApiError::conflict(&kind.plural, name));
        }
        if candidate["metadata"]["name"]
            .as_str()
            .is_some_and(|named| named != name)
        {
            let message =
                format!("the name of the object does not match the name on the URL ({name})");
            return Err(ApiError::bad_request(message));
        }

        let next = if status {
            let mut next = existing.clone();
            set_field(&mut next, "status", candidate.get("status").cloned());
            next
        } else {
            let mut next = candidate;
            let metadata = metadata_mut(&mut next)?;
            metadata.insert("name".into(), json!(name));
            for field in SERVER_OWNED {
                match existing["metadata"].get(field) {
                    Some(value) => metadata.insert(field.into(), value.clone()),
                    None => metadata.remove(field),
                };
            }
            if kind.status {
                set_field(&mut next, "status", existing.get("status").cloned());
            }
            next
        };

        self.commit(kind, key, existing, next)
    }

    /// Server-side apply: create if absent, otherwise merge the applied object.
    /// Returns the object and whether it was created.
    pub fn apply(
        &mut self,
        kind: &Kind,
        namespace: &str,
        name: &str,
        status: bool,
        mut applied: Value,
    ) -> Result<(Value, bool), ApiError> {
        if status || self.objects.contains_key(&key(kind, namespace, name)) {
            let object = self.update(kind, namespace, name, status, Write::MergePatch(applied))?;
            return Ok((object, false));
        }

        metadata_mut(&mut applied)?.insert("name".into(), json!(name));
        Ok((self.create(kind, namespace, applied)?, true))
    }

    pub fn delete(
        &mut self,
        kind: &Kind,
        namespace: &str,
        name: &str,
        options: &Value,
    ) -> Result<Value, ApiError> {
        let existing = self.get(kind, namespace, name)?;

        for field in ["uid", "resourceVersion"] {
            let wanted = options["preconditions"][field].as_str();
            if wanted.is_some_and(|wanted| Some(wanted) != existing["metadata"][field].as_str()) {
                return Err(ApiError::conflict(&kind.plural, name));
            }
        }

        let orphan =
            options["propagationPolicy"] == "Orphan" || options["orphanDependents"] == true;
        Ok(self.delete_object(kind, key(kind, namespace, name), existing, !orphan))
    }

    pub fn delete_collection(
        &mut self,
        kind: &Kind,
        filter: &Filter,
        options: &Value,
    ) -> Vec<Value> {
        let orphan = options["propagationPolicy"] == "Orphan";
        let mut deleted = Vec::new();

        for object in self.list(kind, filter) {
            let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let key = key(kind, namespace, name);
            deleted.push(self.delete_object(kind, key, object, !orphan));
        }

        deleted
    }

    /// Deletes now, or only marks the object while finalizers remain (as Kubernetes does).
    fn delete_object(&mut self, kind: &Kind, key: Key, object: Value, cascade: bool) -> Value {
        let finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if !finalizers {
            return self.remove(kind, key, object, cascade);
        }
        if object["metadata"].get("deletionTimestamp").is_some() {
            return object;
        }

        let mut next = object.clone();
        if let Ok(metadata) = metadata_mut(&mut next) {
            metadata.insert("deletionTimestamp".into(), json!(now()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
            if kind.generation {
                let generation = metadata
                    .get("generation")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                metadata.insert("generation".into(), json!(generation + 1));
            }
        }

        self.revision += 1;
        set_revision(&mut next, self.revision);
        self.objects.insert(key, next.clone());
        self.publish(kind, "MODIFIED", &next, Some(object));
        next
    }

    /// Stores `next` unless it equals `previous`: a write that changes nothing bumps nothing
    /// and publishes nothing, or the double would itself cause reconcile storms.
    fn commit(
        &mut self,
        kind: &Kind,
        key: Key,
        previous: Value,
        mut next: Value,
    ) -> Result<Value, ApiError> {
        normalize(kind, &mut next);
        let revision = previous["metadata"]["resourceVersion"].clone();
        metadata_mut(&mut next)?.insert("resourceVersion".into(), revision);
        if next == previous {
            return Ok(previous);
        }

        if kind.generation
            && without_metadata_and_status(&next) != without_metadata_and_status(&previous)
        {
            let generation = previous["metadata"]["generation"].as_u64().unwrap_or(0);
            metadata_mut(&mut next)?.insert("generation".into(), json!(generation + 1));
        }

        let finalizers = next["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if next["metadata"].get("deletionTimestamp").is_some() && !finalizers {
            return Ok(self.remove(kind, key, next, true));
        }

        self.revision += 1;
        set_revision(&mut next, self.revision);
        self.objects.insert(key, next.clone());
        self.publish(kind, "MODIFIED", &next, Some(previous));
        Ok(next)
    }

    fn remove(&mut self, kind: &Kind, key: Key, mut object: Value, cascade: bool) -> Value {
        self.objects.remove(&key);
        self.revision += 1;
        set_revision(&mut object, self.revision);
        self.publish(kind, "DELETED", &object, None);

        if cascade && let Some(uid) = object["metadata"]["uid"].as_str() {
            self.collect_garbage(uid);
        }
        object
    }

    /// Deletes the dependents of a deleted owner that have no other owner left,
    /// in the background as Kubernetes' garbage collector would (but at once).
    fn collect_garbage(&mut self, owner: &str) {
        let living: HashSet<&str> = self
            .objects
            .values()
            .filter_map(|object| object["metadata"]["uid"].as_str())
            .collect();

        let orphans: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, object)| {
                let owners = owner_uids(object);
                owners.contains(&owner) && owners.iter().all(|uid| !living.contains(uid))
            })
            .map(|(key, _)| key.clone())
            .collect();

        for key in orphans {
            let Some(object) = self.objects.get(&key).cloned() else {
                continue;
            };
            let Some(kind) = self
                .kinds
                .iter()
                .find(|k| k.group == key.0 && k.plural == key.1)
                .cloned()
            else {
                continue;
            };
            self.delete_object(&kind, key, object, true);
        }
    }

    fn publish(
        &mut self,
        kind: &Kind,
        event: &'static str,
        object: &Value,
        previous: Option<Value>,
    ) {
        let change = Change {
            revision: self.revision,
            group: kind.group.clone(),
            plural: kind.plural.clone(),
            event,
            object: object.clone(),
            previous,
        };

        self.history.push(change.clone());
        // Nobody watching is fine.
        self.changes.send(change).ok();
    }
}

fn key(kind: &Kind, namespace: &str, name: &str) -> Key {
    let namespace = if kind.namespaced { namespace } else { "" };
    (
        kind.group.clone(),
        kind.plural.clone(),
        namespace.to_string(),
        name.to_string(),
    )
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let Value::Object(fields) = object else {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    };

    let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
    if !metadata.is_object() {
        *metadata = json!({});
    }
    metadata
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn check_namespace(metadata: &Map<String, Value>, namespace: &str) -> Result<(), ApiError> {
    match metadata.get("namespace").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && !namespace.is_empty() && given != namespace => {
            let message = "the namespace of the object does not match the namespace on the URL";
            Err(ApiError::bad_request(message))
        }
        _ => Ok(()),
    }
}

fn set_revision(object: &mut Value, revision: u64) {
    if let Ok(metadata) = metadata_mut(object) {
        metadata.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

fn set_field(object: &mut Value, field: &str, value: Option<Value>) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    match value {
        Some(value) if !value.is_null() => fields.insert(field.to_string(), value),
        _ => fields.remove(field),
    };
}

/// What a freshly created object gets from the server besides its metadata.
fn prepare_create(kind: &Kind, object: &mut Value) {
    // Status is written through the subresource only, also on a real cluster.
    if kind.status {
        set_field(object, "status", None);
    }

    if kind.group.is_empty() && kind.plural == "namespaces" {
        set_field(object, "status", Some(json!({"phase": "Active"})));
    }
    if kind.is_secret() && object.get("type").is_none() {
        set_field(object, "type", Some(json!("Opaque")));
    }
}

/// Sets the type fields, drops `managedFields` and folds Secret `stringData` into `data`.
fn normalize(kind: &Kind, object: &mut Value) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };

    fields.insert("apiVersion".into(), json!(kind.api_version()));
    fields.insert("kind".into(), json!(kind.kind));
    if let Some(Value::Object(metadata)) = fields.get_mut("metadata") {
        metadata.remove("managedFields");
    }

    if !kind.is_secret() {
        return;
    }

    let Some(Value::Object(strings)) = fields.remove("stringData") else {
        return;
    };
    let data = fields.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Value::Object(data) = data {
        for (name, value) in strings {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            let encoded = serde_json::to_value(ByteString(text.into_bytes())).unwrap_or_default();
            data.insert(name, encoded);
        }
    }
}

fn without_metadata_and_status(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("metadata");
        fields.remove("status");
    }
    rest
}

fn owner_uids(object: &Value) -> Vec<&str> {
    let references = object["metadata"]["ownerReferences"].as_array();
    references
        .into_iter()
        .flatten()
        .filter_map(|reference| reference["uid"].as_str())
        .collect()
}
