//! One error type for every handler of the shop. It answers
//! `{"error": {"code", "message"}}` with the right status; details of internal failures are
//! logged server-side and never sent to the client.

use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hale_core::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Refused for a reason other than a missing scope, with a machine-readable code
    /// (`epoch_not_authorized`, `admin_only`, ...).
    #[error("{message}")]
    Denied { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    /// A conflict with a machine-readable code (`out_of_stock`, `fenced`, ...).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Unprocessable(String),
    #[error("request body is larger than the {limit_bytes}-byte limit")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    GatewayTimeout(String),
    /// Something broke inside: the message is logged, the client sees a generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AppError::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::Denied { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            AppError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::Forbidden(_) => "insufficient_scope",
            AppError::Denied { code, .. } => code,
            AppError::NotFound(_) => "not_found",
            AppError::Conflict { code, .. } => code,
            AppError::Unprocessable(_) => "unprocessable",
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::Unavailable(_) => "unavailable",
            AppError::BadGateway(_) => "bad_gateway",
            AppError::GatewayTimeout(_) => "gateway_timeout",
            AppError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; the details are in the service log".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (status, axum::Json(ErrorBody::new(self.code(), message))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The useful part of a deserializer's message: the field path and what is wrong with it
/// (`items[0]: missing field `quantity``), without the extractor's preamble or the
/// position in the text, which tell a client about our parser and nothing about its
/// request. The whole text goes to the log.
pub fn client_message(detail: &str) -> String {
    tracing::debug!(detail, "request refused by a parser");
    let mut text = detail;
    for preamble in [
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to parse the request body as JSON: ",
        "Failed to deserialize query string: ",
        "Failed to deserialize form body: ",
        "Failed to deserialize form: ",
    ] {
        text = text.strip_prefix(preamble).unwrap_or(text);
    }
    if let Some(at) = text.rfind(" at line ") {
        text = &text[..at];
    }
    let mut short: String = text.chars().take(160).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match &rejection {
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                AppError::PayloadTooLarge { limit_bytes: super::BODY_LIMIT_BYTES }
            }
            JsonRejection::MissingJsonContentType(_) => {
                AppError::BadRequest("expected a JSON body with `Content-Type: application/json`".into())
            }
            // Valid JSON of the wrong shape: which field, and what is wrong with it.
            JsonRejection::JsonDataError(_) => {
                AppError::BadRequest(format!("invalid JSON body: {}", client_message(&rejection.body_text())))
            }
            _ => {
                tracing::debug!(detail = %rejection.body_text(), "request body is not JSON");
                AppError::BadRequest("invalid JSON body: it does not parse as JSON".into())
            }
        }
    }
}

impl From<FormRejection> for AppError {
    fn from(rejection: FormRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit_bytes: super::BODY_LIMIT_BYTES },
            _ => AppError::BadRequest(format!("malformed form body: {}", client_message(&rejection.body_text()))),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::BadRequest(format!("bad query string: {}", client_message(&rejection.body_text())))
    }
}

/// `axum::Json`, but a bad body answers with our JSON error instead of plain text.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` with our JSON error.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);
