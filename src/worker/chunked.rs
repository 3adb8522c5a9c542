//! Chunked transcoding: one long lecture encoded by many workers at once.
//!
//! A source longer than `VIDPIPE_CHUNK_AFTER` is not encoded by the job
//! that claims it. That job, the lecture's own (the *parent*), enqueues
//! child jobs in the same queue: one for the sound of the whole source and
//! one per chunk ([`crate::transcode::chunks`]). It then gives its worker
//! slot back and only joins: every second it reads its children's records,
//! publishes the rendition playlists as far as the chunks done from the
//! start reach (so the lecture plays once the first chunk is published,
//! and grows as a single encode's EVENT playlists would), and completes the
//! lecture when every child has.
//!
//! Children are ordinary jobs under the usual lease, heartbeat and retry
//! rules: any worker claims them, first chunk first; a killed worker's
//! chunk is taken over and a failed one retried alone. A child that fails
//! for good fails the lecture with its reason. Everything is published
//! under one prefix per lecture (`<lecture>/chunked`), the same for every
//! attempt of the parent, so a parent taken over by another worker joins
//! what the children already published.
//!
//! The joining job holds a lease but no slot: it must see a cancel, a
//! delete or a failed chunk at once, and another worker must take it over
//! if its worker dies; but it encodes nothing, and holding a slot for the
//! hours a long lecture takes would keep a one-slot worker from ever
//! running the chunks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::job::{announce_playable, playable_event, rendition_summaries, Attempted, Heartbeat, JobError};
use super::WorkerContext;
use crate::captions::StoredCaptions;
use crate::domain::{JobState, LectureId};
use crate::ingest::probe;
use crate::lectures::{Lecture, Published};
use crate::publish::{captions::publish_track, Storage, StorageError};
use crate::queue::{Claim, EnqueueOptions, FailOutcome, JobRecord, Queue};
use crate::transcode::chunks::{ChildJob, ChunkRange, Part};
use crate::transcode::command::{AUDIO_DIR, MASTER_PLAYLIST, MEDIA_PLAYLIST, THUMBNAIL};
use crate::transcode::ffmpeg::FfmpegError;
use crate::transcode::plan::Plan;
use crate::transcode::playlist;
use crate::transcode::previews::{
    pick_candidate, Candidate, ChunkPreviews, CANDIDATE_PATTERN, CANDIDATE_STATS, STORYBOARD_IMAGE, STORYBOARD_VTT,
    TILE_PATTERN,
};

/// The directory under the lecture where a chunked encode is published.
const CHUNKED_DIR: &str = "chunked";
/// How often the joining job reads its children's records.
const JOIN_INTERVAL: Duration = Duration::from_secs(1);
/// How long a chunk on another worker may take, once it has seen its
/// cancel, to stop: its ffmpeg to die or its file in flight to be stored.
const CHUNK_STOP_ALLOWANCE: Duration = Duration::from_secs(5);
/// How often a running chunk checks that its lecture's job still wants it.
const PARENT_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Where a chunked lecture is published: the same for every attempt.
pub(super) fn prefix(lecture: &str) -> String {
    format!("{lecture}/{CHUNKED_DIR}")
}

/// The sound first (the lecture cannot play before it), then the chunks in
/// order.
fn children(lecture: &str, plan: &Plan, chunks: &[ChunkRange]) -> Vec<ChildJob> {
    let audio = (!plan.audio.is_silent()).then_some(Part::Audio);
    audio
        .into_iter()
        .chain(chunks.iter().map(|&c| Part::Video(c)))
        .map(|part| ChildJob { lecture: lecture.to_string(), part })
        .collect()
}

/// The parent's attempt once it decided to split: enqueue the children
/// that are not in the queue yet, give the slot back, join as they finish.
#[allow(clippy::too_many_arguments)]
pub(super) async fn join(
    ctx: &WorkerContext,
    lecture: Lecture,
    plan: Plan,
    chunks: Vec<ChunkRange>,
    cancel: &CancellationToken,
    draining: &CancellationToken,
    progress: &watch::Sender<f64>,
    permit: &mut Option<OwnedSemaphorePermit>,
    chunk_jobs: &mut Vec<String>,
) -> Result<Attempted, JobError> {
    let id = lecture.id.as_str().to_string();
    let prefix = prefix(&id);
    let children = children(&id, &plan, &chunks);
    let ids: Vec<String> = children.iter().map(ChildJob::to_string).collect();
    chunk_jobs.clone_from(&ids);
    let internal = |e: crate::queue::QueueError| JobError::Internal(e.to_string());
    let known = ctx.queue.get_many(&ids).await.map_err(internal)?;
    let priority = ctx.queue.get(&id).await.map_err(internal)?.map_or(0, |j| j.priority);
    let options = EnqueueOptions { priority, delay: Duration::ZERO, max_attempts: ctx.max_attempts };
    for child in ids.iter().filter(|c| !known.iter().any(|k| &k.id == *c)) {
        ctx.queue.enqueue(child, &options).await.map_err(internal)?;
    }
    // Chunks that failed or were cancelled in an earlier run of the lecture
    // (one that ended while no joining job ran) run again.
    for old in known.iter().filter(|k| matches!(k.state, JobState::Failed | JobState::Cancelled)) {
        ctx.queue.retry(&old.id).await.map_err(internal)?;
    }
    tracing::info!(lecture = %id, chunks = chunks.len(), seconds = chunks[0].seconds, "split into chunks");
    permit.take();
    ctx.wake.notify_one();

    let mut joined = Joined::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                if !draining.is_cancelled() {
                    leave_or_stop(ctx, &id, &ids, &prefix).await;
                }
                return Err(JobError::Ffmpeg(FfmpegError::Cancelled));
            }
            _ = draining.cancelled() => return Err(JobError::Ffmpeg(FfmpegError::Cancelled)),
            _ = tokio::time::sleep(JOIN_INTERVAL) => {}
        }
        let records = match ctx.queue.get_many(&ids).await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(lecture = %id, error = %e, "could not read the chunks' jobs; will try again");
                continue;
            }
        };
        let by_id: HashMap<&str, &JobRecord> = records.iter().map(|r| (r.id.as_str(), r)).collect();
        if let Some((child, job)) = children.iter().zip(&ids).find_map(|(c, i)| {
            by_id.get(i.as_str()).filter(|j| matches!(j.state, JobState::Failed | JobState::Cancelled)).map(|j| (c, *j))
        }) {
            let reason = job.last_error.clone().unwrap_or_else(|| "cancelled".into());
            stop_children(ctx, &id, &ids, &prefix).await;
            return Err(JobError::Chunk(format!("{} failed: {reason}", describe(child))));
        }
        for missing in ids.iter().filter(|i| !by_id.contains_key(i.as_str())) {
            // Removed by an operator: the lecture cannot finish without it.
            tracing::warn!(lecture = %id, job = %missing, "a chunk's job was gone; enqueued again");
            ctx.queue.enqueue(missing, &options).await.map_err(internal)?;
        }
        let done = |i: &String| by_id.get(i.as_str()).is_some_and(|j| j.state == JobState::Completed);
        let encoded: f64 = children
            .iter()
            .zip(&ids)
            .filter(|(c, _)| matches!(c.part, Part::Video(_)))
            .map(|(_, i)| by_id.get(i.as_str()).map_or(0.0, |j| if done(i) { 100.0 } else { j.progress }))
            .sum();
        progress.send_replace((encoded / chunks.len() as f64).clamp(0.0, 99.0));
        let audio_done = children.iter().zip(&ids).all(|(c, i)| c.part != Part::Audio || done(i));
        let from_start = children
            .iter()
            .zip(&ids)
            .filter(|(c, _)| matches!(c.part, Part::Video(_)))
            .take_while(|(_, i)| done(i))
            .count();
        if audio_done && from_start > joined.chunks {
            let complete = from_start == chunks.len();
            joined.publish(ctx, &prefix, &plan, &chunks[..from_start], complete).await?;
            if !joined.master_published {
                ctx.storage
                    .put_bytes(
                        &format!("{prefix}/{MASTER_PLAYLIST}"),
                        playlist::master_with_separate_audio(&plan).into_bytes(),
                    )
                    .await?;
                joined.master_published = true;
                if !complete {
                    announce_playable(&id, &lecture);
                    let event = playable_event(ctx, &id, &prefix);
                    if let Err(e) = ctx.lectures.set_playable(&id, &prefix, event).await {
                        tracing::warn!(lecture = %id, error = %e, "could not publish the early link");
                    }
                    joined.announced_playable = true;
                }
            }
            if complete {
                break;
            }
        }
    }

    let captions = ctx.lectures.captions().list(&id).await.map_err(|e| JobError::Internal(e.to_string()))?;
    for track in &captions {
        publish_track(ctx.storage.as_ref(), &prefix, &joined.durations, track).await?;
        ctx.lectures
            .captions()
            .mark_published(&id, &track.language, track.revision, &prefix)
            .await
            .map_err(|e| JobError::Internal(e.to_string()))?;
    }
    let listed: Vec<_> = captions.iter().map(StoredCaptions::summary).collect();
    let master = playlist::with_subtitles(&playlist::master_with_separate_audio(&plan), &listed);
    ctx.storage.put_bytes(&format!("{prefix}/{MASTER_PLAYLIST}"), master.into_bytes()).await?;
    let duration = joined.durations.iter().sum();
    let (thumbnail_time, has_storyboard) = finish_previews(ctx, &prefix, &plan, &chunks, duration, cancel).await?;
    let published = Published {
        prefix,
        has_thumbnail: thumbnail_time.is_some(),
        thumbnail_time,
        has_storyboard,
        captions: listed,
        renditions: rendition_summaries(&plan),
        duration_seconds: duration,
    };
    Ok(Attempted {
        published,
        lecture,
        encode_time: joined.started.elapsed(),
        announced_playable: joined.announced_playable,
    })
}

/// "chunk 3 of 10 (120-180 s)" or "the audio".
fn describe(child: &ChildJob) -> String {
    match child.part {
        Part::Audio => "the audio".into(),
        Part::Video(r) => {
            let end = r.length_seconds().map_or("end".to_string(), |l| format!("{} s", r.start_seconds() + l));
            format!("chunk {} of {} ({} s to {end})", r.index + 1, r.count, r.start_seconds())
        }
    }
}

/// What the joining job has published so far.
struct Joined {
    /// Video chunks joined into the rendition playlists, from the start.
    chunks: usize,
    /// Each chunk's playlist per rendition, read once: a completed chunk's
    /// playlist does not change.
    playlists: HashMap<(String, u32), String>,
    master_published: bool,
    announced_playable: bool,
    /// Segment durations of the first rendition as joined (for captions).
    durations: Vec<f64>,
    started: std::time::Instant,
}

impl Default for Joined {
    fn default() -> Self {
        Joined {
            chunks: 0,
            playlists: HashMap::new(),
            master_published: false,
            announced_playable: false,
            durations: Vec::new(),
            started: std::time::Instant::now(),
        }
    }
}

impl Joined {
    /// Publishes every rendition's playlist made of `chunks` (EVENT, or VOD
    /// when `complete`).
    async fn publish(
        &mut self,
        ctx: &WorkerContext,
        prefix: &str,
        plan: &Plan,
        chunks: &[ChunkRange],
        complete: bool,
    ) -> Result<(), StorageError> {
        for (n, r) in plan.renditions.iter().enumerate() {
            let mut texts = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                let key = (r.name().to_string(), chunk.index);
                if !self.playlists.contains_key(&key) {
                    let bytes =
                        ctx.storage.get_bytes(&format!("{prefix}/{}/{}", r.name(), chunk.playlist_name())).await?;
                    self.playlists.insert(key.clone(), String::from_utf8_lossy(&bytes).into_owned());
                }
                texts.push(self.playlists[&key].clone());
            }
            let joined = playlist::join(&texts);
            if n == 0 {
                self.durations = playlist::segment_durations(&joined);
            }
            let text = if complete { playlist::to_vod(&joined) } else { playlist::for_players(&joined) };
            ctx.storage.put_bytes(&format!("{prefix}/{}/{MEDIA_PLAYLIST}", r.name()), text.into_bytes()).await?;
        }
        self.chunks = chunks.len();
        Ok(())
    }
}

/// The parent lost its lease: if it was cancelled or deleted, its children
/// stop too and what they published goes; if another worker took it over,
/// they carry on for that worker.
async fn leave_or_stop(ctx: &WorkerContext, lecture: &str, ids: &[String], prefix: &str) {
    match ctx.queue.get(lecture).await {
        Ok(Some(job)) if !matches!(job.state, JobState::Cancelled | JobState::Failed) => {
            tracing::info!(lecture, "another worker joins this lecture's chunks now");
        }
        Ok(_) => stop_children(ctx, lecture, ids, prefix).await,
        Err(e) => {
            tracing::warn!(lecture, error = %e, "cannot tell whether the lecture was cancelled; its chunks go on")
        }
    }
}

/// After a lecture's job failed for good on its own (publishing the joined
/// playlists failed on every attempt, say): its chunks (`ids`, as its last
/// attempt enqueued or found them) stop and what they published goes, as
/// when a chunk fails.
pub(super) async fn abandon(ctx: &WorkerContext, lecture: &str, ids: &[String]) {
    if !ids.is_empty() {
        stop_children(ctx, lecture, ids, &prefix(lecture)).await;
    }
}

/// Cancels every child, waits (up to a lease) until none still runs on any
/// worker, then removes their jobs and everything published: nothing a
/// late chunk writes can stay behind.
async fn stop_children(ctx: &WorkerContext, lecture: &str, ids: &[String], prefix: &str) {
    // Cancelling makes a job's state final at once, so which chunks were
    // running elsewhere must be read first.
    let running_elsewhere = match ctx.queue.get_many(ids).await {
        Ok(jobs) => jobs.iter().any(|j| j.state == JobState::Active && !ctx.running.contains(&j.id)),
        Err(_) => true,
    };
    for id in ids {
        if let Err(e) = ctx.queue.cancel(id).await {
            tracing::warn!(job = %id, error = %e, "could not cancel a chunk");
        }
        ctx.running.stop(id, Duration::ZERO).await;
    }
    let deadline = tokio::time::Instant::now() + ctx.lease + Duration::from_secs(2);
    while ids.iter().any(|id| ctx.running.contains(id)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if running_elsewhere {
        // Another worker's chunk sees the cancel at its next heartbeat
        // (every third of a lease, at most 2 s) and then stops between two
        // uploads; wait that out, and the file it was storing.
        tokio::time::sleep((ctx.lease / 3).min(Duration::from_secs(2)) + CHUNK_STOP_ALLOWANCE).await;
    }
    for id in ids {
        let _ = ctx.queue.remove(id).await;
    }
    if let Err(e) = ctx.lectures.withdraw_links(lecture, prefix).await {
        tracing::warn!(lecture, error = %e, "could not withdraw the chunked encode's links");
    }
    if let Err(e) = ctx.storage.delete_prefix(prefix).await {
        tracing::warn!(lecture, error = %e, "could not remove the chunked encode's files");
    }
}

/// Runs one claimed child job to one of its endings.
pub(super) async fn process_child(
    ctx: &WorkerContext,
    claim: Claim,
    child: ChildJob,
    cancel: CancellationToken,
    hard_stop: &CancellationToken,
    draining: &CancellationToken,
) {
    let id = claim.job_id.clone();
    tracing::info!(lecture = %child.lecture, job = %id, attempt = claim.attempt, worker = %ctx.id, "chunk started");
    ctx.running.insert(&id, cancel.clone());
    let (progress_tx, progress_rx) = watch::channel(0.0);
    let beat = Heartbeat { queue: ctx.queue.clone(), events: None, claim: claim.clone() };
    let heartbeat = tokio::spawn(beat.run(ctx.lease, progress_rx, cancel.clone()));
    let watch_parent = tokio::spawn(stop_without_parent(ctx.queue.clone(), child.lecture.clone(), cancel.clone()));
    let work = ctx.work_dir.join(format!("{id}-{}", &claim.token[..12]));
    let started = std::time::Instant::now();
    let result = encode_child(ctx, &child, &work, &cancel, &progress_tx).await;
    heartbeat.abort();
    watch_parent.abort();
    match result {
        Ok(()) => match ctx.queue.complete(&claim).await {
            Ok(true) => tracing::info!(job = %id, duration_s = started.elapsed().as_secs_f64(), "chunk completed"),
            Ok(false) => tracing::warn!(job = %id, "lease lost before the chunk completed"),
            Err(e) => tracing::error!(job = %id, error = %e, "could not record the chunk's completion"),
        },
        Err(JobError::Ffmpeg(FfmpegError::Cancelled)) if hard_stop.is_cancelled() || draining.is_cancelled() => {
            if let Err(e) = ctx.queue.release(&claim).await {
                tracing::warn!(job = %id, error = %e, "could not hand the chunk back; its lease will expire");
            }
        }
        Err(JobError::Ffmpeg(FfmpegError::Cancelled)) => tracing::info!(job = %id, "chunk cancelled"),
        Err(e) => {
            let message = e.to_string();
            match ctx.queue.fail(&claim, &ctx.id, &message, e.retryable()).await {
                Ok(FailOutcome::RetryAt(at)) => {
                    tracing::warn!(job = %id, error = %message, retry_at = at, "chunk failed; will retry")
                }
                Ok(FailOutcome::Failed) => tracing::error!(job = %id, error = %message, "chunk failed for good"),
                Ok(FailOutcome::LeaseLost) => {
                    tracing::warn!(job = %id, error = %message, "chunk failed after its lease was lost")
                }
                Err(qe) => tracing::error!(job = %id, error = %qe, "could not record the chunk's failure"),
            }
        }
    }
    let _ = tokio::fs::remove_dir_all(&work).await;
    ctx.running.remove(&id);
}

/// Stops a chunk whose lecture's job is gone (deleted), failed or
/// cancelled, checked at once and every [`PARENT_CHECK_INTERVAL`]: the
/// lecture's joining job stops its chunks itself, but it may not be running
/// (its job waiting for a retry, or handed back at a restart) when the
/// lecture is cancelled or deleted.
async fn stop_without_parent(queue: Arc<dyn Queue>, lecture: String, cancel: CancellationToken) {
    loop {
        match queue.get(&lecture).await {
            Ok(None) => break,
            Ok(Some(job)) if matches!(job.state, JobState::Failed | JobState::Cancelled) => break,
            _ => {}
        }
        tokio::time::sleep(PARENT_CHECK_INTERVAL).await;
    }
    tracing::info!(lecture = %lecture, "the lecture's job ended; stopping its chunk");
    cancel.cancel();
}

/// Encodes the child's part and publishes it: the segments (and, for the
/// first chunk, the initialization sections every chunk shares), then the
/// chunk's own playlists for the joining job to read.
async fn encode_child(
    ctx: &WorkerContext,
    child: &ChildJob,
    work: &Path,
    cancel: &CancellationToken,
    progress: &watch::Sender<f64>,
) -> Result<(), JobError> {
    let lecture_id: LectureId =
        child.lecture.parse().map_err(|e: crate::domain::InvalidValue| JobError::Internal(e.0))?;
    let lecture = ctx
        .lectures
        .get(&lecture_id)
        .await
        .map_err(|e| JobError::Internal(e.to_string()))?
        .ok_or(JobError::LectureGone)?;
    let media = probe::probe(&ctx.transcoder.tools.ffprobe, &lecture.source_path).await.map_err(JobError::Source)?;
    let plan = Plan::new(&media, &ctx.ladder).with_thumbnail_time(lecture.thumbnail_time);
    let prefix = prefix(&child.lecture);
    let source = &lecture.source_path;
    match child.part {
        Part::Video(range) => {
            let share = ctx.transcoder.encode_chunk(&media, &plan, &range, source, work, cancel, progress).await?;
            stop_if(cancel)?;
            publish_previews(ctx.storage.as_ref(), &prefix, &range, &share, work, cancel).await?;
            for r in &plan.renditions {
                let dir = work.join(r.name());
                let text = playlist::without_empty_segments(&read(&dir.join(MEDIA_PLAYLIST)).await?);
                let files = playlist::files(&text)
                    .into_iter()
                    .filter(|f| range.is_first() || f.ends_with(".m4s"))
                    .map(|f| (format!("{prefix}/{}/{f}", r.name()), dir.join(f)));
                stop_if(cancel)?;
                upload(ctx.storage.as_ref(), files.collect(), cancel).await?;
                stop_if(cancel)?;
                let key = format!("{prefix}/{}/{}", r.name(), range.playlist_name());
                ctx.storage.put_bytes(&key, text.into_bytes()).await?;
            }
        }
        Part::Audio => {
            ctx.transcoder.encode_audio(&media, &plan, source, work, cancel, progress).await?;
            let dir = work.join(AUDIO_DIR);
            let text = read(&dir.join(MEDIA_PLAYLIST)).await?;
            let files = playlist::files(&text).into_iter().map(|f| (format!("{prefix}/{AUDIO_DIR}/{f}"), dir.join(f)));
            upload(ctx.storage.as_ref(), files.collect(), cancel).await?;
            let key = format!("{prefix}/{AUDIO_DIR}/{MEDIA_PLAYLIST}");
            ctx.storage.put_bytes(&key, playlist::to_vod(&text).into_bytes()).await?;
        }
    }
    Ok(())
}

/// Where chunks leave their share of the previews for the joining job,
/// removed once it has made the thumbnail and the storyboard from them.
const PREVIEWS_DIR: &str = "previews";

/// A chunk's thumbnail candidates (the pictures and what they show, for the
/// joining job to choose among every chunk's) and its storyboard tiles,
/// under the whole video's tile numbers.
async fn publish_previews(
    storage: &dyn Storage,
    prefix: &str,
    range: &ChunkRange,
    share: &ChunkPreviews,
    work: &Path,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let stats = tokio::fs::read_to_string(work.join(CANDIDATE_STATS)).await.unwrap_or_default();
    let mut candidates = Vec::new();
    let mut files = Vec::new();
    for (n, candidate) in share.assess(&stats).into_iter().enumerate() {
        let path = work.join(numbered(CANDIDATE_PATTERN, share.candidate_file(n)));
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            files.push((format!("{prefix}/{PREVIEWS_DIR}/candidate_{:02}.jpg", candidate.index), path));
            candidates.push(candidate);
        }
    }
    for file in 1.. {
        let path = work.join(numbered(TILE_PATTERN, file));
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            break;
        }
        if let Some(tile) = share.tile_number(file) {
            files.push((format!("{prefix}/{PREVIEWS_DIR}/{}", numbered(TILE_PATTERN, tile + 1)), path));
        }
    }
    upload(storage, files, cancel).await?;
    let summary = serde_json::to_vec(&candidates).unwrap_or_default();
    stop_if(cancel)?;
    storage.put_bytes(&format!("{prefix}/{PREVIEWS_DIR}/candidates_{:04}.json", range.index), summary).await?;
    Ok(())
}

/// The thumbnail and the storyboard of a chunked lecture, from what its
/// chunks left under [`PREVIEWS_DIR`]: the candidate the one-encode rule
/// picks among all of them, and the sprite of every tile in order. Either
/// may be missing (a video shorter than its container claims); neither
/// fails the lecture. Returns `(thumbnail time, storyboard made)`.
async fn finish_previews(
    ctx: &WorkerContext,
    prefix: &str,
    plan: &Plan,
    chunks: &[ChunkRange],
    duration: f64,
    cancel: &CancellationToken,
) -> Result<(Option<f64>, bool), StorageError> {
    let scratch = format!("{prefix}/{PREVIEWS_DIR}");
    let mut candidates: Vec<Candidate> = Vec::new();
    for chunk in chunks {
        match ctx.storage.get_bytes(&format!("{scratch}/candidates_{:04}.json", chunk.index)).await {
            Ok(bytes) => candidates.extend(serde_json::from_slice::<Vec<Candidate>>(&bytes).unwrap_or_default()),
            Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut thumbnail_time = None;
    if let Some(index) = pick_candidate(&candidates) {
        let picture = ctx.storage.get_bytes(&format!("{scratch}/candidate_{index:02}.jpg")).await?;
        ctx.storage.put_bytes(&format!("{prefix}/{THUMBNAIL}"), picture).await?;
        thumbnail_time = plan.previews.thumbnail_times.get(index).copied();
    }

    let board = plan.previews.storyboard;
    let dir = ctx.work_dir.join(format!("{}-storyboard", prefix.replace('/', "-")));
    let _ = tokio::fs::create_dir_all(&dir).await;
    let mut tiles = 0;
    for n in 1..=board.columns * board.rows {
        let name = numbered(TILE_PATTERN, n);
        match ctx.storage.get_bytes(&format!("{scratch}/{name}")).await {
            Ok(bytes) => {
                if tokio::fs::write(dir.join(&name), bytes).await.is_err() {
                    break;
                }
                tiles += 1;
            }
            Err(StorageError::NotFound(_)) => break,
            Err(e) => return Err(e),
        }
    }
    let mut has_storyboard = false;
    if tiles > 0 && ctx.transcoder.tile_sprite(&board, &dir, cancel).await {
        ctx.storage.put_file(&format!("{prefix}/{STORYBOARD_IMAGE}"), &dir.join(STORYBOARD_IMAGE)).await?;
        ctx.storage.put_bytes(&format!("{prefix}/{STORYBOARD_VTT}"), board.vtt(duration).into_bytes()).await?;
        has_storyboard = true;
    }
    let _ = tokio::fs::remove_dir_all(&dir).await;
    ctx.storage.delete_prefix(&scratch).await?;
    Ok((thumbnail_time, has_storyboard))
}

/// Stops publishing a chunk that was cancelled meanwhile: between files,
/// so a cancelled chunk stores at most the ones already in flight.
fn stop_if(cancel: &CancellationToken) -> Result<(), JobError> {
    if cancel.is_cancelled() {
        return Err(JobError::Ffmpeg(FfmpegError::Cancelled));
    }
    Ok(())
}

/// A file name pattern of the previews (`%02d`, `%03d`) with its number.
fn numbered(pattern: &str, n: u32) -> String {
    pattern.replace("%02d", &format!("{n:02}")).replace("%03d", &format!("{n:03}"))
}

async fn read(path: &Path) -> Result<String, JobError> {
    tokio::fs::read_to_string(path).await.map_err(|e| JobError::Internal(format!("{}: {e}", path.display())))
}

/// Stores every `(key, file)`, [`Storage::upload_concurrency`] at a time;
/// once `cancel` fires, starts no more.
async fn upload(
    storage: &dyn Storage,
    files: Vec<(String, std::path::PathBuf)>,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let mut uploads = futures::stream::iter(files)
        .map(|(key, path)| async move {
            stop_if(cancel)?;
            let size = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
            storage.put_file(&key, &path).await?;
            crate::metrics::published_bytes(size);
            Ok::<_, JobError>(())
        })
        .buffer_unordered(storage.upload_concurrency().max(1));
    let mut first_error = None;
    while let Some(result) = uploads.next().await {
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
