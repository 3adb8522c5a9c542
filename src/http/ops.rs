//! What operators and their tools read: liveness, the queue's health, the
//! seed's JSON metrics, the Prometheus exposition, and the middleware that
//! counts every HTTP request by route template.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::alerts::{self, Alert, AlertState};
use crate::domain::{now_ms, JobState};

/// Completed jobs `avgProcessingTime` is averaged over.
const PERFORMANCE_JOBS: u32 = 100;

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    pub status: &'static str,
}

/// `GET /api/health`: the process is up. Keyless, so it tells nothing else.
#[utoipa::path(get, path = "/api/health", tag = "operations", responses((status = 200, body = Liveness)))]
pub async fn liveness() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// The queue's health, in the seed's shape plus counts, workers and alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueHealth {
    /// `healthy`, or `unhealthy` while an alert fires.
    pub status: &'static str,
    pub queue: QueueCounts,
    pub worker: WorkerSummary,
    /// The alerts firing now.
    pub alerts: Vec<AlertState>,
}

/// Jobs per state, and whether the queue is paused.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueCounts {
    pub waiting: u64,
    pub active: u64,
    pub failed: u64,
    pub delayed: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub paused: bool,
}

/// The live workers, whichever process they run in.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerSummary {
    /// Jobs the live workers may run at once, together.
    pub concurrency: u64,
    /// `processing` while any runs a job, `idle` otherwise.
    pub status: &'static str,
    /// Workers heard from lately.
    pub live: usize,
}

/// The seed's error shape for the health route: `{"status": "error", "message"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthError {
    pub status: &'static str,
    pub message: &'static str,
}

/// `GET /api/health/queue`, in the seed's shape: `healthy`, or `unhealthy`
/// with 503 while an alert fires. Workers are counted from their own
/// heartbeats, whichever process they run in.
#[utoipa::path(get, path = "/api/health/queue", tag = "operations",
    responses((status = 200, description = "No alert fires", body = QueueHealth),
        (status = 503, description = "An alert fires", body = QueueHealth),
        (status = 500, description = "The queue or the database cannot be read", body = HealthError)),
    security(("bearer" = [])))]
pub async fn health(State(app): State<AppState>) -> Response {
    match queue_health(&app).await {
        Ok(response) => response,
        // The seed's shape for this route's errors.
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            let body = HealthError { status: "error", message: "the queue or the database cannot be read" };
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
    }
}

async fn queue_health(app: &AppState) -> Result<Response, ApiError> {
    let counts = app.queue.counts().await?;
    let paused = app.queue.is_paused().await?;
    let workers = app.presence.live().await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let firing: Vec<_> = alerts::states(app.lectures.events().database())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .into_iter()
        .filter(|a| a.firing)
        .collect();
    let healthy = firing.is_empty();
    let busy = workers.iter().any(|w| w.active > 0);
    let body = QueueHealth {
        status: if healthy { "healthy" } else { "unhealthy" },
        queue: QueueCounts {
            waiting: counts.waiting,
            active: counts.active,
            failed: counts.failed,
            delayed: counts.delayed,
            completed: counts.completed,
            cancelled: counts.cancelled,
            paused,
        },
        worker: WorkerSummary {
            concurrency: workers.iter().map(|w| w.concurrency).sum::<u64>(),
            status: if busy { "processing" } else { "idle" },
            live: workers.len(),
        },
        alerts: firing,
    };
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(body)).into_response())
}

/// The seed's JSON metrics.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedMetrics {
    pub queue: SeedCounts,
    pub performance: Performance,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeedCounts {
    pub waiting: u64,
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Performance {
    /// Seconds with one decimal and an `s`: `12.3s`.
    #[schema(pattern = "^[0-9]+\\.[0-9]s$")]
    pub avg_processing_time: String,
    /// `<n> jobs/hour`.
    #[schema(pattern = "^[0-9]+ jobs/hour$")]
    pub throughput: String,
    /// What the two figures are measured over.
    pub window: String,
}

/// `GET /api/metrics`, the seed's JSON: counts per state, and performance
/// over the last 100 completed jobs and the last hour.
#[utoipa::path(get, path = "/api/metrics", tag = "operations", responses((status = 200, body = SeedMetrics)),
    security(("bearer" = [])))]
pub async fn api_metrics(State(app): State<AppState>) -> Result<Json<SeedMetrics>, ApiError> {
    let counts = app.queue.counts().await?;
    let recent = app.queue.list(JobState::Completed, PERFORMANCE_JOBS, 0).await?;
    let took: Vec<f64> =
        recent.iter().filter_map(|j| Some((j.finished_at? - j.started_at?).max(0) as f64 / 1000.0)).collect();
    let average = if took.is_empty() { 0.0 } else { took.iter().sum::<f64>() / took.len() as f64 };
    let hour_ago = now_ms() - 3_600_000;
    let last_hour = app
        .lectures
        .events()
        .count_since(crate::events::EventKind::Completed, hour_ago)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(SeedMetrics {
        queue: SeedCounts {
            waiting: counts.waiting,
            active: counts.active,
            completed: counts.completed,
            failed: counts.failed,
        },
        performance: Performance {
            avg_processing_time: format!("{average:.1}s"),
            throughput: format!("{last_hour} jobs/hour"),
            window: format!(
                "avgProcessingTime: the last {PERFORMANCE_JOBS} completed jobs ({} here); throughput: the last hour",
                took.len()
            ),
        },
    }))
}

/// `GET /metrics`: Prometheus text. Queue-wide gauges are read now.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition 0.0.4", content_type = "text/plain", body = String)),
    security(("bearer" = [])))]
pub async fn prometheus(State(app): State<AppState>) -> Result<Response, ApiError> {
    refresh_gauges(&app).await?;
    let text = crate::metrics::render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn refresh_gauges(app: &AppState) -> Result<(), ApiError> {
    let counts = app.queue.counts().await?;
    for (state, n) in [
        (JobState::Waiting, counts.waiting),
        (JobState::Active, counts.active),
        (JobState::Delayed, counts.delayed),
        (JobState::Completed, counts.completed),
        (JobState::Failed, counts.failed),
        (JobState::Cancelled, counts.cancelled),
    ] {
        crate::metrics::jobs_in_state(state.as_str(), n);
    }
    let states =
        alerts::states(app.lectures.events().database()).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    for alert in Alert::ALL {
        let firing = states.iter().any(|s| s.alert == alert.name() && s.firing);
        crate::metrics::alert_firing(alert.name(), firing);
    }
    Ok(())
}

/// Counts and times every request under its route template.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    // A fixed set: any other method would mint a new series.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    crate::metrics::http_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// A router serving only `/metrics`, keyless, for `VIDPIPE_METRICS_LISTEN`.
pub fn metrics_only(state: AppState) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(prometheus)).with_state(state)
}
