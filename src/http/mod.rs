//! The HTTP API, in the routes and field names of the system we replace.
//!
//! Handlers are thin: they parse, call the stage that does the work, and map
//! errors through [`ApiError`]. `http/` never spawns ffmpeg except through
//! ffprobe at upload, and never writes job state except through the queue.

mod error;
mod jobs;
mod lectures;
mod media;
mod playback;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;

use crate::ingest::Ingest;
use crate::lectures::LectureStore;
use crate::publish::Storage;
use crate::queue::Queue;
use crate::worker::{RunningJobs, Wake};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub lectures: LectureStore,
    pub queue: Arc<dyn Queue>,
    pub storage: Arc<dyn Storage>,
    pub ingest: Arc<Ingest>,
    pub max_attempts: u32,
    /// Jobs running in this process (serve mode), stopped at once on delete.
    pub running: RunningJobs,
    pub wake: Wake,
    /// Concurrency of the worker in this process; `None` in `vidpipe api`.
    pub worker_concurrency: Option<usize>,
    /// Served at `/media` when storage is the local disk; `None` otherwise.
    pub media_root: Option<PathBuf>,
}

/// How long a delete waits for a running job's ffmpeg to stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    let media_root = state.media_root.clone();
    let api = Router::new()
        .route("/api/upload", post(upload::upload).layer(DefaultBodyLimit::disable()))
        .route("/api/lectures", get(lectures::list))
        .route("/api/lectures/{id}", get(lectures::get).delete(lectures::delete))
        .route("/api/jobs", get(jobs::list))
        .route("/api/lectures/{id}/master.m3u8", get(playback::master))
        .route("/api/lectures/{id}/thumbnail.jpg", get(playback::thumbnail))
        .route("/api/lectures/{id}/{rendition}/index.m3u8", get(playback::media))
        .route("/api/jobs/{id}", get(jobs::get))
        .route("/api/jobs/{id}/retry", post(jobs::retry))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/queue/pause", post(jobs::pause))
        .route("/api/queue/resume", post(jobs::resume))
        .route("/api/health", get(jobs::health))
        .route("/api/health/queue", get(jobs::health))
        .with_state(state);
    match media_root {
        Some(root) => api.merge(media::routes(root)),
        None => api,
    }
}
