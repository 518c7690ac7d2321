//! The patch formats kube sends: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).
//!
//! Strategic merge patch is treated as a merge patch, so lists are replaced whole rather
//! than merged by key; server-side apply uses the same merge.

use serde_json::Value;

use super::error::ApiError;

/// Applies an RFC 7386 merge patch: objects merge key by key, `null` removes, the rest replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };

    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }

    let Value::Object(target) = target else {
        return;
    };

    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Applies an RFC 6902 JSON patch (add, remove, replace, move, copy, test) to a copy of `doc`.
pub fn json_patch(doc: &Value, operations: &Value) -> Result<Value, ApiError> {
    let Some(operations) = operations.as_array() else {
        return Err(ApiError::bad_request(
            "a JSON patch must be an array of operations",
        ));
    };

    let mut doc = doc.clone();
    for operation in operations {
        let op = operation["op"].as_str().unwrap_or_default();
        let path = operation["path"].as_str().unwrap_or_default();
        let from = operation["from"].as_str().unwrap_or_default();
        let value = operation["value"].clone();

        match op {
            "add" => add(&mut doc, path, value)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                let target = doc.pointer_mut(path).ok_or_else(|| missing(path))?;
                *target = value;
            }
            "move" => {
                let moved = remove(&mut doc, from)?;
                add(&mut doc, path, moved)?;
            }
            "copy" => {
                let copied = doc.pointer(from).ok_or_else(|| missing(from))?.clone();
                add(&mut doc, path, copied)?;
            }
            "test" if doc.pointer(path) == Some(&value) => {}
            "test" => {
                let message = format!("the JSON patch test of {path} failed");
                return Err(ApiError::invalid(message));
            }
            other => {
                let message = format!("unknown JSON patch operation {other:?}");
                return Err(ApiError::bad_request(message));
            }
        }
    }

    Ok(doc)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }

    let (parent, key) = split_pointer(path);
    match doc.pointer_mut(parent).ok_or_else(|| missing(parent))? {
        Value::Object(map) => {
            map.insert(key, value);
        }
        Value::Array(items) if key == "-" => items.push(value),
        Value::Array(items) => {
            let index = key
                .parse::<usize>()
                .ok()
                .filter(|index| *index <= items.len());
            items.insert(index.ok_or_else(|| missing(path))?, value);
        }
        _ => return Err(missing(path)),
    }

    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, key) = split_pointer(path);
    let removed = match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&key),
        Some(Value::Array(items)) => match key.parse::<usize>() {
            Ok(index) if index < items.len() => Some(items.remove(index)),
            _ => None,
        },
        _ => None,
    };

    removed.ok_or_else(|| missing(path))
}

/// Splits `/a/b~1c` into the parent pointer `/a` and the unescaped last token `b/c`.
fn split_pointer(path: &str) -> (&str, String) {
    let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
    (parent, last.replace("~1", "/").replace("~0", "~"))
}

fn missing(path: &str) -> ApiError {
    ApiError::invalid(format!("the JSON patch path {path:?} does not exist"))
}
