//! Resumable uploads: tus 1.0 core with the creation,
//! creation-with-upload, termination and expiration extensions, so any tus
//! client (tus-js-client, Uppy, tusd's clients) works unchanged.
//!
//! `Upload-Metadata` carries the plain upload's form fields (`courseId`,
//! `nameOfTopic`, `filename`, `priority`), checked by the same rules. When
//! the last byte arrives the file is probed and becomes a lecture (with the
//! upload's id) and its job, as a plain upload would; the answer names it in
//! `Vidpipe-Lecture-Id`. The state lives in `ingest::resumable`, so an upload
//! survives a restart and continues on any API process.

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::access::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::domain::LectureId;
use crate::ingest::resumable::{PartialUpload, ResumableError, UploadFields};
use crate::ingest::{check_fields, IngestError};

pub const TUS_VERSION: &str = "1.0.0";
const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration";
const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// Names the lecture a finished upload became.
pub const LECTURE_ID_HEADER: &str = "vidpipe-lecture-id";

/// The header every tus request but `OPTIONS` carries.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Only documents the header: `check_version` reads it.
pub struct TusResumable {
    /// The protocol version: `1.0.0`; anything else gets 412.
    #[param(rename = "Tus-Resumable", pattern = "^1\\.0\\.0$")]
    tus_resumable: String,
}

/// Every tus answer says which protocol version it speaks, errors included;
/// a 412 also says which versions it would take (tus 1.0 core).
pub async fn tus_headers(mut response: Response) -> Response {
    let precondition_failed = response.status() == StatusCode::PRECONDITION_FAILED;
    let headers = response.headers_mut();
    headers.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    if precondition_failed {
        headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    }
    response
}

/// `OPTIONS /api/uploads`: what this server supports.
#[utoipa::path(options, path = "/api/uploads", tag = "uploads",
    responses((status = 204, description = "tus discovery: `Tus-Version`, `Tus-Extension`, `Tus-Max-Size`")))]
pub async fn options(State(app): State<AppState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    headers.insert("tus-max-size", HeaderValue::from(app.ingest.max_bytes));
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// Refuses a request that does not speak tus 1.0.0.
pub(super) fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        other => Err(ApiError::PreconditionFailed(format!(
            "this endpoint speaks tus {TUS_VERSION}; send `Tus-Resumable: {TUS_VERSION}` (got {})",
            other.map_or("none".to_string(), |v| format!("`{v}`"))
        ))),
    }
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest(format!("`{name}` must be a whole number of bytes")))
        })
        .transpose()
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs, each key
/// once (tus requires keys to be unique; two `courseId`s are ambiguous).
fn metadata(raw: &str) -> Result<Vec<(String, Option<String>)>, ApiError> {
    use base64::Engine;
    let mut pairs = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').map_or((pair, None), |(k, v)| (k, Some(v.trim())));
        let value = value
            .map(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!("`Upload-Metadata` `{key}` is not base64 of UTF-8 text"))
                    })
            })
            .transpose()?;
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(ApiError::BadRequest(format!("`Upload-Metadata` names `{key}` twice; send each key once")));
        }
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

fn owner(caller: &Caller) -> String {
    caller.key.clone().unwrap_or_else(|| "anyone".to_string())
}

fn http_date(ms: i64) -> HeaderValue {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    HeaderValue::from_str(&httpdate(t)).unwrap_or(HeaderValue::from_static(""))
}

/// RFC 9110's IMF-fixdate, which `Upload-Expires` uses.
fn httpdate(t: std::time::SystemTime) -> String {
    // humantime writes RFC 3339; the fixdate is built from its fields.
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let rfc3339 = humantime::format_rfc3339_seconds(t).to_string();
    let (year, month, day) = (&rfc3339[0..4], &rfc3339[5..7], &rfc3339[8..10]);
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        [month.parse::<usize>().unwrap_or(1).clamp(1, 12) - 1];
    format!("{weekday}, {day} {month} {year} {:02}:{:02}:{:02} GMT", rem / 3600, rem / 60 % 60, rem % 60)
}

/// The answer headers every request about an existing upload gets.
fn upload_headers(upload: &PartialUpload, offset: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("upload-offset", HeaderValue::from(offset));
    headers.insert("upload-expires", http_date(upload.expires_at));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(lecture) = upload.lecture_id.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        headers.insert(HeaderName::from_static(LECTURE_ID_HEADER), lecture);
    }
    headers
}

async fn find(app: &AppState, caller: &Caller, raw: &str) -> Result<PartialUpload, ApiError> {
    let gone = || ApiError::NotFound(format!("no upload `{raw}` (unknown, finished long ago, or expired)"));
    let id: LectureId = raw.parse().map_err(|_| gone())?;
    let upload = app.partial_uploads.get(&id).await?.ok_or_else(gone)?;
    // Another key's upload is none of this caller's business.
    if upload.owner != owner(caller) {
        return Err(gone());
    }
    Ok(upload)
}

/// `POST /api/uploads`: creates an upload (and with a body, appends it).
#[utoipa::path(post, path = "/api/uploads", tag = "uploads",
    params(
        TusResumable,
        ("Upload-Length" = u64, Header, description = "The file's size in bytes"),
        ("Upload-Metadata" = String, Header, description = "`courseId`, `nameOfTopic` (required), `filename`, `priority`, `thumbnailTime`: `key base64(value)` pairs, comma separated")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream", description = "Optional: the first bytes (creation-with-upload)"),
    responses(
        (status = 201, description = "Created; `Location` is the upload's URL, `Upload-Offset` what was received",
            headers(("Location" = String), ("Upload-Offset" = u64), ("Upload-Expires" = String))),
        (status = 400, description = "A header or field is missing or invalid", body = ErrorBody),
        (status = 412, description = "Not tus 1.0.0", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = ErrorBody),
        (status = 415, description = "The file is not a video vidpipe takes (when the whole file came with the request)", body = ErrorBody),
        (status = 429, description = "Too many uploads from this caller", body = ErrorBody),
        (status = 503, description = "All upload slots are busy", body = ErrorBody),
        (status = 507, description = "Low on disk space", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Err(e) = check_version(&headers) {
        super::discard_body(body).await;
        return Err(e);
    }
    let length = upload_length(&headers, app.ingest.max_bytes)?;
    let raw_metadata = headers.get("upload-metadata").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let pairs = metadata(&raw_metadata)?;
    let field = |name: &str| pairs.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.clone());
    let fields = check_fields(
        field("courseId"),
        field("nameOfTopic"),
        field("filename"),
        field("priority"),
        field("thumbnailTime"),
    )?;
    let new = NewUpload { id: LectureId::new(), owner: owner(&caller), length, metadata: raw_metadata, fields };
    let location = format!("/api/uploads/{}", new.id);
    begin(&app, &caller, new, &location, &headers, body).await
}

/// The size a tus creation announces: present, at least 1, at most `max`.
pub(super) fn upload_length(headers: &HeaderMap, max: u64) -> Result<u64, ApiError> {
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::BadRequest("`Upload-Defer-Length` is not supported: send `Upload-Length`".into()));
    }
    let length = number(headers, "upload-length")?
        .ok_or_else(|| ApiError::BadRequest("send the file's size in `Upload-Length`".into()))?;
    if length == 0 {
        return Err(ApiError::BadRequest("`Upload-Length` is 0: an empty file is not a video".into()));
    }
    if length > max {
        return Err(ApiError::PayloadTooLarge(format!("upload is larger than the limit of {max} bytes")));
    }
    Ok(length)
}

/// An upload about to be created.
pub(super) struct NewUpload {
    pub id: LectureId,
    /// Who may continue it (see [`PartialUpload::owner`]).
    pub owner: String,
    pub length: u64,
    /// `Upload-Metadata` as sent, to send back on `HEAD`.
    pub metadata: String,
    pub fields: UploadFields,
}

/// Creates the upload (and stores the first bytes if the request has
/// them); answers 201 with `location`, the URL the client continues at.
pub(super) async fn begin(
    app: &AppState,
    caller: &Caller,
    new: NewUpload,
    location: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let slot = app.uploads.admit(&caller.identity())?;
    app.ingest.check_disk(new.length)?;
    let upload = app.partial_uploads.create(&new.id, &new.owner, new.length, &new.metadata, new.fields).await?;
    tracing::info!(upload = %upload.id, length = new.length, caller = %caller.identity(), "resumable upload created");
    let has_body = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == OFFSET_CONTENT_TYPE.as_bytes());
    let upload = match has_body {
        false => upload,
        true => match write(app, caller, upload.clone(), 0, body, slot).await {
            // The first bytes paused too long: the upload keeps what came,
            // and the client gets its URL to resume at, not a bare 408.
            Err(ApiError::RequestTimeout(why)) => {
                tracing::info!(upload = %upload.id, %why, "first bytes cut short");
                app.partial_uploads.get(&upload.id).await?.unwrap_or(upload)
            }
            written => written?,
        },
    };
    let mut answer = upload_headers(&upload, upload.received);
    answer.insert(header::LOCATION, HeaderValue::from_str(location).map_err(|e| ApiError::Internal(e.to_string()))?);
    Ok((StatusCode::CREATED, answer).into_response())
}

/// `HEAD /api/uploads/{id}`: where to resume.
#[utoipa::path(head, path = "/api/uploads/{id}", tag = "uploads",
    params(("id" = String, Path), TusResumable),
    responses(
        (status = 200, description = "`Upload-Offset`, `Upload-Length`, `Upload-Metadata`; `Vidpipe-Lecture-Id` once it became a lecture"),
        (status = 404, description = "Unknown, another key's, or expired"),
        (status = 412, description = "Not tus 1.0.0")),
    security(("bearer" = [])))]
pub async fn head(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let upload = find(&app, &caller, &raw).await?;
    describe(&app, &caller, upload).await
}

/// `HEAD`'s answer: where the upload is, and its lecture once it has one.
pub(super) async fn describe(app: &AppState, caller: &Caller, upload: PartialUpload) -> Result<Response, ApiError> {
    // A finish interrupted by a crash is taken up again here.
    let upload = if upload.is_complete() && upload.lecture_id.is_none() {
        let lease = app.partial_uploads.hold(&upload.id).await?;
        let finished = finish(app, caller, upload).await;
        app.partial_uploads.release(lease).await?;
        finished?
    } else {
        upload
    };
    let mut answer = upload_headers(&upload, upload.received);
    answer.insert("upload-length", HeaderValue::from(upload.length));
    if let Ok(metadata) = HeaderValue::from_str(&upload.metadata) {
        answer.insert("upload-metadata", metadata);
    }
    Ok((StatusCode::OK, answer).into_response())
}

/// `PATCH /api/uploads/{id}`: appends bytes at `Upload-Offset`.
#[utoipa::path(patch, path = "/api/uploads/{id}", tag = "uploads",
    params(("id" = String, Path), TusResumable,
        ("Upload-Offset" = u64, Header, description = "Where these bytes go: the offset `HEAD` gave")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Appended; `Upload-Offset` is the new offset, and `Vidpipe-Lecture-Id` names the lecture once the last byte arrived",
            headers(("Upload-Offset" = u64), ("Vidpipe-Lecture-Id" = String))),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown, another key's, or expired", body = ErrorBody),
        (status = 408, description = "The body paused too long; what arrived is kept", body = ErrorBody),
        (status = 409, description = "`Upload-Offset` is not where the upload is, or another request is writing it", body = ErrorBody),
        (status = 412, body = ErrorBody),
        (status = 413, description = "More bytes than `Upload-Length`", body = ErrorBody),
        (status = 415, description = "Not `application/offset+octet-stream`; or, on the last bytes, not a video vidpipe takes", body = ErrorBody),
        (status = 422, description = "On the last bytes: a video that cannot be decoded", body = ErrorBody),
        (status = 503, body = ErrorBody),
        (status = 507, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn patch(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let offset = match patch_offset(&headers) {
        Ok(offset) => offset,
        Err(e) => {
            super::discard_body(body).await;
            return Err(e);
        }
    };
    let upload = find(&app, &caller, &raw).await?;
    append(&app, &caller, upload, offset, body).await
}

/// Where a `PATCH`'s bytes go, once its headers are checked.
pub(super) fn patch_offset(headers: &HeaderMap) -> Result<u64, ApiError> {
    {
        check_version(headers)?;
        if headers.get(header::CONTENT_TYPE).is_none_or(|v| v.as_bytes() != OFFSET_CONTENT_TYPE.as_bytes()) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send the bytes as `Content-Type: {OFFSET_CONTENT_TYPE}`"
            )));
        }
        number(headers, "upload-offset")?.ok_or_else(|| ApiError::BadRequest("send `Upload-Offset`".into()))
    }
}

/// `PATCH`'s work: appends at `offset`, and with the last byte, finishes.
pub(super) async fn append(
    app: &AppState,
    caller: &Caller,
    upload: PartialUpload,
    offset: u64,
    body: Body,
) -> Result<Response, ApiError> {
    let slot = app.uploads.slot()?;
    app.ingest.check_disk(upload.length - upload.received)?;
    let upload = write(app, caller, upload, offset, body, slot).await?;
    Ok((StatusCode::NO_CONTENT, upload_headers(&upload, upload.received)).into_response())
}

/// `DELETE /api/uploads/{id}`: stops an upload and removes its bytes. A
/// lecture it already became stays.
#[utoipa::path(delete, path = "/api/uploads/{id}", tag = "uploads",
    params(("id" = String, Path), TusResumable),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody),
        (status = 409, description = "A request is writing it", body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn terminate(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let upload = find(&app, &caller, &raw).await?;
    remove(&app, upload).await
}

/// `DELETE`'s work.
pub(super) async fn remove(app: &AppState, upload: PartialUpload) -> Result<Response, ApiError> {
    // Held, so no request is writing it while its bytes go; the lease goes
    // with the row.
    let _lease = app.partial_uploads.hold(&upload.id).await?;
    app.partial_uploads.remove(&upload.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Appends under the upload's lease, then, with the last byte, makes the
/// lecture. Runs on its own task, like a plain upload's commit: a client
/// that hangs up cannot stop a finish halfway.
async fn write(
    app: &AppState,
    caller: &Caller,
    upload: PartialUpload,
    offset: u64,
    body: Body,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<PartialUpload, ApiError> {
    let (app, caller) = (app.clone(), caller.clone());
    let task = tokio::spawn(async move {
        let _slot = slot;
        let upload_id = upload.id.clone();
        let uploads = &app.partial_uploads;
        let lease = uploads.hold(&upload.id).await?;
        let appended = uploads.append(&lease, offset, body.into_data_stream()).await;
        let result = match appended {
            Ok(received) if received == upload.length => {
                finish(&app, &caller, PartialUpload { received, ..upload }).await
            }
            Ok(received) => Ok(PartialUpload { received, ..upload }),
            Err(e) => Err(e.into()),
        };
        // The bytes and the answer stand; a lease left behind expires.
        if let Err(e) = uploads.release(lease).await {
            tracing::warn!(upload = %upload_id, error = %e, "upload lease not released");
        }
        result
    });
    task.await.map_err(|e| ApiError::Internal(format!("upload task: {e}")))?
}

/// The whole file is here: probe it and make the lecture (with the upload's
/// id) and its job. Idempotent: an existing lecture means it is done.
async fn finish(app: &AppState, caller: &Caller, upload: PartialUpload) -> Result<PartialUpload, ApiError> {
    let id = upload.id.clone();
    if app.lectures.get(&id).await?.is_none() {
        let partial = app.partial_uploads.path(&upload);
        let source = match moved_source(app, &id).await? {
            // A finish that crashed after moving the file: it was probed.
            Some(source) if !partial.exists() => source,
            _ => {
                let media = match app.ingest.probe(&partial).await {
                    Ok(media) => media,
                    Err(e) => {
                        // Not a video we take: nothing to resume; the bytes go.
                        // A probe that failed on our side (ffprobe missing or
                        // timed out) keeps them: `HEAD` finishes it later.
                        if matches!(&e, IngestError::Rejected(p) if p.is_input_error()) {
                            app.partial_uploads.remove(&id).await?;
                        }
                        return Err(e.into());
                    }
                };
                let source = app.ingest.uploads_dir.join(format!("{id}.{}", media.demuxer));
                tokio::fs::rename(&partial, &source).await?;
                source
            }
        };
        super::create_lecture(app, &id, source, &upload.fields, None).await?;
        tracing::info!(lecture = %id, caller = %caller.identity(), "resumable upload accepted");
    }
    app.partial_uploads.finished(&id).await?;
    Ok(PartialUpload { lecture_id: Some(id.to_string()), ..upload })
}

/// The source file a finished upload was moved to (`<uploads>/<id>.<demuxer>`).
async fn moved_source(app: &AppState, id: &LectureId) -> Result<Option<std::path::PathBuf>, ApiError> {
    let prefix = format!("{id}.");
    let Ok(mut entries) = tokio::fs::read_dir(&app.ingest.uploads_dir).await else { return Ok(None) };
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

impl From<ResumableError> for ApiError {
    fn from(e: ResumableError) -> Self {
        match e {
            ResumableError::WrongOffset { .. } | ResumableError::Busy => ApiError::Conflict(e.to_string()),
            ResumableError::TooLong(_) => ApiError::PayloadTooLarge(e.to_string()),
            ResumableError::Stalled(_) => ApiError::RequestTimeout(e.to_string()),
            ResumableError::Database(_) | ResumableError::Io(_) => ApiError::Internal(e.to_string()),
        }
    }
}
