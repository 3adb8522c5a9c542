//! `POST /api/upload`: receive, probe, then create the lecture and its job in
//! one transaction, and answer 202 at once. Transcoding happens later.
//!
//! Before a byte of the body is read, the caller is counted against the
//! upload rate, takes one of the upload slots, and the disk is checked for
//! room. Receiving, probing and committing run on a task of their own: a
//! client that hangs up after sending its video cannot cancel the commit
//! halfway and lose a file the lecture already owns, and one that hangs up
//! mid-body ends the body stream, so the spooled file is removed.

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::access::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::domain::LectureId;
use crate::ingest::direct::Grant;
use crate::ingest::FORM_OVERHEAD;

/// The upload form, at most 10 parts. The server reads other text fields
/// (bounded) and ignores them, as the API we replace did, but they are not
/// part of the contract.
#[derive(ToSchema)]
#[allow(dead_code)] // Only documents the form: the intake parses it as a stream.
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadForm {
    /// The video. Its container and codecs are checked by ffprobe, not by its
    /// name or type.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    uploaded_file: Vec<u8>,
    #[schema(min_length = 1, max_length = 500)]
    course_id: String,
    #[schema(min_length = 1, max_length = 500)]
    name_of_topic: String,
    /// Lower runs first: a whole number from -1000 to 1000 (default 0).
    #[schema(value_type = String, required = false, pattern = "^-?(1000|[0-9]{1,3})$")]
    priority: Option<i64>,
    /// Captions for the video: WebVTT or SRT, UTF-8, at most 1 MiB. Needs
    /// `captionsLanguage`. Subtitle streams inside the video become
    /// captions too; this file wins for its language.
    #[schema(value_type = String, format = Binary, content_media_type = "text/vtt", required = false)]
    captions: Option<Vec<u8>>,
    /// The captions' language: a BCP 47 tag whose language is an ISO 639
    /// code (`en`, `pt-BR`).
    #[schema(required = false, max_length = 35, pattern = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}$")]
    captions_language: Option<String>,
    /// Seconds from the start of the frame to use as the thumbnail; by
    /// default the first frame from 10% of the duration on that is not
    /// black, blank or in a transition. Past the end of the video: 400.
    #[schema(value_type = String, required = false, pattern = "^[0-9]+(\\.[0-9]+)?$")]
    thumbnail_time: Option<f64>,
}

/// What an accepted upload answers (202).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadAccepted {
    /// `Video uploaded; processing is queued`.
    pub message: &'static str,
    pub lecture_id: String,
    /// The lecture's id: a lecture has one job.
    pub job_id: String,
    /// Always `pending`.
    pub processing_status: crate::domain::ProcessingStatus,
    /// Runnable jobs ahead of this one; 0 if a worker already took it.
    pub queue_position: u64,
}

/// `POST /api/upload`: a lecture from a video. Answers 202 at once, with a
/// `Location` header naming the lecture; transcoding happens later.
#[utoipa::path(post, path = "/api/upload", tag = "lectures",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = UploadAccepted, headers(("Location" = String, description = "`/api/lectures/{lectureId}`"))),
        (status = 400, description = "A field is missing or invalid", body = ErrorBody),
        (status = 408, description = "The body paused too long", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit, or captions over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not a video vidpipe takes", body = ErrorBody),
        (status = 422, description = "A video that cannot be decoded, or captions that are not valid WebVTT or SRT", body = ErrorBody),
        (status = 429, description = "Too many uploads from this caller; see Retry-After", body = ErrorBody),
        (status = 503, description = "All upload or probe slots are busy; see Retry-After", body = ErrorBody),
        (status = 507, description = "The server is low on disk space", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, HeaderMap, Json<UploadAccepted>), ApiError> {
    accept(app, caller, headers, body, None).await
}

/// A plain upload, or, through a direct upload's `grant`, one whose fields
/// and id the grant fixed. The grant is claimed only when the file has
/// passed every check, so a refused file leaves the URL usable.
pub(super) async fn accept(
    app: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
    grant: Option<Grant>,
) -> Result<(StatusCode, HeaderMap, Json<UploadAccepted>), ApiError> {
    let max_bytes = grant.as_ref().map_or(app.ingest.max_bytes, |g| g.max_bytes.min(app.ingest.max_bytes));
    let slot = match app.uploads.admit(&caller.identity()) {
        Ok(slot) => slot,
        Err(refusal) => {
            super::discard_body(body).await;
            return Err(refusal);
        }
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::BadRequest("send the upload as multipart/form-data (`curl -F uploadedFile=@video.mp4 ...`)".into())
    })?;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes + FORM_OVERHEAD) {
        super::discard_body(body).await;
        return Err(ApiError::PayloadTooLarge(format!("upload is larger than the limit of {max_bytes} bytes")));
    }
    app.ingest.check_disk(declared.unwrap_or(0))?;

    // The rest runs on its own task: dropping this request (the client hung
    // up) must not cancel a commit halfway. Reading stops by itself when the
    // body does, and a spooled file that no lecture owns deletes itself.
    let commit = tokio::spawn(async move {
        let _slot = slot;
        let upload = app.ingest.receive(body.into_data_stream(), &boundary, grant.as_ref()).await?;
        let id = grant.as_ref().map_or_else(LectureId::new, |g| g.id.clone());
        if grant.is_some() && !app.direct_uploads.claim(&id).await? {
            return Err(super::direct::spent());
        }
        let source = app.ingest.uploads_dir.join(format!("{id}.{}", upload.media.demuxer));
        let created = match upload.file.move_to(source.clone()).await {
            Ok(file) => {
                super::create_lecture(&app, &id, source, &upload.fields, upload.captions.as_ref()).await.map(|()| file)
            }
            Err(e) => Err(e.into()),
        };
        let file = match created {
            Ok(file) => file,
            Err(e) => {
                if grant.is_some() {
                    app.direct_uploads.unclaim(&id).await?;
                }
                return Err(e);
            }
        };
        // Committed: the lecture owns the file now.
        file.keep();
        // Jobs ahead of this one; 0 if a worker already took it. Best effort:
        // the lecture exists now, and a 500 would make clients upload it twice.
        let position = app.queue.position(id.as_str()).await.ok().flatten().unwrap_or(0);
        tracing::info!(lecture = %id, caller = %caller.identity(), "upload accepted");
        Ok::<_, ApiError>((id, position))
    });
    let (id, position) = commit.await.map_err(|e| ApiError::Internal(format!("upload commit task: {e}")))??;

    let mut response_headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/lectures/{id}")) {
        response_headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::ACCEPTED,
        response_headers,
        Json(UploadAccepted {
            message: "Video uploaded; processing is queued",
            lecture_id: id.to_string(),
            job_id: id.to_string(),
            processing_status: crate::domain::ProcessingStatus::Pending,
            queue_position: position,
        }),
    ))
}
