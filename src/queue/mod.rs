//! The durable job queue: what a worker claims, under a lease, until it
//! completes, fails (and maybe retries), or hands the job back.
//!
//! The queue knows nothing of video: a job is an id (the lecture's id), a
//! state, a priority, attempts and a lease. Backends implement [`Queue`]; the
//! rules they must all follow are written once, in `tests/queue_conformance.rs`.
//!
//! Invariants every backend keeps:
//! - a job is held by at most one worker while its lease is valid: every
//!   write a worker makes is guarded by the lease token it got at claim time;
//! - a job whose lease expired is claimable again and its attempt counts;
//! - handing a job back on shutdown (`release`) charges no attempt.

pub mod redis;
pub mod sql;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::domain::JobState;

pub use self::redis::RedisQueue;
pub use sql::SqlQueue;

/// How a job is enqueued.
#[derive(Debug, Clone)]
pub struct EnqueueOptions {
    /// Lower runs first.
    pub priority: i64,
    /// Not claimable before this much time has passed.
    pub delay: Duration,
    pub max_attempts: u32,
}

/// A worker's hold on a job. Every write made through a claim checks its
/// token, so a worker whose lease was taken over can no longer change the job.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job_id: String,
    /// 1 for the first run.
    pub attempt: u32,
    pub token: String,
}

/// Retry timing: `base * 2^(attempt-1)`, ±20% jitter so jobs that failed
/// together do not retry together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        exp.mul_f64(jitter).min(Duration::from_secs(24 * 3600))
    }
}

/// What `fail` did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Will run again at this time (ms since epoch).
    RetryAt(i64),
    Failed,
    /// The claim was no longer valid; nothing was changed.
    LeaseLost,
}

/// One failed attempt, kept on the job for people to read.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptError {
    pub attempt: u32,
    pub error: String,
    pub at: i64,
    pub worker: Option<String>,
}

/// Everything stored about a job.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    pub priority: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: i64,
    pub worker_id: Option<String>,
    pub lease_until: Option<i64>,
    /// 0-100.
    pub progress: f64,
    pub last_error: Option<String>,
    pub errors: Vec<AttemptError>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Jobs per state.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub waiting: u64,
    pub active: u64,
    pub delayed: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("Redis queue error: {0}")]
    Redis(String),
    #[error("queue data is corrupt: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    async fn enqueue(&self, id: &str, options: &EnqueueOptions) -> Result<(), QueueError>;

    /// Takes the next runnable job (lowest priority number, then oldest),
    /// unless the queue is paused.
    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Claim>, QueueError>;

    /// Extends the lease and stores progress. `false`: the lease is gone
    /// (expired and taken over, cancelled, deleted); stop working.
    async fn heartbeat(&self, claim: &Claim, lease: Duration, progress: f64) -> Result<bool, QueueError>;

    /// `false` if the lease was lost first: the result must not be used.
    async fn complete(&self, claim: &Claim) -> Result<bool, QueueError>;

    /// Records a failed attempt. Retries with backoff if `retryable` and
    /// attempts remain; otherwise the job fails for good.
    async fn fail(&self, claim: &Claim, worker: &str, error: &str, retryable: bool) -> Result<FailOutcome, QueueError>;

    /// Hands a job back without charging the attempt (graceful shutdown).
    async fn release(&self, claim: &Claim) -> Result<(), QueueError>;

    /// Makes jobs whose lease expired claimable again (or failed, when they
    /// have no attempts left). Returns how many it moved.
    async fn reap_expired(&self) -> Result<u64, QueueError>;

    /// Cancels a waiting, delayed or active job. An active job's worker
    /// notices at its next heartbeat.
    async fn cancel(&self, id: &str) -> Result<bool, QueueError>;

    /// Requeues a failed or cancelled job with a fresh set of attempts.
    async fn retry(&self, id: &str) -> Result<bool, QueueError>;

    async fn remove(&self, id: &str) -> Result<bool, QueueError>;

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError>;

    async fn get_many(&self, ids: &[String]) -> Result<Vec<JobRecord>, QueueError>;

    /// How many runnable jobs would be claimed before this one.
    async fn position(&self, id: &str) -> Result<Option<u64>, QueueError>;

    async fn counts(&self) -> Result<Counts, QueueError>;

    async fn set_paused(&self, paused: bool) -> Result<(), QueueError>;

    async fn is_paused(&self) -> Result<bool, QueueError>;

    /// Jobs in `state`: waiting ones in the order they will be claimed
    /// (priority, then first in), delayed ones by due time, active ones by
    /// lease expiry, finished ones most recently finished first. Ties go by
    /// id (descending for finished jobs).
    async fn list(&self, state: JobState, limit: u32, offset: u64) -> Result<Vec<JobRecord>, QueueError>;

    /// Jobs in `state` (in every state if `None`), newest first by id, only
    /// those whose id sorts below `before`. Ids are time-ordered (UUIDv7), so
    /// this is upload order, and unlike `list` a page does not shift when
    /// jobs change state or heartbeat: `before` is a keyset cursor, the last
    /// id of the previous page.
    async fn page(
        &self,
        state: Option<JobState>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRecord>, QueueError>;

    /// Removes jobs in a final `state` that finished before `before_ms`;
    /// returns their ids.
    async fn clean(&self, state: JobState, before_ms: i64) -> Result<Vec<String>, QueueError>;
}

/// Every job in `state`, read a page at a time (for operator actions on a
/// whole state; the API pages instead).
pub async fn every_job(queue: &dyn Queue, state: JobState) -> Result<Vec<JobRecord>, QueueError> {
    let mut jobs = Vec::new();
    loop {
        let page = queue.list(state, 500, jobs.len() as u64).await?;
        let done = page.len() < 500;
        jobs.extend(page);
        if done {
            return Ok(jobs);
        }
    }
}
