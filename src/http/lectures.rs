//! `GET /api/lectures/{id}`, `GET /api/lectures?courseId=`, `DELETE /api/lectures/{id}`.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{ApiError, AppState, STOP_WAIT};
use crate::domain::LectureId;
use crate::status::LectureDocument;

pub fn parse_id(raw: &str) -> Result<LectureId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(format!("no lecture with id `{raw}`")))
}

/// `GET /api/lectures/{id}`: the lecture document.
#[utoipa::path(get, path = "/api/lectures/{id}", tag = "lectures", params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 200, body = LectureDocument), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Json<LectureDocument>, ApiError> {
    let id = parse_id(&raw)?;
    let lecture =
        app.lectures.get(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no lecture with id `{raw}`")))?;
    let job = app.queue.get(id.as_str()).await?;
    Ok(Json(LectureDocument::new(lecture, job.as_ref(), app.storage.as_ref())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this course's lectures.
    course_id: Option<String>,
    /// From 1 (default 1).
    #[param(minimum = 1, maximum = 4294967295_u32)]
    page: Option<u32>,
    /// Lectures per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of lectures, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LecturePage {
    pub lectures: Vec<LectureDocument>,
    pub page: u32,
    pub limit: u32,
    /// Lectures that match, on every page.
    pub total: u64,
}

/// What a delete answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LectureDeleted {
    /// `Lecture deleted`.
    pub message: &'static str,
    pub lecture_id: String,
}

const MAX_PAGE_SIZE: u32 = 100;

/// `GET /api/lectures?courseId=&page=&limit=`: lectures, newest first.
#[utoipa::path(get, path = "/api/lectures", tag = "lectures", params(ListQuery),
    responses((status = 200, body = LecturePage), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<LecturePage>, ApiError> {
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
    Ok(Json(LecturePage { lectures: docs, page, limit, total }))
}

/// `DELETE /api/lectures/{id}`: stops a running transcode first, then
/// removes the records, the source and every published file.
#[utoipa::path(delete, path = "/api/lectures/{id}", tag = "lectures", params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 200, body = LectureDeleted), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Json<LectureDeleted>, ApiError> {
    let id = parse_id(&raw)?;
    let lecture =
        app.lectures.get(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no lecture with id `{raw}`")))?;
    // A job running in this process is stopped right now, before its files
    // are removed; one elsewhere stops at its next heartbeat.
    let stop_here = app.running.stop(id.as_str(), STOP_WAIT);
    app.lectures.remove(&lecture, app.storage.as_ref(), stop_here).await?;
    Ok(Json(LectureDeleted { message: "Lecture deleted", lecture_id: id.to_string() }))
}
