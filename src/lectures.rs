//! Lecture records: what was uploaded, and where its published video is.
//!
//! A lecture's status, progress and errors are not stored here: they are its
//! job's (same id), read through the queue. With a SQL queue, creating a
//! lecture enqueues its job in the same transaction, and completing the job
//! stores the result in the same transaction, so a lecture can never be
//! "pending" with no job nor "completed" with no video. With a Redis queue the
//! two writes are apart; the worker's reconciler re-enqueues any unfinished
//! lecture whose job is missing, and job ids are lecture ids, so that is
//! idempotent. [`Jobs`] says which of the two a store has.
//!
//! What happens to a lecture and its job together (create, complete,
//! cancel, retry, remove) is written here once; the HTTP API, the worker and
//! the CLI call these, never the queue and the lecture table one by one.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::captions::{CaptionStore, CaptionSummary, Captions};
use crate::db::Database;
use crate::domain::{now_ms, JobState, LectureId};
use crate::events::{EventError, EventKind, EventLog};
use crate::publish::Storage;
use crate::queue::{Claim, EnqueueOptions, JobRecord, Queue, QueueError, SqlQueue};

#[derive(Debug, Clone)]
pub struct Lecture {
    pub id: LectureId,
    pub course_id: String,
    pub name_of_topic: String,
    pub source_path: PathBuf,
    pub original_filename: Option<String>,
    /// Storage prefix of the published attempt, once completed.
    pub published_prefix: Option<String>,
    /// Storage prefix of a running attempt that is already playable.
    pub playable_prefix: Option<String>,
    pub has_thumbnail: bool,
    /// The thumbnail's time in seconds: asked for at upload, until the
    /// video is published; then the one taken.
    pub thumbnail_time: Option<f64>,
    /// Seek previews (`storyboard.jpg`, `storyboard.vtt`) were published.
    pub has_storyboard: bool,
    pub renditions: Vec<RenditionSummary>,
    /// Caption tracks published with the video.
    pub captions: Vec<CaptionSummary>,
    pub duration_seconds: Option<f64>,
    /// Set when the job failed for good; survives the job record.
    pub failed_error: Option<String>,
    pub no_of_views: i64,
    pub no_of_likes: i64,
    pub comments: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A published rendition, as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RenditionSummary {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bandwidth: u32,
}

pub struct NewLecture {
    pub id: LectureId,
    pub course_id: String,
    pub name_of_topic: String,
    pub source_path: PathBuf,
    pub original_filename: Option<String>,
    /// Where to take the thumbnail, in seconds from the start.
    pub thumbnail_time: Option<f64>,
    /// A caption track sent with the upload.
    pub captions: Option<Captions>,
}

impl Lecture {
    /// A lecture as its upload creates it: nothing published, nothing failed.
    pub fn new(new: NewLecture, now: i64) -> Lecture {
        Lecture {
            id: new.id,
            course_id: new.course_id,
            name_of_topic: new.name_of_topic,
            source_path: new.source_path,
            original_filename: new.original_filename,
            published_prefix: None,
            playable_prefix: None,
            has_thumbnail: false,
            thumbnail_time: new.thumbnail_time,
            has_storyboard: false,
            renditions: Vec::new(),
            captions: Vec::new(),
            duration_seconds: None,
            failed_error: None,
            no_of_views: 0,
            no_of_likes: 0,
            comments: serde_json::Value::Array(Vec::new()),
            created_at: now,
            updated_at: now,
        }
    }
}

/// The events a completion announces, in its transaction.
pub struct Completion {
    /// `lecture.playable`, when the encode finished before it went out.
    pub playable: Option<serde_json::Value>,
    /// `lecture.completed`: the lecture's document.
    pub document: serde_json::Value,
}

/// What a completed job produced.
pub struct Published {
    pub prefix: String,
    pub has_thumbnail: bool,
    /// When the thumbnail was taken, in seconds.
    pub thumbnail_time: Option<f64>,
    pub has_storyboard: bool,
    pub renditions: Vec<RenditionSummary>,
    pub captions: Vec<CaptionSummary>,
    pub duration_seconds: f64,
}

/// Why a lecture failed for good: stored on it (so it outlives the job
/// record) and shown as its `processingError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure<'a> {
    /// Its job was cancelled.
    Cancelled,
    /// Its job failed, with the last attempt's error.
    Error(&'a str),
}

impl<'a> Failure<'a> {
    /// What a finished job's record tells.
    pub fn of(job: &'a JobRecord) -> Failure<'a> {
        match job.state {
            JobState::Cancelled => Failure::Cancelled,
            _ => Failure::Error(job.last_error.as_deref().unwrap_or("failed")),
        }
    }

    /// The stored and shown text.
    pub fn text(&self) -> &'a str {
        match self {
            Failure::Cancelled => "cancelled",
            Failure::Error(error) => error,
        }
    }
}

/// What [`LectureStore::cancel`] and [`LectureStore::retry`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobChange {
    Done,
    /// No job with this id.
    NotFound,
    /// The job's state does not allow it (cancel: it has ended; retry: it
    /// has not failed nor been cancelled).
    NotNow(JobState),
    /// A retry, but the uploaded source is gone (`VIDPIPE_SOURCE_RETENTION`).
    SourceGone,
}

/// What [`LectureStore::retry_failed`] did; also the answer of `POST
/// /api/queue/retry-failed`.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetriedFailed {
    /// Jobs that run again, with a fresh set of attempts.
    pub retried: Vec<String>,
    /// Jobs left failed: their uploaded source is no longer kept
    /// (`VIDPIPE_SOURCE_RETENTION`), so only a new upload can make them.
    pub source_gone: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LectureStoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("storage error: {0}")]
    Storage(String),
    #[error(transparent)]
    Events(#[from] EventError),
}

/// Where the lectures' jobs live, which decides whether a lecture write and
/// its job's can share one transaction.
#[derive(Clone)]
enum Jobs {
    /// A SQL queue on the lectures' own database: they share transactions.
    Beside(Arc<SqlQueue>),
    /// Another store (Redis): the lecture is written first, the job second,
    /// and the reconciler mends a crash in between.
    Apart(Arc<dyn Queue>),
}

#[derive(Clone)]
pub struct LectureStore {
    db: Database,
    /// Every change here is also an event, in the same transaction.
    events: EventLog,
    jobs: Jobs,
}

impl std::fmt::Debug for LectureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let jobs = match self.jobs {
            Jobs::Beside(_) => "beside",
            Jobs::Apart(_) => "apart",
        };
        f.debug_struct("LectureStore").field("jobs", &jobs).finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, course_id, name_of_topic, source_path, original_filename, published_prefix, has_thumbnail, \
     renditions, duration_seconds, failed_error, playable_prefix, no_of_views, no_of_likes, comments, created_at, updated_at, \
     captions, has_storyboard, thumbnail_request, thumbnail_time";

impl LectureStore {
    /// Lectures in the SQL queue's own database: the store cannot be given
    /// another database than its jobs'.
    pub fn beside(queue: Arc<SqlQueue>) -> LectureStore {
        let db = queue.database().clone();
        LectureStore { events: EventLog::new(db.clone()), db, jobs: Jobs::Beside(queue) }
    }

    /// Lectures in `db`, their jobs in another store.
    pub fn apart(db: Database, queue: Arc<dyn Queue>) -> LectureStore {
        LectureStore { events: EventLog::new(db.clone()), db, jobs: Jobs::Apart(queue) }
    }

    /// The queue the lectures' jobs are in.
    pub fn queue(&self) -> Arc<dyn Queue> {
        match &self.jobs {
            Jobs::Beside(queue) => queue.clone(),
            Jobs::Apart(queue) => queue.clone(),
        }
    }

    /// The caption tracks of every lecture.
    pub fn captions(&self) -> CaptionStore {
        CaptionStore::new(self.db.clone(), self.events.clone())
    }

    /// The event log this store writes to.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Stores the lecture and enqueues its job: in one transaction with a SQL
    /// queue; otherwise the lecture first, so a failed enqueue leaves a
    /// lecture the reconciler will enqueue, never a job without a lecture.
    pub async fn create_with_job(&self, new: NewLecture, job: &EnqueueOptions) -> Result<Lecture, LectureStoreError> {
        let now = now_ms();
        let mut tx = self.db.pool.begin().await?;
        sqlx::query(
            "INSERT INTO lectures (id, course_id, name_of_topic, source_path, original_filename, thumbnail_request, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(new.id.as_str())
        .bind(&new.course_id)
        .bind(&new.name_of_topic)
        .bind(new.source_path.to_string_lossy().into_owned())
        .bind(new.original_filename.clone())
        .bind(new.thumbnail_time)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(captions) = &new.captions {
            crate::captions::upsert_on(&mut tx, new.id.as_str(), captions, true).await?;
        }
        let uploaded = serde_json::json!({
            "lectureId": new.id.as_str(), "courseId": new.course_id, "nameOfTopic": new.name_of_topic,
            "processingStatus": "pending",
        });
        self.events.append_on(&mut tx, EventKind::Uploaded, Some(new.id.as_str()), uploaded).await?;
        match &self.jobs {
            Jobs::Beside(_) => {
                SqlQueue::enqueue_on(&mut tx, self.db.dialect, new.id.as_str(), job).await?;
                tx.commit().await?;
            }
            Jobs::Apart(queue) => {
                tx.commit().await?;
                if let Err(e) = queue.enqueue(new.id.as_str(), job).await {
                    tracing::warn!(lecture = %new.id, error = %e, "enqueue failed; the reconciler will enqueue it");
                }
            }
        }
        self.events.appended();
        Ok(Lecture::new(new, now))
    }

    pub async fn get(&self, id: &LectureId) -> Result<Option<Lecture>, LectureStoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM lectures WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.as_ref().map(lecture_from_row).transpose()?)
    }

    /// Newest first. Returns the page and the total count.
    pub async fn list(
        &self,
        course_id: Option<&str>,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<Lecture>, u64), LectureStoreError> {
        let filter = if course_id.is_some() { "WHERE course_id = $1" } else { "WHERE $1 IS NULL" };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM lectures {filter} ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(course_id.map(str::to_string))
        .bind(limit as i64)
        .bind(offset as i64)
        .fetch_all(&self.db.pool)
        .await?;
        let total: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM lectures {filter}"))
            .bind(course_id.map(str::to_string))
            .fetch_one(&self.db.pool)
            .await?
            .try_get("n")?;
        let lectures = rows.iter().map(lecture_from_row).collect::<Result<_, _>>()?;
        Ok((lectures, total as u64))
    }

    /// Stores the result and completes the job, in one transaction with a
    /// SQL queue, with the events of `completion`. `false`: the claim's
    /// lease was lost first.
    pub async fn complete(
        &self,
        claim: &Claim,
        published: &Published,
        completion: Completion,
    ) -> Result<bool, LectureStoreError> {
        let id = claim.job_id.as_str();
        let mut tx = self.db.pool.begin().await?;
        sqlx::query(
            "UPDATE lectures SET published_prefix = $1, has_thumbnail = $2, renditions = $3, duration_seconds = $4, \
                 playable_prefix = NULL, updated_at = $5, captions = $6, has_storyboard = $7, thumbnail_time = $8 \
                 WHERE id = $9",
        )
        .bind(&published.prefix)
        .bind(published.has_thumbnail as i64)
        .bind(serde_json::to_string(&published.renditions).expect("renditions serialize"))
        .bind(published.duration_seconds)
        .bind(now_ms())
        .bind(serde_json::to_string(&published.captions).expect("captions serialize"))
        .bind(published.has_storyboard as i64)
        .bind(published.thumbnail_time)
        .bind(&claim.job_id)
        .execute(&mut *tx)
        .await?;
        if let Jobs::Apart(queue) = &self.jobs {
            // The result is stored before the job is marked done: a crash in
            // between re-runs the job, it never loses the video.
            tx.commit().await?;
            let completed = queue.complete(claim).await?;
            if completed {
                if let Some(playable) = completion.playable {
                    self.events.append(EventKind::Playable, Some(id), playable).await?;
                }
                self.events.append(EventKind::Completed, Some(id), completion.document).await?;
            }
            return Ok(completed);
        }
        if !SqlQueue::complete_on(&mut tx, claim).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(playable) = completion.playable {
            self.events.append_on(&mut tx, EventKind::Playable, Some(id), playable).await?;
        }
        self.events.append_on(&mut tx, EventKind::Completed, Some(id), completion.document).await?;
        tx.commit().await?;
        self.events.appended();
        Ok(true)
    }

    /// Marks the lecture playable from `prefix` while its job runs, and
    /// announces it (`lecture.playable` with `event`).
    pub async fn set_playable(
        &self,
        id: &str,
        prefix: &str,
        event: serde_json::Value,
    ) -> Result<(), LectureStoreError> {
        let mut tx = self.db.pool.begin().await?;
        sqlx::query("UPDATE lectures SET playable_prefix = $1, updated_at = $2 WHERE id = $3")
            .bind(prefix)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.events.append_on(&mut tx, EventKind::Playable, Some(id), event).await?;
        tx.commit().await?;
        self.events.appended();
        Ok(())
    }

    /// Withdraws every link that still points at `prefix`, whose attempt is
    /// about to remove its files: the early link of a failed or cancelled
    /// attempt, or the result of one that lost the job after storing it
    /// (possible only with a Redis queue). A newer attempt's links stay.
    pub async fn withdraw_links(&self, id: &str, prefix: &str) -> Result<(), LectureStoreError> {
        sqlx::query(
            "UPDATE lectures SET \
                 published_prefix = CASE WHEN published_prefix = $1 THEN NULL ELSE published_prefix END, \
                 playable_prefix = CASE WHEN playable_prefix = $1 THEN NULL ELSE playable_prefix END, \
                 updated_at = $2 WHERE id = $3",
        )
        .bind(prefix)
        .bind(now_ms())
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Records (or with `None`, clears) the lecture's final failure, silently:
    /// for a failure already announced, or a retry.
    pub async fn set_failed(&self, id: &str, error: Option<&str>) -> Result<(), LectureStoreError> {
        self.set_column(id, "failed_error", error).await
    }

    /// Records the lecture's final failure and announces it
    /// (`lecture.failed`, with the reason as clients may see it), in one
    /// transaction and once: a failure already recorded (the worker and the
    /// reconciler can both see it) is not announced again.
    pub async fn record_failure(&self, id: &str, failure: Failure<'_>) -> Result<(), LectureStoreError> {
        let error = failure.text();
        let mut tx = self.db.pool.begin().await?;
        let recorded = sqlx::query(
            "UPDATE lectures SET failed_error = $1, updated_at = $2 WHERE id = $3 AND failed_error IS NULL",
        )
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if recorded.rows_affected() == 1 {
            let failed = serde_json::json!({
                "lectureId": id, "processingStatus": "failed", "processingError": crate::redact::for_clients(error),
                "cancelled": failure == Failure::Cancelled,
            });
            self.events.append_on(&mut tx, EventKind::Failed, Some(id), failed).await?;
        }
        tx.commit().await?;
        self.events.appended();
        Ok(())
    }

    /// Sets one text column of a lecture, and its `updated_at`. `column` is
    /// one of our own column names, never input.
    async fn set_column(&self, id: &str, column: &'static str, value: Option<&str>) -> Result<(), LectureStoreError> {
        sqlx::query(&format!("UPDATE lectures SET {column} = $1, updated_at = $2 WHERE id = $3"))
            .bind(value.map(str::to_string))
            .bind(now_ms())
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Lectures that are neither published nor failed for good: each must
    /// have a live job. Oldest first, `limit` at a time after `after`.
    pub async fn unfinished_ids(&self, after: &str, limit: u32) -> Result<Vec<String>, LectureStoreError> {
        let rows = sqlx::query(
            "SELECT id FROM lectures WHERE published_prefix IS NULL AND failed_error IS NULL AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| r.try_get::<String, _>("id")).collect::<Result<_, _>>().map_err(Into::into)
    }

    /// Lectures that failed for good before `before_ms` (ms since the epoch),
    /// `limit` at a time after id `after`: their sources may go.
    pub async fn failed_before(
        &self,
        before_ms: i64,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Lecture>, LectureStoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM lectures WHERE failed_error IS NOT NULL AND updated_at < $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(before_ms)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(lecture_from_row).collect::<Result<_, _>>().map_err(Into::into)
    }

    /// Deletes the lecture and its job in one transaction.
    pub async fn delete(&self, id: &LectureId) -> Result<bool, LectureStoreError> {
        let mut tx = self.db.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM lectures WHERE id = $1").bind(id.as_str()).execute(&mut *tx).await?;
        if let Jobs::Beside(_) = self.jobs {
            SqlQueue::remove_on(&mut tx, id.as_str()).await?;
        }
        if deleted.rows_affected() == 1 {
            let gone = serde_json::json!({ "lectureId": id.as_str() });
            self.events.append_on(&mut tx, EventKind::Deleted, Some(id.as_str()), gone).await?;
        }
        tx.commit().await?;
        self.events.appended();
        Ok(deleted.rows_affected() == 1)
    }
}

fn lecture_from_row(row: &AnyRow) -> Result<Lecture, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let renditions: String = row.try_get("renditions")?;
    let comments: String = row.try_get("comments")?;
    let captions: String = row.try_get("captions")?;
    let published_prefix: Option<String> = row.try_get("published_prefix")?;
    let thumbnail_time =
        if published_prefix.is_some() { row.try_get("thumbnail_time")? } else { row.try_get("thumbnail_request")? };
    Ok(Lecture {
        id: id.parse().map_err(|e: crate::domain::InvalidValue| sqlx::Error::Decode(e.0.into()))?,
        course_id: row.try_get("course_id")?,
        name_of_topic: row.try_get("name_of_topic")?,
        source_path: PathBuf::from(row.try_get::<String, _>("source_path")?),
        original_filename: row.try_get("original_filename")?,
        published_prefix,
        playable_prefix: row.try_get("playable_prefix")?,
        has_thumbnail: row.try_get::<i64, _>("has_thumbnail")? != 0,
        thumbnail_time,
        has_storyboard: row.try_get::<i64, _>("has_storyboard")? != 0,
        renditions: serde_json::from_str(&renditions).map_err(|e| sqlx::Error::Decode(e.into()))?,
        captions: serde_json::from_str(&captions).map_err(|e| sqlx::Error::Decode(e.into()))?,
        duration_seconds: row.try_get("duration_seconds")?,
        failed_error: row.try_get("failed_error")?,
        no_of_views: row.try_get("no_of_views")?,
        no_of_likes: row.try_get("no_of_likes")?,
        comments: serde_json::from_str(&comments).map_err(|e| sqlx::Error::Decode(e.into()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl LectureStore {
    /// Cancels the lecture's job and records the lecture as failed
    /// (`cancelled`). A worker in another process stops at its next
    /// heartbeat; the caller stops one running in its own process.
    pub async fn cancel(&self, id: &str) -> Result<JobChange, LectureStoreError> {
        let queue = self.queue();
        let Some(job) = queue.get(id).await? else { return Ok(JobChange::NotFound) };
        if !queue.cancel(id).await? {
            return Ok(JobChange::NotNow(job.state));
        }
        // Kept on the lecture, so a lost job record does not bring it back.
        self.record_failure(id, Failure::Cancelled).await?;
        Ok(JobChange::Done)
    }

    /// Runs a failed or cancelled job again with a fresh set of attempts, if
    /// its source is still kept.
    pub async fn retry(&self, id: &LectureId) -> Result<JobChange, LectureStoreError> {
        let queue = self.queue();
        let Some(job) = queue.get(id.as_str()).await? else { return Ok(JobChange::NotFound) };
        if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
            return Ok(JobChange::NotNow(job.state));
        }
        if let Some(lecture) = self.get(id).await? {
            if !tokio::fs::try_exists(&lecture.source_path).await.unwrap_or(false) {
                return Ok(JobChange::SourceGone);
            }
        }
        if !queue.retry(id.as_str()).await? {
            return Ok(JobChange::NotNow(job.state));
        }
        self.set_failed(id.as_str(), None).await?;
        Ok(JobChange::Done)
    }

    /// Retries every failed job as [`Self::retry`] does one. Jobs are
    /// listed first and retried after, as each retry moves one out of the
    /// list being read; one that changed in between is left as it is.
    pub async fn retry_failed(&self) -> Result<RetriedFailed, LectureStoreError> {
        let mut done = RetriedFailed::default();
        for job in crate::queue::every_job(self.queue().as_ref(), JobState::Failed).await? {
            let Ok(id) = job.id.parse::<LectureId>() else { continue };
            match self.retry(&id).await? {
                JobChange::Done => done.retried.push(job.id),
                JobChange::SourceGone => done.source_gone.push(job.id),
                JobChange::NotFound | JobChange::NotNow(_) => {}
            }
        }
        Ok(done)
    }

    /// Removes a lecture and everything it owns. Its job is cancelled first,
    /// so a worker elsewhere stops at its next heartbeat and removes what it
    /// was publishing; `stop_here` then stops one in the caller's process
    /// before the files go. Then the records, the published files and the
    /// source.
    pub async fn remove(
        &self,
        lecture: &Lecture,
        storage: &dyn Storage,
        stop_here: impl Future,
    ) -> Result<(), LectureStoreError> {
        let id = lecture.id.as_str();
        let queue = self.queue();
        queue.cancel(id).await?;
        stop_here.await;
        self.delete(&lecture.id).await?;
        // A job beside the lecture went in its transaction; one apart goes now.
        if let Jobs::Apart(queue) = &self.jobs {
            queue.remove(id).await?;
        }
        storage.delete_prefix(id).await.map_err(|e| LectureStoreError::Storage(e.to_string()))?;
        if let Err(e) = tokio::fs::remove_file(&lecture.source_path).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(lecture = %id, error = %e, "could not remove the source file");
            }
        }
        Ok(())
    }
}
