//! `GET /api/lectures/{id}`, `GET /api/lectures?courseId=`, `DELETE /api/lectures/{id}`.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState, STOP_WAIT};
use crate::domain::LectureId;
use crate::lectures::remove_lecture;
use crate::status::LectureDocument;

pub fn parse_id(raw: &str) -> Result<LectureId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(format!("no lecture with id `{raw}`")))
}

pub async fn get(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Json<LectureDocument>, ApiError> {
    let id = parse_id(&raw)?;
    let lecture =
        app.lectures.get(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no lecture with id `{raw}`")))?;
    let job = app.queue.get(id.as_str()).await?;
    Ok(Json(LectureDocument::new(lecture, job.as_ref(), app.storage.as_ref())))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    course_id: Option<String>,
    page: Option<u32>,
    limit: Option<u32>,
}

const MAX_PAGE_SIZE: u32 = 100;

pub async fn list(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let page = q.page.unwrap_or(1);
    let limit = q.limit.unwrap_or(20);
    if page == 0 || limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(ApiError::BadRequest(format!("`page` starts at 1 and `limit` is 1 to {MAX_PAGE_SIZE}")));
    }
    let offset = (page as u64 - 1) * limit as u64;
    let (lectures, total) = app.lectures.list(q.course_id.as_deref(), limit, offset).await?;
    let ids: Vec<String> = lectures.iter().map(|l| l.id.to_string()).collect();
    let jobs: HashMap<String, _> = app.queue.get_many(&ids).await?.into_iter().map(|j| (j.id.clone(), j)).collect();
    let docs: Vec<LectureDocument> = lectures
        .into_iter()
        .map(|l| {
            let job = jobs.get(l.id.as_str());
            LectureDocument::new(l, job, app.storage.as_ref())
        })
        .collect();
    Ok(Json(json!({ "lectures": docs, "page": page, "limit": limit, "total": total })))
}

/// Stops a running transcode first, then removes the records, the source
/// and every published file.
pub async fn delete(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&raw)?;
    let lecture =
        app.lectures.get(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no lecture with id `{raw}`")))?;
    // A job running in this process is stopped right now, before its files
    // are removed; one elsewhere stops at its next heartbeat.
    app.queue.cancel(id.as_str()).await?;
    app.running.stop(id.as_str(), STOP_WAIT).await;
    remove_lecture(&app.lectures, app.queue.as_ref(), app.storage.as_ref(), &lecture).await?;
    Ok(Json(json!({ "message": "Lecture deleted", "lectureId": id.as_str() })))
}
