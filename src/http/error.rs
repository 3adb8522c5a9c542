//! The API's one error type: every failure becomes a status code and a JSON
//! body `{"error": code, "message": text}` a person can act on. Internal
//! details are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::ingest::IngestError;
use crate::lectures::LectureStoreError;
use crate::queue::QueueError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    UnprocessableVideo(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::UnprocessableVideo(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_video"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; the server log has the details".to_string()
            }
            other => other.to_string(),
        };
        (status, Json(serde_json::json!({ "error": code, "message": message }))).into_response()
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::MissingField(_) | IngestError::InvalidField(_) | IngestError::Malformed(_) => {
                ApiError::BadRequest(e.to_string())
            }
            IngestError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            IngestError::Rejected(ref probe) if probe.is_unsupported_media_type() => {
                ApiError::UnsupportedMediaType(e.to_string())
            }
            IngestError::Rejected(ref probe) if probe.is_input_error() => ApiError::UnprocessableVideo(e.to_string()),
            IngestError::Rejected(_) | IngestError::Io(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<LectureStoreError> for ApiError {
    fn from(e: LectureStoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// Malformed query strings get the same JSON errors as everything else.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}
