//! Watch responses: a chunked body with one JSON event a line.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::SinkExt;
use futures::channel::mpsc;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch::Receiver;

use super::error::ApiError;
use super::select::Filter;
use super::store::{Change, Kind, Opening};

/// How often an idle watch checks its client and may send a `BOOKMARK`.
const TICK: Duration = Duration::from_millis(500);

/// Used when the request names no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// One watch request after its parameters were read.
pub struct Watch {
    pub kind: Kind,
    pub filter: Filter,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: end the synthetic `ADDED` events with a marked `BOOKMARK`.
    pub initial_events: bool,
    pub timeout: Option<Duration>,
    pub metadata_only: bool,
}

type Sink = mpsc::Sender<Result<Bytes, Infallible>>;

/// Starts streaming `opening` and the changes after it; `endings` closes every stream.
pub fn respond(request: Watch, opening: Opening, endings: Receiver<u64>) -> Response {
    let (sink, body) = mpsc::channel(64);
    tokio::spawn(pump(sink, request, opening, endings));
    stream_response(Body::from_stream(body))
}

/// A watch from a forgotten revision: a single `ERROR` event carrying the 410 Status.
pub fn refuse(error: &ApiError) -> Response {
    stream_response(Body::from(line("ERROR", &error.status())))
}

fn stream_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let content_type = http::HeaderValue::from_static("application/json");
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, content_type);
    response
}

async fn pump(mut sink: Sink, request: Watch, opening: Opening, mut endings: Receiver<u64>) {
    let Opening {
        backlog,
        mut receiver,
        revision,
    } = opening;
    let mut last = revision;

    for change in &backlog {
        if let Some(line) = event_line(&request, change)
            && sink.send(Ok(line)).await.is_err()
        {
            return;
        }
    }
    if request.initial_events
        && sink
            .send(Ok(bookmark(&request.kind, last, true)))
            .await
            .is_err()
    {
        return;
    }

    let deadline = tokio::time::sleep(request.timeout.unwrap_or(DEFAULT_TIMEOUT));
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval(TICK);
    let mut bookmarked = last;

    loop {
        let line = tokio::select! {
            () = &mut deadline => return,
            _ = endings.changed() => return,
            _ = ticks.tick() => {
                if sink.is_closed() {
                    return;
                }
                if !request.bookmarks || bookmarked == last {
                    continue;
                }
                bookmarked = last;
                bookmark(&request.kind, last, false)
            }
            received = receiver.recv() => match received {
                Ok(change) if change.revision <= last => continue,
                Ok(change) => {
                    last = change.revision;
                    match event_line(&request, &change) {
                        Some(line) => line,
                        None => continue,
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    sink.send(Ok(line("ERROR", &ApiError::gone(last).status()))).await.ok();
                    return;
                }
                Err(RecvError::Closed) => return,
            },
        };

        if sink.send(Ok(line)).await.is_err() {
            return;
        }
    }
}

/// The event this watch sees for a change, if any: an object that starts matching the
/// selectors is `ADDED` and one that stops matching is `DELETED`, as on a real server.
fn event_line(request: &Watch, change: &Change) -> Option<Bytes> {
    if change.group != request.kind.group || change.plural != request.kind.plural {
        return None;
    }

    let now = request.filter.matches(&change.object);
    let before = change
        .previous
        .as_ref()
        .is_some_and(|previous| request.filter.matches(previous));
    let event = match (change.event, before, now) {
        ("DELETED", _, true) => "DELETED",
        ("DELETED", _, false) => return None,
        (_, false, true) => "ADDED",
        (_, true, true) => "MODIFIED",
        (_, true, false) => "DELETED",
        (_, false, false) => return None,
    };

    let object = if request.metadata_only {
        partial(&change.object)
    } else {
        change.object.clone()
    };
    Some(line(event, &object))
}

fn bookmark(kind: &Kind, revision: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }

    let object = json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata});
    line("BOOKMARK", &object)
}

fn line(event: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": event, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// The `PartialObjectMetadata` form of an object, for metadata-only requests.
pub fn partial(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object["metadata"],
    })
}
