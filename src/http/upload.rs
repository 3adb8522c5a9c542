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
use serde_json::{json, Value};

use super::access::Caller;
use super::{ApiError, AppState};
use crate::domain::LectureId;
use crate::ingest::FORM_OVERHEAD;
use crate::lectures::NewLecture;
use crate::queue::EnqueueOptions;

pub async fn upload(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, HeaderMap, Json<Value>), ApiError> {
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
    if declared.is_some_and(|len| len > app.ingest.max_bytes + FORM_OVERHEAD) {
        return Err(ApiError::PayloadTooLarge(format!(
            "upload is larger than the limit of {} bytes",
            app.ingest.max_bytes
        )));
    }
    app.ingest.check_disk(declared.unwrap_or(0))?;

    // The rest runs on its own task: dropping this request (the client hung
    // up) must not cancel a commit halfway. Reading stops by itself when the
    // body does, and a spooled file that no lecture owns deletes itself.
    let commit = tokio::spawn(async move {
        let _slot = slot;
        let upload = app.ingest.receive(body.into_data_stream(), &boundary).await?;
        let id = LectureId::new();
        let source = app.ingest.uploads_dir.join(format!("{id}.{}", upload.media.demuxer));
        let file = upload.file.move_to(source.clone()).await?;
        let new = NewLecture {
            id: id.clone(),
            course_id: upload.course_id,
            name_of_topic: upload.name_of_topic,
            source_path: source,
            original_filename: upload.original_filename,
        };
        let options = EnqueueOptions {
            priority: upload.priority,
            delay: std::time::Duration::ZERO,
            max_attempts: app.max_attempts,
        };
        app.lectures.create_with_job(new, &options, app.queue.as_ref()).await?;
        // Committed: the lecture owns the file now.
        file.keep();
        app.wake.notify_one();
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
        Json(json!({
            "message": "Video uploaded; processing is queued",
            "lectureId": id.as_str(),
            "jobId": id.as_str(),
            "processingStatus": "pending",
            "queuePosition": position,
        })),
    ))
}
