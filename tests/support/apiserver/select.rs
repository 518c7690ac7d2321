//! Which objects a list or watch returns: namespace, `labelSelector` and `fieldSelector`.

use std::collections::HashMap;

use serde_json::Value;

use super::error::ApiError;

/// The parsed selectors of one list or watch request.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    namespace: Option<String>,
    labels: Vec<Label>,
    fields: Vec<Field>,
}

#[derive(Clone, Debug)]
enum Label {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Missing(String),
}

#[derive(Clone, Debug)]
struct Field {
    path: String,
    value: String,
    equal: bool,
}

impl Filter {
    pub fn parse(
        namespace: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<Self, ApiError> {
        let labels = match query.get("labelSelector") {
            Some(selector) => parse_labels(selector)?,
            None => Vec::new(),
        };

        let fields = match query.get("fieldSelector") {
            Some(selector) => parse_fields(selector)?,
            None => Vec::new(),
        };

        let namespace = namespace.map(str::to_string);
        Ok(Filter {
            namespace,
            labels,
            fields,
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let metadata = &object["metadata"];
        if let Some(namespace) = &self.namespace
            && metadata["namespace"].as_str() != Some(namespace.as_str())
        {
            return false;
        }

        let labels = &metadata["labels"];
        let label = |key: &str| labels[key].as_str();
        let labels_match = self.labels.iter().all(|requirement| match requirement {
            Label::Equals(key, value) => label(key) == Some(value.as_str()),
            Label::NotEquals(key, value) => label(key) != Some(value.as_str()),
            Label::In(key, values) => label(key).is_some_and(|v| values.iter().any(|x| x == v)),
            Label::NotIn(key, values) => !label(key).is_some_and(|v| values.iter().any(|x| x == v)),
            Label::Exists(key) => label(key).is_some(),
            Label::Missing(key) => label(key).is_none(),
        });

        labels_match
            && self
                .fields
                .iter()
                .all(|field| (field_value(object, &field.path) == field.value) == field.equal)
    }
}

/// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
fn parse_labels(selector: &str) -> Result<Vec<Label>, ApiError> {
    let invalid = || ApiError::bad_request(format!("unable to parse labelSelector {selector:?}"));
    let mut requirements = Vec::new();

    for term in split_top_level(selector) {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }

        let requirement = if let Some(key) = term.strip_prefix('!') {
            Label::Missing(key.trim().to_string())
        } else if let Some((key, values)) = term.split_once(" notin ") {
            Label::NotIn(
                key.trim().to_string(),
                parse_set(values).ok_or_else(invalid)?,
            )
        } else if let Some((key, values)) = term.split_once(" in ") {
            Label::In(
                key.trim().to_string(),
                parse_set(values).ok_or_else(invalid)?,
            )
        } else if let Some((key, value)) = term.split_once("!=") {
            Label::NotEquals(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            Label::Equals(key.trim().to_string(), value.trim().to_string())
        } else if term.contains(['(', ')', ' ', '<', '>']) {
            return Err(invalid());
        } else {
            Label::Exists(term.to_string())
        };
        requirements.push(requirement);
    }

    Ok(requirements)
}

/// Splits at commas that are not inside a `( … )` value set.
fn split_top_level(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;

    for (index, character) in selector.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }

    terms.push(&selector[start..]);
    terms
}

fn parse_set(values: &str) -> Option<Vec<String>> {
    let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|value| value.trim().to_string())
            .collect(),
    )
}

/// Parses `metadata.name=a,status.phase!=Running`; any dotted path into the object works.
fn parse_fields(selector: &str) -> Result<Vec<Field>, ApiError> {
    let mut fields = Vec::new();

    for term in selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
    {
        let (path, value, equal) = if let Some((path, value)) = term.split_once("!=") {
            (path, value, false)
        } else if let Some((path, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (path, value, true)
        } else {
            let message = format!("invalid fieldSelector term {term:?}");
            return Err(ApiError::bad_request(message));
        };

        let path = path.trim().to_string();
        fields.push(Field {
            path,
            value: value.trim().to_string(),
            equal,
        });
    }

    Ok(fields)
}

/// The value at a dotted path as a field selector sees it; absent fields read as "".
fn field_value(object: &Value, path: &str) -> String {
    let value = path.split('.').fold(object, |value, key| &value[key]);
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
