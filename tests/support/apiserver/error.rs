//! Failures answered as `Status` objects, the way kube-apiserver reports them.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

/// A request the double refuses, turned into a `Status` body in one place.
#[derive(Debug)]
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            code,
            reason,
            message,
        }
    }

    pub fn not_found(plural: &str, name: &str) -> Self {
        let message = format!("{plural} \"{name}\" not found");
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn no_route() -> Self {
        let message = "the server could not find the requested resource";
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn already_exists(plural: &str, name: &str) -> Self {
        let message = format!("{plural} \"{name}\" already exists");
        Self::new(StatusCode::CONFLICT, "AlreadyExists", message)
    }

    pub fn conflict(plural: &str, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {plural} \"{name}\": the object has been \
             modified; please apply your changes to the latest version and try again"
        );
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }

    pub fn gone(revision: u64) -> Self {
        let message = format!("too old resource version: {revision}");
        Self::new(StatusCode::GONE, "Expired", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        let message = format!("the body of the request was in an unknown format: {content_type}");
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        )
    }

    pub fn method_not_allowed(method: &str) -> Self {
        let message = format!("the server does not allow this method ({method}) here");
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub fn unavailable() -> Self {
        let message = "the API server double is set down";
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// The `Status` object, also sent inside a watch `ERROR` event.
    pub fn status(&self) -> serde_json::Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, Json(self.status())).into_response()
    }
}
