//! Job and queue endpoints: the job list and details, retry, cancel,
//! pause/resume, retry every failed job, clean old records. Jobs are shown
//! as `status::JobView`, the one job shape.

use std::time::Duration;

use axum::extract::{Extension, Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::Caller;
use super::json::JsonObject;
use super::{ApiError, AppState, STOP_WAIT};
use crate::domain::{JobState, LectureId};
use crate::keys::Scope;
use crate::lectures::{JobChange, RetriedFailed};
use crate::queue::JobRecord;
use crate::status::{Audience, JobView};
use crate::transcode::chunks::ChildJob;

fn view(job: &JobRecord, caller: &Caller) -> JobView {
    JobView::new(job, if caller.scope == Scope::Admin { Audience::Admin } else { Audience::Client })
}

/// Why a cancel or retry was refused, as an HTTP error.
fn refused(change: JobChange, raw: &str, rule: &str) -> ApiError {
    match change {
        JobChange::NotFound => ApiError::NotFound(format!("no job with id `{raw}`")),
        JobChange::NotNow(state) => ApiError::Conflict(format!("job is {state}; {rule}")),
        JobChange::SourceGone => ApiError::Conflict(
            "the uploaded source is no longer kept (VIDPIPE_SOURCE_RETENTION); upload the video again".into(),
        ),
        JobChange::Done => ApiError::Internal("a change that was made reported as refused".into()),
    }
}

/// A lecture's job: the one a client retries or cancels. A chunk's job is
/// driven by its lecture's.
fn parse_job_id(raw: &str) -> Result<LectureId, ApiError> {
    if let Some(lecture) = chunk_job_parent(raw) {
        return Err(ApiError::NotFound(format!(
            "`{raw}` is a chunk of lecture `{lecture}`; retry or cancel the lecture's job `{lecture}`"
        )));
    }
    raw.parse().map_err(|_| ApiError::NotFound(format!("no job with id `{raw}`")))
}

/// The lecture of a chunk job's id (`<lecture>.c0003-of-0010x60s`,
/// `<lecture>.audio`), if `raw` is one.
fn chunk_job_parent(raw: &str) -> Option<LectureId> {
    raw.parse::<ChildJob>().ok()?.lecture.parse().ok()
}

/// Any job's id: a lecture's or a chunk's.
fn parse_any_job_id(raw: &str) -> Option<&str> {
    (raw.parse::<LectureId>().is_ok() || chunk_job_parent(raw).is_some()).then_some(raw)
}

async fn load(app: &AppState, raw: &str) -> Result<JobRecord, ApiError> {
    let not_found = || ApiError::NotFound(format!("no job with id `{raw}`"));
    let id = parse_any_job_id(raw).ok_or_else(not_found)?;
    app.queue.get(id).await?.ok_or_else(not_found)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state; every state if absent.
    state: Option<JobState>,
    /// The `nextCursor` of the previous page.
    #[param(pattern = "^[0-9a-f]{32}(\\.(audio|c[0-9]{4}-of-[0-9]{4}x[0-9]+s))?$")]
    cursor: Option<String>,
    /// Jobs per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    pub limit: u32,
    /// Jobs in the state asked for (in every state without `state`), now.
    pub total: u64,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/jobs?state=failed&limit=20&cursor=...`: jobs newest first,
/// paged by a keyset cursor, so pages do not shift while jobs run.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPage), (status = 400, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("`limit` is 1 to 100".into()));
    }
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            parse_any_job_id(c).ok_or_else(|| {
                ApiError::BadRequest(format!("`cursor` `{c}` is not a cursor this API gave; start without one"))
            })
        })
        .transpose()?;
    let jobs = app.queue.page(q.state, cursor, limit).await?;
    let counts = app.queue.counts().await?;
    let total = match q.state {
        Some(JobState::Waiting) => counts.waiting,
        Some(JobState::Active) => counts.active,
        Some(JobState::Delayed) => counts.delayed,
        Some(JobState::Completed) => counts.completed,
        Some(JobState::Failed) => counts.failed,
        Some(JobState::Cancelled) => counts.cancelled,
        None => counts.waiting + counts.active + counts.delayed + counts.completed + counts.failed + counts.cancelled,
    };
    let next_cursor = if jobs.len() == limit as usize { jobs.last().map(|j| j.id.clone()) } else { None };
    Ok(Json(JobPage { jobs: jobs.iter().map(|j| view(j, &caller)).collect(), limit, total, next_cursor }))
}

/// `GET /api/jobs/{id}`: one job, every attempt's error included.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 200, body = JobView), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(view(&load(&app, &raw).await?, &caller)))
}

/// `POST /api/jobs/{id}/retry`: a failed or cancelled job runs again with a
/// fresh set of attempts.
#[utoipa::path(post, path = "/api/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 200, body = JobView), (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "The job is not failed or cancelled, or its source is gone", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&raw)?;
    match app.lectures.retry(&id).await? {
        JobChange::Done => app.wake.notify_one(),
        change => return Err(refused(change, &raw, "only failed or cancelled jobs can be retried")),
    }
    Ok(Json(view(&load(&app, &raw).await?, &caller)))
}

/// `POST /api/jobs/{id}/cancel`: stops a waiting, delayed or running job;
/// its lecture becomes `failed` with the error `cancelled`.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 200, body = JobView), (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "The job has already ended", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&raw)?;
    match app.lectures.cancel(id.as_str()).await? {
        JobChange::Done => {
            app.running.stop(id.as_str(), STOP_WAIT).await;
        }
        change => return Err(refused(change, &raw, "it has already ended")),
    }
    Ok(Json(view(&load(&app, &raw).await?, &caller)))
}

/// Whether workers may claim jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePaused {
    pub paused: bool,
}

/// `POST /api/queue/pause`: workers claim nothing new; running jobs finish.
#[utoipa::path(post, path = "/api/queue/pause", tag = "jobs", responses((status = 200, body = QueuePaused)),
    security(("bearer" = [])))]
pub async fn pause(State(app): State<AppState>) -> Result<Json<QueuePaused>, ApiError> {
    app.queue.set_paused(true).await?;
    Ok(Json(QueuePaused { paused: true }))
}

/// `POST /api/queue/resume`.
#[utoipa::path(post, path = "/api/queue/resume", tag = "jobs", responses((status = 200, body = QueuePaused)),
    security(("bearer" = [])))]
pub async fn resume(State(app): State<AppState>) -> Result<Json<QueuePaused>, ApiError> {
    app.queue.set_paused(false).await?;
    app.wake.notify_one();
    Ok(Json(QueuePaused { paused: false }))
}

/// `POST /api/queue/retry-failed`: every failed job runs again, as
/// `POST /api/jobs/{id}/retry` does one (Bull Board's "retry all").
#[utoipa::path(post, path = "/api/queue/retry-failed", tag = "jobs", responses((status = 200, body = RetriedFailed)),
    security(("bearer" = [])))]
pub async fn retry_failed(State(app): State<AppState>) -> Result<Json<RetriedFailed>, ApiError> {
    let done = app.lectures.retry_failed().await?;
    if !done.retried.is_empty() {
        app.wake.notify_one();
    }
    Ok(Json(done))
}

/// Which finished job records `POST /api/queue/clean` removes. The
/// lectures stay, with their outcome; only the queue's records go.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CleanRequest {
    /// Completed jobs that ended more than this many seconds ago (default 86400, a day).
    #[schema(minimum = 0, maximum = 315_360_000)]
    #[serde(default, deserialize_with = "super::direct::whole_number")]
    completed_older_than: Option<i64>,
    /// Failed and cancelled jobs that ended more than this many seconds ago (default 604800, a week).
    #[schema(minimum = 0, maximum = 315_360_000)]
    #[serde(default, deserialize_with = "super::direct::whole_number")]
    failed_older_than: Option<i64>,
}

/// How many job records `POST /api/queue/clean` removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct CleanedCounts {
    pub completed: usize,
    /// Failed and cancelled ones.
    pub failed: usize,
}

/// `POST /api/queue/clean`: removes old finished job records, as the
/// scheduled cleanup and `vidpipe queue clean` do (Bull Board's "clean").
#[utoipa::path(post, path = "/api/queue/clean", tag = "jobs", request_body = CleanRequest,
    responses((status = 200, body = CleanedCounts), (status = 400, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn clean(
    State(app): State<AppState>,
    JsonObject(request): JsonObject<CleanRequest>,
) -> Result<Json<CleanedCounts>, ApiError> {
    let age = |seconds: Option<i64>, default: u64, name: &str| match seconds {
        None => Ok(Duration::from_secs(default)),
        Some(n) if (0..=MAX_AGE).contains(&n) => Ok(Duration::from_secs(n as u64)),
        Some(_) => Err(ApiError::BadRequest(format!("`{name}` is a number of seconds from 0 to {MAX_AGE}"))),
    };
    let completed = age(request.completed_older_than, 86_400, "completedOlderThan")?;
    let failed = age(request.failed_older_than, 7 * 86_400, "failedOlderThan")?;
    let cleaned = crate::housekeeping::clean_jobs(app.queue.as_ref(), &app.lectures, completed, failed)
        .await
        .map_err(ApiError::Internal)?;
    tracing::info!(completed = cleaned.completed.len(), failed = cleaned.failed.len(), "job records cleaned");
    Ok(Json(CleanedCounts { completed: cleaned.completed.len(), failed: cleaned.failed.len() }))
}

/// Ten years: an age past this is a mistake, not a policy (the schema's
/// `maximum` above says the same number).
const MAX_AGE: i64 = 10 * 365 * 86_400;
