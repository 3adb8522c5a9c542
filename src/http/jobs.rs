//! Job and queue endpoints: job details, retry, cancel, pause/resume, health.

use axum::extract::{Extension, Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::access::Caller;
use super::lectures::parse_id;
use super::{ApiError, AppState, STOP_WAIT};
use crate::domain::rfc3339;
use crate::keys::Scope;
use crate::queue::JobRecord;
use crate::redact::for_clients;

/// A job as the API shows it. Error texts are redacted for clients (see
/// `redact`); which worker ran it (a host name) only admins see.
fn job_json(job: &JobRecord, caller: &Caller) -> Value {
    let admin = caller.scope == Scope::Admin;
    let errors: Vec<Value> = job
        .errors
        .iter()
        .map(|e| {
            json!({
                "attempt": e.attempt,
                "error": for_clients(&e.error),
                "at": e.at,
                "worker": if admin { e.worker.clone() } else { None },
            })
        })
        .collect();
    json!({
        "id": job.id,
        "state": job.state.as_str(),
        "priority": job.priority,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "progress": job.progress,
        "worker": if admin { job.worker_id.clone() } else { None },
        "lastError": job.last_error.as_deref().map(for_clients),
        "errors": errors,
        "runAt": rfc3339(job.run_at),
        "leaseUntil": job.lease_until.map(rfc3339),
        "createdAt": rfc3339(job.created_at),
        "updatedAt": rfc3339(job.updated_at),
        "startedAt": job.started_at.map(rfc3339),
        "finishedAt": job.finished_at.map(rfc3339),
    })
}

async fn load(app: &AppState, raw: &str) -> Result<JobRecord, ApiError> {
    let id = parse_id(raw)?;
    app.queue.get(id.as_str()).await?.ok_or_else(|| ApiError::NotFound(format!("no job with id `{raw}`")))
}

#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    state: String,
    page: Option<u32>,
    limit: Option<u32>,
}

/// `GET /api/jobs?state=failed&page=1&limit=20`: jobs in one state.
pub async fn list(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(q) = query?;
    let state: crate::domain::JobState =
        q.state.parse().map_err(|e: crate::domain::InvalidValue| ApiError::BadRequest(e.0))?;
    let (page, limit) = (q.page.unwrap_or(1), q.limit.unwrap_or(20));
    if page == 0 || !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("`page` starts at 1 and `limit` is 1 to 100".into()));
    }
    let jobs = app.queue.list(state, limit, (page as u64 - 1) * limit as u64).await?;
    let counts = app.queue.counts().await?;
    let total = match state {
        crate::domain::JobState::Waiting => counts.waiting,
        crate::domain::JobState::Active => counts.active,
        crate::domain::JobState::Delayed => counts.delayed,
        crate::domain::JobState::Completed => counts.completed,
        crate::domain::JobState::Failed => counts.failed,
        crate::domain::JobState::Cancelled => counts.cancelled,
    };
    Ok(Json(
        json!({ "jobs": jobs.iter().map(|j| job_json(j, &caller)).collect::<Vec<_>>(), "page": page, "limit": limit, "total": total }),
    ))
}

pub async fn get(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&load(&app, &raw).await?, &caller)))
}

pub async fn retry(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = load(&app, &raw).await?;
    if let Some(lecture) = app.lectures.get(&parse_id(&raw)?).await? {
        if !tokio::fs::try_exists(&lecture.source_path).await.unwrap_or(false) {
            return Err(ApiError::Conflict(
                "the uploaded source is no longer kept (VIDPIPE_SOURCE_RETENTION); upload the video again".into(),
            ));
        }
    }
    if !app.queue.retry(&job.id).await? {
        return Err(ApiError::Conflict(format!("job is {}; only failed or cancelled jobs can be retried", job.state)));
    }
    app.lectures.set_failed(&job.id, None).await?;
    app.wake.notify_one();
    Ok(Json(job_json(&load(&app, &raw).await?, &caller)))
}

pub async fn cancel(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = load(&app, &raw).await?;
    if !app.queue.cancel(&job.id).await? {
        return Err(ApiError::Conflict(format!("job is already {}", job.state)));
    }
    // Kept on the lecture, so a lost job record does not bring it back.
    app.lectures.record_failure(&job.id, "cancelled", true).await?;
    app.running.stop(&job.id, STOP_WAIT).await;
    Ok(Json(job_json(&load(&app, &raw).await?, &caller)))
}

pub async fn pause(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.queue.set_paused(true).await?;
    Ok(Json(json!({ "paused": true })))
}

pub async fn resume(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.queue.set_paused(false).await?;
    app.wake.notify_one();
    Ok(Json(json!({ "paused": false })))
}
