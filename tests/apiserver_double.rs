//! The API server double driven through a real `kube::Client` and kube-runtime.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use support::apiserver::ApiServer;

#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
#[kube(status = "WidgetStatus", derive = "PartialEq")]
pub struct WidgetSpec {
    pub size: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct WidgetStatus {
    pub ready: bool,
}

async fn start() -> (ApiServer, kube::Client) {
    let server = ApiServer::start().await;
    server.register("example.com", "v1", "Widget", "widgets", true);
    let client = server.client();
    (server, client)
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let labels = labels
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()));
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels.collect()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn code(error: kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected a Status answer, got {other}"),
    }
}

fn revision<K: Resource>(object: &K) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

fn names<K: Resource>(objects: &[K]) -> Vec<String> {
    objects
        .iter()
        .map(|object| object.meta().name.clone().unwrap())
        .collect()
}

async fn next<T>(stream: &mut (impl Stream<Item = T> + Unpin)) -> T {
    let item = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    item.expect("an item within 5 s")
        .expect("the stream goes on")
}

/// The next non-bookmark event of a raw watch, as (type, name).
async fn next_change<K: Resource>(
    events: &mut BoxStream<'_, kube::Result<WatchEvent<K>>>,
) -> (&'static str, String) {
    loop {
        let (kind, object) = match next(events).await.unwrap() {
            WatchEvent::Added(object) => ("ADDED", object),
            WatchEvent::Modified(object) => ("MODIFIED", object),
            WatchEvent::Deleted(object) => ("DELETED", object),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(status) => panic!("unexpected watch error {status:?}"),
        };
        return (kind, object.meta().name.clone().unwrap());
    }
}

/// Polls `check` until it holds, for at most five seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_watch_sends_only_the_changes_after_its_revision() {
    let (_server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();

    config_maps
        .create(&pp, &config_map("before", &[]))
        .await
        .unwrap();
    let list = config_maps.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), ["before"]);
    let listed = list.metadata.resource_version.unwrap();

    config_maps
        .create(&pp, &config_map("after", &[]))
        .await
        .unwrap();
    let patch = Patch::Merge(json!({"data": {"key": "value"}}));
    config_maps
        .patch("before", &PatchParams::default(), &patch)
        .await
        .unwrap();

    let params = WatchParams::default().timeout(10);
    let mut events = config_maps.watch(&params, &listed).await.unwrap().boxed();
    assert_eq!(next_change(&mut events).await, ("ADDED", "after".into()));
    assert_eq!(
        next_change(&mut events).await,
        ("MODIFIED", "before".into())
    );

    config_maps
        .delete("after", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(next_change(&mut events).await, ("DELETED", "after".into()));
}

#[tokio::test]
async fn a_watch_without_revision_starts_with_the_current_objects() {
    let (_server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();
    config_maps
        .create(&pp, &config_map("existing", &[]))
        .await
        .unwrap();

    let mut events = config_maps
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_change(&mut events).await, ("ADDED", "existing".into()));

    config_maps
        .create(&pp, &config_map("new", &[]))
        .await
        .unwrap();
    assert_eq!(next_change(&mut events).await, ("ADDED", "new".into()));
}

#[tokio::test]
async fn a_watch_ends_after_its_timeout() {
    let (server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);

    let params = WatchParams::default().timeout(1);
    let now = server.revision().to_string();
    let mut events = config_maps.watch(&params, &now).await.unwrap().boxed();

    let end = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
    assert!(end.expect("the watch ends within 5 s").is_none());
}

#[tokio::test]
async fn a_compacted_revision_gets_410_and_the_watcher_relists() {
    let (server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();

    // Without bookmarks the watcher's revision only moves with the objects it selects.
    let config = watcher::Config::default()
        .labels("app=relist")
        .disable_bookmarks();
    let mut events = watcher(config_maps.clone(), config).boxed();
    assert!(matches!(next(&mut events).await, Ok(watcher::Event::Init)));
    assert!(matches!(
        next(&mut events).await,
        Ok(watcher::Event::InitDone)
    ));

    config_maps
        .create(&pp, &config_map("seen", &[("app", "relist")]))
        .await
        .unwrap();
    let Ok(watcher::Event::Apply(seen)) = next(&mut events).await else {
        panic!("expected the watcher to apply the new object");
    };
    assert_eq!(seen.name_any(), "seen");

    config_maps
        .create(&pp, &config_map("unselected", &[]))
        .await
        .unwrap();
    server.compact();
    server.end_watches();

    match next(&mut events).await {
        Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    assert!(matches!(next(&mut events).await, Ok(watcher::Event::Init)));
    let Ok(watcher::Event::InitApply(relisted)) = next(&mut events).await else {
        panic!("expected the relist to bring the object back");
    };
    assert_eq!(relisted.name_any(), "seen");
    assert!(matches!(
        next(&mut events).await,
        Ok(watcher::Event::InitDone)
    ));

    let mut stale = config_maps
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed();
    match next(&mut stale).await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_streaming_list_ends_its_initial_events_with_a_bookmark() {
    let (_server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    config_maps
        .create(&PostParams::default(), &config_map("one", &[]))
        .await
        .unwrap();

    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher(config_maps, config).boxed();
    assert!(matches!(next(&mut events).await, Ok(watcher::Event::Init)));
    let Ok(watcher::Event::InitApply(listed)) = next(&mut events).await else {
        panic!("expected the existing object as an initial event");
    };
    assert_eq!(listed.name_any(), "one");
    assert!(matches!(
        next(&mut events).await,
        Ok(watcher::Event::InitDone)
    ));
}

#[tokio::test]
async fn create_get_and_replace_check_existence_and_resource_version() {
    let (_server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();

    let created = config_maps
        .create(&pp, &config_map("one", &[]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        code(config_maps.create(&pp, &created).await.unwrap_err()),
        409
    );

    let mut fetched = config_maps.get("one").await.unwrap();
    assert_eq!(fetched, created);
    fetched.data = Some(BTreeMap::from([("key".to_string(), "value".to_string())]));
    let replaced = config_maps.replace("one", &pp, &fetched).await.unwrap();
    assert!(revision(&replaced) > revision(&created));
    assert_eq!(replaced.metadata.uid, created.metadata.uid);

    // `fetched` still carries the revision before the replace.
    let error = config_maps.replace("one", &pp, &fetched).await.unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("expected a Status")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    assert_eq!(code(config_maps.get("missing").await.unwrap_err()), 404);
    assert_eq!(
        code(
            config_maps
                .replace("missing", &pp, &fetched)
                .await
                .unwrap_err()
        ),
        404
    );
}

#[tokio::test]
async fn a_merge_patch_merges_maps_and_removes_nulls() {
    let (_server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    let created = config_maps
        .create(
            &PostParams::default(),
            &config_map("one", &[("drop", "me"), ("keep", "me")]),
        )
        .await
        .unwrap();

    let patch = Patch::Merge(json!({"metadata": {"labels": {"drop": null}}, "data": {"a": "1"}}));
    let patched = config_maps
        .patch("one", &PatchParams::default(), &patch)
        .await
        .unwrap();

    assert_eq!(
        patched.labels(),
        &BTreeMap::from([("keep".into(), "me".into())])
    );
    assert!(revision(&patched) > revision(&created));
    assert_eq!(patched.data.unwrap()["a"], "1");

    let stale = json!({"metadata": {"resourceVersion": revision(&created).to_string()}});
    let error = config_maps
        .patch("one", &PatchParams::default(), &Patch::Merge(stale))
        .await;
    assert_eq!(code(error.unwrap_err()), 409);
}

#[tokio::test]
async fn a_json_patch_tests_and_edits_paths() {
    let (_server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    config_maps
        .create(&PostParams::default(), &config_map("one", &[]))
        .await
        .unwrap();

    let operations = json!([
        {"op": "test", "path": "/metadata/name", "value": "one"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/cleanup"]},
    ]);
    let patch = Patch::Json::<()>(serde_json::from_value(operations).unwrap());
    let patched = config_maps
        .patch("one", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(patched.finalizers(), ["example.com/cleanup"]);

    let failing = json!([{"op": "test", "path": "/metadata/name", "value": "other"}]);
    let patch = Patch::Json::<()>(serde_json::from_value(failing).unwrap());
    let error = config_maps
        .patch("one", &PatchParams::default(), &patch)
        .await;
    assert_eq!(code(error.unwrap_err()), 422);
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_and_needs_a_field_manager() {
    let (_server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let params = PatchParams::apply("tests");

    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}});
    let created = config_maps
        .patch("applied", &params, &Patch::Apply(first))
        .await
        .unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("applied"));
    assert!(created.metadata.uid.is_some());

    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"b": "2"}});
    let merged = config_maps
        .patch("applied", &params, &Patch::Apply(second))
        .await
        .unwrap();
    let data = merged.data.unwrap();
    assert_eq!((data["a"].as_str(), data["b"].as_str()), ("1", "2"));

    // kube refuses an apply without a field manager itself, so send the raw request.
    let request = http::Request::patch("/api/v1/namespaces/default/configmaps/applied")
        .header("content-type", "application/apply-patch+yaml")
        .body(br#"{"apiVersion":"v1","kind":"ConfigMap","data":{"c":"3"}}"#.to_vec())
        .unwrap();
    assert_eq!(
        code(client.request::<ConfigMap>(request).await.unwrap_err()),
        422
    );
}

#[tokio::test]
async fn the_status_subresource_is_written_apart_and_only_spec_bumps_generation() {
    let (_server, client) = start().await;
    let widgets: Api<Widget> = Api::default_namespaced(client);
    let pp = PostParams::default();

    let mut widget = Widget::new("one", WidgetSpec { size: 1 });
    widget.status = Some(WidgetStatus { ready: true });
    let created = widgets.create(&pp, &widget).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.status, None,
        "status is only written through /status"
    );

    let patch = Patch::Merge(json!({"status": {"ready": true}, "spec": {"size": 9}}));
    let patched = widgets
        .patch_status("one", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(patched.status, Some(WidgetStatus { ready: true }));
    assert_eq!(patched.spec.size, 1, "a status write changes nothing else");
    assert_eq!(patched.metadata.generation, Some(1));
    assert!(revision(&patched) > revision(&created));

    let mut fetched = widgets.get_status("one").await.unwrap();
    assert_eq!(fetched, patched);
    fetched.status = Some(WidgetStatus { ready: false });
    let replaced = widgets.replace_status("one", &pp, &fetched).await.unwrap();
    assert_eq!(replaced.status, Some(WidgetStatus { ready: false }));
    assert_eq!(replaced.metadata.generation, Some(1));

    let patch = Patch::Merge(json!({"spec": {"size": 2}, "status": {"ready": true}}));
    let respecced = widgets
        .patch("one", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(respecced.spec.size, 2);
    assert_eq!(respecced.metadata.generation, Some(2));
    assert_eq!(
        respecced.status,
        Some(WidgetStatus { ready: false }),
        "a spec write keeps status"
    );
}

#[tokio::test]
async fn deleting_an_owner_deletes_what_it_owns() {
    let (_server, client) = start().await;
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client);
    let pp = PostParams::default();

    let owner = widgets
        .create(&pp, &Widget::new("owner", WidgetSpec::default()))
        .await
        .unwrap();
    let owned = Secret {
        metadata: ObjectMeta {
            name: Some("owned".into()),
            owner_references: Some(vec![owner.controller_owner_ref(&()).unwrap()]),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    secrets.create(&pp, &owned).await.unwrap();
    let mut unowned = owned.clone();
    unowned.metadata.name = Some("unowned".into());
    unowned.metadata.owner_references = None;
    secrets.create(&pp, &unowned).await.unwrap();

    let deleted = widgets
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(deleted.left().unwrap().name_any(), "owner");

    eventually("the owned Secret is gone", || async {
        secrets.get_opt("owned").await.unwrap().is_none()
    })
    .await;
    assert!(secrets.get_opt("unowned").await.unwrap().is_some());
    assert!(widgets.get_opt("owner").await.unwrap().is_none());
}

#[tokio::test]
async fn a_finalizer_holds_a_deletion_until_it_is_removed() {
    let (_server, client) = start().await;
    let widgets: Api<Widget> = Api::default_namespaced(client);

    let mut widget = Widget::new("held", WidgetSpec::default());
    widget.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();

    let marked = widgets
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(2));
    assert!(widgets.get_opt("held").await.unwrap().is_some());

    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    widgets
        .patch("held", &PatchParams::default(), &release)
        .await
        .unwrap();
    assert!(widgets.get_opt("held").await.unwrap().is_none());
}

#[tokio::test]
async fn secret_string_data_is_folded_into_data() {
    let (_server, client) = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());

    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("folded".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([("token".into(), "s3cret".into())])),
        ..Secret::default()
    };
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert_eq!(created.string_data, None);
    assert_eq!(
        created.data.unwrap()["token"],
        ByteString(b"s3cret".to_vec())
    );

    let patch = Patch::Merge(json!({"stringData": {"other": "x"}}));
    let patched = secrets
        .patch("folded", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let data = patched.data.unwrap();
    assert_eq!(
        (data.len(), &data["other"]),
        (2, &ByteString(b"x".to_vec()))
    );

    let request = http::Request::get("/api/v1/namespaces/default/secrets/folded")
        .body(vec![])
        .unwrap();
    let wire: Value = client.request(request).await.unwrap();
    assert_eq!(wire["data"]["token"], "czNjcmV0");
}

#[tokio::test]
async fn a_write_that_changes_nothing_bumps_nothing_and_emits_no_event() {
    let (server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let widgets: Api<Widget> = Api::default_namespaced(client);

    let mut same = config_map("same", &[("app", "x")]);
    same.data = Some(BTreeMap::from([("key".to_string(), "value".to_string())]));
    let created = config_maps
        .create(&PostParams::default(), &same)
        .await
        .unwrap();
    let widget = Widget::new("w", WidgetSpec::default());
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    let widget = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    let before = server.revision();
    let mut events = config_maps
        .watch(&WatchParams::default(), &before.to_string())
        .await
        .unwrap()
        .boxed();

    let replaced = config_maps
        .replace("same", &PostParams::default(), &created)
        .await
        .unwrap();
    let merge = Patch::Merge(json!({"data": {"key": "value"}}));
    let patched = config_maps
        .patch("same", &PatchParams::default(), &merge)
        .await
        .unwrap();
    let apply =
        Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"key": "value"}}));
    let applied = config_maps
        .patch("same", &PatchParams::apply("tests"), &apply)
        .await
        .unwrap();
    let status = Patch::Merge(json!({"status": {"ready": true}}));
    let restatused = widgets
        .patch_status("w", &PatchParams::default(), &status)
        .await
        .unwrap();

    assert_eq!(replaced, created);
    assert_eq!(patched, created);
    assert_eq!(applied, created);
    assert_eq!(restatused, widget);
    assert_eq!(server.revision(), before);

    // The first event after the no-op writes is a later, real change.
    config_maps
        .create(&PostParams::default(), &config_map("sentinel", &[]))
        .await
        .unwrap();
    assert_eq!(next_change(&mut events).await, ("ADDED", "sentinel".into()));
}

#[tokio::test]
async fn label_selectors_filter_lists_and_watches() {
    let (_server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();
    let labelled = |name, labels| config_map(name, labels);

    config_maps
        .create(&pp, &labelled("a", &[("app", "web"), ("tier", "front")]))
        .await
        .unwrap();
    config_maps
        .create(&pp, &labelled("b", &[("app", "web"), ("tier", "back")]))
        .await
        .unwrap();
    config_maps
        .create(&pp, &labelled("c", &[("app", "db")]))
        .await
        .unwrap();

    let cases = [
        ("app=web", vec!["a", "b"]),
        ("app==web,tier!=front", vec!["b"]),
        ("app in (db, cache)", vec!["c"]),
        ("app notin (db)", vec!["a", "b"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c"]),
    ];
    for (selector, expected) in cases {
        let list = config_maps
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names(&list.items), expected, "labelSelector {selector}");
    }

    let list = config_maps
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let listed = list.metadata.resource_version.unwrap();
    let params = WatchParams::default().labels("app=web");
    let mut events = config_maps.watch(&params, &listed).await.unwrap().boxed();
    let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
    let no_patch = PatchParams::default();

    config_maps
        .patch("c", &no_patch, &relabel("web"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut events).await, ("ADDED", "c".into()));
    config_maps
        .patch("a", &no_patch, &relabel("other"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut events).await, ("DELETED", "a".into()));
    config_maps
        .patch("b", &no_patch, &Patch::Merge(json!({"data": {"k": "v"}})))
        .await
        .unwrap();
    assert_eq!(next_change(&mut events).await, ("MODIFIED", "b".into()));
    config_maps
        .create(&pp, &labelled("d", &[("app", "db")]))
        .await
        .unwrap();
    config_maps
        .create(&pp, &labelled("e", &[("app", "web")]))
        .await
        .unwrap();
    assert_eq!(next_change(&mut events).await, ("ADDED", "e".into()));
}

#[tokio::test]
async fn field_selectors_filter_by_name() {
    let (_server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();
    for name in ["a", "b", "c"] {
        config_maps
            .create(&pp, &config_map(name, &[]))
            .await
            .unwrap();
    }

    let only_b = ListParams::default().fields("metadata.name=b");
    assert_eq!(
        names(&config_maps.list(&only_b).await.unwrap().items),
        ["b"]
    );
    let not_b = ListParams::default().fields("metadata.name!=b,metadata.namespace=default");
    assert_eq!(
        names(&config_maps.list(&not_b).await.unwrap().items),
        ["a", "c"]
    );

    let list = config_maps.list(&only_b).await.unwrap();
    let params = WatchParams::default().fields("metadata.name=b");
    let listed = list.metadata.resource_version.unwrap();
    let mut events = config_maps.watch(&params, &listed).await.unwrap().boxed();
    let touch = Patch::Merge(json!({"data": {"k": "v"}}));
    config_maps
        .patch("a", &PatchParams::default(), &touch)
        .await
        .unwrap();
    config_maps
        .patch("b", &PatchParams::default(), &touch)
        .await
        .unwrap();
    assert_eq!(next_change(&mut events).await, ("MODIFIED", "b".into()));
}

#[tokio::test]
async fn lists_span_namespaces_and_serve_metadata_only() {
    let (_server, client) = start().await;
    let pp = PostParams::default();
    for namespace in ["one", "two"] {
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        config_maps
            .create(&pp, &config_map("settings", &[]))
            .await
            .unwrap();
    }

    let everywhere: Api<ConfigMap> = Api::all(client.clone());
    let list = everywhere.list(&ListParams::default()).await.unwrap();
    let namespaces: Vec<_> = list
        .items
        .iter()
        .map(|item| item.namespace().unwrap())
        .collect();
    assert_eq!(namespaces, ["one", "two"]);

    let metadata = everywhere
        .list_metadata(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(names(&metadata.items), ["settings", "settings"]);

    let in_one: Api<ConfigMap> = Api::namespaced(client, "one");
    assert_eq!(
        names(&in_one.list(&ListParams::default()).await.unwrap().items),
        ["settings"]
    );
}

#[tokio::test]
async fn discovery_shows_built_in_and_registered_kinds() {
    let (_server, client) = start().await;

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    let discovery = kube::Discovery::new(client).run().await.unwrap();
    let widget = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let (resource, capabilities) = discovery.resolve_gvk(&widget).unwrap();
    assert_eq!(resource.plural, "widgets");
    assert_eq!(capabilities.scope, Scope::Namespaced);
    let subresources: Vec<_> = capabilities
        .subresources
        .iter()
        .map(|(sub, _)| &sub.plural)
        .collect();
    assert_eq!(subresources, ["status"]);

    for (group, version, kind) in [
        ("", "v1", "Secret"),
        ("", "v1", "Namespace"),
        ("apps", "v1", "Deployment"),
        ("events.k8s.io", "v1", "Event"),
        ("coordination.k8s.io", "v1", "Lease"),
    ] {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        assert!(
            discovery.resolve_gvk(&gvk).is_some(),
            "{kind} is discovered"
        );
    }
}

#[tokio::test]
async fn the_server_counts_requests_and_refuses_odd_bodies() {
    let (server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());

    config_maps
        .create(&PostParams::default(), &config_map("one", &[]))
        .await
        .unwrap();
    let touch = Patch::Merge(json!({"data": {"k": "v"}}));
    config_maps
        .patch("one", &PatchParams::default(), &touch)
        .await
        .unwrap();
    config_maps.get("one").await.unwrap();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("s".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    assert_eq!(server.writes(), 3);
    assert_eq!(server.writes_to("configmaps"), 2);
    assert_eq!(server.writes_to("secrets"), 1);
    let get = (
        "GET".to_string(),
        "/api/v1/namespaces/default/configmaps/one".to_string(),
    );
    assert!(server.requests().contains(&get));

    let no_status = config_maps.get_status("one").await.unwrap_err();
    assert_eq!(
        code(no_status),
        404,
        "config maps have no status subresource"
    );

    let request = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "text/plain")
        .body(b"name: one".to_vec())
        .unwrap();
    assert_eq!(
        code(client.request::<ConfigMap>(request).await.unwrap_err()),
        415
    );
}

#[tokio::test]
async fn a_server_set_down_answers_503_until_it_is_back() {
    let (server, client) = start().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);

    server.set_down(true);
    assert_eq!(
        code(config_maps.list(&ListParams::default()).await.unwrap_err()),
        503
    );

    server.set_down(false);
    assert!(config_maps.list(&ListParams::default()).await.is_ok());
}

struct Context {
    client: kube::Client,
    reconciles: AtomicUsize,
}

/// Keeps one Secret per Widget and marks the Widget ready, writing only what differs.
async fn reconcile(widget: Arc<Widget>, context: Arc<Context>) -> Result<Action, kube::Error> {
    context.reconciles.fetch_add(1, Ordering::SeqCst);
    let name = widget.name_any();
    let namespace = widget.namespace().unwrap();
    let params = PatchParams::apply("widget-controller");

    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(format!("{name}-size")),
            owner_references: Some(vec![widget.controller_owner_ref(&()).unwrap()]),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            "size".into(),
            widget.spec.size.to_string(),
        )])),
        ..Secret::default()
    };
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    secrets
        .patch(&format!("{name}-size"), &params, &Patch::Apply(&secret))
        .await?;

    let status =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"ready": true}});
    let widgets: Api<Widget> = Api::namespaced(context.client.clone(), &namespace);
    widgets
        .patch_status(&name, &params, &Patch::Apply(status))
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_widget: Arc<Widget>, _error: &kube::Error, _context: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(50))
}

#[tokio::test]
async fn a_controller_reconciles_through_the_double_and_then_rests() {
    let (_server, client) = start().await;
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let context = Arc::new(Context {
        client,
        reconciles: AtomicUsize::new(0),
    });

    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .owns(secrets.clone(), watcher::Config::default())
        .run(reconcile, error_policy, context.clone())
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    widgets
        .create(
            &PostParams::default(),
            &Widget::new("w", WidgetSpec { size: 1 }),
        )
        .await
        .unwrap();
    eventually("the widget is ready", || async {
        let widget = widgets.get("w").await.unwrap();
        widget.status == Some(WidgetStatus { ready: true })
    })
    .await;

    let resize = Patch::Merge(json!({"spec": {"size": 2}}));
    widgets
        .patch("w", &PatchParams::default(), &resize)
        .await
        .unwrap();
    eventually("the secret follows the new size", || async {
        let secret = secrets.get_opt("w-size").await.unwrap();
        secret
            .and_then(|s| s.data)
            .is_some_and(|data| data["size"] == ByteString(b"2".to_vec()))
    })
    .await;

    // Writes that change nothing publish nothing, so the controller does not loop.
    let reconciles = context.reconciles.load(Ordering::SeqCst);
    assert!(reconciles <= 8, "{reconciles} reconciles for two changes");

    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    eventually("the secret is collected", || async {
        secrets.get_opt("w-size").await.unwrap().is_none()
    })
    .await;
    controller.abort();
}
