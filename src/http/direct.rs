//! Direct uploads: a backend with a key asks for a one-time upload URL
//! (`POST /api/direct-uploads`) and hands it to a browser, which uploads
//! to it without any key, with tus or with a plain multipart POST.
//!
//! The URL is `/api/direct-uploads/{id}/{secret}`: `id` is the lecture the
//! upload becomes, known to the backend from the start; the secret makes
//! the URL the credential. It serves one file, with the fields the backend
//! fixed, up to the size it allowed, and starts nothing after it expires.
//! Behind the URL run the very code paths of `POST /api/upload` and the tus
//! endpoint (`http/upload.rs`, `http/uploads.rs`), with the same limits.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{Admission, Caller};
use super::error::ErrorBody;
use super::json::JsonObject;
use super::uploads::{self, NewUpload};
use super::{ApiError, AppState};
use crate::domain::LectureId;
use crate::ingest::check_fields;
use crate::ingest::direct::{DirectUploadError, Grant};
use crate::keys::Scope;

/// How long a URL is valid by default, and at most.
const DEFAULT_VALID_FOR: u64 = 3600;
const MAX_VALID_FOR: u64 = 7 * 24 * 3600;

/// What the backend fixes for the upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectUploadRequest {
    #[schema(min_length = 1, max_length = 500)]
    course_id: String,
    #[schema(min_length = 1, max_length = 500)]
    name_of_topic: String,
    /// Kept as the lecture's original file name; the browser's file name otherwise.
    #[schema(max_length = 255)]
    filename: Option<String>,
    /// Lower runs first, -1000 to 1000 (default 0).
    #[schema(minimum = -1000, maximum = 1000)]
    #[serde(default, deserialize_with = "whole_number")]
    priority: Option<i64>,
    /// Where to take the thumbnail, in seconds from the start; by default
    /// the first frame from 10% of the duration on that is not black,
    /// blank or in a transition.
    #[schema(minimum = 0)]
    thumbnail_time: Option<f64>,
    /// The largest file the URL takes; at most, and by default, the server's upload limit.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_number")]
    max_bytes: Option<i64>,
    /// Seconds until the URL starts no more uploads: 60 to 604800 (default 3600).
    #[schema(minimum = 60, maximum = 604800)]
    #[serde(default, deserialize_with = "whole_number")]
    expires_in: Option<i64>,
}

/// JSON's integers, as JSON Schema counts them (`1839.0` is one too);
/// those past `i64` saturate, and are then refused as out of range.
pub(super) fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(n) if n.fract() == 0.0 => Ok(Some(n as i64)),
        Some(n) => Err(serde::de::Error::custom(format!("{n} is not a whole number"))),
    }
}

/// A direct upload, as its backend sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectUpload {
    /// The id of the lecture the upload becomes: `/api/lectures/{lectureId}`
    /// answers 404 until the file has arrived and passed its checks.
    pub lecture_id: String,
    /// The one-time URL, for the browser, as a path on the API's address
    /// (the backend knows it; behind a proxy only the backend knows the
    /// public one): a tus endpoint, or a plain `multipart/form-data` POST
    /// with one `uploadedFile`. Shown only in the answer that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `waiting` (no upload yet), `uploading` (a tus upload is under way),
    /// `uploaded` (the lecture exists), or `expired`.
    pub status: &'static str,
    /// Bytes received so far by a tus upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_bytes: Option<u64>,
    pub max_bytes: u64,
    /// When the URL starts no more uploads (RFC 3339).
    pub expires_at: String,
}

/// `POST /api/direct-uploads`: a one-time upload URL for a browser.
#[utoipa::path(post, path = "/api/direct-uploads", tag = "uploads",
    request_body = DirectUploadRequest,
    responses(
        (status = 201, body = DirectUpload, headers(("Location" = String, description = "`/api/direct-uploads/{lectureId}`"))),
        (status = 400, description = "A field is missing or invalid, or `maxBytes` is over the server's upload limit", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonObject(request): JsonObject<DirectUploadRequest>,
) -> Result<Response, ApiError> {
    let fields = check_fields(
        Some(request.course_id),
        Some(request.name_of_topic),
        request.filename,
        request.priority.map(|p| p.to_string()),
        request.thumbnail_time.map(|t| t.to_string()),
    )?;
    let limit = app.ingest.max_bytes;
    let max_bytes = match request.max_bytes.map(|n| u64::try_from(n).unwrap_or(0)) {
        None => limit,
        Some(0) => return Err(ApiError::BadRequest("`maxBytes` must be at least 1".into())),
        Some(n) if n > limit => {
            return Err(ApiError::BadRequest(format!("`maxBytes` is over the server's upload limit of {limit} bytes")))
        }
        Some(n) => n,
    };
    let valid_for = request.expires_in.map_or(DEFAULT_VALID_FOR, |n| u64::try_from(n).unwrap_or(0));
    if !(60..=MAX_VALID_FOR).contains(&valid_for) {
        return Err(ApiError::BadRequest(format!("`expiresIn` must be from 60 to {MAX_VALID_FOR} seconds")));
    }
    let (grant, secret) =
        app.direct_uploads.create(fields, max_bytes, Duration::from_secs(valid_for), caller.key.clone()).await?;
    tracing::info!(lecture = %grant.id, caller = %caller.identity(), "direct upload URL made");
    let url = format!("/api/direct-uploads/{}/{secret}", grant.id);
    let mut document = document(&app, &grant).await?;
    document.url = Some(url);
    let location = HeaderValue::from_str(&format!("/api/direct-uploads/{}", grant.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(document)).into_response())
}

/// `GET /api/direct-uploads/{id}`: where a direct upload is.
#[utoipa::path(get, path = "/api/direct-uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "The `lectureId` it was made with")),
    responses((status = 200, body = DirectUpload), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<DirectUpload>, ApiError> {
    let gone = || ApiError::NotFound(format!("no direct upload `{raw}` (unknown, another key's, or long expired)"));
    let id: LectureId = raw.parse().map_err(|_| gone())?;
    let grant = app.direct_uploads.get(&id).await?.ok_or_else(gone)?;
    // Another key's upload is none of this caller's business.
    if caller.key.is_some() && grant.created_by != caller.key {
        return Err(gone());
    }
    Ok(Json(document(&app, &grant).await?))
}

async fn document(app: &AppState, grant: &Grant) -> Result<DirectUpload, ApiError> {
    let (status, received_bytes) = if app.lectures.get(&grant.id).await?.is_some() {
        ("uploaded", None)
    } else if let Some(upload) = app.partial_uploads.get(&grant.id).await? {
        ("uploading", Some(upload.received))
    } else if grant.used_at.is_none() && !grant.is_expired() {
        ("waiting", None)
    } else {
        ("expired", None)
    };
    let expires_at = std::time::UNIX_EPOCH + Duration::from_millis(grant.expires_at.max(0) as u64);
    Ok(DirectUpload {
        lecture_id: grant.id.to_string(),
        url: None,
        status,
        received_bytes,
        max_bytes: grant.max_bytes,
        expires_at: humantime::format_rfc3339_seconds(expires_at).to_string(),
    })
}

/// The browser's side holds no key: it is an uploader by the URL alone,
/// counted against the upload limits by its address.
pub async fn keyless_uploader(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let address = app.access.client_address(&request);
    request.extensions_mut().insert(Caller {
        key: None,
        scope: Scope::Upload,
        address,
        admission: Admission::UploadUrl,
    });
    next.run(request).await
}

/// The grant of a URL; unknown and wrong secrets look the same.
async fn grant_of(app: &AppState, raw: &str, secret: &str) -> Result<Grant, ApiError> {
    let unknown = || ApiError::NotFound("no such upload URL: ask the site for a new one".into());
    let id: LectureId = raw.parse().map_err(|_| unknown())?;
    app.direct_uploads.open(&id, secret).await?.ok_or_else(unknown)
}

/// The answer to a second upload at a URL that served one.
pub(super) fn spent() -> ApiError {
    ApiError::Conflict("this upload URL was used for another upload: ask the site for a new one".into())
}

fn expired() -> ApiError {
    ApiError::Gone("this upload URL has expired: ask the site for a new one".into())
}

/// Whoever holds a URL may continue its upload, and no one else.
fn owner(grant: &Grant) -> String {
    format!("direct:{}", grant.id)
}

/// `POST` to the URL: a tus creation (with `Tus-Resumable`), else a plain
/// multipart upload.
#[utoipa::path(post, path = "/api/direct-uploads/{id}/{secret}", tag = "uploads",
    params(("id" = String, Path), ("secret" = String, Path)),
    request_body(content = super::upload::UploadForm, content_type = "multipart/form-data",
        description = "One `uploadedFile`; other fields are ignored (the URL fixed them). With `Tus-Resumable`: a tus creation, as `POST /api/uploads`, whose `Upload-Metadata` is ignored"),
    responses(
        (status = 201, description = "tus: created; `Location` is this URL"),
        (status = 202, body = super::upload::UploadAccepted, description = "Plain: accepted, as `POST /api/upload`"),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Not a URL vidpipe made", body = ErrorBody),
        (status = 409, description = "The URL already served an upload", body = ErrorBody),
        (status = 410, description = "The URL expired", body = ErrorBody),
        (status = 413, description = "Larger than the URL allows", body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn start(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((raw, secret)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let grant = match usable(&app, &raw, &secret).await {
        Ok(grant) => grant,
        Err(e) => {
            super::discard_body(body).await;
            return Err(e);
        }
    };
    if !headers.contains_key("tus-resumable") {
        return Ok(super::upload::accept(app, caller, headers, body, Some(grant)).await?.into_response());
    }
    let tus = async {
        uploads::check_version(&headers)?;
        let length = uploads::upload_length(&headers, grant.max_bytes.min(app.ingest.max_bytes))?;
        if !app.direct_uploads.claim(&grant.id).await? {
            return Err(spent());
        }
        let metadata = headers.get("upload-metadata").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let new =
            NewUpload { id: grant.id.clone(), owner: owner(&grant), length, metadata, fields: grant.fields.clone() };
        let location = format!("/api/direct-uploads/{}/{secret}", grant.id);
        let begun = uploads::begin(&app, &caller, new, &location, &headers, body).await;
        // Nothing was kept (refused, or the whole file was not a video):
        // the URL may serve another try.
        if begun.is_err() && app.partial_uploads.get(&grant.id).await?.is_none() {
            app.direct_uploads.unclaim(&grant.id).await?;
        }
        begun
    };
    Ok(uploads::tus_headers(tus.await.into_response()).await)
}

/// The grant of a URL that can start an upload.
async fn usable(app: &AppState, raw: &str, secret: &str) -> Result<Grant, ApiError> {
    let grant = grant_of(app, raw, secret).await?;
    if grant.used_at.is_some() {
        return Err(spent());
    }
    if grant.is_expired() {
        return Err(expired());
    }
    Ok(grant)
}

/// The tus upload a URL started.
async fn started(app: &AppState, raw: &str, secret: &str) -> Result<crate::ingest::resumable::PartialUpload, ApiError> {
    let grant = grant_of(app, raw, secret).await?;
    let upload = app.partial_uploads.get(&grant.id).await?;
    upload.filter(|u| u.owner == owner(&grant)).ok_or_else(|| {
        ApiError::NotFound("no tus upload under way at this URL (not started, finished long ago, or expired)".into())
    })
}

/// `HEAD` at the URL: tus, as `HEAD /api/uploads/{id}`.
#[utoipa::path(head, path = "/api/direct-uploads/{id}/{secret}", tag = "uploads",
    params(("id" = String, Path), ("secret" = String, Path), uploads::TusResumable),
    responses((status = 200, description = "As `HEAD /api/uploads/{id}`"), (status = 404), (status = 412)))]
pub async fn head(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((raw, secret)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let described = async {
        uploads::check_version(&headers)?;
        let upload = started(&app, &raw, &secret).await?;
        uploads::describe(&app, &caller, upload).await
    };
    uploads::tus_headers(described.await.into_response()).await
}

/// `PATCH` at the URL: tus, as `PATCH /api/uploads/{id}`.
#[utoipa::path(patch, path = "/api/direct-uploads/{id}/{secret}", tag = "uploads",
    params(("id" = String, Path), ("secret" = String, Path), uploads::TusResumable,
        ("Upload-Offset" = u64, Header, description = "Where these bytes go")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses((status = 204, description = "As `PATCH /api/uploads/{id}`"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 408, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn patch(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((raw, secret)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ready = async { Ok::<_, ApiError>((uploads::patch_offset(&headers)?, started(&app, &raw, &secret).await?)) };
    let appended = match ready.await {
        Ok((offset, upload)) => uploads::append(&app, &caller, upload, offset, body).await,
        Err(e) => {
            super::discard_body(body).await;
            Err(e)
        }
    };
    uploads::tus_headers(appended.into_response()).await
}

/// `DELETE` at the URL: stops its tus upload. The URL stays used.
#[utoipa::path(delete, path = "/api/direct-uploads/{id}/{secret}", tag = "uploads",
    params(("id" = String, Path), ("secret" = String, Path), uploads::TusResumable),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 412, body = ErrorBody)))]
pub async fn terminate(
    State(app): State<AppState>,
    Path((raw, secret)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let removed = async {
        uploads::check_version(&headers)?;
        let upload = started(&app, &raw, &secret).await?;
        uploads::remove(&app, upload).await
    };
    uploads::tus_headers(removed.await.into_response()).await
}

impl From<DirectUploadError> for ApiError {
    fn from(e: DirectUploadError) -> Self {
        ApiError::Internal(e.to_string())
    }
}
