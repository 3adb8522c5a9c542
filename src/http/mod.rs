//! The HTTP API, in the routes and field names of the system we replace.
//!
//! Handlers are thin: they parse, call the stage that does the work, and map
//! errors through [`ApiError`]. `http/` never spawns ffmpeg except through
//! ffprobe at upload, and never writes job state except through the queue.

pub mod access;
mod captions;
mod direct;
pub mod error;
mod events;
mod jobs;
mod json;
mod lectures;
pub mod limits;
mod media;
pub mod openapi;
pub mod ops;
mod pages;
mod playback;
pub mod server;
mod upload;
mod uploads;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn_with_state, map_response};
use axum::routing::{get, head, options, patch, post};
use axum::Router;

pub use error::ApiError;

use crate::ingest::Ingest;
use crate::keys::{ApiKeys, Scope};
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
    /// Served at `/media` when storage is the local disk; `None` otherwise.
    pub media_root: Option<PathBuf>,
    pub keys: ApiKeys,
    pub access: Arc<access::AccessPolicy>,
    pub uploads: limits::UploadLimits,
    /// Resumable (tus) uploads in progress.
    pub partial_uploads: crate::ingest::resumable::PartialUploads,
    /// One-time upload URLs for browsers.
    pub direct_uploads: crate::ingest::direct::DirectUploads,
    /// New events, for server-sent event streams.
    pub feed: crate::events::EventFeed,
    pub presence: crate::worker::presence::Presence,
}

/// How long a delete waits for a running job's ffmpeg to stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Every route, grouped by who may call it (see `access`).
pub fn router(state: AppState) -> Router {
    let keyed = |scope: Scope| from_fn_with_state((state.clone(), scope), access::authorize);
    // Players cannot send keys: playback and the liveness probe are public.
    let public = Router::new()
        .route("/api/lectures/{id}/master.m3u8", get(playback::master))
        .route("/api/lectures/{id}/thumbnail.jpg", get(playback::thumbnail))
        .route("/api/lectures/{id}/storyboard.jpg", get(playback::storyboard_image))
        .route("/api/lectures/{id}/storyboard.vtt", get(playback::storyboard))
        .route("/api/lectures/{id}/viewing", get(playback::viewing))
        .route("/api/lectures/{id}/{rendition}/index.m3u8", get(playback::media))
        .route("/api/health", get(ops::liveness))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/uploads", options(uploads::options).layer(map_response(uploads::tus_headers)));
    let uploaders = Router::new()
        // The intake bounds the body itself (size, structure, pauses).
        .route("/api/upload", post(upload::upload).layer(DefaultBodyLimit::disable()))
        // tus: the store bounds each body by the upload's length.
        .route(
            "/api/uploads",
            post(uploads::create).layer(DefaultBodyLimit::disable()).layer(map_response(uploads::tus_headers)),
        )
        .route("/api/uploads/{id}", head(uploads::head).layer(map_response(uploads::tus_headers)))
        .route(
            "/api/uploads/{id}",
            patch(uploads::patch).layer(DefaultBodyLimit::disable()).layer(map_response(uploads::tus_headers)),
        )
        .route("/api/uploads/{id}", axum::routing::delete(uploads::terminate).layer(map_response(uploads::tus_headers)))
        .route("/api/direct-uploads", post(direct::create))
        .route("/api/direct-uploads/{id}", get(direct::get))
        .route("/api/lectures", get(lectures::list))
        .route("/api/lectures/{id}", get(lectures::get))
        .route("/api/jobs", get(jobs::list))
        .route("/api/jobs/{id}", get(jobs::get))
        .route("/api/health/queue", get(ops::health))
        .route("/api/metrics", get(ops::api_metrics))
        .route("/api/lectures/{id}/events", get(events::lecture))
        .route("/api/lectures/{id}/captions", post(captions::put).layer(DefaultBodyLimit::max(captions::BODY_LIMIT)))
        .route_layer(keyed(Scope::Upload));
    // A browser with a one-time URL: the URL is its credential.
    let browsers = Router::new()
        .route("/api/direct-uploads/{id}/{secret}", post(direct::start).layer(DefaultBodyLimit::disable()))
        .route("/api/direct-uploads/{id}/{secret}", head(direct::head))
        .route("/api/direct-uploads/{id}/{secret}", patch(direct::patch).layer(DefaultBodyLimit::disable()))
        .route("/api/direct-uploads/{id}/{secret}", axum::routing::delete(direct::terminate))
        .route_layer(from_fn_with_state(state.clone(), direct::keyless_uploader));
    let admins = Router::new()
        .route("/api/lectures/{id}", axum::routing::delete(lectures::delete))
        .route("/api/jobs/{id}/retry", post(jobs::retry))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/queue/pause", post(jobs::pause))
        .route("/api/queue/resume", post(jobs::resume))
        .route("/api/queue/retry-failed", post(jobs::retry_failed))
        .route("/api/queue/clean", post(jobs::clean))
        .route("/api/events", get(events::all))
        .route("/metrics", get(ops::prometheus))
        .route_layer(keyed(Scope::Admin));
    let mut api =
        public.merge(uploaders).merge(browsers).merge(admins).merge(pages::routes()).with_state(state.clone());
    if let Some(cors) = state.access.cors() {
        api = api.layer(cors);
    }
    if let Some(root) = state.media_root.clone() {
        api = api.merge(media::routes(root));
    }
    api.layer(axum::middleware::from_fn(ops::track))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(from_fn_with_state(state, access::check_host_and_origin))
        .layer(map_response(security_headers))
}

/// Makes the lecture of a received, probed upload (plain or resumable) and
/// its job, and wakes a worker in this process.
async fn create_lecture(
    app: &AppState,
    id: &crate::domain::LectureId,
    source: PathBuf,
    fields: &crate::ingest::resumable::UploadFields,
    captions: Option<&crate::captions::Captions>,
) -> Result<(), ApiError> {
    let new = crate::lectures::NewLecture {
        id: id.clone(),
        course_id: fields.course_id.clone(),
        name_of_topic: fields.name_of_topic.clone(),
        source_path: source,
        original_filename: fields.filename.clone(),
        thumbnail_time: fields.thumbnail_time,
        captions: captions.cloned(),
    };
    let options = crate::queue::EnqueueOptions {
        priority: fields.priority,
        delay: Duration::ZERO,
        max_attempts: app.max_attempts,
    };
    app.lectures.create_with_job(new, &options).await?;
    app.wake.notify_one();
    Ok(())
}

/// Reads and drops the start of a request body we refuse without reading:
/// a client still sending it would otherwise get a connection reset (our
/// close with its unread bytes) instead of our answer. At most 1 MiB, for
/// at most a second: a large upload is cut off, as it must be.
pub(crate) async fn discard_body(body: axum::body::Body) {
    use futures::StreamExt;
    const MAX: usize = 1 << 20;
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut read = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > MAX {
                break;
            }
        }
    })
    .await;
}

/// Headers every answer carries: nothing here is meant to be framed or
/// sniffed into another type.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
