//! OAuth errors: exactly the codes of the RFCs, turned into a response in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error code of RFC 6749, 6750, 7591, 7009, 8707 or 9728, plus the few non-OAuth
/// answers this server gives (not found, unavailable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// RFC 6749 5.2 / 4.1.2.1.
    InvalidRequest,
    /// RFC 6749 5.2.
    InvalidClient,
    /// RFC 6749 5.2.
    InvalidGrant,
    /// RFC 6749 5.2.
    UnauthorizedClient,
    /// RFC 6749 5.2.
    UnsupportedGrantType,
    /// RFC 6749 4.1.2.1.
    UnsupportedResponseType,
    /// RFC 6749 5.2.
    InvalidScope,
    /// RFC 8707 2.
    InvalidTarget,
    /// RFC 6749 4.1.2.1.
    AccessDenied,
    /// RFC 6749 4.1.2.1.
    ServerError,
    /// RFC 6749 4.1.2.1.
    TemporarilyUnavailable,
    /// RFC 7591 3.2.2.
    InvalidRedirectUri,
    /// RFC 7591 3.2.2.
    InvalidClientMetadata,
    /// RFC 6750 3.1.
    InvalidToken,
    /// RFC 7009 2.2.1.
    UnsupportedTokenType,
    /// No such route or connector.
    NotFound,
    /// A browser origin that `/mcp` does not serve.
    InvalidOrigin,
    /// The MCP server could not be reached.
    BadGateway,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidOrigin | ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::BadGateway => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidOrigin => "invalid_origin",
            ErrorCode::BadGateway => "bad_gateway",
        }
    }
}

/// An error answer: a code, a description safe to show, and an optional challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    /// The RFC's code.
    pub code: ErrorCode,
    /// For people; never holds a secret, token or code.
    pub description: String,
    /// `WWW-Authenticate` to send with it.
    pub challenge: Option<String>,
    /// A status other than the code's usual one.
    pub status: Option<StatusCode>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl OAuthError {
    /// An error with a description.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
            challenge: None,
            status: None,
            retry_after: None,
        }
    }

    /// Adds a `WWW-Authenticate` challenge.
    pub fn with_challenge(mut self, challenge: String) -> OAuthError {
        self.challenge = Some(challenge);
        self
    }

    /// Answers with another status than the code's usual one.
    pub fn with_status(mut self, status: StatusCode) -> OAuthError {
        self.status = Some(status);
        self
    }

    /// Adds a `Retry-After` header.
    pub fn with_retry_after(mut self, seconds: u64) -> OAuthError {
        self.retry_after = Some(seconds);
        self
    }

    /// `invalid_request` with a description.
    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidRequest, description)
    }

    /// `invalid_client` with a description.
    pub fn invalid_client(description: impl Into<String>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidClient, description)
    }

    /// `invalid_grant` with a description.
    pub fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidGrant, description)
    }

    /// `server_error`, for faults of ours; the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> OAuthError {
        tracing::error!(error = %detail, "internal error");
        OAuthError::new(
            ErrorCode::ServerError,
            "the server could not complete the request",
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| self.code.status());
        let body = Body {
            error: self.code.as_str(),
            error_description: &self.description,
        };
        let mut response = (status, Json(body)).into_response();

        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
