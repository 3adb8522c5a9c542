//! One attempt at one job: probe, plan, encode while publishing, complete.
//!
//! The attempt works in a private directory and publishes under a private
//! prefix (`<lecture>/<attempt tag>/`). Only an attempt that still holds its
//! lease can complete the job; the result is recorded in the same transaction.
//! Every other ending removes what the attempt published.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::{chunked, WorkerContext};
use crate::captions::{cues, Captions, Language, Origin, StoredCaptions};
use crate::domain::{now_ms, LectureId};
use crate::events::{EventKind, EventLog};
use crate::ingest::probe::{self, ProbeError};
use crate::lectures::{Completion, Failure, Lecture, Published, RenditionSummary};
use crate::media::MediaInfo;
use crate::publish::captions::refresh;
use crate::publish::{Publisher, StorageError};
use crate::queue::{Claim, FailOutcome};
use crate::status::LectureDocument;
use crate::transcode::chunks::ChildJob;
use crate::transcode::command::MASTER_PLAYLIST;
use crate::transcode::ffmpeg::FfmpegError;
use crate::transcode::plan::Plan;

/// How often, while encoding, finished segments are looked for and shipped.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub(super) enum JobError {
    #[error("the source cannot be transcoded: {0}")]
    Source(ProbeError),
    #[error("the lecture no longer exists")]
    LectureGone,
    #[error("{0}")]
    Ffmpeg(#[from] FfmpegError),
    #[error("publishing failed: {0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Internal(String),
    /// A chunk of a chunked encode failed for good (its own retries are
    /// spent), with its reason.
    #[error("{0}")]
    Chunk(String),
}

/// Why an attempt failed, as a small fixed set: the `reason` label of the
/// failure metrics and the `class` field of the log event.
fn failure_class(e: &JobError) -> &'static str {
    match e {
        JobError::Source(_) => "input",
        JobError::LectureGone => "lecture_gone",
        JobError::Ffmpeg(FfmpegError::Stalled(_)) => "stalled",
        JobError::Ffmpeg(FfmpegError::TimedOut(_)) => "timeout",
        JobError::Ffmpeg(FfmpegError::Cancelled) => "cancelled",
        JobError::Ffmpeg(e) if e.caused_by_input() => "input",
        JobError::Ffmpeg(_) => "system",
        JobError::Storage(_) => "storage",
        JobError::Internal(_) => "internal",
        JobError::Chunk(_) => "chunk",
    }
}

impl JobError {
    /// Retrying cannot fix the input: a source that is not a video, one the
    /// decoder rejects, or one ffmpeg stalls or runs out of time on would
    /// fail the same way on every attempt, burning hours of worker time.
    /// The machine's faults (storage, database, a killed process) retry.
    pub(super) fn retryable(&self) -> bool {
        match self {
            JobError::Source(e) => !e.is_input_error(),
            JobError::LectureGone | JobError::Chunk(_) => false,
            JobError::Ffmpeg(e) => !e.caused_by_input(),
            JobError::Storage(_) | JobError::Internal(_) => true,
        }
    }
}

/// Runs one claimed job to one of its endings. Never returns an error: every
/// outcome is written to the queue.
pub(super) async fn process(
    ctx: &WorkerContext,
    claim: Claim,
    cancel: CancellationToken,
    hard_stop: &CancellationToken,
    draining: &CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    if let Ok(child) = claim.job_id.parse::<ChildJob>() {
        chunked::process_child(ctx, claim, child, cancel, hard_stop, draining).await;
        drop(permit);
        return;
    }
    let mut permit = Some(permit);
    let id = claim.job_id.clone();
    let started = std::time::Instant::now();
    tracing::info!(lecture = %id, job = %id, attempt = claim.attempt, worker = %ctx.id, "job started");
    let processing = json!({ "lectureId": id, "processingStatus": "processing", "attempt": claim.attempt });
    if let Err(e) = ctx.lectures.events().append(EventKind::Processing, Some(&id), processing).await {
        tracing::warn!(lecture = %id, error = %e, "could not record the job's start");
    }
    ctx.running.insert(&id, cancel.clone());
    let (progress_tx, progress_rx) = watch::channel(0.0);
    let beat =
        Heartbeat { queue: ctx.queue.clone(), events: Some(ctx.lectures.events().clone()), claim: claim.clone() };
    let heartbeat = tokio::spawn(beat.run(ctx.lease, progress_rx, cancel.clone()));

    let tag = &claim.token[..12];
    let work = ctx.work_dir.join(format!("{id}-{tag}"));
    let prefix = format!("{id}/{tag}");
    let stops = Stops { cancel: &cancel, draining };
    // The chunk jobs of a chunked lecture, once its attempt knows them.
    let mut chunk_jobs = Vec::new();
    let result = attempt(ctx, &claim, &work, &prefix, stops, &progress_tx, &mut permit, &mut chunk_jobs).await;
    heartbeat.abort();

    let keep_published = match result {
        Ok(Attempted { published, lecture, encode_time, announced_playable }) => match ctx
            .lectures
            .complete(
                &claim,
                &published,
                Completion {
                    playable: (!announced_playable).then(|| playable_event(ctx, &claim.job_id, &published.prefix)),
                    document: completed_document(ctx, &lecture, &published),
                },
            )
            .await
        {
            Ok(true) => {
                if !announced_playable {
                    announce_playable(&claim.job_id, &lecture);
                }
                let speed = published.duration_seconds / encode_time.as_secs_f64().max(0.001);
                let since_upload = Duration::from_millis((now_ms() - lecture.created_at).max(0) as u64);
                crate::metrics::job_completed(started.elapsed(), since_upload, Some(speed));
                tracing::info!(
                    lecture = %id, job = %id, attempt = claim.attempt,
                    duration_s = started.elapsed().as_secs_f64(), since_upload_s = since_upload.as_secs_f64(),
                    speed = format!("{speed:.2}x"), "job completed"
                );
                let kept = published.prefix.rsplit('/').next().unwrap_or(tag);
                remove_other_attempts(ctx, &id, kept).await;
                publish_late_captions(ctx, &id, &published).await;
                let _ = tokio::fs::remove_file(&lecture.source_path).await;
                true
            }
            Ok(false) => {
                tracing::warn!(job = %id, "lease lost before completion; discarding this attempt's output");
                false
            }
            Err(e) => {
                tracing::error!(job = %id, error = %e, "could not record completion");
                let _ = ctx.queue.fail(&claim, &ctx.id, &format!("could not record completion: {e}"), true).await;
                false
            }
        },
        Err(JobError::Ffmpeg(FfmpegError::Cancelled)) if hard_stop.is_cancelled() || draining.is_cancelled() => {
            tracing::info!(job = %id, "shutting down: job handed back");
            if let Err(e) = ctx.queue.release(&claim).await {
                tracing::warn!(job = %id, error = %e, "could not hand the job back; its lease will expire");
            }
            false
        }
        Err(JobError::Ffmpeg(FfmpegError::Cancelled)) => {
            tracing::info!(job = %id, "job cancelled, deleted, or its lease was lost");
            false
        }
        Err(e) => {
            let message = e.to_string();
            let class = failure_class(&e);
            crate::metrics::attempt_failed(class, started.elapsed());
            match ctx.queue.fail(&claim, &ctx.id, &message, e.retryable()).await {
                Ok(FailOutcome::RetryAt(at)) => {
                    tracing::warn!(lecture = %id, job = %id, class, error = %message, retry_at = at, "attempt failed; will retry")
                }
                Ok(FailOutcome::Failed) => {
                    crate::metrics::job_failed(class);
                    tracing::error!(lecture = %id, job = %id, attempt = claim.attempt, class, error = %message, "job failed");
                    if let Err(e) = ctx.lectures.record_failure(&id, Failure::Error(&message)).await {
                        tracing::warn!(job = %id, error = %e, "could not store the failure on the lecture");
                    }
                    chunked::abandon(ctx, &id, &chunk_jobs).await;
                }
                Ok(FailOutcome::LeaseLost) => {
                    tracing::warn!(job = %id, error = %message, "attempt failed after its lease was lost")
                }
                Err(qe) => {
                    tracing::error!(job = %id, error = %qe, "could not record the failure; the lease will expire")
                }
            }
            false
        }
    };
    if !keep_published {
        // Withdraw links to this attempt before removing what they point at.
        if let Err(e) = ctx.lectures.withdraw_links(&id, &prefix).await {
            tracing::warn!(job = %id, error = %e, "could not withdraw this attempt's links");
        }
        if let Err(e) = ctx.storage.delete_prefix(&prefix).await {
            tracing::warn!(job = %id, error = %e, "could not remove this attempt's published files");
        }
    }
    if let Err(e) = tokio::fs::remove_dir_all(&work).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(job = %id, error = %e, "could not remove work files");
        }
    }
    ctx.running.remove(&id);
}

/// What stops an attempt: `cancel` (cancelled, deleted, lease lost, or the
/// end of the shutdown grace) and `draining` (shutdown began).
#[derive(Clone, Copy)]
struct Stops<'a> {
    cancel: &'a CancellationToken,
    draining: &'a CancellationToken,
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    ctx: &WorkerContext,
    claim: &Claim,
    work: &std::path::Path,
    prefix: &str,
    stops: Stops<'_>,
    progress: &watch::Sender<f64>,
    permit: &mut Option<OwnedSemaphorePermit>,
    chunk_jobs: &mut Vec<String>,
) -> Result<Attempted, JobError> {
    let cancel = stops.cancel;
    let lecture_id: LectureId =
        claim.job_id.parse().map_err(|e: crate::domain::InvalidValue| JobError::Internal(e.0))?;
    let lecture = ctx
        .lectures
        .get(&lecture_id)
        .await
        .map_err(|e| JobError::Internal(e.to_string()))?
        .ok_or(JobError::LectureGone)?;
    let media = probe::probe(&ctx.transcoder.tools.ffprobe, &lecture.source_path).await.map_err(JobError::Source)?;
    let plan = Plan::new(&media, &ctx.ladder).with_thumbnail_time(lecture.thumbnail_time);
    if let Some(chunks) = ctx.chunking.split(plan.duration_seconds) {
        return chunked::join(ctx, lecture, plan, chunks, cancel, stops.draining, progress, permit, chunk_jobs).await;
    }
    tokio::fs::create_dir_all(work).await.map_err(|e| JobError::Internal(format!("work directory: {e}")))?;
    add_embedded_captions(ctx, &lecture, &media, work, cancel).await;

    let mut publisher = Publisher::new(ctx.storage.clone(), prefix.to_string(), work.to_path_buf());
    // Ship segments while ffmpeg writes the next ones. Encoding and
    // publishing are polled side by side: a sweep that waits out a storage
    // outage must not starve the ffmpeg watchdog (it would see a stall).
    // A publishing failure stops ffmpeg through `stop_encode`.
    let stop_encode = cancel.child_token();
    let encoded = CancellationToken::new();
    let encode_started = std::time::Instant::now();
    let announced_playable = std::sync::atomic::AtomicBool::new(false);
    let encode = async {
        let result = ctx.transcoder.encode(&media, &plan, &lecture.source_path, work, &stop_encode, progress).await;
        encoded.cancel();
        result.map(|made| (made, encode_started.elapsed()))
    };
    let publish = async {
        loop {
            tokio::select! {
                _ = encoded.cancelled() => return Ok(()),
                _ = tokio::time::sleep(PUBLISH_INTERVAL) => {}
            }
            tokio::select! {
                swept = publisher.sweep(&plan) => match swept {
                    Ok(sweep) if sweep.became_playable => {
                        announce_playable(&claim.job_id, &lecture);
                        announced_playable.store(true, std::sync::atomic::Ordering::Relaxed);
                        let event = playable_event(ctx, &claim.job_id, prefix);
                        if let Err(e) = ctx.lectures.set_playable(&claim.job_id, prefix, event).await {
                            tracing::warn!(job = %claim.job_id, error = %e, "could not publish the early link");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        stop_encode.cancel();
                        return Err(e);
                    }
                },
                // Deleted or shutting down: what was published is removed.
                _ = cancel.cancelled() => return Ok(()),
            }
        }
    };
    let (encoded_result, published_result) = tokio::join!(encode, publish);
    published_result?;
    let (made, encode_time) = encoded_result?;
    // The encode makes one unless the video stream is much shorter than the
    // container's duration: a lecture without a thumbnail is still a
    // lecture.
    if made.thumbnail_time.is_none() {
        tracing::warn!(job = %claim.job_id, "no thumbnail: the video stream ends before its candidates");
    }
    // Read now, so tracks added while encoding go out with the video;
    // ones added from here on are published by the refresh after completion.
    let captions =
        ctx.lectures.captions().list(lecture.id.as_str()).await.map_err(|e| JobError::Internal(e.to_string()))?;
    publisher.finish(&plan, &captions).await?;
    for track in &captions {
        ctx.lectures
            .captions()
            .mark_published(lecture.id.as_str(), &track.language, track.revision, prefix)
            .await
            .map_err(|e| JobError::Internal(e.to_string()))?;
    }
    let published = Published {
        prefix: prefix.to_string(),
        has_thumbnail: made.thumbnail_time.is_some(),
        thumbnail_time: made.thumbnail_time,
        has_storyboard: made.has_storyboard,
        captions: captions.iter().map(StoredCaptions::summary).collect(),
        renditions: rendition_summaries(&plan),
        duration_seconds: plan.duration_seconds,
    };
    Ok(Attempted { published, lecture, encode_time, announced_playable: announced_playable.into_inner() })
}

/// Every rendition of `plan`, as the lecture lists it once published.
pub(super) fn rendition_summaries(plan: &Plan) -> Vec<RenditionSummary> {
    let summary = |r: &crate::transcode::plan::Rendition| RenditionSummary {
        name: r.name().to_string(),
        width: r.width(),
        height: r.height(),
        bandwidth: r.bandwidth(),
    };
    plan.renditions.iter().map(summary).collect()
}

/// What a successful attempt made, for its completion.
pub(super) struct Attempted {
    pub(super) published: Published,
    /// The lecture as the attempt found it.
    pub(super) lecture: Lecture,
    pub(super) encode_time: Duration,
    /// Whether `lecture.playable` went out while encoding (a short video can
    /// finish between two publishing sweeps).
    pub(super) announced_playable: bool,
}

/// The payload of `lecture.playable`.
pub(super) fn playable_event(ctx: &WorkerContext, id: &str, prefix: &str) -> serde_json::Value {
    let link = ctx.storage.url(&format!("{prefix}/{MASTER_PLAYLIST}"));
    json!({ "lectureId": id, "processingStatus": "processing", "playable": true, "videoLink": link })
}

/// The log line and metric of a lecture becoming playable.
pub(super) fn announce_playable(id: &str, lecture: &Lecture) {
    let since_upload = Duration::from_millis((now_ms() - lecture.created_at).max(0) as u64);
    crate::metrics::upload_to_playable(since_upload);
    tracing::info!(lecture = %id, job = %id, since_upload_s = since_upload.as_secs_f64(), "playable");
}

/// The lecture document as it will read once `published` is recorded (with
/// `lectureId`, as every event has): the payload of `lecture.completed`.
fn completed_document(ctx: &WorkerContext, lecture: &Lecture, published: &Published) -> serde_json::Value {
    let done = Lecture {
        published_prefix: Some(published.prefix.clone()),
        playable_prefix: None,
        has_thumbnail: published.has_thumbnail,
        thumbnail_time: published.thumbnail_time,
        has_storyboard: published.has_storyboard,
        renditions: published.renditions.clone(),
        captions: published.captions.clone(),
        duration_seconds: Some(published.duration_seconds),
        ..lecture.clone()
    };
    let mut document = serde_json::to_value(LectureDocument::new(done, None, ctx.storage.as_ref())).unwrap_or_default();
    if let Some(fields) = document.as_object_mut() {
        fields.insert("lectureId".into(), json!(lecture.id.as_str()));
    }
    document
}

/// Renews the lease and stores progress, on its own task so that a busy
/// attempt never misses a renewal. Cancels the attempt when the lease is
/// lost, or when renewals have failed for a whole lease (the queue is
/// unreachable): by then another worker may have taken the job over.
pub(super) struct Heartbeat {
    pub(super) queue: Arc<dyn crate::queue::Queue>,
    /// Progress changes become `lecture.progress` events, one per beat at
    /// most (a lecture's own job; a chunk's progress is its parent's).
    pub(super) events: Option<EventLog>,
    pub(super) claim: Claim,
}

impl Heartbeat {
    pub(super) async fn run(self, lease: Duration, mut progress: watch::Receiver<f64>, cancel: CancellationToken) {
        let claim = &self.claim;
        let every = (lease / 3).min(Duration::from_secs(2));
        let mut renewed = tokio::time::Instant::now();
        let mut announced = 0u32;
        loop {
            tokio::time::sleep(every).await;
            let pct = *progress.borrow_and_update();
            match self.queue.heartbeat(claim, lease, pct).await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::warn!(job = %claim.job_id, "lease lost (cancelled, deleted or expired); stopping");
                    cancel.cancel();
                    return;
                }
                Err(e) if renewed.elapsed() >= lease => {
                    tracing::error!(job = %claim.job_id, error = %e, "no heartbeat for a whole lease; stopping");
                    cancel.cancel();
                    return;
                }
                Err(e) => tracing::warn!(job = %claim.job_id, error = %e, "heartbeat failed; retrying"),
            }
            let whole = pct.floor() as u32;
            if whole > announced {
                announced = whole;
                let update = json!({ "lectureId": claim.job_id, "processingStatus": "processing", "progress": whole });
                let Some(events) = &self.events else { continue };
                if let Err(e) = events.append(EventKind::Progress, Some(&claim.job_id), update).await {
                    tracing::debug!(job = %claim.job_id, error = %e, "could not record progress");
                }
            }
        }
    }
}

/// Text subtitle streams of the source become caption tracks, unless the
/// lecture has one in that language already (an uploaded file wins). A
/// stream that cannot be read is logged and skipped: captions never fail
/// the video.
async fn add_embedded_captions(
    ctx: &WorkerContext,
    lecture: &Lecture,
    media: &MediaInfo,
    work: &std::path::Path,
    cancel: &CancellationToken,
) {
    let dir = work.join("subtitles");
    let found = match ctx.transcoder.extract_subtitles(media, &lecture.source_path, &dir, cancel).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(lecture = %lecture.id, error = %e, "could not read the video's subtitle streams");
            return;
        }
    };
    for (stream, path) in found {
        let bytes = tokio::fs::read(&path).await.unwrap_or_default();
        let cues = match cues::parse(&bytes) {
            Ok(cues) => cues,
            Err(e) => {
                tracing::warn!(lecture = %lecture.id, stream = stream.index, error = %e, "subtitle stream skipped");
                continue;
            }
        };
        let language = Language::of_stream(stream.language.as_deref());
        let captions = Captions { language, origin: Origin::Embedded, cues };
        if let Err(e) = ctx.lectures.captions().add_if_absent(lecture.id.as_str(), &captions).await {
            tracing::warn!(lecture = %lecture.id, error = %e, "could not store a subtitle stream's captions");
        }
    }
}

/// Caption tracks stored between this attempt's last read and its
/// completion are published now (see `publish::captions`).
async fn publish_late_captions(ctx: &WorkerContext, id: &str, published: &Published) {
    let Some(rendition) = published.renditions.first() else { return };
    let store = ctx.lectures.captions();
    if let Err(e) = refresh(&store, &ctx.storage, id, &published.prefix, &rendition.name, false).await {
        tracing::warn!(lecture = %id, error = %e, "could not publish caption tracks added while encoding");
    }
}

/// Published output of earlier attempts of this lecture (replaced by ours).
async fn remove_other_attempts(ctx: &WorkerContext, lecture: &str, keep: &str) {
    match ctx.storage.list_children(lecture).await {
        Ok(children) => {
            for child in children.iter().filter(|c| c.as_str() != keep) {
                let _ = ctx.storage.delete_prefix(&format!("{lecture}/{child}")).await;
            }
        }
        Err(e) => tracing::warn!(job = %lecture, error = %e, "could not list earlier attempts"),
    }
}
