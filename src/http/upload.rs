//! `POST /api/upload`: receive, probe, then create the lecture and its job in
//! one transaction, and answer 202 at once. Transcoding happens later.

use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::domain::LectureId;
use crate::lectures::NewLecture;
use crate::queue::EnqueueOptions;

/// Room for the multipart framing and text fields around the file.
const FORM_OVERHEAD: u64 = 1 << 20;

pub async fn upload(
    State(app): State<AppState>,
    headers: HeaderMap,
    form: Multipart,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > app.ingest.max_bytes + FORM_OVERHEAD) {
        return Err(ApiError::PayloadTooLarge(format!(
            "upload is larger than the limit of {} bytes",
            app.ingest.max_bytes
        )));
    }
    let upload = app.ingest.receive(form).await?;

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
    let options =
        EnqueueOptions { priority: upload.priority, delay: std::time::Duration::ZERO, max_attempts: app.max_attempts };
    app.lectures.create_with_job(new, &options, app.queue.as_ref()).await?;
    // Committed: the lecture owns the file now.
    file.keep();
    app.wake.notify_one();

    // Jobs ahead of this one; 0 if a worker already took it. Best effort:
    // the lecture exists now, and a 500 would make clients upload it twice.
    let position = app.queue.position(id.as_str()).await.ok().flatten().unwrap_or(0);
    tracing::info!(lecture = %id, "upload accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "message": "Video uploaded; processing is queued",
            "lectureId": id.as_str(),
            "jobId": id.as_str(),
            "processingStatus": "pending",
            "queuePosition": position,
        })),
    ))
}
