//! The API's one error type: every failure becomes a status code and a JSON
//! body `{"error": code, "message": text}` a person can act on. Internal
//! details are logged, never sent.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::captions::{CaptionError, CaptionStoreError, CueError};
use crate::ingest::IngestError;
use crate::lectures::LectureStoreError;
use crate::queue::QueueError;
use crate::redact::for_clients;

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `not_found`, `conflict`, `gone`,
    /// `payload_too_large`, `unsupported_media_type`, `unprocessable_video`,
    /// `unauthorized`, `forbidden`, `request_timeout`, `precondition_failed`, `too_many_requests`,
    /// `busy`, `insufficient_storage` or `internal`.
    pub error: &'static str,
    /// What went wrong, in words a person can act on.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Existed, and is over for good (an expired upload URL).
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    UnprocessableVideo(String),
    /// A caption file that is not valid WebVTT or SRT.
    #[error("{0}")]
    InvalidCaptions(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    PreconditionFailed(String),
    /// Too many requests from this caller; try again after `retry_after`.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: Duration },
    /// The server is at a limit that frees itself; try again after `retry_after`.
    #[error("{message}")]
    Busy { message: String, retry_after: Duration },
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::UnprocessableVideo(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_video"),
            ApiError::InvalidCaptions(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_captions"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::InsufficientStorage(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
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
        let mut response = (status, Json(ErrorBody { error: code, message })).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after, .. } | ApiError::Busy { retry_after, .. } => {
                // Whole seconds, rounded up: `Retry-After: 0` would invite a busy loop.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            // The body was not read to its end: the connection cannot carry
            // another request.
            ApiError::RequestTimeout(_) | ApiError::PayloadTooLarge(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::MissingField(_) | IngestError::InvalidField(_) | IngestError::Malformed(_) => {
                ApiError::BadRequest(e.to_string())
            }
            IngestError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            IngestError::Stalled(_) => ApiError::RequestTimeout(e.to_string()),
            IngestError::DiskFull => ApiError::InsufficientStorage(e.to_string()),
            IngestError::ProbesBusy(retry_after) => ApiError::Busy { message: e.to_string(), retry_after },
            // ffprobe's own words can name our paths and heap addresses.
            IngestError::Rejected(ref probe) if probe.is_unsupported_media_type() => {
                ApiError::UnsupportedMediaType(for_clients(&e.to_string()))
            }
            IngestError::Rejected(ref probe) if probe.is_input_error() => {
                ApiError::UnprocessableVideo(for_clients(&e.to_string()))
            }
            IngestError::Captions(e) => e.into(),
            IngestError::Rejected(_) | IngestError::Io(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<CaptionError> for ApiError {
    fn from(e: CaptionError) -> Self {
        match e {
            CaptionError::Language(_) => ApiError::BadRequest(e.to_string()),
            CaptionError::Cues(CueError::TooLarge) => ApiError::PayloadTooLarge(e.to_string()),
            CaptionError::Cues(_) => ApiError::InvalidCaptions(e.to_string()),
        }
    }
}

impl From<CaptionStoreError> for ApiError {
    fn from(e: CaptionStoreError) -> Self {
        match e {
            CaptionStoreError::TooMany => ApiError::Conflict(e.to_string()),
            CaptionStoreError::LectureGone => ApiError::NotFound(e.to_string()),
            CaptionStoreError::Db(_) => ApiError::Internal(e.to_string()),
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
