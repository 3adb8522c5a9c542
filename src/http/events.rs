//! Server-sent events: `GET /api/lectures/{id}/events` (one lecture) and
//! `GET /api/events` (everything, admin).
//!
//! Each event carries its log `seq` as the SSE `id`, so a reconnecting
//! `EventSource` sends `Last-Event-ID` and resumes with the next event: the
//! backlog comes from the event log (kept for a day), then the stream
//! follows this process's [`EventFeed`], which tails the same log. The log
//! is written by whichever process made the change (a worker elsewhere), so
//! the stream sees every change wherever it happened.
//!
//! Without `Last-Event-ID`, a lecture stream opens with a `lecture.snapshot`
//! (the current document, no id) and then follows changes.
//!
//! A stream lasts as long as its client wants, so it is authorized again
//! every [`ADMISSION_RECHECK`]: revoking the key that opened it (or creating
//! the first key, for a stream opened while the API was open) ends it, and
//! the client's reconnection gets the 401 any new request would.
//!
//! [`EventFeed`]: crate::events::EventFeed

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Extension;
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use super::access::Caller;
use super::error::ErrorBody;
use super::lectures::parse_id;
use super::{ApiError, AppState};
use crate::events::{Event, EventKind};
use crate::status::LectureDocument;

/// Keep-alive comments keep proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an open stream checks that its caller would still be let in.
pub const ADMISSION_RECHECK: Duration = Duration::from_secs(5);
/// Backlog read per query when resuming.
const PAGE: u32 = 500;

/// The `data` of every event but the snapshot (which is the lecture
/// document itself). The SSE `event` field repeats `type`, and its `id` is `seq`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventMessage {
    /// The event's place in the log; resume after it with `Last-Event-ID`.
    pub seq: i64,
    /// `lecture.uploaded`, `lecture.processing`, `lecture.progress`,
    /// `lecture.playable`, `lecture.completed`, `lecture.failed`,
    /// `lecture.deleted`, `lecture.captions`, `alert.firing` or
    /// `alert.resolved`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub lecture_id: Option<String>,
    /// What changed; for `lecture.completed` and `lecture.failed` the whole
    /// lecture document.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// One server-sent event as it goes over the wire.
#[derive(ToSchema)]
#[allow(dead_code)] // Only documents the stream: `axum`'s `Event` writes it.
pub struct ServerSentEvent {
    /// `lecture.snapshot`, or the `type` of the `EventMessage` in `data`.
    event: String,
    /// The event's `seq`; the snapshot has none.
    #[schema(required = false)]
    id: Option<String>,
    /// JSON: the lecture document for `lecture.snapshot`, an `EventMessage` otherwise.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// The header a reconnecting `EventSource` sends.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Only documents the header: `last_event_id` reads it.
pub struct ResumeAfter {
    /// Resume after this event.
    #[param(rename = "Last-Event-ID", minimum = 0, nullable = false)]
    last_event_id: Option<i64>,
}

/// `GET /api/lectures/{id}/events`: one lecture's changes as server-sent
/// events, from a `lecture.snapshot` (or after `Last-Event-ID`).
#[utoipa::path(get, path = "/api/lectures/{id}/events", tag = "events",
    params(("id" = String, Path, description = "The lecture's id"),
        ResumeAfter),
    responses((status = 200, description = "A stream of `EventMessage`s, as `data:` lines", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 400, description = "`Last-Event-ID` is not an event id", body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lecture(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let id = parse_id(&raw)?;
    if app.lectures.get(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no lecture with id `{raw}`")));
    }
    let after = last_event_id(&headers)?;
    stream(app, caller, Some(id.to_string()), after).await
}

/// `GET /api/events`: every lecture's changes and the alerts, as server-sent
/// events.
#[utoipa::path(get, path = "/api/events", tag = "events",
    params(ResumeAfter),
    responses((status = 200, description = "A stream of `EventMessage`s, as `data:` lines", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 400, description = "`Last-Event-ID` is not an event id", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn all(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let after = last_event_id(&headers)?;
    stream(app, caller, None, after).await
}

/// The `Last-Event-ID` to resume after. `EventSource` sends back an id we
/// gave, so anything else is a client's mistake, said as such rather than
/// answered with a stream from an arbitrary point.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    match text.parse::<i64>() {
        Ok(seq) if seq >= 0 => Ok(Some(seq)),
        _ => Err(ApiError::BadRequest(format!(
            "`Last-Event-ID` `{}` is not the id of an event (a whole number); reconnect without it",
            text.chars().take(40).collect::<String>()
        ))),
    }
}

async fn document(app: &AppState, id: &str) -> Result<Option<serde_json::Value>, ApiError> {
    let Ok(lecture_id) = id.parse() else { return Ok(None) };
    let Some(lecture) = app.lectures.get(&lecture_id).await? else { return Ok(None) };
    let job = app.queue.get(id).await?;
    Ok(serde_json::to_value(LectureDocument::new(lecture, job.as_ref(), app.storage.as_ref())).ok())
}

async fn stream(
    app: AppState,
    caller: Caller,
    lecture: Option<String>,
    after: Option<i64>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Subscribe, then note where the log ends, then read the snapshot: an
    // event committed in between is in the snapshot or after `sent`.
    let mut live = app.feed.subscribe();
    let log = app.lectures.events().clone();
    let internal = |e: crate::events::EventError| ApiError::Internal(e.to_string());
    let mut sent = match after {
        Some(seq) => seq,
        None => log.last_seq().await.map_err(internal)?,
    };
    let snapshot = match (&lecture, after) {
        (Some(id), None) => document(&app, id).await?,
        _ => None,
    };
    let events = async_stream(move |tx| async move {
        if let Some(doc) = snapshot {
            if tx.send(SseEvent::default().event("lecture.snapshot").data(doc.to_string())).await.is_err() {
                return;
            }
        }
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + ADMISSION_RECHECK, ADMISSION_RECHECK);
        loop {
            // The backlog (on resume, or after falling behind the feed).
            loop {
                let Ok(page) = log.after(sent, lecture.as_deref(), PAGE).await else { return };
                let full = page.len() == PAGE as usize;
                for event in page {
                    sent = event.seq;
                    if tx.send(sse(&app, event).await).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            loop {
                // A client that left is noticed at once, not at the next event.
                let received = tokio::select! {
                    _ = tx.closed() => return,
                    _ = recheck.tick() => {
                        if !caller.still_admitted(&app).await {
                            return;
                        }
                        continue;
                    }
                    received = live.recv() => received,
                };
                match received {
                    Ok(event) if event.seq <= sent => {}
                    Ok(event) if lecture.is_some() && event.lecture_id != lecture => {}
                    Ok(event) => {
                        sent = event.seq;
                        if tx.send(sse(&app, Arc::unwrap_or_clone(event)).await).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One log event as an SSE event. Completions and failures carry the
/// lecture's whole document.
async fn sse(app: &AppState, event: Event) -> SseEvent {
    let mut data = event.payload;
    if matches!(event.kind, EventKind::Completed | EventKind::Failed) && data.get("_id").is_none() {
        if let Some(id) = event.lecture_id.as_deref() {
            if let Ok(Some(doc)) = document(app, id).await {
                data = doc;
            }
        }
    }
    let message = EventMessage { seq: event.seq, kind: event.kind.as_str(), lecture_id: event.lecture_id, data };
    let body = serde_json::to_string(&message).unwrap_or_default();
    SseEvent::default().id(event.seq.to_string()).event(event.kind.as_str()).data(body)
}

/// A stream fed by a task through a small channel: the task stops when the
/// client goes (the receiver is dropped).
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) })
}
